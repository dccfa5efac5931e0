"""Threads under stress: a seeded random mix of full epochs, break, raise inside the loop, close() and GC
mid-epoch, and state_dict resume, over many epochs; no recpack thread outlives a step, file descriptors and
RSS stay flat: the quick part of campaigns/soak.py. Set RECPACK_SOAK_SECONDS for a long run (also
``python benchmarks/crashes.py --soak SECONDS``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from campaigns.soak import ACTIONS, soak, soak_dataset


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self for fds and RSS")
def test_soak_break_raise_close_gc_resume(tmp_path: Path) -> None:
    ds = soak_dataset(tmp_path)
    seconds = float(os.environ.get("RECPACK_SOAK_SECONDS", "0"))
    stats = soak(ds, seconds=seconds, seed=11) if seconds > 0 else soak(ds, steps=150, seed=11)
    assert stats.problems == []
    assert stats.leaked_threads == 0
    assert set(stats.actions) == set(ACTIONS), stats.actions
    assert stats.fd_growth <= 0, f"{stats.fd_growth} file descriptors leaked over {stats.steps} steps"
    assert stats.rss_growth_mib < 48, f"RSS grew by {stats.rss_growth_mib:.1f} MiB over {stats.steps} steps"
