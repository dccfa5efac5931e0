"""Emulate a slow storage device (a hard disk, a SATA SSD) on any Linux box, for benchmarks.

A sparse file on the real disk is formatted (ext4), attached to a loop device with direct I/O (so the
loop device's reads go to the disk, not to the backing file's page cache) and mounted; a block-I/O
cgroup caps reads from that loop device at the profile's IOPS and bytes/s. Only processes inside the
cgroup are throttled, so data is copied in at full speed and the benchmark is then run inside::

    with emulated_device("hdd", size=2 << 30) as dev:
        data = dev.copy_in("/data/imagenet-packed")           # unthrottled; fsync; drop caches
        dev.run([sys.executable, "bench.py", str(data)])       # throttled, cold page cache
        with dev.throttled():                                  # or: this process, for a while
            my_benchmark(data)

How the throttle behaves (blk-throttle, the same in cgroup v1 and v2):

- It counts bios *after* the block layer splits them at the loop device's ``max_sectors_kb``, which the
  loop driver fixes at 1280 KiB. Each piece counts against the IOPS cap, so sequential reads top out at
  ``min(read_bps, read_iops x 1.25 MiB)``: 144 MB/s for the ``hdd`` profile (a real one does 170), the full
  550 MB/s for ``sata-ssd``. ``read_ahead_kb`` and ``--direct-io`` cannot raise that ceiling.
- A request costs ``max(1/iops, bytes/bps)``, not a real disk's ``seek + bytes/bandwidth``: random
  128 KiB reads on ``hdd`` run at 110/s where a real disk manages ~100/s.
- ``O_DIRECT`` readers send smaller bios (about 0.5 MiB) than the page cache's readahead does, so they
  see a lower sequential rate (~60 MB/s on ``hdd``).
- With cgroup v1, buffered *writes* are not throttled (writeback runs outside the cgroup); profiles
  cap reads only by default.

Everything needs root. ``check_environment()`` says whether this box can do it and, if not, why; tests
and benchmarks skip with that reason. Teardown (kill what :meth:`EmulatedDevice.popen` started, move
leftover processes out, remove the cgroup, unmount, detach the loop device, delete the backing file)
always runs: on return, on exceptions, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bench.mountinfo import fstype_of, parse_mounts
from .interrupts import signals_as_interrupt
from .errors import RecpackError

__all__ = [
    "Profile",
    "PROFILES",
    "METHOD_V1",
    "METHOD_V2",
    "EmulatedDevice",
    "emulated_device",
    "get_profile",
    "require_root",
    "check_environment",
    "find_cgroup",
    "device_number",
    "throttle_settings",
    "wrapper_argv",
    "measure",
    "format_measurement",
    "MiB",
]

MiB = 1 << 20
METHOD_V1 = "cgroup-v1-blkio"
METHOD_V2 = "cgroup-v2-io.max"
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")
_WRAPPER = 'echo $$ > "$0" && exec "$@"'
# mkfs options per file system: no lazy initialisation, so no background writes skew a benchmark.
_MKFS: dict[str, list[str]] = {
    "ext4": ["-F", "-q", "-m", "0", "-E", "lazy_itable_init=0,lazy_journal_init=0"],
    "ext3": ["-F", "-q", "-m", "0", "-E", "lazy_itable_init=0,lazy_journal_init=0"],
    "ext2": ["-F", "-q", "-m", "0", "-E", "lazy_itable_init=0"],
    "xfs": ["-f", "-q"],
}


@dataclass(frozen=True)
class Profile:
    """Limits of an emulated device. ``None`` write limits leave writes unthrottled.

    read_iops (int): read requests per second (after the block layer splits requests at 1280 KiB).
    read_bps (int): read bytes per second.
    write_iops, write_bps (int | None): the same for writes (cgroup v1: direct writes only).
    rotational (bool): value for the loop device's ``queue/rotational`` flag.
    """

    name: str
    read_iops: int
    read_bps: int
    write_iops: int | None = None
    write_bps: int | None = None
    rotational: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        for field in ("read_iops", "read_bps", "write_iops", "write_bps"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"Profile {self.name!r}: {field} must be a positive int, not {value!r}")

    def summary(self) -> str:
        """'110 read IOPS, 170 MB/s' and the write limits where set."""
        text = f"{self.read_iops:,} read IOPS, {self.read_bps / 1e6:g} MB/s"
        if self.write_iops is not None or self.write_bps is not None:
            text += f"; writes {self.write_iops or 'unlimited'} IOPS, "
            text += f"{self.write_bps / 1e6:g} MB/s" if self.write_bps else "unlimited MB/s"
        return text


PROFILES: dict[str, Profile] = {
    "hdd": Profile("hdd", 110, 170_000_000, rotational=True,
                   description="7,200 rpm desktop hard disk (WD Black): 110 random IOPS, 170 MB/s"),
    "sata-ssd": Profile("sata-ssd", 10_000, 550_000_000, rotational=False,
                        description="SATA SSD (Samsung 850 PRO): 10,000 IOPS, 550 MB/s"),
}


def get_profile(profile: str | Profile) -> Profile:
    """A :class:`Profile` by name (``PROFILES``), or the given one unchanged."""
    if isinstance(profile, Profile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown device profile {profile!r}; use one of {', '.join(PROFILES)} "
                         "or pass a recpack.emulate.Profile") from None


# --------------------------------------------------------------------------------------------------
# Environment checks


def _which(name: str) -> str | None:
    """``shutil.which`` that also looks in the sbin folders (absent from many non-login PATHs)."""
    path = os.environ.get("PATH", os.defpath) + os.pathsep + os.pathsep.join(_SBIN)
    return shutil.which(name, path=path)


def _cgroup_mounts(mounts_text: str) -> list[tuple[str, Path, list[str]]]:
    """(fstype, mount point, options) of every cgroup / cgroup2 mount in /proc/self/mounts text."""
    return [(fstype, Path(point), opts) for _, point, fstype, opts in parse_mounts(mounts_text)
            if fstype in ("cgroup", "cgroup2")]


def find_cgroup(mounts_text: str | None = None) -> tuple[str, Path] | str:
    """Where read throttling is available: ``(method, hierarchy root)``, or a reason string if nowhere.

    cgroup v1 ``blkio`` (with blk-throttle files) is preferred where mounted, since a controller bound to
    v1 is unavailable in v2; otherwise a cgroup2 mount whose ``cgroup.controllers`` lists ``io``.
    """
    if mounts_text is None:
        try:
            mounts_text = Path("/proc/self/mounts").read_text()
        except OSError as e:
            return f"cannot read /proc/self/mounts ({e})"
    mounts = _cgroup_mounts(mounts_text)
    reasons = []
    for fstype, point, opts in mounts:
        if fstype == "cgroup" and "blkio" in opts:
            if (point / "blkio.throttle.read_iops_device").exists():
                return METHOD_V1, point
            reasons.append(f"cgroup v1 blkio at {point} has no blkio.throttle files "
                           "(kernel built without CONFIG_BLK_DEV_THROTTLING)")
    for fstype, point, _ in mounts:
        if fstype == "cgroup2":
            try:
                controllers = (point / "cgroup.controllers").read_text().split()
            except OSError:
                controllers = []
            if "io" in controllers:
                return METHOD_V2, point
            reasons.append(f"cgroup v2 at {point} has no io controller")
    if not mounts:
        return "no cgroup file system is mounted (/sys/fs/cgroup)"
    return "; ".join(reasons) or "/sys/fs/cgroup has neither a v1 blkio nor a v2 io controller"


def check_environment(fs: str = "ext4") -> tuple[bool, str]:
    """Whether :func:`emulated_device` can work here: ``(True, how)`` or ``(False, why not)``. Never raises."""
    if not sys.platform.startswith("linux"):
        return False, f"emulated devices need Linux (loop devices, cgroups); this is {sys.platform}"
    if os.geteuid() != 0:
        return False, ("emulated devices need root (loop devices, mounts, cgroups); "
                       "run as root or skip this benchmark")
    if fs not in _MKFS:
        return False, f"file system {fs!r} is not supported; use one of {', '.join(_MKFS)}"
    missing = [tool for tool in ("losetup", "mount", "umount", f"mkfs.{fs}") if _which(tool) is None]
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


# --------------------------------------------------------------------------------------------------
# Small pure helpers (unit-tested without root)


def device_number(path: str | os.PathLike[str]) -> str:
    """``"MAJOR:MINOR"`` of a block device node, as cgroup files want it. ``ValueError`` if not one."""
    st = os.stat(path)
    if not stat.S_ISBLK(st.st_mode):
        raise ValueError(f"{os.fspath(path)} is not a block device")
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


def throttle_settings(profile: Profile, majmin: str, method: str) -> list[tuple[str, str]]:
    """The (cgroup file, value) writes that cap ``majmin`` at the profile's limits, in order."""
    if not re.fullmatch(r"\d+:\d+", majmin):
        raise ValueError(f"{majmin!r} is not a MAJOR:MINOR device number")
    limits = {"riops": profile.read_iops, "rbps": profile.read_bps,
              "wiops": profile.write_iops, "wbps": profile.write_bps}
    if method == METHOD_V1:
        files = {"riops": "blkio.throttle.read_iops_device", "rbps": "blkio.throttle.read_bps_device",
                 "wiops": "blkio.throttle.write_iops_device", "wbps": "blkio.throttle.write_bps_device"}
        return [(files[key], f"{majmin} {value}") for key, value in limits.items() if value is not None]
    if method == METHOD_V2:
        keys = " ".join(f"{key}={value}" for key, value in limits.items() if value is not None)
        return [("io.max", f"{majmin} {keys}")]
    raise ValueError(f"unknown throttle method {method!r}; use {METHOD_V1!r} or {METHOD_V2!r}")


