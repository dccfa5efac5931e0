"""recpack.bench.emulate.cgroup: finding the throttle, its settings, the join wrapper and the I/O counters
(pure text and temp folders; no root)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from recpack.bench.emulate.cgroup import (
    METHOD_V1,
    METHOD_V2,
    cgroup_mounts,
    find_cgroup,
    parse_io_stats,
    throttle_settings,
    wrapper_argv,
)
from recpack.bench.emulate.profiles import PROFILES, Profile

HYBRID_MOUNTS = textwrap.dedent("""\
    /dev/vda / ext4 rw,relatime 0 0
    tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
    cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
    cgroup /sys/fs/cgroup/blkio cgroup rw,relatime,blkio 0 0
    cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
""")



def test_throttle_settings_v1_and_v2() -> None:
    hdd = PROFILES["hdd"]
    assert throttle_settings(hdd, "7:3", METHOD_V1) == [
        ("blkio.throttle.read_iops_device", "7:3 110"),
        ("blkio.throttle.read_bps_device", "7:3 170000000"),
    ]
    assert throttle_settings(hdd, "7:3", METHOD_V2) == [("io.max", "7:3 riops=110 rbps=170000000")]
    both = Profile("w", 100, 2_000_000, write_iops=50, write_bps=1_000_000)
    assert throttle_settings(both, "259:12", METHOD_V2) == [
        ("io.max", "259:12 riops=100 rbps=2000000 wiops=50 wbps=1000000")]
    assert ("blkio.throttle.write_bps_device", "259:12 1000000") in throttle_settings(both, "259:12", METHOD_V1)
    with pytest.raises(ValueError, match="MAJOR:MINOR"):
        throttle_settings(hdd, "/dev/loop3", METHOD_V1)
    with pytest.raises(ValueError, match="method"):
        throttle_settings(hdd, "7:3", "cgroup-v3")


def test_find_cgroup_parses_mounts(tmp_path: Path) -> None:
    v1 = tmp_path / "blkio"
    v1.mkdir()
    (v1 / "blkio.throttle.read_iops_device").write_text("")
    v2 = tmp_path / "unified"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpu memory pids\n")
    mounts = (f"cgroup {v1} cgroup rw,relatime,blkio 0 0\n"
              f"cgroup2 {v2} cgroup2 rw,relatime 0 0\n")
    assert find_cgroup(mounts) == (METHOD_V1, v1)
    (v1 / "blkio.throttle.read_iops_device").unlink()
    reason = find_cgroup(mounts)
    assert isinstance(reason, str) and "CONFIG_BLK_DEV_THROTTLING" in reason and "no io controller" in reason
    (v2 / "cgroup.controllers").write_text("cpu io memory\n")
    assert find_cgroup(f"cgroup2 {v2} cgroup2 rw 0 0\n") == (METHOD_V2, v2)
    assert "no cgroup" in str(find_cgroup("/dev/vda / ext4 rw 0 0\n"))
    # mount points with spaces are octal-escaped in /proc/self/mounts
    spaced = tmp_path / "a b"
    spaced.mkdir()
    (spaced / "cgroup.controllers").write_text("io\n")
    assert find_cgroup(f"cgroup2 {str(spaced).replace(' ', chr(92) + '040')} cgroup2 rw 0 0\n") == (METHOD_V2, spaced)
    assert [m[0] for m in cgroup_mounts(HYBRID_MOUNTS)] == ["cgroup", "cgroup", "cgroup2"]


def test_read_stats_parsing() -> None:
    v1 = ("7:0 Read 262\n7:0 Write 0\n7:0 Sync 262\n7:0 Total 262\n8:0 Read 5\nTotal 262\n"
          "7:0 Read 335544320\n7:0 Write 0\n7:0 Total 335544320\nTotal 335544320\n")
    assert parse_io_stats(METHOD_V1, v1, "7:0") == (262, 335544320)
    assert parse_io_stats(METHOD_V1, "", "7:0") == (0, 0)
    v2 = "8:0 rbytes=1 wbytes=2 rios=3 wios=4\n7:3 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n"
    assert parse_io_stats(METHOD_V2, v2, "7:3") == (1, 4096)
    assert parse_io_stats(METHOD_V2, v2, "7:9") == (0, 0)


def test_wrapper_argv_joins_then_execs_with_arguments_intact(tmp_path: Path) -> None:
    procs = tmp_path / "cgroup.procs"  # a plain file stands in for the cgroup's
    tricky = ["a b", "$HOME", "'q'", '"d"', "*", ""]
    argv = wrapper_argv(procs, [sys.executable, "-c", "import os, sys; print(os.getpid()); print(sys.argv[1:])",
                                *tricky])
    assert argv[:4] == ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(procs)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[1] == repr(tricky)
    assert procs.read_text().strip() == out[0]  # the pid written is the command's own (exec, not a child)
    with pytest.raises(ValueError, match="empty command"):
        wrapper_argv(procs, [])


def test_wrapper_fails_cleanly_when_the_cgroup_is_gone(tmp_path: Path) -> None:
    argv = wrapper_argv(tmp_path / "missing" / "cgroup.procs", ["true"])
    assert subprocess.run(argv, capture_output=True).returncode != 0
