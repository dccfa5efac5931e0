"""Read buffers that are reused once nobody can see them any more.

The Loader reads each segment of records into a buffer from a :class:`BufferPool` and hands records out as
memoryviews into it; the buffer goes back to the pool when the last view of it is dropped, whichever thread
drops it. A steady stream of reads therefore touches the same, already mapped memory instead of faulting in
fresh pages for every segment. Buffers are aligned for direct I/O; on Linux, buffers of 2 MiB and more are
2 MiB-aligned anonymous memory advised for transparent huge pages, so a direct read into them reaches the
device as requests of its full ``max_sectors_kb`` instead of ``max_segments`` scattered 4 KiB pages (why this
matters on an IOPS-capped device: docs/design.md and docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import threading
import weakref

import numpy as np

from .format import ALIGN

__all__ = ["BufferPool"]


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
