"""A fast writer of huge, valid recpack datasets of tiny non-image records, for scale tests and benchmarks.

``write_synthetic`` writes straight from numpy, no source images: every record has the same length, so a
shard is one ``(records, length)`` uint8 array; the per-record CRC32Cs are computed from per-byte-position
tables (CRC is affine over GF(2), so for equal-length messages
``crc(base ^ e1 ^ e2) = crc(base) ^ (crc(base ^ e1) ^ crc(base)) ^ (crc(base ^ e2) ^ crc(base))``). The bytes
are exactly what ``recpack.format.encode_record`` would write (tests/test_scale.py checks that and runs
``recpack verify`` on a 10k-record instance). 14 million records take ~4 s.

Test tooling, not package code (see ``campaigns/__init__.py``): the records are not images (a Loader reads
them only with ``decode=False``) and the writer re-implements the shard layout from recpack's format
constants, so it is only good for measuring and testing the reader side at scale. Users who want a dataset to
try recpack on use ``recpack.synth.make_image_folder`` and ``recpack pack``. Used by tests/test_scale.py,
tests/test_ranks.py and ``benchmarks/scale.py``.
"""

from __future__ import annotations

import hashlib
import os

import msgpack
import numpy as np

from recpack.crc import crc32c
from recpack.format import (
    ALIGN,
    DATA_OFFSET,
    FORMAT_VERSION,
    RECORD_HEADER_SIZE,
    RECORD_HEADER_STRUCT,
    RECORD_MAGIC,
    TABLE_DTYPE,
    ShardHeader,
    align_up,
    pack_header,
)
from recpack.index import Manifest, ShardEntry, write_manifest
from recpack.pack import REPORT_NAME, shard_name

__all__ = ["write_synthetic", "Recipe", "record_meta", "payload_bytes"]

_DIGITS = 8  # keys img/00000000.jpg .. img/99999999.jpg
_LABELS = 100  # labels 0..99: one msgpack byte (positive fixint)
_W, _H = 64, 48


def record_meta(i: int) -> dict[str, object]:
    """The metadata map of record ``i`` (key ``img/{i:08d}.jpg``, label ``i % 100``, 64x48 JPEG RGB)."""
    return {"key": f"img/{i:0{_DIGITS}d}.jpg", "label": i % _LABELS, "size": [_W, _H], "format": "JPEG",
            "mode": "RGB"}


def payload_bytes(n: int) -> bytes:
    """The ``n`` data bytes every record carries (not an image)."""
    return bytes((7 * k + 1) % 256 for k in range(n))


def _deltas(base: bytes, positions: list[int], values: int) -> np.ndarray:
    """(len(positions), values) uint32: crc(base with byte p set to v) ^ crc(base)."""
    c0 = crc32c(base)
    out = np.zeros((len(positions), values), np.uint32)
    buf = bytearray(base)
    for k, p in enumerate(positions):
        for v in range(values):
            buf[p] = v
            out[k, v] = crc32c(buf) ^ c0
        buf[p] = base[p]
    return out


