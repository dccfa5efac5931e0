"""recpack.bench.dataset_runs: single runs on a small packed dataset (warm, so they need no root): what each one
reads and counts. The whole measurement through the CLI is tested in test_bench_dataset.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import recpack
from recpack.bench.dataset_runs import Options, data_files, measure_sequential, read_files

WARM = Options(warm=True, progress=False, threads=2)


@pytest.fixture
def packed(tiny_jpegs: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ds"
    recpack.pack(tiny_jpegs, out, recpack.PackOptions(num_shards=2, workers=0, progress=False))
    return out


def test_options_bounds() -> None:
    assert Options(max_images=0).cap(10**9) == 10**9 and Options(max_images=5).cap(100) == 5
    assert Options(threads=3).n_threads == 3 and Options().n_threads == (os.cpu_count() or 1)


def test_data_files_are_the_shards(packed: Path) -> None:
    files = data_files(packed)
    assert len(files) == 2 and all(f.endswith(".rpk") and os.path.isfile(f) for f in files)


def test_sequential_run_reads_every_shard_byte(packed: Path) -> None:
    files = data_files(packed)
    run = measure_sequential(files, WARM)
    assert run["name"] == "sequential" and run["cache"] == "warm" and run["images"] == 0
    assert run["bytes"] == sum(os.path.getsize(f) for f in files) and "time limit" not in run["note"]
    assert run["mb_per_s"] == pytest.approx(run["bytes"] / 1e6 / run["seconds"])


def test_files_run_reads_whole_files_and_extrapolates_a_partial_pass(tiny_jpegs: Path) -> None:
    paths = sorted(str(p) for p in tiny_jpegs.rglob("*.jpg"))
    run = read_files(paths, WARM)
    assert run["name"] == "files" and run["images"] == 24 and run["total_files"] == 24
    assert run["bytes"] == sum(os.path.getsize(p) for p in paths) and "extrapolated_epoch_s" not in run
    part = read_files(paths, Options(warm=True, progress=False, threads=2, max_images=6))
    assert part["images"] == 6 and part["extrapolated_epoch_s"] > 0 and "extrapolated" in part["note"]
