"""The on-disk byte layout of a recpack shard, and nothing else. docs/format.md explains it byte by byte.

A shard file (all integers little-endian)::

    offset 0       shard header (64 bytes, HEADER_STRUCT), zero-padded to 4096
    offset 4096    records, back to back (DATA_OFFSET, 4096-aligned)
    table_offset   footer table: record_count x TABLE_DTYPE (32 bytes each), 4096-aligned start
    ...            zero padding to a multiple of 4096

A record::

    +0   u32  RECORD_MAGIC
    +4   u32  meta_len        length of the msgpack metadata map (<= MAX_META_BYTES)
    +8   u64  data_len        length of the stored image bytes (<= MAX_DATA_BYTES)
    +16  u32  payload_crc     CRC32C of meta || data
    +20  u32  header_crc      CRC32C of bytes +0..+20, so a corrupt length is never trusted
    +24  meta (msgpack map), then data (the image bytes, unchanged)

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
    "decode_record_header",
    "split_record",
    "decode_meta",
    "check_payload",
    "table_row",
]

#: First 8 bytes of every shard. The high byte and CR/LF/^Z catch text-mode and 7-bit transfers (as PNG does).
MAGIC = b"\x89RPK\r\n\x1a\n"
#: The only shard layout this recpack writes and reads.
FORMAT_VERSION = 1
#: Alignment of the data region, the footer table and the file end (O_DIRECT-friendly).
ALIGN = 4096
#: Records start here.
DATA_OFFSET = 4096
#: Suffix of shard file names.
SHARD_SUFFIX = ".rpk"

#: magic, version, flags, record_count, data_offset, data_length, table_offset, table_length, table_crc, header_crc
HEADER_STRUCT = struct.Struct("<8sIIQQQQQII")
assert HEADER_STRUCT.size == 64

RECORD_MAGIC = 0x72_4B_50_52  # b"RPKr" read as little-endian u32
#: magic, meta_len, data_len, payload_crc, header_crc
RECORD_HEADER_STRUCT = struct.Struct("<IIQII")
RECORD_HEADER_SIZE = RECORD_HEADER_STRUCT.size
assert RECORD_HEADER_SIZE == 24

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
    """The decoded 64-byte shard header."""

    version: int
    flags: int
    record_count: int
    data_offset: int
    data_length: int
    table_offset: int
    table_length: int
    table_crc: int


def pack_header(h: ShardHeader) -> bytes:
    """Encode ``h`` as the 4096-byte header block (64 bytes of fields, zero padding)."""
    fields = HEADER_STRUCT.pack(
        MAGIC, h.version, h.flags, h.record_count, h.data_offset, h.data_length,
        h.table_offset, h.table_length, h.table_crc, 0,
    )
    fields = fields[:-4] + struct.pack("<I", crc32c(fields[:-4]))
    return fields + bytes(DATA_OFFSET - len(fields))


def unpack_header(buf: bytes | memoryview, path: str, file_size: int) -> ShardHeader:
    """Decode and validate a shard header: magic, then version, then checksum, then bounds."""
    if len(buf) < HEADER_STRUCT.size:
        if bytes(buf[: len(MAGIC)]) != MAGIC[: len(buf)]:
            raise BadMagic("not a recpack shard (wrong magic number)", path, 0)
        raise CorruptShard(f"truncated shard: {file_size} bytes, shorter than the 64-byte header; "
                           "re-run `recpack pack` to rewrite it", path, 0)
    magic, version, flags, count, d_off, d_len, t_off, t_len, t_crc, h_crc = HEADER_STRUCT.unpack_from(buf)
    if magic != MAGIC:
        raise BadMagic("not a recpack shard (wrong magic number)", path, 0)
    if version != FORMAT_VERSION:
        raise FormatVersionError(
            f"format v{version}, this recpack reads v{FORMAT_VERSION}; re-pack with `recpack pack` "
            "or use a matching recpack version", path, 8)
    if crc32c(bytes(buf[: HEADER_STRUCT.size - 4])) != h_crc:
        raise CorruptShard("header checksum mismatch; the shard is damaged, re-pack it", path, 0)
    h = ShardHeader(version, flags, count, d_off, d_len, t_off, t_len, t_crc)
    if (d_off != DATA_OFFSET or t_off % ALIGN or t_len != count * TABLE_DTYPE.itemsize
            or d_off + d_len > t_off or t_off + t_len > file_size):
        raise CorruptShard(
            f"impossible layout (records={count}, data={d_off}+{d_len}, table={t_off}+{t_len}, "
            f"file size {file_size}); the shard is truncated or damaged, re-pack it", path, 0)
    return h


def encode_record(meta: dict[str, Any], data: bytes | memoryview) -> bytes:
    """Serialise one record: header, msgpack ``meta``, ``data``. Raises ValueError if a part is too big."""
    meta_bytes = msgpack.packb(meta, use_bin_type=True)
    if len(meta_bytes) > MAX_META_BYTES:
        raise ValueError(f"record metadata is {len(meta_bytes)} bytes, more than {MAX_META_BYTES}; "
                         "store less per-record metadata")
    if len(data) > MAX_DATA_BYTES:
        raise ValueError(f"record data is {len(data)} bytes, more than {MAX_DATA_BYTES}")
    payload_crc = crc32c(data, crc32c(meta_bytes))
    head = RECORD_HEADER_STRUCT.pack(RECORD_MAGIC, len(meta_bytes), len(data), payload_crc, 0)
    head = head[:-4] + struct.pack("<I", crc32c(head[:-4]))
    return b"".join((head, meta_bytes, data))


def decode_record_header(buf: bytes | memoryview, shard: str, offset: int) -> tuple[int, int, int]:
    """Validate a 24-byte record header; returns (meta_len, data_len, payload_crc).

    The lengths are trusted only after the header checksum matches and they are within bounds."""
    if len(buf) < RECORD_HEADER_SIZE:
        raise CorruptRecord(f"truncated record header ({len(buf)} of {RECORD_HEADER_SIZE} bytes)",
                            shard, offset)
    magic, meta_len, data_len, payload_crc, header_crc = RECORD_HEADER_STRUCT.unpack_from(buf)
    if magic != RECORD_MAGIC:
        raise CorruptRecord("bad record magic: not at a record boundary or damaged", shard, offset)
    if crc32c(bytes(buf[:20])) != header_crc:
        raise CorruptRecord("record header checksum mismatch", shard, offset)
    if meta_len > MAX_META_BYTES or data_len > MAX_DATA_BYTES:
        raise CorruptRecord(f"record lengths out of bounds (meta {meta_len}, data {data_len})", shard, offset)
    return meta_len, data_len, payload_crc


def split_record(buf: memoryview, shard: str, offset: int, length: int | None = None
                 ) -> tuple[memoryview, memoryview, int]:
    """Check the record at the start of ``buf`` — header CRC, bounds, payload CRC — and return its
    (meta, data) views and total length. With ``length`` (from the footer table) the record must be exactly
    that long. Raises :class:`CorruptRecord` naming shard and offset (and the key when readable)."""
    meta_len, data_len, payload_crc = decode_record_header(buf[:RECORD_HEADER_SIZE], shard, offset)
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
