"""A dataset of recpack shard files (``recpack pack``'s default backend): an index.json listing shard files,
each with records back to back and a footer table (docs/format.md).

:class:`ShardSource` loads every footer table once into one :class:`~recpack.table.Table` (32 bytes per
record, read once; the shard files are not kept open), then reads records by offset through a bounded set of
open files that refuses files replaced since (a re-pack under a live reader). :func:`scan_records` recovers
the intact records of a shard whose header or table is damaged by walking the records and resynchronising on
the next record magic; :func:`check_shard` reads a shard once and checks everything (``recpack verify``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from ..errors import CorruptRecord, FormatError, ManifestError
from ..fileio import CHUNK_BYTES, OpenFiles, SequentialReader, file_crc, identity, open_readonly, pread
from ..format import DATA_OFFSET, HEADER_STRUCT, RECORD_HEADER_SIZE, RECORD_MAGIC, align_up, decode_record_header
from ..format import position
from ..format import split_record
from ..index import Manifest
from ..record import Record
from ..shard import ShardReader, parse_record
from ..table import Table
from .base import Damage, Decoder, Problem, RecordSource, VerifyResult

__all__ = ["ShardSource", "ShardCheck", "check_shard", "scan_records"]

_RECORD_MAGIC_BYTES = RECORD_MAGIC.to_bytes(4, "little")


class ShardSource(RecordSource):
    """The records of a shard dataset (see the module docstring). ``manifest`` is its index.json."""

    kind = "shards"
    manifest_backend = "shards"
    spans = True

    def __init__(self, folder: str, manifest: Manifest) -> None:
        if sum(e.records for e in manifest.shards) != manifest.records:
            raise ManifestError(f"{folder}/index.json: its shards hold {sum(e.records for e in manifest.shards)} "
                                f"records, not the {manifest.records} it lists; re-run `recpack pack`")
        files = [os.path.join(folder, e.name) for e in manifest.shards]
        super().__init__(folder, None, list(manifest.classes), files)
        self.manifest = manifest
        self._id = bytes.fromhex(manifest.dataset_id)
        self.starts = manifest.starts()
        self._first: list[int] = self.starts.tolist()  # global id of each shard's first record, as ints
        self.damaged: dict[int, FormatError] = {}  # shards whose header or footer table is unreadable
        self.foreign: set[int] = set()  # of those, intact shards that are not the ones index.json lists there
        self._rows: dict[int, np.ndarray] = {}  # footer tables read so far (until the whole table is built)
        self._table: Table | None = None
        # the version of each shard its footer table came from; every (re)open is checked against it
        self._expect: list[tuple[int, int, int, int] | None] = [None] * len(files)
        self._files = OpenFiles(files, expect=self._expect)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.manifest.records

    @property
    def dataset_id(self) -> str:
        return self.manifest.dataset_id

    def _check(self, r: ShardReader, s: int) -> None:
        """Raise FormatError unless the opened shard ``r`` is the one index.json lists at place ``s``: its record
        count, dataset id and shard index (an intact shard of another pack, or listed twice, is ``foreign``)."""
        entry = self.manifest.shards[s]
        if len(r) != entry.records:
            raise FormatError(f"shard holds {len(r)} records, the manifest says {entry.records}; the dataset is "
                              "inconsistent — re-run `recpack pack`", r.path, 0)
        if r.header.dataset_id != self._id or r.header.shard_index != s:
            self.foreign.add(s)
            raise FormatError(_foreign(r.header.dataset_id, r.header.shard_index, self._id, s, self.manifest.shards),
                              r.path, 0)

    def _load(self, s: int) -> np.ndarray | None:
        """Shard ``s``'s footer rows (read and checked once), or None when they cannot be read (``damaged``)."""
        rows = self._rows.get(s)
        if rows is not None or s in self.damaged:
            return rows
        try:
            with ShardReader(self.files[s]) as r:
                self._check(r, s)
                self._expect[s] = identity(r.fd)
                self._rows[s] = rows = r.table
                return rows
        except FormatError as exc:  # readable records are still recovered by scan(); verify reports it
            self.damaged[s] = exc
            return None

    @property  # type: ignore[override]
    def table(self) -> Table:
        """Every shard's footer table in one :class:`Table` (read on first use; a damaged shard's records get
        zero offsets and lengths and label -1, and the shard is listed by :meth:`problems`)."""
        with self._lock:
            if self._table is None:
                table = Table.allocate([e.records for e in self.manifest.shards])
                for s in range(len(self.files)):
                    rows = self._load(s)
                    if rows is None:
                        a, b = int(table.starts[s]), int(table.starts[s + 1])
                        for col in (table.offset, table.length, table.width, table.height, table.flags):
                            col[a:b] = 0
                        table.label[a:b] = -1
                    else:
                        table.fill(s, rows)
                self._rows.clear()  # the table holds them now: no second copy
                self._table = table
            return self._table

    @table.setter
    def table(self, value: Table | None) -> None:
        self._table = value

    def problems(self) -> list[FormatError]:
        """Shards whose header or footer table could not be read (their records are unknown to the table)."""
        self.table  # noqa: B018 - reads every footer table
        return list(self.damaged.values())

    def record(self, i: int) -> Record:
        s = int(np.searchsorted(self.starts, i, side="right")) - 1
        j = i - int(self.starts[s])
        if self._table is not None:
            offset, length, label = int(self._table.offset[i]), int(self._table.length[i]), int(self._table.label[i])
        else:  # only this shard's footer table is needed
            with self._lock:
                rows = self._load(s)
            if rows is not None:
                offset, length, label = int(rows["offset"][j]), int(rows["length"][j]), int(rows["label"][j])
        if s in self.damaged:
            raise self.damaged[s]
        f = self._files.acquire(s)
        try:
            buf = pread(f.fd, length, offset)
        finally:
            self._files.release(s)
        return parse_record(memoryview(buf), self.files[s], offset, length, (position(s, j), label))[0]

    def where(self, i: int) -> tuple[str, int]:
        s = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.names[s], int(self.table.offset[i])

    def payload(self, i: int, view: memoryview) -> memoryview:
        """Header CRC, bounds, identity (the record the table says, with its label), payload CRC and the
        length the table says; the metadata is not decoded (the Loader takes labels and sizes from the table)."""
        t = self._table if self._table is not None else self.table  # (the property takes a lock)
        s = int(t.shard[i])
        ident = ((s << 32) | (i - self._first[s]), int(t.label[i]))
        return split_record(view, self.names[s], int(t.offset[i]), len(view), ident)[1]

    def open_files(self, direct: bool = False, advice: str | None = None) -> OpenFiles:
        """A bounded set of open shard files for large reads (the Loader's), checked against the versions
        this source's tables came from."""
        self.table  # noqa: B018 - every shard's version is known once its footer table is read
        return OpenFiles(self.files, direct=direct, advice=advice, expect=self._expect)

    def scan(self) -> Iterator[tuple[int, Record] | tuple[None, Damage]]:
        for s, path in enumerate(self.files):
            first, expected = int(self.starts[s]), int(self.starts[s + 1] - self.starts[s])
            try:
                if s in self.damaged:
                    raise self.damaged[s]
                reader = ShardReader(path)
                try:
                    self._check(reader, s)
                except BaseException:
                    reader.close()
                    raise
            except FormatError as exc:
                self.damaged.setdefault(s, exc)
                if s in self.foreign:  # another pack's records, or this pack's in another place: never delivered
                    yield None, Damage(exc, expected)
                else:
                    yield from _recovered(path, expected, exc)
                continue
            with reader:
                for j, item in reader.iter_sequential():
                    if isinstance(item, CorruptRecord):
                        yield None, Damage(item)
                    else:
                        yield first + j, item

    def verify(self, decode: Decoder | None = None, progress: bool = False) -> VerifyResult:
        result = VerifyResult(self.path, expected=self.manifest.records, decoded=decode is not None)
        with tqdm(total=self.manifest.total_bytes, unit="B", unit_scale=True, desc="verify",
                  disable=None if progress else True, dynamic_ncols=True) as bar:
            for s, (entry, path) in enumerate(zip(self.manifest.shards, self.files)):
                _verify_shard(entry, path, decode, bar.update, result)
                _verify_identity(path, s, self._id, self.manifest.shards, result)
        return result

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {"backend": self.kind, "format_version": m.format_version, "created_by": m.created_by,
                "bytes": m.total_bytes, "pack": m.pack,
                "files": [{"name": e.name, "records": e.records, "bytes": e.bytes} for e in m.shards]}

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._files.after_fork()

    def close(self) -> None:
        self._files.close()


