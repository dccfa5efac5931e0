"""``recpack.Loader``: the part users put in their training loop.

::

    loader = recpack.Loader("data/train", batch_size=256, shuffle=True, seed=0,
                            transform="train", size=224, device="cuda")
    for epoch in range(90):
        loader.set_epoch(epoch)
        for images, labels in loader:   # images: uint8 (B,3,224,224) on the device, labels: int64
            ...

Pipeline per epoch (threads only, no worker processes):

1. **Order** (pure): the epoch's sample order from ``(dataset layout, seed, epoch)``, this rank's contiguous
   share of it, then fixed-size batches; samples are shuffled within each batch. See :mod:`recpack.order`.
2. **Read** (one ``recpack-reader`` thread planning, ``io_threads`` reading): the epoch's order is cut into
   *segments* — stretches of consecutive records of one shard, up to 8 MiB (32 MiB on HDD-like devices) —
   and each segment is read once with one large aligned request, concurrently with the next, and kept until
   every batch that needs it has been prepared.
3. **Decode** (``threads`` ``recpack-decode`` threads, which release the GIL in libjpeg-turbo and torch):
   each record's CRCs are checked, then it is decoded (reduced-size when the crop allows), cropped, resized
   and flipped straight into the slot's preallocated (pinned) image tensor.
4. **Copy**: the slot is copied to the device with ``non_blocking=True`` on a side CUDA stream; an event
   guards the slot until the copy is done. Without CUDA the same path yields CPU tensors (or numpy arrays).

Memory is bounded and constant across epochs: ``(prefetch + 2) x (batch image bytes + read buffer)`` plus the
order arrays (8 bytes per record); see :attr:`Loader.memory_bytes`.
"""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from .batch import Slot, SlotRing
from .decode import decode_rgb
from .closing import Closing
from .errors import CorruptRecord, DecodeError, RecpackError
from .format import ALIGN, decode_meta
from .backends import open_source
from .order import ORDERS, Layout, rank_remaining, rank_share
from .probe import choose_io, choose_order, is_hdd_like, probe_latency
from .prefetch import Prefetcher, Stopped
from .transforms import apply_user_transform, decode_crop_resize, train_params, val_params
from .storage import BufferPool, Segments, plan_segments, read_into

__all__ = ["Loader", "ORDER_NAMES", "TRANSFORMS"]

