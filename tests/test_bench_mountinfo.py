"""recpack.bench.mountinfo: the mount-table parsers and the path-to-mount lookup."""

from __future__ import annotations

from pathlib import Path

from recpack.bench.mountinfo import find_mount, fstype_of, parse_mountinfo, parse_mounts, unescape

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
30 27 253:0 / /data rw,noatime shared:5 - xfs /dev/mapper/vg-data rw,attr2
31 27 0:45 / /tmp rw,nosuid - tmpfs tmpfs rw,size=1024k
32 30 7:0 / /data/my\\040disk rw,relatime - ext4 /dev/loop0 rw
33 27 9:0 / /raid rw - ext4 /dev/md0 rw
34 27 0:50 / /btr rw - btrfs /dev/sdb rw
bad line
"""


def test_parse_mountinfo_unescapes_and_skips_bad_lines() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert len(mounts) == 7
    m = {x.mount_point: x for x in mounts}
    assert m["/"].fstype == "ext4" and m["/"].source == "/dev/nvme0n1p2" and m["/"].majmin == "259:2"
    assert m["/data"].fstype == "xfs" and m["/data"].options == "rw,noatime"  # optional fields skipped
    assert "/data/my disk" in m  # \040 is a space


def test_find_mount_longest_prefix() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert find_mount("/data/my disk/x", mounts).mount_point == "/data/my disk"  # type: ignore[union-attr]
    assert find_mount("/data/my diskette", mounts).mount_point == "/data"  # type: ignore[union-attr]
    assert find_mount("/datafoo", mounts).mount_point == "/"  # type: ignore[union-attr]
    assert find_mount("/tmp", mounts).fstype == "tmpfs"  # type: ignore[union-attr]
    assert find_mount("/x", []) is None


def test_unescape_decodes_octal_only() -> None:
    assert unescape("/a\\040b\\011c\\012d\\134e") == "/a b\tc\nd\\e"
    assert unescape("/x\\09y\\4") == "/x\\09y\\4"  # not three octal digits: kept as written


def test_parse_mounts_splits_options_and_unescapes() -> None:
    text = "cgroup /sys/fs/cgroup/blk\\040io cgroup rw,relatime,blkio 0 0\nshort line\n/dev/vda / ext4 rw 0 0\n"
    assert parse_mounts(text) == [("cgroup", "/sys/fs/cgroup/blk io", "cgroup", ["rw", "relatime", "blkio"]),
                                  ("/dev/vda", "/", "ext4", ["rw"])]


def test_fstype_of_reads_the_fake_tree(tmp_path: Path) -> None:
    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "proc" / "self" / "mountinfo").write_text(MOUNTINFO)
    assert fstype_of("/tmp", proc_root=str(tmp_path)) == "tmpfs"
    assert fstype_of("/srv", proc_root=str(tmp_path)) == "ext4"
    assert fstype_of("/tmp", proc_root=str(tmp_path / "missing")) is None
