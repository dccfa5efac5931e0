"""recpack.bench.identify: the storage under a path, on a fake /proc and /sys tree (NVMe partitions, SATA disks,
device-mapper, a loop device on a file, md RAID, btrfs, tmpfs) and on this machine."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from recpack.bench.identify import block_device, identify
from test_bench_mountinfo import MOUNTINFO


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
