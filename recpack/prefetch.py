"""The producer thread: prepares batches ahead of the consumer, forwards every error, never hangs.

One ``recpack-reader`` thread walks the batches of an epoch: it takes a free slot from the ring, calls
``produce(b, slot)`` (which reads the batch's records and submits decode tasks to a thread pool) and puts the
result on a bounded queue. The consumer takes results in order. Rules that keep it safe:

- every blocking wait (free slot, full queue) polls a stop event, so :meth:`Prefetcher.close` always gets
  the thread to exit;
- an exception in the thread is put on the queue and re-raised in the consumer, with its traceback;
- :meth:`close` drains the queue (giving slots back) and joins the thread with a timeout.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from .batch import Slot, SlotRing

__all__ = ["Prefetcher", "Stopped"]

_END = object()


class Stopped(Exception):
    """Raised inside ``produce`` when it notices the stop event; ends the thread quietly."""


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Prefetcher:
    """Runs ``produce(b, slot, stop)`` for ``b`` in ``batches`` on a background thread, ``depth`` ahead.

    ``produce`` should check ``stop.is_set()`` between slow steps (each read) and raise :class:`Stopped`."""

    def __init__(self, produce: Callable[[int, Slot, threading.Event], Any], batches: range, ring: SlotRing,
                 depth: int,
                 name: str = "recpack-reader") -> None:
        self._produce = produce
        self._batches = batches
        self._ring = ring
        self._q: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for b in self._batches:
                slot = self._ring.acquire(self._stop)
                if slot is None:
                    return
                try:
                    item = self._produce(b, slot, self._stop)
                except Stopped:
                    self._ring.release(slot)
                    return
                except BaseException:
                    self._ring.release(slot)
                    raise
                if not self._put((b, slot, item)):
                    self._ring.release(slot)
                    return
            self._put(_END)
        except BaseException as exc:  # forwarded to the consumer, never lost
            self._put(_Failure(exc))

    def get(self) -> tuple[int, Slot, Any] | None:
        """The next prepared batch, None at the end; re-raises an error from the thread."""
        while True:
            try:
                item = self._q.get(timeout=0.1)
            except queue.Empty:
                if not self._thread.is_alive() and self._q.empty():
                    raise RuntimeError("recpack reader thread stopped without a result") from None
                continue
            if item is _END:
                return None
            if isinstance(item, _Failure):
                raise item.exc
            return item  # type: ignore[no-any-return]

    def close(self, timeout: float = 1.0) -> list[tuple[int, Slot, Any]]:
        """Stop the thread, join it, and return the prepared batches nobody consumed (their slots still
        need releasing by the owner, after their pending work is cancelled)."""
        self._stop.set()
        left: list[tuple[int, Slot, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                if not self._thread.is_alive() or time.monotonic() > deadline:
                    break
                self._thread.join(0.01)
                continue
            if isinstance(item, tuple):
                left.append(item)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return left

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
