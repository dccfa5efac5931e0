"""The timed read tests of ``recpack bench device``: the test file, the readers and their numbers.

:data:`TESTS` (:func:`tests_for` with other thread counts and record sizes), each run by :func:`run_test` for
``duration`` seconds (or ``max_reads``) on a file of random bytes (:func:`make_test_file`):

- ``rand_4k_qd1``: random 4 KiB reads, one thread (queue depth 1) -- latency;
- ``rand_4k_threads``: random 4 KiB reads from ``threads`` concurrent readers (forked processes where ``fork``
  exists, since threads sharing the GIL fall short of fio on a fast device) -- the device's parallelism;
- ``rand_record_qd1``: random reads of the dataset's record size (default 110 KiB), one thread;
- ``seq_1m``: sequential 1 MiB reads, one thread, normal readahead -- bandwidth.

Reads are ``os.preadv`` into a page-aligned buffer allocated once per reader (the GIL is released while the
kernel reads); random offsets are a seeded permutation of the file's aligned slots, so no slot is read twice
in a pass (like fio's random map); each reader owns a slice of the file, and when it has read its whole slice
it drops the slice from the page cache and starts a new pass. Random tests advise ``RANDOM`` (no readahead),
the sequential one ``SEQUENTIAL`` (:func:`recpack.fileio.advise`). With ``direct=True`` every read uses
``O_DIRECT``. Making the file cold before a test is the caller's job (:func:`recpack.bench.cache.evict`).
Cost per test: ``duration`` seconds and one ``block``-sized buffer per reader.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..errors import RecpackError
from ..fileio import advise
from .cache import evict_file
from .stats import summarize

__all__ = ["ReadSpec", "TESTS", "tests_for", "plan_file_size", "make_test_file", "run_test"]

MiB = 1 << 20
_ALIGN = 4096


@dataclass(frozen=True)
class ReadSpec:
    """One timed test: ``block`` bytes per read, ``threads`` readers, ``pattern`` "random" or "sequential"."""

    name: str
    block: int
    threads: int
    pattern: str
    label: str


def _kib(n: int) -> str:
    return f"{n >> 20} MiB" if n % MiB == 0 else f"{n / 1024:g} KiB"


def tests_for(threads: int, record_bytes: int) -> list[ReadSpec]:
    """The tests :func:`recpack.bench.device.bench_device` runs, in order (:data:`TESTS` with the given threads
    and record size)."""
    return [
        ReadSpec("rand_4k_qd1", 4096, 1, "random", "random 4 KiB, 1 thread"),
        ReadSpec("rand_4k_threads", 4096, threads, "random", f"random 4 KiB, {threads} threads"),
        ReadSpec("rand_record_qd1", record_bytes, 1, "random", f"random {_kib(record_bytes)}, 1 thread"),
        ReadSpec("seq_1m", MiB, 1, "sequential", "sequential 1 MiB, 1 thread"),
    ]


#: The default tests (16 threads, 110 KiB records).
TESTS = tests_for(16, 110 << 10)


def plan_file_size(requested: int, free: int) -> int:
    """The test file size: ``requested`` capped at half of ``free`` bytes, rounded down to a MiB. RecpackError
    when that leaves less than 8 MiB."""
    size = min(requested, free // 2) // MiB * MiB
    if size < 8 * MiB:
        raise RecpackError(f"only {free / 1e6:.0f} MB free; the device test needs at least 16 MB free "
                           "(it uses at most half of the free space)")
    return size


def make_test_file(folder: Path, size: int, *, seed: int = 0, progress: bool = True) -> Path:
    """Write ``size`` bytes of random (incompressible) data to ``folder/.recpack-bench-<random>`` and fsync.
    The caller removes it; on an error here it is removed before raising."""
    path = folder / f".recpack-bench-{os.urandom(6).hex()}"
    rng = np.random.default_rng(seed)
    chunk = 8 * MiB
    try:
        with open(path, "wb") as f, tqdm(total=size, unit="B", unit_scale=True, desc="writing test file",
                                         disable=not progress, file=sys.stderr, leave=False) as bar:
            left = size
            while left > 0:
                n = min(chunk, left)
                f.write(rng.bytes(n))
                left -= n
                bar.update(n)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        path.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise RecpackError(f"cannot write the test file {path}: {e}; free some space or pass --size") from e
        raise
    return path


@dataclass
class _Worker:
    lat: list[int] = field(default_factory=list)
    nbytes: int = 0
    passes: int = 0
    error: BaseException | None = None
    t_start: int = 0  # perf_counter_ns (CLOCK_MONOTONIC: comparable across processes)
    t_end: int = 0
    paused: int = 0  # ns spent dropping the slice from the page cache between passes (not counted as reading)


def _slices(size: int, stride: int, threads: int) -> list[tuple[int, int]]:
    """Split the file's ``size // stride`` slots into ``threads`` contiguous [first, end) slot ranges."""
    slots = size // stride
    if slots < threads:
        raise RecpackError(f"the test file ({size} bytes) is too small for {threads} threads reading "
                           f"{stride} bytes each; pass a larger --size or fewer --threads")
    return [(slots * i // threads, slots * (i + 1) // threads) for i in range(threads)]


def _reader(path: str, spec: ReadSpec, lo: int, hi: int, stride: int, seed: int, index: int, direct: bool,
            warm: bool, deadline_box: list[float], duration_ns: int, max_reads: int | None, stop: Any,
            start: Any, out: _Worker) -> None:
    """One reader (thread or process): see :func:`run_test`. ``stop`` and ``start`` are a threading or a
    multiprocessing Event and Barrier; the deadline is ``deadline_box[0]``, or ``duration_ns`` after the start."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECT", 0) if direct else 0)
    fd = -1
    buf = mmap.mmap(-1, max(spec.block, mmap.PAGESIZE))  # page-aligned, as O_DIRECT needs
    whole = memoryview(buf)
    view = [whole[:spec.block]]
    try:
        fd = os.open(path, flags)
        advise(fd, "RANDOM" if spec.pattern == "random" else "SEQUENTIAL")
        rng = np.random.default_rng([seed, index, spec.block, spec.threads])
        # The loop below is the measurement's own CPU cost, paid per read next to the kernel's: with many
        # threads on a fast device on few cores it is what separates these numbers from fio's, so it does as
        # little as it can (local names only; the stop flag is looked at every 256 reads).
        append = out.lat.append
        clock = time.perf_counter_ns
        preadv = os.preadv
        stopped = stop.is_set
        limit = max_reads if max_reads is not None else -1
        start.wait()
        out.t_start = clock()
        deadline = int(deadline_box[0]) or out.t_start + duration_ns
        done = nbytes = 0
        try:
            while not stopped():
                if out.passes and not warm and not direct:
                    t_evict = clock()
                    evict_file(path, lo * stride, (hi - lo) * stride)  # read through once: cold again
                    out.paused += clock() - t_evict
                out.passes += 1
                if spec.pattern == "random":
                    offsets = ((rng.permutation(hi - lo) + lo) * stride).tolist()
                else:
                    offsets = list(range(lo * stride, hi * stride, stride))
                for off in offsets:
                    t0 = clock()
                    nbytes += preadv(fd, view, off)
                    t1 = clock()
                    append(t1 - t0)
                    done += 1
                    if t1 >= deadline or done == limit or (not done & 255 and stopped()):
                        return
        finally:
            out.nbytes = nbytes
            out.t_end = clock()
    except BaseException as e:  # re-raised by the main thread
        out.error = e
        stop.set()
        try:
            start.abort()
        except threading.BrokenBarrierError:
            pass
    finally:
        if fd >= 0:
            os.close(fd)
        view[0].release()
        whole.release()
        buf.close()


def _process_main(conn: Any, args: tuple[Any, ...]) -> None:
    """A reader process: run :func:`_reader`, send back (bytes, passes, start, end, error) and the latencies."""
    out = _Worker()
    try:
        reader: Callable[..., None] = _reader  # args: _reader's parameters but the last, as a tuple
        reader(*args, out)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the parent cleans up
        pass
    err = None if out.error is None else (isinstance(out.error, OSError), str(out.error))
    conn.send((out.nbytes, out.passes, out.t_start, out.t_end, out.paused, err))
    conn.send_bytes(np.asarray(out.lat, dtype=np.int64).tobytes())
    conn.close()


def _run_processes(args: list[tuple[Any, ...]], duration: float, bar: Any) -> list[_Worker]:
    """Run one :func:`_reader` per argument tuple in its own forked process; their results as _Workers."""
    ctx = multiprocessing.get_context("fork")
    stop, start = ctx.Event(), ctx.Barrier(len(args) + 1)
    pipes = [ctx.Pipe(duplex=False) for _ in args]
    procs = [ctx.Process(target=_process_main, daemon=True,
                         args=(send, (*a[:-2], stop, start))) for a, (_, send) in zip(args, pipes)]
    workers = [_Worker() for _ in args]
    try:
        for proc in procs:
            proc.start()
        for _, send in pipes:
            send.close()  # the child holds its end now
        try:
            start.wait(timeout=60)
        except threading.BrokenBarrierError:
            pass  # a reader failed to start; its error comes back below
        t0 = time.perf_counter_ns()
        base = bar.n if bar is not None else 0.0
        for (recv, _), w in zip(pipes, workers):
            while not recv.poll(0.25):
                if bar is not None:
                    bar.n = base + min(duration, (time.perf_counter_ns() - t0) / 1e9)
                    bar.refresh()
                if not any(p.is_alive() for p in procs) and not recv.poll(0):
                    raise RecpackError("a reader process died without a result; re-run without --threads "
                                       "or with fewer")
            w.nbytes, w.passes, w.t_start, w.t_end, w.paused, err = recv.recv()
            w.lat = np.frombuffer(recv.recv_bytes(), dtype=np.int64).tolist()
            if err is not None:
                is_os, text = err
                w.error = OSError(text) if is_os else RecpackError(text)
    finally:
        stop.set()
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for recv, _ in pipes:
            recv.close()
    return workers


def run_test(path: str | os.PathLike[str], spec: ReadSpec, *, duration: float = 3.0, max_reads: int | None = None,
             seed: int = 0, direct: bool = False, warm: bool = False, bar: Any = None,
             processes: bool | None = None) -> dict[str, Any]:
    """Run one test on an existing file (made cold first by the caller) and return its numbers
    (:func:`recpack.bench.stats.summarize` plus ``block``, ``threads``, ``pattern``, ``passes``).

    duration (float): seconds; max_reads (int | None): stop after this many reads in all (split over the
    threads), whichever comes first. bar: a tqdm bar advanced by elapsed seconds (or None).
    Random reads use offsets aligned to ``block`` rounded up to 4 KiB; the sequential test reads
    ``block``-sized pieces in order. Cost: ``duration`` seconds and one buffer of ``block`` bytes per thread.

    processes (bool | None): run the ``spec.threads`` readers as forked processes instead of threads (None:
    where ``fork`` exists and there is more than one reader). Python threads share one GIL: each read's
    return waits for it, which on a fast device with few cores costs a sizeable share of the rate; processes
    keep the same per-read work without that contention.
    """
    p = os.fspath(path)
    size = os.path.getsize(p)
    stride = -(-spec.block // _ALIGN) * _ALIGN if spec.pattern == "random" else spec.block
    if size < spec.block:
        raise RecpackError(f"test file of {size} bytes is smaller than one {spec.block}-byte read; pass a larger "
                           "--size")
    slices = _slices(size, stride, spec.threads)
    per_thread = None if max_reads is None else max(1, max_reads // spec.threads)
    if processes is None:
        processes = spec.threads > 1 and "fork" in multiprocessing.get_all_start_methods()
    duration_ns = int(duration * 1e9)
    if processes:
        args = [(p, spec, lo, hi, stride, seed, i, direct, warm, [0.0], duration_ns, per_thread, None, None)
                for i, (lo, hi) in enumerate(slices)]
        workers = _run_processes(args, duration, bar)
        t0 = min(w.t_start for w in workers if w.t_start) if any(w.t_start for w in workers) else 0
        t1 = max(w.t_end for w in workers)
        return _finish(p, spec, workers, t0, t1)
    stop = threading.Event()
    start = threading.Barrier(spec.threads + 1)
    deadline_box = [0.0]
    workers = [_Worker() for _ in range(spec.threads)]
    threads = [threading.Thread(target=_reader, name=f"recpack-bench-{spec.name}-{i}", daemon=True,
                                args=(p, spec, lo, hi, stride, seed, i, direct, warm, deadline_box, duration_ns,
                                      per_thread, stop, start, workers[i]))
               for i, (lo, hi) in enumerate(slices)]
    for t in threads:
        t.start()
    try:
        t0 = time.perf_counter_ns()
        deadline_box[0] = t0 + duration_ns
        try:
            start.wait()
        except threading.BrokenBarrierError:
            pass  # a reader failed to start; its error is raised below
        base = bar.n if bar is not None else 0.0
        for t in threads:
            while t.is_alive():
                t.join(0.25)
                if bar is not None:
                    bar.n = base + min(duration, (time.perf_counter_ns() - t0) / 1e9)
                    bar.refresh()
        t1 = time.perf_counter_ns()
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    return _finish(p, spec, workers, t0, t1)


def _finish(p: str, spec: ReadSpec, workers: list[_Worker], t0: int, t1: int) -> dict[str, Any]:
    for w in workers:
        if w.error is not None:
            if isinstance(w.error, OSError):
                raise RecpackError(f"reading {p} failed: {w.error}") from w.error
            raise w.error
    lat = np.concatenate([np.asarray(w.lat, dtype=np.int64) for w in workers])
    # time spent evicting between passes is bookkeeping, not reading (fio stops at the end of the file instead)
    paused = sum(w.paused for w in workers) / len(workers)
    result = summarize(lat, sum(w.nbytes for w in workers), max(1, t1 - t0 - paused) / 1e9)
    return {"block": spec.block, "threads": spec.threads, "pattern": spec.pattern, **result,
            "passes": sum(w.passes for w in workers)}
