"""Identity attacks against packed datasets (issue 14): swapped records, swapped LMDB values, a shard listed
twice, a shard from another pack, a re-pack under a running Loader. Every reader must deliver the right
record or none; tests/test_identity.py runs a quick part. The campaign is tests/campaigns/identity.py.

    python benchmarks/identity.py --trials 40            # prints the table
    python benchmarks/identity.py --trials 40 --write    # and puts it into docs/reliability.md
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from campaigns.identity import campaign, table  # noqa: E402
from campaigns.report import campaign_main  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return campaign_main(argv, __doc__.split("\n")[0], campaign, table, "identity",
                         ROOT / "docs" / "reliability.md", default_trials=20)


if __name__ == "__main__":
    sys.exit(main())