def _foreign(found_id: bytes, found_index: int, want_id: bytes, s: int, entries: list[Any]) -> str:
    """Why a shard is not the one index.json lists at place ``s``."""
    if found_id != want_id:
        return (f"this shard belongs to another dataset (id {found_id.hex()}, index.json says {want_id.hex()}): "
                "it was copied in from another pack — copy the right shard back or re-pack")
    other = entries[found_index].name if found_index < len(entries) else f"shard {found_index}"
    return (f"this file is shard {found_index} of the dataset ({other}), but index.json lists it as shard {s}: "
            "a shard listed twice or renamed — fix index.json or re-pack")


def _recovered(path: str, expected: int, exc: FormatError
               ) -> Iterator[tuple[None, Damage] | tuple[None, Record]]:
    """What a scan can deliver of a shard whose header or footer table is unreadable: first the damage
    itself (no records: in raise mode it is what raises), then every record :func:`scan_records` recovers
    (without the table their global ids are not known), then one damage for the records still missing, so
    that delivered + counted == what the manifest lists."""
    yield None, Damage(exc, 0)
    found = 0
    try:
        for _, item in scan_records(path):
            found += 1
            yield None, (Damage(item) if isinstance(item, CorruptRecord) else item)
    except FormatError:  # the file cannot even be opened: everything is missing
        pass
    if found < expected:
        yield None, Damage(CorruptRecord(f"{expected - found} of the shard's {expected} records could not be "
                                         "recovered by scanning; restore the shard from a copy or re-pack",
                                         path, exc.offset or 0), expected - found)