class Recipe:
    """Everything needed to produce record bytes for any ids with numpy, computed once."""

    def __init__(self, payload: int) -> None:
        meta0 = msgpack.packb(record_meta(0), use_bin_type=True)
        data = payload_bytes(payload)
        body = meta0 + data  # meta || data, the span payload_crc covers
        key0 = f"img/{0:0{_DIGITS}d}.jpg".encode()
        kpos = meta0.index(key0) + 4  # first digit
        lpos = meta0.index(b"\xa5label") + 6  # the label's single byte
        self.digit_pos = [kpos + k for k in range(_DIGITS)]
        self.label_pos = lpos
        self.body = np.frombuffer(body, np.uint8)
        self.body_crc = crc32c(body)
        self.d_digit = _deltas(body, self.digit_pos, 256)  # indexed by the byte value
        self.d_label = _deltas(body, [lpos], 256)[0]
        head0 = RECORD_HEADER_STRUCT.pack(RECORD_MAGIC, len(meta0), len(data), 0, 0, 0, 0)[:36]
        self.head = np.frombuffer(head0, np.uint8)
        self.head_crc = crc32c(head0)
        self.d_head = _deltas(head0, list(range(16, 36)), 256)  # position, label, payload_crc
        self.length = RECORD_HEADER_SIZE + len(body)

    def records(self, ids: np.ndarray, shard: int = 0, first: int = 0) -> np.ndarray:
        """(len(ids), length) uint8: the encoded records of global ids ``ids``, the first of which is record
        ``first`` of shard ``shard`` (their identity: position and label)."""
        n = len(ids)
        body = np.tile(self.body, (n, 1))
        pcrc = np.full(n, self.body_crc, np.uint32)
        for k, p in enumerate(self.digit_pos):
            digit = ((ids // 10 ** (_DIGITS - 1 - k)) % 10 + ord("0")).astype(np.uint8)
            body[:, p] = digit
            pcrc ^= self.d_digit[k][digit]
        label = (ids % _LABELS).astype(np.uint8)
        body[:, self.label_pos] = label
        pcrc ^= self.d_label[label]
        ident = np.empty((n, 20), np.uint8)  # bytes 16..36 of the header
        pos = (np.uint64(shard) << np.uint64(32)) | (np.arange(n, dtype=np.uint64) + np.uint64(first))
        ident[:, 0:8] = pos.astype("<u8").view(np.uint8).reshape(n, 8)
        ident[:, 8:16] = (ids % _LABELS).astype("<i8").view(np.uint8).reshape(n, 8)
        ident[:, 16:20] = pcrc.astype("<u4").view(np.uint8).reshape(n, 4)
        hcrc = np.full(n, self.head_crc, np.uint32)
        for b in range(20):
            hcrc ^= self.d_head[b][ident[:, b]]
        out = np.empty((n, self.length), np.uint8)
        out[:, :16] = self.head[:16]
        out[:, 16:36] = ident
        out[:, 36:40] = hcrc.astype("<u4").view(np.uint8).reshape(n, 4)
        out[:, 40:] = body
        return out


def write_synthetic(folder: str | os.PathLike[str], records: int, per_shard: int = 2800, payload: int = 32) -> int:
    """Write a valid recpack dataset of ``records`` tiny records into the new folder ``folder``; returns
    the bytes written. Record ``i`` has key ``img/{i:08d}.jpg``, label ``i % 100``, size 64x48 and
    ``payload`` bytes of (non-image) data, exactly as ``encode_record`` would store it."""
    if records >= 10 ** _DIGITS:
        raise ValueError(f"at most {10 ** _DIGITS - 1} records")
    out = os.fspath(folder)
    os.makedirs(out, exist_ok=False)
    recipe = Recipe(payload)
    dataset_id = hashlib.blake2b(f"synthetic {records} {per_shard} {payload}".encode(), digest_size=16).digest()
    entries: list[ShardEntry] = []
    total = 0
    for s, lo in enumerate(range(0, records, per_shard)):
        ids = np.arange(lo, min(records, lo + per_shard), dtype=np.int64)
        data = recipe.records(ids, s, 0).tobytes()
        table = np.zeros(len(ids), TABLE_DTYPE)
        table["offset"] = DATA_OFFSET + np.arange(len(ids), dtype=np.uint64) * recipe.length
        table["label"] = ids % _LABELS
        table["length"] = recipe.length
        table["width"], table["height"] = _W, _H
        tbytes = table.tobytes()
        table_offset = align_up(DATA_OFFSET + len(data))
        end = table_offset + len(tbytes)
        head = pack_header(ShardHeader(FORMAT_VERSION, 0, len(ids), DATA_OFFSET, len(data), table_offset,
                                       len(tbytes), crc32c(tbytes), dataset_id, s))
        pieces = (head, data, bytes(table_offset - DATA_OFFSET - len(data)), tbytes, bytes(align_up(end) - end))
        crc = 0
        with open(os.path.join(out, shard_name(s)), "wb") as f:
            for piece in pieces:
                f.write(piece)
                crc = crc32c(piece, crc)
        size = align_up(end)
        assert size % ALIGN == 0
        entries.append(ShardEntry(shard_name(s), len(ids), size, crc))
        total += size
    with open(os.path.join(out, REPORT_NAME), "w") as f:
        f.write("key\treason\tpath\n")
    write_manifest(out, Manifest(records=records, shards=entries, classes=[f"c{c:02d}" for c in range(_LABELS)],
                                 dataset_id=dataset_id.hex(),
                                 pack={"seed": 0, "source_kind": "synthetic", "payload": payload,
                                       "per_shard": per_shard}))
    return total
