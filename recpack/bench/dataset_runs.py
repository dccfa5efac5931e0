"""The timed runs of ``recpack bench dataset``, each from a cold page cache (:func:`recpack.bench.cache.evict`)
and each bounded by ``Options.max_images``:

0. **sequential**: 8 MiB sequential reads of the shard files (at most ``seq_bytes`` or ``time_limit``): the
   device's sequential bandwidth, measured in the same run so that "% of sequential" is computed, not assumed;
1. **files**: the original image files, whole, in random order on ``threads`` threads (what an ImageFolder +
   DataLoader epoch does), bounded by ``time_limit``; file-system metadata is warmed first (as after a first
   epoch), file data is cold;
2. **records_sequential**: the packed records in shard order, ``Loader(decode=False)`` (raw, CRC-checked);
3. **records_shuffled**: the packed records shuffled, ``Loader(decode=False, order=order)``; ``order="auto"``
   probes the device and picks shard_shuffle on HDD-like devices, random elsewhere (reported);
4. **decode**: decode + transform of ``decode_images`` records held in memory, on ``threads`` threads: the CPU
   ceiling; a second, decode-only pass splits the Loader's decode time into decode and transform;
5. **loader**: the full ``recpack.Loader`` (decode, train/val transform, batches) to ``device`` (CUDA when
   available), end to end; its ``stats`` give the stage breakdown (:mod:`recpack.bench.dataset_report`).

Each run returns one dict (name, images, bytes, seconds, images/s, MB/s -- 10^6 bytes of stored image bytes
per second --, cache, order, note and run-specific keys); :mod:`recpack.bench.dataset` puts them together.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..fileio import advise
from ..backends import open_source
from . import dataset_report as report
from .cache import evict

__all__ = ["Options", "data_files", "measure_sequential", "read_files", "open_loader", "read_records", "decode_only",
           "full_loader"]

_READ_BLOCK = 8 << 20
_DECODE_ROUNDS = 3  # in-memory decode passes of each kind; the fastest counts


@dataclass(frozen=True)
class Options:
    """What to measure and how (the command's options).

    device: "cuda", "cuda:N", "cpu" or None (CUDA when available). threads: decode threads, and readers of
    the raw files (default: all cores). order: order of the shuffled runs ("auto" probes the device).
    max_images: images per run at most (0: a whole epoch). time_limit: seconds at most for the bounded runs
    (raw files, sequential read). decode_images: records decoded from memory. seq_bytes: bytes read
    sequentially at most. warm: do not evict the page cache (numbers are labelled warm). io: the Loader's io
    mode for the packed-record and Loader runs; "cold" (default) is what ``io="auto"`` picks for a dataset that
    does not fit in memory -- the case a cold-cache run stands for: direct I/O (see :func:`open_loader`).
    """

    device: str | None = None
    threads: int | None = None
    batch_size: int = 256
    transform: str = "train"
    size: int = 224
    order: str = "auto"
    max_images: int = 10_000
    time_limit: float = 30.0
    decode_images: int = 1000
    seq_bytes: int = 1 << 30
    warm: bool = False
    seed: int = 0
    progress: bool = True
    io: str = "cold"

    @property
    def n_threads(self) -> int:
        return self.threads or os.cpu_count() or 1

    def cap(self, n: int) -> int:
        """``n`` bounded by ``max_images``."""
        return n if self.max_images <= 0 else min(n, self.max_images)


def _bar(total: float | None, desc: str, opts: Options, unit: str = "img") -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B", disable=not opts.progress,
                file=sys.stderr, leave=False, dynamic_ncols=True)


def _run(name: str, images: int, nbytes: int, seconds: float, cache: str, *, order: str | None = None,
         note: str = "", **extra: Any) -> dict[str, Any]:
    ips, mbs = report.rates(images, nbytes, seconds)
    return {"name": name, "images": int(images), "bytes": int(nbytes), "seconds": float(seconds),
            "images_per_s": ips, "mb_per_s": mbs, "pct_of_sequential": None, "cache": cache, "order": order,
            "note": note, **extra}


def data_files(dataset: str | os.PathLike[str]) -> list[str]:
    """The files holding a packed dataset's records (its shards, LMDB's ``data.mdb``, a ``.rec``)."""
    with open_source(dataset) as source:
        return source.data_files()


def measure_sequential(files: Sequence[str], opts: Options) -> dict[str, Any]:
    """Run 0: read ``files`` front to back in 8 MiB reads (POSIX_FADV_SEQUENTIAL), up to ``opts.seq_bytes``
    or ``opts.time_limit`` seconds: the device's sequential bandwidth."""
    total = sum(os.path.getsize(f) for f in files)
    budget = min(total, opts.seq_bytes)
    cache = evict(files, warm=opts.warm)
    buf = bytearray(_READ_BLOCK)
    view = memoryview(buf)
    done = 0
    with _bar(budget, "sequential read", opts, "B") as bar:
        t0 = time.perf_counter()
        for path in files:
            if done >= budget or time.perf_counter() - t0 > opts.time_limit:
                break
            fd = os.open(path, os.O_RDONLY)
            try:
                advise(fd, "SEQUENTIAL")
                offset = 0
                while done < budget and time.perf_counter() - t0 <= opts.time_limit:
                    n = os.preadv(fd, [view], offset)
                    if n <= 0:
                        break
                    offset += n
                    done += n
                    bar.update(n)
            finally:
                os.close(fd)
        seconds = time.perf_counter() - t0
    note = f"{done / 1e6:,.0f} of {total / 1e6:,.0f} MB of shard files" + (
        " (time limit)" if done < budget else "")
    return _run("sequential", 0, done, seconds, cache, note=note)


