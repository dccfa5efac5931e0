"""kill -9 while packing, in-process and with a process pool: re-running the same command gives exactly the
output of an uninterrupted pack, and nothing half-written is ever published. The quick part of the campaign in
campaigns/crashes.py (50 trials per mode: ``python benchmarks/crashes.py``; docs/reliability.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from campaigns.crashes import CrashStats, crash_campaign, crash_table
from campaigns.report import replace_section


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and process groups")
@pytest.mark.parametrize("workers", [0, 2])
def test_kill_9_at_random_moments_then_rerun_is_identical(tmp_path: Path, workers: int) -> None:
    stats = crash_campaign(tmp_path, trials=3, workers=workers, seed=1, images=120, shards=12)
    assert stats.problems == []
    assert stats.identical == stats.trials == 3
    assert stats.kills >= 3


def test_campaign_table_and_section_replacement(tmp_path: Path) -> None:
    s = CrashStats(workers=0, trials=2, kills=3, phases={"mid-pack": 2, "finished": 1}, identical=2)
    table = crash_table([s])
    assert "| in-process (`--workers 0`) | 2 | 3 | 0 / 2 / 0 / 1 | 2 of 2 | 0 |" in table
    md = tmp_path / "r.md"
    md.write_text("# R\n\n## Crashes while packing\n\n(being written)\n\n## Full disk\n\nkeep\n")
    replace_section("Crashes while packing", "new text", md)
    assert md.read_text() == "# R\n\n## Crashes while packing\n\nnew text\n\n## Full disk\n\nkeep\n"
    with pytest.raises(SystemExit, match="no section '## Soak'"):
        replace_section("Soak", "x", md)
