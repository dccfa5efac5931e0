"""``recpack.open(path)``: a packed dataset as a sequence of :class:`Record` s.

``len(ds)``, ``ds[i]`` (O(1): one ``pread`` through the record table), ``ds[a:b]`` (a list) and iteration in
storage order (large sequential reads). Works on every backend (:mod:`recpack.backends`): recpack shard
datasets, LMDB datasets written by ``recpack pack --backend lmdb`` and MXNet ``.rec`` files read in place.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import overload

import numpy as np

from .backends import RecordSource, open_source
from .closing import Closing
from .errors import FormatError
from .record import Record

__all__ = ["Dataset", "open", "Record"]

_ON_ERROR = ("raise", "skip")


class Dataset(Closing):
    """A packed dataset. Open with :func:`recpack.open`; close with ``close()`` or a ``with`` block.

    Attributes: ``path``, ``source`` (the backend's :class:`~recpack.backends.RecordSource`), ``manifest``
    (the index.json, or None for a file read in place), ``classes`` (names by label), ``stats`` (dict of
    counters: ``skipped`` — records not delivered while iterating with ``on_error="skip"``).
    """

    def __init__(self, source: RecordSource | str | os.PathLike[str], on_error: str = "raise") -> None:
        if on_error not in _ON_ERROR:
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        if not isinstance(source, RecordSource):
            source = open_source(source)
        self.source = source
        self.path = source.path
        self.on_error = on_error
        self.manifest = getattr(source, "manifest", None)
        self.classes: list[str] = list(source.classes)
        self.stats: dict[str, int] = {"skipped": 0}

    # -- structure ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.source)

    @property
    def backend(self) -> str:
        return self.source.kind

    def table(self) -> np.ndarray:
        """Every record's table row (TABLE_DTYPE: offset within its file, label, length, width, height,
        flags), in record order; a new array of 32 bytes per record."""
        return self.source.table.rows()

    @property
    def labels(self) -> np.ndarray:
        """Integer label of every record (int64; -1 where there is none), from the record table."""
        return np.array(self.source.table.label, dtype=np.int64)

    # -- access -------------------------------------------------------------------------------------------
    @overload
    def __getitem__(self, i: int) -> Record: ...

    @overload
    def __getitem__(self, i: slice) -> list[Record]: ...

    def __getitem__(self, i: int | slice) -> Record | list[Record]:
        """Record ``i`` (negative counts from the end), or a list of records for a slice. Always raises on a
        damaged record, whatever ``on_error``."""
        n = len(self)
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(n))]
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"dataset indices must be integers or slices, not {type(i).__name__}")
        if not -n <= i < n:
            raise IndexError(f"record {i} out of range for a dataset of {n} records")
        return self.source.record(int(i) % n)

    def __iter__(self) -> Iterator[Record]:
        """Every record in storage order. With ``on_error="skip"``, what cannot be delivered (damaged records,
        unreadable shards) is skipped, counted in ``stats["skipped"]`` and warned about once per file;
        damaged shards are recovered by scanning."""
        warned: set[str] = set()
        for _, item in self.source.scan():
            if isinstance(item, Record):
                yield item
                continue
            if self.on_error == "raise":
                raise item.error
            self.stats["skipped"] += item.records
            self._warn(item.error, warned)

    @staticmethod
    def _warn(error: FormatError, warned: set[str]) -> None:
        where = os.path.basename(error.path or "")
        if where not in warned:
            warned.add(where)
            warnings.warn(f"skipping corrupt data ({error}); further problems in this file are counted "
                          "silently — run `recpack verify` for the full list", RuntimeWarning, stacklevel=3)

    # -- lifetime -----------------------------------------------------------------------------------------
    def close(self) -> None:
        self.source.close()

    def __repr__(self) -> str:
        return (f"<recpack.Dataset {self.path!r}: {len(self)} records, {len(self.source.names)} files, "
                f"backend={self.backend}>")


def open(path: str | os.PathLike[str], on_error: str = "raise") -> Dataset:  # noqa: A001 - public API name
    """Open the dataset at ``path``: a recpack dataset folder (or its index.json), or a file a backend reads
    in place, such as an MXNet RecordIO ``.rec`` (with its ``.idx`` when there is one).

    ``on_error``: "raise" (default) raises :class:`CorruptRecord` at the first damaged record while
    iterating; "skip" skips and counts damaged records. ``ds[i]`` always raises on a damaged record."""
    if on_error not in _ON_ERROR:
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    return Dataset(open_source(path), on_error)
