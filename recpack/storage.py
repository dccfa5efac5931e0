"""Raw record bytes from a dataset: large aligned reads of *segments* (consecutive records of one shard), which
are single records when the order is truly random. No decoding happens here.

Reading a segment is one positional read of its whole span, widened to 4096-byte boundaries (the layout
aligns the data region for this), into a buffer; records are handed out as memoryviews into it together with
the checks that make them safe to use (:func:`record_payload`). :func:`plan_segments` cuts an epoch's order
into segments.

Cache hints: ``POSIX_FADV_SEQUENTIAL`` for run-based orders (bigger kernel readahead), ``POSIX_FADV_RANDOM``
for random order (no readahead wasted on bytes nobody asked for). ``POSIX_FADV_WILLNEED`` was measured and
dropped: the kernel issues it in 2 MiB chunks, which on a throttled HDD wastes a request per chunk; the
loader gets its read-ahead from concurrent whole-segment reads instead.

Read buffers come from a :class:`BufferPool` and go back to it when the last view of them is dropped, so a
steady stream of reads touches the same, already mapped memory instead of faulting in fresh pages (a fresh
8 MiB buffer per segment cost ~18 page faults per 110 KB image, ~35 us of kernel time each). On Linux, buffers
of 2 MiB and more are 2 MiB-aligned anonymous memory the kernel is asked to back with huge pages: a direct
read into physically contiguous memory reaches the device as requests of the device's full
``max_sectors_kb``; into scattered 4 KiB pages, a request holds at most ``max_segments`` pages (128 x 4 KiB
= 512 KiB on a loop device, 1016 KiB on virtio), which on an IOPS-capped device costs bandwidth (measured on
the emulated HDD: 512 KiB requests give 58 MB/s, 1280 KiB ones 149 MB/s).
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import threading
import weakref
from dataclasses import dataclass

import numpy as np

from .errors import FormatError
from .format import ALIGN
from .table import Table
from .fileio import PositionalFile

__all__ = ["BufferPool", "Segments", "plan_segments", "read_into"]


@dataclass(frozen=True)
class Segments:
    """The read plan of one epoch: maximal stretches of an order in which consecutive positions hold
    consecutive records of one shard (so the stretch is one contiguous byte range), capped in bytes.

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


class BufferPool:
    """Reusable uint8 buffers: :meth:`take` returns an array of the asked size whose memory comes back to
    the pool once that array and every view of it (memoryviews, slices) are gone, whichever thread drops
    them last. Nothing is ever overwritten while someone can still see it.

    Sizes are rounded up to classes (64 KiB, then steps of 1/8 of the power of two below), so mixed sizes
    share buffers with at most 12.5% slack. Free buffers are kept up to ``keep_bytes`` in all; beyond that
    a returned buffer is simply freed, which bounds the pool at what was in flight at once plus that cap.
    Thread-safe.
    """

    def __init__(self, keep_bytes: int) -> None:
        self.keep_bytes = keep_bytes
        self._free: dict[int, list[np.ndarray]] = {}
        self._free_bytes = 0
        self._lock = threading.Lock()
        self.allocated = 0  # buffers created (for tests and stats)

    @staticmethod
    def size_class(n: int) -> int:
        if n <= 1 << 16:
            return 1 << 16
        step = 1 << (n.bit_length() - 4)
        return -(-n // step) * step

    def take(self, n: int) -> np.ndarray:
        """A writable uint8 array of ``n`` bytes (contents undefined)."""
        c = self.size_class(n)
        with self._lock:
            bucket = self._free.get(c)
            base = bucket.pop() if bucket else None
            if base is not None:
                self._free_bytes -= c
        if base is None:
            base = _allocate(c)
            self.allocated += 1
        # The finalizer watches a ctypes object over the buffer, not the array handed out: numpy slices of an
        # array point at its base, not at the array, so the array can die while its slices live on. Every
        # array, slice or memoryview made from this one keeps `holder` alive (one ctypes type per size class).
        holder = (ctypes.c_char * c).from_buffer(base.data)
        weakref.finalize(holder, self._give_back, base).atexit = False
        view: np.ndarray = np.frombuffer(memoryview(holder).cast("B"), dtype=np.uint8)[:n]
        return view

    def _give_back(self, base: np.ndarray) -> None:
        c = len(base)
        with self._lock:
            if self._free_bytes + c <= self.keep_bytes:
                self._free.setdefault(c, []).append(base)
                self._free_bytes += c

    def clear(self) -> None:
        with self._lock:
            self._free.clear()
            self._free_bytes = 0


_HUGE_PAGE = 2 << 20


def _allocate(c: int) -> np.ndarray:
    """``c`` uninitialised bytes at an ALIGN-aligned address (direct I/O reads into them). From 2 MiB, where
    the platform has ``MADV_HUGEPAGE`` (Linux): 2 MiB-aligned private anonymous memory advised for
    transparent huge pages (it simply gets 4 KiB pages where the kernel has no huge page to give)."""
    if c >= _HUGE_PAGE and hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            m = mmap.mmap(-1, c + _HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        except (OSError, ValueError):
            pass  # no such mapping here: a numpy buffer below
        else:
            with contextlib.suppress(OSError):  # THP compiled out: ordinary pages, still aligned
                m.madvise(mmap.MADV_HUGEPAGE)
            whole = np.frombuffer(m, dtype=np.uint8)  # keeps the mapping alive; unmapped when the last view goes
            skip = -whole.ctypes.data % _HUGE_PAGE
            return whole[skip:skip + c]
    raw = np.empty(c + ALIGN, dtype=np.uint8)
    skip = -raw.ctypes.data % ALIGN
    return raw[skip:skip + c]


def read_into(f: PositionalFile, buf: bytearray, at: int, start: int, end: int) -> tuple[int, int]:
    """Read file bytes [start, end) widened to ALIGN boundaries into ``buf[at:]``.

    Returns (buffer position of file offset ``start``, bytes read). ``buf[at:]`` must hold the widened span
    and, for direct I/O, start at an ALIGN-aligned address (BufferPool's buffers do)."""
    a = start - start % ALIGN
    b = -(-end // ALIGN) * ALIGN  # a direct read must be whole blocks; past EOF it just comes back short
    if not f.direct:
        b = min(b, f.size)
    n = f.read_into(memoryview(buf)[at:at + (b - a)], a)
    if a + n < end:
        raise FormatError(f"shard is shorter than its table says (read ended at {a + n}, needed {end}); "
                          "the file was truncated — run `recpack verify`", f.path, a + n)
    return at + (start - a), b - a
