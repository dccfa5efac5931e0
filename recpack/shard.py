"""Write and read one shard file: records back to back, a footer table for O(1) random access.

Writing goes to a temporary name; :func:`ShardWriter.finish` writes the table and header, fsyncs, and the
packer renames the file only after :func:`check_shard` has read it back. Reading uses ``pread`` for single
records and large aligned sequential reads (``CHUNK_BYTES``) when going through a shard in order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from .fileio import CHUNK_BYTES, SequentialReader, file_crc, open_readonly, pread
from .closing import Closing
from .errors import CorruptRecord, CorruptShard, FormatError
from .crc import crc32c, crc32c_combine
from .format import (
    DATA_OFFSET,
    FORMAT_VERSION,
    HEADER_STRUCT,
    RECORD_HEADER_SIZE,
    RECORD_MAGIC,
    TABLE_DTYPE,
    ShardHeader,
    align_up,
    decode_meta,
    decode_record_header,
    pack_header,
    split_record,
    unpack_header,
)

__all__ = [
    "Record",
    "ShardWriter",
    "ShardInfo",
    "ShardReader",
    "Problem",
    "ShardCheck",
    "check_shard",
    "confirm_written",
    "parse_record",
]


_RECORD_MAGIC_BYTES = RECORD_MAGIC.to_bytes(4, "little")


class Record(NamedTuple):
    """One stored record. ``data`` is exactly the stored image bytes."""

    key: str
    label: Any
    meta: dict[str, Any]
    data: bytes


def parse_record(buf: memoryview, shard: str, offset: int, length: int | None = None) -> tuple[Record, int]:
    """Parse and fully check the record at the start of ``buf``; returns it and its total length. With
    ``length`` (from the footer table) the record must be exactly that long.

    Raises :class:`CorruptRecord` (naming shard and offset) on any damage or truncation."""
    meta_b, data_b, end = split_record(buf, shard, offset, length)
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

    The file is written from scratch at ``path`` (the packer passes a temporary name)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._f: BinaryIO = open(path, "wb")
        self._f.write(bytes(DATA_OFFSET))  # header placeholder; rewritten by finish()
        self._pos = DATA_OFFSET
        self._rows: list[tuple[int, int, int, int, int, int]] = []
        self._crc = 0  # CRC32C of every byte after the header block, as written
        self.file_crc: int | None = None  # CRC32C of the whole finished file

    def add(self, record: bytes, label_row: Callable[[int, int], tuple[int, int, int, int, int, int]]) -> None:
        """Append one encoded record; ``label_row(offset, length)`` builds its table row."""
        self._f.write(record)
        self._crc = crc32c(record, self._crc)
        self._rows.append(label_row(self._pos, len(record)))
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
                             table_offset, len(table), crc32c(table))
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

    def read(self, j: int) -> Record:
        """Record ``j`` of this shard (one pread, fully checked)."""
        offset = int(self.table["offset"][j])
        length = int(self.table["length"][j])
        return parse_record(memoryview(pread(self.fd, length, offset)), self.path, offset, length)[0]

    def iter_sequential(self) -> Iterator[tuple[int, Record | CorruptRecord]]:
        """Every record in file order via large sequential reads: (index, record or the error)."""
        seq = SequentialReader(self.fd, self.size)
        for j, (offset, length) in enumerate(zip(self.table["offset"].tolist(), self.table["length"].tolist())):
            view = seq.get(offset, offset + length)
            try:
                rec, _ = parse_record(view, self.path, offset, length)
            except CorruptRecord as exc:
                yield j, exc
            else:
                yield j, rec
            del view

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1



def scan_records(path: str, start: int = DATA_OFFSET, end: int | None = None
                 ) -> Iterator[tuple[int, Record | CorruptRecord]]:
    """Recover records without trusting the footer: walk from ``start``, and after damage resynchronise
    on the next record magic whose header checksum is valid. Yields (offset, record or error)."""
    fd = open_readonly(path)
    try:
        size = os.fstat(fd).st_size
        end = size if end is None else min(end, size)
        seq = SequentialReader(fd, size)
        pos = start
        while pos + RECORD_HEADER_SIZE <= end:
            head = bytes(seq.get(pos, pos + RECORD_HEADER_SIZE))
            try:
                meta_len, data_len, _ = decode_record_header(head, path, pos)
            except CorruptRecord:
                if head[:4] == bytes(4) and _all_zero(seq, pos, end):
                    return  # zero padding before the table: end of the records
                nxt = _find_magic(seq, pos + 1, end)
                yield pos, CorruptRecord("damaged region: no valid record here; skipped to the next one",
                                         path, pos)
                if nxt is None:
                    return
                pos = nxt
                continue
            total = RECORD_HEADER_SIZE + meta_len + data_len
            view = seq.get(pos, pos + total)
            try:
                rec, _ = parse_record(view, path, pos)
            except CorruptRecord as exc:
                yield pos, exc
                nxt = _find_magic(seq, pos + 1, end)
                if nxt is None:
                    return
                pos = nxt
                continue
            finally:
                del view
            yield pos, rec
            pos += total
    finally:
        os.close(fd)


def _all_zero(seq: SequentialReader, pos: int, end: int) -> bool:
    stop = min(end, align_up(pos + 1))  # padding never crosses the next ALIGN boundary
    return not any(bytes(seq.get(pos, stop)))


def _find_magic(seq: SequentialReader, pos: int, end: int) -> int | None:
    """Offset of the next plausible record header (magic + valid header CRC) at or after ``pos``."""
    while pos + RECORD_HEADER_SIZE <= end:
        window = bytes(seq.get(pos, min(end, pos + CHUNK_BYTES // 2)))
        i = window.find(_RECORD_MAGIC_BYTES)
        if i < 0:
            pos += max(1, len(window) - 3)
            continue
        cand = pos + i
        try:
            decode_record_header(bytes(seq.get(cand, cand + RECORD_HEADER_SIZE)), "", cand)
        except CorruptRecord:
            pos = cand + 1
            continue
        return cand
    return None


@dataclass
class Problem:
    """One damaged record or region found by :func:`check_shard`."""

    shard: str
    offset: int
    key: str | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"shard": self.shard, "offset": self.offset, "key": self.key, "message": self.message}


@dataclass
class ShardCheck:
    """The result of checking one shard: intact record count, problems, whole-file CRC32C."""

    path: str
    records: int = 0
    expected: int | None = None
    bytes: int = 0
    crc32c: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_shard(path: str, decode: Callable[[Record], None] | None = None,
                progress: Callable[[int], None] | None = None) -> ShardCheck:
    """Read a whole shard once, sequentially, checking header, table, every record and (optionally)
    decoding each image with ``decode`` (which raises on failure). ``progress(n_bytes)`` is called as
    bytes are consumed. When the header or table is damaged, records are recovered by scanning."""
    name = os.path.basename(path)
    result = ShardCheck(path)

    def report(offset: int, key: str | None, message: str) -> None:
        result.problems.append(Problem(name, offset, key, message))

    def check_decode(rec: Record, offset: int) -> None:
        if decode is None:
            return
        try:
            decode(rec)
        except Exception as exc:
            report(offset, rec.key, f"image does not decode: {exc}")

    try:
        reader = ShardReader(path)
    except FormatError as exc:
        report(exc.offset or 0, None, exc.message)
        done = 0
        for offset, item in scan_records(path):
            if isinstance(item, CorruptRecord):
                report(offset, item.key, item.message)
            else:
                result.records += 1
                check_decode(item, offset)
            if progress:
                progress(offset - done)
                done = offset
        result.bytes = os.path.getsize(path)
        fd = open_readonly(path)
        try:
            result.crc32c = file_crc(fd, result.bytes)
        finally:
            os.close(fd)
        return result

    with reader:
        result.expected = len(reader)
        result.bytes = reader.size
        seq = SequentialReader(reader.fd, reader.size)
        prev_end = DATA_OFFSET
        for offset, length in zip(reader.table["offset"].tolist(), reader.table["length"].tolist()):
            if offset != prev_end:
                report(offset, None, f"footer table entry does not follow the previous record (expected "
                                     f"offset {prev_end})")
            prev_end = offset + length
            view = seq.get(offset, offset + length)
            try:
                rec, _ = parse_record(view, name, offset, length)
            except CorruptRecord as exc:
                report(offset, exc.key, exc.message)
            else:
                result.records += 1
                check_decode(rec, offset)
            finally:
                del view
            if progress:
                progress(length)
        result.crc32c = seq.finish()
        if progress:
            progress(reader.size - (prev_end - DATA_OFFSET))
        if result.ok and _nonzero_padding(reader):
            report(prev_end, None, "non-zero bytes in the padding (records are intact)")
    return result


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


def _nonzero_padding(reader: ShardReader) -> bool:
    h = reader.header
    gaps = [(h.data_offset + h.data_length, h.table_offset), (h.table_offset + h.table_length, reader.size),
            (HEADER_STRUCT.size, DATA_OFFSET)]
    return any(any(pread(reader.fd, b - a, a)) for a, b in gaps if b > a)


