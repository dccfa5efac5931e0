from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from recpack.decode import (
    available_decoders,
    decode_crop,
    decode_rgb,
    image_size,
    pick_reduction,
)
from recpack.errors import DecodeError

DECODERS = available_decoders()


def test_available_decoders_fastest_first() -> None:
    assert DECODERS[-1] == "pillow"
    assert len(set(DECODERS)) == len(DECODERS)
    pytest.importorskip("simplejpeg")
    assert DECODERS[0] == "simplejpeg"


@pytest.mark.parametrize("decoder", [None, *DECODERS])
def test_shape_dtype_layout(make_jpeg: Callable[..., bytes], decoder: str | None) -> None:
    data = make_jpeg((160, 120))
    for buf in (data, memoryview(data)):
        a = decode_rgb(buf, decoder)
        assert a.shape == (120, 160, 3) and a.dtype == np.uint8
        assert a.flags.c_contiguous and a.flags.writeable


@pytest.mark.parametrize("decoder", [None, *DECODERS])
@pytest.mark.parametrize("name", ["gray.jpg", "cmyk.jpg", "progressive.jpg"])
def test_grayscale_and_cmyk_come_out_rgb(unusual_images: dict[str, bytes], decoder: str | None,
                                         name: str) -> None:
    a = decode_rgb(unusual_images[name], decoder)
    assert a.shape == (48, 64, 3) and a.dtype == np.uint8
    if name == "gray.jpg":
        assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()


def test_decoders_agree(make_jpeg: Callable[..., bytes], unusual_images: dict[str, bytes]) -> None:
    if len(DECODERS) < 2:
        pytest.skip("only one decoder here")
    for data in (make_jpeg((160, 120)), make_jpeg((97, 61), seed=3, subsampling="4:2:2"),
                 unusual_images["gray.jpg"], unusual_images["cmyk.jpg"]):
        ref = decode_rgb(data, "pillow").astype(np.int16)
        for name in DECODERS[:-1]:
            diff = np.abs(decode_rgb(data, name).astype(np.int16) - ref)
            assert diff.mean() < 1.5 and diff.max() <= 16, name


def test_non_jpeg_falls_back_to_pillow(unusual_images: dict[str, bytes]) -> None:
    a = decode_rgb(unusual_images["rgba.png"])
    assert a.shape == (48, 64, 3)
    assert image_size(unusual_images["rgba.png"]) == (64, 48)


