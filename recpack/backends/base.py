"""The record-source protocol: what every on-disk kind of dataset offers the rest of recpack.

``recpack.open``, the Loader, ``verify``, ``inspect`` and ``convert`` talk to a :class:`RecordSource` only;
nothing outside ``recpack.backends`` branches on the kind of dataset. A source provides:

- ``table``: the :class:`~recpack.table.Table` of every record (file, offset, length, label, image size);
- ``files``: when ``spans`` is true, the files the table's offsets point into; the Loader then reads
  stretches of consecutive records of one file with single large reads and hands each record's bytes to
  :meth:`RecordSource.payload`, which checks it (checksums, and that it is the record the table says) and
  returns its image bytes. Sources without spans (LMDB) return checked image bytes from :meth:`fetch`;
- :meth:`record` (random access to one fully checked :class:`~recpack.record.Record`), :meth:`scan` (every
  record in storage order, damaged ones as :class:`Damage`), :meth:`verify`, :meth:`summary` and
  :meth:`where` (file and offset of a record, for messages).

Every check a backend can make is made inside the backend, so the same record is equally safe whichever
backend stores it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..closing import Closing
from ..errors import FormatError
from ..fileio import OpenFiles
from ..record import Record
from ..table import Table

__all__ = ["RecordSource", "Damage", "Problem", "VerifyResult", "Decoder"]

#: Decodes one image (raises on failure); verify(decode=True) passes the Pillow/simplejpeg decoder.
Decoder = Callable[[bytes], object]


@dataclass(frozen=True)
class Damage:
    """Records a scan could not deliver: ``error`` says where and why, ``records`` how many records it
    stands for (a damaged region or an unreadable file can hide many)."""

    error: FormatError
    records: int = 1


@dataclass
class Problem:
    """One finding of ``verify``: the file, the offset (or record number), the key when readable."""

    shard: str
    offset: int
    key: str | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"shard": self.shard, "offset": self.offset, "key": self.key, "message": self.message}


@dataclass
class VerifyResult:
    """Outcome of ``verify``. ``ok`` is True when nothing is wrong."""

    path: str
    records: int = 0  # records that passed
    expected: int = 0  # records the dataset says it holds
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)
    decoded: bool = False  # whether every image was also decoded

    @property
    def ok(self) -> bool:
        return not self.problems and self.records == self.expected

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "ok": self.ok, "records": self.records, "expected": self.expected,
                "bytes": self.bytes, "decoded": self.decoded, "problems": [p.to_json() for p in self.problems]}


class RecordSource(Closing):
    """Base class of the backends (see the module docstring). Subclasses set ``kind`` and implement the
    methods that raise NotImplementedError; they register in :data:`recpack.backends.BACKENDS`."""

    #: The registry name, also ``summary()["backend"]``.
    kind: ClassVar[str] = ""
    #: True when records are byte ranges ``[offset, offset + length)`` of ``files`` (see the module docstring).
    spans: ClassVar[bool] = False

    def __init__(self, path: str, table: Table | None, classes: list[str], files: list[str]) -> None:
        self.path = path
        if table is not None:  # (a source may build its table lazily, as a property)
            self.table = table
        self.classes = classes
        self.files = files
        self.names = [os.path.basename(f) for f in files]

    @classmethod
    def claims(cls, path: str) -> bool:
        """True when ``path`` is a dataset of this kind that is not described by an index.json (a file
        format read in place, such as an MXNet ``.rec``). Folders with an index.json are matched on its
        ``backend`` field instead (:attr:`manifest_backend`)."""
        return False

    #: The ``backend`` value in index.json this class reads, or "" for kinds without a manifest.
    manifest_backend: ClassVar[str] = ""

    def __len__(self) -> int:
        return self.table.n

    @property
    def dataset_id(self) -> str:
        """What names this dataset (index.json's dataset_id; for a file read in place, its name and size):
        a Loader state saved on one dataset is refused on another."""
        return f"{os.path.basename(self.path)}:{sum(os.path.getsize(f) for f in self.files if os.path.exists(f))}"

    # -- reading --------------------------------------------------------------------------------------------
    def record(self, i: int) -> Record:
        """Record ``i`` (a global id in ``[0, len)``), fully checked; raises CorruptRecord."""
        raise NotImplementedError

    def payload(self, i: int, view: memoryview) -> memoryview:
        """Check record ``i`` given its bytes ``view`` (exactly ``table.length[i]`` bytes read from
        ``files[table.shard[i]]`` at ``table.offset[i]``) and return its image bytes (a view into ``view``).
        Raises CorruptRecord naming file, offset and key. Only for sources with ``spans``."""
        raise NotImplementedError

    def fetch(self, i: int) -> bytes | memoryview:
        """The checked image bytes of record ``i``, for sources without ``spans``."""
        return self.record(i).data

    def scan(self) -> Iterator[tuple[int, Record] | tuple[None, Damage]]:
        """Every record in storage order with large sequential reads: ``(i, record)``, or ``(None, damage)``
        for what could not be delivered (counted in records). Damaged files are recovered where possible."""
        raise NotImplementedError

    def where(self, i: int) -> tuple[str, int]:
        """(file name, byte offset or record number) of record ``i``, for messages."""
        s = int(self.table.shard[i])
        return self.names[s] if s < len(self.names) else os.path.basename(self.path), int(self.table.offset[i])

    def problems(self) -> list[FormatError]:
        """Damage found while opening: files whose record table could not be read, or a table that does not
        match the data. ``record`` and ``scan`` still deliver what is intact; readers that need every
        record's table entry (the Loader) refuse a source with problems."""
        return []

    # -- checking and describing -------------------------------------------------------------------------------
    def verify(self, decode: Decoder | None = None, progress: bool = False) -> VerifyResult:
        """Read everything once and check every checksum (and decode each image with ``decode``). Never
        raises for damaged data: it is reported in the result."""
        raise NotImplementedError

    def summary(self) -> dict[str, Any]:
        """What ``recpack inspect`` prints beyond the table statistics: at least ``backend``,
        ``format_version``, ``created_by``, ``bytes``, ``files`` (list of {name, records, bytes}), ``pack``."""
        raise NotImplementedError

    def data_files(self) -> list[str]:
        """Every file holding record data (what a cold-cache benchmark evicts, what ``du`` would count)."""
        return list(self.files)

    def open_files(self, direct: bool = False, advice: str | None = None) -> OpenFiles:
        """A bounded set of open ``files`` for large span reads (sources with ``spans``)."""
        return OpenFiles(self.files, direct=direct, advice=advice)

    def after_fork(self) -> None:
        """Called in a forked child before the source is used there: forget open files and locks inherited
        from the parent (whose threads may have held them) without touching the parent's state."""

    def close(self) -> None:
        """Release open files and maps; reading again reopens them."""
