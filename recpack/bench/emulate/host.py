"""What an emulated device needs from the machine, and the system tools it runs.

:func:`check_environment` says whether this box can make one (Linux, root, util-linux and mkfs, loop
devices, a writable drop_caches, block-I/O throttling) and, if not, why; it never raises, so tests and
benchmarks skip with its reason. :func:`find_tool` looks for a tool on ``PATH`` and in the sbin folders
(absent from many non-login ``PATH`` values), and :func:`run_tool` runs the full path it found.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from ...errors import RecpackError
from ..mountinfo import fstype_of
from .cgroup import find_cgroup

__all__ = [
    "MKFS_OPTIONS",
    "NEEDS_ROOT",
    "find_tool",
    "run_tool",
    "check_environment",
    "require_root",
    "device_number",
    "default_workdir",
]

_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")
#: mkfs options per file system: no lazy initialisation, so no background writes skew a benchmark.
MKFS_OPTIONS: dict[str, list[str]] = {
    "ext4": ["-F", "-q", "-m", "0", "-E", "lazy_itable_init=0,lazy_journal_init=0"],
    "ext3": ["-F", "-q", "-m", "0", "-E", "lazy_itable_init=0,lazy_journal_init=0"],
    "ext2": ["-F", "-q", "-m", "0", "-E", "lazy_itable_init=0"],
    "xfs": ["-f", "-q"],
}
#: :func:`check_environment`'s reason when the only thing missing may be root.
NEEDS_ROOT = "emulated devices need root (loop devices, mounts, cgroups); without it, skip this benchmark"


def find_tool(name: str) -> str | None:
    """The full path of the program ``name`` on ``PATH`` or in the sbin folders, or None."""
    path = os.environ.get("PATH", os.defpath) + os.pathsep + os.pathsep.join(_SBIN)
    return shutil.which(name, path=path)


def run_tool(argv: list[str]) -> str:
    """Run a system tool by the full path :func:`find_tool` gives; its stdout. RecpackError with its stderr
    on failure, or when the tool is not installed."""
    tool = find_tool(argv[0])
    if tool is None:
        raise RecpackError(f"{argv[0]} not found (on PATH or in {', '.join(_SBIN)}); install util-linux / e2fsprogs")
    try:
        done = subprocess.run([tool, *argv[1:]], capture_output=True, text=True, check=False)
    except OSError as e:
        raise RecpackError(f"{' '.join(argv)}: {e}") from e
    if done.returncode != 0:
        raise RecpackError(f"{' '.join(argv)} failed (exit {done.returncode}): {done.stderr.strip()}")
    return done.stdout


def check_environment(fs: str = "ext4") -> tuple[bool, str]:
    """Whether :func:`recpack.bench.emulate.emulated_device` can work here: ``(True, how)`` or
    ``(False, why not)``. Never raises."""
    if not sys.platform.startswith("linux"):
        return False, f"emulated devices need Linux (loop devices, cgroups); this is {sys.platform}"
    if os.geteuid() != 0:
        return False, NEEDS_ROOT
    if fs not in MKFS_OPTIONS:
        return False, f"file system {fs!r} is not supported; use one of {', '.join(MKFS_OPTIONS)}"
    missing = [tool for tool in ("losetup", "mount", "umount", f"mkfs.{fs}") if find_tool(tool) is None]
    if missing:
        return False, f"emulated devices need {' and '.join(missing)} (util-linux, e2fsprogs/xfsprogs); not found"
    if not os.path.exists("/dev/loop-control"):
        return False, "no /dev/loop-control: the kernel has no loop devices, or this container cannot see them"
    if not os.access("/proc/sys/vm/drop_caches", os.W_OK):
        return False, "/proc/sys/vm/drop_caches is not writable (read-only /proc in a container?)"
    found = find_cgroup()
    if isinstance(found, str):
        return False, f"no block I/O throttling: {found}"
    method, root = found
    return True, f"{method} at {root}"


def require_root(fs: str = "ext4") -> None:
    """Raise :class:`RecpackError` saying what is missing unless :func:`check_environment` passes."""
    ok, reason = check_environment(fs)
    if not ok:
        if "root" not in reason:
            reason = f"emulated devices need root with loop devices, mounts and cgroups: {reason}"
        raise RecpackError(reason)


def device_number(path: str | os.PathLike[str]) -> str:
    """``"MAJOR:MINOR"`` of a block device node, as cgroup files want it. ``ValueError`` if not one."""
    st = os.stat(path)
    if not stat.S_ISBLK(st.st_mode):
        raise ValueError(f"{os.fspath(path)} is not a block device")
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


def default_workdir() -> Path:
    """A temp folder on a real disk: ``tempfile.gettempdir()`` unless it is tmpfs, then /var/tmp."""
    tmp = Path(tempfile.gettempdir())
    if fstype_of(tmp) in ("tmpfs", "ramfs") and os.path.isdir("/var/tmp"):
        return Path("/var/tmp")
    return tmp