@pytest.mark.parametrize("decoder", [None, *DECODERS])
def test_garbage_and_truncation_raise_decode_error(make_jpeg: Callable[..., bytes], decoder: str | None) -> None:
    data = make_jpeg((160, 120))
    for bad in (b"", b"not an image at all", data[: len(data) // 2], data[:30]):
        with pytest.raises(DecodeError):
            decode_rgb(bad, decoder)


def test_unknown_decoder_is_a_value_error(make_jpeg: Callable[..., bytes]) -> None:
    with pytest.raises(ValueError, match="not available"):
        decode_rgb(make_jpeg(), "turbojpeg-9000")


def test_image_size_from_header(make_jpeg: Callable[..., bytes]) -> None:
    data = make_jpeg((97, 61))
    assert image_size(data) == (97, 61)
    assert image_size(memoryview(data)[: len(data) // 3]) == (97, 61)  # header only
    with pytest.raises(DecodeError):
        image_size(b"\x00" * 64)


# reduced-size (DCT-domain) and cropped decoding ---------------------------------------------------------------

@pytest.mark.parametrize(("size", "min_size", "want"), [
    ((500, 375), (224, 224), 1), ((500, 375), (180, 150), 2), ((500, 375), (125, 93), 4),
    ((500, 375), (1, 1), 8), ((960, 720), (224, 224), 2), ((60, 40), (1, 1), 4), ((7, 100), (1, 1), 1),
])
def test_pick_reduction(size: tuple[int, int], min_size: tuple[int, int], want: int) -> None:
    assert pick_reduction(*size, *min_size) == want


@pytest.mark.parametrize("decoder", [None, *DECODERS])
def test_reduced_decode_sizes_and_scale(make_jpeg: Callable[..., bytes], decoder: str | None) -> None:
    data = make_jpeg((203, 150))
    full = decode_rgb(data, decoder).astype(np.float32)
    for min_size, s in [((203, 150), 1.0), ((100, 75), 0.5), ((50, 30), 0.25), ((1, 1), 0.125)]:
        a = decode_crop(data, (0, 0, 203, 150), min_size, decoder=decoder)  # the whole image, reduced
        # the reduced image is ceil(150 s) x ceil(203 s); the box edge maps to the nearest reduced pixel
        assert a.shape == (round(150 * s + 1e-9), round(203 * s + 1e-9), 3) and a.dtype == np.uint8
        # Same picture: block means of the full decode (whole blocks only) match the reduced pixels.
        d = round(1 / s)
        h, w = 150 // d, 203 // d
        means = full[:h * d, :w * d].reshape(h, d, w, d, 3).mean(axis=(1, 3))
        assert np.abs(means - a[:h, :w]).mean() < 4


def test_decode_reduced_decoders_agree(make_jpeg: Callable[..., bytes], unusual_images: dict[str, bytes]) -> None:
    if len(DECODERS) < 2:
        pytest.skip("only one decoder here")
    for data in (make_jpeg((160, 120)), unusual_images["gray.jpg"], unusual_images["cmyk.jpg"]):
        w, h = image_size(data)
        ref = decode_crop(data, (0, 0, w, h), (16, 12), "pillow")
        got = decode_crop(data, (0, 0, w, h), (16, 12), DECODERS[0])
        assert got.shape == ref.shape
        assert np.abs(got.astype(np.int16) - ref).mean() < 1.5


def test_decode_reduced_non_jpeg_is_full_size(unusual_images: dict[str, bytes]) -> None:
    a = decode_crop(unusual_images["rgba.png"], (0, 0, 64, 48), (1, 1))
    assert a.shape == (48, 64, 3)


@pytest.mark.parametrize("decoder", [None, *DECODERS])
def test_decode_crop_full_and_reduced(make_jpeg: Callable[..., bytes], decoder: str | None) -> None:
    data = make_jpeg((320, 240))
    full = decode_rgb(data, decoder)
    crop = decode_crop(data, (40, 30, 200, 150), None, decoder)
    assert np.array_equal(crop, full[30:180, 40:240])
    small = decode_crop(data, (40, 30, 200, 150), (50, 37), decoder)  # 1/4 still >= 50x37
    assert small.shape == (37, 50, 3)  # rows round(30/4)=8 .. round(180/4)=45 (half up)
    assert decode_crop(data, (40, 30, 200, 150), (51, 37), decoder).shape == (75, 100, 3)  # only 1/2 fits


def test_decode_crop_bad_boxes(make_jpeg: Callable[..., bytes]) -> None:
    data = make_jpeg((160, 120))
    for box in [(-1, 0, 10, 10), (0, 0, 161, 10), (100, 100, 10, 30)]:
        with pytest.raises(DecodeError, match="does not fit the 160x120 image"):
            decode_crop(data, box)
    with pytest.raises(ValueError, match=">= 1 pixel"):
        decode_crop(data, (0, 0, 0, 10))
    with pytest.raises(DecodeError):
        decode_crop(b"garbage" * 10, (0, 0, 1, 1))


def test_decode_crop_uses_a_registered_region_decoder(make_jpeg: Callable[..., bytes],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import recpack.decode as D

    data = make_jpeg((320, 240))
    calls = []

    def region(buf: bytes | memoryview, box: tuple[int, int, int, int], d: int) -> tuple[np.ndarray, int, int]:
        calls.append((box, d))
        x, y, w, h = box
        full = decode_crop(buf, (0, 0, 320, 240), (320 // d, 240 // d), "pillow")
        x0, y0 = x // d, y // d  # a region starting at the box, as a partial decoder would return it
        return full[y0:, x0:], x0, y0

    monkeypatch.setattr(D, "_REGION_DECODERS", {"fake": region})
    want = decode_crop(data, (40, 30, 200, 150), (50, 37), "pillow")  # a named decoder: whole image
    assert calls == []
    got = decode_crop(data, (40, 30, 200, 150), (50, 37))
    assert calls == [((40, 30, 200, 150), 4)]
    assert got.shape == want.shape and np.array_equal(got, want)
    with pytest.raises(DecodeError):  # no EOI marker: a strict whole-image decode, never the region decoder
        decode_crop(data[:-2], (40, 30, 200, 150), (50, 37))
    assert len(calls) == 1

    def broken(buf: bytes | memoryview, box: tuple[int, int, int, int], d: int) -> tuple[np.ndarray, int, int]:
        raise RuntimeError("no")

    monkeypatch.setattr(D, "_REGION_DECODERS", {"fake": broken})
    assert decode_crop(data, (40, 30, 200, 150), (50, 37)).shape == want.shape  # falls back
    with pytest.raises(DecodeError):
        decode_crop(b"garbage\xff\xd9", (0, 0, 1, 1))
