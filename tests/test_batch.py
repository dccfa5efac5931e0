"""recpack.batch: the ring of preallocated batch slots. A slot is handed out again only after it was given back;
a lent slot (a CPU batch that is a view of it) stays out of the ring until the last view of it is dropped; a
consumer that keeps every batch makes the ring grow instead of wait."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest
import torch

from recpack.batch import Slot, SlotRing

B, SHAPE = 4, (3, 8, 8)


def never() -> threading.Event:
    return threading.Event()


def stopped() -> threading.Event:
    ev = threading.Event()
    ev.set()
    return ev


def acquire(ring: SlotRing, timeout: float = 5.0) -> Slot | None:
    """A slot, or None when none comes within ``timeout`` seconds."""
    stop = threading.Event()
    timer = threading.Timer(timeout, stop.set)
    timer.start()
    try:
        return ring.acquire(stop, poll=0.01)
    finally:
        timer.cancel()


def test_slots_are_preallocated_with_the_batch_shape() -> None:
    ring = SlotRing(3, B, SHAPE)
    assert [s.index for s in ring.slots] == [0, 1, 2]
    for s in ring.slots:
        assert s.images is not None and s.images.shape == (B, *SHAPE) and s.images.dtype == torch.uint8
        assert s.labels.shape == (B,) and s.labels.dtype == torch.int64
        assert s.nbytes == B * 3 * 8 * 8 + B * 8
    assert ring.nbytes == 3 * (B * 3 * 8 * 8 + B * 8)
    assert len({s.images.data_ptr() for s in ring.slots}) == 3  # three separate buffers
    raw = SlotRing(2, B, None)  # decode=False: labels only
    assert all(s.images is None for s in raw.slots) and raw.nbytes == 2 * B * 8
    wide = SlotRing(1, B, SHAPE, image_dtype=torch.float16)
    assert wide.slots[0].images is not None and wide.slots[0].images.dtype == torch.float16
    assert wide.nbytes == B * 3 * 8 * 8 * 2 + B * 8
    with pytest.raises(ValueError, match="slot count must be >= 1"):
        SlotRing(0, B, SHAPE)


def test_a_slot_is_reused_only_after_release() -> None:
    ring = SlotRing(2, B, SHAPE)
    a, b = acquire(ring), acquire(ring)
    assert a is not None and b is not None and a is not b
    assert acquire(ring, timeout=0.2) is None  # both out: the third acquire waits (and gives up on stop)
    ring.release(b)
    again = acquire(ring)
    assert again is b  # the same slot: the same preallocated memory
    assert len(ring.slots) == 2  # slots that are merely acquired never make the ring grow


def test_acquire_returns_none_once_stop_is_set() -> None:
    ring = SlotRing(1, B, SHAPE)
    assert ring.acquire(stopped()) is None  # even with a free slot
    held = ring.acquire(never())
    assert held is not None
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    assert ring.acquire(stop, poll=0.01) is None  # a waiting acquire notices the stop


def test_acquire_waits_for_the_previous_device_copy() -> None:
    class FakeEvent:
        def __init__(self) -> None:
            self.waited = 0

        def synchronize(self) -> None:
            self.waited += 1

    ring = SlotRing(1, B, SHAPE)
    slot = ring.acquire(never())
    assert slot is not None
    event = FakeEvent()
    slot.event = event  # a copy out of this slot was queued on a CUDA stream
    ring.release(slot)
    again = ring.acquire(never())
    assert again is slot and event.waited == 1 and slot.event is None


def test_a_lent_batch_keeps_its_slot_until_dropped() -> None:
    ring = SlotRing(2, B, SHAPE)
    slot = ring.acquire(never())
    assert slot is not None and slot.images is not None
    slot.images.fill_(7)
    slot.labels.copy_(torch.arange(B))
    images, labels = ring.lend(slot, 3)
    assert images.shape == (3, *SHAPE) and images.data_ptr() == slot.images.data_ptr()  # a view, no copy
    assert torch.equal(labels, torch.arange(3)) and labels.data_ptr() != slot.labels.data_ptr()  # a copy
    ring.release(slot)  # a no-op for a lent slot: the consumer still has it
    other = acquire(ring)
    assert other is not None and other is not slot
    assert acquire(ring, timeout=0.2) is None  # the lent slot is not handed out while the batch lives
    del images
    gc.collect()
    assert acquire(ring) is slot  # dropped: back in the ring


@pytest.mark.parametrize("keep", ["view", "numpy", "row"])
def test_any_view_of_a_lent_batch_keeps_the_slot(keep: str) -> None:
    ring = SlotRing(1, B, SHAPE)
    slot = ring.acquire(never())
    assert slot is not None and slot.images is not None
    images, _ = ring.lend(slot, B)
    kept: object = {"view": images[1:, 0], "numpy": images.numpy(), "row": images[2][1]}[keep]
    del images
    gc.collect()
    assert len(ring.slots) == 1
    grown = acquire(ring)  # the only slot is lent, so the ring grows rather than wait
    assert grown is not None and grown is not slot and grown.index == 1 and len(ring.slots) == 2
    assert np.asarray(kept).size > 0
    del kept
    gc.collect()
    assert acquire(ring) is slot


def test_a_consumer_that_keeps_every_batch_makes_the_ring_grow_not_wait() -> None:
    ring = SlotRing(2, B, SHAPE)
    kept = []
    for i in range(5):
        slot = acquire(ring)
        assert slot is not None, f"batch {i}: acquire waited although the consumer holds every slot"
        assert slot.images is not None
        slot.images.fill_(i)
        kept.append(ring.lend(slot, B)[0])
    assert len(ring.slots) == 5 and len({s.index for s in ring.slots}) == 5
    for i, images in enumerate(kept):  # never overwritten
        assert int(images.min()) == int(images.max()) == i
    del kept, images
    gc.collect()
    assert {id(acquire(ring)) for _ in range(5)} == {id(s) for s in ring.slots}  # all came back


def test_a_slot_dropped_in_another_thread_comes_back() -> None:
    ring = SlotRing(1, B, SHAPE)
    slot = ring.acquire(never())
    assert slot is not None
    box = [ring.lend(slot, B)[0]]
    t = threading.Thread(target=box.clear)  # the last reference dies in that thread
    t.start()
    t.join()
    gc.collect()
    assert acquire(ring) is slot and len(ring.slots) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pinned_slots_are_page_locked() -> None:
    ring = SlotRing(2, B, SHAPE, pin=True)
    for s in ring.slots:
        assert s.images is not None and s.images.is_pinned() and s.labels.is_pinned()
    unpinned = SlotRing(1, B, SHAPE).slots[0].images
    assert unpinned is not None and not unpinned.is_pinned()
