from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from recpack import imaging
from recpack.errors import BadImage
from recpack.imaging import ImageOptions, PreparedImage, prepare, read_source

DEFAULT = ImageOptions()


def reason_of(data: bytes, opts: ImageOptions = DEFAULT) -> str:
    with pytest.raises(BadImage) as err:
        prepare(data, opts)
    return err.value.reason


def opened(img: PreparedImage) -> Image.Image:
    im = Image.open(io.BytesIO(img.data))
    im.load()
    assert im.format == "JPEG" and im.size == (img.width, img.height)
    return im


# -- options and reading ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [{"check": "full"}, {"convert": "png"}, {"resize": 0}, {"quality": 101},
                                    {"max_bytes": 0}])
def test_bad_options_say_what_to_use(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ImageOptions(**kwargs)  # type: ignore[arg-type]


def test_read_source_reasons(tmp_path: Path) -> None:
    good = tmp_path / "a.jpg"
    good.write_bytes(b"12345")
    assert read_source(str(good), 5) == b"12345"
    cases = {str(tmp_path / "missing.jpg"): "not found", str(tmp_path): "unreadable: "}
    (tmp_path / "empty.jpg").write_bytes(b"")
    cases[str(tmp_path / "empty.jpg")] = "empty file"
    for path, reason in cases.items():
        with pytest.raises(BadImage) as err:
            read_source(path, 100)
        assert err.value.reason.startswith(reason) and err.value.path == path
    with pytest.raises(BadImage) as err:
        read_source(str(good), 4)
    assert err.value.reason == "too large: 5 bytes > 4"


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root (or Windows) reads anything")
def test_read_source_permission_denied(tmp_path: Path) -> None:
    locked = tmp_path / "locked.jpg"
    locked.write_bytes(b"x")
    locked.chmod(0)
    try:
        with pytest.raises(BadImage, match="unreadable: Permission denied"):
            read_source(str(locked), 100)
    finally:
        locked.chmod(0o600)


def test_bad_inputs_get_their_reasons(bad_inputs: tuple[Path, dict[str, str]]) -> None:
    root, expected = bad_inputs
    assert {"bad/empty.jpg", "bad/truncated.jpg", "bad/text.jpg", "bad/bomb.png"} <= set(expected)
    for key, reason in expected.items():
        with pytest.raises(BadImage) as err:
            prepare(read_source(str(root / key), DEFAULT.max_bytes), DEFAULT)
        assert err.value.reason.startswith(reason), (key, err.value.reason)
    for good in sorted((root / "good").iterdir()):
        prepare(read_source(str(good), DEFAULT.max_bytes), DEFAULT)


def test_bomb_reason_names_the_claimed_size(bad_inputs: tuple[Path, dict[str, str]]) -> None:
    root, _ = bad_inputs
    for name in ("bomb.png", "bomb.jpg"):
        assert reason_of((root / "bad" / name).read_bytes()) == "decompression bomb: 60000x60000 pixels"


def test_max_pixels_and_max_bytes_checked_before_decoding(make_jpeg: Callable[..., bytes]) -> None:
    data = make_jpeg((64, 48))
    assert reason_of(data, ImageOptions(max_pixels=64 * 48 - 1)) == "decompression bomb: 64x48 pixels"
    assert prepare(data, ImageOptions(max_pixels=64 * 48)).data == data
    assert reason_of(data, ImageOptions(max_bytes=100)) == f"too large: {len(data)} bytes > 100"
    assert reason_of(b"") == "empty file"


# -- JPEG pass-through and truncation ---------------------------------------------------------------------

def test_rgb_jpeg_passes_through_byte_for_byte(make_jpeg: Callable[..., bytes]) -> None:
    data = make_jpeg((160, 120))
    for check in ("header", "decode"):
        out = prepare(data, ImageOptions(check=check))
        assert out.data is data or out.data == data
        assert (out.width, out.height) == (160, 120)
        assert out.meta == {"format": "JPEG", "mode": "RGB"}


def test_grayscale_and_progressive_jpegs_pass_through(unusual_images: dict[str, bytes]) -> None:
    gray = prepare(unusual_images["gray.jpg"], DEFAULT)
    assert gray.data == unusual_images["gray.jpg"] and gray.meta == {"format": "JPEG", "mode": "L"}
    prog = prepare(unusual_images["progressive.jpg"], ImageOptions(check="decode"))
    assert prog.data == unusual_images["progressive.jpg"]


def test_trailing_bytes_after_eoi_are_allowed(make_jpeg: Callable[..., bytes]) -> None:
    data = make_jpeg((96, 72))
    for tail in (bytes(100_000), b"junk" * 100, b"appended video" * 2000):
        assert prepare(data + tail, DEFAULT).data == data + tail


def test_truncation_is_caught(make_jpeg: Callable[..., bytes]) -> None:
    data = make_jpeg((160, 120))
    for cut in (len(data) - 2, len(data) // 2, 200, 20):
        for check in ("header", "decode"):
            assert reason_of(data[:cut], ImageOptions(check=check)) == "truncated JPEG", (cut, check)


def test_decode_check_catches_corrupt_data_that_header_check_passes(make_jpeg: Callable[..., bytes]) -> None:
    data = make_jpeg((160, 120))
    corrupt = data[: len(data) // 2] + b"\xff\xd9"  # truncated, then an EOI
    assert prepare(corrupt, DEFAULT).data == corrupt
    reason = reason_of(corrupt, ImageOptions(check="decode"))
    assert reason.startswith(("corrupt JPEG", "truncated JPEG")), reason


def test_not_an_image() -> None:
    assert reason_of(b"hello world, definitely not an image") == "not an image"
    assert reason_of(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10).startswith(("not an image", "undecodable"))


def test_truncated_png_with_decode_check(unusual_images: dict[str, bytes]) -> None:
    png = unusual_images["rgba.png"]
    assert reason_of(png[: len(png) // 2], ImageOptions(check="decode")) == "truncated image"


def test_exif_orientation_kept_in_meta_for_pass_through(unusual_images: dict[str, bytes]) -> None:
    out = prepare(unusual_images["exif_rot6.jpg"], DEFAULT)
    assert out.data == unusual_images["exif_rot6.jpg"]
    assert (out.width, out.height) == (64, 48)
    assert out.meta == {"format": "JPEG", "mode": "RGB", "orientation": 6}


def test_reencode_applies_exif_orientation_and_drops_it(unusual_images: dict[str, bytes]) -> None:
    out = prepare(unusual_images["exif_rot6.jpg"], ImageOptions(reencode=True, quality=90))
    assert (out.width, out.height) == (48, 64)  # rotated 90 degrees
    assert "orientation" not in out.meta and out.meta["converted"] == "reencode"
    assert out.meta["source_size"] == [64, 48]
    im = opened(out)
    assert im.getexif().get(0x0112) is None


# -- conversions ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,fmt,mode", [
    ("rgba.png", "PNG", "RGB"), ("la.png", "PNG", "L"), ("gray16.png", "PNG", "L"),
    ("palette.gif", "GIF", "RGB"), ("palette_transparent.png", "PNG", "RGB"), ("cmyk.jpg", "JPEG", "RGB"),
    ("photo.bmp", "BMP", "RGB"), ("photo.tiff", "TIFF", "RGB"), ("photo.webp", "WEBP", "RGB"),
])
def test_unusual_inputs_become_decodable_jpegs(unusual_images: dict[str, bytes], name: str, fmt: str,
                                               mode: str) -> None:
    if name not in unusual_images:
        pytest.skip(f"this Pillow cannot write {name}")
    out = prepare(unusual_images[name], DEFAULT)
    assert (out.width, out.height) == (64, 48)
    assert out.meta["format"] == "JPEG" and out.meta["mode"] == mode
    assert out.meta["source_format"] == fmt and out.meta["source_size"] == [64, 48]
    assert out.meta["converted"] == ("CMYK JPEG" if name == "cmyk.jpg" else "non-JPEG input")
    assert opened(out).mode == mode
    assert prepare(unusual_images[name], DEFAULT).data == out.data  # deterministic


def test_alpha_is_composited_over_white(unusual_images: dict[str, bytes]) -> None:
    a = np.asarray(opened(prepare(unusual_images["rgba.png"], DEFAULT)), dtype=np.int16)
    assert a[:, :28].min() > 240  # the transparent half
    assert a[:, 36:].mean() < 200  # the photo half


def test_16bit_is_scaled_not_clipped(unusual_images: dict[str, bytes]) -> None:
    a = np.asarray(opened(prepare(unusual_images["gray16.png"], ImageOptions(quality=100))), dtype=np.int16)
    ramp = np.linspace(0, 255, 64)
    assert np.abs(a.mean(axis=0) - ramp).max() < 4  # 0..65535 -> 0..255 across the width


def test_convert_reject(unusual_images: dict[str, bytes], make_jpeg: Callable[..., bytes]) -> None:
    reject = ImageOptions(convert="reject")
    assert reason_of(unusual_images["rgba.png"], reject) == "non-JPEG input (PNG) rejected by --convert reject"
    assert reason_of(unusual_images["cmyk.jpg"], reject) == "CMYK JPEG rejected by --convert reject"
    data = make_jpeg((64, 48))
    assert prepare(data, reject).data == data
    assert prepare(unusual_images["gray.jpg"], reject).meta["mode"] == "L"


@pytest.mark.parametrize("size,resize,expected", [
    ((160, 120), 64, (85, 64)), ((120, 160), 64, (64, 85)), ((160, 120), 240, (320, 240)),
    ((100, 100), 50, (50, 50)), ((160, 120), 120, (160, 120)),
])
def test_resize_sets_the_shorter_side(make_jpeg: Callable[..., bytes], size: tuple[int, int], resize: int,
                                      expected: tuple[int, int]) -> None:
    out = prepare(make_jpeg(size), ImageOptions(resize=resize, quality=80))
    assert (out.width, out.height) == expected
    assert opened(out).size == expected
    assert out.meta["converted"] == "resize" and out.meta["source_size"] == list(size)
    assert prepare(make_jpeg(size), ImageOptions(resize=resize, quality=80)).data == out.data


def test_resize_of_non_jpeg_and_quality(unusual_images: dict[str, bytes]) -> None:
    out = prepare(unusual_images["rgba.png"], ImageOptions(resize=24))
    assert (out.width, out.height) == (32, 24) and out.meta["converted"] == "non-JPEG input"
    low = prepare(unusual_images["photo.bmp"], ImageOptions(quality=30))
    high = prepare(unusual_images["photo.bmp"], ImageOptions(quality=98))
    assert len(low.data) < len(high.data)


# -- robustness -------------------------------------------------------------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=600))
def test_random_bytes_only_ever_raise_badimage(data: bytes) -> None:
    try:
        prepare(data, ImageOptions(check="decode"))
    except BadImage as e:
        assert e.reason and "\n" not in e.reason and len(e.reason) < 120


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["cmyk.jpg", "gray16.png", "palette.gif", "photo.tiff", "progressive.jpg",
                             "exif_rot6.jpg"]),
       edits=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.floats(0.05, 1.0), check=st.sampled_from(["header", "decode"]))
def test_damaged_images_only_ever_raise_badimage(unusual_images: dict[str, bytes], name: str,
                                                 edits: list[tuple[float, int]], cut: float, check: str) -> None:
    data = bytearray(unusual_images[name])
    for where, value in edits:
        data[min(len(data) - 1, int(where * len(data)))] = value
    try:
        out = prepare(bytes(data[: max(1, int(cut * len(data)))]), ImageOptions(check=check))
    except BadImage as e:
        assert e.reason and "\n" not in e.reason and len(e.reason) < 120
    else:
        assert out.width > 0 and out.height > 0


def test_decode_check_without_simplejpeg(monkeypatch: pytest.MonkeyPatch,
                                         make_jpeg: Callable[..., bytes]) -> None:
    import recpack.imaging

    monkeypatch.setattr(recpack.imaging, "_simplejpeg", None)  # as where simplejpeg has no wheel
    data = make_jpeg((160, 120))
    assert prepare(data, ImageOptions(check="decode")).data == data
    assert reason_of(data[: len(data) // 2], ImageOptions(check="decode")) == "truncated JPEG"


def _slow(raw: bytes, opts: ImageOptions, monkeypatch: pytest.MonkeyPatch) -> object:
    with monkeypatch.context() as m:
        m.setattr(imaging, "_pass_through_jpeg", lambda raw, opts: None)
        try:
            img = prepare(raw, opts)
        except BadImage as exc:
            return exc.reason
        return (img.data == raw, img.width, img.height, img.meta)


def test_fast_jpeg_header_path_agrees_with_pillow(unusual_images: dict[str, bytes], make_jpeg: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    opts = ImageOptions()
    jpegs = {k: v for k, v in unusual_images.items() if k.endswith(".jpg")}
    jpegs["plain"] = make_jpeg((64, 48), 1)
    fast_hits = 0
    for name, raw in jpegs.items():
        fast = imaging._pass_through_jpeg(raw, opts)
        if fast is not None:
            fast_hits += 1
            assert (True, fast.width, fast.height, fast.meta) == _slow(raw, opts, monkeypatch), name
    assert fast_hits >= 3  # plain, grayscale, EXIF-rotated and progressive JPEGs take the fast path


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fast_path_never_accepts_what_pillow_rejects(data: st.DataObject, make_jpeg: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    raw = bytearray(make_jpeg((40, 30), 2))
    for _ in range(data.draw(st.integers(1, 4))):
        header = data.draw(st.booleans())  # half the mutations hit the marker segments
        i = data.draw(st.integers(0, min(len(raw) - 1, 640) if header else len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(len(raw) // 2, len(raw)))
    raw = bytes(raw[:cut])
    fast = imaging._pass_through_jpeg(raw, ImageOptions()) if raw else None
    if fast is not None:
        assert _slow(raw, ImageOptions(), monkeypatch) == (True, fast.width, fast.height, fast.meta)
