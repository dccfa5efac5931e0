"""recpack.prefetch: the reader thread that prepares batches ahead of the consumer. Batches arrive in order; an
error in the producer reaches the consumer; the thread never runs more than ``depth`` batches ahead and never
takes a slot that was not given back; close() stops and joins the thread from every state it can be in.

(The Loader-level guarantees built on this, that ``break``, an exception in the loop and garbage collection
stop every thread, are in tests/test_loader.py and tests/test_torchdata.py.)"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from recpack.batch import Slot, SlotRing
from recpack.prefetch import Prefetcher, Stopped


class Boom(Exception):
    pass


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


class Producer:
    """Records what the reader thread did: which batches it produced, with which slots, and when."""

    def __init__(self, fail_at: int | None = None, block_at: int | None = None) -> None:
        self.calls: list[int] = []
        self.slots: list[Slot] = []
        self.fail_at = fail_at
        self.block_at = block_at  # produce(block_at) waits for the stop event, then raises Stopped
        self.lock = threading.Lock()

    def __call__(self, b: int, slot: Slot, stop: threading.Event) -> Any:
        with self.lock:
            self.calls.append(b)
            self.slots.append(slot)
        if b == self.fail_at:
            raise Boom(f"batch {b} failed")
        if b == self.block_at:
            while not stop.wait(0.01):
                pass
            raise Stopped
        slot.labels.fill_(b)
        return f"item {b}"

    @property
    def produced(self) -> int:
        with self.lock:
            return len(self.calls)


_names = itertools.count()


def make(producer: Producer, batches: int = 10, depth: int = 2, slots: int | None = None
         ) -> tuple[Prefetcher, SlotRing]:
    """A Prefetcher over ``range(batches)`` with a ring of ``slots`` (default depth + 2, as the Loader's) and
    a thread name of its own, so that a test sees its own thread and no other test's."""
    ring = SlotRing(depth + 2 if slots is None else slots, 4, None)
    return Prefetcher(producer, range(batches), ring, depth, name=f"recpack-reader-test-{next(_names)}"), ring


def thread_of(pf: Prefetcher) -> list[threading.Thread]:
    """The Prefetcher's thread while it is alive (threading.enumerate() lists only live threads)."""
    return [t for t in threading.enumerate() if t.name == pf._thread.name]


def free_slots(ring: SlotRing) -> int:
    return int(ring._free.qsize())


def test_every_batch_in_order_then_none() -> None:
    producer = Producer()
    pf, ring = make(producer, batches=7)
    got = []
    while (item := pf.get()) is not None:
        b, slot, value = item
        assert value == f"item {b}" and slot.labels.tolist() == [b] * 4  # the slot holds what produce wrote
        got.append(b)
        ring.release(slot)
    assert got == list(range(7))
    assert wait_for(lambda: not thread_of(pf))  # the thread ends after the last batch
    assert pf.close() == []
    assert free_slots(ring) == 4


def test_an_error_in_the_producer_reaches_the_consumer_after_the_good_batches() -> None:
    producer = Producer(fail_at=3)
    pf, ring = make(producer, batches=10)
    got = []
    with pytest.raises(Boom, match="batch 3 failed") as info:
        while (item := pf.get()) is not None:
            got.append(item[0])
            ring.release(item[1])
    assert got == [0, 1, 2]
    assert any(entry.name == "__call__" for entry in info.traceback)  # raised with the producer's traceback
    assert producer.calls == [0, 1, 2, 3]  # nothing produced after the failure
    assert wait_for(lambda: not thread_of(pf))
    assert pf.close() == []
    assert free_slots(ring) == 4  # the failed batch's slot was given back


def test_even_system_exit_in_the_producer_reaches_the_consumer() -> None:
    def exits(b: int, slot: Slot, stop: threading.Event) -> Any:
        raise SystemExit(3)  # a BaseException: must not just kill the thread and leave get() guessing

    pf = Prefetcher(exits, range(3), SlotRing(2, 4, None), 1)
    with pytest.raises(SystemExit) as info:
        pf.get()
    assert info.value.code == 3
    pf.close()


def test_an_error_from_the_slot_ring_reaches_the_consumer_too() -> None:
    class BrokenRing(SlotRing):  # type: ignore[misc,unused-ignore]
        def acquire(self, stop: threading.Event, poll: float = 0.05) -> Slot | None:
            raise MemoryError("no memory for a slot")

    pf = Prefetcher(Producer(), range(3), BrokenRing(1, 4, None), 1)
    with pytest.raises(MemoryError, match="no memory for a slot"):
        pf.get()
    pf.close()
    assert not pf.alive and not thread_of(pf)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_the_thread_never_runs_more_than_depth_ahead(depth: int) -> None:
    """At most ``depth`` prepared batches wait for the consumer, plus the one the thread holds while it
    waits to hand it over (the ring has room for more: the queue is what bounds it)."""
    producer = Producer()
    pf, ring = make(producer, batches=50, depth=depth, slots=50)
    try:
        assert wait_for(lambda: producer.produced == depth + 1)
        time.sleep(0.2)
        assert producer.produced == depth + 1  # a consumer that takes nothing stops the thread there
        consumed = 0
        while (item := pf.get()) is not None:
            consumed += 1
            ring.release(item[1])
            assert producer.produced <= consumed + depth + 1
            if consumed == 10:  # a slow consumer: the thread catches up, then waits again
                assert wait_for(lambda: producer.produced == 10 + depth + 1)
                time.sleep(0.1)
                assert producer.produced == consumed + depth + 1
        assert consumed == 50
    finally:
        pf.close()


def test_a_slot_is_reused_only_after_the_consumer_releases_it() -> None:
    producer = Producer()
    pf, ring = make(producer, batches=20, depth=8, slots=2)
    try:
        first = pf.get()
        assert first is not None
        second = pf.get()
        assert second is not None
        time.sleep(0.2)
        assert producer.produced == 2  # both slots are with the consumer: the thread waits for one
        assert first[1] is not second[1]
        ring.release(first[1])
        assert wait_for(lambda: producer.produced == 3)
        assert producer.slots[2] is first[1]  # batch 2 is prepared in the slot given back, not in batch 1's
        third = pf.get()
        assert third is not None and third[0] == 2 and third[1] is first[1]
    finally:
        pf.close()


def test_close_stops_a_thread_that_waits_for_the_consumer() -> None:
    producer = Producer()
    pf, ring = make(producer, batches=100, depth=3, slots=10)
    assert wait_for(lambda: producer.produced == 4)
    t0 = time.monotonic()
    left = pf.close()
    assert time.monotonic() - t0 < 3.0  # (its own timeout is 1 s: it never hangs)
    assert not pf.alive and not thread_of(pf)
    assert producer.calls == [0, 1, 2, 3]
    # the prepared batches nobody took come back in order, their slots still out for the owner to release;
    # batch 3 is among them when close() made room for it before the thread saw the stop, else the thread
    # gave its slot back: either way no slot is lost
    assert [b for b, _, _ in left] in ([0, 1, 2], [0, 1, 2, 3])
    assert free_slots(ring) == 10 - len(left)
    for _, slot, _ in left:
        ring.release(slot)
    assert free_slots(ring) == 10


def test_a_batch_the_thread_cannot_hand_over_gives_its_slot_back() -> None:
    """The stop comes while the queue stays full: the thread drops the batch it holds and frees its slot, so
    every slot is either free or in the queue (where close() returns it to the owner)."""
    producer = Producer()
    pf, ring = make(producer, batches=100, depth=2, slots=5)
    assert wait_for(lambda: producer.produced == 3)  # 2 queued, batch 2 held, waiting for room
    pf._stop.set()  # what close() does first; nothing takes from the queue here
    assert wait_for(lambda: not thread_of(pf))
    assert free_slots(ring) == 5 - 2
    assert [b for b, _, _ in pf.close()] == [0, 1]


def test_close_stops_a_thread_that_waits_for_a_free_slot() -> None:
    producer = Producer()
    pf, ring = make(producer, batches=100, depth=4, slots=2)
    held = [pf.get(), pf.get()]  # the consumer holds both slots
    time.sleep(0.1)
    assert pf.alive and producer.produced == 2
    assert pf.close() == []
    assert not pf.alive and not thread_of(pf)
    assert free_slots(ring) == 0 and all(h is not None for h in held)  # still the consumer's


def test_close_stops_a_producer_in_the_middle_of_a_batch() -> None:
    producer = Producer(block_at=2)
    pf, ring = make(producer, batches=10, depth=4)
    assert wait_for(lambda: producer.produced == 3)  # batch 2 is being produced and waits for stop
    left = pf.close()
    assert not pf.alive and not thread_of(pf)
    assert [b for b, _, _ in left] == [0, 1]
    assert free_slots(ring) == 6 - 2  # the interrupted batch gave its slot back (Stopped is quiet)


def test_the_consumer_blocked_in_get_sees_a_late_error() -> None:
    release = threading.Event()

    def slow_fail(b: int, slot: Slot, stop: threading.Event) -> Any:
        release.wait(5)
        raise Boom("late")

    pf = Prefetcher(slow_fail, range(3), SlotRing(2, 4, None), 1)
    threading.Timer(0.2, release.set).start()
    t0 = time.monotonic()
    with pytest.raises(Boom, match="late"):
        pf.get()
    assert time.monotonic() - t0 >= 0.15  # get() waited for it instead of returning early
    pf.close()


def test_close_is_idempotent_and_the_thread_is_a_named_daemon() -> None:
    pf = Prefetcher(Producer(), range(5), SlotRing(2, 4, None), 1)
    assert [t.name for t in thread_of(pf)] == ["recpack-reader"] and pf._thread.daemon
    pf.close()
    assert pf.close() == []
    assert not thread_of(pf)
