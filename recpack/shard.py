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

from .errors import CorruptRecord, CorruptShard, FormatError
from .format import (
    DATA_OFFSET,
    FORMAT_VERSION,
    HEADER_STRUCT,
    RECORD_HEADER_SIZE,
    RECORD_MAGIC,
    TABLE_DTYPE,
    ShardHeader,
    align_up,
    check_payload,
    crc32c,
    decode_meta,
    decode_record_header,
    pack_header,
    unpack_header,
)

__all__ = [
    "CHUNK_BYTES",
    "Record",
    "ShardWriter",
    "ShardInfo",
    "ShardReader",
    "Problem",
    "ShardCheck",
    "check_shard",
    "parse_record",
]

#: Size of one sequential read (a multiple of ALIGN). 8 MiB keeps an HDD streaming and costs ~nothing per record.
CHUNK_BYTES = 8 << 20

_RECORD_MAGIC_BYTES = RECORD_MAGIC.to_bytes(4, "little")


class Record(NamedTuple):
    """One stored record. ``data`` is exactly the stored image bytes."""

    key: str
    label: Any
    meta: dict[str, Any]
    data: bytes


def parse_record(buf: memoryview, shard: str, offset: int) -> tuple[Record, int]:
    """Parse and fully check the record at the start of ``buf``; returns it and its total length.

    Raises :class:`CorruptRecord` (naming shard and offset) on any damage or truncation."""
    meta_len, data_len, payload_crc = decode_record_header(buf[:RECORD_HEADER_SIZE], shard, offset)
    end = RECORD_HEADER_SIZE + meta_len + data_len
    if end > len(buf):
        raise CorruptRecord(f"record runs past the end of its region ({end} > {len(buf)} bytes); truncated",
                            shard, offset)
    meta_b = buf[RECORD_HEADER_SIZE:RECORD_HEADER_SIZE + meta_len]
    data_b = buf[RECORD_HEADER_SIZE + meta_len:end]
    check_payload(meta_b, data_b, payload_crc, shard, offset)
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

    def add(self, record: bytes, label_row: Callable[[int, int], tuple[int, int, int, int, int, int]]) -> None:
        """Append one encoded record; ``label_row(offset, length)`` builds its table row."""
        self._f.write(record)
        self._rows.append(label_row(self._pos, len(record)))
        self._pos += len(record)

    def finish(self, fsync: bool = True) -> None:
        """Write padding, footer table and header; flush and (by default) fsync. Closes the file."""
        data_length = self._pos - DATA_OFFSET
        table_offset = align_up(self._pos)
        table = np.array(self._rows, dtype=TABLE_DTYPE).tobytes()
        self._f.write(bytes(table_offset - self._pos))
        self._f.write(table)
        end = table_offset + len(table)
        self._f.write(bytes(align_up(end) - end))
        header = ShardHeader(FORMAT_VERSION, 0, len(self._rows), DATA_OFFSET, data_length,
                             table_offset, len(table), crc32c(table))
        self._f.seek(0)
        self._f.write(pack_header(header))
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


def _advise_sequential(fd: int) -> None:
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except OSError:
            pass


class _Sequential:
    """Reads a file front to back in aligned CHUNK_BYTES pieces, handing out byte ranges.

    Keeps a CRC32C of every byte read so far (``crc``), so a verifying pass checksums the whole file in
    the same single read."""

    def __init__(self, fd: int, size: int, chunk: int = CHUNK_BYTES) -> None:
        self.fd, self.size, self.chunk = fd, size, chunk
        self.buf = bytearray()
        self.start = 0  # file offset of buf[0]
        self.crc = 0
        _advise_sequential(fd)

    @property
    def end(self) -> int:
        return self.start + len(self.buf)

    def _fill(self, upto: int) -> None:
        while self.end < min(upto, self.size):
            piece = os.pread(self.fd, min(self.chunk, self.size - self.end), self.end)
            if not piece:
                break
            self.crc = crc32c(piece, self.crc)
            self.buf += piece

    def get(self, a: int, b: int) -> memoryview:
        """Bytes [a, b) of the file (shorter at EOF). ``a`` must not go backwards past dropped data."""
        if a > self.start + self.chunk:  # drop what lies behind; keeps memory ~2 chunks
            drop = min(a, self.end) - self.start
            del self.buf[:drop]
            self.start += drop
        self._fill(b)
        return memoryview(self.buf)[a - self.start:min(b, self.end) - self.start]

    def finish(self) -> int:
        """Read to the end of the file; return the CRC32C of the whole file."""
        while self.end < self.size:
            self.start += len(self.buf)
            self.buf = bytearray()
            self._fill(self.end + self.chunk)
        return self.crc


