"""``recpack bench device PATH``: what storage is under PATH, and how fast does it read when cold?

Identification (Linux; no root): the mount holding PATH from ``/proc/self/mountinfo`` (longest mount point
prefix of its real path), then its block device through ``/sys/dev/block/MAJ:MIN``, followed down through
partitions, device-mapper (``slaves/``), md RAID and loop devices (``loop/backing_file``, then the device of
that file, recursively) to the real disks: name, model, vendor, size and the kernel's rotational flag (often
wrong on virtual disks, so the class is taken from measured numbers instead).

Measurement: a test file of random bytes (``.recpack-bench-<random>`` in PATH; removed afterwards, also on
Ctrl-C and SIGTERM), then each test of :data:`TESTS` for ``duration`` seconds (or ``max_reads``), the page cache
made cold before each (:func:`recpack.bench.cache.evict`):

- ``rand_4k_qd1``: random 4 KiB reads, one thread (queue depth 1) — latency;
- ``rand_4k_threads``: random 4 KiB reads from ``threads`` concurrent readers (forked processes where ``fork``
  exists, since threads sharing the GIL fall short of fio on a fast device) — the device's parallelism;
- ``rand_record_qd1``: random reads of the dataset's record size (default 110 KiB), one thread;
- ``seq_1m``: sequential 1 MiB reads, one thread, normal readahead — bandwidth.

Reads are ``os.preadv`` into a page-aligned buffer allocated once per thread (the GIL is released while the
kernel reads); random offsets are a seeded permutation of the file's aligned slots, so no slot is read twice
in a pass (like fio's random map); each thread owns a slice of the file, and when it has read its whole slice
it drops the slice from the page cache and starts a new pass. Random tests set ``POSIX_FADV_RANDOM`` (no
readahead), the sequential one ``POSIX_FADV_SEQUENTIAL``. With ``direct=True`` every read uses ``O_DIRECT``.

The JSON result (:func:`bench_device`; ``recpack bench device --json``), keys stable:

- ``path`` (str), ``recpack`` (version), ``cache`` (str: "drop_caches", "fadvise", "o_direct", "warm" or
  "none": how each test was made cold), ``cached_after_evict`` (float | null: fraction of the test file still
  in the page cache after the first eviction, checked with RWF_NOWAIT);
- ``storage``: ``path``, ``real_path``, ``mount_point``, ``fstype``, ``source``, ``majmin`` (str | null),
  ``device`` (the block device tree: ``name``, ``kind`` — disk, partition, dm, md, loop, virtual, ram —,
  ``majmin``, ``size_bytes``, ``rotational`` (bool | null), ``model``, ``vendor``, ``driver``, ``dm_name``,
  ``backing_file`` (loop), ``parents`` (list of such trees)), ``disks`` (the leaves of that tree, without
  ``parents``), ``rotational`` (bool | null: the first disk's flag), ``chain`` (str: one line, e.g.
  ``ext4 on loop0 -> file /tmp/x/backing.img -> ext4 on vda``), ``note`` (str | null: e.g. no block device);
- ``file``: ``bytes`` (test file size), ``write_seconds``;
- ``settings``: ``duration_s``, ``max_reads``, ``threads``, ``record_bytes``, ``direct``, ``warm``, ``seed``;
- ``tests``: ``{name: {block, threads, pattern, reads, seconds, bytes, iops, mb_s, mean_us, p50_us, p99_us,
  max_us, passes, device_reads, device_bytes}}`` for each name in :data:`TESTS` (``passes``: how many times a
  thread started over its slice, summed over threads; ``device_reads``/``device_bytes``: what the file
  system's block device completed meanwhile, from its sysfs ``stat``, null without one: a cold test shows
  about one device read per read, a cached one none);
- ``class`` (``ram`` | ``nvme`` | ``sata-ssd`` | ``hdd``), ``class_label`` ("NVMe-like", ...),
  ``class_reason`` (the numbers and the thresholds of :func:`recpack.bench.stats.classify`);
- ``emulation`` (only with ``--emulate``): see :func:`recpack.bench.emulated.run_emulated`.
"""

from __future__ import annotations

import json
import math
import mmap
import multiprocessing
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
from tqdm import tqdm

