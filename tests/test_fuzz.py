"""Fuzzing the parsers (issue 7): random and mutated inputs into the record, shard header/footer, manifest and
MXNet RecordIO parsers. Only recpack's own errors (``RecpackError``) may come out: never IndexError,
struct.error, OverflowError, MemoryError, UnicodeDecodeError, ...

``RECPACK_FUZZ_EXAMPLES`` (default 60) sets hypothesis' examples per test; the long run uses e.g. 5000:
``RECPACK_FUZZ_EXAMPLES=5000 python -m pytest -q -p no:cacheprovider tests/test_fuzz.py``.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import recpack
from recpack.errors import FormatError, RecpackError
from recpack.format import (
    DATA_OFFSET,
    FORMAT_VERSION,
    HEADER_STRUCT,
    MAGIC,
    decode_meta,
    encode_record,
    split_record,
    unpack_header,
)
from recpack.index import read_manifest
from recpack.backends.mxrec import RecFile
from recpack.backends.recordio import parse_payload, read_idx, scan, unframe
from recpack.pack import PackOptions, pack
from recpack.backends.shards import check_shard, scan_records
from recpack.shard import ShardReader, parse_record
from recpack.synth import make_image_folder
from recpack.verify import verify

EXAMPLES = int(os.environ.get("RECPACK_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 60, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MXDATA = Path(__file__).parent / "data" / "mxnet"

# A real record and a real shard to mutate (built once, at import: no fixtures inside @given).
_RECORD = encode_record({"key": "cat/cat_00.jpg", "label": 3, "size": [4, 3], "format": "JPEG", "mode": "RGB"},
                        b"\xff\xd8\xff\xe0" + bytes(range(200)) + b"\xff\xd9")


def _packed_shard() -> tuple[bytes, bytes]:
    """The bytes of a one-shard pack of 6 small JPEGs and of its manifest (the folder is removed again)."""
    with tempfile.TemporaryDirectory(prefix="recpack-fuzz-") as d:
        tmp = Path(d)
        make_image_folder(tmp / "src", 6, classes=2, size=(32, 24), seed=1)
        pack(tmp / "src", tmp / "ds", PackOptions(num_shards=1, workers=0, progress=False, fsync=False))
        return (tmp / "ds" / "shard-00000.rpk").read_bytes(), (tmp / "ds" / "index.json").read_bytes()


_SHARD, _MANIFEST = _packed_shard()


@contextmanager
def only_recpack_errors() -> Iterator[None]:
    """Let RecpackError through silently; anything else fails the test with the input that caused it."""
    try:
        yield
    except RecpackError:
        pass


def mutations(base: bytes) -> st.SearchStrategy[bytes]:
    """``base`` with a few bytes overwritten, a slice deleted or inserted, and/or truncated."""
    n = len(base)

    @st.composite
    def build(draw: Callable[..., Any]) -> bytes:
        buf = bytearray(base)
        for pos, val in draw(st.lists(st.tuples(st.integers(0, max(n - 1, 0)), st.integers(0, 255)),
                                      max_size=8)):
            if pos < len(buf):
                buf[pos] = val
        if draw(st.booleans()):
            at = draw(st.integers(0, len(buf)))
            buf[at:at] = draw(st.binary(max_size=64))
        if draw(st.booleans()):
            buf = buf[:draw(st.integers(0, len(buf)))]
        return bytes(buf)

    return build()


def u64s() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(0, 1 << 16), st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**40, 2**63, 2**64 - 1]))


# --------------------------------------------------------------------------------------------- records


@FUZZ
@given(st.one_of(st.binary(max_size=512), mutations(_RECORD)), st.one_of(st.none(), st.integers(0, 1 << 20)))
def test_record_parser(data: bytes, length: int | None) -> None:
    with only_recpack_errors():
        meta, _, _ = split_record(memoryview(data), "s.rpk", DATA_OFFSET, length)
        decode_meta(meta, "s.rpk", DATA_OFFSET)
    with only_recpack_errors():
        parse_record(memoryview(data), "s.rpk", DATA_OFFSET, length)


@FUZZ
@given(st.binary(max_size=256))
def test_record_metadata_parser(meta: bytes) -> None:
    with only_recpack_errors():
        decode_meta(meta, "s.rpk", DATA_OFFSET)


# ------------------------------------------------------------------------------------------ shard header


@FUZZ
@given(st.one_of(st.binary(max_size=96), mutations(_SHARD[:84])), st.integers(0, 1 << 40))
def test_header_parser_random_bytes(buf: bytes, file_size: int) -> None:
    with only_recpack_errors():
        unpack_header(buf, "s.rpk", file_size)


@FUZZ
@given(u64s(), u64s(), u64s(), u64s(), u64s(), st.integers(0, 2**32 - 1), st.integers(0, 1 << 40))
def test_header_parser_valid_checksum_any_fields(count: int, d_off: int, d_len: int, t_off: int, t_len: int,
                                                 t_crc: int, file_size: int) -> None:
    from recpack.crc import crc32c

    fields = HEADER_STRUCT.pack(MAGIC, FORMAT_VERSION, 0, count, d_off, d_len, t_off, t_len, bytes(16), 0, t_crc,
                                0)[:-4]
    buf = fields + struct.pack("<I", crc32c(fields))  # reach the layout checks
    with only_recpack_errors():
        h = unpack_header(buf, "s.rpk", file_size)
        assert h.table_offset + h.table_length <= file_size  # whatever passes is bounded by the file


# ------------------------------------------------------------------------------------ whole shard files


def _read_each(reader: Any) -> None:
    """Every record of ``reader`` (a ShardReader or RecFile) by index, then in sequence."""
    for j in range(len(reader)):
        with only_recpack_errors():
            reader.read(j)
    for _ in reader.iter_sequential():
        pass


def _read_everything(path: str) -> None:
    with only_recpack_errors():
        with ShardReader(path) as r:
            _read_each(r)
    with only_recpack_errors():
        for _ in scan_records(path):
            pass
    check_shard(path)  # never raises for damaged data


@FUZZ
@given(mutations(_SHARD))
def test_shard_readers_on_mutated_shards(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "shard-00000.rpk")
        Path(path).write_bytes(data)
        _read_everything(path)


@FUZZ
@given(st.binary(max_size=8192), st.booleans())
def test_shard_readers_on_random_files(data: bytes, with_magic: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "shard-00000.rpk")
        Path(path).write_bytes((MAGIC + struct.pack("<I", FORMAT_VERSION) if with_magic else b"") + data)
        _read_everything(path)


# -------------------------------------------------------------------------------------------- manifest

_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
              st.text(max_size=12)),
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)),
    max_leaves=20)
_FIELDS = ["format", "format_version", "backend", "records", "bytes", "classes", "seed", "shards", "pack",
           "name", "crc32c"]


@st.composite
def manifests(draw: Callable[..., Any]) -> bytes:
    """A random JSON value, a real manifest with random values in its fields, or mutated manifest bytes."""
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return json.dumps(draw(_json)).encode()
    if kind == 1:
        obj = json.loads(_MANIFEST)
        for key in draw(st.lists(st.sampled_from(_FIELDS), max_size=3)):
            shards = obj.get("shards")
            first = shards[0] if isinstance(shards, list) and shards else None
            target = first if key in ("name", "crc32c") else obj
            if isinstance(target, dict):
                target[key] = draw(_json)
        return json.dumps(obj).encode()
    return draw(mutations(_MANIFEST))


@FUZZ
@given(manifests())
def test_manifest_parser(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        Path(d, "index.json").write_bytes(data)
        Path(d, "shard-00000.rpk").write_bytes(_SHARD)
        with only_recpack_errors():
            read_manifest(d)
            with recpack.open(d) as ds:
                for _ in ds:
                    pass
        with only_recpack_errors():
            verify(d)


# --------------------------------------------------------------------------------------- MXNet RecordIO

_REC = (MXDATA / "indexed.rec").read_bytes()
_IDX = (MXDATA / "indexed.idx").read_bytes()


@FUZZ
@given(st.one_of(st.binary(max_size=256), mutations(_REC[:600])))
def test_rec_frame_and_payload_parsers(data: bytes) -> None:
    with only_recpack_errors():
        payload, _ = unframe(data, "x.rec", 0)
        parse_payload(payload, "x.rec", 0)
    with only_recpack_errors():
        parse_payload(data, "x.rec", 0)


@FUZZ
@given(st.one_of(st.binary(max_size=200), mutations(_IDX),
                 st.lists(st.tuples(st.integers(-(2**80), 2**80), st.integers(-(2**80), 2**80)), max_size=4)
                 .map(lambda rows: "".join(f"{k}\t{o}\n" for k, o in rows).encode())),
       st.one_of(st.none(), st.integers(0, 1 << 40)))
def test_idx_parser(data: bytes, rec_size: int | None) -> None:
    with tempfile.TemporaryDirectory() as d:
        Path(d, "x.idx").write_bytes(data)
        with only_recpack_errors():
            read_idx(os.path.join(d, "x.idx"), rec_size)


@FUZZ
@given(mutations(_REC), st.one_of(st.none(), mutations(_IDX)))
def test_rec_readers_on_mutated_files(rec: bytes, idx: bytes | None) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.rec")
        Path(path).write_bytes(rec)
        if idx is not None:
            Path(d, "x.idx").write_bytes(idx)
        with only_recpack_errors():
            for _ in scan(path):
                pass
        with only_recpack_errors():
            _read_each(RecFile(path))
        with only_recpack_errors():
            verify(path)


def test_the_fuzz_inputs_are_real(tmp_path: Path) -> None:
    """The mutated bases parse when intact, so mutations reach deep into the parsers."""
    parse_record(memoryview(_RECORD), "s.rpk", DATA_OFFSET)
    assert unpack_header(_SHARD[:84], "s.rpk", len(_SHARD)).record_count == 6
    (tmp_path / "index.json").write_bytes(_MANIFEST)
    (tmp_path / "shard-00000.rpk").write_bytes(_SHARD)
    assert read_manifest(tmp_path).records == 6
    with recpack.open(tmp_path) as ds:
        assert len(list(ds)) == 6
    with pytest.raises(FormatError):
        unpack_header(b"\x00" * 84, "s.rpk", 84)


# ------------------------------------------------------------------------------- regressions found here


@pytest.mark.parametrize("line", [b"0\t18446744073709551616\n", b"99999999999999999999999\t0\n",
                                  b"0\t9223372036854775808\n"])
def test_idx_numbers_too_large_for_int64_are_a_format_error(tmp_path: Path, line: bytes) -> None:
    """Found by test_idx_parser: such a line raised OverflowError from numpy instead of a FormatError."""
    (tmp_path / "x.idx").write_bytes(line)
    with pytest.raises(FormatError, match="line 1: expected 'key<TAB>offset'"):
        read_idx(str(tmp_path / "x.idx"))


def test_integral_label_too_large_for_int64_is_not_an_overflow() -> None:
    """Found by test_rec_readers_on_mutated_files: an MXNet float label of 1e30 is integral, became the int
    10**30 and overflowed the table's i64 label column (OverflowError). It now counts as "no integer label"."""
    from recpack.format import FLAG_NO_INT_LABEL, TABLE_DTYPE, table_row
    import numpy as np

    for label in (10**30, -(10**30), (2**63,)):
        row = table_row(4096, 100, label, 1, 1)
        assert row[1] == -1 and row[5] & FLAG_NO_INT_LABEL
        np.array([row], dtype=TABLE_DTYPE)
    assert table_row(4096, 100, 2**63 - 1, 1, 1)[1] == 2**63 - 1
