"""What every peer runner shares: the command line, the timing loop, the JSON line, the source list and the
hand-written torchvision-equivalent train transform (torchvision has no CPU build here).

Standard library, numpy and Pillow only at import time, so that every peer's virtual environment can import it
(the MXNet one has no torch). ``drop_caches`` comes from ``benchmarks/common.py`` (standard library only).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import drop_caches  # noqa: E402

__all__ = ["parser", "read_list", "timed_epochs", "emit", "rrc_params", "pil_train_transform", "raw_collate",
           "dir_bytes"]

SIZE = 224
SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)


def parser(doc: str | None) -> argparse.ArgumentParser:
    """``pack --work W`` writes the peer's format from ``W/images`` + ``W/list.tsv`` into ``W/<peer>``;
    ``read --work W --mode decoded|raw`` measures it and prints one JSON line."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["pack", "read"])
    ap.add_argument("--work", required=True, type=Path, help="folder with images/ and list.tsv")
    ap.add_argument("--data", type=Path, default=None, help="the peer's packed data (default: WORK/<peer>)")
    ap.add_argument("--mode", choices=["decoded", "raw"], default="decoded",
                    help="decoded: RandomResizedCrop-224 + flip batches; raw: record bytes only")
    ap.add_argument("--variant", default="", help="peer-specific read path (see the runner's docstring)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2, help="worker processes / threads")
    ap.add_argument("--repeat", type=int, default=3, help="timed epochs, each from a cold page cache")
    ap.add_argument("--warmup", type=int, default=2, help="batches read untimed before the timed epochs")
    ap.add_argument("--limit", type=int, default=0, help="read only this many images per epoch (0: all)")
    ap.add_argument("--no-drop", action="store_true", help="do not drop the page cache before each epoch")
    ap.add_argument("--seed", type=int, default=0)
    return ap


def read_list(work: Path) -> list[tuple[str, int]]:
    """(relative path, label) in the shared shuffled order the orchestrator wrote to ``list.tsv``."""
    out = []
    with open(work / "list.tsv") as f:
        for line in f:
            rel, label = line.rstrip("\n").split("\t")
            out.append((rel, int(label)))
    return out


def dir_bytes(path: Path, suffixes: tuple[str, ...] = ()) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and (not suffixes or p.suffix in suffixes))


def timed_epochs(args: argparse.Namespace, paths: Iterable[str | os.PathLike[str]],
                 epoch: Callable[[int], tuple[int, int]], warmup: Callable[[], object] | None = None) -> dict[str, Any]:
    """Run ``warmup`` once, then ``args.repeat`` epochs, each after dropping the page cache of ``paths``.

    ``epoch(e) -> (images, bytes)`` runs one timed pass (worker start-up included, like a real epoch).
    Returns the median epoch's numbers and every epoch's seconds.
    """
    paths = list(paths)
    if warmup is not None and args.warmup > 0:
        warmup()
    runs = []
    how = "warm"
    for e in range(args.repeat):
        if not args.no_drop:
            how = drop_caches(*paths)
        t0 = time.perf_counter()
        n, nbytes = epoch(e + 1)
        runs.append((time.perf_counter() - t0, n, nbytes))
    med = statistics.median(r[0] for r in runs)
    _, n, nbytes = sorted(runs)[(len(runs) - 1) // 2]  # the same every epoch; taken from the median one
    return {"images": n, "bytes": nbytes, "seconds": med, "images_per_s": n / med, "mb_per_s": nbytes / 1e6 / med,
            "all_seconds": [round(r[0], 3) for r in runs], "cache": "cold" if how != "warm" else "warm",
            "cache_how": how}


def emit(peer: str, mode: str, version: str, result: dict[str, Any], **extra: Any) -> None:
    print(json.dumps({"peer": peer, "mode": mode, "version": version, **result, **extra}), flush=True)


# -- torchvision-equivalent train transform on PIL images ------------------------------------------------------
def rrc_params(rnd: random.Random, width: int, height: int) -> tuple[int, int, int, int]:
    """torchvision.transforms.RandomResizedCrop.get_params (scale 0.08-1, ratio 3/4-4/3): (top, left, h, w)."""
    area = width * height
    log_lo, log_hi = math.log(RATIO[0]), math.log(RATIO[1])
    for _ in range(10):
        target = area * rnd.uniform(*SCALE)
        aspect = math.exp(rnd.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rnd.randint(0, height - h), rnd.randint(0, width - w), h, w
    in_ratio = width / height  # fallback: the central crop of the clamped ratio
    if in_ratio < RATIO[0]:
        w, h = width, int(round(width / RATIO[0]))
    elif in_ratio > RATIO[1]:
        h, w = height, int(round(height * RATIO[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def pil_train_transform(img: Any, rnd: random.Random | None = None) -> Any:
    """RandomResizedCrop(224) + RandomHorizontalFlip + PILToTensor, as torchvision does them on a PIL image.

    torchvision's resized_crop on PIL is ``crop`` then ``resize(BILINEAR)`` (Pillow's resize always filters
    with the full support, i.e. antialiased); ``resize(box=...)`` is the same operation in one call.
    Returns a (3, 224, 224) uint8 torch tensor (a view of an HWC array, as PILToTensor returns).
    """
    import numpy as np
    import torch
    from PIL import Image

    rnd = rnd or random  # type: ignore[assignment]
    top, left, h, w = rrc_params(rnd, img.width, img.height)  # type: ignore[arg-type]
    out = img.resize((SIZE, SIZE), Image.BILINEAR, box=(left, top, left + w, top + h))
    if rnd.random() < 0.5:  # type: ignore[union-attr]
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return torch.from_numpy(np.asarray(out).copy()).permute(2, 0, 1)


def pil_decode(data: bytes) -> Any:
    import io

    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")  # as torchvision's pil_loader: always convert


def raw_collate(batch: list[Any]) -> list[Any]:
    """Keep record bytes as a list (torch's default collate cannot stack variable-length bytes)."""
    return batch


def count_batches(batches: Iterable[Any], decoded: bool) -> tuple[int, int]:
    """(images, record bytes) of one pass over DataLoader ``batches``: decoded batches are (images, labels)
    tensors; raw batches are lists of (bytes, label) from :func:`raw_collate` (bytes counted; 0 if decoded)."""
    images = nbytes = 0
    for batch in batches:
        if decoded:
            images += batch[0].shape[0]
        else:
            images += len(batch)
            nbytes += sum(len(b) for b, _ in batch)
    return images, nbytes
