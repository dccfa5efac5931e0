"""What storage holds a path: the mount, its block device, and the real disks under it (Linux; no root).

The mount holding the path comes from ``/proc/self/mountinfo`` (:mod:`recpack.bench.mountinfo`: longest
mount point prefix of its real path), its block device from ``/sys/dev/block/MAJ:MIN``, followed down through
partitions, device-mapper (``slaves/``), md RAID and loop devices (``loop/backing_file``, then the device of
that file, recursively) to the real disks: name, model, vendor, size and the kernel's rotational flag (often
wrong on virtual disks, so ``recpack bench device`` takes the class from measured numbers instead).
:func:`device_counters` reads the block device's completed reads, to tell cold reads from cached ones.

Only small sysfs and procfs reads; ``sys_root`` and ``proc_root`` point at a fake tree in tests.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from .mountinfo import Mount, find_mount, read_mountinfo

__all__ = ["block_device", "identify", "device_counters"]

_MAX_DEPTH = 8  # loop devices on files on loop devices on ...: stop somewhere


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def _join(root: str, absolute: str) -> Path:
    return Path(root) / absolute.lstrip("/")


def _kind(name: str, sysdir: Path) -> str:
    if (sysdir / "partition").exists():
        return "partition"
    if name.startswith("dm-"):
        return "dm"
    if name.startswith("md"):
        return "md"
    if name.startswith("loop"):
        return "loop"
    if name.startswith(("zram", "ram", "pmem")):
        return "ram"
    if any((sysdir / "slaves").glob("*")):
        return "virtual"
    return "disk"


def _device_info(sysdir: Path) -> dict[str, Any]:
    """Attributes of a whole disk (partitions read them from their disk)."""
    sectors = _read(sysdir / "size")
    rot = _read(sysdir / "queue" / "rotational")
    driver: str | None = None
    try:
        driver = os.path.basename(os.readlink(sysdir / "device" / "driver"))
    except OSError:
        pass
    return {
        "size_bytes": int(sectors) * 512 if sectors and sectors.isdigit() else None,
        "rotational": None if rot not in ("0", "1") else rot == "1",
        "model": _read(sysdir / "device" / "model") or None,
        "vendor": _read(sysdir / "device" / "vendor") or None,
        "driver": driver,
    }


def block_device(majmin: str, sys_root: str = "/", proc_root: str = "/", _depth: int = 0) -> dict[str, Any] | None:
    """The block device ``MAJ:MIN`` as a tree down to the real disks (the ``device`` of :func:`identify`'s
    result), or None when sysfs does not know it (major 0: tmpfs, overlayfs, NFS, btrfs subvolumes...).

    sys_root, proc_root (str): where ``sys/`` and ``proc/`` are looked up (tests pass a fake tree).
    """
    link = _join(sys_root, f"/sys/dev/block/{majmin}")
    if majmin.startswith("0:") or not link.exists():
        return None
    return _from_sysdir(Path(os.path.realpath(link)), sys_root, proc_root, _depth)


def _from_sysdir(sysdir: Path, sys_root: str, proc_root: str, depth: int) -> dict[str, Any]:
    name = sysdir.name
    kind = _kind(name, sysdir)
    node: dict[str, Any] = {"name": name, "kind": kind, "majmin": _read(sysdir / "dev"),
                            "size_bytes": None, "rotational": None, "model": None, "vendor": None,
                            "driver": None, "dm_name": None, "backing_file": None, "parents": []}
    info_dir = sysdir.parent if kind == "partition" else sysdir
    node.update(_device_info(info_dir))
    sectors = _read(sysdir / "size")  # a partition's own size, not its disk's
    if sectors and sectors.isdigit():
        node["size_bytes"] = int(sectors) * 512
    if depth >= _MAX_DEPTH:
        return node
    parents: list[dict[str, Any]] = []
    if kind == "partition":
        parents.append(_from_sysdir(sysdir.parent, sys_root, proc_root, depth + 1))
    elif kind == "loop":
        backing = _read(sysdir / "loop" / "backing_file")
        if backing:
            backing = backing.removesuffix(" (deleted)")
            node["backing_file"] = backing
            under = _path_device(backing, sys_root, proc_root)
            if under is not None:
                parents.append(_from_sysdir(under, sys_root, proc_root, depth + 1))
    else:
        if kind == "dm":
            node["dm_name"] = _read(sysdir / "dm" / "name")
        slaves = sorted((sysdir / "slaves").glob("*")) if (sysdir / "slaves").is_dir() else []
        for slave in slaves:
            target = _join(sys_root, f"/sys/class/block/{slave.name}")
            if target.exists():
                parents.append(_from_sysdir(Path(os.path.realpath(target)), sys_root, proc_root, depth + 1))
    node["parents"] = parents
    return node


def _path_device(path: str, sys_root: str, proc_root: str) -> Path | None:
    """The sysfs folder of the block device holding ``path`` (by mountinfo, then by the mount source)."""
    mount = find_mount(path, read_mountinfo(proc_root))
    if mount is None:
        return None
    return _mount_sysdir(mount, sys_root)


def _mount_sysdir(mount: Mount, sys_root: str) -> Path | None:
    link = _join(sys_root, f"/sys/dev/block/{mount.majmin}")
    if not mount.majmin.startswith("0:") and link.exists():
        return Path(os.path.realpath(link))
    # btrfs and some others report an anonymous 0:N device; the source names the real one
    if mount.source.startswith("/dev/"):
        dev = os.path.basename(os.path.realpath(mount.source) if sys_root == "/" else mount.source)
        cls = _join(sys_root, f"/sys/class/block/{dev}")
        if cls.exists():
            return Path(os.path.realpath(cls))
    return None


def _leaves(node: dict[str, Any]) -> list[dict[str, Any]]:
    if not node["parents"]:
        return [{k: v for k, v in node.items() if k != "parents"}]
    return [leaf for p in node["parents"] for leaf in _leaves(p)]


def _chain(node: dict[str, Any] | None, fstype: str, sys_root: str, proc_root: str) -> str:
    if node is None:
        return f"{fstype} (no block device)"
    parts = [f"{fstype} on {node['name']}"]
    cur: dict[str, Any] | None = node
    while cur is not None:
        parents = cur["parents"]
        if cur["kind"] == "loop" and cur["backing_file"]:
            back = find_mount(cur["backing_file"], read_mountinfo(proc_root))
            parts.append(f"file {cur['backing_file']}" + (f" on {back.fstype}" if back else ""))
        if not parents:
            break
        parts.append(" + ".join(p["name"] for p in parents))
        cur = parents[0]
    return " -> ".join(parts)


def identify(path: str | os.PathLike[str], sys_root: str = "/", proc_root: str = "/") -> dict[str, Any]:
    """What storage holds ``path`` (the ``storage`` object of :mod:`recpack.bench.device`'s JSON).

    Never raises for unusual storage: no mount found, no block device (tmpfs, overlayfs, network) or no
    sysfs (not Linux) give ``device`` None and a ``note`` saying so. ``sys_root``/``proc_root`` point at a
    fake tree in tests; with the defaults the path's ``st_dev`` is cross-checked against mountinfo.
    """
    real = os.path.realpath(path)
    out: dict[str, Any] = {"path": os.fspath(path), "real_path": real, "mount_point": None, "fstype": None,
                           "source": None, "majmin": None, "device": None, "disks": [], "rotational": None,
                           "chain": "", "note": None}
    if not sys.platform.startswith("linux") and sys_root == "/":
        out["note"] = f"storage identification needs Linux (/proc, /sys); this is {sys.platform}"
        out["chain"] = "unknown"
        return out
    mounts = read_mountinfo(proc_root)
    mount = find_mount(real, mounts)
    if mount is None:
        out["note"] = f"no mount found for {real} in {proc_root.rstrip('/')}/proc/self/mountinfo"
        out["chain"] = "unknown"
        return out
    out.update(mount_point=mount.mount_point, fstype=mount.fstype, source=mount.source, majmin=mount.majmin)
    sysdir = _mount_sysdir(mount, sys_root)
    if sys_root == "/" and sysdir is None:
        try:  # bind mounts and the like: st_dev is what the kernel really uses for this file
            st = os.stat(real)
            majmin = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
            if majmin != mount.majmin and os.path.exists(f"/sys/dev/block/{majmin}"):
                sysdir = Path(os.path.realpath(f"/sys/dev/block/{majmin}"))
        except OSError:
            pass
    if sysdir is None:
        out["note"] = (f"{mount.fstype} at {mount.mount_point} has no block device (memory, network or a "
                       "union file system); the measured class says what it behaves like")
        out["chain"] = _chain(None, mount.fstype, sys_root, proc_root)
        return out
    node = _from_sysdir(sysdir, sys_root, proc_root, 0)
    out["device"] = node
    out["disks"] = _leaves(node)
    out["rotational"] = out["disks"][0]["rotational"] if out["disks"] else None
    out["chain"] = _chain(node, mount.fstype, sys_root, proc_root)
    return out


def device_counters(storage: dict[str, Any], sys_root: str = "/") -> tuple[int, int] | None:
    """(reads completed, bytes read) so far by the block device holding the file system (its
    ``/sys/dev/block/MAJ:MIN/stat``), or None without one."""
    dev = storage.get("device")
    if not dev or not dev.get("majmin"):
        return None
    text = _read(_join(sys_root, f"/sys/dev/block/{dev['majmin']}/stat"))
    fields = text.split() if text else []
    if len(fields) < 3 or not (fields[0].isdigit() and fields[2].isdigit()):
        return None
    return int(fields[0]), int(fields[2]) * 512
