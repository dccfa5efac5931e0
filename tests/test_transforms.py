from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import recpack.transforms as T
from recpack.decode import available_decoders, decode_rgb
from recpack.errors import DecodeError
from recpack.transforms import (
    PARAMS_DTYPE,
    PARAMS_FIELDS,
    apply_user_transform,
    decode_crop_resize,
    train_params,
    val_params,
)

DECODERS = available_decoders()


def test_public_names() -> None:
    assert sorted(T.__all__) == sorted(["PARAMS_DTYPE", "PARAMS_FIELDS", "apply_user_transform",
                                        "decode_crop_resize", "train_params", "val_params"])
    assert PARAMS_FIELDS == ("x", "y", "w", "h", "flip")


# train_params ---------------------------------------------------------------------------------------------------

def _inside(p: np.ndarray, wd: np.ndarray, ht: np.ndarray) -> bool:
    x, y, w, h, _ = p.T
    return bool((x >= 0).all() and (y >= 0).all() and (w >= 1).all() and (h >= 1).all()
                and (x + w <= wd).all() and (y + h <= ht).all())


def test_train_params_shape_bounds_statistics() -> None:
    rng = np.random.default_rng(0)
    n = 20000
    wd = rng.integers(200, 1200, n)
    ht = rng.integers(200, 1200, n)
    p = train_params(np.random.default_rng(1), wd, ht)
    assert p.shape == (n, 5) and p.dtype == PARAMS_DTYPE
    assert _inside(p, wd, ht)
    x, y, w, h, flip = p.T.astype(np.float64)
    # Boxes from a successful attempt: area fraction within scale and aspect within ratio (up to rounding).
    near_square = np.abs(np.log(wd / ht)) < np.log(4 / 3)
    frac, aspect = (w * h / (wd * ht))[near_square], (w / h)[near_square]
    assert frac.min() > 0.08 * 0.9 and frac.max() <= 1.0
    assert aspect.min() > 0.75 * 0.97 and aspect.max() < 4 / 3 * 1.03
    # Truncated-uniform-ish area fraction: mean between 0.4 and 0.6 (0.54 untruncated).
    assert 0.4 < frac.mean() < 0.6
    # Log-uniform aspect: median ~1 and both sides used.
    assert abs(np.median(np.log(aspect))) < 0.05
    assert set(np.unique(flip)) == {0.0, 1.0} and abs(flip.mean() - 0.5) < 0.02
    # Offsets spread over the free range, not centred.
    free = wd - w
    assert (x[free > 50] / free[free > 50]).std() > 0.2


def test_train_params_deterministic_and_options() -> None:
    wd, ht = np.full(64, 500), np.full(64, 375)
    a = train_params(np.random.default_rng(5), wd, ht)
    b = train_params(np.random.default_rng(5), wd, ht)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, train_params(np.random.default_rng(6), wd, ht))
    assert (train_params(np.random.default_rng(5), wd, ht, flip_p=0.0)[:, 4] == 0).all()
    full = train_params(np.random.default_rng(5), wd, ht, scale=(1.0, 1.0), ratio=(4 / 3, 4 / 3))
    assert (full[:, :4] == [0, 0, 500, 375]).all()


