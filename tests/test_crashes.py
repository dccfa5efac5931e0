"""kill -9 while packing, in-process and with a process pool: re-running the same command gives exactly the
output of an uninterrupted pack, and nothing half-written is ever published. The quick part of
benchmarks/crashes.py (50 trials per mode on demand; docs/reliability.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "crashes.py"


def crashes() -> ModuleType:
    spec = importlib.util.spec_from_file_location("recpack_bench_crashes", _PATH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and process groups")
@pytest.mark.parametrize("workers", [0, 2])
def test_kill_9_at_random_moments_then_rerun_is_identical(tmp_path: Path, workers: int) -> None:
    stats = crashes().crash_campaign(tmp_path, trials=3, workers=workers, seed=1, images=120, shards=12)
    assert stats.problems == []
    assert stats.identical == stats.trials == 3
    assert stats.kills >= 3


def test_campaign_table_and_section_replacement(tmp_path: Path) -> None:
    mod = crashes()
    s = mod.CrashStats(workers=0, trials=2, kills=3, phases={"mid-pack": 2, "finished": 1}, identical=2)
    table = mod.crash_table([s])
    assert "| in-process (`--workers 0`) | 2 | 3 | 0 / 2 / 0 / 1 | 2 of 2 | 0 |" in table
    md = tmp_path / "r.md"
    md.write_text("# R\n\n## Crashes while packing\n\n(being written)\n\n## Full disk\n\nkeep\n")
    mod.replace_section("Crashes while packing", "new text", md)
    assert md.read_text() == "# R\n\n## Crashes while packing\n\nnew text\n\n## Full disk\n\nkeep\n"
