"""recpack.bench.device / cache / stats / emulated: parsing and identification on fake /proc and /sys trees,
the stats math and classes, a short real measurement on a small file (no root), the CLI; root-only ones
(emulated device) are marked ``root`` and skip with the reason."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from recpack.bench import cache, stats
from recpack.bench.device import (
    ReadSpec,
    bench_device,
    block_device,
    format_report,
    identify,
    make_test_file,
    plan_file_size,
    run_test,
)
from recpack.cli import cli
from recpack.errors import RecpackError
from test_mountinfo import MOUNTINFO

MiB = 1 << 20

def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def _disk(root: Path, devpath: str, name: str, majmin: str, *, sectors: int, rot: str = "0",
          model: str | None = None, vendor: str | None = None, parts: dict[str, str] | None = None) -> Path:
    """A fake /sys/devices/.../block/NAME (with partitions) linked from /sys/dev/block and /sys/class/block."""
    d = root / "sys" / "devices" / devpath / "block" / name
    _write(d / "dev", majmin)
    _write(d / "size", str(sectors))
    _write(d / "queue" / "rotational", rot)
    if model:
        _write(d / "device" / "model", model)
    if vendor:
        _write(d / "device" / "vendor", vendor)
    _link(root, d, name, majmin)
    for pname, pmm in (parts or {}).items():
        p = d / pname
        _write(p / "dev", pmm)
        _write(p / "partition", "1")
        _write(p / "size", str(sectors // 2))
        _link(root, p, pname, pmm)
    return d


def _link(root: Path, target: Path, name: str, majmin: str) -> None:
    for link in (root / "sys" / "dev" / "block" / majmin, root / "sys" / "class" / "block" / name):
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(target, link.parent))


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    """/proc/self/mountinfo = MOUNTINFO and a /sys with an NVMe disk (2 partitions), a SATA HDD, device-mapper
    on the second NVMe partition, a loop device backed by a file on /data, md0 over sda1 + sdb1."""
    root = tmp_path / "root"
    _write(root / "proc" / "self" / "mountinfo", MOUNTINFO)
    _disk(root, "pci0000:00/nvme/nvme0", "nvme0n1", "259:0", sectors=2_000_000_000, model="Samsung SSD 980 PRO",
          parts={"nvme0n1p1": "259:1", "nvme0n1p2": "259:2", "nvme0n1p3": "259:3"})
    _disk(root, "pci0000:00/ata1", "sda", "8:0", sectors=8_000_000_000, rot="1", model="WDC WD4005FZBX",
          vendor="ATA", parts={"sda1": "8:1"})
    _disk(root, "pci0000:00/ata2", "sdb", "8:16", sectors=8_000_000_000, rot="1", model="WDC WD4005FZBX",
          vendor="ATA", parts={"sdb1": "8:17"})
    dm = _disk(root, "virtual", "dm-0", "253:0", sectors=1_000_000)
    _write(dm / "dm" / "name", "vg-data")
    (dm / "slaves").mkdir()
    (dm / "slaves" / "nvme0n1p3").symlink_to("../../../pci0000:00/nvme/nvme0/block/nvme0n1/nvme0n1p3")
    loop = _disk(root, "virtual", "loop0", "7:0", sectors=524288)
    _write(loop / "loop" / "backing_file", "/data/images/backing.img (deleted)")
    md = _disk(root, "virtual", "md0", "9:0", sectors=8_000_000_000, rot="1")
    (md / "slaves").mkdir()
    for s in ("sda1", "sdb1"):
        (md / "slaves" / s).touch()
    return root


# -------------------------------------------------------------------------------------------------
# identification on the fake tree


def test_partition_resolves_to_its_disk(fake_root: Path) -> None:
    st = identify("/home/me", sys_root=str(fake_root), proc_root=str(fake_root))
    assert st["fstype"] == "ext4" and st["mount_point"] == "/" and st["majmin"] == "259:2"
    dev = st["device"]
    assert dev["name"] == "nvme0n1p2" and dev["kind"] == "partition" and dev["size_bytes"] == 1_000_000_000 * 512
    assert dev["model"] == "Samsung SSD 980 PRO" and dev["rotational"] is False  # read from the disk
    assert [d["name"] for d in st["disks"]] == ["nvme0n1"]
    assert st["disks"][0]["kind"] == "disk" and st["disks"][0]["size_bytes"] == 2_000_000_000 * 512
    assert st["rotational"] is False and st["note"] is None
    assert st["chain"] == "ext4 on nvme0n1p2 -> nvme0n1"


def test_device_mapper_follows_slaves(fake_root: Path) -> None:
    st = identify("/data/images", sys_root=str(fake_root), proc_root=str(fake_root))
    assert st["device"]["kind"] == "dm" and st["device"]["dm_name"] == "vg-data"
    assert [d["name"] for d in st["disks"]] == ["nvme0n1"]
    assert st["chain"] == "xfs on dm-0 -> nvme0n1p3 -> nvme0n1"


def test_loop_follows_backing_file_recursively(fake_root: Path) -> None:
    st = identify("/data/my disk/f", sys_root=str(fake_root), proc_root=str(fake_root))
    loop = st["device"]
    assert loop["kind"] == "loop" and loop["backing_file"] == "/data/images/backing.img"  # "(deleted)" cut
    assert [d["name"] for d in st["disks"]] == ["nvme0n1"]  # loop -> file on /data (dm-0) -> nvme0n1p3 -> disk
    assert st["chain"].startswith("ext4 on loop0 -> file /data/images/backing.img on xfs -> dm-0")


def test_md_lists_every_disk(fake_root: Path) -> None:
    st = identify("/raid", sys_root=str(fake_root), proc_root=str(fake_root))
    assert st["device"]["kind"] == "md"
    assert [d["name"] for d in st["disks"]] == ["sda", "sdb"]
    assert st["disks"][0]["model"] == "WDC WD4005FZBX" and st["disks"][0]["vendor"] == "ATA"
    assert st["rotational"] is True


def test_anonymous_device_falls_back_to_the_mount_source(fake_root: Path) -> None:
    st = identify("/btr/x", sys_root=str(fake_root), proc_root=str(fake_root))  # btrfs: 0:50, source /dev/sdb
    assert st["device"]["name"] == "sdb" and st["rotational"] is True


def test_tmpfs_has_no_block_device(fake_root: Path) -> None:
    st = identify("/tmp/x", sys_root=str(fake_root), proc_root=str(fake_root))
    assert st["device"] is None and st["disks"] == [] and st["fstype"] == "tmpfs"
    assert "no block device" in st["note"] and "no block device" in st["chain"]
    assert block_device("0:45", str(fake_root), str(fake_root)) is None
    assert block_device("99:99", str(fake_root), str(fake_root)) is None


def test_no_mountinfo(tmp_path: Path) -> None:
    st = identify("/x", sys_root=str(tmp_path), proc_root=str(tmp_path))
    assert st["device"] is None and "no mount" in st["note"]


@pytest.mark.skipif(not os.path.exists("/proc/self/mountinfo"), reason="needs Linux /proc")
def test_identify_this_machine(tmp_path: Path) -> None:
    st = identify(tmp_path)
    assert st["mount_point"] and st["fstype"] and st["chain"]
    json.dumps(st)


# -------------------------------------------------------------------------------------------------
# stats


def test_percentiles_and_summary() -> None:
    lat = np.arange(1, 101) * 1000  # 1..100 µs
    p50, p99 = stats.percentiles_us(lat)
    assert p50 == pytest.approx(50.5) and p99 == pytest.approx(99.01)
    s = stats.summarize(lat, nbytes=100 * 4096, seconds=0.5)
    assert s["reads"] == 100 and s["iops"] == pytest.approx(200) and s["mb_s"] == pytest.approx(0.8192)
    assert s["mean_us"] == pytest.approx(50.5) and s["max_us"] == 100
    empty = stats.summarize([], 0, 1.0)
    assert empty["reads"] == 0 and math.isnan(empty["p50_us"]) and empty["iops"] == 0


@pytest.mark.parametrize("p50, iops, many, share, expected", [
    (3.0, 300_000, None, None, "ram"),           # page cache hits
    (3.0, 300_000, None, 0.0, "ram"),
    (16.0, 50_000, 130_000, 1.0, "nvme"),        # virtual disk answered from the host's memory
    (60.0, 15_000, 400_000, 1.0, "nvme"),
    (70.0, 13_000, None, None, "nvme"),          # 77 µs per read at QD1
    (22.0, 9_500, 10_500, 1.0, "sata-ssd"),      # throttled: the median lies, 105 µs per read
    (19.0, 9_971, 10_152, 1.0, "sata-ssd"),      # ... even below 20 µs, when the device served the reads
    (120.0, 8_000, 40_000, 1.0, "sata-ssd"),
    (3_600.0, 78, 118, 1.0, "hdd"),              # median above 2 ms
    (500.0, 900, 5_000, 1.0, "hdd"),             # below 1,000 reads/s
])
def test_classify(p50: float, iops: float, many: float | None, share: float | None, expected: str) -> None:
    key, reason = stats.classify(p50, iops, many, share)
    assert key == expected, reason
    assert key in stats.CLASS_LABELS and "µs" in reason


def test_classify_matches_order_thresholds() -> None:
    from recpack.probe import HDD_MAX_IOPS, HDD_P50_MS
    assert stats.HDD_P50_US == HDD_P50_MS * 1000 and stats.HDD_MAX_IOPS == HDD_MAX_IOPS
    with pytest.raises(ValueError, match="QD1"):
        stats.classify(float("nan"), 1.0)


# -------------------------------------------------------------------------------------------------
# cache helpers and measurement on a small file (no root needed)


def test_plan_file_size() -> None:
    assert plan_file_size(1 << 30, 10 << 30) == 1 << 30
    assert plan_file_size(1 << 30, 100 * MiB + 5) == 50 * MiB
    with pytest.raises(RecpackError, match="free"):
        plan_file_size(1 << 30, 10 * MiB)


def test_evict_methods_and_cached_fraction(tmp_path: Path) -> None:
    f = tmp_path / "f.bin"
    f.write_bytes(os.urandom(4 * MiB))
    assert cache.evict([tmp_path], warm=True) == "warm"
    assert cache.evict([f], direct=True) == "o_direct"
    how = cache.evict([tmp_path], drop_all=False)
    assert how in ("fadvise", "none")
    frac = cache.cached_fraction(f)
    if how == "fadvise" and frac is not None:
        assert frac < 0.5
        f.read_bytes()
        assert cache.cached_fraction(f) == 1.0
    assert list(cache.iter_files([tmp_path, tmp_path / "missing"])) == [str(f)]
    assert set(cache.METHODS) >= {"drop_caches", "fadvise", "o_direct", "warm", "none"}


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
