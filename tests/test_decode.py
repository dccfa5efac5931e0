from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from recpack.decode import available_decoders, decode_rgb, image_size
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
