"""The MXNet RecordIO byte layout (``.rec`` + optional ``.idx``): the files ``im2rec`` and
``mx.recordio.MXIndexedRecordIO`` write, parsed in pure Python; nothing is unpickled. The record source over
them is :mod:`recpack.backends.mxrec`.

The byte layout (dmlc-core ``recordio.h``; all integers little-endian)::

    frame      u32 magic 0xced7230a, u32 lrec, payload piece (length bytes), zero padding to a multiple of 4
    lrec       upper 3 bits cflag (0 whole record, 1 first piece, 2 middle piece, 3 last piece),
               lower 29 bits the piece's length

The writer splits a record wherever its payload holds the magic at a 4-aligned offset: the magic is dropped
and the record continues in the next frame. Reading joins the pieces *with* the magic re-inserted, so the
payload comes back exactly. Every frame starts 4-aligned in the file.

A record written by ``mx.recordio.pack`` (im2rec does the same) is::

    +0   IRHeader, struct '<IfQQ': flag (u32), label (f32), id (u64), id2 (u64)   -- 24 bytes
    +24  if flag > 0: flag float32 labels (the header's label field is then unused)
    ...  the image bytes (JPEG), unchanged

The ``.idx`` file is text, one ``key<TAB>offset`` line per record (offset of the record's first frame).
Random access sorts the offsets and takes each record's size from the gap to the next one (the file end
for the last), as MXNet's own indexed reader does. Without an ``.idx`` a sequential scan finds the records;
after a damaged region it resynchronises on the next 4-aligned magic that starts a record and reports the
region it skipped.

Every length read from disk is bounded (by the 29-bit field, the gap to the next record and the file size)
before anything is allocated; errors name the file and the offset.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CorruptRecord, DecodeError, FormatError
from ..decode import image_size
from ..fileio import SequentialReader, open_readonly
from ..format import TABLE_DTYPE, table_row

__all__ = [
    "MAGIC",
    "IR_HEADER",
    "REC_SUFFIX",
    "MAX_RECORD_BYTES",
    "RecHeader",
    "RecIndex",
    "is_rec",
    "idx_path",
    "read_idx",
    "unframe",
    "parse_payload",
    "label_value",
    "scan",
    "build_table",
]

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_FRAME = struct.Struct("<II")
_LEN_MASK = (1 << 29) - 1
#: flag, label, id, id2 (mx.recordio.IRHeader)
IR_HEADER = struct.Struct("<IfQQ")
REC_SUFFIX = ".rec"
#: Upper bound of one reassembled record (the same as recpack's MAX_DATA_BYTES).
MAX_RECORD_BYTES = 1 << 31
#: Upper bound of an .idx file (about 20 M lines).
MAX_IDX_BYTES = 1 << 30
_MAX_FLAG = 1 << 20  # labels per record; a larger flag is damage, not data


def _align4(n: int) -> int:
    return (n + 3) & ~3


def is_rec(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a file ending in ``.rec`` or starting with the RecordIO magic."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        return False
    if p.lower().endswith(REC_SUFFIX):
        return True
    try:
        with open(p, "rb") as f:
            return f.read(4) == _MAGIC_BYTES
    except OSError:
        return False


def idx_path(rec: str) -> str | None:
    """The ``.idx`` beside ``rec`` (``train.rec`` -> ``train.idx``), or None when there is none."""
    base = rec[:-len(REC_SUFFIX)] if rec.lower().endswith(REC_SUFFIX) else rec
    cand = base + ".idx"
    return cand if os.path.isfile(cand) else None


def read_idx(path: str, rec_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Parse an ``.idx`` file: (keys int64, offsets uint64), sorted by offset.

    Raises FormatError (naming the file and line) for a malformed line, a duplicate offset or an offset
    past the end of the ``.rec`` (``rec_size``)."""
    size = os.path.getsize(path)
    if size > MAX_IDX_BYTES:
        raise FormatError(f"{size} bytes, more than the {MAX_IDX_BYTES}-byte bound for an .idx file; is it "
                          "really an MXNet index?", path)
    with open(path, "rb") as f:
        text = f.read(MAX_IDX_BYTES + 1)
    lines = text.split(b"\n")
    keys = np.empty(len(lines), np.int64)
    offs = np.empty(len(lines), np.uint64)
    n = 0
    for lineno, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        parts = line.split(b"\t")
        try:
            if len(parts) != 2:
                raise ValueError(line)
            key, off = int(parts[0]), int(parts[1])
            if (off < 0 or off % 4 or off >= 1 << 63 or not -(1 << 63) <= key < 1 << 63
                    or (rec_size is not None and off + _FRAME.size > rec_size)):  # numbers that fit int64
                raise ValueError(line)
        except ValueError:
            raise FormatError(f"line {lineno}: expected 'key<TAB>offset' with a 4-aligned offset inside the "
                              f".rec file, got {line[:80]!r}; regenerate the .idx (or delete it: the .rec is "
                              "then scanned)", path) from None
        keys[n], offs[n] = key, off
        n += 1
    keys, offs = keys[:n], offs[:n]
    order = np.argsort(offs, kind="stable")
    keys, offs = keys[order], offs[order]
    if n > 1 and np.any(np.diff(offs) == 0):
        dup = int(offs[1:][np.diff(offs) == 0][0])
        raise FormatError(f"two keys point at offset {dup}; the index is damaged — regenerate it or delete it",
                          path)
    return keys, offs


