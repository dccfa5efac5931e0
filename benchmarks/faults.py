"""Bit-rot and truncation campaigns against a packed dataset (issue 7). tests/test_faults.py runs a quick part.

Pack a small dataset once, then per trial copy it, damage one copy (flip 1..3 random bits in the shard files,
or truncate one shard at a random offset) and check every reader (verify, recpack.open, Loader; strict and
on_error="skip") against the ground truth taken from the intact copy. The campaign itself, and what exactly
each trial expects, is in tests/campaigns/faults.py (test tooling shared with the test suite); this script
runs it for longer, prints the table and optionally writes it into docs/reliability.md.

    python benchmarks/faults.py --trials 500            # prints the table
    python benchmarks/faults.py --trials 500 --write    # and puts it into docs/reliability.md
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from campaigns.faults import campaign, table  # noqa: E402
from campaigns.report import replace_marked  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=50, help="trials per campaign (default 50)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", action="store_true", help="put the table into docs/reliability.md")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    results = campaign(args.trials, args.seed)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    text = table(results, time.perf_counter() - t0, peak)
    print(text)
    failed = [(k, o) for k, outs in results.items() for o in outs if o.failures]
    for kind, o in failed[:20]:
        print(f"FAILED {kind}: {o.failures}", file=sys.stderr)
    if args.write:
        replace_marked("faults", text, ROOT / "docs" / "reliability.md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
