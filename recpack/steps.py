"""The Loader's pipeline as plain functions, one per step; :mod:`recpack.epoch` runs them on threads.

Per epoch, once (pure)::

    plan = plan_epoch(table, order, ...)          # this rank's ids in order, cut into read segments

Per batch b::

    lo, hi = batch_bounds(b, batch_size, plan)    # its positions in the plan      (pure)
    perm   = batch_perm(seed, epoch, b, n, order) # the shuffle within the batch    (pure)
    params = crop_params(transform, table, ...)   # crop boxes and flips           (pure)
    read_segments(files, table, share, ...)       # large aligned reads            (I/O threads)
    views  = record_views(...)                    # each record's bytes, zero-copy (reader thread)
    check_records(source, ids, views)             # checked image bytes            (decode threads; raw)
    decode_records(source, transform, ...)        # checks, decode, crop, resize, flip into the slot (decode threads)
    keep_good(...) / to_device(...)               # drop bad records, copy to the device (consumer)

Each function takes what it needs as arguments and keeps no state, so each is tested without threads.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .backends import RecordSource
from .buffers import BufferPool
from .decode import decode_rgb
from .errors import CorruptRecord, DecodeError, RecpackError
from .fileio import OpenFiles, read_span
from .format import ALIGN
from .order import ORDERS, Layout, rank_remaining, rank_share
from .table import Table
from .transforms import apply_user_transform, decode_crop_resize, train_params, val_params

__all__ = [
    "Segments",
    "EpochPlan",
    "plan_segments",
    "plan_epoch",
    "batch_bounds",
    "batch_perm",
    "crop_params",
    "read_segments",
    "record_views",
    "check_records",
    "decode_records",
    "keep_good",
    "to_device",
]

_TAG_BATCH_SHUFFLE, _TAG_PARAMS = 101, 102


# -- planning (pure) ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Segments:
    """The read plan of one epoch: maximal stretches of an order in which consecutive positions hold
    consecutive records of one file (so the stretch is one contiguous byte range), capped in bytes.

    ``start[k]`` is the first order position of segment k (``start[-1] == len(order)``); ``of_pos[p]`` is the
    segment of position p. Each segment is read with one request, once, however many batches it spans."""

    start: np.ndarray  # int64 (segments + 1,)
    of_pos: np.ndarray  # int64 (positions,)

    @property
    def count(self) -> int:
        return len(self.start) - 1


def plan_segments(order: np.ndarray, table: Table, max_bytes: int) -> Segments:
    """Cut ``order`` (global ids) into segments; vectorised, ~10 ns per position."""
    n = len(order)
    if n == 0:
        return Segments(np.zeros(1, np.int64), np.zeros(0, np.int64))
    shard = table.shard[order]
    follows = (np.diff(order) == 1) & (shard[1:] == shard[:-1])
    brk = np.concatenate([[True], ~follows])
    run_id = np.cumsum(brk) - 1
    lengths = table.length[order].astype(np.int64)
    cum = np.cumsum(lengths)
    run_base = (cum - lengths)[brk][run_id]  # bytes before the stretch this position belongs to
    piece = (cum - lengths - run_base) // max(1, max_bytes)  # cap: a new segment every max_bytes
    brk |= np.concatenate([[False], (piece[1:] != piece[:-1]) & follows])
    starts = np.concatenate([np.nonzero(brk)[0], [n]]).astype(np.int64)
    return Segments(starts, (np.cumsum(brk) - 1).astype(np.int64))


@dataclass(frozen=True)
class EpochPlan:
    """One rank's epoch: ``share`` (global ids in delivery position order) and its read ``segments``."""

    epoch: int
    share: np.ndarray
    segments: Segments