ORDER_NAMES = ("auto", "sequential", "shard_shuffle", "random")
TRANSFORMS = ("train", "val")
_STATE_VERSION = 1
_TAG_BATCH_SHUFFLE, _TAG_PARAMS = 101, 102


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class Loader(Closing):
    """Batches of decoded images (or raw records) from a recpack dataset, prepared ahead on threads.

    Args:
        path: dataset folder (written by ``recpack pack``; shard or LMDB backend).
        batch_size: samples per batch.
        shuffle: False reads in storage order (``order="sequential"``).
        seed: the order and the random crops are a pure function of (seed, epoch, rank, world_size).
        order: "shard_shuffle" (large sequential reads; HDD-friendly), "random" (a full permutation through
            the footer tables; SSD/NVMe), "sequential", or "auto": probe the device's random-read latency and
            pick (``order_reason`` says what was measured and picked).
        transform: "train" (RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3)) + horizontal flip),
            "val" (resize the shorter side to size/0.875, center crop), or a callable taking an HWC uint8
            RGB array and returning (3, size, size) or (size, size, 3) uint8.
        size: output side in pixels.
        device: "cuda", "cuda:N", "cpu" or None (CUDA when available).
        threads: decode threads (default: all cores).
        prefetch: batches prepared ahead. Pinned memory = (prefetch + 2) x batch bytes.
        drop_last: drop the last partial batch and, across ranks, the remainder instead of padding.
        rank, world_size: this process's share; default from ``torch.distributed`` when initialised.
        normalize: None, or (mean, std) per channel in 0..255 units: images become ``dtype`` on the device,
            (x - mean) / std, computed on the device.
        dtype: float dtype for ``normalize`` (torch.float32 or torch.float16).
        output: "torch" or "numpy" (numpy needs a CPU device).
        on_error: "raise" (default): a corrupt record raises :class:`CorruptRecord` naming shard, offset and
            key, an undecodable image :class:`DecodeError`; "skip": skip it (the batch is one shorter), count
            it in ``stats`` and warn once per shard.
        decode: False yields (list of the stored image bytes, labels) without decoding: raw-read throughput.
            Items are zero-copy, CRC-checked ``memoryview`` s into read buffers (``bytes(x)`` copies one out).
        run, interleave, window: shard_shuffle parameters (records per run, shards interleaved, runs a run
            may move); see :func:`recpack.order.order_shard_shuffle`. ``run=None`` sizes runs by the device:
            ~64 MiB of records on an HDD-like device (measured: slow or throttled random reads), 64 records
            otherwise.
        io_threads: concurrent reads (default 4; 2 on HDD-like devices). Each read is one whole segment: a
            stretch of the order holding consecutive records of one shard (up to 32 MiB on HDD-like devices,
            8 MiB otherwise), read once however many batches it spans.
        io: "buffered" (through the page cache), "direct" (O_DIRECT where the file system allows it, else
            buffered) or "auto" (default): direct when the shards are larger than half the memory available
            to the page cache (they cannot stay cached), buffered otherwise. ``loader.io`` and ``loader.io_reason``
            say what was picked and why.

    ``stats`` (dict, cumulative over every iteration of this loader; times in seconds):
        batches, samples, skipped: delivered batches and samples, records skipped with ``on_error="skip"``.
        wait_s: the consuming thread waiting for a batch (for its reads and decodes to finish).
        read_s: the reader thread obtaining each batch's records (waiting for its segment reads);
            read_bytes: bytes read from the shard files.
        decode_s: CRC checks, decode and transform (crop, resize, flip or the user's callable) together, summed
            over the decode threads (divide by ``threads`` for wall time); 0 with ``decode=False``.
        copy_s: the consuming thread moving each batch out of its slot: on CUDA, issuing the asynchronous
            host-to-device copy (pinned memory makes this short); on the CPU, handing the slot over (the
            batch is a view of its slot, lent until the consumer drops it; no copy).
        copy_device_s: CUDA only: the copies' own duration on the copy stream, measured with CUDA events
            (counted once a copy has finished; complete at the end of an epoch).
    """

    def __init__(self, path: str | os.PathLike[str], batch_size: int = 256, *, shuffle: bool = True,
                 seed: int = 0, order: str = "auto", transform: str | Callable[[np.ndarray], Any] | None = "train",
                 size: int = 224, device: str | torch.device | None = None, threads: int | None = None,
                 prefetch: int = 2, drop_last: bool = False, rank: int | None = None,
                 world_size: int | None = None, normalize: tuple[Any, Any] | None = None,
                 dtype: torch.dtype = torch.float32, output: str = "torch", on_error: str = "raise",
                 decode: bool = True, run: int | None = None, interleave: int = 4, window: int = 16,
                 io_threads: int | None = None, io: str = "auto") -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        if order not in ORDER_NAMES:
            raise ValueError(f"order must be one of {ORDER_NAMES}, not {order!r}")
        if isinstance(transform, str) and transform not in TRANSFORMS:
            raise ValueError(f"transform must be 'train', 'val', a callable or None, not {transform!r}")
        if decode and transform is None:
            raise ValueError("transform=None needs decode=False (raw records); pass transform='val' to decode")
        if size < 1 or prefetch < 1:
            raise ValueError(f"size and prefetch must be >= 1 (got size={size}, prefetch={prefetch})")
        if io not in ("auto", "buffered", "direct"):
            raise ValueError(f"io must be 'auto', 'buffered' or 'direct', not {io!r}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        if output not in ("torch", "numpy"):
            raise ValueError(f"output must be 'torch' or 'numpy', not {output!r}")
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype must be a float dtype for normalize, not {dtype}")

        self.source = open_source(path)
        problems = self.source.problems()
        if problems:
            self.source.close()
            raise problems[0]
        self.path = self.source.path
        self.table = self.source.table
        self.classes = list(self.source.classes)
        self.batch_size = batch_size
        self.seed = int(seed)
        self.size = size
        self.transform = transform
        self.decode = decode
        self.prefetch = prefetch
        self.drop_last = drop_last
        self.on_error = on_error
        self.output = output
        self.threads = threads or os.cpu_count() or 1
        self.shuffle = shuffle

        dist_rank, dist_world = _dist_rank_world()
        self.rank = dist_rank if rank is None else rank
        self.world_size = dist_world if world_size is None else world_size
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={self.rank}, world_size={self.world_size}")

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' but torch.cuda.is_available() is False; pass device='cpu'")
        if output == "numpy" and self.device.type != "cpu":
            raise ValueError("output='numpy' needs device='cpu'")
        self._cuda = self.device.type == "cuda"
        self._stream: Any = torch.cuda.Stream(self.device) if self._cuda else None  # type: ignore[no-untyped-call]

        self._norm: tuple[torch.Tensor, torch.Tensor] | None = None
        if normalize is not None:
            mean, std = (torch.as_tensor(v, dtype=torch.float32).reshape(1, -1, 1, 1) for v in normalize)
            self._norm = (mean.to(self.device, dtype), std.to(self.device, dtype))
        self.dtype = dtype

        lmdb = not self.source.spans
        shard_paths = self.source.files
        self.device_probe: dict[str, Any] | None = None
        if not lmdb and ((shuffle and order == "auto") or (order in ("auto", "shard_shuffle") and run is None)):
            self.device_probe = dict(probe_latency(shard_paths))
        hdd = self.device_probe is not None and is_hdd_like(self.device_probe)  # type: ignore[arg-type]
        if not shuffle:
            self.order, self.order_reason = "sequential", "shuffle=False"
        elif order != "auto":
            self.order, self.order_reason = order, "chosen by the caller"
        elif lmdb:
            self.order, self.order_reason = "random", "LMDB backend: records are read through a memory map"
        else:
            assert self.device_probe is not None
            self.order, self.order_reason = choose_order(self.device_probe, shard_paths)  # type: ignore[arg-type]
        mean_len = float(self.table.length.mean()) if self.table.n else 1.0
        if run is None:
            run = max(64, math.ceil((64 << 20) / max(mean_len, 1.0))) if hdd else 64
        self.order_kw = {"run": run, "interleave": interleave, "window": window}
        self.segment_bytes = (32 << 20) if hdd else (8 << 20)
        self._read_ahead = self.segment_bytes  # bytes of reads started beyond the batch being prepared
        # concurrent whole-segment reads: 2 keep an HDD streaming without making it seek between many
        # streams; fast devices (SSD, NVMe, network) want a deeper queue
        self.io_threads = io_threads or (2 if hdd else 4)
        self.io, self.io_reason = (("buffered", "LMDB backend: read through its memory map") if lmdb
                                   else choose_io(io, hdd, shard_paths))
        self.layout = Layout(self.table.starts)

        self._epoch = 0
        self._next_batch = 0
        self._share_cache: tuple[int, np.ndarray, Segments] | None = None
        # epoch -> [(world_size, ids read per rank)] of earlier world sizes this epoch was resumed from
        self._resplit: dict[int, list[tuple[int, int]]] = {}
        self._active: _Epoch | None = None
        self._ring: SlotRing | None = None
        self._buffers: BufferPool | None = None
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        #: Counters since construction (one writer: the consuming thread), see the class docstring.
        self.stats: dict[str, float] = {"batches": 0, "samples": 0, "skipped": 0, "wait_s": 0.0,
                                        "read_s": 0.0, "read_bytes": 0, "decode_s": 0.0, "copy_s": 0.0,
                                        "copy_device_s": 0.0}

    # -- sizes ----------------------------------------------------------------------------------------------
    @property
    def per_rank(self) -> int:
        """Samples this rank sees per epoch (equal for every rank)."""
        n, w = self.table.n, self.world_size
        return n // w if self.drop_last else math.ceil(n / w)

    def __len__(self) -> int:
        """Batches per epoch for this rank (of the current epoch: fewer in an epoch resumed from a state saved
        with another world size, which continues with only what the old ranks had not read)."""
        if self._resplit.get(self._epoch):
            return math.ceil(len(self._share(self._epoch)) / self.batch_size)
        k = self.per_rank
        return k // self.batch_size if self.drop_last else math.ceil(k / self.batch_size)

    @property
    def memory_bytes(self) -> int:
        """Upper bound of the batch memory the pipeline holds: (prefetch + 2) x (images + labels + the batch's
        record bytes + two partly used read segments), plus the segments read ahead (up to ``segment_bytes``
        and one record)."""
        longest = int(self.table.length.max(initial=0))
        per = self.batch_size * 8 + self.batch_size * longest + 2 * self.segment_bytes
        if self.decode:
            per += self.batch_size * 3 * self.size * self.size
        return (self.prefetch + 2) * per + self.segment_bytes + longest

    # -- epochs and state --------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (the order changes with it). A different epoch starts from its first batch."""
        if epoch != self._epoch:
            self._epoch = int(epoch)
            self._next_batch = 0

    @property
    def epoch(self) -> int:
        return self._epoch

    def state_dict(self) -> dict[str, Any]:
        """Where this loader is: resuming from it yields exactly the batches an uninterrupted run would have.

        The state is the same on every rank except ``rank``, so any rank's copy resumes all of them."""
        return {"version": _STATE_VERSION, "epoch": self._epoch, "batch": self._next_batch, "seed": self.seed,
                "order": self.order, "batch_size": self.batch_size, "rank": self.rank,
                "world_size": self.world_size, "records": self.table.n, "drop_last": self.drop_last,
                "order_kw": dict(self.order_kw),
                "resplit": [list(x) for x in self._resplit.get(self._epoch, [])]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state`` (from :meth:`state_dict`); the next iteration starts at the next unseen batch.

        With the same world size the batches are exactly those an uninterrupted run would have yielded. With
        another world size (more or fewer processes) the rest of the saved epoch is what the old ranks had
        not read, re-split over the new ranks: every sample is still read exactly once that epoch (plus the
        usual padding of fewer than ``world_size`` repeats), in different batches; later epochs are as usual
        for the new world size. This needs every old rank to have been at the same batch (synchronous
        data-parallel training is)."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"loader state version {state.get('version')!r} is not {_STATE_VERSION}")
        for key, mine in (("records", self.table.n), ("batch_size", self.batch_size), ("seed", self.seed),
                          ("order", self.order), ("drop_last", self.drop_last), ("order_kw", self.order_kw)):
            if state.get(key) != mine:
                raise ValueError(f"cannot resume: the saved loader had {key}={state.get(key)!r}, this one has "
                                 f"{mine!r}; create the Loader with the same settings (and order=) to resume")
        epoch, batch, world = int(state["epoch"]), int(state["batch"]), int(state["world_size"])
        history = [(int(w), int(d)) for w, d in state.get("resplit", [])]
        if world != self.world_size and batch > 0:  # continue with what the old ranks had not read
            history.append((world, batch * self.batch_size))
            batch = 0
        self._resplit = {epoch: history} if history else {}
        self._share_cache = None
        self._epoch = epoch
        self._next_batch = batch

    # -- planning (pure) ---------------------------------------------------------------------------------------
    def _plan(self, epoch: int) -> tuple[np.ndarray, Segments]:
        """This rank's order for ``epoch`` and its read segments (computed once per epoch)."""
        cached = self._share_cache
        if cached is None or cached[0] != epoch:
            order = ORDERS[self.order](self.layout, self.seed, epoch, **self.order_kw)
            for world, done in self._resplit.get(epoch, []):  # resumed from a state saved with another world
                order = rank_remaining(order, world, done, drop_last=self.drop_last)
            share = rank_share(order, self.rank, self.world_size, epoch, drop_last=self.drop_last)
            if self.drop_last:
                share = share[:len(share) // self.batch_size * self.batch_size]
            cached = (epoch, share, plan_segments(share, self.table, self.segment_bytes))
            self._share_cache = cached
        return cached[1], cached[2]

    def _share(self, epoch: int) -> np.ndarray:
        return self._plan(epoch)[0]

    def _batch_perm(self, epoch: int, b: int, n: int) -> np.ndarray | None:
        if self.order == "sequential":
            return None
        return np.random.default_rng([self.seed, epoch, b, _TAG_BATCH_SHUFFLE]).permutation(n)

    def batch_ids(self, epoch: int, b: int) -> np.ndarray:
        """Global record ids of batch ``b`` of ``epoch`` for this rank, in delivery order (pure)."""
        share = self._share(epoch)
        ids = share[b * self.batch_size:(b + 1) * self.batch_size]
        perm = self._batch_perm(epoch, b, len(ids))
        return ids if perm is None else ids[perm]

    def _params(self, epoch: int, b: int, ids: np.ndarray) -> np.ndarray | None:
        w, h = self.table.width[ids], self.table.height[ids]
        if self.transform == "train":
            rng = np.random.default_rng([self.seed, epoch, b, _TAG_PARAMS])
            return train_params(rng, w, h)
        if self.transform == "val":
            return val_params(w, h, self.size)
        return None

    # -- iteration ---------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        with self._lock:
            if self._active is not None:
                self._active.close()
            run = _Epoch(self, self._epoch, self._next_batch)
            self._active = run
        try:
            for b, batch in run:
                self._next_batch = b + 1
                yield batch
            self._next_batch = 0  # the epoch is complete; the same epoch again starts from its beginning
            if self._resplit.pop(run.epoch, None):
                self._share_cache = None
        finally:
            run.close()
            with self._lock:
                if self._active is run:
                    self._active = None

    def close(self) -> None:
        """Stop and join every thread of an iteration in progress (also done by break, errors and GC), and
        free the batch slots and read buffers (a later iteration allocates them again)."""
        with self._lock:
            run, self._active = self._active, None
        if run is not None:
            run.close()
        with self._lock:
            self._ring = self._buffers = None

    def _memory(self) -> tuple[SlotRing, BufferPool]:
        """The slot ring and read-buffer pool, made once and kept across epochs: fresh ones every epoch would
        fault in ~150 MB of new pages each time (4 slots of 256 x 224 x 224 x 3). Called with _lock held."""
        if self._ring is None or self._buffers is None:
            shape = (3, self.size, self.size) if self.decode else None
            self._ring = SlotRing(self.prefetch + 2, self.batch_size, shape, pin=self._cuda)
            # read buffers, reused once no view of them is left; free ones kept up to ~2 batches' worth
            self._buffers = BufferPool(2 * (self.batch_size * int(self.table.length.max(initial=0))
                                            + 2 * self.segment_bytes))
        return self._ring, self._buffers


    def __repr__(self) -> str:
        return (f"<recpack.Loader {self.path!r}: {self.table.n} records, {len(self)} batches of "
                f"{self.batch_size}, order={self.order}, device={self.device}, rank {self.rank}/{self.world_size}>")

    # -- error policy ------------------------------------------------------------------------------------------
    def _bad(self, exc: RecpackError, shard: str) -> None:
        if self.on_error == "raise":
            raise exc
        self.stats["skipped"] += 1
        if shard not in self._warned:
            self._warned.add(shard)
            warnings.warn(f"skipping bad record ({exc}); further ones in {shard} are counted in "
                          "loader.stats['skipped'] — run `recpack verify` for the full list", RuntimeWarning,
                          stacklevel=4)


class _Epoch(Closing):
    """One pass over the batches of an epoch: owns the slot ring, decode pool, open files and reader thread."""

    def __init__(self, loader: Loader, epoch: int, start: int) -> None:
        self.L = loader
        self.epoch = epoch
        self.start = start
        self.ring, self.buffers = loader._memory()
        source = loader.source
        self.files = source.open_files(direct=loader.io == "direct",
                                       advice="RANDOM" if loader.order == "random" else "SEQUENTIAL"
                                       ) if source.spans else None
        self.pool: ThreadPoolExecutor | None = ThreadPoolExecutor(loader.threads,
                                                                  thread_name_prefix="recpack-decode")
        self.io = ThreadPoolExecutor(loader.io_threads, thread_name_prefix="recpack-io")
        self._cache: dict[int, tuple[np.ndarray, int]] = {}
        self._pending: dict[int, Future[Any]] = {}  # segment -> the read task that brings it (with others)
        self._copies: list[tuple[Any, Any]] = []  # CUDA (start, end) events of copies not yet counted
        self._closed = False
        self.pf = Prefetcher(self._produce, range(start, len(loader)), self.ring, loader.prefetch)

    # reader thread ------------------------------------------------------------------------------------------
    def _produce(self, b: int, slot: Slot, stop: threading.Event) -> tuple[int, list[Future[Any]], Any]:
        L, t = self.L, self.L.table
        share, segs = L._plan(self.epoch)
        lo, hi = b * L.batch_size, min((b + 1) * L.batch_size, len(share))
        pos_ids = share[lo:hi]
        perm = L._batch_perm(self.epoch, b, hi - lo)
        ids = pos_ids if perm is None else pos_ids[perm]
        n = len(ids)
        slot.labels[:n] = torch.from_numpy(t.label[ids])
        t0 = time.perf_counter()
        views: list[Any]
        if self.files is not None:
            views = self._read(share, segs, lo, hi, stop)
            if perm is not None:
                views = [views[i] for i in perm.tolist()]
        else:
            views = [None] * n
        L.stats["read_s"] += time.perf_counter() - t0
        assert self.pool is not None
        step = max(1, math.ceil(n / (L.threads * 4)))
        if not L.decode:  # CRC checks and copies run on the pool, overlapping the next batch's reads
            return n, [self.pool.submit(self._raw, ids[i:i + step], views[i:i + step])
                       for i in range(0, n, step)], True
        params = L._params(self.epoch, b, ids)
        assert slot.images is not None
        futures = [self.pool.submit(self._decode, slot.images, ids[i:i + step], views[i:i + step], params, i)
                   for i in range(0, n, step)]
        return n, futures, None

    def _submit(self, spans: list[tuple[int, int, int]], share: np.ndarray) -> None:
        """Start reading segments (k, first_pos, end_pos) in up to ``io_threads`` tasks of consecutive ones."""
        if not spans:
            return
        per = -(-len(spans) // self.L.io_threads)
        for i in range(0, len(spans), per):
            group = spans[i:i + per]
            future = self.io.submit(self._read_segments, share, group)
            for k, _, _ in group:
                self._pending[k] = future

    def _read_segments(self, share: np.ndarray, spans: list[tuple[int, int, int]]) -> list[tuple[int, Any, int, int]]:
        """Read segments given as (k, first_pos, end_pos): the records at positions [first_pos, end_pos),
        consecutive records of one shard, each with one aligned request, all into one pooled buffer (many
        small segments -- a random order's single records -- then cost one buffer and one task, not one
        each). Returns (k, the segment's slice of the buffer, file offset its byte 0 stands for, bytes read)."""
        t, files = self.L.table, self.files
        assert files is not None
        plan = []
        total = 0
        for k, first_pos, end_pos in spans:
            a, z = int(share[first_pos]), int(share[end_pos - 1])
            begin, end = int(t.offset[a]), int(t.offset[z]) + int(t.length[z])
            room = -(-(end - begin + 2 * ALIGN) // ALIGN) * ALIGN  # the aligned span always fits
            plan.append((k, int(t.shard[a]), begin, end, total, room))
            total += room
        buf = self.buffers.take(total)
        out = []
        for k, shard, begin, end, at, room in plan:
            f = files.acquire(shard)
            try:
                pos, nread = read_into(f, buf, at, begin, end)  # type: ignore[arg-type]
            finally:
                files.release(shard)
            out.append((k, buf[at:at + room], begin - (pos - at), nread))
        return out

    def _read(self, share: np.ndarray, segs: Segments, lo: int, hi: int,
              stop: threading.Event) -> list[memoryview]:
        """Views of the records at positions [lo, hi), in position order. Segments not in the cache are read
        whole (from the first position still needed), concurrently on the I/O pool in up to ``io_threads``
        tasks of consecutive segments, and kept until consumed. Reads of the segments after the batch, up to
        ``segment_bytes`` of them, are started too, so the device always has the next request queued and
        never idles between batches (worth several % of an HDD's sequential rate)."""
        t = self.L.table
        first, last = int(segs.of_pos[lo]), int(segs.of_pos[hi - 1])
        for k in [k for k in self._cache if k < first]:  # fully consumed (positions only move forward)
            del self._cache[k]
        self._submit([(k, max(int(segs.start[k]), lo), int(segs.start[k + 1])) for k in range(first, last + 1)
                      if k not in self._cache and k not in self._pending], share)
        ahead, k, budget = [], last + 1, self.L._read_ahead
        while budget > 0 and k < segs.count:
            a, b = int(segs.start[k]), int(segs.start[k + 1])
            if k not in self._cache and k not in self._pending:
                ahead.append((k, a, b))
            budget -= int(t.length[share[a:b]].sum())
            k += 1
        self._submit(ahead, share)
        for k in range(first, last + 1):
            while k not in self._cache:
                if stop.is_set():
                    raise Stopped
                for kk, buf, base, nread in self._pending[k].result():
                    self._pending.pop(kk, None)
                    self._cache[kk] = (buf, base)
                    self.L.stats["read_bytes"] += nread
        views: list[memoryview] = []
        seg_of = segs.of_pos[lo:hi].tolist()
        offsets = t.offset[share[lo:hi]].astype(np.int64).tolist()
        lengths = t.length[share[lo:hi]].astype(np.int64).tolist()
        for k, off, ln in zip(seg_of, offsets, lengths):
            buf, base = self._cache[k]
            views.append(memoryview(buf)[off - base:off - base + ln])  # type: ignore[arg-type]
        return views

    def _where(self, gid: int) -> tuple[str, int]:
        return self.L.source.where(gid)

    def _payload(self, gid: int, view: Any) -> Any:
        if view is None:
            return self.L.source.fetch(gid)
        return self.L.source.payload(gid, view)

    def _raw(self, ids: np.ndarray, views: list[Any]) -> list[Any]:
        """Checked image bytes. Shard records are zero-copy memoryviews into the read buffers, which are reused
        only once no view of them is left (BufferPool), so a view stays valid for as long as the caller keeps
        it."""
        out: list[Any] = []
        for gid, view in zip(ids.tolist(), views):
            try:
                out.append(self._payload(gid, view))
            except CorruptRecord as exc:
                out.append(exc)
        return out

    # decode threads -----------------------------------------------------------------------------------------
    def _decode(self, images: torch.Tensor, ids: np.ndarray, views: list[Any], params: np.ndarray | None,
                first: int) -> tuple[list[tuple[int, int, RecpackError]], float]:
        t0 = time.perf_counter()
        errors: list[tuple[int, int, RecpackError]] = []
        fn = self.L.transform
        for k, (gid, view) in enumerate(zip(ids.tolist(), views)):
            pos = first + k
            try:
                data = self._payload(gid, view)
                if callable(fn):
                    apply_user_transform(fn, decode_rgb(data), images[pos])
                else:
                    assert params is not None
                    decode_crop_resize(data, params[pos], images[pos])
            except CorruptRecord as exc:
                errors.append((pos, gid, exc))
            except DecodeError as exc:
                errors.append((pos, gid, self._decode_error(gid, view, exc)))
        return errors, time.perf_counter() - t0  # the consumer adds the time: stats have one writer

    def _decode_error(self, gid: int, view: Any, exc: DecodeError) -> DecodeError:
        shard, offset = self._where(gid)
        key = None
        if view is not None:
            try:
                from .format import RECORD_HEADER_SIZE, decode_record_header

                meta_len, _, _ = decode_record_header(view[:RECORD_HEADER_SIZE], shard, offset)
                key = decode_meta(view[RECORD_HEADER_SIZE:RECORD_HEADER_SIZE + meta_len], shard, offset)["key"]
            except RecpackError:
                pass
        return DecodeError(f"image does not decode: {exc.message}", key=key, shard=shard, offset=offset)

    # consumer -----------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[int, Any]]:
        L = self.L
        while True:
            t0 = time.perf_counter()
            item = self.pf.get()
            if item is None:
                self._count_copies(wait=True)
                return
            b, slot, (n, futures, is_raw) = item
            try:
                done = [f.result() for f in futures]
                if is_raw:
                    results = [r for part in done for r in part]
                else:
                    results = [e for errs, _ in done for e in errs]
                    L.stats["decode_s"] += sum(dt for _, dt in done)
                L.stats["wait_s"] += time.perf_counter() - t0
                batch = self._deliver(slot, n, [] if is_raw else results, results if is_raw else None)
            except BaseException:
                self.ring.release(slot)
                raise
            L.stats["batches"] += 1
            yield b, batch

    def _deliver(self, slot: Slot, n: int, errors: list[tuple[int, int, RecpackError]], raw: Any) -> Any:
        L = self.L
        keep: torch.Tensor | None = None
        if raw is not None:  # decode=False: the checked record bytes themselves
            good = []
            for pos, item in enumerate(raw):
                if isinstance(item, CorruptRecord):
                    L._bad(item, os.path.basename(item.shard))
                else:
                    good.append(pos)
            labels = slot.labels.index_select(0, torch.as_tensor(good, dtype=torch.long))
            self.ring.release(slot)
            L.stats["samples"] += len(good)
            return [raw[i] for i in good], (labels.numpy() if L.output == "numpy" else labels)
        if errors:
            for _, _, exc in sorted(errors, key=lambda e: e[0]):
                L._bad(exc, os.path.basename(getattr(exc, "shard", None) or "data.mdb"))
            bad_pos = {p for p, _, _ in errors}
            keep = torch.as_tensor([i for i in range(n) if i not in bad_pos], dtype=torch.long)
        assert slot.images is not None
        images = slot.images[:n] if keep is None else slot.images.index_select(0, keep)
        labels = slot.labels[:n] if keep is None else slot.labels.index_select(0, keep)
        L.stats["samples"] += images.shape[0]
        t0 = time.perf_counter()
        if L._cuda:
            images, labels = self._to_device(slot, images, labels)
            self.ring.release(slot)
        elif keep is None:  # no copy: the batch is the slot, back in the ring once the consumer drops it
            images, labels = self.ring.lend(slot, n)
        else:  # index_select made copies
            self.ring.release(slot)
        L.stats["copy_s"] += time.perf_counter() - t0
        if L._norm is not None:
            mean, std = L._norm
            images = (images.to(L.dtype) - mean) / std
        if L.output == "numpy":
            return images.numpy(), labels.numpy()
        return images, labels

    def _to_device(self, slot: Slot, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        L = self.L
        stream = L._stream
        self._count_copies(wait=False)
        with torch.cuda.stream(stream):
            # allocated on the side stream, so the copy never races with compute still using freed memory
            dev_images = torch.empty(images.shape, dtype=images.dtype, device=L.device)
            dev_labels = torch.empty(labels.shape, dtype=labels.dtype, device=L.device)
            start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            start.record(stream)
            dev_images.copy_(images, non_blocking=True)
            dev_labels.copy_(labels, non_blocking=True)
            event = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            event.record(stream)
        self._copies.append((start, event))
        current = torch.cuda.current_stream(L.device)
        current.wait_event(event)
        dev_images.record_stream(current)  # the allocator must wait for the consumer's use before reuse
        dev_labels.record_stream(current)
        slot.event = event  # the reader waits for it before refilling this slot
        return dev_images, dev_labels

    def _count_copies(self, wait: bool) -> None:
        """Add the duration of finished device copies to ``stats["copy_device_s"]`` (they finish in order on
        the one copy stream); with ``wait``, wait for the outstanding ones first (end of an epoch)."""
        while self._copies:
            start, end = self._copies[0]
            if wait:
                end.synchronize()
            elif not end.query():
                return
            self.L.stats["copy_device_s"] += start.elapsed_time(end) / 1e3
            self._copies.pop(0)

    # shutdown -----------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        left = self.pf.close()
        for _, _, (_, futures, _) in left:
            for f in futures:
                f.cancel()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        self.io.shutdown(wait=True, cancel_futures=True)
        self._cache.clear()
        self._pending.clear()
        self._copies.clear()
        for _, slot, _ in left:
            self.ring.release(slot)
        if self.files is not None:
            self.files.close()
        self.L.source.close()

