"""``recpack bench dataset``: the JSON schema and the table through the CLI on ~40 tiny JPEGs, the plot, that
errors and Ctrl-C leave no temporary folder, and the io mode of cold runs. The bottleneck logic is tested in
test_bench_dataset_report.py, single runs in test_bench_dataset_runs.py."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import recpack
from recpack.bench import dataset as bench_dataset
from recpack.bench import dataset_runs
from recpack.bench.dataset_report import RUN_NAMES, SCHEMA, STAGES, format_table
from recpack.cli import cli
from recpack.errors import RecpackError


# ---------------------------------------------------------------------------------------------- through the CLI

@pytest.fixture(scope="module")
def forty_jpegs(tmp_path_factory: pytest.TempPathFactory, make_jpeg: Callable[..., bytes]) -> Path:
    """An ImageFolder of 4 classes x 10 small photo-like JPEGs."""
    root = tmp_path_factory.mktemp("bench") / "images"
    for c in range(4):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(10):
            (root / f"c{c}" / f"{i:02d}.jpg").write_bytes(make_jpeg((96 + 8 * i, 72 + 4 * c), seed=10 * c + i))
    return root


FAST = ["--warm", "--no-progress", "--batch-size", "8", "--size", "32", "--decode-images", "16", "--threads", "2",
        "--device", "cpu"]


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, ["bench", "dataset", *args])


def test_json_schema_end_to_end(forty_jpegs: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    res = _invoke(str(forty_jpegs), "--json", "--workdir", str(work), *FAST)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["schema"] == SCHEMA and out["records"] == 40 and out["packed_here"] is True
    assert [r["name"] for r in out["runs"]] == list(RUN_NAMES)
    for r in out["runs"]:
        assert {"name", "images", "bytes", "seconds", "images_per_s", "mb_per_s", "pct_of_sequential", "cache",
                "order", "note"} <= set(r)
        assert r["seconds"] > 0 and r["mb_per_s"] > 0
        assert r["cache"] in ("warm", "warm (in memory)")
        if r["images"]:
            assert r["images_per_s"] == pytest.approx(r["images"] / r["seconds"])
        assert r["mb_per_s"] == pytest.approx(r["bytes"] / 1e6 / r["seconds"])
    by = {r["name"]: r for r in out["runs"]}
    assert by["files"]["images"] == by["records_sequential"]["images"] == by["loader"]["images"] == 40
    assert by["records_sequential"]["order"] == "sequential" and by["records_shuffled"]["order"] == "random"
    assert by["sequential"]["pct_of_sequential"] == 1.0 and by["decode"]["pct_of_sequential"] is None
    assert by["records_sequential"]["pct_of_sequential"] == pytest.approx(
        by["records_sequential"]["mb_per_s"] / by["sequential"]["mb_per_s"])
    assert 0.0 <= by["decode"]["transform_fraction"] <= 1.0
    assert set(out["stages"]) == {*STAGES, "wall"} and set(out["busy"]) == set(STAGES)
    assert out["bottleneck"]["stage"] in ("disk", "decode", "copy", "consumer", "none")
    assert out["bottleneck"]["advice"].startswith(out["bottleneck"]["label"])
    stats = by["loader"]["loader_stats"]
    assert stats["samples"] == 40 and stats["copy_s"] > 0 and stats["copy_device_s"] == 0
    assert out["device"] == "cpu" and out["machine"]["cores"] == os.cpu_count()
    assert list(work.iterdir()) == []  # the temporary pack is gone
    assert "bottleneck:" in format_table(out) and "% of seq" in format_table(out)


def test_table_on_a_packed_dataset_with_some_runs(forty_jpegs: Path, tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    recpack.pack(forty_jpegs, ds, recpack.PackOptions(num_shards=2, workers=0, progress=False))
    res = _invoke(str(forty_jpegs), str(ds), "--runs", "sequential,records_shuffled", "--order", "shard_shuffle",
                  "--max-images", "16", *FAST)
    assert res.exit_code == 0, res.output
    assert "packed records, shuffled (raw), order=shard_shuffle" in res.stdout
    assert "full Loader" not in res.stdout and "bottleneck" not in res.stdout
    assert (ds / "index.json").exists()  # a given dataset is never removed
    res = _invoke(str(forty_jpegs), str(ds), "--runs", "files,nope", *FAST)
    assert res.exit_code == 2 and "nope" in res.output


def test_plot(forty_jpegs: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "bench.png"
    res = _invoke(str(forty_jpegs), "--plot", str(png), "--workdir", str(tmp_path), "--runs",
                  "records_sequential,decode,loader", *FAST)
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plot: {png}" in res.stdout


@pytest.mark.parametrize("exc, code, message", [
    (KeyboardInterrupt(), 130, "interrupted; temporary files were removed"),
    (RecpackError("disk went away; re-run"), 1, "error: disk went away"),
])
def test_interrupts_and_errors_leave_no_temporary_folder(forty_jpegs: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, exc: BaseException,
                                                         code: int, message: str) -> None:
    seen: list[str] = []

    def boom(dataset: str, opts: Any) -> Any:
        seen.append(dataset)
        assert os.path.exists(os.path.join(dataset, "index.json"))  # the temporary pack exists mid-run
        raise exc

    monkeypatch.setattr(bench_dataset, "decode_only", boom)
    work = tmp_path / "work"
    work.mkdir()
    res = _invoke(str(forty_jpegs), "--workdir", str(work), "--runs", "sequential,decode,loader", *FAST)
    assert res.exit_code == code and message in res.output, res.output
    assert seen and seen[0].startswith(str(work)) and list(work.iterdir()) == []


def test_unexpected_errors_leave_no_temporary_folder(forty_jpegs: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(dataset: str, opts: Any, shuffled: bool) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(bench_dataset, "read_records", boom)
    with pytest.raises(RuntimeError, match="bug"):
        bench_dataset.measure(str(forty_jpegs), None, bench_dataset.Options(progress=False, warm=True),
                              workdir=str(tmp_path), runs=("records_sequential",))
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs_give_clear_errors(tmp_path: Path, forty_jpegs: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    res = _invoke(str(forty_jpegs), str(empty), *FAST)
    assert res.exit_code == 1 and "error:" in res.output and "index.json" in res.output
    res = _invoke(str(forty_jpegs), "--device", "cuda:0", "--runs", "loader", "--workdir", str(tmp_path),
                  *FAST[:-2]) if not _cuda() else None
    if res is not None:
        assert res.exit_code == 1 and "device='cpu'" in res.output
        assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.mark.root
def test_emulated_sata_ssd(forty_jpegs: Path, tmp_path: Path) -> None:
    from recpack.bench.emulate import check_environment

    ok, reason = check_environment()
    if not ok:
        pytest.skip(reason)
    res = _invoke(str(forty_jpegs), "--emulate", "sata-ssd", "--json", "--workdir", str(tmp_path), "--runs",
                  "sequential,files,records_shuffled", *FAST[1:])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["emulation"]["profile"] == "sata-ssd" and out["image_dir"] == str(forty_jpegs)
    assert out["dataset"] == "(temporary pack, removed)" and out["runs"][0]["cache"] == "drop_caches"
    assert [r["images"] for r in out["runs"]] == [0, 40, 40]
    assert list(tmp_path.iterdir()) == []


def test_cold_runs_read_with_direct_io_like_auto_does_for_data_larger_than_ram(forty_jpegs: Path,
                                                                               tmp_path: Path) -> None:
    packed = tmp_path / "packed"
    recpack.pack(forty_jpegs, packed, recpack.PackOptions(seed=0, progress=False))
    kw: dict[str, Any] = {"decode": False, "transform": None, "device": "cpu", "threads": 1}
    cases = [(bench_dataset.Options(), "direct", "cold run"),
             (bench_dataset.Options(warm=True), "buffered", "fit the page cache"),  # 40 images fit: auto
             (bench_dataset.Options(io="buffered"), "buffered", "chosen by the caller")]
    for opts, io, why in cases:
        loader = dataset_runs.open_loader(str(packed), opts, **kw)
        try:
            assert loader.io == io and why in loader.io_reason
            assert sum(len(items) for items, _ in loader) == 40  # and it reads every record that way
        finally:
            loader.close()
