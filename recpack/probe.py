"""Probing the storage under a dataset, to choose how to read it: the order (:func:`choose_order` from a
:func:`probe_latency` measurement of cold random reads) and the I/O mode (:func:`choose_io`: direct or
through the page cache, from the dataset's size and the memory available). No decisions are hard-coded per
device type: every choice is made from what was measured, and its reason says what that was.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import TypedDict

import numpy as np

from .errors import FormatError
from .fileio import open_readonly

__all__ = [
    "HDD_P50_MS",
    "HDD_MAX_IOPS",
    "ProbeResult",
    "probe_latency",
    "is_hdd_like",
    "choose_order",
    "choose_io",
    "memory_available",
]

#: Median cold 4 KiB random-read latency (milliseconds) above which the storage counts as a rotating disk.
#: NVMe/SATA SSDs measure ~0.05-0.3 ms, network block devices ~0.5-1.5 ms, 7200 rpm disks 4-15 ms.
HDD_P50_MS = 2.0
#: Random reads per second below which a device counts as HDD-like. Throttled and shared devices (cgroup
#: limits, cloud volumes) answer the first reads of a burst fast and then slow down, so rate over a run of
#: reads is checked as well as the median latency.
HDD_MAX_IOPS = 1000.0
_TAG_PROBE = 5


class ProbeResult(TypedDict):
    """What :func:`probe_latency` measured. ``cold`` is "fadvise" when each range was dropped from the page
    cache first, "none" when that is not available (the reads may then be cache hits and look fast).
    ``cached`` counts reads whose range was found still in the page cache after the drop (checked with
    ``RWF_NOWAIT`` on Linux; e.g. tmpfs, or dirty pages): their times are cache hits."""

    p50_ms: float
    p90_ms: float
    reads: int
    cold: str
    cached: int
    iops: float


# Page-cache folios can be up to 2 MiB (PMD size) and are aligned to their size; POSIX_FADV_DONTNEED skips a
# folio that reaches outside the range, so the drop covers the aligned 2 MiB around each read.
_DROP_SPAN = 2 << 20


def _still_cached(fd: int, off: int, size: int) -> bool:
    """True when ``[off, off + size)`` is (partly) in the page cache: a RWF_NOWAIT read succeeds only from
    cache. False when it is not, or when this cannot be checked."""
    flag = getattr(os, "RWF_NOWAIT", None)
    if flag is None or not hasattr(os, "preadv"):
        return False
    try:
        return os.preadv(fd, [bytearray(min(size, 4096))], off, flag) > 0
    except OSError:  # EAGAIN: not cached; EOPNOTSUPP and others: cannot tell
        return False


def probe_latency(paths: Sequence[str | os.PathLike[str]], reads: int = 64, size: int = 4096,
                  seed: int = 0) -> ProbeResult:
    """Time ``reads`` random ``size``-byte reads at random ``size``-aligned offsets spread over the files
    (at most ``reads`` of them, picked at random, each opened once).

    Where ``os.posix_fadvise`` exists (Linux), each file gets POSIX_FADV_RANDOM (no read-ahead) and the
    aligned 2 MiB around each read is dropped with POSIX_FADV_DONTNEED just before it, so the read goes to
    the device; no root needed (dirty pages cannot be dropped, so files are fsynced first). Elsewhere the
    reads are plain and may hit the page cache (``cold="none"``). One thread, queue depth 1: this is
    per-read latency, and ``iops`` is reads per second over the whole run (a throttled device passes a
    first burst quickly, so the rate shows what latency alone hides). Empty or unreadable files are skipped;
    with nothing to read, ``reads`` is 0 and the times are NaN. Cost: ``reads`` x latency (~0.6 s on a
    7200 rpm disk at the default 64, ~10 ms on an SSD); it evicts up to ``reads`` x 2 MiB of these files from
    the page cache.
    """
    if reads < 1 or size < 1:
        raise ValueError(f"probe_latency needs reads >= 1 and size >= 1 (got reads={reads}, size={size})")
    rng = np.random.default_rng([seed, _TAG_PROBE])
    fadvise = getattr(os, "posix_fadvise", None)
    cold = "fadvise" if fadvise is not None else "none"
    fds: list[tuple[int, int]] = []  # (fd, file size)
    times: list[float] = []
    cached = 0
    try:
        # Open at most `reads` non-empty files, picked at random: a dataset may have thousands of shards,
        # more than the open-file limit.
        for i in rng.permutation(len(paths)).tolist():
            if len(fds) >= reads:
                break
            try:
                fd = open_readonly(os.fspath(paths[i]))
            except FormatError:  # missing, unreadable or not a regular file: the reader reports it
                continue
            fsize = os.fstat(fd).st_size
            if fsize == 0:
                os.close(fd)
                continue
            fds.append((fd, fsize))
            if fadvise is not None:
                try:
                    os.fsync(fd)
                    fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
                except OSError:
                    pass
        if not fds:
            return {"p50_ms": math.nan, "p90_ms": math.nan, "reads": 0, "cold": cold, "cached": 0,
                    "iops": math.nan}
        start = time.perf_counter()
        for _ in range(reads):
            fd, fsize = fds[int(rng.integers(len(fds)))]
            off = int(rng.integers(max(fsize // size, 1))) * size
            if fadvise is not None:
                try:
                    fadvise(fd, off - off % _DROP_SPAN, _DROP_SPAN, os.POSIX_FADV_DONTNEED)
                except OSError:
                    cold = "none"
                cached += _still_cached(fd, off, size)
            t0 = time.perf_counter()
            if hasattr(os, "pread"):
                os.pread(fd, size, off)
            else:  # Windows
                os.lseek(fd, off, os.SEEK_SET)
                os.read(fd, size)
            times.append((time.perf_counter() - t0) * 1e3)
        elapsed = time.perf_counter() - start
    finally:
        for fd, _ in fds:
            os.close(fd)
    ms = sorted(times)
    p90 = ms[min(len(ms) - 1, math.ceil(0.9 * len(ms)) - 1)]
    return {"p50_ms": float(statistics.median(ms)), "p90_ms": float(p90), "reads": len(ms), "cold": cold,
            "cached": cached, "iops": len(ms) / max(elapsed, 1e-9)}


def is_hdd_like(probe: ProbeResult) -> bool:
    """True when the probe looks like a rotating, throttled or network disk: median cold random read above
    :data:`HDD_P50_MS` or fewer than :data:`HDD_MAX_IOPS` random reads per second."""
    return probe["reads"] > 0 and (probe["p50_ms"] > HDD_P50_MS or probe["iops"] < HDD_MAX_IOPS)


def _rotational_hint(path: str | os.PathLike[str]) -> str | None:
    """The kernel's rotational flag for the block device holding ``path`` (Linux only; often wrong on
    virtual disks, so only reported, never used to decide)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        st = os.stat(path)
        base = f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
        for q in (f"{base}/queue/rotational", f"{base}/../queue/rotational"):
            if os.path.exists(q):
                with open(q) as f:
                    return f.read().strip()
    except (OSError, ValueError):
        pass
    return None


