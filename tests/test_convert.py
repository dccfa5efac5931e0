"""recpack convert: MXNet .rec (written by mxnet itself), WebDataset tars (written by webdataset) and recpack
LMDB datasets become recpack datasets with the same image bytes, labels and keys."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import recpack
from recpack.cli import cli
from recpack.convert import convert
from recpack.pack import PackOptions

DATA = Path(__file__).parent / "data"
MX: dict[str, Any] = json.loads((DATA / "mxnet" / "expected.json").read_text())
WDS: dict[str, Any] = json.loads((DATA / "wds" / "expected.json").read_text())
OPTS = PackOptions(workers=0, progress=False, fsync=False, num_shards=2)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def contents(path: Path) -> dict[str, tuple[Any, str]]:
    with recpack.open(path) as ds:
        assert recpack.verify(path).ok
        return {r.key: (r.label, sha(r.data)) for r in ds}


def mx_label(r: dict[str, Any]) -> Any:
    lab = r["label"]
    if isinstance(lab, list):
        return tuple(int(v) if float(v).is_integer() else v for v in lab)
    return int(lab) if float(lab).is_integer() else lab


@pytest.mark.parametrize("name", ["indexed", "im2rec"])
@pytest.mark.parametrize("with_idx", [True, False])
def test_convert_rec_byte_exact(name: str, with_idx: bool, tmp_path: Path) -> None:
    src = DATA / "mxnet" / f"{name}.rec"
    if not with_idx:
        src = Path(shutil.copy(src, tmp_path / f"{name}.rec"))
    res = convert(src, tmp_path / "out", OPTS)
    assert res.records == len(MX[name]) and not res.skipped
    got = contents(tmp_path / "out")
    key = "key" if with_idx else "id"
    assert got == {str(r[key]): (mx_label(r), r["image_sha256"]) for r in MX[name]}


def test_convert_webdataset(tmp_path: Path) -> None:
    res = convert(DATA / "wds", tmp_path / "out", OPTS)
    assert res.records == len(WDS["samples"])
    assert contents(tmp_path / "out") == {s["key"]: (s["label"], s["image_sha256"]) for s in WDS["samples"]}
    res = convert(str(DATA / "wds" / "*-000001.tar"), tmp_path / "one", OPTS)  # a glob of shards
    assert res.records == 4


def test_convert_lmdb(tiny_jpegs: Path, tmp_path: Path) -> None:
    lm = tmp_path / "lmdb"
    recpack.pack(tiny_jpegs, lm, PackOptions(workers=0, progress=False, fsync=False, backend="lmdb"))
    res = convert(lm, tmp_path / "out", OPTS)
    assert res.records == 24
    assert contents(tmp_path / "out") == contents(lm)
    with recpack.open(tmp_path / "out") as ds:
        assert ds.classes == ["cat", "dog", "fish"]


def test_convert_resumes_and_refuses_other_inputs(tmp_path: Path) -> None:
    src = DATA / "mxnet" / "indexed.rec"
    convert(src, tmp_path / "out", OPTS)
    assert convert(src, tmp_path / "out", OPTS).already_done
    with pytest.raises(recpack.PackError, match="--overwrite"):
        convert(DATA / "mxnet" / "im2rec.rec", tmp_path / "out", OPTS)


def _frame(payload: bytes, cflag: int) -> bytes:
    return struct.pack("<II", 0xCED7230A, (cflag << 29) | len(payload)) + payload + bytes(-len(payload) % 4)


def _write_rec(path: Path, payloads: list[bytes]) -> None:
    """dmlc's writer, for a larger fixture: split at each 4-aligned magic."""
    magic = struct.pack("<I", 0xCED7230A)
    out = bytearray()
    for p in payloads:
        pieces, start = [], 0
        for i in range(0, len(p) - len(p) % 4, 4):
            if p[i:i + 4] == magic:
                pieces.append(p[start:i])
                start = i + 4
        pieces.append(p[start:])
        for k, piece in enumerate(pieces):
            last = k == len(pieces) - 1
            out += _frame(piece, 0 if len(pieces) == 1 else 1 if k == 0 else 3 if last else 2)
    path.write_bytes(bytes(out))


def test_convert_parallel_and_cli(make_jpeg: Any, tmp_path: Path) -> None:
    from recpack.backends.recordio import IR_HEADER

    images = [make_jpeg((40 + i % 5, 32), seed=i) for i in range(70)]
    magic = struct.pack("<I", 0xCED7230A)
    images[7] = images[7][:2] + b"\xff\xfe\x00\x0a.." + magic + b"zz" + images[7][2:]  # magic at payload 32
    _write_rec(tmp_path / "big.rec", [IR_HEADER.pack(0, float(i % 4), i, 0) + im for i, im in enumerate(images)])
    out = CliRunner().invoke(cli, ["convert", str(tmp_path / "big.rec"), str(tmp_path / "out"), "--workers", "2",
                                   "--no-progress", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["records"] == 70
    assert contents(tmp_path / "out") == {str(i): (i % 4, sha(im)) for i, im in enumerate(images)}
    bad = CliRunner().invoke(cli, ["convert", str(DATA / "mxnet" / "images"), str(tmp_path / "x")])
    assert bad.exit_code == 2 and "recpack pack" in bad.output