class ShardReader:
    """Random and sequential access to one shard. Opening reads and checks the header and footer table.

    ``table`` is the footer as a numpy array of TABLE_DTYPE (32 bytes per record)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            self.size = os.fstat(self.fd).st_size
            self.header = unpack_header(os.pread(self.fd, HEADER_STRUCT.size, 0), path, self.size)
            h = self.header
            raw = os.pread(self.fd, h.table_length, h.table_offset)  # bounded: checked against file size
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
        buf = os.pread(self.fd, length, offset)
        rec, used = parse_record(memoryview(buf), self.path, offset)
        if used != length:
            raise CorruptRecord(f"record length {used} disagrees with the footer table ({length})",
                                self.path, offset, rec.key)
        return rec

    def iter_sequential(self) -> Iterator[tuple[int, Record | CorruptRecord]]:
        """Every record in file order via large sequential reads: (index, record or the error)."""
        seq = _Sequential(self.fd, self.size)
        for j, (offset, length) in enumerate(zip(self.table["offset"].tolist(), self.table["length"].tolist())):
            view = seq.get(offset, offset + length)
            try:
                rec, used = parse_record(view, self.path, offset)
                if used != length:
                    raise CorruptRecord(f"record length {used} disagrees with the footer table ({length})",
                                        self.path, offset, rec.key)
            except CorruptRecord as exc:
                yield j, exc
            else:
                yield j, rec
            del view

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def scan_records(path: str, start: int = DATA_OFFSET, end: int | None = None
                 ) -> Iterator[tuple[int, Record | CorruptRecord]]:
    """Recover records without trusting the footer: walk from ``start``, and after damage resynchronise
    on the next record magic whose header checksum is valid. Yields (offset, record or error)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        size = os.fstat(fd).st_size
        end = size if end is None else min(end, size)
        seq = _Sequential(fd, size)
        pos = start
        while pos + RECORD_HEADER_SIZE <= end:
            head = seq.get(pos, pos + RECORD_HEADER_SIZE)
            try:
                meta_len, data_len, _ = decode_record_header(head, path, pos)
            except CorruptRecord:
                if bytes(head[:4]) == bytes(4) and _all_zero(seq, pos, end):
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


def _all_zero(seq: _Sequential, pos: int, end: int) -> bool:
    stop = min(end, align_up(pos + 1))  # padding never crosses the next ALIGN boundary
    return not any(seq.get(pos, stop))


def _find_magic(seq: _Sequential, pos: int, end: int) -> int | None:
    """Offset of the next plausible record header (magic + valid header CRC) at or after ``pos``."""
    while pos + RECORD_HEADER_SIZE <= end:
        window = seq.get(pos, min(end, pos + CHUNK_BYTES))
        i = bytes(window).find(_RECORD_MAGIC_BYTES)
        if i < 0:
            pos += max(1, len(window) - 3)
            continue
        cand = pos + i
        try:
            decode_record_header(seq.get(cand, cand + RECORD_HEADER_SIZE), "", cand)
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
        report(exc.offset or 0, None, _msg(exc))
        done = 0
        for offset, item in scan_records(path):
            if isinstance(item, CorruptRecord):
                report(offset, item.key, _msg(item))
            else:
                result.records += 1
                check_decode(item, offset)
            if progress:
                progress(offset - done)
                done = offset
        result.bytes = os.path.getsize(path)
        with open(path, "rb") as f:
            result.crc32c = _file_crc(f)
        return result

    with reader:
        result.expected = len(reader)
        result.bytes = reader.size
        seq = _Sequential(reader.fd, reader.size)
        prev_end = DATA_OFFSET
        for offset, length in zip(reader.table["offset"].tolist(), reader.table["length"].tolist()):
            if offset != prev_end:
                report(offset, None, f"footer table entry does not follow the previous record (expected "
                                     f"offset {prev_end})")
            prev_end = offset + length
            view = seq.get(offset, offset + length)
            try:
                rec, used = parse_record(view, name, offset)
                if used != length:
                    raise CorruptRecord(f"record length {used} disagrees with the footer table ({length})",
                                        name, offset, rec.key)
            except CorruptRecord as exc:
                report(offset, exc.key, _msg(exc))
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


def _nonzero_padding(reader: ShardReader) -> bool:
    h = reader.header
    gaps = [(h.data_offset + h.data_length, h.table_offset), (h.table_offset + h.table_length, reader.size),
            (HEADER_STRUCT.size, DATA_OFFSET)]
    return any(any(os.pread(reader.fd, b - a, a)) for a, b in gaps if b > a)


def _msg(exc: FormatError) -> str:
    text = str(exc)
    prefix = f"{exc.path} @ offset {exc.offset}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def _file_crc(f: BinaryIO) -> int:
    crc = 0
    while piece := f.read(CHUNK_BYTES):
        crc = crc32c(piece, crc)
    return crc

