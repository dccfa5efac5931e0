"""Bad and unusual source images, one of each, packed together: every case gets its documented outcome
(docs/guide.md, "Bad inputs") -- stored as is, converted to a JPEG, or skipped with its reason in
pack-report.tsv -- by default, with ``--convert reject`` and with ``--strict``. The table in
docs/reliability.md ("Bad source images") is this test's ``CASES``."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest
from PIL import Image

import recpack
from conftest import _jpeg, bomb_jpeg, bomb_png
from recpack.errors import PackError
from recpack.imaging import ImageOptions
from recpack.pack import PackOptions, pack

QUIET = dict(progress=False, fsync=False, workers=0)
NON_UTF8 = b"caf\xe9.jpg"  # Latin-1 "café.jpg": not valid UTF-8

# case -> (file name in the source folder, outcome, reason prefix for skipped files)
CASES: dict[str, tuple[str, str, str]] = {
    "zero-byte": ("empty.jpg", "skipped", "empty file"),
    "truncated JPEG": ("truncated.jpg", "skipped", "truncated JPEG"),
    "progressive JPEG": ("progressive.jpg", "as is", ""),
    "CMYK JPEG": ("cmyk.jpg", "converted", ""),
    "grayscale JPEG": ("gray.jpg", "as is", ""),
    "16-bit PNG": ("gray16.png", "converted", ""),
    "EXIF-rotated JPEG": ("exif_rot6.jpg", "as is", ""),
    "palette GIF": ("palette.gif", "converted", ""),
    "palette PNG with transparency": ("palette_transparent.png", "converted", ""),
    "decompression bomb PNG (60000x60000, 60 bytes)": ("bomb.png", "skipped", "decompression bomb: 60000x60000"),
    "decompression bomb JPEG (60000x60000)": ("bomb.jpg", "skipped", "decompression bomb: 60000x60000"),
    "text file named .jpg": ("text.jpg", "skipped", "not an image"),
    "broken symlink": ("broken.jpg", "skipped", "broken symlink"),
    "FIFO named .jpg": ("fifo.jpg", "skipped", "unreadable: not a regular file"),
    "non-UTF-8 file name": (os.fsdecode(NON_UTF8), "as is", ""),
}
CONVERTED_BY_REJECT = [name for name, outcome, _ in CASES.values() if outcome == "converted"]


def build_corpus(root: Path, unusual: dict[str, bytes]) -> None:
    root.mkdir()
    full = _jpeg((160, 120), seed=60)
    data = {"empty.jpg": b"", "truncated.jpg": full[:len(full) // 2], "bomb.png": bomb_png(),
            "bomb.jpg": bomb_jpeg(), "text.jpg": b"this is a text file, not a JPEG\n" * 4}
    for name in ("progressive.jpg", "cmyk.jpg", "gray.jpg", "gray16.png", "exif_rot6.jpg", "palette.gif",
                 "palette_transparent.png"):
        data[name] = unusual[name]
    for name, b in data.items():
        (root / name).write_bytes(b)
    with open(os.path.join(os.fsencode(root), NON_UTF8), "wb") as f:
        f.write(_jpeg((48, 32), seed=61))
    os.symlink(root / "no_such_target.jpg", root / "broken.jpg")
    os.mkfifo(root / "fifo.jpg")


def key_of(name: str) -> str:
    return os.fsencode(name).decode("utf-8", "backslashreplace")


@pytest.fixture
def corpus(tmp_path: Path, unusual_images: dict[str, bytes]) -> Path:
    if sys.platform == "win32":
        pytest.skip("symlinks, FIFOs and byte file names")
    build_corpus(tmp_path / "src", unusual_images)
    return tmp_path / "src"




def test_every_case_gets_its_documented_outcome(corpus: Path, tmp_path: Path) -> None:
    res = pack(corpus, tmp_path / "ds", PackOptions(**QUIET))
    report = (tmp_path / "ds" / "pack-report.tsv").read_bytes().decode("utf-8", "surrogateescape").splitlines()
    assert report[0] == "key\treason\tpath"
    reported = {line.split("\t")[0]: line.split("\t")[1] for line in report[1:]}
    with recpack.open(tmp_path / "ds") as ds:
        records = {r.key: r for r in ds}
    assert len(records) + len(reported) == len(CASES) == res.source_items
    for case, (name, outcome, reason) in CASES.items():
        key = key_of(name)
        if outcome == "skipped":
            assert key not in records, case
            assert reported.get(key, "").startswith(reason), (case, reported.get(key))
            continue
        assert key in records and key not in reported, case
        rec = records[key]
        im = Image.open(io.BytesIO(rec.data))
        assert im.format == "JPEG", case
        with open(os.path.join(os.fsencode(corpus), os.fsencode(name)), "rb") as f:
            original = f.read()
        if outcome == "as is":
            assert rec.data == original, case
            assert "converted" not in rec.meta, case
        else:
            assert rec.data != original and rec.meta.get("converted"), case
            assert im.mode in ("RGB", "L") and im.size == (64, 48), case
            im.load()
    assert records["exif_rot6.jpg"].meta.get("orientation") == 6
    assert records["gray.jpg"].meta.get("mode") == "L"
    assert records["cmyk.jpg"].meta["converted"] == "CMYK JPEG"
    assert key_of(os.fsdecode(NON_UTF8)) == "caf\\xe9.jpg"


def test_convert_reject_skips_what_would_be_converted(corpus: Path, tmp_path: Path) -> None:
    res = pack(corpus, tmp_path / "ds", PackOptions(image=ImageOptions(convert="reject"), **QUIET))
    reasons = {s.key: s.reason for s in res.skipped}
    for name in CONVERTED_BY_REJECT:
        assert "rejected by --convert reject" in reasons[name], (name, reasons.get(name))
    assert res.records == sum(1 for _, outcome, _ in CASES.values() if outcome == "as is")


def test_strict_stops_at_the_first_bad_input_and_publishes_nothing(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    with pytest.raises(PackError, match="--strict stops at the first bad input"):
        pack(corpus, out, PackOptions(strict=True, **QUIET))
    assert not (out / "index.json").exists()
    assert not list(out.glob("shard-*"))
    with pytest.raises(recpack.ManifestError):
        recpack.open(out)


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0,
                    reason="root reads a chmod 000 file (the directory and FIFO cases stand in for it)")
def test_chmod_000_file_is_unreadable(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.jpg").write_bytes(_jpeg((48, 32), seed=62))
    (src / "locked.jpg").write_bytes(_jpeg((48, 32), seed=63))
    (src / "locked.jpg").chmod(0)
    try:
        res = pack(src, tmp_path / "ds", PackOptions(**QUIET))
    finally:
        (src / "locked.jpg").chmod(0o644)
    assert res.records == 1
    assert [(s.key, s.reason.split(":")[0]) for s in res.skipped] == [("locked.jpg", "unreadable")]


def test_a_jpeg_too_small_for_its_header_gets_one_verdict_everywhere(tmp_path: Path) -> None:
    """A ~300-byte JPEG whose header claims 13000x13000: every check that looks at it says it is truncated —
    pack with either --check, and the decoders verify --decode and the Loader use — instead of some packing
    it and others filling 169 M pixels with gray."""
    from conftest import _jpeg, bomb_jpeg

    from recpack import PackOptions, pack
    from recpack.decode import decode_crop, decode_rgb
    from recpack.errors import DecodeError
    from recpack.imaging import ImageOptions

    data = bomb_jpeg(13000, 13000)
    for fn in (lambda: decode_rgb(data), lambda: decode_crop(data, (0, 0, 224, 224), (224, 224))):
        with pytest.raises(DecodeError, match="truncated JPEG"):
            fn()
    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "src" / "a" / "bomb.jpg").write_bytes(data)
    (tmp_path / "src" / "a" / "ok.jpg").write_bytes(_jpeg())
    for check in ("header", "decode"):
        res = pack(tmp_path / "src", tmp_path / f"out-{check}",
                   PackOptions(workers=0, progress=False, fsync=False, image=ImageOptions(check=check)))
        assert res.records == 1 and [s.reason.split(":")[0] for s in res.skipped] == ["truncated JPEG"]
