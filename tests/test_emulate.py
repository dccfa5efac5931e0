"""recpack.bench.emulate: the package's names, profiles, argument checks and the tool without root; real emulated
devices (marked ``root``) where the box allows. The cgroup and host helpers have their own test files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from recpack.bench import emulate
from recpack.bench.emulate import (
    METHOD_V1,
    METHOD_V2,
    PROFILES,
    Profile,
    check_environment,
    emulated_device,
    get_profile,
    measure,
)
from recpack.bench.emulate.host import find_tool
from recpack.errors import RecpackError

TOOL = Path(__file__).resolve().parent.parent / "tools" / "emulate-device"


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
    losetup = find_tool("losetup")  # /usr/sbin may be missing from PATH
    assert losetup is not None
    assert str(tmp_path) not in subprocess.run([losetup, "-a"], capture_output=True, text=True).stdout


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