def wrapper_argv(procs_file: str | os.PathLike[str], argv: Sequence[str]) -> list[str]:
    """``argv`` prefixed by a tiny ``sh`` that joins the cgroup (writes its pid to ``procs_file``), then execs.

    The arguments are passed through ``"$@"``, never re-parsed by the shell.
    """
    if not argv:
        raise ValueError("empty command; pass e.g. ['python', 'bench.py']")
    return ["/bin/sh", "-c", _WRAPPER, os.fspath(procs_file), *map(os.fspath, argv)]


def _read_stats(method: str, text: str, majmin: str) -> tuple[int, int]:
    """(read requests, read bytes) for ``majmin`` from blkio.throttle.io_serviced+io_service_bytes
    text (v1, concatenated, serviced first) or io.stat text (v2)."""
    if method == METHOD_V2:
        for line in text.splitlines():
            parts = line.split()
            if parts and parts[0] == majmin:
                kv = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
                return int(kv.get("rios", 0)), int(kv.get("rbytes", 0))
        return 0, 0
    values = [int(p[2]) for p in (line.split() for line in text.splitlines())
              if len(p) == 3 and p[0] == majmin and p[1] == "Read"]
    return (values[0], values[1]) if len(values) >= 2 else (0, 0)


def _default_workdir() -> Path:
    """A temp folder on a real disk: ``tempfile.gettempdir()`` unless it is tmpfs, then /var/tmp."""
    tmp = Path(tempfile.gettempdir())
    if fstype_of(tmp) in ("tmpfs", "ramfs") and os.path.isdir("/var/tmp"):
        return Path("/var/tmp")
    return tmp


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _run_tool(argv: list[str]) -> str:
    """Run a system tool; RecpackError with its stderr on failure."""
    tool = _which(argv[0]) or argv[0]
    try:
        done = subprocess.run([tool, *argv[1:]], capture_output=True, text=True, check=False)
    except OSError as e:
        raise RecpackError(f"{' '.join(argv)}: {e}") from e
    if done.returncode != 0:
        raise RecpackError(f"{' '.join(argv)} failed (exit {done.returncode}): {done.stderr.strip()}")
    return done.stdout