def unframe(buf: memoryview | bytes, path: str, offset: int) -> tuple[memoryview | bytes, int]:
    """Reassemble the record whose first frame starts at ``buf[0]`` (file offset ``offset``).

    Returns (payload, bytes consumed including padding). The payload is a view into ``buf`` for a record of
    one frame, else the pieces joined with the magic re-inserted between them. Raises CorruptRecord."""
    view = memoryview(buf)
    pos = 0
    parts: list[memoryview] = []
    while True:
        if pos + _FRAME.size > len(view):
            raise CorruptRecord(f"truncated record: frame header needs {_FRAME.size} bytes, "
                                f"{len(view) - pos} left", path, offset + pos)
        magic, lrec = _FRAME.unpack_from(view, pos)
        if magic != MAGIC:
            raise CorruptRecord(f"bad RecordIO magic {magic:#010x} (expected {MAGIC:#010x}): not at a record "
                                "boundary or damaged", path, offset + pos)
        cflag, length = lrec >> 29, lrec & _LEN_MASK
        if (cflag not in (0, 1)) if not parts else (cflag not in (2, 3)):
            what = "a record must start with a whole or first piece" if not parts else "expected a continuation"
            raise CorruptRecord(f"unexpected frame flag {cflag} ({what})", path, offset + pos)
        end = pos + _FRAME.size + length
        if end > len(view):
            raise CorruptRecord(f"record piece of {length} bytes runs past the end of its region "
                                f"({len(view) - pos - _FRAME.size} bytes left); truncated", path, offset + pos)
        parts.append(view[pos + _FRAME.size:end])
        pos = min(pos + _FRAME.size + _align4(length), len(view))
        if cflag in (0, 3):
            break
    if len(parts) == 1:
        return parts[0], pos
    return _MAGIC_BYTES.join(bytes(p) for p in parts), pos


@dataclass(frozen=True, slots=True)
class RecHeader:
    """The IRHeader of one record. ``label`` is a float, or a tuple of floats when ``flag`` > 0."""

    flag: int
    label: float | tuple[float, ...]
    id: int
    id2: int


