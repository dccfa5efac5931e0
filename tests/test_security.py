"""Security (issue 7): a manifest cannot make recpack open files outside the dataset folder, no size read from
disk is trusted before it is bounded (no huge allocation), and nothing is ever unpickled or evaluated."""

from __future__ import annotations

import io
import json
import os
import struct
import tokenize
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

import recpack
from recpack.errors import CorruptRecord, CorruptShard, FormatError, ManifestError
from recpack.crc import crc32c
from recpack.format import (
    DATA_OFFSET,
    FORMAT_VERSION,
    HEADER_STRUCT,
    MAGIC,
    RECORD_HEADER_STRUCT,
    RECORD_MAGIC,
    split_record,
    unpack_header,
)
from recpack.index import Manifest, ShardEntry, read_manifest
from recpack.backends.recordio import scan
from recpack.backends.shards import check_shard, scan_records
from recpack.shard import ShardReader
from recpack.verify import verify

PACKAGE = Path(recpack.__file__).resolve().parent


def _manifest(folder: Path, name: object) -> None:
    doc = Manifest(records=1, shards=[ShardEntry("shard-00000.rpk", 1, 8192, 0)]).to_json()
    doc["shards"][0]["name"] = name
    (folder / "index.json").write_text(json.dumps(doc))


# ------------------------------------------------------------------------------------ paths in manifests


@pytest.mark.parametrize("name", [
    "../x.rpk", "../../etc/passwd.rpk", "/abs/path.rpk", "/etc/passwd", "sub/../x.rpk", "..\\x.rpk",
    "x.rpk\x00.txt", "\x00", "", ".", "..", "a" * 300 + ".rpk", "\ud800.rpk", 5, None, ["x.rpk"],
])
def test_unsafe_shard_names_are_refused(tmp_path: Path, name: object) -> None:
    _manifest(tmp_path, name)
    with pytest.raises(ManifestError, match="refusing|not a plain file name"):
        read_manifest(tmp_path)
    with pytest.raises(ManifestError):
        recpack.open(tmp_path)
    res_err = None
    try:
        verify(tmp_path)
    except ManifestError as exc:
        res_err = exc
    assert res_err is not None


def _symlink(src: Path, dst: Path) -> None:
    try:
        os.symlink(src, dst)
    except OSError:
        pytest.skip("symlinks not available")


@pytest.mark.parametrize("target", ["outside", "parent_dir", "absolute_dev"])
def test_symlinks_leading_out_are_refused(tmp_path: Path, target: str) -> None:
    ds = tmp_path / "ds"
    ds.mkdir()
    (tmp_path / "outside.rpk").write_bytes(b"x")
    src = {"outside": tmp_path / "outside.rpk", "parent_dir": Path("../outside.rpk"),
           "absolute_dev": Path("/dev/zero")}[target]
    _symlink(src, ds / "shard-00000.rpk")
    _manifest(ds, "shard-00000.rpk")
    with pytest.raises(ManifestError, match="outside the dataset folder"):
        recpack.open(ds)


def test_symlinked_dataset_folder_and_inside_links_are_fine(tmp_path: Path) -> None:
    """Only links leading *out* are refused: a link to the folder itself, or a shard link within it, is fine."""
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "real.rpk").write_bytes(b"x")
    _symlink(Path("real.rpk"), ds / "shard-00000.rpk")
    _manifest(ds, "shard-00000.rpk")
    assert read_manifest(ds).shards[0].name == "shard-00000.rpk"
    _symlink(ds, tmp_path / "link")
    assert read_manifest(tmp_path / "link").records == 1


def test_manifest_size_is_bounded_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import recpack.index as index

    monkeypatch.setattr(index, "MAX_MANIFEST_BYTES", 100)
    (tmp_path / "index.json").write_bytes(b" " * 101)
    with pytest.raises(ManifestError, match="larger than the 100-byte limit"):
        read_manifest(tmp_path)


# ------------------------------------------------------------------------ sizes read from disk are bounded


def _peak(fn: Callable[[], object]) -> int:
    """Peak bytes Python allocated while running ``fn`` (its errors are recpack's, and expected)."""
    tracemalloc.start()
    try:
        try:
            fn()
        except FormatError:
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _header(count: int, d_len: int, t_off: int, t_len: int) -> bytes:
    fields = HEADER_STRUCT.pack(MAGIC, FORMAT_VERSION, 0, count, DATA_OFFSET, d_len, t_off, t_len, bytes(16), 0, 0,
                                0)[:-4]
    fields += struct.pack("<I", crc32c(fields))
    return fields + bytes(DATA_OFFSET - len(fields))


def _record_header(meta_len: int, data_len: int) -> bytes:
    head = RECORD_HEADER_STRUCT.pack(RECORD_MAGIC, meta_len, data_len, 0, -1, 0, 0)[:-4]
    return head + struct.pack("<I", crc32c(head))


