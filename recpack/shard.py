"""Write and read one shard file: records back to back, a footer table for O(1) random access.

Writing goes to a temporary name; :meth:`ShardWriter.finish` writes the table and header and fsyncs, and the
packer renames the file only after :func:`confirm_written` has read it back against the CRC32C computed while
writing. :class:`ShardReader` checks the header and footer table when it opens a shard, then reads single
records with one ``pread`` or all of them in file order with large sequential reads. Reading a whole dataset
of shards, recovering damaged shards and verifying them is :mod:`recpack.backends.shards`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from .fileio import SequentialReader, file_crc, open_readonly, pread
from .record import Record
from .closing import Closing
from .errors import CorruptRecord, CorruptShard
from .crc import crc32c, crc32c_combine
from .format import (
    DATA_OFFSET,
    FORMAT_VERSION,
    HEADER_STRUCT,
    TABLE_DTYPE,
    RECORD_HEADER_SIZE,
    ShardHeader,
    align_up,
    decode_meta,
    pack_header,
    position,
    split_record,
    stamp_identity,
    unpack_header,
)

__all__ = [
    "Record",
    "ShardWriter",
    "ShardInfo",
    "ShardReader",
    "confirm_written",
    "parse_record",
]


def parse_record(buf: memoryview, shard: str, offset: int, length: int | None = None,
                 identity: tuple[int, int] | None = None) -> tuple[Record, int]:
    """Parse and fully check the record at the start of ``buf``; returns it and its total length. With
    ``length`` (from the footer table) the record must be exactly that long, with ``identity`` (position,
    label) it must be that record.

    Raises :class:`CorruptRecord` (naming shard and offset) on any damage or truncation."""
    meta_b, data_b, end = split_record(buf, shard, offset, length, identity)
    meta = decode_meta(meta_b, shard, offset)
    label = meta.get("label")
    if isinstance(label, list):
        label = tuple(label)
    return Record(meta["key"], label, meta, bytes(data_b)), end


@dataclass
class ShardInfo:
    """What the manifest records about one finished shard."""

    name: str
    records: int
    bytes: int
    crc32c: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "records": self.records, "bytes": self.bytes,
                "crc32c": f"{self.crc32c:08x}"}


class ShardWriter:
    """Append records to a new shard file; :meth:`finish` writes the table and header and fsyncs.

    The file is written from scratch at ``path`` (the packer passes a temporary name). ``dataset_id`` (16
    bytes) and ``shard_index`` go into the header; each record is stamped with its position (shard index and
    its index here) and its table label, covered by its header checksum."""

    def __init__(self, path: str, dataset_id: bytes = bytes(16), shard_index: int = 0) -> None:
        if len(dataset_id) != 16:
            raise ValueError(f"dataset_id must be 16 bytes, not {len(dataset_id)}")
        self.dataset_id, self.shard_index = bytes(dataset_id), shard_index
        self.path = path
        self._f: BinaryIO = open(path, "wb")
        self._f.write(bytes(DATA_OFFSET))  # header placeholder; rewritten by finish()
        self._pos = DATA_OFFSET
        self._rows: list[tuple[int, int, int, int, int, int]] = []
        self._crc = 0  # CRC32C of every byte after the header block, as written
        self.file_crc: int | None = None  # CRC32C of the whole finished file

    def add(self, record: bytes, label_row: Callable[[int, int], tuple[int, int, int, int, int, int]]) -> None:
        """Append one encoded record; ``label_row(offset, length)`` builds its table row. The record's
        header is re-written with its identity (position, table label) on the way."""
        row = label_row(self._pos, len(record))
        head = stamp_identity(record, position(self.shard_index, len(self._rows)), row[1])
        body = memoryview(record)[RECORD_HEADER_SIZE:]
        self._f.write(head)
        self._f.write(body)
        self._crc = crc32c(body, crc32c(head, self._crc))
        self._rows.append(row)
        self._pos += len(record)

    def finish(self, fsync: bool = True) -> None:
        """Write padding, footer table and header; flush and (by default) fsync. Closes the file."""
        data_length = self._pos - DATA_OFFSET
        table_offset = align_up(self._pos)
        table = np.array(self._rows, dtype=TABLE_DTYPE).tobytes()
        end = table_offset + len(table)
        for piece in (bytes(table_offset - self._pos), table, bytes(align_up(end) - end)):
            self._f.write(piece)
            self._crc = crc32c(piece, self._crc)
        header = ShardHeader(FORMAT_VERSION, 0, len(self._rows), DATA_OFFSET, data_length,
                             table_offset, len(table), crc32c(table), self.dataset_id, self.shard_index)
        head = pack_header(header)
        self.file_crc = crc32c_combine(crc32c(head), self._crc, align_up(end) - DATA_OFFSET)
        self._f.seek(0)
        self._f.write(head)
        self._f.flush()
        if fsync:
            os.fsync(self._f.fileno())
        self._f.close()

    def abort(self) -> None:
        """Close and delete the partial file (used on errors, Ctrl-C and a full disk)."""
        try:
            self._f.close()
        except OSError:
            pass  # closing flushes the buffer, which fails again on a full disk; the file goes anyway
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    @property
    def records(self) -> int:
        return len(self._rows)


class ShardReader(Closing):
    """Random and sequential access to one shard. Opening reads and checks the header and footer table.

    ``table`` is the footer as a numpy array of TABLE_DTYPE (32 bytes per record)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1
        self.fd = open_readonly(path)
        try:
            self.size = os.fstat(self.fd).st_size
            self.header = unpack_header(pread(self.fd, HEADER_STRUCT.size, 0), path, self.size)
            h = self.header
            raw = pread(self.fd, h.table_length, h.table_offset)  # bounded: checked against file size
            if len(raw) != h.table_length or crc32c(raw) != h.table_crc:
                raise CorruptShard("footer table checksum mismatch; the shard is damaged or truncated",
                                   path, h.table_offset)
            table = np.frombuffer(raw, dtype=TABLE_DTYPE)
            ends = table["offset"].astype(np.uint64) + table["length"].astype(np.uint64)
            if len(table) and (table["offset"].min() < DATA_OFFSET
                               or int(ends.max()) > h.data_offset + h.data_length):
                raise CorruptShard("footer table points outside the data region", path, h.table_offset)
            self.table = table
        except BaseException:
            os.close(self.fd)
            self.fd = -1  # never close this number again: it may already belong to another file
            raise

    def __len__(self) -> int:
        return len(self.table)

    def identity(self, j: int) -> tuple[int, int]:
        """(position, label) that record ``j`` must carry: this shard's index and j, the table's label."""
        return position(self.header.shard_index, j), int(self.table["label"][j])

    def read(self, j: int) -> Record:
        """Record ``j`` of this shard (one pread, fully checked, identity included)."""
        offset = int(self.table["offset"][j])
        length = int(self.table["length"][j])
        return parse_record(memoryview(pread(self.fd, length, offset)), self.path, offset, length,
                            self.identity(j))[0]

    def iter_sequential(self) -> Iterator[tuple[int, Record | CorruptRecord]]:
        """Every record in file order via large sequential reads: (index, record or the error)."""
        seq = SequentialReader(self.fd, self.size)
        for j, (offset, length) in enumerate(zip(self.table["offset"].tolist(), self.table["length"].tolist())):
            view = seq.get(offset, offset + length)
            try:
                rec, _ = parse_record(view, self.path, offset, length, self.identity(j))
            except CorruptRecord as exc:
                yield j, exc
            else:
                yield j, rec
            del view

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1



def confirm_written(path: str, records: int, expected_crc: int) -> int:
    """Read a just-written shard back: its header and table must parse, hold ``records`` records, and the
    whole file's CRC32C must equal ``expected_crc`` (computed while writing). Returns the file size.

    Cheaper than :func:`check_shard` (no per-record parsing) and as strong for a file we just wrote: any
    byte that differs from what was written changes the CRC."""
    with ShardReader(path) as reader:
        if len(reader) != records:
            raise CorruptShard(f"holds {len(reader)} records after writing {records}", path, 0)
        crc = file_crc(reader.fd, reader.size)
        if crc != expected_crc:
            raise CorruptShard(f"reads back with CRC32C {crc:08x}, not the {expected_crc:08x} written", path, 0)
        return reader.size