def choose_order(probe: ProbeResult, paths: Sequence[str | os.PathLike[str]] = ()) -> tuple[str, str]:
    """``(order, reason)`` for ``order="auto"`` from a :func:`probe_latency` result: "shard_shuffle" when the
    device is HDD-like (:func:`is_hdd_like`: only large sequential reads keep up), else "random". With
    nothing to measure it picks "shard_shuffle", which is safe everywhere. The reason states the numbers."""
    rot = _rotational_hint(paths[0]) if paths else None
    rot_note = f"; kernel rotational flag {rot} (not used: virtual disks often set it wrongly)" if rot else ""
    if probe["reads"] == 0:
        return "shard_shuffle", "no readable data to probe; shard_shuffle is safe on any storage" + rot_note
    measured = (f"median cold 4 KiB random read {probe['p50_ms']:.3f} ms, p90 {probe['p90_ms']:.3f} ms, "
                f"{probe['iops']:.0f} reads/s over {probe['reads']} reads (cache dropped: {probe['cold']}, "
                f"still cached: {probe['cached']})")
    if is_hdd_like(probe):
        return "shard_shuffle", (f"{measured}: above {HDD_P50_MS} ms or below {HDD_MAX_IOPS:.0f} reads/s, "
                                 "like a rotating, throttled or network disk, so reads must be large and "
                                 f"sequential{rot_note}")
    caveat = ("" if probe["cold"] == "fadvise" and probe["cached"] * 2 <= probe["reads"]
              else " (reads hit the page cache, so the device itself was not measured)")
    return "random", (f"{measured}: random reads are cheap here (SSD/NVMe or cached){caveat}{rot_note}")


def memory_available() -> int:
    """Bytes of memory the page cache could use: MemAvailable on Linux, else physical memory (0: unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return 0


def choose_io(io: str, hdd: bool, paths: Sequence[str]) -> tuple[str, str]:
    """("buffered" | "direct", why). auto: direct I/O when the dataset is larger than half the memory the page
    cache could use (it cannot stay cached, so caching it only costs: page-cache bookkeeping and a copy per
    byte), else buffered (later epochs then come from memory). Direct reads reach the device as full-size
    requests without the kernel's per-page work (the measured difference: docs/benchmarks.md)."""
    if io != "auto":
        return io, "chosen by the caller"
    device = "HDD-like device" if hdd else "fast device"
    size = 0
    for shard in paths:
        try:
            size += os.path.getsize(shard)
        except OSError:
            pass
    avail = memory_available()
    if avail and size > avail // 2:
        return "direct", (f"{device} and {size / 1e9:.1f} GB of shards > half of the "
                          f"{avail / 1e9:.1f} GB the page cache could use")
    return "buffered", (f"{device}; {size / 1e9:.1f} GB of shards fit the page cache "
                        f"({avail / 1e9:.1f} GB available): later epochs come from memory")