# --------------------------------------------------------------------------------------------------
# The device


_OPEN: set[EmulatedDevice] = set()
_OPEN_LOCK = threading.Lock()


class EmulatedDevice:
    """A throttled, loop-mounted file system. Made by :func:`emulated_device`; do not build it directly.

    mount (Path): where the file system is mounted; put the data here (or use :meth:`copy_in`).
    loop (str): the loop device, ``/dev/loopN``.
    majmin (str): its ``MAJOR:MINOR``.
    profile (Profile): the limits.
    cgroup (str): the cgroup folder whose members are throttled.
    method (str): ``"cgroup-v1-blkio"`` or ``"cgroup-v2-io.max"``.
    backing (Path): the sparse backing file on the real disk.
    direct_io (bool): whether the loop device reads its backing file with O_DIRECT (else the backing file's
        page cache could serve reads; :meth:`drop_caches` drops it too).
    """

    def __init__(self, profile: Profile, size: int, workdir: Path, fs: str, method: str, cgroup_root: Path,
                 read_ahead_kb: int | None) -> None:
        self.profile = profile
        self.size = size
        self.fs = fs
        self.method = method
        self.read_ahead_kb = read_ahead_kb
        self._cgroup_root = cgroup_root
        self._parent_workdir = workdir
        self.workdir: Path | None = None
        self.backing = Path()
        self.mount = Path()
        self.loop = ""
        self.majmin = ""
        self.cgroup = ""
        self.direct_io = False
        self._mounted = False
        self._children: list[subprocess.Popen[Any]] = []
        self._closed = False

    # ---- setup / teardown -----------------------------------------------------------------------

    def _setup(self) -> None:
        with _OPEN_LOCK:
            _OPEN.add(self)
        free = shutil.disk_usage(self._parent_workdir).free
        if free < self.size:
            raise RecpackError(f"{self._parent_workdir} has {free / 1e9:.1f} GB free; an emulated device of "
                               f"{self.size / 1e9:.1f} GB needs that much (pass a smaller size or another workdir)")
        self.workdir = Path(tempfile.mkdtemp(prefix="recpack-emulate-", dir=self._parent_workdir))
        self.backing = self.workdir / "backing.img"
        self.mount = self.workdir / "mnt"
        self.mount.mkdir()
        with open(self.backing, "wb") as f:
            f.truncate(self.size)  # sparse: costs disk space only as data is written
        _run_tool([f"mkfs.{self.fs}", *_MKFS[self.fs], str(self.backing)])
        try:
            self.loop = _run_tool(["losetup", "--find", "--show", "--direct-io=on", str(self.backing)]).strip()
        except RecpackError:
            self.loop = _run_tool(["losetup", "--find", "--show", str(self.backing)]).strip()
        self.majmin = device_number(self.loop)
        sysfs = Path("/sys/block") / Path(self.loop).name
        try:
            self.direct_io = (sysfs / "loop" / "dio").read_text().strip() == "1"
        except OSError:
            self.direct_io = False
        self._tune(sysfs / "queue")
        _run_tool(["mount", "-o", "noatime", self.loop, str(self.mount)])
        self._mounted = True
        self._make_cgroup()

    def _tune(self, queue: Path) -> None:
        """Best-effort queue settings: the rotational flag, and read_ahead_kb if asked for."""
        settings = {"rotational": "1" if self.profile.rotational else "0"}
        if self.read_ahead_kb is not None:
            settings["read_ahead_kb"] = str(self.read_ahead_kb)
        for name, value in settings.items():
            try:
                _write(queue / name, value)
            except OSError:
                pass  # a kernel that does not allow it: the emulation still throttles

    def _make_cgroup(self) -> None:
        root = self._cgroup_root
        if self.method == METHOD_V2:
            control = root / "cgroup.subtree_control"
            if "io" not in control.read_text().split():
                try:
                    _write(control, "+io")
                except OSError as e:
                    raise RecpackError(f"cannot enable the io controller in {control} ({e}); on cgroup v2 "
                                       "the emulated device needs a cgroup it may enable io in") from e
        path = root / f"recpack-emulate-{os.getpid()}-{os.urandom(4).hex()}"
        path.mkdir()
        self.cgroup = str(path)
        for name, value in throttle_settings(self.profile, self.majmin, self.method):
            try:
                _write(path / name, value)
            except OSError as e:
                raise RecpackError(f"cannot write {value!r} to {path / name}: {e}") from e

    def close(self, *, raise_errors: bool = True) -> None:
        """Tear everything down, in reverse order; safe to call twice. Signals wait until it is done.

        Steps: terminate processes started by :meth:`popen`; move other processes left in the cgroup to its
        parent and remove it; unmount (lazily if busy); detach the loop device; delete the backing file
        and the work folder. Steps go on after a failure; failures are raised together as one
        :class:`RecpackError` (or only warned about, with ``raise_errors=False``).
        """
        if self._closed:
            return
        blocked = threading.current_thread() is threading.main_thread()
        if blocked:  # a second Ctrl-C must not leave a half-torn-down device; it is delivered afterwards
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        errors: list[str] = []
        try:
            for step in (self._stop_children, self._remove_cgroup, self._unmount, self._detach, self._delete):
                try:
                    step()
                except Exception as e:  # every step must get its chance
                    errors.append(f"{step.__name__.strip('_')}: {e}")
            self._closed = True
            with _OPEN_LOCK:
                _OPEN.discard(self)
        finally:
            if blocked:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        if errors:
            message = "emulated device teardown incomplete: " + "; ".join(errors)
            if raise_errors:
                raise RecpackError(message)
            warnings.warn(message, RuntimeWarning, stacklevel=2)

    def _stop_children(self) -> None:
        for proc in self._children:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        self._children.clear()

    def _remove_cgroup(self) -> None:
        if not self.cgroup:
            return
        path = Path(self.cgroup)
        if path.exists():
            parent = path.parent / "cgroup.procs"
            deadline = time.monotonic() + 5.0
            while True:
                try:
                    pids = (path / "cgroup.procs").read_text().split()
                except FileNotFoundError:
                    pids = []
                for pid in pids:
                    try:
                        _write(parent, pid)
                    except ProcessLookupError:
                        pass  # exited meanwhile
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)  # exiting tasks leave the cgroup a moment later
        self.cgroup = ""

    def _unmount(self) -> None:
        if not self._mounted:
            return
        for attempt in range(10):
            done = subprocess.run([_which("umount") or "umount", str(self.mount)], capture_output=True, text=True)
            if done.returncode == 0 or not os.path.ismount(self.mount):
                self._mounted = False
                return
            time.sleep(0.1 * (attempt + 1))
        # Still busy (a process outside our control has files open there): detach it now; the kernel
        # frees the file system, and with it the loop device (autoclear), when the last user goes.
        _run_tool(["umount", "-l", str(self.mount)])
        self._mounted = False
        raise RecpackError(f"{self.mount} was busy; unmounted lazily (freed when its last user exits)")

    def _detach(self) -> None:
        if not self.loop:
            return
        loop, self.loop = self.loop, ""
        try:
            _run_tool(["losetup", "-d", loop])
        except RecpackError:
            # Gone already, or still in use (lazy unmount): losetup -d set autoclear or there is nothing to do.
            name = Path(loop).name
            backing = Path("/sys/block") / name / "loop" / "backing_file"
            if backing.exists():
                raise

    def _delete(self) -> None:
        if self.workdir is None:
            return
        self.backing.unlink(missing_ok=True)  # an attached loop device keeps its (unlinked) file open
        if self.mount != Path() and not os.path.ismount(self.mount):
            try:
                self.mount.rmdir()
            except FileNotFoundError:
                pass
        if not self._mounted:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = None

    # ---- use --------------------------------------------------------------------------------------

    @property
    def procs_file(self) -> str:
        """The cgroup's ``cgroup.procs``: write a pid there to throttle that process."""
        return os.path.join(self.cgroup, "cgroup.procs")

    def _check_open(self) -> None:
        if self._closed or not self.cgroup:
            raise RecpackError("the emulated device is closed; use it inside its `with emulated_device(...)` block")

    def drop_caches(self) -> None:
        """``sync`` then ``echo 3 > /proc/sys/vm/drop_caches``: the next reads of everything are cold.

        This drops the page cache of the whole machine, not only this device's.
        """
        os.sync()
        _write(Path("/proc/sys/vm/drop_caches"), "3\n")

    def copy_in(self, src: str | os.PathLike[str], name: str | None = None) -> Path:
        """Copy a file or a folder tree onto the device (unthrottled), sync, drop caches; return its path.

        name (str | None): where under :attr:`mount` (default: the source's own name); must not exist yet.
        """
        self._check_open()
        src = Path(src)
        dest = self.mount / (name if name is not None else src.name)
        if not dest.resolve().is_relative_to(self.mount.resolve()) or dest.resolve() == self.mount.resolve():
            raise ValueError(f"copy_in destination {dest} must be a new path inside {self.mount}; "
                             "pass a relative name=")
        if dest.exists():
            raise ValueError(f"{dest} exists already; pass another name=")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest, symlinks=True)
        else:
            shutil.copyfile(src, dest)
        self.drop_caches()  # syncs first
        return dest

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped so that it runs inside the throttled cgroup (see :func:`wrapper_argv`)."""
        self._check_open()
        return wrapper_argv(self.procs_file, argv)

    def run(self, argv: Sequence[str], *, warm: bool = False, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """``subprocess.run(argv, **kwargs)`` inside the throttled cgroup, after :meth:`drop_caches` unless
        ``warm``. The child's children are throttled too."""
        cmd = self.command(argv)
        if not warm:
            self.drop_caches()
        return subprocess.run(cmd, **kwargs)

    def popen(self, argv: Sequence[str], *, warm: bool = False, **kwargs: Any) -> subprocess.Popen[Any]:
        """``subprocess.Popen`` inside the throttled cgroup (cold cache unless ``warm``). Still running at
        teardown, it is terminated."""
        cmd = self.command(argv)
        if not warm:
            self.drop_caches()
        proc: subprocess.Popen[Any] = subprocess.Popen(cmd, **kwargs)
        self._children.append(proc)
        return proc

    @contextmanager
    def throttled(self, *, warm: bool = False) -> Iterator[None]:
        """Throttle *this* process (all its threads, and children it starts) for the ``with`` block.

        Drops caches first unless ``warm``. On cgroup v2 the process also leaves its own cgroup (and its
        memory/CPU limits) for the block; on v1 only its blkio membership changes.
        """
        self._check_open()
        home = _own_cgroup(self.method, self._cgroup_root)
        if not warm:
            self.drop_caches()
        _write(Path(self.procs_file), str(os.getpid()))
        try:
            yield
        finally:
            try:
                _write(home / "cgroup.procs", str(os.getpid()))
            except OSError:
                _write(self._cgroup_root / "cgroup.procs", str(os.getpid()))

    def io_stats(self) -> tuple[int, int]:
        """(read requests, read bytes) the cgroup's members have sent to the loop device so far; requests
        are counted after splitting, as the throttle counts them."""
        self._check_open()
        path = Path(self.cgroup)
        if self.method == METHOD_V1:
            text = ((path / "blkio.throttle.io_serviced").read_text()
                    + (path / "blkio.throttle.io_service_bytes").read_text())
        else:
            text = (path / "io.stat").read_text()
        return _read_stats(self.method, text, self.majmin)

    def describe(self) -> str:
        """One line: profile, mount, loop device, cgroup."""
        return (f"emulated {self.profile.name} ({self.profile.summary()}) mounted at {self.mount} "
                f"on {self.loop} ({self.fs}, direct-io {'on' if self.direct_io else 'off'}); "
                f"throttled cgroup {self.cgroup} ({self.method})")


