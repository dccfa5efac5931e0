"""recpack.bench.device and its report: a short real measurement on a small file (no root), the CLI; the
emulated device (root only) is marked ``root`` and skips with the reason. Identification, the readers, the
stats and the cache have their own test files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from recpack.bench import cache, stats
from recpack.bench.device import bench_device
from recpack.bench.device_report import format_report
from recpack.cli import cli

MiB = 1 << 20


def test_bench_device_small_file_cleans_up(tmp_path: Path) -> None:
    res = bench_device(tmp_path, size=32 * MiB, duration=0.2, threads=4, progress=False)
    assert list(tmp_path.iterdir()) == []  # the test file is gone
    assert set(res["tests"]) == {"rand_4k_qd1", "rand_4k_threads", "rand_record_qd1", "seq_1m"}
    assert res["cache"] in cache.METHODS and res["file"]["bytes"] == 32 * MiB
    assert res["class"] in stats.CLASS_LABELS and res["class_label"] == stats.CLASS_LABELS[res["class"]]
    assert res["tests"]["rand_record_qd1"]["block"] == 110 << 10
    text = format_report(res)
    assert "random 4 KiB, 4 threads" in text and "class" in text and res["class_label"] in text
    warm = bench_device(tmp_path, size=8 * MiB, duration=0.1, threads=2, warm=True, progress=False,
                        tests=["rand_4k_qd1"])
    assert warm["cache"] == "warm" and "warm" in warm["class_reason"] and "WARM" in format_report(warm)
    with pytest.raises(ValueError, match="unknown tests"):
        bench_device(tmp_path, tests=["nope"], progress=False)
    with pytest.raises(ValueError, match="pick one"):
        bench_device(tmp_path, direct=True, warm=True, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_interrupt_removes_the_test_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import recpack.bench.device as device

    def interrupted(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(device, "run_test", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bench_device(tmp_path, size=8 * MiB, duration=0.1, progress=False)
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------------------------
# CLI


def test_cli_json_and_table(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["bench", "device", str(tmp_path), "--size", "16MiB", "--duration", "0.1", "--threads", "2",
            "--no-progress"]
    done = runner.invoke(cli, [*args, "--json"])
    assert done.exit_code == 0, done.output
    res = json.loads(done.output)
    assert res["settings"]["threads"] == 2 and res["storage"]["mount_point"]
    assert all(t["reads"] > 0 for t in res["tests"].values())
    done = runner.invoke(cli, args)
    assert done.exit_code == 0 and "sequential 1 MiB" in done.output and "class" in done.output
    assert list(tmp_path.iterdir()) == []
    bad = runner.invoke(cli, ["bench", "device", str(tmp_path), "--size", "lots"])
    assert bad.exit_code == 2 and "not a size" in bad.output


def test_cli_emulate_without_root_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    done = CliRunner().invoke(cli, ["bench", "device", str(tmp_path), "--emulate", "hdd", "--no-progress"])
    assert done.exit_code == 1
    assert "root" in done.output and "sudo" in done.output
    assert done.output.count("root") == 1, done.output  # said once
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------------------------
# Emulated device (root)


@pytest.mark.root
def test_emulated_hdd_is_hdd_like() -> None:
    from recpack.bench.emulated import python_argv, run_emulated
    from recpack.bench.emulate import check_environment

    ok, why = check_environment()
    if not ok:
        pytest.skip(why)
    res = run_emulated("hdd", [], lambda p: python_argv("bench", "device", str(p[0]), "--json", "--no-progress",
                                                        "--size", "32MiB", "--duration", "1", "--threads", "4"),
                       size=128 * MiB, progress=False)
    assert res["emulation"]["profile"] == "hdd" and res["emulation"]["read_iops_limit"] == 110
    assert res["class"] == "hdd", res["class_reason"]
    assert res["cache"] == "drop_caches" and res["storage"]["device"]["kind"] == "loop"
    assert res["tests"]["rand_record_qd1"]["iops"] < 170