def parse_payload(payload: memoryview | bytes, path: str, offset: int) -> tuple[RecHeader, memoryview]:
    """Split a reassembled payload into its IRHeader (with the float labels of a multi-label record) and
    the image bytes (a view). Raises CorruptRecord when the payload is too short for what the header says."""
    view = memoryview(payload)
    if len(view) < IR_HEADER.size:
        raise CorruptRecord(f"record of {len(view)} bytes is shorter than the {IR_HEADER.size}-byte image "
                            "header (not an mx.recordio.pack image record)", path, offset)
    flag, label, rid, rid2 = IR_HEADER.unpack_from(view)
    start = IR_HEADER.size
    labels: float | tuple[float, ...] = float(label)
    if flag > 0:
        if flag > _MAX_FLAG or start + 4 * flag > len(view):
            raise CorruptRecord(f"image header says {flag} labels, more than the {len(view) - start} bytes "
                                "after the header hold", path, offset)
        labels = tuple(np.frombuffer(view[start:start + 4 * flag], dtype="<f4").astype(float).tolist())
        start += 4 * flag
    return RecHeader(flag, labels, rid, rid2), view[start:]


def record_payload(view: memoryview, path: str, offset: int) -> memoryview:
    """The image bytes of the record framed in ``view`` (the loader's per-record extractor for .rec files;
    zero-copy for a record of one frame)."""
    payload, _ = unframe(view, path, offset)
    return memoryview(parse_payload(payload, path, offset)[1])


def label_value(value: float | tuple[float, ...]) -> Any:
    """im2rec stores class indices as floats: integral values become ints (as recpack's .lst reader does)."""
    if isinstance(value, tuple):
        return tuple(label_value(v) for v in value)
    return int(value) if float(value).is_integer() else float(value)


def _plausible_start(seq: SequentialReader, pos: int, end: int) -> bool:
    head = seq.get(pos, pos + _FRAME.size)
    if len(head) < _FRAME.size:
        return False
    magic, lrec = _FRAME.unpack_from(head)
    return magic == MAGIC and lrec >> 29 in (0, 1) and pos + _FRAME.size + (lrec & _LEN_MASK) <= end


def _resync(seq: SequentialReader, pos: int, end: int) -> int | None:
    """File offset of the next 4-aligned magic at or after ``pos`` that starts a record, or None."""
    pos = _align4(pos)
    while pos + _FRAME.size <= end:
        window = bytes(seq.get(pos, min(end, pos + (1 << 20))))
        i = window.find(_MAGIC_BYTES)
        while i >= 0 and ((pos + i) % 4 or not _plausible_start(seq, pos + i, end)):
            i = window.find(_MAGIC_BYTES, i + 1)
        if i >= 0:
            return pos + i
        pos = _align4(pos + max(1, len(window) - 3))
    return None


def scan(path: str, start: int = 0) -> Iterator[tuple[int, int, memoryview | bytes | CorruptRecord]]:
    """Walk a ``.rec`` file front to back with large sequential reads, without an index.

    Yields (offset, span, payload or CorruptRecord): ``span`` is the bytes the record takes in the file.
    After damage the walk resynchronises on the next record start and yields one CorruptRecord for the
    whole skipped region. A payload view is valid until the next step: copy what you keep."""
    fd = open_readonly(path, fix="check the path and its permissions")
    try:
        size = os.fstat(fd).st_size
        seq = SequentialReader(fd, size)
        pos = start
        while pos < size:
            head = seq.get(pos, pos + _FRAME.size)
            err: CorruptRecord | None = None
            if len(head) < _FRAME.size:
                if not any(bytes(head)):
                    return  # zero padding at the very end
                err = CorruptRecord(f"{size - pos} trailing bytes that are not a record", path, pos)
            else:
                try:
                    payload, used = _read_record(seq, pos, size, path)
                except CorruptRecord as exc:
                    err = exc
            del head
            if err is None:
                yield pos, used, payload
                del payload
                pos += used
                continue
            nxt = _resync(seq, pos + 4, size)
            stop = size if nxt is None else nxt
            yield pos, stop - pos, CorruptRecord(
                f"damaged region of {stop - pos} bytes skipped ({err.message}); "
                + ("resynchronised on the next record" if nxt is not None else "no record follows"),
                path, pos)
            if nxt is None:
                return
            pos = nxt
    finally:
        os.close(fd)


