"""recpack._jpegregion, the optional libjpeg-turbo extension that decodes only what a crop needs."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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


KINDS = ["4:2:0", "4:2:2", "4:4:4", "gray", "progressive"]


def _kind(make_jpeg: Callable[..., bytes], kind: str) -> bytes:
    kw: dict[str, object] = {"subsampling": kind} if ":" in kind else {}
    if kind == "gray":
        kw = {"mode": "L"}
    elif kind == "progressive":
        kw = {"progressive": True}
    return make_jpeg((203, 157), seed=7, **kw)


@pytest.mark.parametrize("kind", [*KINDS, "restart rows", "restart blocks",
                                  *(f"restart markers added, {k}" for k in KINDS)])
def test_region_equals_the_same_box_of_a_whole_decode(make_jpeg: Callable[..., bytes], kind: str) -> None:
    data = ref = _kind(make_jpeg, kind.rsplit(", ", 1)[-1])
    if kind == "restart rows":  # a restart marker every MCU row (Pillow's restart_marker_rows)
        data = ref = make_jpeg((203, 157), seed=7, restart_marker_rows=1)
        assert b"\xff\xdd" in data[:2000]
    elif kind == "restart blocks":  # one after every MCU, written by Pillow: the sub-image path
        data = ref = make_jpeg((203, 157), seed=7, restart_marker_blocks=1)
    elif kind.startswith("restart markers added"):  # the reference is the original's whole decode
        data = jr.add_restarts(ref)
        assert b"\xff\xdd\x00\x04\x00\x01" in data  # DRI: every MCU
    rng = np.random.default_rng(1)
    for d in (1, 2, 4, 8):
        whole = _whole(ref, d)
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


@pytest.mark.parametrize("kind", KINDS)
def test_added_restart_markers_keep_every_pixel_and_marker(make_jpeg: Callable[..., bytes], kind: str) -> None:
    data = _kind(make_jpeg, kind)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: must survive, as must any APPn/COM segment
    tagged = make_jpeg((203, 157), seed=7, exif=exif.tobytes()) if kind == "4:2:0" else data
    out = jr.add_restarts(tagged)
    assert np.array_equal(_whole(out, 1), _whole(tagged, 1))
    assert np.array_equal(decode_rgb(out), decode_rgb(tagged))
    assert 0.8 < len(out) / len(tagged) < 1.1
    im = Image.open(io.BytesIO(out))
    assert not im.info.get("progressive") and im.size == (203, 157)
    if tagged is not data:
        assert im.getexif().get(0x0112) == 6
    with pytest.raises(RuntimeError, match="libjpeg"):
        jr.add_restarts(data[: len(data) // 2])


def test_restart_sub_images_skip_the_data_outside_the_box(make_jpeg: Callable[..., bytes]) -> None:
    """Proof that the MCUs outside the box are not even entropy-decoded: garbage there does not matter."""
    data = bytearray(jr.add_restarts(make_jpeg((256, 192), seed=5)))
    sos = data.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big")
    first_rst = data.index(b"\xff\xd0", start)
    data[start:first_rst] = b"\x5a" * (first_rst - start)  # MCU (0, 0): nonsense entropy-coded bits
    box = (96, 80, 64, 48)  # far from the top-left MCU and its one-MCU margin
    buf, rw, rh, x0, y0 = jr.decode_region(bytes(data), *box, 1, 0)
    want = _whole(jr.add_restarts(make_jpeg((256, 192), seed=5)), 1)[80:128, 96:160]
    assert np.array_equal(np.frombuffer(buf, np.uint8).reshape(rh, rw, 3)[:, 96 - x0:160 - x0], want)
    with pytest.raises(RuntimeError, match="libjpeg"):  # a whole decode does read that MCU
        jr.decode_region(bytes(data), 0, 0, 0, 0, 1, 0)


def test_broken_restart_structure_falls_back_or_raises_never_crashes(make_jpeg: Callable[..., bytes]) -> None:
    good = jr.add_restarts(make_jpeg((200, 150), seed=9))
    rst = [i for i in range(len(good) - 1) if good[i] == 0xFF and 0xD0 <= good[i + 1] <= 0xD7]
    variants = [good[:len(good) // 2], good[:-2], good.replace(b"\xff\xd1", b"\xff\xd2", 1)]
    for i in rst[:: max(1, len(rst) // 8)]:
        variants.append(good[:i] + good[i + 2:])  # one marker missing
    for bad in variants:
        for box in [(60, 50, 40, 30), (0, 0, 200, 150), (150, 100, 50, 50)]:
            try:
                buf, rw, rh, x0, y0 = jr.decode_region(bad, *box, 1, 0)
            except RuntimeError as e:
                assert "libjpeg" in str(e)
            else:
                assert rh == box[3] and len(buf) == rw * rh * 3


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


_FUZZ_BASE: dict[str, bytes] = {}


def _fuzz_base() -> bytes:
    if "rst" not in _FUZZ_BASE:
        from conftest import _jpeg  # the make_jpeg fixture's function (hypothesis cannot take fixtures)

        _FUZZ_BASE["rst"] = jr.add_restarts(_jpeg((96, 64), seed=4))
    return _FUZZ_BASE["rst"]


@settings(max_examples=300, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=6),
       cut=st.integers(0, 1 << 20), box=st.tuples(st.integers(0, 95), st.integers(0, 63), st.integers(1, 96),
                                                  st.integers(1, 64)), d=st.sampled_from([1, 2, 8]))
def test_mutated_restart_jpegs_raise_cleanly(edits: list[tuple[int, int]], cut: int,
                                             box: tuple[int, int, int, int], d: int) -> None:
    """The sub-image path parses untrusted headers and entropy-coded data itself: any damage gives a
    RuntimeError (libjpeg) or ValueError (a box outside the image), never a crash or a wrong-size result."""
    data = bytearray(_fuzz_base())
    for pos, value in edits:
        data[pos % len(data)] = value
    data = data[:max(2, len(data) - cut % 64)] if cut % 3 == 0 else data
    x, y, w, h = box
    try:
        buf, rw, rh, x0, y0 = jr.decode_region(bytes(data), x // d, y // d, max(1, w // d), max(1, h // d), d, 0)
    except (RuntimeError, ValueError):
        return
    assert rh == max(1, h // d) and y0 == y // d and len(buf) == rw * rh * 3 and x0 <= x // d
