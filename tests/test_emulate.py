"""recpack.emulate: pure helpers without root; real emulated devices (marked ``root``) where the box allows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from recpack import emulate
from recpack.emulate import (
    METHOD_V1,
    METHOD_V2,
    PROFILES,
    Profile,
    check_environment,
    device_number,
    emulated_device,
    find_cgroup,
    get_profile,
    measure,
    require_root,
    throttle_settings,
    wrapper_argv,
)
from recpack.errors import RecpackError

TOOL = Path(__file__).resolve().parent.parent / "tools" / "emulate-device"

HYBRID_MOUNTS = textwrap.dedent("""\
    /dev/vda / ext4 rw,relatime 0 0
    tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
    cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
    cgroup /sys/fs/cgroup/blkio cgroup rw,relatime,blkio 0 0
    cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
""")


def test_public_names() -> None:
    assert set(emulate.__all__) == {
        "Profile", "PROFILES", "METHOD_V1", "METHOD_V2", "EmulatedDevice", "emulated_device", "get_profile",
        "require_root", "check_environment", "find_cgroup", "device_number", "throttle_settings",
        "wrapper_argv", "measure", "format_measurement", "MiB",
    }
    for name in emulate.__all__:
        assert hasattr(emulate, name)


def test_profiles_table() -> None:
    hdd, ssd = PROFILES["hdd"], PROFILES["sata-ssd"]
    assert (hdd.read_iops, hdd.read_bps, hdd.rotational) == (110, 170_000_000, True)
    assert (ssd.read_iops, ssd.read_bps, ssd.rotational) == (10_000, 550_000_000, False)
    assert hdd.write_iops is None and hdd.write_bps is None
    assert all(name == p.name for name, p in PROFILES.items())
    assert hdd.summary() == "110 read IOPS, 170 MB/s"
    assert get_profile("hdd") is hdd
    custom = Profile("x", 5, 1_000_000)
    assert get_profile(custom) is custom
    with pytest.raises(ValueError, match="sata-ssd"):
        get_profile("floppy")
    with pytest.raises(ValueError, match="read_iops"):
        Profile("bad", 0, 1)


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
    assert [m[0] for m in emulate._cgroup_mounts(HYBRID_MOUNTS)] == ["cgroup", "cgroup", "cgroup2"]


def test_read_stats_parsing() -> None:
    v1 = ("7:0 Read 262\n7:0 Write 0\n7:0 Sync 262\n7:0 Total 262\n8:0 Read 5\nTotal 262\n"
          "7:0 Read 335544320\n7:0 Write 0\n7:0 Total 335544320\nTotal 335544320\n")
    assert emulate._read_stats(METHOD_V1, v1, "7:0") == (262, 335544320)
    assert emulate._read_stats(METHOD_V1, "", "7:0") == (0, 0)
    v2 = "8:0 rbytes=1 wbytes=2 rios=3 wios=4\n7:3 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n"
    assert emulate._read_stats(METHOD_V2, v2, "7:3") == (1, 4096)
    assert emulate._read_stats(METHOD_V2, v2, "7:9") == (0, 0)


def test_device_number() -> None:
    with pytest.raises(ValueError, match="not a block device"):
        device_number("/dev/null")
    blocks = [Path("/dev") / name for name in sorted(os.listdir("/sys/block")) if (Path("/dev") / name).exists()] \
        if os.path.isdir("/sys/block") else []
    if not blocks:
        pytest.skip("no block device nodes visible")
    expected = (Path("/sys/block") / blocks[0].name / "dev").read_text().strip()
    assert device_number(blocks[0]) == expected


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


def test_check_environment_gives_a_reason_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    ok, reason = check_environment()
    assert not ok and "root" in reason and "skip" in reason
    with pytest.raises(RecpackError, match="needs? root"):
        require_root()
    with pytest.raises(RecpackError, match="root"):
        with emulated_device("hdd", 256 << 20):
            pass


def test_check_environment_names_missing_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(emulate, "_which", lambda name: None if name.startswith("mkfs") else "/bin/" + name)
    ok, reason = check_environment()
    assert not ok and "mkfs.ext4" in reason
    ok, reason = check_environment(fs="zfs")
    assert not ok and "zfs" in reason
    with pytest.raises(RecpackError, match="mkfs.ext4"):
        require_root()


def test_emulated_device_validates_arguments_before_touching_anything() -> None:
    with pytest.raises(ValueError, match="64 MiB"):
        with emulated_device("hdd", 1 << 20):
            pass
    with pytest.raises(ValueError, match="unknown device profile"):
        with emulated_device("tape", 1 << 30):
            pass
    with pytest.raises(ValueError, match="not supported"):
        with emulated_device("hdd", 1 << 30, fs="ntfs"):
            pass


def test_tool_usage_errors() -> None:
    done = subprocess.run([sys.executable, str(TOOL), "hdd"], capture_output=True, text=True)
    assert done.returncode == 2 and "nothing to do" in done.stderr
    done = subprocess.run([sys.executable, str(TOOL), "hdd", "--size", "lots", "--", "true"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "not a size" in done.stderr
    done = subprocess.run([sys.executable, str(TOOL), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "sata-ssd" in done.stdout


# ------------------------------------------------------------------------------------------------
# Real devices (root)


def _skip_unless_possible() -> None:
    ok, reason = check_environment()
    if not ok:
        pytest.skip(reason)


def _leftovers(loop: str, cgroup: str, backing: Path, mount: Path) -> list[str]:
    found = []
    if os.path.ismount(mount) or mount.exists():
        found.append(f"mount {mount}")
    if backing.exists():
        found.append(f"backing {backing}")
    if os.path.exists(cgroup):
        found.append(f"cgroup {cgroup}")
    if (Path("/sys/block") / Path(loop).name / "loop" / "backing_file").exists():
        attached = (Path("/sys/block") / Path(loop).name / "loop" / "backing_file").read_text().strip()
        if attached.startswith(str(backing)):
            found.append(f"loop {loop} -> {attached}")
    return found


@pytest.mark.root
def test_hdd_device_throttles_and_cleans_up(tmp_path: Path) -> None:
    _skip_unless_possible()
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(1 << 20) * 64)  # 64 MiB
    with emulated_device("hdd", 256 << 20, workdir=tmp_path) as dev:
        state = (dev.loop, dev.cgroup, dev.backing, dev.mount)
        assert os.path.ismount(dev.mount) and dev.loop.startswith("/dev/loop") and os.path.isdir(dev.cgroup)
        assert dev.method in (METHOD_V1, METHOD_V2)
        dest = dev.copy_in(src)
        assert dest == dev.mount / "data.bin" and dest.stat().st_size == 64 << 20
        with pytest.raises(ValueError, match="exists"):
            dev.copy_in(src)
        with pytest.raises(ValueError, match="inside"):
            dev.copy_in(src, name="../escape.bin")
        result = measure(dev, path=dest, seconds=1.5)
        # a command run inside the cgroup shows up there, and its reads reach the loop device
        seen = dev.run(["cat", "/proc/self/cgroup"], capture_output=True, text=True, check=True).stdout
        assert Path(dev.cgroup).name in seen
    assert _leftovers(*state) == []
    assert 55 <= result["rand_4k_iops"] <= 165, result
    assert result["seq_mb_s"] <= 170 * 1.10, result  # the bps cap (10% for the throttle's first-slice burst)
    assert result["seq_mb_s"] >= 60, result
    assert result["raw"]["seq"]["device_bytes"] >= result["raw"]["seq"]["bytes"] * 0.9  # cold: read from the device
    with pytest.raises(RecpackError, match="closed"):
        dev.run(["true"])
    dev.close()  # idempotent


@pytest.mark.root
def test_cleanup_on_exception_and_throttled_block(tmp_path: Path) -> None:
    _skip_unless_possible()
    with pytest.raises(KeyError, match="boom"):
        with emulated_device("sata-ssd", 128 << 20, workdir=tmp_path) as dev:
            state = (dev.loop, dev.cgroup, dev.backing, dev.mount)
            (dev.mount / "f").write_bytes(b"x" * 4096)
            with dev.throttled():
                assert str(os.getpid()) in Path(dev.procs_file).read_text().split()
                assert (dev.mount / "f").read_bytes() == b"x" * 4096
            assert str(os.getpid()) not in Path(dev.procs_file).read_text().split()
            dev.popen(["sleep", "30"])  # still running at teardown: terminated
            raise KeyError("boom")
    assert _leftovers(*state) == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.root
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_tool_cleans_up_on_signals(tmp_path: Path, sig: signal.Signals) -> None:
    _skip_unless_possible()
    proc = subprocess.Popen([sys.executable, str(TOOL), "hdd", "--size", "128MiB", "--workdir", str(tmp_path),
                             "--", "sleep", "30"], stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("running inside"):
            break
    cgroup = lines[-1].split()[2].rstrip(":")
    assert os.path.isdir(cgroup), lines
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C reaches the whole foreground group
    else:
        proc.send_signal(sig)
    rest = proc.stderr.read()
    assert proc.wait(timeout=20) == 130, lines + [rest]
    proc.stderr.close()
    assert not os.path.exists(cgroup)
    assert list(tmp_path.iterdir()) == []
    assert str(tmp_path) not in subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout


@pytest.mark.root
def test_tool_runs_command_inside_and_returns_its_exit_code(tmp_path: Path) -> None:
    _skip_unless_possible()
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello")
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run([sys.executable, str(TOOL), "hdd", "--size", "128MiB", "--workdir", str(work),
                           "--copy", str(src), "--", "sh", "-c",
                           'cat "$1/src/a.txt"; grep -q recpack-emulate /proc/self/cgroup || exit 9; exit 7',
                           "sh", "{mount}"], capture_output=True, text=True)
    assert done.returncode == 7, done.stderr
    assert done.stdout == "hello"
    assert list(work.iterdir()) == []
