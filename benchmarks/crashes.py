"""Reliability campaigns of issue 7 that need real processes and time: kill -9 while packing, and a loader soak.

Crashes: ``python -m recpack pack SRC OUT --workers N`` is killed with SIGKILL at a random moment (seeded;
1-2 kills per trial, the later ones during the resumed run), then the same command is re-run to completion.
After every kill: no ``index.json``, ``recpack.open`` refuses the folder, and every shard published under
its final name passes a full ``check_shard``. At the end every output file must equal, byte for byte, the
output of one uninterrupted pack. Runs in-process (``--workers 0``) and with a process pool (``--workers 2``).

Soak: many epochs over a small dataset with a seeded random mix of full epochs, break after k batches, an
exception raised inside the loop, ``close()`` mid-epoch, dropping the loader for GC mid-epoch, and
state_dict/load_state_dict resume; after every step no ``recpack*`` thread is left (within 1 s), and at
checkpoints open file descriptors and RSS must stay flat.

    python benchmarks/crashes.py --trials 50            # both modes, prints the table
    python benchmarks/crashes.py --trials 50 --write    # ... and fills "Crashes while packing" in reliability.md
    python benchmarks/crashes.py --soak 600             # loader soak for 10 minutes

The campaigns themselves are test tooling in tests/campaigns/ (crashes.py, soak.py), shared with the test
suite; this script runs them for longer, prints the results and, with ``--write``, fills the table in
docs/reliability.md. The quick parts run in CI: tests/test_crashes.py and tests/test_soak.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RELIABILITY_MD = ROOT / "docs" / "reliability.md"
sys.path.insert(0, str(ROOT / "tests"))
from campaigns.crashes import crash_campaign, crash_table  # noqa: E402
from campaigns.report import replace_section  # noqa: E402
from campaigns.soak import soak, soak_dataset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=50, help="kill -9 trials per mode (default 50)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="modes to run (default: 0 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", action="store_true", help="fill 'Crashes while packing' in docs/reliability.md")
    ap.add_argument("--soak", type=float, metavar="SECONDS", help="run the loader soak instead, this long")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="recpack-crashes-") as tmp:
        if args.soak is not None:
            s = soak(soak_dataset(Path(tmp)), seconds=args.soak, seed=args.seed)
            print(f"soak: {s.steps} steps, {s.batches} batches in {s.seconds:.0f} s; actions {s.actions}; "
                  f"threads left {s.leaked_threads}; fd growth {s.fd_growth}; RSS growth "
                  f"{s.rss_growth_mib:.1f} MiB; problems {len(s.problems)}")
            for p in s.problems[:20]:
                print("  ", p)
            sys.exit(1 if s.problems or s.fd_growth > 0 or s.rss_growth_mib > 64 else 0)
        results = []
        for w in args.workers:
            s = crash_campaign(Path(tmp), args.trials, w, seed=args.seed)
            results.append(s)
            print(f"workers={w}: {s.trials} trials, {s.kills} kills {s.phases}, {s.identical} identical, "
                  f"{len(s.problems)} problems, {s.seconds:.0f} s", flush=True)
            for p in s.problems[:20]:
                print("  ", p)
    table = crash_table(results)
    print(table)
    if args.write:
        replace_section("Crashes while packing", CRASHES_TEXT.format(table=table), RELIABILITY_MD)
    sys.exit(1 if any(s.problems or s.identical != s.trials for s in results) else 0)


CRASHES_TEXT = """
`python -m recpack pack SRC OUT --num-shards 24 --check decode` over 400 small JPEGs is killed with SIGKILL
at a random moment (seeded, uniform from shortly before the plan is written to the end of an uninterrupted
pack; one or two kills per trial, the second one landing in the resumed run), then the same command is
re-run to completion. After every kill: no `index.json` unless the pack had finished, `recpack.open`
refuses the folder, and every shard under its final name passes a full record-by-record check (a killed
shard is only ever a `.tmp`). At the end every file in OUT (shards, `index.json`, `pack-report.tsv`) is
compared byte for byte with one uninterrupted pack. "Before planning" means before `plan.json` existed
(interpreter start-up, scanning and hashing the sources, starting the pool).

{table}

Found and fixed by these trials: a kill between creating `OUT/.recpack-pack/` and writing its `plan.json`
made every later run refuse the folder as "an unfinished pack of different inputs" (a missing `plan.json`
now means nothing was started).

Quick part (CI): `tests/test_crashes.py`, 3 trials per mode. Long part:
`python benchmarks/crashes.py --trials 50 --write`.
"""


if __name__ == "__main__":
    main()
