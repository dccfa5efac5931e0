"""Per-sample image transforms run by the loader's decode threads.

Crop parameters are drawn for a whole batch at once, on the consumer side, as an (n, 5) int32 array (see
:data:`PARAMS_FIELDS`): a crop box in the *stored* image's pixels plus a flip flag. Train and val differ
only in how the box is chosen, so one function does the pixel work for both::

    params = train_params(rng, widths, heights)         # or val_params(widths, heights, 224)
    for i, data in enumerate(records):                  # on a decode thread
        decode_crop_resize(data, params[i], batch[i])   # batch: (B, 3, 224, 224) uint8, preallocated

:func:`decode_crop_resize` decodes only the crop's region (recpack's libjpeg-turbo region decoder, when
built) and at 1/2, 1/4 or 1/8 size in the DCT domain whenever the crop allows it, resizes with torch's uint8
bilinear+antialias kernel and writes straight into the batch slot. Measured on a 500x375, ~110 KB JPEG (one
core): decode ~0.86 ms for a typical train crop (~1.1 ms whole), resize to 224 ~0.2 ms, flip and copy
~0.02 ms; ~1.2 ms in all, ~850 images/s per core (a torchvision-like Pillow path: ~1.9 ms). The heavy parts
(libjpeg-turbo, torch's resize kernel) release the GIL, so N threads give close to N cores; copies and
flips use numpy, not torch's OpenMP-parallel kernels, whose spinning threads would compete with the decode
threads for the cores. Outputs are deterministic for the same bytes and parameters. Everything here is
thread-safe (no shared state).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .decode import decode_crop

__all__ = [
    "PARAMS_DTYPE",
    "PARAMS_FIELDS",
    "apply_user_transform",
    "decode_crop_resize",
    "train_params",
    "val_params",
]

#: dtype of the per-sample parameter arrays: shape (n, 5), columns named by PARAMS_FIELDS.
PARAMS_DTYPE = np.dtype(np.int32)
#: Column order of a parameter row: crop box x (left), y (top), w, h in stored-image pixels; flip 0/1.
PARAMS_FIELDS = ("x", "y", "w", "h", "flip")

_ATTEMPTS = 10  # torchvision's RandomResizedCrop.get_params tries 10 random boxes before its fallback


def train_params(rng: np.random.Generator, widths: np.ndarray, heights: np.ndarray,
                 scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 flip_p: float = 0.5) -> np.ndarray:
    """RandomResizedCrop boxes plus horizontal flips for n images of the given stored sizes (pixels).

    Same distribution as torchvision's ``RandomResizedCrop.get_params``: up to 10 attempts, each with an
    area fraction uniform in ``scale`` and an aspect ratio (w / h) log-uniform in ``ratio``, w and h rounded
    to whole pixels (half to even); the first attempt that fits is placed uniformly at random. When none
    fits, the fallback is the largest centred box whose aspect is clamped to ``ratio``. ``flip`` is 1 with
    probability ``flip_p``. The random stream differs from torchvision's; results are deterministic for the
    generator's state. Returns an (n, 5) :data:`PARAMS_DTYPE` array (:data:`PARAMS_FIELDS`); every box lies
    inside its image. Vectorised over images and attempts: ~0.1 ms for n = 256.
    """
    wd, ht = _sizes(widths, heights)
    lo_s, hi_s = _range("scale", scale)
    lo_r, hi_r = _range("ratio", ratio)
    if not 0.0 <= flip_p <= 1.0:
        raise ValueError(f"flip_p={flip_p}: use a probability in [0, 1]")
    n = wd.size
    wf, hf = wd.astype(np.float64), ht.astype(np.float64)
    target = (wf * hf)[:, None] * rng.uniform(lo_s, hi_s, size=(n, _ATTEMPTS))
    aspect = np.exp(rng.uniform(math.log(lo_r), math.log(hi_r), size=(n, _ATTEMPTS)))
    w = np.rint(np.sqrt(target * aspect))
    h = np.rint(np.sqrt(target / aspect))
    fits = (w > 0) & (w <= wf[:, None]) & (h > 0) & (h <= hf[:, None])
    first = fits.argmax(axis=1)
    rows = np.arange(n)
    found = fits[rows, first]
    w, h = w[rows, first], h[rows, first]

    in_ratio = wf / hf
    tall, wide = in_ratio < lo_r, in_ratio > hi_r
    fw = np.where(wide, np.rint(hf * hi_r), wf)
    fh = np.where(tall, np.rint(wf / lo_r), hf)
    w = np.where(found, w, np.maximum(fw, 1)).astype(np.int64)
    h = np.where(found, h, np.maximum(fh, 1)).astype(np.int64)

    # Offsets are drawn for every row (one vectorised call) and replaced by the centre for fallback rows.
    x = rng.integers(0, wd - w + 1)
    y = rng.integers(0, ht - h + 1)
    x = np.where(found, x, (wd - w) // 2)
    y = np.where(found, y, (ht - h) // 2)
    flip = rng.random(n) < flip_p
    return np.stack([x, y, w, h, flip], axis=1).astype(PARAMS_DTYPE)


def val_params(widths: np.ndarray, heights: np.ndarray, size: int, resize_ratio: float = 0.875) -> np.ndarray:
    """Boxes for "resize the shorter side to round(size / resize_ratio), then centre-crop size x size".

    Expressed as a square box in stored-image pixels, side round(size * shorter / round(size /
    resize_ratio)) (e.g. 328 for 500x375 at size 224: 224 * 375 / 256), centred with offsets rounded half to
    even like torchvision's CenterCrop; :func:`decode_crop_resize` then resizes the box straight to size x
    size. Differs from the two-step torchvision pipeline only by the box's rounding to whole pixels (< 0.5
    stored pixel per edge). flip is 0. Returns an (n, 5) :data:`PARAMS_DTYPE` array. ~20 us for n = 256.
    """
    wd, ht = _sizes(widths, heights)
    if size < 1:
        raise ValueError(f"size={size}: the output side must be >= 1 pixel")
    if not 0.0 < resize_ratio <= 1.0:
        raise ValueError(f"resize_ratio={resize_ratio}: use a value in (0, 1] (0.875 resizes to 256 for 224)")
    resized = round(size / resize_ratio)
    short = np.minimum(wd, ht)
    side = np.clip(np.rint(size * short / resized), 1, short).astype(np.int64)
    x = np.rint((wd - side) / 2).astype(np.int64)
    y = np.rint((ht - side) / 2).astype(np.int64)
    return np.stack([x, y, side, side, np.zeros_like(side)], axis=1).astype(PARAMS_DTYPE)


def decode_crop_resize(data: bytes | memoryview, params_row: np.ndarray | tuple[int, int, int, int, int],
                       out: torch.Tensor, decoder: str | None = None, reduce: bool = True) -> None:
    """Decode JPEG ``data``, crop the box in ``params_row``, resize to ``out``'s size, flip if asked, and
    write the result into ``out``.

    ``params_row`` is one row of :func:`train_params` / :func:`val_params` (x, y, w, h, flip). ``out`` is a
    (3, H, W) uint8 tensor, usually ``batch[i]`` of a preallocated (maybe pinned) batch; any strides work,
    nothing outside it is written. Grayscale and CMYK JPEGs come out RGB. With ``reduce`` (the default) the
    image is decoded at the largest DCT reduction 1/2, 1/4, 1/8 that keeps the crop >= (W, H) (see
    :func:`recpack.decode.decode_crop`); False always decodes at full size. Resizing is bilinear with
    antialiasing (torchvision ``resize(antialias=True)`` semantics) on uint8, ~0.2 ms for a 300x260 crop to
    224x224; a crop already of the output size is copied as is. No full-size intermediate is made besides
    the decoded image itself (the crop is a view). The GIL is held only for ~15 us of Python per image; the
    decode, resize, flip and copy release it. Raises DecodeError when the bytes do not decode or the box does
    not fit the image, ValueError for a bad ``out`` or box.
    """
    x, y, w, h, flip = (int(v) for v in (params_row.tolist() if isinstance(params_row, np.ndarray)
                                          else params_row))
    if out.dim() != 3 or out.shape[0] != 3 or out.dtype != torch.uint8:
        raise ValueError(f"out must be a (3, H, W) uint8 tensor (one image of a batch), not "
                         f"{tuple(out.shape)} {out.dtype}")
    oh, ow = int(out.shape[1]), int(out.shape[2])
    crop = decode_crop(data, (x, y, w, h), (ow, oh) if reduce else None, decoder)
    # HWC view -> (1, 3, h, w) with channels-last strides: torch's fast uint8 antialias kernel takes it as is
    # (a contiguous NCHW copy first is ~50% slower).
    if crop.shape[:2] == (oh, ow):
        res = crop
    else:
        # A contiguous crop (numpy's single-threaded copy) is a channels-last tensor that torch's uint8 kernel
        # takes as is; from the strided view torch would make that copy itself, on OpenMP threads.
        src = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)
        res = F.interpolate(src.unsqueeze(0), size=(oh, ow), mode="bilinear", align_corners=False,
                            antialias=True)[0].permute(1, 2, 0).numpy()
    # Flip and copy with numpy: torch's copy_/flip on a 150 KB image go through OpenMP (intra-op threads),
    # whose spin-waiting costs more CPU than the copy on a machine whose cores the decode threads already use.
    if flip:
        _copy_mirrored(out.numpy(), res.transpose(2, 0, 1))
    else:
        np.copyto(out.numpy().transpose(1, 2, 0), res)


def _copy_mirrored(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[...] = src[..., ::-1]`` for uint8 arrays of the same shape: the last axis mirrored.

    numpy copies a reversed uint8 axis byte by byte (36 us for 3x224x224); where both rows are contiguous and a
    multiple of 8 bytes long, the rows are reversed as 8-byte words and each word's bytes swapped instead
    (11 us), which is the same permutation of the bytes on any byte order.
    """
    if (dst.ndim and dst.shape[-1] % 8 == 0 and dst.strides[-1] == 1 and src.strides[-1] == 1
            and dst.shape == src.shape and dst.dtype == src.dtype == np.uint8):
        words = dst.view(np.uint64)  # numpy >= 1.23 views any array whose last axis is contiguous this way
        np.copyto(words, src.view(np.uint64)[..., ::-1])
        words.byteswap(inplace=True)
    else:
        np.copyto(dst, src[..., ::-1])