def test_train_params_fallback_for_extreme_aspect() -> None:
    # 1000x10: no box with aspect in [3/4, 4/3] and >= 8% of the area fits: centred h=10, w=round(13.3).
    p = train_params(np.random.default_rng(0), np.array([1000, 10, 1]), np.array([10, 1000, 1]))
    assert p[0, :4].tolist() == [(1000 - 13) // 2, 0, 13, 10]
    assert p[1, :4].tolist() == [0, (1000 - 13) // 2, 10, 13]
    assert p[2, :4].tolist() == [0, 0, 1, 1]


def test_train_params_fast_and_validates() -> None:
    import time

    rng = np.random.default_rng(0)
    wd, ht = np.full(256, 500), np.full(256, 375)
    train_params(rng, wd, ht)
    t0 = time.perf_counter()
    for _ in range(20):
        train_params(rng, wd, ht)
    assert (time.perf_counter() - t0) / 20 < 1e-3
    with pytest.raises(ValueError, match="scale"):
        train_params(rng, wd, ht, scale=(0.5, 0.1))
    with pytest.raises(ValueError, match="ratio"):
        train_params(rng, wd, ht, ratio=(0.0, 1.0))
    with pytest.raises(ValueError, match="same length"):
        train_params(rng, wd, ht[:3])
    with pytest.raises(ValueError, match=">= 1 pixel"):
        train_params(rng, np.array([0]), np.array([5]))
    assert train_params(rng, np.array([], int), np.array([], int)).shape == (0, 5)


# val_params -----------------------------------------------------------------------------------------------------

def test_val_params_centred_box() -> None:
    p = val_params(np.array([500, 375, 256, 1000]), np.array([375, 500, 256, 100]), 224)
    assert p.dtype == PARAMS_DTYPE and p.shape == (4, 5)
    # 500x375: shorter side 375 -> 256, so a 224 crop is 224 * 375 / 256 = 328 stored pixels.
    assert p[0].tolist() == [86, 24, 328, 328, 0]  # (500-328)/2 = 86, (375-328)/2 = 23.5 -> 24 (half even)
    assert p[1].tolist() == [24, 86, 328, 328, 0]
    assert p[2].tolist() == [16, 16, 224, 224, 0]
    assert p[3].tolist() == [456, 6, 88, 88, 0]  # 224 * 100 / 256 = 87.5 -> 88
    assert _inside(p, np.array([500, 375, 256, 1000]), np.array([375, 500, 256, 100]))
    assert val_params(np.array([400]), np.array([400]), 224, resize_ratio=1.0)[0].tolist() == [0, 0, 400, 400, 0]
    with pytest.raises(ValueError, match="resize_ratio"):
        val_params(np.array([4]), np.array([4]), 2, resize_ratio=1.5)


# decode_crop_resize ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def photo(make_jpeg: Callable[..., bytes]) -> bytes:
    return make_jpeg((320, 240), seed=11)


@pytest.mark.parametrize("decoder", [None, *DECODERS])
def test_writes_only_its_slot(photo: bytes, decoder: str | None) -> None:
    batch = torch.full((3, 3, 64, 64), 7, dtype=torch.uint8)
    decode_crop_resize(photo, np.array([10, 20, 200, 150, 0], np.int32), batch[1], decoder)
    assert (batch[0] == 7).all() and (batch[2] == 7).all()
    assert batch.dtype == torch.uint8 and batch[1].float().std() > 5
    # Same as resizing the crop of a full decode (reduction 1/2 here: 100x75 >= 64).
    ref = torch.from_numpy(decode_rgb(photo)[20:170, 10:210]).permute(2, 0, 1)[None].float()
    ref = torch.nn.functional.interpolate(ref, size=(64, 64), mode="bilinear", antialias=True)[0]
    assert (batch[1].float() - ref).abs().mean() < 3


def test_flip_mirrors_and_is_deterministic(photo: bytes) -> None:
    a = torch.empty(3, 48, 48, dtype=torch.uint8)
    b = torch.empty(3, 48, 48, dtype=torch.uint8)
    decode_crop_resize(photo, (30, 40, 150, 120, 0), a)
    decode_crop_resize(photo, (30, 40, 150, 120, 1), b)
    assert torch.equal(a.flip(2), b)
    c = torch.empty_like(a)
    decode_crop_resize(photo, np.array([30, 40, 150, 120, 0], dtype=np.int32), c)
    assert torch.equal(a, c)


def test_reduced_decode_close_to_full(make_jpeg: Callable[..., bytes]) -> None:
    data = make_jpeg((640, 480), seed=3)
    for box, side in [((0, 0, 640, 480), 224), ((100, 50, 400, 300), 96), ((5, 9, 600, 400), 40)]:
        red = torch.empty(3, side, side, dtype=torch.uint8)
        full = torch.empty(3, side, side, dtype=torch.uint8)
        decode_crop_resize(data, (*box, 0), red)
        decode_crop_resize(data, (*box, 0), full, reduce=False)
        assert (red.float() - full.float()).abs().mean() < 3, box


def test_output_of_crop_size_is_copied_exactly(photo: bytes) -> None:
    out = torch.empty(3, 100, 80, dtype=torch.uint8)  # non-square output: (3, H, W)
    decode_crop_resize(photo, (7, 9, 80, 100, 0), out, reduce=False)
    assert torch.equal(out, torch.from_numpy(decode_rgb(photo)[9:109, 7:87]).permute(2, 0, 1))


def test_channels_last_batch_slot(photo: bytes) -> None:
    batch = torch.zeros(2, 3, 32, 32, dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    ref = torch.zeros(3, 32, 32, dtype=torch.uint8)
    decode_crop_resize(photo, (0, 0, 320, 240, 1), batch[1])
    decode_crop_resize(photo, (0, 0, 320, 240, 1), ref)
    assert torch.equal(batch[1], ref) and (batch[0] == 0).all()


@pytest.mark.parametrize("decoder", [None, *DECODERS])
def test_gray_and_cmyk_come_out_rgb(unusual_images: dict[str, bytes], decoder: str | None) -> None:
    out = torch.empty(3, 16, 16, dtype=torch.uint8)
    decode_crop_resize(unusual_images["gray.jpg"], (0, 0, 64, 48, 0), out, decoder)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2]) and out.float().std() > 1
    decode_crop_resize(unusual_images["cmyk.jpg"], (0, 0, 64, 48, 0), out, decoder)
    ref = torch.from_numpy(decode_rgb(unusual_images["cmyk.jpg"], decoder)).permute(2, 0, 1)[None].float()
    ref = torch.nn.functional.interpolate(ref, size=(16, 16), mode="bilinear", antialias=True)[0]
    assert (out.float() - ref).abs().mean() < 4


def test_errors(photo: bytes) -> None:
    out = torch.empty(3, 32, 32, dtype=torch.uint8)
    for bad in (b"", b"garbage" * 20, photo[: len(photo) // 2]):
        with pytest.raises(DecodeError):
            decode_crop_resize(bad, (0, 0, 32, 32, 0), out)
    with pytest.raises(DecodeError, match="does not fit"):
        decode_crop_resize(photo, (300, 0, 40, 40, 0), out)
    with pytest.raises(ValueError, match=r"\(3, H, W\) uint8"):
        decode_crop_resize(photo, (0, 0, 32, 32, 0), torch.empty(3, 32, 32))
    with pytest.raises(ValueError, match=r"\(3, H, W\) uint8"):
        decode_crop_resize(photo, (0, 0, 32, 32, 0), torch.empty(32, 32, 3, dtype=torch.uint8))


# apply_user_transform -------------------------------------------------------------------------------------------

IMG = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)


@pytest.mark.parametrize("fn", [
    lambda a: a[:32, :32],  # HWC numpy view
    lambda a: np.ascontiguousarray(a[:32, :32].transpose(2, 0, 1)),  # CHW numpy
    lambda a: torch.from_numpy(a[:32, :32].copy()),  # HWC tensor
    lambda a: torch.from_numpy(a[:32, :32].copy()).permute(2, 0, 1),  # CHW tensor view
])
def test_user_transform_layouts(fn: Callable[[np.ndarray], Any]) -> None:
    batch = torch.zeros(3, 3, 32, 32, dtype=torch.uint8)
    apply_user_transform(fn, IMG, batch[1])
    assert torch.equal(batch[1], torch.from_numpy(IMG[:32, :32]).permute(2, 0, 1))
    assert (batch[0] == 0).all() and (batch[2] == 0).all()


def test_user_transform_float_and_read_only() -> None:
    out = torch.zeros(3, 32, 32, dtype=torch.float32)

    def norm(a: np.ndarray) -> np.ndarray:
        r = a[:32, :32].astype(np.float64) / 255
        r.flags.writeable = False
        return r

    apply_user_transform(norm, IMG, out)
    assert torch.allclose(out, torch.from_numpy(IMG[:32, :32] / 255).permute(2, 0, 1).float())
    half = torch.zeros(3, 32, 32, dtype=torch.bfloat16)
    apply_user_transform(lambda a: torch.ones(3, 32, 32), IMG, half)
    assert (half == 1).all()


@pytest.mark.parametrize(("fn", "out_dtype", "match"), [
    (lambda a: a, torch.uint8, r"shape \(40, 50, 3\); expected \(3, 32, 32\) or \(32, 32, 3\) uint8"),
    (lambda a: a[:32, :32, :1], torch.uint8, "expected"),
    (lambda a: a[:32, :32].astype(np.float32), torch.uint8, "float32 values but the batch holds uint8"),
    (lambda a: torch.zeros(3, 32, 32), torch.uint8, "float32 values but the batch holds uint8"),
    (lambda a: a[:32, :32], torch.float32, "uint8 values but the batch holds float32"),
    (lambda a: a[:32, :32].astype(np.int64), torch.uint8, "int64 values"),
    (lambda a: "not an image", torch.uint8, "shape"),
])
def test_user_transform_errors(fn: Callable[[np.ndarray], Any], out_dtype: torch.dtype, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        apply_user_transform(fn, IMG, torch.zeros(3, 32, 32, dtype=out_dtype))


def test_user_transform_pil_result() -> None:
    from PIL import Image

    out = torch.zeros(3, 20, 25, dtype=torch.uint8)
    apply_user_transform(lambda a: Image.fromarray(a).resize((25, 20)), IMG, out)
    assert out.float().std() > 10
    assert math.isclose(out.float().mean().item(), float(IMG.mean()), abs_tol=15)


@pytest.mark.parametrize("shape", [(3, 224, 224), (3, 5, 24), (3, 7, 13), (2, 1, 8), (16,)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided_src"])
def test_mirrored_copy_equals_numpys_reversed_copy(shape: tuple[int, ...], layout: str) -> None:
    from recpack.transforms import _copy_mirrored

    rng = np.random.default_rng(sum(shape))
    src = rng.integers(0, 256, shape, dtype=np.uint8)
    dst = np.zeros(shape, np.uint8)
    if layout == "channels_last" and len(shape) == 3:  # a (C, H, W) view of (H, W, C) memory, as a batch slot may be
        dst = np.zeros(shape[1:] + shape[:1], np.uint8).transpose(2, 0, 1)
    if layout == "strided_src":  # rows of a bigger array (a crop of a decoded image)
        src = np.ascontiguousarray(np.pad(src, [(0, 0)] * (len(shape) - 1) + [(0, 3)]))[..., :shape[-1]]
    _copy_mirrored(dst, src)
    assert np.array_equal(dst, src[..., ::-1])