def read_files(paths: Sequence[str], opts: Options, roots: Sequence[str] = ()) -> dict[str, Any]:
    """Run 1: whole image files in random order on ``opts.n_threads`` threads (like DataLoader workers), at most
    ``opts.max_images`` of them and ``opts.time_limit`` seconds. The sampled files are ``stat`` ed before the
    timed part, so their metadata is warm (as from the second epoch on) while their data is cold."""
    rng = np.random.default_rng([opts.seed, 1])
    sample = [paths[i] for i in rng.permutation(len(paths))[:opts.cap(len(paths))].tolist()]
    cache = evict(list(roots) or sample, warm=opts.warm)
    for p in sample:
        os.stat(p)
    threads = opts.n_threads
    counts = [[0, 0] for _ in range(threads)]
    stop = threading.Event()
    bar = _bar(len(sample), "raw files, random order", opts)
    lock = threading.Lock()
    t0 = time.perf_counter()
    deadline = t0 + opts.time_limit

    def work(k: int) -> float:
        for p in sample[k::threads]:
            if stop.is_set() or time.perf_counter() > deadline:
                break
            with open(p, "rb") as f:
                data = f.read()
            counts[k][0] += 1
            counts[k][1] += len(data)
            with lock:
                bar.update(1)
        return time.perf_counter()

    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="recpack-bench-files") as pool:
            futures = [pool.submit(work, k) for k in range(threads)]
            try:
                ends = [f.result() for f in futures]
            except BaseException:
                stop.set()
                raise
    finally:
        bar.close()
    seconds = max(ends) - t0
    images, nbytes = sum(c[0] for c in counts), sum(c[1] for c in counts)
    note = f"{images:,} of {len(paths):,} files, {threads} threads; metadata warm, data cold"
    extra: dict[str, Any] = {"total_files": len(paths)}
    if images < len(paths) and images:
        est = len(paths) * seconds / images
        extra["extrapolated_epoch_s"] = est
        note += f"; a whole pass would take ~{est:,.0f} s (extrapolated)"
    return _run("files", images, nbytes, seconds, cache, note=note, **extra)


def open_loader(dataset: str, opts: Options, **kwargs: Any) -> Any:
    """A Loader for a cold-cache run: with ``opts.io == "cold"`` (and not ``--warm``), io="direct", what
    io="auto" picks once the shards exceed half the memory (a cold run measures exactly that case, whatever the
    size of the benchmark's own dataset); otherwise ``opts.io``."""
    from .. import Loader

    cold = opts.io == "cold" and not opts.warm
    io = "auto" if opts.io == "cold" else opts.io
    loader = Loader(dataset, opts.batch_size, io=io, **kwargs)
    if cold and loader.io != "direct" and loader.source.spans:
        # the io mode only takes effect when an iteration opens the shards: no second Loader (and probe)
        loader.io = "direct"
        loader.io_reason = "cold run: direct I/O, as io='auto' picks for shards larger than half the memory"
    return loader


def read_records(dataset: str, opts: Options, shuffled: bool) -> dict[str, Any]:
    """Runs 2 and 3: raw records (``Loader(decode=False)``: read and CRC-checked, not decoded), in shard order
    or shuffled with ``opts.order``; the order used and why are reported."""
    name = "records_shuffled" if shuffled else "records_sequential"
    with open_loader(dataset, opts, shuffle=shuffled, order=opts.order if shuffled else "auto",
                     transform=None, decode=False, device="cpu", threads=opts.n_threads, seed=opts.seed) as loader:
        want = opts.cap(loader.table.n)
        cache = evict(data_files(dataset), warm=opts.warm)
        images = nbytes = 0
        with _bar(want, f"packed records, {loader.order}", opts) as bar:
            t0 = time.perf_counter()
            for raw, _ in loader:
                images += len(raw)
                nbytes += sum(len(x) for x in raw)
                bar.update(len(raw))
                if images >= want:
                    break
            seconds = time.perf_counter() - t0
        extra = {"order_reason": loader.order_reason, "io_threads": loader.io_threads, "io": loader.io,
                 "io_reason": loader.io_reason,
                 "run": loader.order_kw["run"] if loader.order == "shard_shuffle" else None}
        order = loader.order
    note = f"order chosen: {extra['order_reason']}" if shuffled and opts.order == "auto" else ""
    return _run(name, images, nbytes, seconds, cache, order=order, note=note, **extra)