from .. import __version__
from ..cliutil import SizeType, exit_on_errors
from ..errors import RecpackError
from ..interrupts import signals_as_interrupt
from .cache import cached_fraction, evict, evict_file, supports_o_direct
from .mountinfo import Mount, find_mount, parse_mountinfo, read_mountinfo
from .stats import CLASS_LABELS, classify, summarize

__all__ = [
    "Mount",
    "ReadSpec",
    "TESTS",
    "parse_mountinfo",
    "find_mount",
    "block_device",
    "identify",
    "make_test_file",
    "run_test",
    "bench_device",
    "format_report",
    "device_command",
]

MiB = 1 << 20
GiB = 1 << 30
_ALIGN = 4096
_MAX_DEPTH = 8  # loop devices on files on loop devices on ...: stop somewhere


# ==================================================================================================
# Identification


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
    """What storage holds ``path`` (the ``storage`` object described in this module's docstring).

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


# ==================================================================================================
# Measurement


@dataclass(frozen=True)
class ReadSpec:
    """One timed test: ``block`` bytes per read, ``threads`` readers, ``pattern`` "random" or "sequential"."""

    name: str
    block: int
    threads: int
    pattern: str
    label: str


def _kib(n: int) -> str:
    return f"{n >> 20} MiB" if n % MiB == 0 else f"{n / 1024:g} KiB"


def tests_for(threads: int, record_bytes: int) -> list[ReadSpec]:
    """The tests :func:`bench_device` runs, in order (:data:`TESTS` with the given threads and record size)."""
    return [
        ReadSpec("rand_4k_qd1", 4096, 1, "random", "random 4 KiB, 1 thread"),
        ReadSpec("rand_4k_threads", 4096, threads, "random", f"random 4 KiB, {threads} threads"),
        ReadSpec("rand_record_qd1", record_bytes, 1, "random", f"random {_kib(record_bytes)}, 1 thread"),
        ReadSpec("seq_1m", MiB, 1, "sequential", "sequential 1 MiB, 1 thread"),
    ]


#: The default tests (16 threads, 110 KiB records).
TESTS = tests_for(16, 110 << 10)


def _test_dir(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise RecpackError(f"{p} does not exist; pass a folder (or a file) on the storage to measure")
    d = p if p.is_dir() else p.parent
    if not os.access(d, os.W_OK | os.X_OK):
        raise RecpackError(f"cannot write a test file in {d} (permission denied); pass a folder you can write "
                           "to on the same storage")
    return d


def plan_file_size(requested: int, free: int) -> int:
    """The test file size: ``requested`` capped at half of ``free`` bytes, rounded down to a MiB. RecpackError
    when that leaves less than 8 MiB."""
    size = min(requested, free // 2) // MiB * MiB
    if size < 8 * MiB:
        raise RecpackError(f"only {free / 1e6:.0f} MB free; the device test needs at least 16 MB free "
                           "(it uses at most half of the free space)")
    return size


def make_test_file(folder: Path, size: int, *, seed: int = 0, progress: bool = True) -> Path:
    """Write ``size`` bytes of random (incompressible) data to ``folder/.recpack-bench-<random>`` and fsync.
    The caller removes it; on an error here it is removed before raising."""
    path = folder / f".recpack-bench-{os.urandom(6).hex()}"
    rng = np.random.default_rng(seed)
    chunk = 8 * MiB
    try:
        with open(path, "wb") as f, tqdm(total=size, unit="B", unit_scale=True, desc="writing test file",
                                         disable=not progress, file=sys.stderr, leave=False) as bar:
            left = size
            while left > 0:
                n = min(chunk, left)
                f.write(rng.bytes(n))
                left -= n
                bar.update(n)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        path.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise RecpackError(f"cannot write the test file {path}: {e}; free some space or pass --size") from e
        raise
    return path


@dataclass
class _Worker:
    lat: list[int] = field(default_factory=list)
    nbytes: int = 0
    passes: int = 0
    error: BaseException | None = None
    t_start: int = 0  # perf_counter_ns (CLOCK_MONOTONIC: comparable across processes)
    t_end: int = 0
    paused: int = 0  # ns spent dropping the slice from the page cache between passes (not counted as reading)


def _slices(size: int, stride: int, threads: int) -> list[tuple[int, int]]:
    """Split the file's ``size // stride`` slots into ``threads`` contiguous [first, end) slot ranges."""
    slots = size // stride
    if slots < threads:
        raise RecpackError(f"the test file ({size} bytes) is too small for {threads} threads reading "
                           f"{stride} bytes each; pass a larger --size or fewer --threads")
    return [(slots * i // threads, slots * (i + 1) // threads) for i in range(threads)]


def _reader(path: str, spec: ReadSpec, lo: int, hi: int, stride: int, seed: int, index: int, direct: bool,
            warm: bool, deadline_box: list[float], duration_ns: int, max_reads: int | None, stop: Any,
            start: Any, out: _Worker) -> None:
    """One reader (thread or process): see :func:`run_test`. ``stop`` and ``start`` are a threading or a
    multiprocessing Event and Barrier; the deadline is ``deadline_box[0]``, or ``duration_ns`` after the start."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECT", 0) if direct else 0)
    fd = -1
    buf = mmap.mmap(-1, max(spec.block, mmap.PAGESIZE))  # page-aligned, as O_DIRECT needs
    whole = memoryview(buf)
    view = [whole[:spec.block]]
    try:
        fd = os.open(path, flags)
        advice = os.POSIX_FADV_RANDOM if spec.pattern == "random" else os.POSIX_FADV_SEQUENTIAL
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, advice)
        rng = np.random.default_rng([seed, index, spec.block, spec.threads])
        # The loop below is the measurement's own CPU cost, paid per read next to the kernel's: with many
        # threads on a fast device on few cores it is what separates these numbers from fio's, so it does as
        # little as it can (local names only; the stop flag is looked at every 256 reads).
        append = out.lat.append
        clock = time.perf_counter_ns
        preadv = os.preadv
        stopped = stop.is_set
        limit = max_reads if max_reads is not None else -1
        start.wait()
        out.t_start = clock()
        deadline = int(deadline_box[0]) or out.t_start + duration_ns
        done = nbytes = 0
        try:
            while not stopped():
                if out.passes and not warm and not direct:
                    t_evict = clock()
                    evict_file(path, lo * stride, (hi - lo) * stride)  # read through once: cold again
                    out.paused += clock() - t_evict
                out.passes += 1
                if spec.pattern == "random":
                    offsets = ((rng.permutation(hi - lo) + lo) * stride).tolist()
                else:
                    offsets = list(range(lo * stride, hi * stride, stride))
                for off in offsets:
                    t0 = clock()
                    nbytes += preadv(fd, view, off)
                    t1 = clock()
                    append(t1 - t0)
                    done += 1
                    if t1 >= deadline or done == limit or (not done & 255 and stopped()):
                        return
        finally:
            out.nbytes = nbytes
            out.t_end = clock()
    except BaseException as e:  # re-raised by the main thread
        out.error = e
        stop.set()
        try:
            start.abort()
        except threading.BrokenBarrierError:
            pass
    finally:
        if fd >= 0:
            os.close(fd)
        view[0].release()
        whole.release()
        buf.close()


def _process_main(conn: Any, args: tuple[Any, ...]) -> None:
    """A reader process: run :func:`_reader`, send back (bytes, passes, start, end, error) and the latencies."""
    out = _Worker()
    try:
        reader: Callable[..., None] = _reader  # args: _reader's parameters but the last, as a tuple
        reader(*args, out)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the parent cleans up
        pass
    err = None if out.error is None else (isinstance(out.error, OSError), str(out.error))
    conn.send((out.nbytes, out.passes, out.t_start, out.t_end, out.paused, err))
    conn.send_bytes(np.asarray(out.lat, dtype=np.int64).tobytes())
    conn.close()


def _run_processes(args: list[tuple[Any, ...]], duration: float, bar: Any) -> list[_Worker]:
    """Run one :func:`_reader` per argument tuple in its own forked process; their results as _Workers."""
    ctx = multiprocessing.get_context("fork")
    stop, start = ctx.Event(), ctx.Barrier(len(args) + 1)
    pipes = [ctx.Pipe(duplex=False) for _ in args]
    procs = [ctx.Process(target=_process_main, daemon=True,
                         args=(send, (*a[:-2], stop, start))) for a, (_, send) in zip(args, pipes)]
    workers = [_Worker() for _ in args]
    try:
        for proc in procs:
            proc.start()
        for _, send in pipes:
            send.close()  # the child holds its end now
        try:
            start.wait(timeout=60)
        except threading.BrokenBarrierError:
            pass  # a reader failed to start; its error comes back below
        t0 = time.perf_counter_ns()
        base = bar.n if bar is not None else 0.0
        for (recv, _), w in zip(pipes, workers):
            while not recv.poll(0.25):
                if bar is not None:
                    bar.n = base + min(duration, (time.perf_counter_ns() - t0) / 1e9)
                    bar.refresh()
                if not any(p.is_alive() for p in procs) and not recv.poll(0):
                    raise RecpackError("a reader process died without a result; re-run without --threads "
                                       "or with fewer")
            w.nbytes, w.passes, w.t_start, w.t_end, w.paused, err = recv.recv()
            w.lat = np.frombuffer(recv.recv_bytes(), dtype=np.int64).tolist()
            if err is not None:
                is_os, text = err
                w.error = OSError(text) if is_os else RecpackError(text)
    finally:
        stop.set()
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for recv, _ in pipes:
            recv.close()
    return workers


def run_test(path: str | os.PathLike[str], spec: ReadSpec, *, duration: float = 3.0, max_reads: int | None = None,
             seed: int = 0, direct: bool = False, warm: bool = False, bar: Any = None,
             processes: bool | None = None) -> dict[str, Any]:
    """Run one test on an existing file (made cold first by the caller) and return its numbers
    (:func:`recpack.bench.stats.summarize` plus ``block``, ``threads``, ``pattern``, ``passes``).

    duration (float): seconds; max_reads (int | None): stop after this many reads in all (split over the
    threads), whichever comes first. bar: a tqdm bar advanced by elapsed seconds (or None).
    Random reads use offsets aligned to ``block`` rounded up to 4 KiB; the sequential test reads
    ``block``-sized pieces in order. Cost: ``duration`` seconds and one buffer of ``block`` bytes per thread.

    processes (bool | None): run the ``spec.threads`` readers as forked processes instead of threads (None:
    where ``fork`` exists and there is more than one reader). Python threads share one GIL: each read's
    return waits for it, and with a fast device and few cores that cost 20-30% of fio's rate with 16 readers
    here; processes keep the same per-read work without that contention.
    """
    p = os.fspath(path)
    size = os.path.getsize(p)
    stride = -(-spec.block // _ALIGN) * _ALIGN if spec.pattern == "random" else spec.block
    if size < spec.block:
        raise RecpackError(f"test file of {size} bytes is smaller than one {spec.block}-byte read; pass a larger "
                           "--size")
    slices = _slices(size, stride, spec.threads)
    per_thread = None if max_reads is None else max(1, max_reads // spec.threads)
    if processes is None:
        processes = spec.threads > 1 and "fork" in multiprocessing.get_all_start_methods()
    duration_ns = int(duration * 1e9)
    if processes:
        args = [(p, spec, lo, hi, stride, seed, i, direct, warm, [0.0], duration_ns, per_thread, None, None)
                for i, (lo, hi) in enumerate(slices)]
        workers = _run_processes(args, duration, bar)
        t0 = min(w.t_start for w in workers if w.t_start) if any(w.t_start for w in workers) else 0
        t1 = max(w.t_end for w in workers)
        return _finish(p, spec, workers, t0, t1)
    stop = threading.Event()
    start = threading.Barrier(spec.threads + 1)
    deadline_box = [0.0]
    workers = [_Worker() for _ in range(spec.threads)]
    threads = [threading.Thread(target=_reader, name=f"recpack-bench-{spec.name}-{i}", daemon=True,
                                args=(p, spec, lo, hi, stride, seed, i, direct, warm, deadline_box, duration_ns,
                                      per_thread, stop, start, workers[i]))
               for i, (lo, hi) in enumerate(slices)]
    for t in threads:
        t.start()
    try:
        t0 = time.perf_counter_ns()
        deadline_box[0] = t0 + duration_ns
        try:
            start.wait()
        except threading.BrokenBarrierError:
            pass  # a reader failed to start; its error is raised below
        base = bar.n if bar is not None else 0.0
        for t in threads:
            while t.is_alive():
                t.join(0.25)
                if bar is not None:
                    bar.n = base + min(duration, (time.perf_counter_ns() - t0) / 1e9)
                    bar.refresh()
        t1 = time.perf_counter_ns()
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    return _finish(p, spec, workers, t0, t1)


def _finish(p: str, spec: ReadSpec, workers: list[_Worker], t0: int, t1: int) -> dict[str, Any]:
    for w in workers:
        if w.error is not None:
            if isinstance(w.error, OSError):
                raise RecpackError(f"reading {p} failed: {w.error}") from w.error
            raise w.error
    lat = np.concatenate([np.asarray(w.lat, dtype=np.int64) for w in workers])
    # time spent evicting between passes is bookkeeping, not reading (fio stops at the end of the file instead)
    paused = sum(w.paused for w in workers) / len(workers)
    result = summarize(lat, sum(w.nbytes for w in workers), max(1, t1 - t0 - paused) / 1e9)
    return {"block": spec.block, "threads": spec.threads, "pattern": spec.pattern, **result,
            "passes": sum(w.passes for w in workers)}


def _device_counters(storage: dict[str, Any], sys_root: str = "/") -> tuple[int, int] | None:
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


def _warm_up(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(8 * MiB)
        while f.readinto(buf):
            pass


def bench_device(path: str | os.PathLike[str], *, size: int = GiB, duration: float = 3.0,
                 max_reads: int | None = None, threads: int = 16, record_bytes: int = 110 << 10,
                 direct: bool = False, warm: bool = False, seed: int = 0, progress: bool = True,
                 tests: Sequence[str] | None = None) -> dict[str, Any]:
    """Identify the storage under ``path`` and measure it (the JSON described in this module's docstring).

    size (int): test file bytes (capped at half the free space). duration (float): seconds per test.
    max_reads (int | None): stop a test after this many reads. threads (int): readers of ``rand_4k_threads``.
    record_bytes (int): read size of ``rand_record_qd1``. direct (bool): ``O_DIRECT`` reads. warm (bool): read
    the file once first and never evict (labelled "warm"). tests (names | None): run only these of
    :data:`TESTS` (the class needs ``rand_4k_qd1``). Cost: writing the file plus ~``duration`` per test.
    """
    for name, value, lo in (("threads", threads, 1), ("record_bytes", record_bytes, 512)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, not {value!r}")
    if not duration > 0:
        raise ValueError(f"duration must be > 0 seconds, not {duration!r}")
    if direct and warm:
        raise ValueError("direct (O_DIRECT) reads bypass the page cache, so they cannot be warm; pick one")
    if direct and record_bytes % 512:
        raise ValueError(f"O_DIRECT reads need a multiple of 512 bytes; record size {record_bytes} is not")
    specs = tests_for(threads, record_bytes)
    if tests is not None:
        unknown = set(tests) - {s.name for s in specs}
        if unknown:
            raise ValueError(f"unknown tests {sorted(unknown)}; use some of {[s.name for s in specs]}")
        specs = [s for s in specs if s.name in tests]
    folder = _test_dir(path)
    storage = identify(folder)
    fsize = plan_file_size(size, shutil.disk_usage(folder).free)
    result: dict[str, Any] = {"path": os.fspath(path), "recpack": __version__, "cache": None,
                              "cached_after_evict": None, "storage": storage,
                              "settings": {"duration_s": duration, "max_reads": max_reads, "threads": threads,
                                           "record_bytes": record_bytes, "direct": direct, "warm": warm,
                                           "seed": seed},
                              "file": {}, "tests": {}}
    test_file: Path | None = None
    with signals_as_interrupt():
        try:
            t0 = time.perf_counter()
            test_file = make_test_file(folder, fsize, seed=seed, progress=progress)
            result["file"] = {"bytes": fsize, "write_seconds": round(time.perf_counter() - t0, 3)}
            if direct and not supports_o_direct(test_file):
                raise RecpackError(f"{storage['fstype']} at {folder} does not support O_DIRECT; leave out --direct "
                                   "(the page cache is then dropped before each test instead)")
            if warm:
                _warm_up(test_file)
            fmt = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s{postfix}"
            with tqdm(total=duration * len(specs), desc="measuring", unit="s", disable=not progress,
                      file=sys.stderr, leave=False, bar_format=fmt) as bar:
                for spec in specs:
                    bar.set_postfix_str(spec.label)
                    how = evict([test_file], warm=warm, direct=direct)
                    if result["cache"] is None:
                        result["cache"] = how
                        result["cached_after_evict"] = None if warm else cached_fraction(test_file)
                    start_n = bar.n
                    before = _device_counters(storage)
                    result["tests"][spec.name] = run_test(test_file, spec, duration=duration,
                                                          max_reads=max_reads, seed=seed, direct=direct,
                                                          warm=warm, bar=bar)
                    after = _device_counters(storage)
                    done = result["tests"][spec.name]
                    done["device_reads"] = after[0] - before[0] if after and before else None
                    done["device_bytes"] = after[1] - before[1] if after and before else None
                    bar.n = start_n + duration  # a test stopped early by --reads still counts in full
                    bar.refresh()
        finally:
            if test_file is not None:
                test_file.unlink(missing_ok=True)
    qd1 = result["tests"].get("rand_4k_qd1")
    many = result["tests"].get("rand_4k_threads")
    if qd1 and qd1["reads"]:
        dev_reads = qd1.get("device_reads")
        share = None if dev_reads is None or warm else dev_reads / max(1, qd1["reads"])
        key, reason = classify(qd1["p50_us"], qd1["iops"], many["iops"] if many else None, share)
        if warm:
            reason += " (warm cache: this is the page cache, not the device)"
        elif result["cache"] == "none":
            reason += " (nothing could be evicted, so reads may be cache hits)"
    else:
        key, reason = "", "not classified: the random 4 KiB QD1 test did not run"
    result.update({"class": key or None, "class_label": CLASS_LABELS.get(key), "class_reason": reason})
    return result


# ==================================================================================================
# Output


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, div in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def _num(v: float, digits: int = 0) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.{digits}f}"


def _us(v: float) -> str:
    if v is None or math.isnan(v):
        return "-"
    return f"{v / 1000:,.2f} ms" if v >= 1000 else f"{v:,.1f} µs"


def format_report(result: dict[str, Any]) -> str:
    """The human-readable report of :func:`bench_device`'s result: storage, then a table of tests."""
    st = result["storage"]
    lines = [f"path        {result['path']}"]
    if st.get("mount_point") is not None:
        lines.append(f"file system {st['fstype']} at {st['mount_point']} (from {st['source']})")
    lines.append(f"storage     {st['chain']}")
    for disk in st.get("disks", []):
        what = " ".join(x for x in (disk.get("vendor"), disk.get("model")) if x) or "model unknown"
        drv = f", driver {disk['driver']}" if disk.get("driver") else ""
        rot = {True: "1 (rotational)", False: "0 (non-rotational)", None: "unknown"}[disk.get("rotational")]
        lines.append(f"disk        {disk['name']} ({disk['kind']}): {what}{drv}, {_size(disk.get('size_bytes'))}, "
                     f"kernel rotational flag {rot}")
    if st.get("note"):
        lines.append(f"note        {st['note']}")
    emu = result.get("emulation")
    if emu:
        lines.append(f"emulated    {emu['profile']}: {emu['read_iops_limit']:,} read IOPS, "
                     f"{emu['read_mb_s_limit']:g} MB/s ({emu['method']}, loop direct-io "
                     f"{'on' if emu['direct_io'] else 'off'})")
    cache = result["cache"]
    cache_text = {"drop_caches": "cold (page cache dropped before each test: drop_caches)",
                  "fadvise": "cold (test file evicted before each test: posix_fadvise DONTNEED)",
                  "o_direct": "cold (O_DIRECT reads bypass the page cache)",
                  "warm": "WARM (file read once first; numbers are the page cache, not the device)",
                  "none": "UNKNOWN (could not evict; reads may be cache hits)"}.get(cache, str(cache))
    frac = result.get("cached_after_evict")
    if frac:
        cache_text += f"; {frac:.0%} of the file was still cached after eviction"
    f = result["file"]
    lines.append(f"cache       {cache_text}")
    lines.append(f"test file   {_size(f.get('bytes'))}, {result['settings']['duration_s']:g} s per test")
    lines.append("")
    header = ("test", "reads", "IOPS", "MB/s", "p50", "p99")
    rows = [header]
    labels = {s.name: s.label for s in tests_for(result["settings"]["threads"], result["settings"]["record_bytes"])}
    for name, t in result["tests"].items():
        rows.append((labels.get(name, name), _num(t["reads"]), _num(t["iops"]), _num(t["mb_s"], 1),
                     _us(t["p50_us"]), _us(t["p99_us"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[j]) if j == 0 else c.rjust(widths[j]) for j, c in enumerate(r)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    if result.get("class"):
        lines.append(f"class       {result['class_label']}: {result['class_reason']}")
    else:
        lines.append(f"class       {result['class_reason']}")
    return "\n".join(lines)


def _jsonable(obj: Any) -> Any:
    """NaN is not JSON: write null."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    return obj


# ==================================================================================================
# Command
#
@click.command()
@click.argument("path", type=click.Path(exists=True))
@click.option("--size", type=SizeType(), default="1GiB", show_default=True,
              help="Test file size (capped at half the free space). Larger than RAM makes warm runs impossible.")
@click.option("--duration", type=click.FloatRange(min=0.1), default=3.0, show_default=True,
              help="Seconds per test.")
@click.option("--reads", "max_reads", type=click.IntRange(1), default=None,
              help="Stop a test after this many reads (whichever comes first with --duration).")
@click.option("--threads", type=click.IntRange(1, 256), default=16, show_default=True,
              help="Threads of the concurrent random 4 KiB test.")
@click.option("--record-size", "record_bytes", type=SizeType(), default="110KiB", show_default=True,
              help="Read size of the random record test (a dataset's typical record).")
@click.option("--direct", is_flag=True, help="Read with O_DIRECT instead of dropping the page cache.")
@click.option("--warm", is_flag=True, help="Read the file once first and never evict (labelled warm).")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Seed of the random offsets.")
@click.option("--emulate", type=click.Choice(["hdd", "sata-ssd"]), default=None,
              help="Measure an emulated WD Black HDD (110 IOPS, 170 MB/s) or Samsung 850 PRO SSD (10,000 IOPS, "
                   "550 MB/s) made on PATH's disk instead (root: loop device + cgroup).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (keys: see recpack.bench.device).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def device_command(**options: Any) -> None:
    """Identify the storage under PATH (file system, block device, model, rotational flag) and measure it
    with a temporary test file: random 4 KiB reads at queue depth 1 and with threads, random record-size
    reads and sequential 1 MiB reads, cold cache each time; then name its class (HDD-like, SATA-SSD-like,
    NVMe-like, RAM/page cache) from the numbers."""
    exit_on_errors("interrupted; the test file (and any emulated device) was removed")(_device_main)(**options)


def _interrupted() -> None:
    click.echo("\ninterrupted; the test file (and any emulated device) was removed", err=True)
    sys.exit(130)


def _device_main(path: str, size: int, duration: float, max_reads: int | None, threads: int, record_bytes: int,
                 direct: bool, warm: bool, seed: int, emulate: str | None, as_json: bool, no_progress: bool) -> None:
    progress = not no_progress
    try:
        _measure_and_print(path, size, duration, max_reads, threads, record_bytes, direct, warm, seed, emulate,
                           as_json, progress)
    except KeyboardInterrupt:
        _interrupted()


def _measure_and_print(path: str, size: int, duration: float, max_reads: int | None, threads: int,
                       record_bytes: int, direct: bool, warm: bool, seed: int, emulate: str | None, as_json: bool,
                       progress: bool) -> None:
    try:
        if emulate is not None:
            from .emulate.profiles import MiB as _MiB
            from .emulated import python_argv, run_emulated

            # the child caps its file at half the free space: room for twice the file plus ext4's overhead
            dev_size = max(256 * _MiB, 2 * size + 128 * _MiB)
            child = ["bench", "device", "--json", "--size", str(size), "--duration", str(duration),
                     "--threads", str(threads), "--record-size", str(record_bytes), "--seed", str(seed)]
            child += (["--reads", str(max_reads)] if max_reads else []) + (["--direct"] if direct else [])
            child += (["--warm"] if warm else []) + ([] if progress else ["--no-progress"])
            result = run_emulated(emulate, [], lambda paths: python_argv(*child, str(paths[0])), size=dev_size,
                                  progress=progress)
        else:
            result = bench_device(path, size=size, duration=duration, max_reads=max_reads, threads=threads,
                                  record_bytes=record_bytes, direct=direct, warm=warm, seed=seed,
                                  progress=progress)
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    if as_json:
        click.echo(json.dumps(_jsonable(result), indent=1))
    else:
        click.echo(format_report(result))
