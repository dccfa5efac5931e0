"""``recpack inspect``: what a dataset holds, computed from the manifest and footer tables alone (fast: no
image bytes are read)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .dataset import open as open_dataset

__all__ = ["inspect_dataset"]


def _stats(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {"min": 0, "mean": 0.0, "median": 0.0, "max": 0}
    return {"min": int(values.min()), "mean": round(float(values.mean()), 1),
            "median": float(np.median(values)), "max": int(values.max())}


def inspect_dataset(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON-able summary: counts, classes, shard sizes, bytes, image and record size statistics."""
    with open_dataset(os.fspath(path)) as ds:  # a dataset folder or an MXNet .rec
        m = ds.manifest
        table = ds.table()
        labels = np.asarray(table["label"], dtype=np.int64)
        known = labels[labels >= 0]
        counts = np.bincount(known, minlength=len(m.classes)) if len(known) else np.zeros(len(m.classes), int)
        per_class: dict[str, int] = {}
        for i, c in enumerate(counts.tolist()):
            name = m.classes[i] if i < len(m.classes) else str(i)
            per_class[name] = int(c)
        shard_bytes = np.array([s.bytes for s in m.shards], dtype=np.int64)
        return {
            "path": os.fspath(path),
            "backend": m.backend,
            "format_version": m.format_version,
            "created_by": m.created_by,
            "records": m.records,
            "bytes": m.total_bytes if m.backend != "lmdb" else _lmdb_size(ds.path),
            "shards": [{"name": s.name, "records": s.records, "bytes": s.bytes} for s in m.shards],
            "shard_bytes": _stats(shard_bytes),
            "classes": len(m.classes),
            "records_per_class": per_class,
            "unlabeled": int((labels < 0).sum()),
            "record_bytes": _stats(np.asarray(table["length"], dtype=np.int64)),
            "image_width": _stats(np.asarray(table["width"], dtype=np.int64)),
            "image_height": _stats(np.asarray(table["height"], dtype=np.int64)),
            "pack": m.pack,
        }


def _lmdb_size(folder: str) -> int:
    from .backends.lmdb import LMDB_FILE

    return os.path.getsize(os.path.join(folder, LMDB_FILE))
