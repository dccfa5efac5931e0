"""The byte format and the shard writer/reader, independent of images (payloads are arbitrary bytes)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recpack.errors import BadMagic, CorruptRecord, CorruptShard, FormatVersionError
from recpack.crc import crc32c
from recpack.format import (
    ALIGN,
    DATA_OFFSET,
    MAX_DATA_BYTES,
    RECORD_HEADER_STRUCT,
    RECORD_MAGIC,
    TABLE_DTYPE,
    decode_record_header,
    encode_record,
    table_row,
)
from recpack.backends.shards import check_shard, scan_records
from recpack.shard import ShardReader, ShardWriter


def write_shard(path: Path, items: list[tuple[str, object, bytes]]) -> None:
    w = ShardWriter(str(path))
    for key, label, data in items:
        meta = {"key": key} if label is None else {"key": key, "label": label}
        w.add(encode_record(meta, data), lambda off, ln, label=label: table_row(off, ln, label, 3, 2))
    w.finish(fsync=False)


payloads = st.lists(
    st.tuples(st.text(min_size=1, max_size=20), st.one_of(st.none(), st.integers(0, 2**40),
                                                         st.lists(st.integers(0, 1000), min_size=1, max_size=4)),
              st.binary(max_size=20000)),
    max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=payloads)
def test_round_trip_random_payloads(tmp_path: Path, items: list[tuple[str, object, bytes]]) -> None:
    path = tmp_path / "s.rpk"
    write_shard(path, items)
    size = path.stat().st_size
    assert size % ALIGN == 0
    with ShardReader(str(path)) as r:
        assert len(r) == len(items)
        assert r.header.table_offset % ALIGN == 0
        for j, (key, label, data) in enumerate(items):
            rec = r.read(j)
            assert rec.key == key and rec.data == data
            assert rec.label == (tuple(label) if isinstance(label, list) else label)
        seq = [rec for _, rec in r.iter_sequential()]
        assert [x.data for x in seq] == [d for _, _, d in items]  # type: ignore[union-attr]
    check = check_shard(str(path))
    assert check.ok and check.records == len(items)
    assert check.crc32c == crc32c(path.read_bytes())


def test_table_rows_carry_labels_and_sizes(tmp_path: Path) -> None:
    path = tmp_path / "s.rpk"
    write_shard(path, [("a", 7, b"x"), ("b", None, b"yy"), ("c", [4, 5], b"zzz"), ("d", 1.5, b"")])
    with ShardReader(str(path)) as r:
        t = r.table
        assert t.dtype == TABLE_DTYPE
        assert t["label"].tolist() == [7, -1, 4, -1]
        assert t["flags"].tolist() == [0, 2, 1, 2]
        assert t["offset"][0] == DATA_OFFSET
        assert (t["offset"][1:] == t["offset"][:-1] + t["length"][:-1]).all()
        assert t["width"].tolist() == [3] * 4


def test_bad_magic_and_version(tmp_path: Path) -> None:
    path = tmp_path / "s.rpk"
    write_shard(path, [("a", 1, b"data")])
    raw = bytearray(path.read_bytes())
    bad = tmp_path / "bad.rpk"
    bad.write_bytes(b"NOTRPK!!" + raw[8:])
    with pytest.raises(BadMagic, match="bad.rpk"):
        ShardReader(str(bad))
    v2 = bytearray(raw)
    v2[8:12] = struct.pack("<I", 99)
    bad.write_bytes(v2)
    with pytest.raises(FormatVersionError, match="v99"):
        ShardReader(str(bad))
    flipped = bytearray(raw)
    flipped[20] ^= 1  # record count
    bad.write_bytes(flipped)
    with pytest.raises(CorruptShard, match="header checksum"):
        ShardReader(str(bad))
    bad.write_bytes(b"")
    with pytest.raises(CorruptShard, match="truncated"):
        ShardReader(str(bad))


def test_corrupt_length_is_never_trusted() -> None:
    head = RECORD_HEADER_STRUCT.pack(RECORD_MAGIC, 10, MAX_DATA_BYTES * 4, 0, -1, 0, 0)
    head = head[:-4] + struct.pack("<I", crc32c(head[:-4]))
    with pytest.raises(CorruptRecord, match="out of bounds"):
        decode_record_header(head, "s.rpk", 4096)
    rec = bytearray(encode_record({"key": "k"}, b"payload"))
    rec[8] ^= 0x40  # data_len changes: header CRC must catch it before the length is used
    with pytest.raises(CorruptRecord, match="header checksum"):
        decode_record_header(bytes(rec), "s.rpk", 4096)


def test_table_truncated_is_corrupt_shard(tmp_path: Path) -> None:
    path = tmp_path / "s.rpk"
    write_shard(path, [(str(i), i, os.urandom(3000)) for i in range(10)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - ALIGN])
    with pytest.raises(CorruptShard):
        ShardReader(str(path))


def test_scan_recovers_every_intact_record_after_damage(tmp_path: Path) -> None:
    items = [(f"k{i}", i, os.urandom(5000 + i)) for i in range(20)]
    path = tmp_path / "s.rpk"
    write_shard(path, items)
    raw = bytearray(path.read_bytes())
    with ShardReader(str(path)) as r:
        off5 = int(r.table["offset"][5])
    raw[off5 + 100] ^= 0xFF  # damage record 5's payload
    raw[0] ^= 0xFF  # and the shard header, so the footer cannot be used
    path.write_bytes(raw)
    found = [(off, item) for off, item in scan_records(str(path))]
    good = [item.key for _, item in found if not isinstance(item, CorruptRecord)]
    assert good == [k for k, _, _ in items if k != "k5"]
    assert [off for off, item in found if isinstance(item, CorruptRecord)] == [off5]
    check = check_shard(str(path))
    assert check.records == 19
    assert {p.offset for p in check.problems} >= {0, off5}


def test_failed_open_never_closes_another_files_descriptor(tmp_path: Path) -> None:
    import gc

    from recpack.errors import FormatError

    bad = tmp_path / "bad.rpk"
    bad.write_bytes(b"\x89RPK\r\n\x1a\n" + bytes(200))  # right magic, wrong header checksum
    other = tmp_path / "other.bin"
    other.write_bytes(b"still readable")
    for _ in range(5):
        try:
            ShardReader(str(bad))
        except FormatError as exc:
            kept = exc  # keeps the half-built reader alive through the traceback
        with open(other, "rb") as f:  # likely reuses the descriptor number the reader had
            del kept
            gc.collect()  # the reader's __del__ runs now
            assert f.read() == b"still readable"


@given(a=st.binary(max_size=5000), b=st.binary(max_size=5000))
def test_crc32c_combine(a: bytes, b: bytes) -> None:
    from recpack.crc import crc32c_combine

    assert crc32c_combine(crc32c(a), crc32c(b), len(b)) == crc32c(a + b)


def test_writer_knows_the_whole_file_crc_and_confirm_catches_changes(tmp_path: Path) -> None:
    from recpack.shard import confirm_written

    path = tmp_path / "s.rpk"
    w = ShardWriter(str(path))
    for i in range(5):
        w.add(encode_record({"key": str(i)}, os.urandom(3000)), lambda off, ln: table_row(off, ln, 1, 1, 1))
    w.finish(fsync=False)
    assert w.file_crc == crc32c(path.read_bytes())
    assert confirm_written(str(path), 5, w.file_crc) == path.stat().st_size
    raw = bytearray(path.read_bytes())
    raw[5000] ^= 1
    path.write_bytes(raw)
    with pytest.raises(CorruptShard, match="reads back"):
        confirm_written(str(path), 5, w.file_crc)