def plan_epoch(table: Table, order: str, seed: int, epoch: int, order_kw: dict[str, int], rank: int, world: int,
               drop_last: bool, batch_size: int, resplit: Sequence[tuple[int, int]], segment_bytes: int,
               whole_batches: bool | None = None) -> EpochPlan:
    """The epoch's order (:data:`recpack.order.ORDERS`), minus what ranks of earlier world sizes already read
    this epoch (``resplit``: (world size, ids read per rank) pairs from resumed states), this rank's share of
    it, trimmed to whole batches with ``whole_batches`` (default: ``drop_last``), and its read segments."""
    ids = ORDERS[order](Layout(table.starts), seed, epoch, **order_kw)
    for old_world, done in resplit:
        ids = rank_remaining(ids, old_world, done, drop_last=drop_last)
    share = rank_share(ids, rank, world, epoch, drop_last=drop_last)
    if drop_last if whole_batches is None else whole_batches:
        share = share[:len(share) // batch_size * batch_size]
    return EpochPlan(epoch, share, plan_segments(share, table, segment_bytes))


def batch_bounds(b: int, batch_size: int, plan: EpochPlan) -> tuple[int, int]:
    """Positions [lo, hi) of batch ``b`` in the plan (the last batch may be short)."""
    return b * batch_size, min((b + 1) * batch_size, len(plan.share))


def batch_perm(seed: int, epoch: int, b: int, n: int, order: str) -> np.ndarray | None:
    """The order of batch ``b``'s samples (None: as planned). Records are read in storage order and shuffled
    within the batch, so a batch never holds a run of neighbouring records in their stored order."""
    if order == "sequential":
        return None
    return np.random.default_rng([seed, epoch, b, _TAG_BATCH_SHUFFLE]).permutation(n)


def crop_params(transform: Any, table: Table, ids: np.ndarray, seed: int, epoch: int, b: int, size: int
                ) -> np.ndarray | None:
    """Crop boxes and flips for batch ``b`` (:mod:`recpack.transforms`), from the stored image sizes in the
    table; None for a user transform."""
    w, h = table.width[ids], table.height[ids]
    if transform == "train":
        return train_params(np.random.default_rng([seed, epoch, b, _TAG_PARAMS]), w, h)
    if transform == "val":
        return val_params(w, h, size)
    return None


# -- reading (I/O threads) ----------------------------------------------------------------------------------
def read_segments(files: OpenFiles, table: Table, share: np.ndarray, spans: list[tuple[int, int, int]],
                  buffers: BufferPool) -> list[tuple[int, Any, int, int]]:
    """Read segments given as (k, first_pos, end_pos): the records at positions [first_pos, end_pos),
    consecutive records of one file, each with one aligned request, all into one pooled buffer (many small
    segments — a random order's single records — then cost one buffer and one task, not one each).
    Reads go in file and offset order. Returns (k, the segment's slice of the buffer, file offset its byte 0
    stands for, bytes read), in that order."""
    plan = []
    total = 0
    for k, first_pos, end_pos in spans:
        a, z = int(share[first_pos]), int(share[end_pos - 1])
        begin, end = int(table.offset[a]), int(table.offset[z]) + int(table.length[z])
        room = -(-(end - begin + 2 * ALIGN) // ALIGN) * ALIGN  # the aligned span always fits
        plan.append((k, int(table.shard[a]), begin, end, total, room))
        total += room
    buf = buffers.take(total)
    out = []
    # in file and offset order: each file is acquired once for all its segments here, and held alone
    plan.sort(key=lambda p: (p[1], p[2]))
    for shard, group in itertools.groupby(plan, key=lambda p: p[1]):
        f = files.acquire(shard)
        try:
            for k, _, begin, end, at, room in group:
                pos, nread = read_span(f, buf, at, begin, end)
                out.append((k, buf[at:at + room], begin - (pos - at), nread))
        finally:
            files.release(shard)
    return out


def record_views(table: Table, share: np.ndarray, segments: Segments, lo: int, hi: int,
                 cache: dict[int, tuple[Any, int]]) -> list[memoryview]:
    """Each record's bytes at positions [lo, hi), in position order, as views into the read segments in
    ``cache`` (segment -> (buffer, file offset of its byte 0))."""
    views: list[memoryview] = []
    seg_of = segments.of_pos[lo:hi].tolist()
    offsets = table.offset[share[lo:hi]].astype(np.int64).tolist()
    lengths = table.length[share[lo:hi]].astype(np.int64).tolist()
    for k, off, ln in zip(seg_of, offsets, lengths):
        buf, base = cache[k]
        views.append(memoryview(buf)[off - base:off - base + ln])
    return views


# -- checking and decoding (decode threads) -----------------------------------------------------------------
def _payload(source: RecordSource, gid: int, view: Any) -> Any:
    return source.fetch(gid) if view is None else source.payload(gid, view)


def check_records(source: RecordSource, ids: np.ndarray, views: Sequence[Any]) -> list[Any]:
    """The checked image bytes of each record (zero-copy views into the read buffers, which stay valid for as
    long as the caller keeps them), or the CorruptRecord that says why it is not delivered."""
    out: list[Any] = []
    for gid, view in zip(ids.tolist(), views):
        try:
            out.append(_payload(source, gid, view))
        except CorruptRecord as exc:
            out.append(exc)
    return out


def decode_records(source: RecordSource, transform: Any, images: torch.Tensor, ids: np.ndarray,
                   views: Sequence[Any], params: np.ndarray | None, first: int
                   ) -> tuple[list[tuple[int, int, RecpackError]], float]:
    """Check, decode and transform records into ``images[first:]`` (the slot); returns the records that
    failed as (position, global id, error) and the seconds spent."""
    t0 = time.perf_counter()
    errors: list[tuple[int, int, RecpackError]] = []
    for k, (gid, view) in enumerate(zip(ids.tolist(), views)):
        pos = first + k
        try:
            data = _payload(source, gid, view)
            if callable(transform):
                apply_user_transform(transform, decode_rgb(data), images[pos])
            else:
                assert params is not None
                decode_crop_resize(data, params[pos], images[pos])
        except CorruptRecord as exc:
            errors.append((pos, gid, exc))
        except DecodeError as exc:
            errors.append((pos, gid, _decode_error(source, gid, exc)))
    return errors, time.perf_counter() - t0


def _decode_error(source: RecordSource, gid: int, exc: DecodeError) -> DecodeError:
    """The decode error, naming the record's file, offset and key."""
    shard, offset = source.where(gid)
    key = None
    try:
        key = source.record(gid).key
    except (RecpackError, OSError):
        pass
    return DecodeError(f"image does not decode: {exc.message}", key=key, shard=shard, offset=offset)


# -- delivery (consumer) ------------------------------------------------------------------------------------
def keep_good(n: int, errors: list[tuple[int, int, RecpackError]], bad: Callable[[RecpackError], None]
              ) -> torch.Tensor | None:
    """Report each failed record to ``bad`` (which raises or counts, by the error policy), in position order;
    returns the positions to keep, or None to keep all ``n``."""
    if not errors:
        return None
    for _, _, exc in sorted(errors, key=lambda e: e[0]):
        bad(exc)
    failed = {p for p, _, _ in errors}
    return torch.as_tensor([i for i in range(n) if i not in failed], dtype=torch.long)


def to_device(images: torch.Tensor, labels: torch.Tensor, device: torch.device, stream: Any
              ) -> tuple[torch.Tensor, torch.Tensor, Any, Any]:
    """Copy a batch from its pinned slot to the CUDA ``device`` on the side ``stream`` (non-blocking).
    Returns the device tensors and the (start, end) CUDA events around the copy: the consumer's stream waits
    for ``end``, and the slot must not be refilled before ``end`` has completed."""
    with torch.cuda.stream(stream):
        # allocated on the side stream, so the copy never races with compute still using freed memory
        dev_images = torch.empty(images.shape, dtype=images.dtype, device=device)
        dev_labels = torch.empty(labels.shape, dtype=labels.dtype, device=device)
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        start.record(stream)
        dev_images.copy_(images, non_blocking=True)
        dev_labels.copy_(labels, non_blocking=True)
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end.record(stream)
    current = torch.cuda.current_stream(device)
    current.wait_event(end)
    dev_images.record_stream(current)  # the allocator must wait for the consumer's use before reuse
    dev_labels.record_stream(current)
    return dev_images, dev_labels, start, end