def _read_record(seq: SequentialReader, pos: int, size: int, path: str) -> tuple[memoryview | bytes, int]:
    """Read the frames of the record at ``pos`` through ``seq`` (bounded by the file size) and unframe it."""
    end, first = pos, True
    while True:  # find the record's extent frame by frame; each length is bounded by the file size
        head = seq.get(end, end + _FRAME.size)
        if len(head) < _FRAME.size:
            raise CorruptRecord("truncated record: file ends inside a frame header", path, end)
        magic, lrec = _FRAME.unpack_from(head)
        del head
        if magic != MAGIC:
            raise CorruptRecord(f"bad RecordIO magic {magic:#010x}", path, end)
        cflag, length = lrec >> 29, lrec & _LEN_MASK
        if end + _FRAME.size + length > size:
            raise CorruptRecord(f"record piece of {length} bytes runs past the end of the file", path, end)
        if end - pos + length > MAX_RECORD_BYTES:
            raise CorruptRecord(f"record larger than {MAX_RECORD_BYTES} bytes", path, pos)
        end = min(end + _FRAME.size + _align4(length), size)
        if cflag in (0, 3) or cflag != (1 if first else 2):
            break  # the whole record, or a flag out of sequence (unframe names it)
        first = False
    payload, used = unframe(seq.get(pos, end), path, pos)
    return payload, used


# ---------------------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class RecIndex:
    """Where every record of a ``.rec`` is, in file order: ``table`` (recpack's TABLE_DTYPE: offset of the
    first frame, span in the file, first integer label or -1, image width/height, flags), ``keys`` (the
    .idx keys, else the header ids; int64), ``problems`` (damaged regions a scan skipped)."""

    path: str
    table: np.ndarray
    keys: np.ndarray
    problems: list[CorruptRecord]
    has_idx: bool


def build_table(path: str, size_images: bool = True) -> RecIndex:
    """Scan ``path`` once (large sequential reads) and build its :class:`RecIndex`. With an ``.idx``
    beside it, keys come from the index and its offsets must match the records found.

    ``size_images``: read each image's width and height from its header (~1 us per JPEG); the loader needs
    them for its crops."""
    idx = idx_path(path)
    size = os.path.getsize(path)
    idx_keys, idx_offs = read_idx(idx, size) if idx else (None, None)
    rows: list[tuple[int, int, int, int, int, int]] = []
    ids: list[int] = []
    problems: list[CorruptRecord] = []
    for offset, span, item in scan(path):
        if isinstance(item, CorruptRecord):
            problems.append(item)
            continue
        try:
            header, image = parse_payload(item, path, offset)
        except CorruptRecord as exc:
            problems.append(exc)
            continue
        w = h = 0
        if size_images:
            try:
                w, h = image_size(image)
            except DecodeError:
                pass
        del image
        rows.append(table_row(offset, span, label_value(header.label), w, h))
        ids.append(header.id)
    table = np.array(rows, dtype=TABLE_DTYPE) if rows else np.zeros(0, TABLE_DTYPE)
    keys = np.array(ids, dtype=np.uint64).astype(np.int64)
    if idx_keys is not None and idx_offs is not None:
        found = table["offset"]
        pos = np.searchsorted(idx_offs, found)
        ok = (pos < len(idx_offs)) & (idx_offs[np.minimum(pos, max(len(idx_offs) - 1, 0))] == found) \
            if len(idx_offs) else np.zeros(len(found), bool)
        if len(idx_offs) != len(found) or not ok.all():
            problems.append(CorruptRecord(
                f"the index lists {len(idx_offs)} records, the scan found {len(found)} (agreeing on "
                f"{int(ok.sum())}); the .idx does not belong to this .rec — regenerate it or delete it",
                idx or path, 0))
        keys = np.where(ok, idx_keys[np.minimum(pos, max(len(idx_keys) - 1, 0))] if len(idx_keys) else 0, keys)
    return RecIndex(path, table, keys, problems, idx is not None)


