"""Reading, checking and encoding source images: :func:`process` turns a chunk of source items into records
(or skip reasons), and :class:`Pool` runs it over many chunks in a process pool, results in plan order.

A chunk is up to :data:`CHUNK_ITEMS` items or :data:`CHUNK_BYTES` of source files, whichever comes first:
large enough that pickling a chunk through the pool's pipe is cheap per image, small enough that a pool of
N workers has ``3 * N`` chunks in flight without holding much memory.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import numpy as np

from ..errors import BadImage
from ..format import encode_record
from ..imaging import ImageOptions, prepare, read_source
from ..sources import SourceItem
from .plan import Plan, json_label

__all__ = ["CHUNK_BYTES", "CHUNK_ITEMS", "Pool", "Result", "chunks", "default_workers", "process"]

CHUNK_ITEMS = 32
CHUNK_BYTES = 16 << 20

Result = tuple[str, Any, Any]
"""``("ok", record bytes, (label, width, height))`` or ``("skip", key, reason)``."""


def default_workers(image: ImageOptions, cores: int | None = None) -> int:
    """All cores, except for pure pass-through packing on <= 2 cores, which runs in-process: passing a JPEG
    through costs less CPU than a pool spends pickling it through a pipe (docs/benchmarks.md)."""
    cores = cores or os.cpu_count() or 1
    light = image.check == "header" and image.resize is None and not image.reencode and not image.restart_markers
    return 0 if light and cores <= 2 else cores


def _record_meta(item: SourceItem, width: int, height: int, extra: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {"key": item.key}
    if item.label is not None:
        meta["label"] = json_label(item.label)
    if item.id is not None:
        meta["id"] = item.id
    meta["size"] = [width, height]
    meta.update(extra)
    return meta


def process(items: list[SourceItem], opts: ImageOptions) -> list[Result]:
    """Read, check, convert and encode ``items`` (runs in a worker process; pure given the files)."""
    out: list[Result] = []
    for it in items:
        try:
            read = getattr(it, "read", None)  # recpack.convert items read themselves out of a container
            img = prepare(read(opts.max_bytes) if read else read_source(it.path, opts.max_bytes), opts)
        except BadImage as exc:
            out.append(("skip", it.key, exc.reason))
            continue
        record = encode_record(_record_meta(it, img.width, img.height, img.meta), img.data)
        out.append(("ok", record, (it.label, img.width, img.height)))
    return out


def chunks(plan: Plan, positions: np.ndarray) -> Iterator[list[SourceItem]]:
    """The items at ``positions`` of ``plan``, in order, cut into chunks (see the module docstring)."""
    items = plan.source.items
    chunk: list[SourceItem] = []
    nbytes = 0
    for i, size in zip(plan.order[positions].tolist(), plan.sizes[positions].tolist()):
        chunk.append(items[i])
        nbytes += size
        if len(chunk) >= CHUNK_ITEMS or nbytes >= CHUNK_BYTES:
            yield chunk
            chunk, nbytes = [], 0
    if chunk:
        yield chunk


def _init_worker() -> None:
    """Pool worker start-up: leave Ctrl-C to the parent (which stops the pool after cleaning up), and end this
    process when the parent ends, however it ends: a worker blocked on its task queue would otherwise wait
    forever after a SIGKILL of the parent (the queue's pipe stays open in the worker itself)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), name="recpack-parent-watch", daemon=True).start()


def _exit_with(parent: Any) -> None:
    parent.join()  # waits on the parent's sentinel (a pipe on POSIX, a process handle on Windows): no polling
    os._exit(1)


class Pool:
    """Runs :func:`process` on chunks, in order, in a process pool (or inline for workers <= 1). Workers are
    spawned (not forked: no inherited threads or locks), ignore SIGINT and exit when this process exits."""

    def __init__(self, workers: int, opts: ImageOptions) -> None:
        self.opts = opts
        self.workers = workers
        self.ex: ProcessPoolExecutor | None = None
        if workers > 1:
            self.ex = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                          initializer=_init_worker)

    def map(self, chunks: Iterator[list[SourceItem]]) -> Iterator[tuple[list[SourceItem], list[Result]]]:
        if self.ex is None:
            for c in chunks:
                yield c, process(c, self.opts)
            return
        window: deque[tuple[list[SourceItem], Future[list[Result]]]] = deque()
        for c in chunks:
            window.append((c, self.ex.submit(process, c, self.opts)))
            if len(window) >= 3 * self.workers:
                c0, fut = window.popleft()
                yield c0, fut.result()
        while window:
            c0, fut = window.popleft()
            yield c0, fut.result()

    def close(self) -> None:
        if self.ex is not None:
            self.ex.shutdown(wait=True, cancel_futures=True)
            self.ex = None
