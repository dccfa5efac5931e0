"""Sample orders: which global record ids an epoch visits, in what order, and which of them each rank reads.

Every order is a pure function ``(layout, seed, epoch, **options) -> int64 array``, a permutation of
``0..N-1``; :data:`ORDERS` maps names to them. :func:`rank_share` then cuts one contiguous block per rank and
:func:`rank_remaining` what ranks of another world size had not read yet (resuming with a new world size).
Which order ``order="auto"`` picks is decided from a device probe (:mod:`recpack.probe`).

Costs (numpy, one core): every order is O(N) time and allocates its int64 result (8 bytes per record) plus
O(N / run + shards) scratch for ``shard_shuffle``; ``random`` is one ``Generator.permutation`` (8 bytes
per record). ``benchmarks/order.py`` measures both.

Randomness comes from ``np.random.Generator(PCG64)`` seeded with ``SeedSequence([seed, epoch, tag])``
(``tag`` names the purpose), so an order depends on nothing but its arguments. numpy does not promise
that a seeded stream stays bit-identical across numpy versions (NEP 19); for a training order that is
acceptable — only resuming mid-epoch across a numpy upgrade could visit a different order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "Layout",
    "ORDERS",
    "SHARD_SHUFFLE_DEFAULTS",
    "order_sequential",
    "order_random",
    "order_shard_shuffle",
    "rank_share",
    "rank_remaining",
]

IdArray = npt.NDArray[np.int64]

#: Keyword options of :func:`order_shard_shuffle` and their defaults; the other orders accept and ignore
#: them, so a loader can pass the same keywords to every entry of :data:`ORDERS`.
SHARD_SHUFFLE_DEFAULTS: dict[str, int] = {"run": 64, "interleave": 4, "window": 16}

# Purpose tags mixed into the seed, so the streams for different purposes are independent.
_TAG_RANDOM = 1
_TAG_RUN_OFFSET = 2
_TAG_SHARD_PERM = 3
_TAG_RUN_NOISE = 4


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
