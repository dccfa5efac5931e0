"""recpack._jpegregion, the optional libjpeg-turbo extension that decodes only what a crop needs."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from recpack import decode as D
from recpack.decode import decode_crop, decode_rgb
from recpack.errors import DecodeError

jr = pytest.importorskip("recpack._jpegregion", reason="the C extension was not built (no compiler or headers)")


@pytest.fixture(scope="module")
def photo(make_jpeg: Callable[..., bytes]) -> bytes:
    return make_jpeg((320, 240), seed=11)


def _whole(data: bytes, d: int) -> np.ndarray:
    """The reference: the whole image decoded at 1/d by the same library, through the same call."""
    buf, w, h, x0, y0 = jr.decode_region(data, 0, 0, 0, 0, d, 0)
    assert (x0, y0) == (0, 0)
    return np.frombuffer(buf, np.uint8).reshape(h, w, 3)


@pytest.mark.parametrize("kind", ["4:2:0", "4:2:2", "4:4:4", "gray", "progressive", "restart"])
def test_region_equals_the_same_box_of_a_whole_decode(make_jpeg: Callable[..., bytes], kind: str) -> None:
    kw: dict[str, object] = {"subsampling": kind} if ":" in kind else {}
    if kind == "gray":
        kw = {"mode": "L"}
    elif kind == "progressive":
        kw = {"progressive": True}
    data = make_jpeg((203, 157), seed=7, **kw)
    if kind == "restart":  # restart markers every MCU row (Pillow's restart_marker_rows)
        data = make_jpeg((203, 157), seed=7, restart_marker_rows=1)
        assert b"\xff\xdd" in data[:2000]
    rng = np.random.default_rng(1)
    for d in (1, 2, 4):
        whole = _whole(data, d)
        H, W = whole.shape[:2]
        for _ in range(40):
            w, h = int(rng.integers(1, W + 1)), int(rng.integers(1, H + 1))
            x, y = int(rng.integers(0, W - w + 1)), int(rng.integers(0, H - h + 1))
            buf, rw, rh, x0, y0 = jr.decode_region(data, x, y, w, h, d, 0)
            assert x0 <= x and x0 + rw >= x + w and (y0, rh) == (y, h)
            got = np.frombuffer(buf, np.uint8).reshape(rh, rw, 3)[:, x - x0:x - x0 + w]
            assert np.array_equal(got, whole[y:y + h, x:x + w]), (d, x, y, w, h)
    if kind == "gray":
        assert (whole[..., 0] == whole[..., 2]).all()


def test_whole_decode_matches_the_other_decoders(make_jpeg: Callable[..., bytes]) -> None:
    data = make_jpeg((160, 120))
    assert np.array_equal(_whole(data, 1), decode_rgb(data, D.available_decoders()[0]))
    ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int16)
    assert np.abs(_whole(data, 1).astype(np.int16) - ref).max() <= 16


def test_bad_input_raises_and_never_returns_partial_images(photo: bytes) -> None:
    w, h = Image.open(io.BytesIO(photo)).size
    for bad in (b"", b"\xff\xd8\xff\xd9", b"garbage" * 20, photo[: len(photo) // 2]):
        with pytest.raises(RuntimeError, match="libjpeg"):
            jr.decode_region(bad, 0, 0, 0, 0, 1, 0)
    corrupt = bytearray(photo)
    corrupt[len(corrupt) // 2: len(corrupt) // 2 + 2] = b"\xff\xd9"  # a marker inside the entropy-coded data
    with pytest.raises(RuntimeError, match="Corrupt JPEG data"):
        jr.decode_region(bytes(corrupt), 0, 0, 0, 0, 1, 0)
    for args in [(-1, 0, 1, 1, 1), (0, 0, w + 1, 1, 1), (0, h, 1, 1, 1), (0, 0, 1, 1, 3)]:
        with pytest.raises(ValueError):
            jr.decode_region(photo, *args, 0)
    # through decode_crop: a truncated file is always a DecodeError, even for a box in its intact top part
    with pytest.raises(DecodeError):
        decode_crop(photo[: len(photo) // 2], (0, 0, 16, 16))


def test_cmyk_falls_back_to_a_whole_image_decoder(unusual_images: dict[str, bytes]) -> None:
    data = unusual_images["cmyk.jpg"]
    with pytest.raises(RuntimeError, match="CMYK"):
        jr.decode_region(data, 0, 0, 0, 0, 1, 0)
    crop = decode_crop(data, (8, 4, 32, 24))
    assert np.array_equal(crop, decode_rgb(data)[4:28, 8:40])


def test_decode_crop_uses_it_and_agrees_with_a_whole_decode(make_jpeg: Callable[..., bytes]) -> None:
    assert D.region_decoder() == "libjpeg-turbo"
    data = make_jpeg((320, 240), seed=3)
    for box, out in [((13, 7, 250, 201), None), ((40, 30, 200, 150), (50, 37)), ((0, 0, 320, 240), (100, 75))]:
        region = decode_crop(memoryview(data), box, out)
        whole = decode_crop(data, box, out, D.available_decoders()[0])  # a named decoder: whole image
        assert region.shape == whole.shape and np.array_equal(region, whole)


def test_threads_decode_concurrently_and_agree(make_jpeg: Callable[..., bytes]) -> None:
    images = [make_jpeg((240, 180), seed=s) for s in range(8)]
    want = [_whole(b, 1)[10:150, 20:200] for b in images]
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                for b, ref in zip(images, want):
                    buf, rw, rh, x0, _ = jr.decode_region(b, 20, 10, 180, 140, 1, 0)
                    assert np.array_equal(np.frombuffer(buf, np.uint8).reshape(rh, rw, 3)[:, 20 - x0:200 - x0], ref)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
