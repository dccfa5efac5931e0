"""Sample orders: which global record ids an epoch visits, in what order, and which of them each rank reads.

Every order is a pure function ``(layout, seed, epoch, **options) -> int64 array``, a permutation of
``0..N-1``; :data:`ORDERS` maps names to them. :func:`rank_share` then cuts one contiguous block per rank,
:func:`batch_bounds` / :func:`batch_slice` cut a block into batches and :func:`coalesce` turns one batch
into a few ``(shard, first_local_index, count)`` reads. :func:`choose_order` picks an order for
``order="auto"`` by timing cold random reads on the shard files themselves (:func:`probe_latency`).

Costs (numpy, one core): every order is O(N) time and allocates its int64 result (8 bytes per record) plus
O(N / run + shards) scratch for ``shard_shuffle``; ``random`` is one ``Generator.permutation`` (8 bytes
per record). ``benchmarks/order.py`` measures both.

Randomness comes from ``np.random.Generator(PCG64)`` seeded with ``SeedSequence([seed, epoch, tag])``
(``tag`` names the purpose), so an order depends on nothing but its arguments. numpy does not promise
that a seeded stream stays bit-identical across numpy versions (NEP 19); for a training order that is
acceptable — only resuming mid-epoch across a numpy upgrade could visit a different order.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from .index import Manifest

__all__ = [
    "Layout",
    "ORDERS",
    "SHARD_SHUFFLE_DEFAULTS",
    "HDD_P50_MS",
    "HDD_MAX_IOPS",
    "is_hdd_like",
    "order_for_probe",
    "ProbeResult",
    "order_sequential",
    "order_random",
    "order_shard_shuffle",
    "rank_share",
    "batch_bounds",
    "batch_slice",
    "coalesce",
    "probe_latency",
    "choose_order",
]

IdArray = npt.NDArray[np.int64]

#: Keyword options of :func:`order_shard_shuffle` and their defaults; the other orders accept and ignore
#: them, so a loader can pass the same keywords to every entry of :data:`ORDERS`.
SHARD_SHUFFLE_DEFAULTS: dict[str, int] = {"run": 64, "interleave": 4, "window": 16}

#: Median cold 4 KiB random-read latency (milliseconds) above which :func:`choose_order` treats the
#: storage as a rotating disk. NVMe/SATA SSDs measure ~0.05-0.3 ms, network block devices ~0.5-1.5 ms,
#: 7200 rpm disks 4-15 ms (seek + half a rotation).
HDD_P50_MS = 2.0
#: Random reads per second below which a device counts as HDD-like. Throttled and shared devices (cgroup
#: limits, cloud volumes) answer the first reads of a burst fast and then slow down, so rate over a run of
#: reads is checked as well as the median latency.
HDD_MAX_IOPS = 1000.0

# Purpose tags mixed into the seed, so the streams for different purposes are independent.
_TAG_RANDOM = 1
_TAG_RUN_OFFSET = 2
_TAG_SHARD_PERM = 3
_TAG_RUN_NOISE = 4
_TAG_PROBE = 5


# -- layout -------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Layout:
    """Where global record ids fall: shard ``s`` holds ids ``starts[s] .. starts[s+1]-1``.

    ``starts`` is int64 of length ``shards + 1``, ``starts[0] == 0``, non-decreasing (empty shards are
    allowed), ``starts[-1] == N``. It is copied and made read-only. Compared by identity (it holds an array).
    Memory: 8 bytes per shard.
    """

    starts: IdArray

    def __post_init__(self) -> None:
        a = np.asarray(self.starts)
        if a.ndim != 1 or a.size < 1 or not np.issubdtype(a.dtype, np.integer):
            raise ValueError("Layout.starts must be a 1-D integer array of length shards + 1 (use "
                             "Layout.from_counts(records_per_shard) or Layout(manifest.starts()))")
        a = np.array(a, dtype=np.int64)
        if a[0] != 0 or (a.size > 1 and bool(np.any(np.diff(a) < 0))):
            raise ValueError("Layout.starts must begin at 0 and never decrease (they are cumulative record "
                             "counts); build it with Layout.from_counts(records_per_shard)")
        a.setflags(write=False)
        object.__setattr__(self, "starts", a)

    @property
    def n(self) -> int:
        """Total number of records N."""
        return int(self.starts[-1])

    @property
    def shards(self) -> int:
        """Number of shards (including empty ones)."""
        return int(self.starts.size - 1)

    @property
    def counts(self) -> IdArray:
        """Records per shard (int64, length ``shards``)."""
        return np.diff(self.starts)

    @classmethod
    def from_counts(cls, counts: Sequence[int] | npt.NDArray[np.integer]) -> Layout:
        """Layout from records per shard (each >= 0)."""
        c = np.asarray(counts, dtype=np.int64).reshape(-1)
        if c.size and int(c.min()) < 0:
            raise ValueError("record counts per shard must be >= 0")
        return cls(np.concatenate([np.zeros(1, np.int64), np.cumsum(c, dtype=np.int64)]))

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> Layout:
        """Layout of a dataset manifest; an LMDB dataset counts as one shard of ``manifest.records``."""
        if manifest.backend == "lmdb":
            return cls.from_counts([manifest.records])
        return cls(manifest.starts())

    def locate(self, ids: npt.ArrayLike) -> tuple[IdArray, IdArray]:
        """(shard, index within the shard) of each global id, vectorised: O(len(ids) * log(shards)).

        Raises ValueError for ids outside ``[0, N)``."""
        g = np.asarray(ids, dtype=np.int64)
        if g.size and (int(g.min()) < 0 or int(g.max()) >= self.n):
            raise ValueError(f"record ids must lie in [0, {self.n}); got {int(g.min())}..{int(g.max())}")
        # side="right" - 1 skips empty shards, whose start equals the next shard's start.
        shard = np.searchsorted(self.starts, g, side="right").astype(np.int64) - 1
        return shard, g - self.starts[shard]


# -- orders -------------------------------------------------------------------------------------------------
def _rng(seed: int, epoch: int, tag: int) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, not {seed!r}")
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ValueError(f"epoch must be an integer >= 0, not {epoch!r}")
    # Bit streams of a seeded Generator may change between numpy versions (NEP 19); fine for training orders.
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(epoch), tag])))


def _check_options(name: str, options: dict[str, int]) -> None:
    unknown = sorted(set(options) - set(SHARD_SHUFFLE_DEFAULTS))
    if unknown:
        raise TypeError(f"order {name!r} got unknown options {unknown}; known: {sorted(SHARD_SHUFFLE_DEFAULTS)}")


def order_sequential(layout: Layout, seed: int, epoch: int, **options: int) -> IdArray:
    """``0..N-1`` in storage order (the same every epoch; :func:`rank_share` still rotates blocks per epoch).

    ``seed`` and ``epoch`` are validated and otherwise unused; shard_shuffle ``options`` are ignored.
    Cost: 8 bytes per record, ~1 ms per million records."""
    _check_options("sequential", options)
    _rng(seed, epoch, _TAG_RANDOM)  # validates the arguments the same way as the other orders
    return np.arange(layout.n, dtype=np.int64)


def order_random(layout: Layout, seed: int, epoch: int, **options: int) -> IdArray:
    """A uniformly random permutation of ``0..N-1``, different per (seed, epoch). For SSD/NVMe or a dataset
    in page cache: every record is a separate small read. shard_shuffle ``options`` are ignored.
    Cost: 8 bytes per record, ~10-20 ms per million records."""
    _check_options("random", options)
    return _rng(seed, epoch, _TAG_RANDOM).permutation(layout.n).astype(np.int64, copy=False)


def _shard_runs(layout: Layout, seed: int, epoch: int, run: int, interleave: int) -> tuple[IdArray, IdArray]:
    """Runs of ``order_shard_shuffle`` before the bounded shuffle: (global first id, length), in
    interleaved order. O(N / run + shards)."""
    counts = layout.counts
    rng_off = _rng(seed, epoch, _TAG_RUN_OFFSET)
    rng_perm = _rng(seed, epoch, _TAG_SHARD_PERM)
    # shift_s: local index j of shard s is in run (j + shift_s) // run, so the first run holds run - shift_s
    # records and the boundaries move every epoch.
    shift = rng_off.integers(0, run, size=counts.size, dtype=np.int64)
    full = np.flatnonzero(counts > 0)
    nruns = np.zeros(counts.size, np.int64)
    nruns[full] = (counts[full] - 1 + shift[full]) // run + 1
    total = int(nruns.sum())
    shard = np.repeat(np.arange(counts.size, dtype=np.int64), nruns)
    first_run = np.cumsum(nruns) - nruns
    r = np.arange(total, dtype=np.int64) - first_run[shard]  # run number inside its shard
    lo = np.maximum(r * run - shift[shard], 0)
    hi = np.minimum((r + 1) * run - shift[shard], counts[shard])
    # Shard order: a random permutation of the non-empty shards, taken `interleave` at a time; inside a
    # group, runs go round robin (run 0 of each shard, then run 1 of each, ...).
    slot = np.zeros(counts.size, np.int64)
    slot[full[rng_perm.permutation(full.size)]] = np.arange(full.size, dtype=np.int64)
    pos = slot[shard]
    key = np.lexsort((pos % interleave, r, pos // interleave))
    return (layout.starts[shard] + lo)[key], (hi - lo)[key]


def _bounded_shuffle(m: int, window: int, rng: np.random.Generator) -> IdArray:
    """A permutation of ``0..m-1`` that moves every item by fewer than ``window`` places: sort by
    ``position + uniform(0, window)``. ``window <= 1`` is the identity. O(m log m)."""
    if window <= 1 or m <= 1:
        return np.arange(m, dtype=np.int64)
    key = np.arange(m, dtype=np.float64)
    key += rng.uniform(0.0, float(window), size=m)
    return np.argsort(key, kind="stable").astype(np.int64, copy=False)


def _expand(first: IdArray, length: IdArray, n: int) -> IdArray:
    """Concatenate the id ranges ``first[i] .. first[i] + length[i] - 1`` with one in-place cumsum
    (8 bytes per record, no second N-sized temporary)."""
    keep = length > 0
    first, length = first[keep], length[keep]
    out = np.ones(n, dtype=np.int64)
    if n == 0:
        return out
    at = np.cumsum(length) - length  # where each run starts in the output
    step = first.copy()
    step[1:] -= first[:-1] + length[:-1] - 1  # jump from the previous run's last id
    out[at] = step
    np.cumsum(out, out=out)
    return out


def order_shard_shuffle(layout: Layout, seed: int, epoch: int, *, run: int = 64, interleave: int = 4,
                        window: int = 16) -> IdArray:
    """The HDD-friendly order: a permutation of ``0..N-1`` made of runs of up to ``run`` consecutive ids.

    1. each shard is cut into runs of ``run`` consecutive records; where the first boundary falls is random
       per (shard, seed, epoch), so the runs differ every epoch;
    2. the non-empty shards are put in a random order per epoch and taken ``interleave`` at a time; the runs
       of a group are interleaved round robin (run 0 of each shard, run 1 of each, ...);
    3. a bounded shuffle over runs: each run moves fewer than ``window`` run positions.

    The loader shuffles samples within a batch itself. Read pattern: a batch of B records is about
    ``B / run + 1`` contiguous reads of ``run`` records; at any time about ``interleave`` (up to
    ``interleave + window``) shards are being read.

    Randomness, honestly: the *shard* order is uniformly random per epoch, and which records share a run
    moves every epoch, but mixing across shards is local — a stretch of the order holds records from the
    ~``interleave`` shards currently open (a little more near group boundaries), never from the whole
    dataset, and records of a run stay in storage order (until the in-batch shuffle). Global class mixing
    therefore relies on ``recpack pack`` having shuffled records across shards (it does by default);
    an unshuffled pack (e.g. shards sorted by class) gives batches dominated by a few classes.

    ``run`` >= 1 records; ``interleave`` >= 1 shards; ``window`` >= 0 runs (0 or 1: no run shuffle).
    Cost: O(N) time plus an argsort over ~N/run + shards runs; memory 8 bytes per record (the result) plus
    ~50 bytes per run.
    """
    for name, v, lo in (("run", run, 1), ("interleave", interleave, 1), ("window", window, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"shard_shuffle option {name} must be an integer >= {lo}, not {v!r}")
    first, length = _shard_runs(layout, seed, epoch, int(run), int(interleave))
    perm = _bounded_shuffle(first.size, int(window), _rng(seed, epoch, _TAG_RUN_NOISE))
    return _expand(first[perm], length[perm], layout.n)


#: The sample orders by name, each ``(layout, seed, epoch, **options) -> int64 permutation of 0..N-1``.
ORDERS: dict[str, Callable[..., IdArray]] = {
    "sequential": order_sequential,
    "shard_shuffle": order_shard_shuffle,
    "random": order_random,
}


# -- ranks and batches --------------------------------------------------------------------------------------
def _int_arg(name: str, v: object, lo: int, fix: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, not {v!r}; {fix}")
    return int(v)


def rank_share(order: npt.ArrayLike, rank: int, world: int, epoch: int, *, drop_last: bool = False) -> IdArray:
    """The contiguous block of an epoch's ``order`` that ``rank`` of ``world`` reads (a new int64 array).

    The order is cut into ``world`` equal contiguous blocks — a rank keeps the large sequential reads of the
    order — and rank ``r`` gets block ``(r + epoch) % world``, so the assignment rotates every epoch even for
    ``sequential``. Every rank gets the same length:

    - ``drop_last=False``: ``ceil(N / world)``; the order is padded to ``ceil(N / world) * world`` by
      repeating it from its start (cyclically when N < world), so every id is seen at least once per epoch
      and fewer than ``world`` ids twice. Blocks are disjoint except for those padded repeats.
    - ``drop_last=True``: ``floor(N / world)``; the last ``N % world`` ids of the order are dropped.

    Cost: O(N / world) time and memory.
    """
    o = np.asarray(order)
    if o.ndim != 1 or not np.issubdtype(o.dtype, np.integer):
        raise ValueError("order must be a 1-D integer array (an epoch order from recpack.order.ORDERS)")
    world = _int_arg("world", world, 1, "pass the number of processes (1 without distributed training)")
    rank = _int_arg("rank", rank, 0, f"pass this process's rank in [0, {world})")
    if rank >= world:
        raise ValueError(f"rank must lie in [0, world) = [0, {world}), not {rank}; pass this process's rank")
    epoch = _int_arg("epoch", epoch, 0, "pass the epoch number counting from 0")
    n = o.size
    per = n // world if drop_last else -(-n // world)
    start = ((rank + epoch) % world) * per
    if start + per <= n:
        return o[start:start + per].astype(np.int64, copy=True)
    return o[np.arange(start, start + per, dtype=np.int64) % n].astype(np.int64, copy=False)


def rank_remaining(order: npt.ArrayLike, world: int, done: int, *, drop_last: bool = False) -> IdArray:
    """The ids of ``order`` not yet read once each of ``world`` ranks has read the first ``done`` ids of its
    :func:`rank_share` block: the tail of every block, in block order, without the padding repeats (each
    id of ``order`` not yet read appears exactly once). Used to continue an epoch with a different number of
    ranks: cut the result with :func:`rank_share` for the new world size.

    Every rank must have read the same number of ids (true of synchronous data-parallel training, where
    every rank runs the same number of steps). Cost: O(N) time, 8 bytes per remaining id.
    """
    o = np.asarray(order)
    if o.ndim != 1 or not np.issubdtype(o.dtype, np.integer):
        raise ValueError("order must be a 1-D integer array (an epoch order from recpack.order.ORDERS)")
    world = _int_arg("world", world, 1, "pass the number of processes that read the saved part of the epoch")
    done = _int_arg("done", done, 0, "pass the ids each rank had read")
    n = o.size
    per = n // world if drop_last else -(-n // world)
    done = min(done, per)
    pieces = [o[min(k * per + done, n):min((k + 1) * per, n)] for k in range(world)]
    return np.concatenate([np.zeros(0, np.int64)] + pieces).astype(np.int64, copy=False)


def batch_bounds(n: int, batch_size: int, drop_last: bool) -> int:
    """Number of batches of ``batch_size`` in ``n`` ids: ``floor`` with ``drop_last``, else ``ceil``.
    Batch ``b`` is ``ids[batch_slice(b, n, batch_size)]``."""
    n = _int_arg("n", n, 0, "pass the number of ids")
    batch_size = _int_arg("batch_size", batch_size, 1, "use a positive batch size")
    return n // batch_size if drop_last else -(-n // batch_size)


def batch_slice(b: int, n: int, batch_size: int) -> slice:
    """Slice of batch ``b`` in ``n`` ids (the last one may be short). Raises ValueError past the end."""
    nb = batch_bounds(n, batch_size, False)
    b = _int_arg("b", b, 0, "batch numbers count from 0")
    if b >= nb:
        raise ValueError(f"batch {b} is past the end: {n} ids make {nb} batches of {batch_size}")
    return slice(b * batch_size, min((b + 1) * batch_size, n))


def coalesce(ids: npt.ArrayLike, layout: Layout, max_gap: int = 0) -> list[tuple[int, int, int]]:
    """Group a batch's ids into reads: sorted ``(shard, first_local_index, count)`` runs of consecutive
    records in one shard, allowing up to ``max_gap`` missing records inside a run (the reader reads
    through them and discards them). Every id lies in exactly one run; duplicate ids are read once.

    Vectorised (sort + np.diff): O(k log k) for k ids. Raises ValueError for ids outside ``[0, N)``.
    """
    max_gap = _int_arg("max_gap", max_gap, 0, "pass the number of unwanted records a read may skip over")
    g = np.sort(np.asarray(ids, dtype=np.int64).reshape(-1))
    if g.size == 0:
        return []
    shard, local = layout.locate(g)
    brk = np.flatnonzero((np.diff(g) > max_gap + 1) | (np.diff(shard) != 0)) + 1
    first = np.concatenate([np.zeros(1, np.int64), brk])
    last = np.concatenate([brk - 1, np.array([g.size - 1], np.int64)])
    count = g[last] - g[first] + 1
    return list(zip(shard[first].tolist(), local[first].tolist(), count.tolist()))


# -- device probe -------------------------------------------------------------------------------------------
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
    reads = _int_arg("reads", reads, 1, "probe at least one read")
    size = _int_arg("size", size, 1, "use a positive read size in bytes")
    rng = _rng(seed, 0, _TAG_PROBE)
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
                fd = os.open(paths[i], os.O_RDONLY | getattr(os, "O_BINARY", 0))
            except OSError:
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


def choose_order(paths: Sequence[str | os.PathLike[str]]) -> tuple[str, str]:
    """``(order, reason)`` for ``order="auto"``: "shard_shuffle" when the median cold random-read latency of
    the shard files is above :data:`HDD_P50_MS` (a rotating disk or a slow network disk, where only large
    sequential reads keep up), else "random". With nothing to measure it picks "shard_shuffle", which is
    safe everywhere. The reason states the measured numbers. Cost: one :func:`probe_latency` (~0.2 s on HDD).
    """
    probe = probe_latency(paths)
    return order_for_probe(probe, paths)


def order_for_probe(probe: ProbeResult, paths: Sequence[str | os.PathLike[str]] = ()) -> tuple[str, str]:
    """``(order, reason)`` from an existing :func:`probe_latency` result (see :func:`choose_order`)."""
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
