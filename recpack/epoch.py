"""One pass over an epoch's batches: the threads, queues and segment cache that run :mod:`recpack.steps`.

- one ``recpack-reader`` thread (:class:`~recpack.prefetch.Prefetcher`) plans each batch, waits for its
  segments and submits its decode tasks, ``prefetch`` batches ahead;
- ``io_threads`` ``recpack-io`` threads read whole segments (each read once, however many batches it spans,
  kept until consumed) and start the reads after the batch being prepared, so the device always has the next
  request queued;
- ``threads`` ``recpack-decode`` threads check and decode records into the batch's slot (libjpeg-turbo and
  torch release the GIL);
- the consumer (the training loop's thread) takes batches in order, drops bad records, copies to the device.

Everything stops and is joined on :meth:`Epoch.close` (called by the Loader when iteration ends, breaks,
raises or is garbage-collected); an error on any thread reaches the consumer.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
import torch

from .backends import RecordSource
from .batch import Slot, SlotRing
from .buffers import BufferPool
from .closing import Closing
from .errors import CorruptRecord, RecpackError
from .prefetch import Prefetcher, Stopped
from .steps import (
    EpochPlan,
    batch_bounds,
    batch_perm,
    check_records,
    crop_params,
    decode_records,
    keep_good,
    read_segments,
    record_views,
    to_device,
)

from .loaderconfig import LoaderConfig
from .table import Table

__all__ = ["Epoch", "Owner"]


class Owner(Protocol):
    """What an epoch needs from the :class:`recpack.Loader` that runs it (stated here, so that this module does
    not import the loader): its options, source and decisions, its memory, per-epoch plan, error policy and
    the statistics it adds to."""

    config: LoaderConfig
    source: RecordSource
    table: Table
    device: torch.device
    order: str
    io: str
    io_threads: int
    segment_bytes: int
    stats: dict[str, float]
    _stream: Any
    _norm: tuple[torch.Tensor, torch.Tensor] | None

    def __len__(self) -> int: ...

    def _memory(self) -> tuple[SlotRing, BufferPool]: ...

    def _plan(self, epoch: int) -> EpochPlan: ...

    def _bad(self, exc: RecpackError) -> None: ...


class Epoch(Closing):
    """Batches ``start..`` of ``epoch`` for ``loader``; iterate for ``(b, batch)``, then :meth:`close`."""

    def __init__(self, loader: Owner, epoch: int, start: int) -> None:
        self.L = loader
        cfg = loader.config
        self.epoch = epoch
        self.ring, self.buffers = loader._memory()
        source = loader.source
        self.files = source.open_files(direct=loader.io == "direct",
                                       advice="RANDOM" if loader.order == "random" else "SEQUENTIAL"
                                       ) if source.spans else None
        self.pool = ThreadPoolExecutor(cfg.decode_threads, thread_name_prefix="recpack-decode")
        self.io = ThreadPoolExecutor(loader.io_threads, thread_name_prefix="recpack-io")
        self._cache: dict[int, tuple[Any, int]] = {}  # segment -> (buffer, file offset of its byte 0)
        self._pending: dict[int, Future[Any]] = {}  # segment -> the read task that brings it (with others)
        self._copies: list[tuple[Any, Any]] = []  # CUDA (start, end) events of copies not yet counted
        self._closed = False
        self.pf = Prefetcher(self._produce, range(start, len(loader)), self.ring, cfg.prefetch)

    # reader thread ------------------------------------------------------------------------------------------
    def _produce(self, b: int, slot: Slot, stop: threading.Event) -> tuple[int, list[Future[Any]], bool]:
        L, cfg, t = self.L, self.L.config, self.L.table
        plan = L._plan(self.epoch)
        lo, hi = batch_bounds(b, cfg.batch_size, plan)
        perm = batch_perm(cfg.seed, self.epoch, b, hi - lo, L.order)
        ids = plan.share[lo:hi] if perm is None else plan.share[lo:hi][perm]
        n = len(ids)
        slot.labels[:n] = torch.from_numpy(t.label[ids])
        t0 = time.perf_counter()
        views: list[Any]
        if self.files is not None:
            views = self._read(plan, lo, hi, stop)
            if perm is not None:
                views = [views[i] for i in perm.tolist()]
        else:
            views = [None] * n
        L.stats["read_s"] += time.perf_counter() - t0
        step = max(1, math.ceil(n / (cfg.decode_threads * 4)))
        source = L.source
        if not cfg.decode:  # CRC checks run on the pool, overlapping the next batch's reads
            return n, [self.pool.submit(check_records, source, ids[i:i + step], views[i:i + step])
                       for i in range(0, n, step)], True
        params = crop_params(cfg.transform, t, ids, cfg.seed, self.epoch, b, cfg.size)
        assert slot.images is not None
        return n, [self.pool.submit(decode_records, source, cfg.transform, slot.images, ids[i:i + step],
                                    views[i:i + step], params, i) for i in range(0, n, step)], False

    def _submit(self, spans: list[tuple[int, int, int]], share: np.ndarray) -> None:
        """Start reading segments (k, first_pos, end_pos) in up to ``io_threads`` tasks of consecutive ones."""
        if not spans:
            return
        assert self.files is not None
        per = -(-len(spans) // self.L.io_threads)
        for i in range(0, len(spans), per):
            group = spans[i:i + per]
            future = self.io.submit(read_segments, self.files, self.L.table, share, group, self.buffers)
            for k, _, _ in group:
                self._pending[k] = future

    def _read(self, plan: EpochPlan, lo: int, hi: int, stop: threading.Event) -> list[memoryview]:
        """Views of the records at positions [lo, hi), in position order. Segments not in the cache are read
        whole (from the first position still needed), and the segments after the batch, up to
        ``segment_bytes`` of them, are started too. Consumed segments leave the cache."""
        segs, share, t = plan.segments, plan.share, self.L.table
        first, last = int(segs.of_pos[lo]), int(segs.of_pos[hi - 1])
        for k in [k for k in self._cache if k < first]:  # fully consumed (positions only move forward)
            del self._cache[k]
        self._submit([(k, max(int(segs.start[k]), lo), int(segs.start[k + 1])) for k in range(first, last + 1)
                      if k not in self._cache and k not in self._pending], share)
        ahead, k, budget = [], last + 1, self.L.segment_bytes
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
        return record_views(t, share, segs, lo, hi, self._cache)

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
                L.stats["wait_s"] += time.perf_counter() - t0
                if is_raw:
                    batch, count = self._deliver_raw(slot, [r for part in done for r in part])
                else:
                    L.stats["decode_s"] += sum(dt for _, dt in done)
                    batch, count = self._deliver(slot, n, [e for errs, _ in done for e in errs])
            except BaseException:
                self.ring.release(slot)
                raise
            if count == 0:  # every record of the batch was skipped: nothing to hand out
                continue
            L.stats["batches"] += 1
            yield b, batch

    def _deliver_raw(self, slot: Slot, raw: list[Any]) -> tuple[Any, int]:
        """decode=False: the checked record bytes themselves, without the records that failed."""
        L = self.L
        good = []
        for pos, item in enumerate(raw):
            if isinstance(item, CorruptRecord):
                L._bad(item)
            else:
                good.append(pos)
        labels = slot.labels.index_select(0, torch.as_tensor(good, dtype=torch.long))
        self.ring.release(slot)
        L.stats["samples"] += len(good)
        return ([raw[i] for i in good], (labels.numpy() if L.config.output == "numpy" else labels)), len(good)

    def _deliver(self, slot: Slot, n: int, errors: list[tuple[int, int, RecpackError]]) -> tuple[Any, int]:
        L = self.L
        keep = keep_good(n, errors, L._bad)
        assert slot.images is not None
        images = slot.images[:n] if keep is None else slot.images.index_select(0, keep)
        labels = slot.labels[:n] if keep is None else slot.labels.index_select(0, keep)
        count = int(images.shape[0])
        L.stats["samples"] += count
        if count == 0:
            self.ring.release(slot)
            return None, 0
        t0 = time.perf_counter()
        if L.device.type == "cuda":
            self._count_copies(wait=False)
            images, labels, start, end = to_device(images, labels, L.device, L._stream)
            self._copies.append((start, end))
            slot.event = end  # the reader waits for it before refilling this slot
            self.ring.release(slot)
        elif keep is None:  # no copy: the batch is the slot, back in the ring once the consumer drops it
            images, labels = self.ring.lend(slot, n)
        else:  # index_select made copies
            self.ring.release(slot)
        L.stats["copy_s"] += time.perf_counter() - t0
        if L._norm is not None:
            mean, std = L._norm
            images = (images.to(L.config.dtype) - mean) / std
        if L.config.output == "numpy":
            return (images.numpy(), labels.numpy()), count
        return (images, labels), count

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
