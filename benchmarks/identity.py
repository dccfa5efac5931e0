"""Identity attacks against packed datasets (issue 14): swapped records, swapped LMDB values, a shard listed
twice, a shard from another pack, a re-pack under a running Loader. Every reader must deliver the right
record or none; tests/test_identity.py runs a quick part. The campaign is tests/campaigns/identity.py.

    python benchmarks/identity.py --trials 40            # prints the table
    python benchmarks/identity.py --trials 40 --write    # and puts it into docs/reliability.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from campaigns.identity import campaign, table  # noqa: E402
from campaigns.report import replace_marked  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=20, help="trials per attack (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", action="store_true", help="put the table into docs/reliability.md")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    results = campaign(args.trials, args.seed)
    text = table(results, time.perf_counter() - t0)
    print(text)
    failed = [(k, o) for k, outs in results.items() for o in outs if o.failures]
    for kind, o in failed[:20]:
        print(f"FAILED {kind}: {o.failures}", file=sys.stderr)
    if args.write:
        replace_marked("identity", text, ROOT / "docs" / "reliability.md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
