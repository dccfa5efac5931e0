"""``recpack demo``: the main job end to end on a built-in default dataset.

Generates ImageNet-like JPEGs from the bundled photos, packs them, verifies the dataset, reads it back in
shard order and in random order, runs :class:`recpack.Loader` over it (raw records, then decoded
RandomResizedCrop-224 batches), and prints what each step reached.
Reads here come from the page cache (the files were just written); ``recpack bench`` measures cold reads.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

from . import Dataset, ImageOptions, PackOptions, pack, verify
from .synth import make_image_folder

__all__ = ["run_demo"]


def run_demo(workdir: str, images: int, size: tuple[int, int], workers: int | None,
             echo: Callable[[str], None] = print) -> dict[str, float]:
    """Run the demo in ``workdir``; returns the measured rates (also printed through ``echo``)."""
    src = os.path.join(workdir, "images")
    out = os.path.join(workdir, "dataset")
    rates: dict[str, float] = {}
    threads = os.cpu_count() or 1

    t0 = time.perf_counter()
    paths = make_image_folder(src, images, classes=10, size=size, seed=0, progress=True)
    dt = time.perf_counter() - t0
    src_bytes = sum(os.path.getsize(p) for p in paths)
    echo(f"generated {len(paths)} JPEGs ({size[0]}x{size[1]}, mean {src_bytes / len(paths) / 1e3:.0f} KB) "
         f"in {dt:.1f} s")

    res = pack(src, out, PackOptions(workers=workers, overwrite=True, image=ImageOptions()))
    rates["pack images/s"] = res.images_per_s
    echo(f"packed {res.records} records into {len(res.shards)} shard(s), {res.bytes / 1e6:.1f} MB, in "
         f"{res.seconds:.2f} s")

    t0 = time.perf_counter()
    check = verify(out)
    dt = time.perf_counter() - t0
    if not check.ok:
        raise RuntimeError(f"demo dataset failed verification: {check.problems[:3]}")
    rates["verify MB/s"] = check.bytes / 1e6 / dt

    with Dataset(out) as ds:
        t0 = time.perf_counter()
        nbytes = sum(len(r.data) for r in ds)
        dt = time.perf_counter() - t0
        rates["sequential read images/s"] = len(ds) / dt
        rates["sequential read MB/s"] = nbytes / 1e6 / dt

        order = np.random.default_rng(0).permutation(len(ds))
        t0 = time.perf_counter()
        for i in order.tolist():
            ds[i]
        rates["random read images/s"] = len(ds) / (time.perf_counter() - t0)

    from . import Loader  # imports torch

    for label, kwargs in (("Loader raw records", {"decode": False, "transform": None}),
                          (f"Loader train 224 ({threads} threads)", {"transform": "train"})):
        with Loader(out, batch_size=128, order="shard_shuffle", device="cpu", **kwargs) as loader:
            t0 = time.perf_counter()
            n = sum(len(y) for _, y in loader)
            rates[f"{label} images/s"] = n / (time.perf_counter() - t0)

    echo("")
    echo(f"{'step':38s} {'rate':>12s}")
    for name, value in rates.items():
        echo(f"{name:38s} {value:12,.0f}")
    echo("(reads come from the page cache: the dataset was just written; benchmarks/pack.py measures cold reads)")
    return rates
