"""Record sources: one module per on-disk kind of dataset, behind one protocol (:mod:`.base`).

=========  ===================================================  ==========================================
kind       what                                                 module
=========  ===================================================  ==========================================
shards     ``recpack pack`` output: index.json + shard files    :mod:`recpack.backends.shards`
lmdb       ``recpack pack --backend lmdb``: index.json + LMDB   :mod:`recpack.backends.lmdb`
mxrec      an MXNet RecordIO ``.rec`` (+ ``.idx``), in place    :mod:`recpack.backends.mxrec`
=========  ===================================================  ==========================================

:func:`open_source` is the only place that decides which backend reads a path: file formats read in place
are asked first (:meth:`RecordSource.claims`), then a dataset folder's index.json names its backend. Adding a
backend is one module with a :class:`RecordSource` subclass and one line in :data:`BACKENDS`.
"""

from __future__ import annotations

import os

from ..errors import ManifestError
from ..index import dataset_folder, read_manifest
from .base import Damage, Problem, RecordSource, VerifyResult
from .lmdb import LmdbSource
from .mxrec import RecSource
from .shards import ShardSource

__all__ = ["BACKENDS", "open_source", "RecordSource", "Damage", "Problem", "VerifyResult"]

#: Every backend, by kind.
BACKENDS: dict[str, type[RecordSource]] = {cls.kind: cls for cls in (ShardSource, LmdbSource, RecSource)}


def open_source(path: str | os.PathLike[str]) -> RecordSource:
    """The record source for ``path``: a dataset folder (or its index.json) or a file a backend reads in
    place. Raises ManifestError / FormatError naming the path and what to do."""
    p = os.fspath(path)
    for cls in BACKENDS.values():
        if not cls.manifest_backend and cls.claims(p):
            return cls(p)  # type: ignore[call-arg]
    folder = dataset_folder(p)
    manifest = read_manifest(folder)
    for cls in BACKENDS.values():
        if cls.manifest_backend and cls.manifest_backend == manifest.backend:
            return cls(folder, manifest)  # type: ignore[call-arg]
    known = sorted(c.manifest_backend for c in BACKENDS.values() if c.manifest_backend)
    raise ManifestError(f"{folder}: index.json names backend {manifest.backend!r}, which this recpack does not "
                        f"read (it reads {known}); upgrade recpack or re-pack the dataset")