def _own_cgroup(method: str, root: Path) -> Path:
    """This process's current cgroup folder in the hierarchy at ``root`` (the root if unknown)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return root
    for line in lines:
        hid, controllers, rel = line.split(":", 2)
        if (method == METHOD_V1 and "blkio" in controllers.split(",")) or (method == METHOD_V2 and hid == "0"):
            candidate = root / rel.lstrip("/")
            return candidate if (candidate / "cgroup.procs").exists() else root
    return root


@atexit.register
def _close_leftovers() -> None:
    """Last resort for devices whose ``with`` block never finished (e.g. an abandoned generator)."""
    with _OPEN_LOCK:
        devices = list(_OPEN)
    for dev in devices:
        dev.close(raise_errors=False)


@contextmanager
def emulated_device(profile: str | Profile, size: int, workdir: str | os.PathLike[str] | None = None,
                    fs: str = "ext4", *, read_ahead_kb: int | None = None) -> Iterator[EmulatedDevice]:
    """An emulated slow device for the ``with`` block; always torn down afterwards. Needs root.

    profile (str | Profile): ``"hdd"``, ``"sata-ssd"`` (see ``PROFILES``) or a :class:`Profile`.
    size (int): bytes of the file system; the backing file is sparse, but ``workdir`` must have this much
        free so that copies cannot fail half way.
    workdir: folder on the real disk for the backing file and the mount point (default: the temp folder,
        or /var/tmp where that is tmpfs). A private subfolder is made and removed.
    fs (str): ``ext4`` (default), ``ext3``, ``ext2`` or ``xfs``; made without lazy initialisation.
    read_ahead_kb (int | None): the loop device's readahead; default the kernel's (2560 KiB for loop).
    """
    prof = get_profile(profile)
    if not isinstance(size, int) or size < 64 * MiB:
        raise ValueError(f"size must be an int of at least 64 MiB (bytes); got {size!r}")
    if fs not in _MKFS:
        raise ValueError(f"file system {fs!r} is not supported; use one of {', '.join(_MKFS)}")
    require_root(fs)
    found = find_cgroup()
    if isinstance(found, str):
        raise RecpackError(found)
    method, root = found
    parent = Path(workdir) if workdir is not None else _default_workdir()
    if not parent.is_dir():
        raise ValueError(f"workdir {parent} is not a folder")
    dev = EmulatedDevice(prof, size, parent, fs, method, root, read_ahead_kb)
    with signals_as_interrupt():
        try:
            dev._setup()
            yield dev
        except BaseException:
            dev.close(raise_errors=False)  # do not hide the exception that got us here
            raise
        else:
            dev.close()


# --------------------------------------------------------------------------------------------------
# Measuring what the emulation gives


_PROBE = r"""
import json, os, random, sys, time
path, mode, block, seconds, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
fd = os.open(path, os.O_RDONLY)
done = reads = passes = 0
rng = random.Random(seed)
try:
    size = os.fstat(fd).st_size
    buf = memoryview(bytearray(block))
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL if mode == "seq" else os.POSIX_FADV_RANDOM)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        if passes:  # the file was read through: forget its pages so that the next pass is cold too
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        passes += 1
        if mode == "seq":
            offsets = range(0, size, block)
        else:
            offsets = [b * block for b in range(size // block)]
            rng.shuffle(offsets)
        for offset in offsets:
            done += os.preadv(fd, [buf], offset)
            reads += 1
            if time.perf_counter() - t0 >= seconds:
                break
    elapsed = time.perf_counter() - t0
finally:
    os.close(fd)
print(json.dumps({"bytes": done, "reads": reads, "seconds": elapsed, "passes": passes}))
"""


def _probe(dev: EmulatedDevice, path: Path, mode: str, block: int, seconds: float, seed: int) -> dict[str, Any]:
    before = dev.io_stats()
    done = dev.run([sys.executable, "-c", _PROBE, str(path), mode, str(block), str(seconds), str(seed)],
                   capture_output=True, text=True)
    if done.returncode != 0:
        raise RecpackError(f"measurement ({mode}, {block} B) failed: {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout)
    after = dev.io_stats()
    result["device_reads"] = after[0] - before[0]
    result["device_bytes"] = after[1] - before[1]
    return result


def measure(dev: EmulatedDevice, size: int = 256 * MiB, *, path: str | os.PathLike[str] | None = None,
            seconds: float = 2.0, seed: int = 0) -> dict[str, Any]:
    """Quick sanity check of an emulated device, every test inside its cgroup with a cold page cache.

    Reads ``path`` (a file on the device), or else writes a ``size``-byte file of random bytes (capped at
    half the free space) and deletes it afterwards. Each test runs for ``seconds``, going over the file
    again (its pages dropped with ``POSIX_FADV_DONTNEED``) when it is read through. Takes ``3 x seconds``
    plus writing the file. Returns:

    - ``seq_mb_s``: 8 MiB buffered reads, normal readahead;
    - ``rand_4k_iops``, ``rand_128k_iops``: buffered ``pread`` at shuffled aligned offsets, readahead off
      (``POSIX_FADV_RANDOM``);
    - ``seq_avg_request_kib``: mean request size the device saw during the sequential test, after splitting;
    - the setup (profile, limits, method, direct_io, file bytes) and ``raw``, each test's counts.
    """
    dev._check_open()
    made = path is None
    if path is None:
        free = shutil.disk_usage(dev.mount).free
        size = max(8 * MiB, min(size, free // 2) // MiB * MiB)
        target = dev.mount / f".recpack-measure-{os.urandom(4).hex()}"
        chunk = os.urandom(8 * MiB)
        with open(target, "wb") as f:
            for offset in range(0, size, len(chunk)):
                f.write(chunk[: size - offset])
            f.flush()
            os.fsync(f.fileno())
    else:
        target = Path(path)
    try:
        seq = _probe(dev, target, "seq", 8 * MiB, seconds, seed)
        r4k = _probe(dev, target, "rand", 4096, seconds, seed)
        r128k = _probe(dev, target, "rand", 128 << 10, seconds, seed)
    finally:
        if made:
            target.unlink(missing_ok=True)
    return {
        "profile": dev.profile.name,
        "read_iops_limit": dev.profile.read_iops,
        "read_mb_s_limit": dev.profile.read_bps / 1e6,
        "method": dev.method,
        "direct_io": dev.direct_io,
        "file_bytes": os.path.getsize(target) if not made else size,
        "seq_mb_s": seq["bytes"] / seq["seconds"] / 1e6,
        "seq_avg_request_kib": seq["device_bytes"] / max(1, seq["device_reads"]) / 1024,
        "rand_4k_iops": r4k["reads"] / r4k["seconds"],
        "rand_128k_iops": r128k["reads"] / r128k["seconds"],
        "rand_128k_mb_s": r128k["bytes"] / r128k["seconds"] / 1e6,
        "raw": {"seq": seq, "rand_4k": r4k, "rand_128k": r128k},
    }


def format_measurement(result: Mapping[str, Any]) -> str:
    """A one-line summary of :func:`measure`'s result."""
    return (f"{result['profile']}: sequential {result['seq_mb_s']:.0f} MB/s "
            f"(cap {result['read_mb_s_limit']:.0f}; {result['seq_avg_request_kib']:.0f} KiB/request), "
            f"random 4 KiB {result['rand_4k_iops']:,.0f} IOPS, random 128 KiB {result['rand_128k_iops']:,.0f} IOPS "
            f"(cap {result['read_iops_limit']:,})")
