"""The record table: what a reader needs per record without reading it, for every record of a dataset, as
flat numpy arrays indexed by global record id. The one place that maps a global id to where it is stored.

Memory: 31 bytes per record (offset 8, label 8, length, width and height 4 each, shard 2, flags 1; 33 beyond
65,536 files), allocated once. :meth:`Table.fill` copies each file's footer rows straight in, so opening a
dataset never holds a second copy of all its tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .format import TABLE_DTYPE

__all__ = ["Table"]


@dataclass(frozen=True)
class Table:
    """Per-record arrays. Record ``i`` lives in file ``shard[i]`` of its source, at byte ``offset[i]`` for
    ``length[i]`` bytes (sources whose records are not byte ranges of files, like LMDB, store the record
    number in ``offset`` and 0 in ``length``). ``starts[s]`` is the global id of file ``s``'s first record."""

    starts: np.ndarray  # int64 (files + 1,)
    shard: np.ndarray  # uint16 (int32 beyond 65,536 files)
    offset: np.ndarray  # uint64
    length: np.ndarray  # uint32
    label: np.ndarray  # int64: the integer label, the first of several, or -1
    width: np.ndarray  # uint32: stored image width (0 if unknown)
    height: np.ndarray  # uint32
    flags: np.ndarray  # uint8: format.FLAG_* bits

    @property
    def n(self) -> int:
        return len(self.label)

    @property
    def files(self) -> int:
        return len(self.starts) - 1

    @classmethod
    def allocate(cls, counts: Sequence[int]) -> Table:
        """Uninitialised arrays for files of ``counts`` records, filled file by file with :meth:`fill`."""
        c = np.asarray(counts, dtype=np.int64).reshape(-1)
        starts = np.concatenate([[0], np.cumsum(c)]).astype(np.int64)
        n = int(starts[-1])
        shard_dtype = np.uint16 if len(c) <= 1 << 16 else np.int32
        return cls(starts, np.repeat(np.arange(len(c), dtype=shard_dtype), c), np.empty(n, np.uint64),
                   np.empty(n, np.uint32), np.empty(n, np.int64), np.empty(n, np.uint32), np.empty(n, np.uint32),
                   np.empty(n, np.uint8))

    def fill(self, s: int, rows: np.ndarray) -> None:
        """Copy file ``s``'s footer rows (TABLE_DTYPE, as many as :meth:`allocate` was told) in."""
        a, b = int(self.starts[s]), int(self.starts[s + 1])
        for name in ("offset", "length", "label", "width", "height", "flags"):
            getattr(self, name)[a:b] = rows[name]

    @classmethod
    def from_rows(cls, tables: Sequence[np.ndarray]) -> Table:
        """A table from each file's TABLE_DTYPE rows."""
        out = cls.allocate([len(t) for t in tables])
        for s, t in enumerate(tables):
            out.fill(s, t)
        return out

    def rows(self) -> np.ndarray:
        """All records as one TABLE_DTYPE array (offsets within their file); a new array, 32 bytes/record."""
        out = np.empty(self.n, TABLE_DTYPE)
        for name in ("offset", "length", "label", "width", "height", "flags"):
            out[name] = getattr(self, name)
        return out

    def locate(self, ids: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """(file, index within the file) of each global id, vectorised: O(len(ids) * log(files)).

        Raises IndexError for ids outside ``[0, n)``."""
        g = np.asarray(ids, dtype=np.int64)
        if g.size and (int(g.min()) < 0 or int(g.max()) >= self.n):
            raise IndexError(f"record ids must lie in [0, {self.n}); got {int(g.min())}..{int(g.max())}")
        shard = self.shard[g].astype(np.int64)
        return shard, g - self.starts[shard]
