"""``recpack inspect``: what a dataset holds, computed from the record table and the backend's summary alone
(fast: no image bytes are read, except for a file read in place whose table needs one scan)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .backends import open_source

__all__ = ["inspect_dataset"]


def _stats(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {"min": 0, "mean": 0.0, "median": 0.0, "max": 0}
    return {"min": int(values.min()), "mean": round(float(values.mean()), 1),
            "median": float(np.median(values)), "max": int(values.max())}


def inspect_dataset(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON-able summary: counts, classes, shard sizes, bytes, image and record size statistics, and
    ``problems``: files whose record tables could not be read (their records are missing from the
    statistics; ``recpack verify`` says more)."""
    with open_source(path) as source:
        summary = source.summary()
        t = source.table
        labels = t.label
        known = labels[labels >= 0]
        classes = list(source.classes)
        counts = np.bincount(known, minlength=len(classes)) if len(known) else np.zeros(len(classes), int)
        per_class = {classes[i] if i < len(classes) else str(i): int(c) for i, c in enumerate(counts.tolist())}
        files = summary["files"]
        return {
            "path": os.fspath(path),
            "backend": summary["backend"],
            "format_version": summary["format_version"],
            "created_by": summary["created_by"],
            "records": t.n,
            "bytes": summary["bytes"],
            "shards": files,
            "shard_bytes": _stats(np.array([f["bytes"] for f in files], dtype=np.int64)),
            "classes": len(classes),
            "records_per_class": per_class,
            "unlabeled": int((labels < 0).sum()),
            "record_bytes": _stats(np.asarray(t.length, dtype=np.int64)),
            "image_width": _stats(np.asarray(t.width, dtype=np.int64)),
            "image_height": _stats(np.asarray(t.height, dtype=np.int64)),
            "pack": summary["pack"],
            "problems": [str(e) for e in source.problems()],  # files whose tables could not be read
        }
