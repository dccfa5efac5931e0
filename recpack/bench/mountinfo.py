"""The kernel's mount tables: which mount holds a path, and what is mounted where.

- :func:`parse_mountinfo` reads ``/proc/PID/mountinfo`` (proc(5)): mount point, ``MAJ:MIN`` of the device,
  file system type and source of every mount; :func:`find_mount` picks the one holding a path.
- :func:`parse_mounts` reads the older ``/proc/self/mounts`` (fstab(5) format), which lists a mount's
  per-mount and super-block options together (cgroup v1 controllers are among the latter).
- :func:`unescape`: both files write space, tab, newline and backslash in paths as octal (``\\040``).

Pure text parsing; reading the files is one small ``read`` each. Works on Linux; elsewhere the files are
missing and the readers return nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Mount", "unescape", "parse_mountinfo", "read_mountinfo", "find_mount", "fstype_of", "parse_mounts"]

_OCTAL = re.compile(r"\\([0-7]{3})")


def unescape(field: str) -> str:
    r"""A path field of mountinfo or mounts with its octal escapes (``\040`` for a space) decoded."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo (see proc(5))."""

    mount_point: str
    majmin: str
    root: str
    fstype: str
    source: str
    options: str


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse /proc/PID/mountinfo text; malformed lines are skipped.

    Line format: ``id parent MAJ:MIN root mount_point options [optional fields...] - fstype source super_opts``.
    """
    mounts = []
    for line in text.splitlines():
        parts = line.split(" ")
        try:
            sep = parts.index("-", 6)
            mounts.append(Mount(mount_point=unescape(parts[4]), majmin=parts[2], root=unescape(parts[3]),
                                fstype=parts[sep + 1], source=unescape(parts[sep + 2]),
                                options=parts[5]))
        except (ValueError, IndexError):
            continue
    return mounts


def read_mountinfo(proc_root: str = "/") -> list[Mount]:
    """This process's mounts from ``<proc_root>/proc/self/mountinfo`` (tests pass a fake tree); [] if unreadable."""
    try:
        text = (Path(proc_root) / "proc/self/mountinfo").read_text(errors="replace")
    except OSError:
        return []
    return parse_mountinfo(text)


def find_mount(path: str, mounts: Sequence[Mount]) -> Mount | None:
    """The mount holding the absolute, resolved ``path``: the longest mount point that is a path prefix of
    it (the last one listed wins a tie, since later mounts hide earlier ones)."""
    best: Mount | None = None
    for m in mounts:
        point = m.mount_point.rstrip("/") or "/"
        if path == point or path.startswith(point.rstrip("/") + "/") or point == "/":
            if best is None or len(point) >= len(best.mount_point.rstrip("/") or "/"):
                best = m
    return best


def parse_mounts(text: str) -> list[tuple[str, str, str, list[str]]]:
    """``(source, mount point, fstype, options)`` of each line of /proc/self/mounts text; short lines are
    skipped. ``options`` holds the per-mount and the super-block options together."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            out.append((unescape(parts[0]), unescape(parts[1]), parts[2], parts[3].split(",")))
    return out


def fstype_of(path: str | os.PathLike[str], proc_root: str = "/") -> str | None:
    """The file system type holding ``path`` (resolved first), or None where no mount table is readable."""
    mount = find_mount(os.path.realpath(path), read_mountinfo(proc_root))
    return mount.fstype if mount is not None else None
