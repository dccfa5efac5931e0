"""recpack.buffers: the read-buffer pool."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

from recpack.buffers import BufferPool


@pytest.mark.parametrize("n", [1, 4096, 65536, 65537, 112_640, 8 << 20, (8 << 20) + 8192, 33 << 20])
def test_size_classes_cover_with_at_most_an_eighth_slack(n: int) -> None:
    c = BufferPool.size_class(n)
    assert c >= n and (c == 1 << 16 or c <= n * 1.125)


def test_a_buffer_comes_back_only_when_no_view_is_left() -> None:
    pool = BufferPool(keep_bytes=1 << 30)
    a = pool.take(100_000)
    a[:] = 7
    view = memoryview(a)[10:20]  # a view outlives the array object
    del a
    gc.collect()
    b = pool.take(100_000)  # must not be the same memory: `view` still sees it
    b[:] = 9
    assert bytes(view) == b"\x07" * 10 and pool.allocated == 2
    del view, b
    gc.collect()
    for _ in range(10):  # both are back: no new allocation for same-class sizes
        c = pool.take(99_000)
        del c
    assert pool.allocated == 2


def test_free_buffers_are_capped() -> None:
    pool = BufferPool(keep_bytes=3 * BufferPool.size_class(200_000))
    held = [pool.take(200_000) for _ in range(6)]
    del held
    gc.collect()
    assert sum(len(v) for v in pool._free.values()) == 3
    pool.clear()
    assert not pool._free


def test_threads_never_share_a_live_buffer() -> None:
    pool = BufferPool(keep_bytes=1 << 24)
    errors: list[str] = []

    def work(k: int) -> None:
        for i in range(300):
            a = pool.take(70_000 + i)
            a[:] = k
            if not (a == k).all():
                errors.append(f"thread {k}: buffer overwritten")
            del a

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and pool.allocated <= 8
    assert np.dtype(pool.take(10).dtype) == np.uint8


def test_numpy_slices_keep_the_buffer_out_of_the_pool() -> None:
    pool = BufferPool(keep_bytes=1 << 30)
    a = pool.take(200_000)
    a[:] = 3
    part = a[1000:2000]  # numpy points a slice at the memory's owner, not at `a`
    del a
    gc.collect()
    b = pool.take(200_000)
    b[:] = 4
    assert (part == 3).all() and pool.allocated == 2


@pytest.mark.parametrize("n", [100_000, 2 << 20, (9 << 20) + 12345, 33 << 20])
def test_buffers_are_aligned_for_direct_io_and_large_ones_for_huge_pages(n: int) -> None:
    import mmap

    pool = BufferPool(keep_bytes=1 << 30)
    a = pool.take(n)
    assert len(a) == n and a.ctypes.data % 4096 == 0
    a[:] = 5  # writable, every byte
    assert int(a[-1]) == 5
    if n >= 2 << 20 and hasattr(mmap, "MADV_HUGEPAGE"):  # Linux: whole huge pages can back it
        assert a.ctypes.data % (2 << 20) == 0
    del a
    gc.collect()
    b = pool.take(n)  # the same memory comes back, still usable
    b[:] = 6
    assert pool.allocated == 1 and int(b[0]) == 6