def apply_user_transform(fn: Callable[[np.ndarray], Any], img: np.ndarray, out: torch.Tensor) -> None:
    """Run a user transform ``fn(img)`` on a decoded (H, W, 3) uint8 image and copy its result into ``out``.

    ``out`` is a (C, H, W) slot of the batch. ``fn`` may return a numpy array, a torch tensor (any device)
    or anything ``np.asarray`` accepts (a PIL image), shaped (C, H, W) or (H, W, C) like ``out`` (when
    C == H == W, as (C, H, W)). Its dtype must be uint8 for
    a uint8 batch and floating for a floating batch (float64 results are cast to the batch's float type).
    Raises ValueError naming what was expected otherwise. Cost: ``fn`` itself plus one copy (~15 us for
    3x224x224 uint8; numpy and torch copies release the GIL).
    """
    if out.dim() != 3:
        raise ValueError(f"out must be a (C, H, W) tensor, not shape {tuple(out.shape)}")
    c, h, w = (int(v) for v in out.shape)
    res = fn(img)
    if isinstance(res, torch.Tensor):
        shape, dt = tuple(res.shape), res.dtype
        is_float, is_uint8 = dt.is_floating_point, dt == torch.uint8
    else:
        if not isinstance(res, np.ndarray):
            try:
                res = np.asarray(res)
            except Exception as e:
                raise ValueError(f"the transform returned {type(res).__name__}, which is not an array; return "
                                 f"a numpy array or torch tensor of shape ({c}, {h}, {w}) or ({h}, {w}, {c})") from e
        shape, dt = res.shape, res.dtype
        is_float, is_uint8 = np.issubdtype(dt, np.floating), dt == np.uint8
    want = "uint8" if out.dtype == torch.uint8 else str(out.dtype).removeprefix("torch.")
    if shape == (c, h, w):
        hwc = False
    elif shape == (h, w, c):
        hwc = True
    else:
        raise ValueError(f"the transform returned shape {shape}; expected ({c}, {h}, {w}) or ({h}, {w}, {c}) "
                         f"{want} to fill the batch (resize/crop to {h}x{w} inside the transform)")
    if out.dtype == torch.uint8:
        if not is_uint8:
            raise ValueError(f"the transform returned {dt} values but the batch holds uint8; return uint8 "
                             f"(0..255) or use a floating image dtype for the batch")
    elif out.dtype.is_floating_point:
        if not is_float:
            raise ValueError(f"the transform returned {dt} values but the batch holds {want}; return a "
                             f"floating array/tensor or use uint8 batches")
    else:
        raise ValueError(f"out has dtype {out.dtype}; batches hold uint8 or floating images")
    if isinstance(res, torch.Tensor):
        out.copy_(res.permute(2, 0, 1) if hwc else res)
    elif out.device.type == "cpu" and out.dtype != torch.bfloat16:
        # Copy in numpy: torch.from_numpy would warn on the read-only arrays transforms often return.
        np.copyto(out.numpy(), res.transpose(2, 0, 1) if hwc else res, casting="unsafe")
    else:
        out.copy_(torch.from_numpy(np.array(res.transpose(2, 0, 1) if hwc else res)))


def _sizes(widths: np.ndarray, heights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    wd = np.asarray(widths).astype(np.int64, copy=False).reshape(-1)
    ht = np.asarray(heights).astype(np.int64, copy=False).reshape(-1)
    if wd.shape != ht.shape:
        raise ValueError(f"widths ({wd.size}) and heights ({ht.size}) must have the same length")
    if wd.size and (wd.min() < 1 or ht.min() < 1):
        raise ValueError("widths and heights must be >= 1 pixel (stored image sizes)")
    return wd, ht


def _range(name: str, pair: tuple[float, float]) -> tuple[float, float]:
    lo, hi = float(pair[0]), float(pair[1])
    if not 0.0 < lo <= hi or not math.isfinite(hi):
        raise ValueError(f"{name}={pair!r}: use (low, high) with 0 < low <= high")
    return lo, hi