@pytest.mark.parametrize("count", [2**40, 2**59, 2**64 // 32 - 1])
def test_huge_record_count_in_the_header_is_refused_without_allocating(tmp_path: Path, count: int) -> None:
    path = tmp_path / "shard-00000.rpk"
    path.write_bytes(_header(count, 0, 8192, count * 32 % 2**64) + bytes(4096))
    with pytest.raises(CorruptShard, match="impossible layout"):
        ShardReader(str(path))
    assert _peak(lambda: ShardReader(str(path))) < 1 << 20
    assert _peak(lambda: check_shard(str(path))) < 1 << 20


@pytest.mark.parametrize("meta_len,data_len", [(0, 2**40), (2**31, 0), (2**32 - 1, 2**64 - 1), (0, 2**31)])
def test_huge_record_lengths_are_refused_without_allocating(tmp_path: Path, meta_len: int, data_len: int) -> None:
    buf = _record_header(meta_len, data_len) + bytes(1000)
    with pytest.raises(CorruptRecord, match="out of bounds|runs past the end"):
        split_record(memoryview(buf), "s.rpk", DATA_OFFSET)
    assert _peak(lambda: split_record(memoryview(buf), "s.rpk", DATA_OFFSET)) < 1 << 20
    # the same record inside a shard whose header is damaged: the recovery scan bounds it by the file size
    path = tmp_path / "shard-00000.rpk"
    path.write_bytes(bytes(DATA_OFFSET) + buf + bytes(3072))
    assert _peak(lambda: list(scan_records(str(path)))) < 1 << 20
    assert not check_shard(str(path)).ok


def test_huge_rec_frame_length_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "x.rec"
    path.write_bytes(struct.pack("<II", 0xCED7230A, (1 << 29) - 1) + bytes(64))
    items = []
    assert _peak(lambda: items.extend(scan(str(path)))) < 1 << 20
    assert items and isinstance(items[0][2], CorruptRecord)


def test_header_bounds_hold_for_any_accepted_header() -> None:
    h = unpack_header(_header(1, 100, 8192, 32), "s.rpk", 12288)
    assert h.table_offset + h.table_length <= 12288


# ---------------------------------------------------------------------------- no pickle, no eval, anywhere

#: Names that deserialise or execute arbitrary objects. recpack reads only msgpack (no extension types),
#: JSON, and its own binary layouts.
FORBIDDEN = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "marshal", "shelve", "jsonpickle", "eval",
             "exec", "allow_pickle", "__reduce__", "__reduce_ex__", "ext_hook"}
FORBIDDEN_ATTRS = {("torch", "load"), ("np", "load"), ("numpy", "load"), ("yaml", "load"), ("yaml", "unsafe_load")}


def code_names(source: str) -> list[tuple[int, str]]:
    """(line, name) of every NAME token and ``a.b`` attribute pair in ``source``; comments and strings
    (docstrings included) are not code and are skipped, so prose saying "nothing is unpickled" is allowed."""
    toks = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
            if t.type in (tokenize.NAME, tokenize.OP)]
    out = [(t.start[0], t.string) for t in toks if t.type == tokenize.NAME]
    for a, dot, b in zip(toks, toks[1:], toks[2:]):
        if a.type == tokenize.NAME and dot.string == "." and b.type == tokenize.NAME:
            out.append((a.start[0], f"{a.string}.{b.string}"))
    return out


def test_the_scanner_sees_code_but_not_prose() -> None:
    src = '"""Nothing is unpickled; never eval."""\n# pickle is not used\nimport pickle\nx = torch.load(f)\n'
    names = {n for _, n in code_names(src)}
    assert "pickle" in names and "torch.load" in names and "eval" not in names and "unpickled" not in names


def test_no_pickle_marshal_or_eval_in_the_package() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, name in code_names(path.read_text(encoding="utf-8")):
            if name in FORBIDDEN or tuple(name.split(".")) in FORBIDDEN_ATTRS:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {name}")
    assert not found, found


def test_a_missing_shard_is_a_clear_error_everywhere(tmp_path: Path) -> None:
    """Found by atheris (benchmarks/fuzz_atheris.py, manifest target): a manifest naming a shard that is not
    there raised a bare FileNotFoundError from open, iteration and the Loader."""
    from recpack.errors import FormatError
    from recpack.loader import Loader
    from recpack.pack import PackOptions, pack
    from recpack.synth import make_image_folder
    from recpack.verify import verify

    make_image_folder(tmp_path / "src", 9, classes=3, size=(32, 24), seed=2)
    pack(tmp_path / "src", tmp_path / "ds", PackOptions(num_shards=3, workers=0, progress=False, fsync=False))
    (tmp_path / "ds" / "shard-00001.rpk").unlink()
    with pytest.raises(FormatError, match="shard-00001.rpk.*cannot open the file"):
        with recpack.open(tmp_path / "ds") as ds:
            for _ in ds:
                pass
    with pytest.raises(FormatError, match="cannot open the file"):
        Loader(tmp_path / "ds", batch_size=4, size=16, device="cpu")
    result = verify(str(tmp_path / "ds"))
    assert result.problems and "missing" in result.problems[0].message
