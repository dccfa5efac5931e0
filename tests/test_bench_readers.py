"""recpack.bench.readers: the test file size, and the timed readers on a small real file (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recpack.bench.readers import ReadSpec, make_test_file, plan_file_size, run_test
from recpack.errors import RecpackError

MiB = 1 << 20


def test_plan_file_size() -> None:
    assert plan_file_size(1 << 30, 10 << 30) == 1 << 30
    assert plan_file_size(1 << 30, 100 * MiB + 5) == 50 * MiB
    with pytest.raises(RecpackError, match="free"):
        plan_file_size(1 << 30, 10 * MiB)


def test_run_test_counts_reads_and_passes(tmp_path: Path) -> None:
    f = make_test_file(tmp_path, 2 * MiB, progress=False)
    assert f.name.startswith(".recpack-bench-") and f.stat().st_size == 2 * MiB
    spec = ReadSpec("t", 4096, 2, "random", "")
    r = run_test(f, spec, duration=5.0, max_reads=2000)  # 512 slots: about 4 passes of 2 threads each
    assert r["reads"] == 2000 and r["bytes"] == 2000 * 4096 and r["passes"] >= 6
    assert r["p50_us"] > 0 and r["iops"] > 0 and r["threads"] == 2
    seq = run_test(f, ReadSpec("s", MiB, 1, "sequential", ""), duration=5.0, max_reads=5)
    assert seq["reads"] == 5 and seq["bytes"] == 5 * MiB and seq["passes"] == 3
    with pytest.raises(RecpackError, match="too small"):
        run_test(f, ReadSpec("t", 4096, 1000, "random", ""), duration=0.1)
