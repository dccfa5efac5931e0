"""Block-I/O cgroups: where read throttling is available, the throttle files to write, and a throttled cgroup's
life (make, join, count, remove).

blk-throttle works the same in cgroup v1 (``blkio.throttle.*`` files) and v2 (``io.max``):

- It counts bios *after* the block layer splits them at the device's ``max_sectors_kb`` (1280 KiB on a loop
  device). Each piece counts against the IOPS cap, so sequential reads top out at
  ``min(read_bps, read_iops x 1.25 MiB)``: below the bps cap for the ``hdd`` profile, at it for ``sata-ssd``.
  ``read_ahead_kb`` and the loop device's direct I/O cannot raise that ceiling.
- A request costs ``max(1/iops, bytes/bps)``, not a real disk's ``seek + bytes/bandwidth``.
- ``O_DIRECT`` readers send smaller bios than the page cache's readahead does, so each byte costs more of
  the IOPS cap and they see a lower sequential rate.
- With cgroup v1, buffered *writes* are not throttled (writeback runs outside the cgroup); profiles cap
  reads only by default.

Only the members of the cgroup are throttled. Making and removing one is a few small file writes (root);
removal waits up to 5 s for exiting members to leave.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

from ...errors import RecpackError
from ..mountinfo import parse_mounts
from .profiles import Profile

__all__ = [
    "METHOD_V1",
    "METHOD_V2",
    "cgroup_mounts",
    "find_cgroup",
    "throttle_settings",
    "wrapper_argv",
    "parse_io_stats",
    "io_stats",
    "own_cgroup",
    "make_cgroup",
    "join_cgroup",
    "remove_cgroup",
]

METHOD_V1 = "cgroup-v1-blkio"
METHOD_V2 = "cgroup-v2-io.max"
_WRAPPER = 'echo $$ > "$0" && exec "$@"'


def cgroup_mounts(mounts_text: str) -> list[tuple[str, Path, list[str]]]:
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
    mounts = cgroup_mounts(mounts_text)
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


def parse_io_stats(method: str, text: str, majmin: str) -> tuple[int, int]:
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


def io_stats(cgroup: Path, method: str, majmin: str) -> tuple[int, int]:
    """(read requests, read bytes) the members of ``cgroup`` have sent to ``majmin`` so far, counted after
    splitting, as the throttle counts them."""
    if method == METHOD_V1:
        text = ((cgroup / "blkio.throttle.io_serviced").read_text()
                + (cgroup / "blkio.throttle.io_service_bytes").read_text())
    else:
        text = (cgroup / "io.stat").read_text()
    return parse_io_stats(method, text, majmin)


def own_cgroup(method: str, root: Path) -> Path:
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


def make_cgroup(root: Path, method: str, profile: Profile, majmin: str) -> Path:
    """A new cgroup under ``root`` whose members' I/O to ``majmin`` is capped at ``profile``'s limits. On
    cgroup v2 the io controller is enabled in ``root`` first. RecpackError (and nothing left behind) when
    the kernel refuses."""
    if method == METHOD_V2:
        control = root / "cgroup.subtree_control"
        if "io" not in control.read_text().split():
            try:
                control.write_text("+io")
            except OSError as e:
                raise RecpackError(f"cannot enable the io controller in {control} ({e}); on cgroup v2 "
                                   "the emulated device needs a cgroup it may enable io in") from e
    path = root / f"recpack-emulate-{os.getpid()}-{os.urandom(4).hex()}"
    path.mkdir()
    for name, value in throttle_settings(profile, majmin, method):
        try:
            (path / name).write_text(value)
        except OSError as e:
            path.rmdir()
            raise RecpackError(f"cannot write {value!r} to {path / name}: {e}") from e
    return path


def join_cgroup(cgroup: Path, pid: int) -> None:
    """Move process ``pid`` (all its threads) into ``cgroup``."""
    (cgroup / "cgroup.procs").write_text(str(pid))


def remove_cgroup(path: Path, timeout: float = 5.0) -> None:
    """Move the processes still in ``path`` to its parent, then remove it (retrying for ``timeout`` seconds
    while exiting members linger). Gone already: nothing to do."""
    if not path.exists():
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            pids = (path / "cgroup.procs").read_text().split()
        except FileNotFoundError:
            pids = []
        for pid in pids:
            try:
                join_cgroup(path.parent, int(pid))
            except ProcessLookupError:
                pass  # exited meanwhile
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # exiting tasks leave the cgroup a moment later
