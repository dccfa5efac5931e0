"""Shared fixtures: small real-looking JPEG folders, bad inputs with their expected reasons, and
valid-but-unusual images (alpha, 16-bit, palette, CMYK, grayscale, EXIF-rotated, progressive, WebP).

Shared helpers that are not fixtures (fault injection, kill and soak campaigns, a synthetic-dataset writer,
leak checks) are modules in tests/campaigns/, imported as ``campaigns.<name>``."""

from __future__ import annotations

import io
import os
import struct
import sys
import zlib
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image, features

from recpack.synth import make_image

# tests import the shared test tooling as `campaigns.<name>` (tests/campaigns/), whatever pytest's import mode
_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

TINY_SIZES = [(96, 72), (128, 96), (160, 120), (120, 90), (72, 96), (100, 100), (150, 100), (90, 135)]


def _jpeg(size: tuple[int, int] = (64, 48), seed: int = 0, **save: Any) -> bytes:
    im = make_image(np.random.default_rng(seed), size)
    mode = save.pop("mode", "RGB")
    if mode != "RGB":
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", **{"quality": 90, **save})
    return buf.getvalue()


@pytest.fixture(scope="session")
def make_jpeg() -> Callable[..., bytes]:
    """``make_jpeg(size=(w, h), seed=0, mode="RGB", **pillow_save_kwargs) -> bytes``: a photo-like JPEG."""
    return _jpeg


@pytest.fixture
def tiny_jpegs(tmp_path: Path) -> Path:
    """An ImageFolder of 3 classes x 8 small photo-like JPEGs (96x72 .. 160x120, mixed), q90."""
    root = tmp_path / "tiny"
    for c, name in enumerate(["cat", "dog", "fish"]):
        (root / name).mkdir(parents=True)
        for i, size in enumerate(TINY_SIZES):
            (root / name / f"{name}_{i:02d}.jpg").write_bytes(_jpeg(size, seed=100 * c + i))
    return root


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 60000, height: int = 60000) -> bytes:
    """A ~60-byte PNG whose header claims width x height RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))


def bomb_jpeg(width: int = 60000, height: int = 60000) -> bytes:
    """A small real JPEG whose SOF marker is patched to claim width x height pixels."""
    data = bytearray(_jpeg((32, 24), seed=7))
    sof = data.find(b"\xff\xc0")
    assert sof > 0
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.fixture
def bad_inputs(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """An ImageFolder with class "good" (3 valid JPEGs) and class "bad" (one file per failure kind).

    Returns (folder, {key: expected reason prefix}) for the bad ones. The broken symlink is left out
    where symlinks cannot be made (Windows without developer mode).
    """
    root = tmp_path / "bad_inputs"
    (root / "good").mkdir(parents=True)
    (root / "bad").mkdir()
    for i in range(3):
        (root / "good" / f"good_{i}.jpg").write_bytes(_jpeg((80, 60), seed=50 + i))
    full = _jpeg((160, 120), seed=60)
    files = {
        "bad/empty.jpg": (b"", "empty file"),
        "bad/truncated.jpg": (full[: len(full) // 2], "truncated JPEG"),
        "bad/text.jpg": (b"this is a text file, not a JPEG\n" * 4, "not an image"),
        "bad/bomb.png": (bomb_png(), "decompression bomb"),
        "bad/bomb.jpg": (bomb_jpeg(), "decompression bomb"),
    }
    expected = {}
    for key, (data, reason) in files.items():
        (root / key).write_bytes(data)
        expected[key] = reason
    try:
        os.symlink(str(root / "bad" / "no_such_target.jpg"), str(root / "bad" / "broken_link.jpg"))
        expected["bad/broken_link.jpg"] = "broken symlink"
    except (OSError, NotImplementedError):
        pass
    return root, expected


def _save(im: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="session")
def unusual_images() -> dict[str, bytes]:
    """Valid but unusual inputs, all 64x48 (w x h) as stored, by file name:

    rgba.png (left half fully transparent), gray16.png (16-bit horizontal ramp 0..65535), la.png,
    palette.gif, palette_transparent.png, cmyk.jpg, gray.jpg, exif_rot6.jpg (EXIF orientation 6),
    progressive.jpg, photo.bmp, photo.tiff, photo.webp (when Pillow has WebP).
    """
    base = make_image(np.random.default_rng(42), (64, 48))
    out: dict[str, bytes] = {}
    rgba = base.convert("RGBA")
    alpha = np.full((48, 64), 255, np.uint8)
    alpha[:, :32] = 0
    rgba.putalpha(Image.fromarray(alpha, "L"))
    out["rgba.png"] = _save(rgba, "PNG")
    ramp = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (48, 1))
    out["gray16.png"] = _save(Image.fromarray(ramp), "PNG")
    out["la.png"] = _save(base.convert("LA"), "PNG")
    out["palette.gif"] = _save(base.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), "GIF")
    pal = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    out["palette_transparent.png"] = _save(pal, "PNG", transparency=0)
    out["cmyk.jpg"] = _save(base.convert("CMYK"), "JPEG", quality=90)
    out["gray.jpg"] = _save(base.convert("L"), "JPEG", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6
    out["exif_rot6.jpg"] = _save(base, "JPEG", quality=90, exif=exif.tobytes())
    out["progressive.jpg"] = _save(base, "JPEG", quality=90, progressive=True)
    out["photo.bmp"] = _save(base, "BMP")
    out["photo.tiff"] = _save(base, "TIFF")
    if features.check("webp"):
        out["photo.webp"] = _save(base, "WEBP", quality=90)
    return out
