"""The on-disk byte layout of a recpack shard, and nothing else. docs/format.md explains it byte by byte.

A shard file (all integers little-endian)::

    offset 0       shard header (84 bytes, HEADER_STRUCT), zero-padded to 4096
    offset 4096    records, back to back (DATA_OFFSET, 4096-aligned)
    table_offset   footer table: record_count x TABLE_DTYPE (32 bytes each), 4096-aligned start
    ...            zero padding to a multiple of 4096

A record::

    +0   u32  RECORD_MAGIC
    +4   u32  meta_len        length of the msgpack metadata map (<= MAX_META_BYTES)
    +8   u64  data_len        length of the stored image bytes (<= MAX_DATA_BYTES)
    +16  u64  position        its identity: shard index << 32 | its index within the shard
    +24  i64  label           its integer label as in the footer table (-1: none)
    +32  u32  payload_crc     CRC32C of meta || data
    +36  u32  header_crc      CRC32C of bytes +0..+36, so a corrupt length or identity is never trusted
    +40  meta (msgpack map), then data (the image bytes, unchanged)

A reader checks each record's position and label against the footer table (two integer comparisons), so a
record moved, swapped or copied in from elsewhere is an error, never a sample with another record's label.

Every length read from disk is checked against these bounds and against the file size before anything is
allocated. Readers check the magic, then the version, then the checksums.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from .crc import crc32c
from .errors import BadMagic, CorruptRecord, CorruptShard, FormatVersionError

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "ALIGN",
    "DATA_OFFSET",
    "HEADER_STRUCT",
    "RECORD_MAGIC",
    "RECORD_HEADER_STRUCT",
    "RECORD_HEADER_SIZE",
    "TABLE_DTYPE",
    "FLAG_MULTI_LABEL",
    "FLAG_NO_INT_LABEL",
    "MAX_META_BYTES",
    "MAX_DATA_BYTES",
    "SHARD_SUFFIX",
    "ShardHeader",
    "align_up",
    "pack_header",
    "unpack_header",
    "encode_record",
    "stamp_identity",
    "record_identity",
    "position",
    "decode_record_header",
    "split_record",
    "decode_meta",
    "check_payload",
    "table_row",
]

#: First 8 bytes of every shard. The high byte and CR/LF/^Z catch text-mode and 7-bit transfers (as PNG does).
MAGIC = b"\x89RPK\r\n\x1a\n"
#: The only shard layout this recpack writes and reads (v1 had no record or dataset identity).
FORMAT_VERSION = 2
#: Alignment of the data region, the footer table and the file end (O_DIRECT-friendly).
ALIGN = 4096
#: Records start here.
DATA_OFFSET = 4096
#: Suffix of shard file names.
SHARD_SUFFIX = ".rpk"

#: magic, version, flags, record_count, data_offset, data_length, table_offset, table_length, dataset_id,
#: shard_index, table_crc, header_crc
HEADER_STRUCT = struct.Struct("<8sIIQQQQQ16sIII")
assert HEADER_STRUCT.size == 84

RECORD_MAGIC = 0x72_4B_50_52  # b"RPKr" read as little-endian u32
#: magic, meta_len, data_len, position, label, payload_crc, header_crc
RECORD_HEADER_STRUCT = struct.Struct("<IIQQqII")
RECORD_HEADER_SIZE = RECORD_HEADER_STRUCT.size
assert RECORD_HEADER_SIZE == 40

#: Bounds on lengths read from disk (checked before allocating).
MAX_META_BYTES = 1 << 16
MAX_DATA_BYTES = 1 << 31

#: One footer-table row per record: where it is and what a loader needs without reading it.
TABLE_DTYPE = np.dtype(
    [
        ("offset", "<u8"),  # absolute file offset of the record header
        ("label", "<i8"),  # the integer label, the first of several, or -1
        ("length", "<u4"),  # whole record length: header + meta + data
        ("width", "<u4"),  # stored image width in pixels (0 if unknown)
        ("height", "<u4"),  # stored image height in pixels (0 if unknown)
        ("flags", "<u4"),  # FLAG_* bits
    ]
)
assert TABLE_DTYPE.itemsize == 32

FLAG_MULTI_LABEL = 1  # several labels; the full tuple is in the record's meta
FLAG_NO_INT_LABEL = 2  # no label, or a non-integer label; see the record's meta

_MAX_RECORD_LENGTH = RECORD_HEADER_SIZE + MAX_META_BYTES + MAX_DATA_BYTES


def align_up(n: int, align: int = ALIGN) -> int:
    """Smallest multiple of ``align`` that is >= ``n``."""
    return (n + align - 1) // align * align


@dataclass(frozen=True)
class ShardHeader:
    """The decoded 84-byte shard header. ``dataset_id`` (16 bytes, also in index.json) and ``shard_index`` (its
    place in index.json's list) tie a shard to the one dataset and place it was written for."""

    version: int
    flags: int
    record_count: int
    data_offset: int
    data_length: int
    table_offset: int
    table_length: int
    table_crc: int
    dataset_id: bytes = bytes(16)
    shard_index: int = 0


def pack_header(h: ShardHeader) -> bytes:
    """Encode ``h`` as the 4096-byte header block (84 bytes of fields, zero padding)."""
    fields = HEADER_STRUCT.pack(
        MAGIC, h.version, h.flags, h.record_count, h.data_offset, h.data_length,
        h.table_offset, h.table_length, h.dataset_id, h.shard_index, h.table_crc, 0,
    )
    fields = fields[:-4] + struct.pack("<I", crc32c(fields[:-4]))
    return fields + bytes(DATA_OFFSET - len(fields))


def unpack_header(buf: bytes | memoryview, path: str, file_size: int) -> ShardHeader:
    """Decode and validate a shard header: magic, then version, then checksum, then bounds."""
    if len(buf) < HEADER_STRUCT.size:
        if bytes(buf[: len(MAGIC)]) != MAGIC[: len(buf)]:
            raise BadMagic("not a recpack shard (wrong magic number)", path, 0)
        raise CorruptShard(f"truncated shard: {file_size} bytes, shorter than the 84-byte header; "
                           "re-run `recpack pack` to rewrite it", path, 0)
    if bytes(buf[:len(MAGIC)]) != MAGIC:
        raise BadMagic("not a recpack shard (wrong magic number)", path, 0)
    version = struct.unpack_from("<I", buf, 8)[0]
    if version != FORMAT_VERSION:
        raise FormatVersionError(
            f"format v{version}, this recpack reads v{FORMAT_VERSION}; re-pack with `recpack pack` "
            "or use a matching recpack version", path, 8)
    (_, _, flags, count, d_off, d_len, t_off, t_len, dataset_id, shard_index, t_crc,
     h_crc) = HEADER_STRUCT.unpack_from(buf)
    if crc32c(bytes(buf[: HEADER_STRUCT.size - 4])) != h_crc:
        raise CorruptShard("header checksum mismatch; the shard is damaged, re-pack it", path, 0)
    h = ShardHeader(version, flags, count, d_off, d_len, t_off, t_len, t_crc, dataset_id, shard_index)
    if (d_off != DATA_OFFSET or t_off % ALIGN or t_len != count * TABLE_DTYPE.itemsize
            or d_off + d_len > t_off or t_off + t_len > file_size):
        raise CorruptShard(
            f"impossible layout (records={count}, data={d_off}+{d_len}, table={t_off}+{t_len}, "
            f"file size {file_size}); the shard is truncated or damaged, re-pack it", path, 0)
    return h


def encode_record(meta: dict[str, Any], data: bytes | memoryview, position: int = 0, label: int = -1) -> bytes:
    """Serialise one record: header, msgpack ``meta``, ``data``. Raises ValueError if a part is too big.
    The shard writer stamps the record's final ``position`` and ``label`` (:func:`stamp_identity`)."""
    meta_bytes = msgpack.packb(meta, use_bin_type=True)
    if len(meta_bytes) > MAX_META_BYTES:
        raise ValueError(f"record metadata is {len(meta_bytes)} bytes, more than {MAX_META_BYTES}; "
                         "store less per-record metadata")
    if len(data) > MAX_DATA_BYTES:
        raise ValueError(f"record data is {len(data)} bytes, more than {MAX_DATA_BYTES}")
    payload_crc = crc32c(data, crc32c(meta_bytes))
    head = _record_head(len(meta_bytes), len(data), position, label, payload_crc)
    return b"".join((head, meta_bytes, data))


def _record_head(meta_len: int, data_len: int, position: int, label: int, payload_crc: int) -> bytes:
    head = RECORD_HEADER_STRUCT.pack(RECORD_MAGIC, meta_len, data_len, position, label, payload_crc, 0)
    return head[:-4] + struct.pack("<I", crc32c(head[:-4]))


def stamp_identity(record: bytes | memoryview, position: int, label: int) -> bytes:
    """The 40-byte header of an encoded ``record`` with its identity set (the rest of the record is
    unchanged: write this header, then ``record[RECORD_HEADER_SIZE:]``)."""
    magic, meta_len, data_len, _, _, payload_crc, _ = RECORD_HEADER_STRUCT.unpack_from(record)
    return _record_head(meta_len, data_len, position, label, payload_crc)


def decode_record_header(buf: bytes | memoryview, shard: str, offset: int) -> tuple[int, int, int]:
    """Validate a 40-byte record header; returns (meta_len, data_len, payload_crc).

    The lengths are trusted only after the header checksum matches and they are within bounds."""
    return _record_header(buf, shard, offset)[:3]


def _record_header(buf: bytes | memoryview, shard: str, offset: int) -> tuple[int, int, int, int, int]:
    """decode_record_header, also returning the identity: (meta_len, data_len, payload_crc, position, label)."""
    if len(buf) < RECORD_HEADER_SIZE:
        raise CorruptRecord(f"truncated record header ({len(buf)} of {RECORD_HEADER_SIZE} bytes)",
                            shard, offset)
    magic, meta_len, data_len, position, label, payload_crc, header_crc = RECORD_HEADER_STRUCT.unpack_from(buf)
    if magic != RECORD_MAGIC:
        raise CorruptRecord("bad record magic: not at a record boundary or damaged", shard, offset)
    if crc32c(buf[:RECORD_HEADER_SIZE - 4]) != header_crc:
        raise CorruptRecord("record header checksum mismatch", shard, offset)
    if meta_len > MAX_META_BYTES or data_len > MAX_DATA_BYTES:
        raise CorruptRecord(f"record lengths out of bounds (meta {meta_len}, data {data_len})", shard, offset)
    return meta_len, data_len, payload_crc, position, label


def split_record(buf: memoryview, shard: str, offset: int, length: int | None = None,
                 identity: tuple[int, int] | None = None) -> tuple[memoryview, memoryview, int]:
    """Check the record at the start of ``buf`` — header CRC, bounds, identity, payload CRC — and return its
    (meta, data) views and total length. With ``length`` (from the footer table) the record must be exactly
    that long; with ``identity`` = (position, label) from the table, it must be that record. Raises
    :class:`CorruptRecord` naming shard and offset (and the key when readable)."""
    meta_len, data_len, payload_crc, position, label = _record_header(buf, shard, offset)
    if identity is not None:
        if (position, label) != identity:
            raise CorruptRecord(f"the record here is {_where(position)} with label {label}, the table expects "
                                f"{_where(identity[0])} with label {identity[1]}: records were moved, swapped or "
                                "copied in from elsewhere — run `recpack verify` and re-pack", shard, offset)
    end = RECORD_HEADER_SIZE + meta_len + data_len
    if end > len(buf):
        if length is not None:
            raise CorruptRecord(f"record length {end} disagrees with the footer table ({length})", shard, offset)
        raise CorruptRecord(f"record runs past the end of its region ({end} > {len(buf)} bytes); truncated",
                            shard, offset)
    meta = buf[RECORD_HEADER_SIZE:RECORD_HEADER_SIZE + meta_len]
    data = buf[RECORD_HEADER_SIZE + meta_len:end]
    check_payload(meta, data, payload_crc, shard, offset)
    if length is not None and end != length:
        raise CorruptRecord(f"record length {end} disagrees with the footer table ({length})", shard, offset,
                            _try_key(meta))
    return meta, data, end


def _where(pos: int) -> str:
    return f"record {pos & 0xFFFFFFFF} of shard {pos >> 32}"


def position(shard_index: int, index: int) -> int:
    """The ``position`` field of record ``index`` of shard ``shard_index``."""
    return (shard_index << 32) | index


def record_identity(buf: bytes | memoryview) -> tuple[int, int]:
    """(position, label) from a record header already checked by :func:`decode_record_header`."""
    position, label = struct.unpack_from("<Qq", buf, 16)
    return int(position), int(label)


def check_payload(meta: memoryview | bytes, data: memoryview | bytes, payload_crc: int,
                  shard: str, offset: int) -> None:
    """Raise CorruptRecord unless CRC32C(meta || data) equals the stored ``payload_crc``."""
    if crc32c(data, crc32c(meta)) != payload_crc:
        key = _try_key(meta)
        raise CorruptRecord("record payload checksum mismatch", shard, offset, key)


def decode_meta(meta: memoryview | bytes, shard: str, offset: int) -> dict[str, Any]:
    """Unpack a record's msgpack metadata map (bounded by MAX_META_BYTES; no extension types)."""
    try:
        obj = msgpack.unpackb(bytes(meta), raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise CorruptRecord(f"record metadata is not valid msgpack ({exc})", shard, offset) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("key"), str):
        raise CorruptRecord("record metadata is not a map with a string 'key'", shard, offset)
    return obj


def _try_key(meta: memoryview | bytes) -> str | None:
    try:
        obj = msgpack.unpackb(bytes(meta), raw=False)
    except Exception:
        return None
    key = obj.get("key") if isinstance(obj, dict) else None
    return key if isinstance(key, str) else None


def table_row(offset: int, length: int, label: Any, width: int, height: int) -> tuple[int, int, int, int, int, int]:
    """One TABLE_DTYPE row (as a tuple, in field order) for a record with the given label."""
    flags = 0
    if isinstance(label, (tuple, list)):
        flags |= FLAG_MULTI_LABEL
        first = label[0] if label else None
    else:
        first = label
    if isinstance(first, bool) or not isinstance(first, int) or not -(1 << 63) <= first < 1 << 63:
        flags |= FLAG_NO_INT_LABEL  # (an integer too large for the i64 column stays in the record's meta)
        int_label = -1
    else:
        int_label = first
    return (offset, int_label, length, width, height, flags)
