"""Preallocated batch slots: decode writes straight into them, the device copy reads from them.

A ring of ``prefetch + 2`` slots is allocated once per epoch pipeline: ``prefetch`` batches being prepared,
one being copied/consumed, one spare so the reader never waits for the consumer to return the slot it is
using. Slots are pinned (page-locked) when CUDA is available, so ``copy_(non_blocking=True)`` is a true DMA
that overlaps with compute; a CUDA event recorded after each copy guards the slot against being refilled
before the copy has finished.

Memory (stated, constant across epochs): ``(prefetch + 2) x batch_size x (3 x size x size + 8)`` bytes here,
plus the read segments the batches in flight refer to (see :attr:`recpack.Loader.memory_bytes`).
"""

from __future__ import annotations

import queue
import threading
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
        self.slots = []
        for i in range(count):
            images = None
            if image_shape is not None:
                images = torch.empty((batch_size, *image_shape), dtype=image_dtype, pin_memory=pin)
            labels = torch.empty((batch_size,), dtype=torch.int64, pin_memory=pin)
            self.slots.append(Slot(i, images, labels))
        self._free: queue.Queue[Slot] = queue.Queue()
        for s in self.slots:
            self._free.put(s)

    def acquire(self, stop: threading.Event, poll: float = 0.05) -> Slot | None:
        """A free slot whose previous device copy has completed; None once ``stop`` is set."""
        while not stop.is_set():
            try:
                slot = self._free.get(timeout=poll)
            except queue.Empty:
                continue
            if slot.event is not None:
                slot.event.synchronize()  # the copy out of this slot must be done before we overwrite it
                slot.event = None
            return slot
        return None

    def release(self, slot: Slot) -> None:
        self._free.put(slot)

    @property
    def nbytes(self) -> int:
        """Bytes held by all slots (images and labels)."""
        return sum(s.nbytes for s in self.slots)