def _verify_identity(path: str, s: int, dataset_id: bytes, entries: list[Any], result: VerifyResult) -> None:
    """A shard that is intact but not the one index.json lists here (another pack's, or listed twice)."""
    try:
        with ShardReader(path) as r:
            found = r.header.dataset_id, r.header.shard_index
    except FormatError:
        return  # _verify_shard reported it
    if found != (dataset_id, s):
        result.problems.append(Problem(entries[s].name, 0, None, _foreign(*found, dataset_id, s, entries)))
        result.records -= entries[s].records  # intact, but not this dataset's records


def _verify_shard(entry: Any, path: str, decode: Decoder | None, progress: Any, result: VerifyResult) -> None:
    """Check one shard (:func:`check_shard`) and compare it with its manifest entry; adds to ``result``."""
    try:
        os.close(open_readonly(path))
    except FormatError as exc:
        missing = not os.path.lexists(path)
        result.problems.append(Problem(entry.name, 0, None, "shard file is missing" if missing else exc.message))
        progress(entry.bytes)
        return
    check = check_shard(path, decode, progress=progress)
    result.records += check.records
    result.bytes += check.bytes
    result.problems += check.problems
    if check.bytes != entry.bytes:
        result.problems.append(Problem(entry.name, min(check.bytes, entry.bytes), None,
                                       f"shard is {check.bytes} bytes, the manifest says {entry.bytes} "
                                       "(truncated or appended to)"))
    elif check.crc32c != entry.crc32c and not check.problems:
        result.problems.append(Problem(entry.name, 0, None, f"whole-file CRC32C {check.crc32c:08x} differs from "
                                                            f"the manifest's {entry.crc32c:08x}"))
    if check.expected is None and check.records < entry.records:  # table unreadable: recovered by scan
        result.problems.append(Problem(entry.name, 0, None,
                                       f"only {check.records} of the {entry.records} records the manifest "
                                       "lists could be recovered; the rest are damaged or missing — restore "
                                       "the shard from a copy or re-pack"))
    if check.expected is not None and check.expected != entry.records:
        result.problems.append(Problem(entry.name, 0, None, f"shard holds {check.expected} records, the "
                                                            f"manifest says {entry.records}"))


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


def check_shard(path: str, decode: Decoder | None = None,
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
            decode(rec.data)
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
        for j, (offset, length) in enumerate(zip(reader.table["offset"].tolist(), reader.table["length"].tolist())):
            if offset != prev_end:
                report(offset, None, f"footer table entry does not follow the previous record (expected "
                                     f"offset {prev_end})")
            prev_end = offset + length
            view = seq.get(offset, offset + length)
            try:
                rec, _ = parse_record(view, name, offset, length, reader.identity(j))
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


def _nonzero_padding(reader: ShardReader) -> bool:
    h = reader.header
    gaps = [(h.data_offset + h.data_length, h.table_offset), (h.table_offset + h.table_length, reader.size),
            (HEADER_STRUCT.size, DATA_OFFSET)]
    return any(any(pread(reader.fd, b - a, a)) for a, b in gaps if b > a)