def _params(widths: np.ndarray, heights: np.ndarray, opts: Options) -> np.ndarray:
    from ..transforms import train_params, val_params

    if opts.transform == "train":
        return train_params(np.random.default_rng([opts.seed, 4]), widths, heights)
    return val_params(widths, heights, opts.size)


def decode_only(dataset: str, opts: Options) -> dict[str, Any]:
    """Run 4: decode + transform (crop, resize, flip into a (3, size, size) uint8 image, exactly the Loader's
    per-image work) of up to ``opts.decode_images`` records held in memory, on ``opts.n_threads`` threads: the
    CPU ceiling. Alternating passes run only the decode part of the same work (:func:`recpack.decode.decode_crop`
    with the same boxes), so ``transform_fraction`` = 1 - decode time / whole time (clipped to [0, 1]); each kind
    runs 3 times and the fastest counts (other work on the machine only ever slows a pass down)."""
    import torch

    from .. import open as open_dataset
    from ..decode import decode_crop, image_size
    from ..transforms import decode_crop_resize

    with open_dataset(dataset) as ds:
        n = min(len(ds), max(1, opts.decode_images))
        payloads = [bytes(ds[i].data) for i in range(n)]
    sizes = np.array([image_size(p) for p in payloads], dtype=np.int64).reshape(-1, 2)
    params = _params(sizes[:, 0], sizes[:, 1], opts)
    boxes = [(int(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in params.tolist()]
    threads = opts.n_threads
    outs = torch.empty((threads, 3, opts.size, opts.size), dtype=torch.uint8)
    nbytes = sum(len(p) for p in payloads)
    out_size = (opts.size, opts.size)

    def work(k: int, full: bool) -> None:
        for i in range(k, n, threads):
            if full:
                decode_crop_resize(payloads[i], params[i], outs[k])
            else:
                decode_crop(payloads[i], boxes[i], out_size)

    pool = ThreadPoolExecutor(threads, thread_name_prefix="recpack-bench-decode")

    def timed(full: bool) -> float:
        t0 = time.perf_counter()
        for f in [pool.submit(work, k, full) for k in range(threads)]:
            f.result()
        return time.perf_counter() - t0

    # Alternating passes, best of each: on a shared machine a burst of other work hits one pass, not the ratio.
    fulls, decodes = [], []
    with pool, _bar(2 * _DECODE_ROUNDS, "decode from memory", opts, "pass") as bar:
        for _ in range(_DECODE_ROUNDS):
            fulls.append(timed(True))
            bar.update(1)
            decodes.append(timed(False))
            bar.update(1)
    full_s, decode_s = min(fulls), min(decodes)
    frac = min(max(1.0 - decode_s / full_s, 0.0), 1.0) if full_s > 0 else 0.0
    dec_rate = n / decode_s if decode_s > 0 else 0.0
    note = (f"{n:,} records in memory, {threads} threads, {opts.transform} {opts.size}; the decode part alone "
            f"{dec_rate:,.0f} images/s, so the transform is ~{frac:.0%} of the work")
    return _run("decode", n, nbytes, full_s, "warm (in memory)", note=note, transform_fraction=frac,
                decode_part_images_per_s=dec_rate)


def full_loader(dataset: str, opts: Options) -> dict[str, Any]:
    """Run 5: the full Loader (decode, transform, batches, copy to ``opts.device``), shuffled with
    ``opts.order``, end to end; returns the run with the Loader's ``stats`` under ``"loader_stats"``."""
    import torch

    with open_loader(dataset, opts, shuffle=True, order=opts.order, transform=opts.transform,
                     size=opts.size, device=opts.device, threads=opts.n_threads, seed=opts.seed) as loader:
        want = opts.cap(loader.table.n)
        cuda = loader.device.type == "cuda"
        cache = evict(data_files(dataset), warm=opts.warm)
        images = 0
        complete = True
        with _bar(want, f"full Loader to {loader.device}", opts) as bar:
            t0 = time.perf_counter()
            for batch, _ in loader:
                images += int(batch.shape[0])
                bar.update(int(batch.shape[0]))
                if images >= want:
                    complete = images >= loader.per_rank
                    break
            if cuda:
                torch.cuda.synchronize(loader.device)
            seconds = time.perf_counter() - t0
        stats = dict(loader.stats)
        mean_len = float(loader.table.length.mean()) if loader.table.n else 0.0
        # bytes read is exact for a whole epoch; an early stop has read a little ahead, so count what was used
        nbytes = int(stats["read_bytes"]) if complete else int(images * mean_len)
        extra = {"device": str(loader.device), "pinned": cuda, "order_reason": loader.order_reason, "io": loader.io,
                 "loader_stats": stats, "threads": loader.threads}
        order = loader.order
    return _run("loader", images, nbytes, seconds, cache, order=order,
                note=f"{opts.transform} {opts.size}, batch {opts.batch_size}, to {extra['device']}", **extra)
