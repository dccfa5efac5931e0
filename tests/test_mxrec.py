"""MXNet RecordIO read directly: fixtures written by mxnet 1.9.1 itself (tools/make-mxnet-fixtures.py) come back
byte-exact through the index and by scanning; split records, multi-label records, damage and bad indexes."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest

from recpack.errors import CorruptRecord, FormatError
from recpack.backends.mxrec import RecFile
from recpack.backends.recordio import MAGIC, build_table, is_rec, read_idx, scan, unframe

DATA = Path(__file__).parent / "data" / "mxnet"
EXPECTED: dict[str, Any] = json.loads((DATA / "expected.json").read_text())


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def label_of(r: dict[str, Any]) -> Any:
    lab = r["label"]
    if isinstance(lab, list):
        return tuple(int(v) if float(v).is_integer() else v for v in lab)
    return int(lab) if float(lab).is_integer() else lab


def no_idx(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / f"{name}.rec"
    shutil.copy(DATA / f"{name}.rec", dst)
    return dst


@pytest.mark.parametrize("name", ["indexed", "im2rec"])
def test_read_through_idx_matches_mxnet(name: str) -> None:
    f = RecFile(str(DATA / f"{name}.rec"))
    exp = EXPECTED[name]
    assert len(f) == len(exp)
    for i, r in enumerate(exp):
        rec = f.read(i)
        assert rec.key == str(r["key"])
        assert rec.label == label_of(r)
        assert (rec.meta["id"], rec.meta["id2"], rec.meta["flag"]) == (r["id"], r["id2"], r["flag"])
        assert sha(rec.data) == r["image_sha256"] and len(rec.data) == r["image_bytes"]


@pytest.mark.parametrize("name", ["indexed", "im2rec"])
def test_sequential_scan_matches_mxnet(name: str, tmp_path: Path) -> None:
    for path in (DATA / f"{name}.rec", no_idx(tmp_path, name)):
        f = RecFile(str(path))
        got = [rec for _, rec in f.iter_sequential()]
        exp = EXPECTED[name]
        assert [sha(r.data) for r in got] == [r["image_sha256"] for r in exp]  # type: ignore[union-attr]
        assert [r.label for r in got] == [label_of(r) for r in exp]  # type: ignore[union-attr]
        assert [r.key for r in got] == [str(r["key"] if path.parent == DATA else r["id"]) for r in exp]  # type: ignore[union-attr]
        assert [f.read(i).data for i in range(len(f))] == [r.data for r in got]  # type: ignore[union-attr]


def test_split_record_reassembled_with_magic() -> None:
    exp = EXPECTED["indexed"]
    split = [i for i, r in enumerate(exp) if r["contains_magic"]]
    assert split
    raw = (DATA / "indexed.rec").read_bytes()
    for i in split:
        start = exp[i]["offset"]
        end = exp[i + 1]["offset"] if i + 1 < len(exp) else len(raw)
        payload, used = unframe(raw[start:end], "indexed.rec", start)
        assert used == end - start
        assert sha(bytes(payload)) == exp[i]["raw_sha256"]
    # record 3 really was split by mxnet's writer: first frame flag 1, then continuations
    m, lrec = struct.unpack_from("<II", raw, exp[3]["offset"])
    assert m == MAGIC and lrec >> 29 == 1


def test_multilabel_records() -> None:
    f = RecFile(str(DATA / "im2rec.rec"))
    multi = [f.read(i) for i in range(len(f)) if f.read(i).meta["flag"] > 0]
    assert multi and all(isinstance(r.label, tuple) and len(r.label) == 3 for r in multi)
    t = build_table(str(DATA / "im2rec.rec")).table
    assert (t["flags"][[r["flag"] > 0 for r in EXPECTED["im2rec"]]] & 1).all()  # FLAG_MULTI_LABEL


def test_table_offsets_and_sizes_from_gaps() -> None:
    idx = build_table(str(DATA / "indexed.rec"))
    assert not idx.problems and idx.has_idx
    offs = [r["offset"] for r in EXPECTED["indexed"]]
    assert idx.table["offset"].tolist() == offs
    ends = offs[1:] + [(DATA / "indexed.rec").stat().st_size]
    assert (idx.table["offset"] + idx.table["length"]).tolist() == ends
    assert idx.keys.tolist() == [r["key"] for r in EXPECTED["indexed"]]
    assert (idx.table["width"] > 0).all()


def test_is_rec(tmp_path: Path) -> None:
    assert is_rec(DATA / "indexed.rec")
    odd = tmp_path / "data.bin"
    shutil.copy(DATA / "indexed.rec", odd)
    assert is_rec(odd) and not is_rec(DATA / "indexed.idx") and not is_rec(tmp_path)


def test_damage_is_reported_and_scan_resynchronises(tmp_path: Path) -> None:
    path = no_idx(tmp_path, "indexed")
    raw = bytearray(path.read_bytes())
    exp = EXPECTED["indexed"]
    bad = exp[2]["offset"]
    raw[bad:bad + 4] = b"JUNK"  # record 2's magic
    path.write_bytes(raw)
    items = list(scan(str(path)))
    errors = [(off, it) for off, _, it in items if isinstance(it, CorruptRecord)]
    assert len(errors) == 1 and errors[0][0] == bad
    assert str(path) in str(errors[0][1]) and f"offset {bad}" in str(errors[0][1])
    f = RecFile(str(path))
    recs = [r for _, r in f.iter_sequential() if not isinstance(r, CorruptRecord)]
    assert [sha(r.data) for r in recs] == [r["image_sha256"] for k, r in enumerate(exp) if k != 2]


def test_truncated_file(tmp_path: Path) -> None:
    path = no_idx(tmp_path, "im2rec")
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])
    items = list(scan(str(path)))
    assert isinstance(items[-1][2], CorruptRecord)
    assert sum(not isinstance(it, CorruptRecord) for _, _, it in items) == len(EXPECTED["im2rec"]) - 1


def test_huge_length_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "evil.rec"
    path.write_bytes(struct.pack("<II", MAGIC, (1 << 29) - 1) + bytes(64))
    (item,) = [it for _, _, it in scan(str(path))]
    assert isinstance(item, CorruptRecord) and "past the end" in str(item)
    with pytest.raises(CorruptRecord, match="offset 0"):
        unframe(path.read_bytes(), str(path), 0)


def test_bad_idx(tmp_path: Path) -> None:
    rec = tmp_path / "x.rec"
    shutil.copy(DATA / "indexed.rec", rec)
    (tmp_path / "x.idx").write_text("0\t0\n1\tnot-a-number\n")
    with pytest.raises(FormatError, match=r"x.idx.*line 2"):
        RecFile(str(rec))
    (tmp_path / "x.idx").write_text("0\t0\n1\t99999999\n")
    with pytest.raises(FormatError, match="inside the .rec"):
        read_idx(str(tmp_path / "x.idx"), rec.stat().st_size)


# -- direct reading through recpack's own entry points ---------------------------------------------------------


@pytest.mark.parametrize("name", ["indexed", "im2rec"])
def test_open_iterate_and_index(name: str, tmp_path: Path) -> None:
    import recpack

    exp = EXPECTED[name]
    for path in (DATA / f"{name}.rec", no_idx(tmp_path, name)):
        with recpack.open(path) as ds:
            assert isinstance(ds, recpack.Dataset) and len(ds) == len(exp) and ds.backend == "mxrec"
            assert [sha(r.data) for r in ds] == [r["image_sha256"] for r in exp]
            assert [ds[i].label for i in range(len(ds))] == [label_of(r) for r in exp]
            assert sha(ds[-1].data) == exp[-1]["image_sha256"]
            assert ds.labels.tolist() == [int(label_of(r)[0] if isinstance(label_of(r), tuple) else label_of(r))
                                          for r in exp]


def test_open_skip_mode_counts_damage(tmp_path: Path) -> None:
    import recpack

    path = no_idx(tmp_path, "indexed")
    raw = bytearray(path.read_bytes())
    raw[EXPECTED["indexed"][4]["offset"] + 5] ^= 0xFF  # record 4's length field
    path.write_bytes(raw)
    with recpack.open(path) as ds, pytest.raises(CorruptRecord):
        list(ds)
    with recpack.open(path, on_error="skip") as ds, pytest.warns(RuntimeWarning):
        got = list(ds)
    assert len(got) == len(EXPECTED["indexed"]) - 1 and ds.stats["skipped"] == 1


@pytest.mark.parametrize("order", ["sequential", "random", "shard_shuffle"])
def test_loader_reads_rec_byte_exact(order: str) -> None:
    import recpack

    exp = EXPECTED["im2rec"]
    loader = recpack.Loader(DATA / "im2rec.rec", batch_size=4, shuffle=order != "sequential", order=order
                            if order != "sequential" else "auto", decode=False, transform=None, device="cpu")
    got = {}
    for data, labels in loader:
        for d, lab in zip(data, labels.tolist()):
            got[sha(bytes(d))] = lab
    assert got == {r["image_sha256"]: int(label_of(r)[0] if r["flag"] else label_of(r)) for r in exp}
    loader.close()


def test_loader_decodes_rec() -> None:
    import recpack

    loader = recpack.Loader(DATA / "indexed.rec", batch_size=8, shuffle=False, transform="val", size=32,
                            device="cpu", output="numpy")
    (images, labels), = list(loader)
    assert images.shape == (8, 3, 32, 32) and labels.tolist() == [int(r["label"]) for r in EXPECTED["indexed"]]
    loader.close()


def test_verify_and_inspect_rec(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from recpack.cli import cli
    from recpack.info import inspect_dataset
    from recpack.verify import verify

    res = verify(DATA / "indexed.rec", decode=True)
    assert res.ok and res.records == 8
    info = inspect_dataset(DATA / "im2rec.rec")
    assert info["records"] == 6 and info["backend"] == "mxrec"
    path = no_idx(tmp_path, "indexed")
    raw = bytearray(path.read_bytes())
    bad = EXPECTED["indexed"][2]["offset"]
    raw[bad:bad + 4] = b"JUNK"
    path.write_bytes(raw)
    out = CliRunner().invoke(cli, ["verify", str(path), "--no-progress"])
    assert out.exit_code == 1 and f"@ offset {bad}" in out.output and "7 of 7" in out.output
    stale = tmp_path / "indexed.idx"
    shutil.copy(DATA / "indexed.idx", stale)  # offsets no longer all match the damaged file's records
    assert not verify(path).ok


def test_an_idx_that_does_not_match_gets_one_verdict(tmp_path: Path) -> None:
    """An .idx listing only some records of its .rec: len, iteration, the Loader, convert and verify agree
    that the index does not match (nothing silently reads more, or fewer, records than len says)."""
    import shutil
    import warnings

    import recpack
    from recpack.convert import convert
    from recpack.errors import CorruptRecord, PackError
    from recpack.verify import verify

    shutil.copy(DATA / "indexed.rec", tmp_path / "d.rec")
    lines = (DATA / "indexed.idx").read_text().splitlines()
    (tmp_path / "d.idx").write_text("\n".join(lines[:-2]) + "\n")  # the last two records left out
    with recpack.open(tmp_path / "d.rec") as ds:
        assert len(ds) == len(lines) - 2
        with pytest.raises(CorruptRecord, match="not in the .idx"):
            list(ds)
    with recpack.open(tmp_path / "d.rec", on_error="skip") as ds, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(list(ds)) == len(ds) and ds.stats["skipped"] == 0
    with pytest.raises(CorruptRecord, match="does not belong to this .rec"):
        recpack.Loader(tmp_path / "d.rec", batch_size=2, size=16, device="cpu")
    with pytest.raises(PackError, match="does not belong to this .rec"):
        convert(tmp_path / "d.rec", tmp_path / "out", recpack.PackOptions(workers=0, progress=False))
    assert not verify(tmp_path / "d.rec").ok
