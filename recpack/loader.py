"""``recpack.Loader``: the part users put in their training loop.

::

    loader = recpack.Loader("data/train", batch_size=256, shuffle=True, seed=0,
                            transform="train", size=224, device="cuda")
    for epoch in range(90):
        loader.set_epoch(epoch)
        for images, labels in loader:   # images: uint8 (B,3,224,224) on the device, labels: int64
            ...

The Loader holds the options (:class:`~recpack.loaderconfig.LoaderConfig`, checked once), the dataset's
record source (:mod:`recpack.backends`), the decisions ``auto`` makes (order and io mode, from a device
probe: :mod:`recpack.probe`), the position in the epoch (``state_dict``) and the statistics. Each iteration
runs an :class:`~recpack.epoch.Epoch`: threads that run the pipeline steps of :mod:`recpack.steps`:

1. **Order** (pure): the epoch's sample order from ``(table, seed, epoch)``, this rank's share, batches.
2. **Read** (``io_threads``): stretches of consecutive records of one file (*segments*), each with one large
   aligned read, kept until every batch that needs them has been prepared.
3. **Check and decode** (``threads``; libjpeg-turbo and torch release the GIL): each record is checked by its
   backend, decoded, cropped, resized and flipped straight into a preallocated (pinned) batch slot.
4. **Deliver**: bad records dropped (or raised), the slot copied to the device with ``non_blocking=True`` on a
   side CUDA stream; without CUDA the slot itself is lent to the consumer (no copy).

Memory is bounded and constant across epochs; see :attr:`Loader.memory_bytes`.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from .backends import open_source
from .batch import SlotRing
from .buffers import BufferPool
from .closing import Closing
from .epoch import Epoch
from .errors import RecpackError
from .loaderconfig import ORDER_NAMES, TRANSFORMS, LoaderConfig, resolve_device
from .probe import choose_io, choose_order, is_hdd_like, probe_latency
from .steps import EpochPlan, batch_perm, plan_epoch

__all__ = ["Loader", "ORDER_NAMES", "TRANSFORMS"]

_STATE_VERSION = 1


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class Loader(Closing):
    """Batches of decoded images (or raw records) from a recpack dataset, prepared ahead on threads.

    Args:
        path: a dataset folder written by ``recpack pack`` (shard or LMDB backend), or a file a backend reads
            in place (an MXNet ``.rec``); see :mod:`recpack.backends`.
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
        prefetch: batches prepared ahead (1..64). Pinned memory = (prefetch + 2) x batch bytes.
        drop_last: drop the last partial batch and, across ranks, the remainder instead of padding.
        rank, world_size: this process's share; default from ``torch.distributed`` when initialised.
        normalize: None, or (mean, std) per channel in 0..255 units: images become ``dtype`` on the device,
            (x - mean) / std, computed on the device.
        dtype: float dtype for ``normalize`` (torch.float32 or torch.float16).
        output: "torch" or "numpy" (numpy needs a CPU device).
        on_error: "raise" (default): a corrupt record raises :class:`CorruptRecord` naming shard, offset and
            key, an undecodable image :class:`DecodeError`; "skip": skip it (the batch is one shorter), count
            it in ``stats`` and warn once per file.
        decode: False yields (list of the stored image bytes, labels) without decoding: raw-read throughput.
            Items are zero-copy, CRC-checked ``memoryview`` s into read buffers (``bytes(x)`` copies one out).
        run, interleave, window: shard_shuffle parameters (records per run, shards interleaved, runs a run
            may move); see :func:`recpack.order.order_shard_shuffle`. ``run=None`` sizes runs by the device:
            ~64 MiB of records on an HDD-like device (measured: slow or throttled random reads), 64 records
            otherwise. Ranks must agree on these choices: with ``torch.distributed`` initialised, rank 0's
            probe decides for all; ranks without it do not probe (order "shard_shuffle", runs of 64).
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
        cfg = LoaderConfig(batch_size, shuffle, seed, order, transform, size, device, threads, prefetch,  # type: ignore[arg-type]
                           drop_last, rank, world_size, normalize, dtype, output, on_error, decode, run,
                           interleave, window, io_threads, io)
        self.config = cfg
        self.device = resolve_device(device)
        if cfg.output == "numpy" and self.device.type != "cpu":
            raise ValueError("output='numpy' needs device='cpu'")
        dist_rank, dist_world = _dist_rank_world()
        self.rank = dist_rank if cfg.rank is None else cfg.rank
        self.world_size = dist_world if cfg.world_size is None else cfg.world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={self.rank}, world_size={self.world_size}")

        self.source = open_source(path)
        problems = self.source.problems()
        if problems:
            self.source.close()
            raise problems[0]
        self.path = self.source.path
        self.table = self.source.table
        self.classes = list(self.source.classes)

        self._stream: Any = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None  # type: ignore[no-untyped-call]
        self._norm: tuple[torch.Tensor, torch.Tensor] | None = None
        if cfg.normalize is not None:
            mean, std = (torch.as_tensor(v, dtype=torch.float32).reshape(1, -1, 1, 1) for v in cfg.normalize)
            self._norm = (mean.to(self.device, cfg.dtype), std.to(self.device, cfg.dtype))
        self._decide_reads()

        self._epoch = 0
        self._next_batch = 0  # the next batch to deliver (what state_dict reports)
        self._resume = False  # load_state_dict ran: the next iteration starts at _next_batch, not at 0
        self._whole_batches = cfg.drop_last  # drop_last also drops the last partial batch (not in LoaderDataset)
        self._pid = os.getpid()
        self._plan_cache: EpochPlan | None = None
        # epoch -> [(world_size, ids read per rank)] of earlier world sizes this epoch was resumed from
        self._resplit: dict[int, list[tuple[int, int]]] = {}
        self._active: Epoch | None = None
        self._ring: SlotRing | None = None
        self._buffers: BufferPool | None = None
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        #: Counters since construction (one writer: the consuming thread), see the class docstring.
        self.stats: dict[str, float] = {"batches": 0, "samples": 0, "skipped": 0, "wait_s": 0.0,
                                        "read_s": 0.0, "read_bytes": 0, "decode_s": 0.0, "copy_s": 0.0,
                                        "copy_device_s": 0.0}

    def _decide_reads(self) -> None:
        """Order, run length, segment size, read concurrency and io mode: from the caller, else from a probe of
        the storage (HDD-like devices want large sequential reads; data larger than the page cache direct I/O)."""
        cfg, spans, files = self.config, self.source.spans, self.source.files
        self.device_probe: dict[str, Any] | None = None
        wants_probe = spans and ((cfg.shuffle and cfg.order == "auto")
                                 or (cfg.order in ("auto", "shard_shuffle") and cfg.run is None))
        # Every rank must make the same choices, or their shares of the epoch would overlap and miss records.
        # Timings differ between processes, so a probe is shared: rank 0's, through torch.distributed; ranks
        # that cannot communicate use the device-independent defaults instead of probing.
        shared = self.world_size > 1
        dist = shared and torch.distributed.is_available() and torch.distributed.is_initialized()
        if wants_probe and (not shared or dist):
            probe = [dict(probe_latency(files)) if not dist or self.rank == 0 else None]
            if dist:
                torch.distributed.broadcast_object_list(probe, src=0)
            self.device_probe = probe[0]
        hdd = self.device_probe is not None and is_hdd_like(self.device_probe)  # type: ignore[arg-type]
        if not cfg.shuffle:
            self.order, self.order_reason = "sequential", "shuffle=False"
        elif cfg.order != "auto":
            self.order, self.order_reason = cfg.order, "chosen by the caller"
        elif not spans:
            self.order, self.order_reason = "random", f"{self.source.kind} backend: records are read one by one"
        elif self.device_probe is None:
            self.order, self.order_reason = "shard_shuffle", (
                f"{self.world_size} ranks without torch.distributed cannot share a device probe, so every rank "
                "picks shard_shuffle, safe on any storage (pass order= to choose)")
        else:
            assert self.device_probe is not None
            self.order, self.order_reason = choose_order(self.device_probe, files)  # type: ignore[arg-type]
        mean_len = float(self.table.length.mean()) if self.table.n else 1.0
        run = cfg.run
        if run is None:
            run = max(64, math.ceil((64 << 20) / max(mean_len, 1.0))) if hdd else 64
        self.order_kw = {"run": run, "interleave": cfg.interleave, "window": cfg.window}
        #: bytes per segment read, and bytes of reads started beyond the batch being prepared
        self.segment_bytes = (32 << 20) if hdd else (8 << 20)
        # concurrent whole-segment reads: 2 keep an HDD streaming without making it seek between many
        # streams; fast devices (SSD, NVMe, network) want a deeper queue
        self.io_threads = cfg.io_threads or (2 if hdd else 4)
        if spans:
            self.io, self.io_reason = choose_io(cfg.io, hdd, files)
        else:
            self.io, self.io_reason = "buffered", f"{self.source.kind} backend: read through its own cache"

    # -- options, read back ----------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def size(self) -> int:
        return self.config.size

    @property
    def threads(self) -> int:
        return self.config.decode_threads

    @property
    def drop_last(self) -> bool:
        return self.config.drop_last

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
            return math.ceil(len(self._plan(self._epoch).share) / self.batch_size)
        k = self.per_rank
        return k // self.batch_size if self._whole_batches else math.ceil(k / self.batch_size)

    @property
    def _slot_batch(self) -> int:
        """Samples per slot: the batch size, or fewer when a rank's whole epoch is smaller than one batch."""
        return max(1, min(self.batch_size, self.per_rank))

    @property
    def memory_bytes(self) -> int:
        """Upper bound of the batch memory the pipeline holds: (prefetch + 2) x (images + labels + the batch's
        record bytes + two partly used read segments), plus the segments read ahead (up to ``segment_bytes``
        and one record)."""
        longest = int(self.table.length.max(initial=0))
        b = self._slot_batch
        per = b * 8 + b * longest + 2 * self.segment_bytes
        if self.config.decode:
            per += b * 3 * self.size * self.size
        return (self.config.prefetch + 2) * per + self.segment_bytes + longest

    # -- epochs and state --------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (the order changes with it). A different epoch starts from its first batch; the
        same epoch keeps a position just loaded with :meth:`load_state_dict`. Without calls to set_epoch,
        each completed pass moves on to the next epoch (a new order, like a DataLoader with shuffle=True)."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0, not {epoch!r}")
        if epoch != self._epoch:
            self._epoch = int(epoch)
            self._next_batch = 0
            self._resume = False

    @property
    def epoch(self) -> int:
        return self._epoch

    def state_dict(self) -> dict[str, Any]:
        """Where this loader is: resuming from it yields exactly the batches an uninterrupted run would have.
        Taken mid-epoch it names the next batch; taken after a completed epoch, the start of the next epoch.

        The state is the same on every rank except ``rank``, so any rank's copy resumes all of them."""
        return {"version": _STATE_VERSION, "epoch": self._epoch, "batch": self._next_batch, "seed": self.seed,
                "order": self.order, "batch_size": self.batch_size, "rank": self.rank,
                "world_size": self.world_size, "records": self.table.n, "dataset": self.source.dataset_id,
                "drop_last": self.drop_last,
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
        if state.get("dataset", self.source.dataset_id) != self.source.dataset_id:
            raise ValueError(f"cannot resume: the state was saved on another dataset (id {state.get('dataset')!r}, "
                             f"this one is {self.source.dataset_id!r}); open the dataset the state was saved on")
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
        self._plan_cache = None
        self._epoch = epoch
        self._next_batch = batch
        self._resume = True

    # -- planning (pure) ---------------------------------------------------------------------------------------
    def _plan(self, epoch: int) -> EpochPlan:
        """This rank's order for ``epoch`` and its read segments (computed once per epoch)."""
        plan = self._plan_cache
        if plan is None or plan.epoch != epoch:
            plan = plan_epoch(self.table, self.order, self.seed, epoch, self.order_kw, self.rank, self.world_size,
                              self.drop_last, self.batch_size, self._resplit.get(epoch, []), self.segment_bytes,
                              whole_batches=self._whole_batches)
            self._plan_cache = plan
        return plan

    def batch_ids(self, epoch: int, b: int) -> np.ndarray:
        """Global record ids of batch ``b`` of ``epoch`` for this rank, in delivery order (pure)."""
        share = self._plan(epoch).share
        ids = share[b * self.batch_size:(b + 1) * self.batch_size]
        perm = batch_perm(self.seed, epoch, b, len(ids), self.order)
        return ids if perm is None else ids[perm]

    # -- iteration ---------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        """One pass over the current epoch, like iterating a torch DataLoader: each ``iter()`` starts at the
        epoch's first batch, except right after :meth:`load_state_dict`, which resumes at the saved batch. A
        completed pass moves the loader to the next epoch. Only one pass runs at a time: a second iterator
        started while another is suspended mid-epoch raises (close the first, e.g. ``it.close()``)."""
        self._check_process()
        start = self._next_batch if self._resume else 0
        with self._lock:
            if self._active is not None:
                raise RuntimeError("this Loader is already being iterated by another iterator that has not "
                                   "finished; break out of its loop or call its close() first, or use a "
                                   "second Loader for a second stream of batches")
            self._resume = False
            self._next_batch = start
            run = Epoch(self, self._epoch, start)
            self._active = run
        try:
            for b, batch in run:
                self._next_batch = b + 1
                yield batch
            self._next_batch = 0  # the epoch is complete: the next pass (and state) is the next epoch
            if self._resplit.pop(run.epoch, None):
                self._plan_cache = None
            self._epoch = run.epoch + 1
        finally:
            run.close()
            with self._lock:
                if self._active is run:
                    self._active = None

    def _check_process(self) -> None:
        """In a process forked from the one that made this Loader, start afresh: the parent's threads do not
        exist here and its locks may be held forever. CUDA cannot be used after a fork at all."""
        if os.getpid() == self._pid:
            return
        if self.device.type == "cuda":
            raise RuntimeError("this Loader (device=cuda) was created before this process was forked; CUDA cannot "
                               "be used in a forked child: create the Loader in the child, or start processes "
                               "with the 'spawn' method")
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._active = None  # its threads live in the parent only
        self._ring = self._buffers = None
        self.source.after_fork()

    def close(self) -> None:
        """Stop and join every thread of an iteration in progress (also done by break, errors and GC), and
        free the batch slots and read buffers (a later iteration allocates them again)."""
        self._check_process()
        with self._lock:
            run, self._active = self._active, None
        if run is not None:
            run.close()
        with self._lock:
            self._ring = self._buffers = None
        self.source.close()

    def _memory(self) -> tuple[SlotRing, BufferPool]:
        """The slot ring and read-buffer pool, made once and kept across epochs: fresh ones every epoch would
        fault in ~150 MB of new pages each time (4 slots of 256 x 224 x 224 x 3). Called with _lock held."""
        if self._ring is None or self._buffers is None:
            shape = (3, self.size, self.size) if self.config.decode else None
            self._ring = SlotRing(self.config.prefetch + 2, self._slot_batch, shape,
                                  pin=self.device.type == "cuda")
            # read buffers, reused once no view of them is left; free ones kept up to ~2 batches' worth
            self._buffers = BufferPool(2 * (self._slot_batch * int(self.table.length.max(initial=0))
                                            + 2 * self.segment_bytes))
        return self._ring, self._buffers

    def __repr__(self) -> str:
        return (f"<recpack.Loader {self.path!r}: {self.table.n} records, {len(self)} batches of "
                f"{self.batch_size}, order={self.order}, device={self.device}, rank {self.rank}/{self.world_size}>")

    # -- error policy ------------------------------------------------------------------------------------------
    def _bad(self, exc: RecpackError) -> None:
        """A record that cannot be delivered: raise it (on_error="raise"), or count it and warn once per file."""
        if self.config.on_error == "raise":
            raise exc
        self.stats["skipped"] += 1
        where = os.path.basename(getattr(exc, "shard", None) or getattr(exc, "path", None) or str(self.path))
        if where not in self._warned:
            self._warned.add(where)
            warnings.warn(f"skipping bad record ({exc}); further ones in {where} are counted in "
                          "loader.stats['skipped'] — run `recpack verify` for the full list", RuntimeWarning,
                          stacklevel=5)
