"""The plan of a pack (pure: no image is opened): the global shuffle, the cut into shards, and the fingerprint
that tells a resumed pack from a different one.

The order is a keyed hash of (seed, key), so it does not depend on numpy versions, worker counts or the order
the source was listed in. Planning costs one ``stat`` per source file (for its size and mtime) and one
BLAKE2b per key.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..sources import Source

__all__ = ["RECORD_OVERHEAD", "Plan", "json_label", "make_plan", "plan_shards", "shuffle_order"]

RECORD_OVERHEAD = 128
"""Bytes planned per record on top of its source file: about its header and metadata."""


def shuffle_order(keys: Sequence[str], seed: int) -> np.ndarray:
    """A permutation of ``range(len(keys))``: items sorted by BLAKE2b(seed, key).

    Stable across platforms and numpy versions, independent of input order for distinct keys."""
    salt = int(seed).to_bytes(8, "little", signed=True)
    h = np.fromiter(
        (int.from_bytes(hashlib.blake2b(k.encode("utf-8", "surrogateescape"), digest_size=8, key=salt)
                        .digest(), "little") for k in keys),
        dtype=np.uint64, count=len(keys))
    return np.argsort(h, kind="stable")


def plan_shards(sizes: np.ndarray, shard_size: int, num_shards: int | None) -> list[np.ndarray]:
    """Cut positions ``0..len(sizes)`` (already in shuffled order) into consecutive shards.

    By count when ``num_shards`` is given (as even as possible), else by bytes: an item goes to the shard
    its start offset falls in, so a shard holds at most ``shard_size`` plus one item."""
    n = len(sizes)
    if num_shards is not None:
        return [a for a in np.array_split(np.arange(n), min(num_shards, max(n, 1)))]
    starts = np.cumsum(sizes, dtype=np.int64) - sizes
    ids = starts // shard_size
    _, first = np.unique(ids, return_index=True)
    return [np.arange(a, b) for a, b in zip(first, list(first[1:]) + [n])]


def json_label(label: Any) -> Any:
    """A label as JSON and msgpack write it (a tuple of labels becomes a list)."""
    return list(label) if isinstance(label, tuple) else label


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    except OSError:
        return 0, 0


@dataclass
class Plan:
    """What goes where: ``order[p]`` is the source item at position ``p``; ``shards[s]`` the positions of
    shard ``s``; ``sizes[p]`` the source file size at position ``p``."""

    source: Source
    order: np.ndarray
    shards: list[np.ndarray]
    sizes: np.ndarray
    fingerprint: str
    source_bytes: int


def make_plan(source: Source, seed: int, shard_size: int, num_shards: int | None, params: dict[str, Any]) -> Plan:
    """Shuffle ``source`` and cut it into shards. The fingerprint covers ``params`` (the pack options) and
    every item's key, path, label, id, size and mtime, so any change to the inputs or options changes it."""
    order = shuffle_order([it.key for it in source.items], seed)
    # items that live inside a container (recpack.convert) say their own size and mtime
    stats = [it.stat() if hasattr(it, "stat") else _stat(it.path) for it in (source.items[i] for i in order)]
    sizes = np.array([s for s, _ in stats], dtype=np.int64)
    shards = plan_shards(sizes + RECORD_OVERHEAD, shard_size, num_shards)
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(params, sort_keys=True).encode())
    for pos, i in enumerate(order.tolist()):
        it = source.items[i]
        h.update(json.dumps([it.key, it.path.encode("utf-8", "surrogateescape").hex(), json_label(it.label),
                             it.id, *stats[pos]]).encode())
    h.update(json.dumps([len(s) for s in shards]).encode())
    return Plan(source, order, shards, sizes, h.hexdigest(), int(sizes.sum()))
