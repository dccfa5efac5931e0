"""``recpack.open(path)``: a packed dataset as a sequence of :class:`Record` s.

``len(ds)``, ``ds[i]`` (O(1): one ``pread`` through the footer tables) and iteration in shard order (large
sequential reads). Works on recpack shard datasets and on LMDB datasets written by ``recpack pack
--backend lmdb``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
import numpy as np

from .closing import Closing
from .errors import CorruptRecord, FormatError
from .format import TABLE_DTYPE
from .index import Manifest, locate, read_manifest
from .backends.lmdb import LmdbReader
from .shard import Record, ShardReader, scan_records

__all__ = ["Dataset", "open", "Record"]

_ON_ERROR = ("raise", "skip")


class Dataset(Closing):
    """A packed dataset. Open with :func:`recpack.open`; close with ``close()`` or a ``with`` block.

    Attributes: ``path`` (folder), ``manifest``, ``classes`` (names by label), ``stats`` (dict of counters:
    ``skipped`` corrupt records seen while iterating with ``on_error="skip"``).
    """

    def __init__(self, path: str, on_error: str = "raise") -> None:
        if on_error not in _ON_ERROR:
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        self.path = path
        self.on_error = on_error
        self.manifest: Manifest = read_manifest(path)
        self.classes: list[str] = list(self.manifest.classes)
        self.stats: dict[str, int] = {"skipped": 0}
        self._lmdb: LmdbReader | None = None
        self._readers: list[ShardReader | None] = [None] * len(self.manifest.shards)
        if self.manifest.backend == "lmdb":
            self._lmdb = LmdbReader(path, self.manifest.records)
        self._starts = self.manifest.starts()

    # -- structure ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.manifest.records

    @property
    def backend(self) -> str:
        return self.manifest.backend

    def shard_path(self, s: int) -> str:
        return os.path.join(self.path, self.manifest.shards[s].name)

    def _reader(self, s: int) -> ShardReader:
        r = self._readers[s]
        if r is None:
            entry = self.manifest.shards[s]
            r = ShardReader(self.shard_path(s))
            if len(r) != entry.records:
                r.close()
                raise FormatError(f"shard holds {len(r)} records, the manifest says {entry.records}; the "
                                  "dataset is inconsistent — re-run `recpack pack`", r.path, 0)
            self._readers[s] = r
        return r

    def locate(self, i: int) -> tuple[int, int]:
        """(shard number, index within the shard) of global record ``i``."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"record {i} out of range for a dataset of {n} records")
        i %= n
        if self._lmdb is not None:
            return 0, i
        s = int(np.searchsorted(self._starts, i, side="right")) - 1
        return s, i - int(self._starts[s])

    def table(self) -> np.ndarray:
        """The footer tables of all shards concatenated (TABLE_DTYPE; offsets are per shard)."""
        if self._lmdb is not None:
            return self._lmdb.table
        if not self._readers:
            return np.zeros(0, TABLE_DTYPE)
        return np.concatenate([self._reader(s).table for s in range(len(self._readers))])

    @property
    def labels(self) -> np.ndarray:
        """Integer label of every record (int64; -1 where there is none), from the footer tables."""
        return np.asarray(self.table()["label"], dtype=np.int64)

    # -- access -------------------------------------------------------------------------------------------
    def __getitem__(self, i: int) -> Record:
        s, j = self.locate(i)
        if self._lmdb is not None:
            return self._lmdb.read(j)
        return self._reader(s).read(j)

    def __iter__(self) -> Iterator[Record]:
        """Every record in storage order. With ``on_error="skip"``, corrupt records are skipped, counted in
        ``stats["skipped"]`` and warned about once per shard; damaged shards are recovered by scanning."""
        if self._lmdb is not None:
            for i in range(len(self)):
                try:
                    yield self._lmdb.read(i)
                except CorruptRecord as exc:
                    self._skip_or_raise(exc, "data.mdb", set())
            return
        for s in range(len(self.manifest.shards)):
            warned: set[str] = set()
            try:
                reader = self._reader(s)
            except FormatError as exc:
                if self.on_error == "raise":
                    raise
                self._warn(str(exc), self.manifest.shards[s].name, warned)
                yield from self._recover(s, warned)
                continue
            for _, item in reader.iter_sequential():
                if isinstance(item, CorruptRecord):
                    self._skip_or_raise(item, reader.path, warned)
                else:
                    yield item

    def _recover(self, s: int, warned: set[str]) -> Iterator[Record]:
        for _, item in scan_records(self.shard_path(s)):
            if isinstance(item, CorruptRecord):
                self.stats["skipped"] += 1
            else:
                yield item

    def _skip_or_raise(self, exc: CorruptRecord, shard: str, warned: set[str]) -> None:
        if self.on_error == "raise":
            raise exc
        self.stats["skipped"] += 1
        self._warn(str(exc), shard, warned)

    @staticmethod
    def _warn(message: str, shard: str, warned: set[str]) -> None:
        if shard not in warned:
            warned.add(shard)
            warnings.warn(f"skipping corrupt data ({message}); further problems in this shard are counted "
                          "silently — run `recpack verify` for the full list", RuntimeWarning, stacklevel=3)

    # -- lifetime -----------------------------------------------------------------------------------------
    def close(self) -> None:
        for r in self._readers:
            if r is not None:
                r.close()
        self._readers = [None] * len(self._readers)
        if self._lmdb is not None:
            self._lmdb.close()
            self._lmdb = None


    def __repr__(self) -> str:
        return (f"<recpack.Dataset {self.path!r}: {len(self)} records, {len(self.manifest.shards)} shards, "
                f"backend={self.backend}>")


def open(path: str | os.PathLike[str], on_error: str = "raise") -> Dataset:  # noqa: A001 - public API name
    """Open the recpack dataset in folder ``path`` (or its index.json), or an MXNet RecordIO ``.rec`` file
    (read directly, with its ``.idx`` when there is one; see :mod:`recpack.backends.mxrec`).

    ``on_error``: "raise" (default) raises :class:`CorruptRecord` at the first damaged record while
    iterating; "skip" skips and counts damaged records. ``ds[i]`` always raises on a damaged record."""
    from .backends.mxrec import RecDataset, is_rec

    if is_rec(path):
        return RecDataset(os.fspath(path), on_error)
    return Dataset(locate(path), on_error)
