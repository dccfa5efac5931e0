"""Preallocated batch slots: decode writes straight into them, the device copy reads from them.

A ring of ``prefetch + 2`` slots is allocated once per epoch pipeline: ``prefetch`` batches being prepared,
one being copied/consumed, one spare so the reader never waits for the consumer to return the slot it is
using. Slots are pinned (page-locked) when CUDA is available, so ``copy_(non_blocking=True)`` is a true DMA
that overlaps with compute; a CUDA event recorded after each copy guards the slot against being refilled
before the copy has finished.

Memory (stated, constant across epochs): ``(prefetch + 2) x batch_size x (3 x size x size + 8)`` bytes here,
plus the read segments the batches in flight refer to (see :attr:`recpack.Loader.memory_bytes`).

Without a device copy (CPU output), a slot is *lent* to the consumer instead of copied (:meth:`SlotRing.lend`):
the batch it yields is a view of the slot, and the slot returns to the ring when the last tensor or array
that uses its memory is garbage-collected (usually when the training loop moves to the next batch). A
consumer that keeps batches keeps their slots; when every slot is lent the ring grows by one rather than
wait, so memory is then the ring plus what the consumer holds, never a deadlock and never an overwritten
batch. This saves a copy of every batch (~38 MB at 256 x 224 x 224 x 3), which on a 2-core machine was
~9% of all CPU time, mostly page faults on the fresh copy.
"""

from __future__ import annotations

import queue
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Slot", "SlotRing"]


@dataclass
class Slot:
    """One batch worth of preallocated memory."""

    index: int
    images: torch.Tensor | None  # (B, 3, S, S) uint8, or None when records are not decoded
    labels: torch.Tensor  # (B,) int64
    event: Any = None  # torch.cuda.Event recorded after the device copy that reads this slot

    @property
    def nbytes(self) -> int:
        n = self.labels.numel() * 8
        if self.images is not None:
            n += self.images.numel() * self.images.element_size()
        return n


class SlotRing:
    """``count`` slots handed out by :meth:`acquire` and given back by :meth:`release`."""

    def __init__(self, count: int, batch_size: int, image_shape: tuple[int, ...] | None,
                 image_dtype: torch.dtype = torch.uint8, pin: bool = False) -> None:
        if count < 1:
            raise ValueError(f"slot count must be >= 1, not {count}")
        self.pin = pin
        self._shape = (batch_size, image_shape, image_dtype)
        self.slots = [self._new_slot(i) for i in range(count)]
        self._free: queue.Queue[Slot] = queue.Queue()
        for s in self.slots:
            self._free.put(s)
        self._lock = threading.Lock()
        self._lent: set[int] = set()  # indices of slots whose memory a consumer still refers to

    def acquire(self, stop: threading.Event, poll: float = 0.05) -> Slot | None:
        """A free slot whose previous device copy has completed; None once ``stop`` is set."""
        while not stop.is_set():
            try:
                slot = self._free.get(timeout=poll)
            except queue.Empty:
                grown = self._grow_if_all_lent()
                if grown is None:
                    continue
                slot = grown
            if slot.event is not None:
                slot.event.synchronize()  # the copy out of this slot must be done before we overwrite it
                slot.event = None
            return slot
        return None

    def release(self, slot: Slot) -> None:
        """Give ``slot`` back; a no-op for a lent slot (its finalizer gives it back)."""
        with self._lock:
            if slot.index in self._lent:
                return
        self._free.put(slot)

    def lend(self, slot: Slot, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of the first ``n`` images and labels of ``slot`` that keep it out of the ring for as long as
        anything refers to their memory; the slot is released when the last such reference dies."""
        assert slot.images is not None
        # torch.from_numpy keeps `owner` alive from every tensor, view or .numpy() array made from the result;
        # its finalizer runs when the last of them is gone (in the thread that drops it).
        owner = slot.images.numpy()[:n]
        with self._lock:
            self._lent.add(slot.index)
        fin = weakref.finalize(owner, self._returned, slot)
        fin.atexit = False
        return torch.from_numpy(owner), slot.labels[:n].clone()

    def _returned(self, slot: Slot) -> None:
        with self._lock:
            self._lent.discard(slot.index)
        self._free.put(slot)

    def _grow_if_all_lent(self) -> Slot | None:
        """A new slot when the consumer holds every slot (it keeps batches): waiting would never end."""
        with self._lock:
            if len(self._lent) < len(self.slots):
                return None
            slot = self._new_slot(len(self.slots))
            self.slots.append(slot)
            return slot

    def _new_slot(self, index: int) -> Slot:
        batch_size, image_shape, dtype = self._shape
        images = None
        if image_shape is not None:
            images = torch.empty((batch_size, *image_shape), dtype=dtype, pin_memory=self.pin)
        return Slot(index, images, torch.empty((batch_size,), dtype=torch.int64, pin_memory=self.pin))

    @property
    def nbytes(self) -> int:
        """Bytes held by all slots (images and labels)."""
        return sum(s.nbytes for s in self.slots)
