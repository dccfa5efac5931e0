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

import resource
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from campaigns.faults import campaign, table  # noqa: E402
from campaigns.report import campaign_main  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    def with_peak(results: dict[str, list[Any]], seconds: float) -> str:
        return table(results, seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

    return campaign_main(argv, __doc__.split("\n")[0], campaign, with_peak, "faults",
                         ROOT / "docs" / "reliability.md", default_trials=50)


if __name__ == "__main__":
    sys.exit(main())
