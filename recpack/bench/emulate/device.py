"""An emulated slow storage device: a throttled, loop-mounted file system and its whole life.

:func:`emulated_device` makes one: a sparse file on the real disk (``workdir``) is formatted (ext4 by
default, no lazy initialisation), attached to a loop device with direct I/O where the kernel allows it (so
its reads go to the disk, not to the backing file's page cache), mounted ``noatime``, and given a cgroup that
caps reads from it (:mod:`recpack.bench.emulate.cgroup`). Setup costs an ``mkfs`` that writes all its
metadata up front (no lazy initialisation, grows with ``size``) and a few small writes; the backing file takes
disk space only as data is written.

Teardown (kill what :meth:`EmulatedDevice.popen` started, move leftover processes out, remove the cgroup,
unmount, detach the loop device, delete the backing file) always runs: on return, on exceptions, on Ctrl-C
and on SIGTERM; an ``atexit`` hook catches devices whose ``with`` block never finished. Needs root.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ...errors import RecpackError
from ...interrupts import signals_as_interrupt
from ..cache import drop_all_caches
from .cgroup import find_cgroup, io_stats, join_cgroup, make_cgroup, own_cgroup, remove_cgroup, wrapper_argv
from .host import MKFS_OPTIONS, default_workdir, device_number, require_root, run_tool
from .profiles import MiB, Profile, get_profile

__all__ = ["EmulatedDevice", "emulated_device"]

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
        run_tool([f"mkfs.{self.fs}", *MKFS_OPTIONS[self.fs], str(self.backing)])
        try:
            self.loop = run_tool(["losetup", "--find", "--show", "--direct-io=on", str(self.backing)]).strip()
        except RecpackError:
            self.loop = run_tool(["losetup", "--find", "--show", str(self.backing)]).strip()
        self.majmin = device_number(self.loop)
        sysfs = Path("/sys/block") / Path(self.loop).name
        try:
            self.direct_io = (sysfs / "loop" / "dio").read_text().strip() == "1"
        except OSError:
            self.direct_io = False
        self._tune(sysfs / "queue")
        run_tool(["mount", "-o", "noatime", self.loop, str(self.mount)])
        self._mounted = True
        self._make_cgroup()

    def _tune(self, queue: Path) -> None:
        """Best-effort queue settings: the rotational flag, and read_ahead_kb if asked for."""
        settings = {"rotational": "1" if self.profile.rotational else "0"}
        if self.read_ahead_kb is not None:
            settings["read_ahead_kb"] = str(self.read_ahead_kb)
        for name, value in settings.items():
            try:
                (queue / name).write_text(value)
            except OSError:
                pass  # a kernel that does not allow it: the emulation still throttles

    def _make_cgroup(self) -> None:
        self.cgroup = str(make_cgroup(self._cgroup_root, self.method, self.profile, self.majmin))

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
        if self.cgroup:
            remove_cgroup(Path(self.cgroup))
        self.cgroup = ""

    def _unmount(self) -> None:
        if not self._mounted:
            return
        for attempt in range(10):
            try:
                run_tool(["umount", str(self.mount)])
            except RecpackError:
                if os.path.ismount(self.mount):  # busy: a process is still leaving
                    time.sleep(0.1 * (attempt + 1))
                    continue
            self._mounted = False
            return
        # Still busy (a process outside our control has files open there): detach it now; the kernel
        # frees the file system, and with it the loop device (autoclear), when the last user goes.
        run_tool(["umount", "-l", str(self.mount)])
        self._mounted = False
        raise RecpackError(f"{self.mount} was busy; unmounted lazily (freed when its last user exits)")

    def _detach(self) -> None:
        if not self.loop:
            return
        loop, self.loop = self.loop, ""
        try:
            run_tool(["losetup", "-d", loop])
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

    def check_open(self) -> None:
        """RecpackError unless the device is still set up (inside its ``with`` block)."""
        if self._closed or not self.cgroup:
            raise RecpackError("the emulated device is closed; use it inside its `with emulated_device(...)` block")

    def drop_caches(self) -> None:
        """``sync`` then ``echo 3 > /proc/sys/vm/drop_caches``: the next reads of everything are cold.

        This drops the page cache of the whole machine, not only this device's.
        """
        if not drop_all_caches():
            raise RecpackError("cannot drop the page cache (/proc/sys/vm/drop_caches is not writable)")

    def copy_in(self, src: str | os.PathLike[str], name: str | None = None) -> Path:
        """Copy a file or a folder tree onto the device (unthrottled), sync, drop caches; return its path.

        name (str | None): where under :attr:`mount` (default: the source's own name); must not exist yet.
        """
        self.check_open()
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
        self.check_open()
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
        self.check_open()
        home = own_cgroup(self.method, self._cgroup_root)
        if not warm:
            self.drop_caches()
        join_cgroup(Path(self.cgroup), os.getpid())
        try:
            yield
        finally:
            try:
                join_cgroup(home, os.getpid())
            except OSError:
                join_cgroup(self._cgroup_root, os.getpid())

    def io_stats(self) -> tuple[int, int]:
        """(read requests, read bytes) the cgroup's members have sent to the loop device so far; requests
        are counted after splitting, as the throttle counts them."""
        self.check_open()
        return io_stats(Path(self.cgroup), self.method, self.majmin)

    def describe(self) -> str:
        """One line: profile, mount, loop device, cgroup."""
        return (f"emulated {self.profile.name} ({self.profile.summary()}) mounted at {self.mount} "
                f"on {self.loop} ({self.fs}, direct-io {'on' if self.direct_io else 'off'}); "
                f"throttled cgroup {self.cgroup} ({self.method})")


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
    if fs not in MKFS_OPTIONS:
        raise ValueError(f"file system {fs!r} is not supported; use one of {', '.join(MKFS_OPTIONS)}")
    require_root(fs)
    found = find_cgroup()
    if isinstance(found, str):
        raise RecpackError(found)
    method, root = found
    parent = Path(workdir) if workdir is not None else default_workdir()
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


