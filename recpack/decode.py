"""Decode stored image bytes (JPEG) into uint8 RGB arrays, optionally at reduced size or cropped.

Whole-image decoders live in a dict of plain functions, fastest first; the default tries them in order, so
anything the fast one cannot read (a missing package, an unusual JPEG, a non-JPEG) falls back to Pillow:

* ``simplejpeg`` (libjpeg-turbo; releases the GIL): ~1.1 ms for a 110 KB 500x375 JPEG on one core.
  Reads RGB, grayscale and CMYK/YCCK JPEGs.
* ``pillow``: ~1.7 ms for the same image (decode, then one copy into numpy: ~0.1 ms); any format.

Crops (:func:`decode_crop`, the train and val transforms) go through a *region decoder* when one is built:
``recpack._jpegregion``, a small C extension over libjpeg-turbo (setup.py; optional, built where a C
compiler and the libjpeg-turbo headers exist). It skips the rows above the box without inverse DCT or
colour conversion (jpeg_skip_scanlines), inverse-transforms only the iMCU columns the box touches
(jpeg_crop_scanline) and stops after the box's last row. The pixels are the same as a whole decode's
(tested bit for bit); a RandomResizedCrop of the image above costs ~0.86 ms instead of ~1.1 ms. Huffman
decoding of everything above the box's bottom edge remains, which is why the gain is ~20%, not the ~50%
the area would suggest. JPEGs with a restart marker after every MCU (``recpack pack --restart-markers``)
are first cut down to the MCUs the box touches, so that Huffman decoding follows the box's area too: ~0.60
ms instead of ~0.80 ms for the same crops (docs/design.md).

All decoders can decode a JPEG at 1/2, 1/4 or 1/8 of its size in the DCT domain (:func:`decode_crop` with ``out_size``,
:func:`decode_crop`), which skips most of the inverse DCT and colour conversion: for the 500x375 image
above, 1/2 costs ~0.9x a full decode, 1/4 ~0.85x, 1/8 ~0.7x (Huffman decoding, which cannot be skipped,
is the rest). Other libjpeg-turbo factors (3/8, 5/8, 3/4, 7/8) are *not* used: 5/8..7/8 are slower than a
full decode and 3/8 is no faster than 1/2.

Every function returns uint8 (H, W, 3) RGB and raises :class:`~recpack.errors.DecodeError` on bad bytes;
all of them are thread-safe and spend almost all their time with the GIL released.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from .errors import DecodeError

__all__ = ["MAX_PIXELS", "REDUCTIONS", "available_decoders", "decode_crop", "decode_rgb", "image_size",
           "pick_reduction", "plausible_size", "region_decoder"]

#: DCT-domain size reductions used, largest first: a JPEG decoded at 1/d is ceil(W/d) x ceil(H/d).
REDUCTIONS = (8, 4, 2, 1)

# A decoder maps (data, d) to the image decoded at 1/d of its size (d in REDUCTIONS). A decoder that cannot
# reduce (a non-JPEG through Pillow) returns the full size; callers check the shape they get.
Decoder = Callable[[bytes | memoryview, int], np.ndarray]

# Region decoders: name -> fn(data, (x, y, w, h), d) -> (array, x0, y0). They decode at 1/d only a region
# that covers the box (given in stored-image pixels) and return it with the region's top-left corner in
# 1/d-scaled pixels. decode_crop uses the one registered for its decoder (for None: the first registered).
RegionDecoder = Callable[[bytes | memoryview, tuple[int, int, int, int], int], tuple[np.ndarray, int, int]]
_REGION_DECODERS: dict[str, RegionDecoder] = {}

_jpegregion: Any
try:  # recpack's own libjpeg-turbo binding (setup.py): built where a compiler and the headers were present
    from . import _jpegregion
except ImportError:
    _jpegregion = None

try:
    import simplejpeg as _simplejpeg
except ImportError:  # optional: wheels exist for x86-64 and ARM64 only
    _simplejpeg = None


def _decode_simplejpeg(data: bytes | memoryview, d: int = 1) -> np.ndarray:
    # strict=True turns libjpeg warnings ("Premature end of JPEG file") into errors: no silent gray blocks.
    if d == 1:
        out: np.ndarray = _simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
        return out
    # simplejpeg picks the smallest libjpeg-turbo factor m/8 whose output is >= (min_width, min_height);
    # asking for exactly ceil(size / d) selects m = 8 / d when both sides are >= 8 * d (pick_reduction's rule;
    # below that a smaller m could give the same size).
    height, width = _simplejpeg.decode_jpeg_header(data)[:2]
    out = _simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True,
                                  min_width=-(-width // d), min_height=-(-height // d))
    return out


def _region_libjpeg(data: bytes | memoryview, box: tuple[int, int, int, int], d: int) -> tuple[np.ndarray, int, int]:
    # The smallest 1/d-grid box covering the stored-pixel box: floor of the start, ceiling of the end (both
    # within ceil(size / d) because the box fits the image). libjpeg widens the columns to whole iMCUs.
    x, y, w, h = box
    left, top = x // d, y // d
    buf, width, height, x0, y0 = _jpegregion.decode_region(data, left, top, -(-(x + w) // d) - left,
                                                           -(-(y + h) // d) - top, d, 0)
    return np.frombuffer(buf, dtype=np.uint8).reshape(height, width, 3), x0, y0


def _decode_pillow(data: bytes | memoryview, d: int = 1) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        if d > 1 and im.format == "JPEG":
            # draft picks the largest power-of-two scale s <= min(W // req_w, H // req_h); floor(W / d)
            # makes that exactly d (W // (W // d) lies in [d, 2d) when W >= d).
            im.draft("RGB", (max(1, im.width // d), max(1, im.height // d)))
        im.load()
        rgb = im if im.mode == "RGB" else im.convert("RGB")
        # One copy out of Pillow: np.asarray(rgb) would be as fast but read-only.
        buf = bytearray(rgb.tobytes())
        return np.frombuffer(buf, dtype=np.uint8).reshape(rgb.height, rgb.width, 3)


_DECODERS: dict[str, Decoder] = {}
if _simplejpeg is not None:
    _DECODERS["simplejpeg"] = _decode_simplejpeg
_DECODERS["pillow"] = _decode_pillow
if _jpegregion is not None:
    _REGION_DECODERS["libjpeg-turbo"] = _region_libjpeg


def available_decoders() -> list[str]:
    """Names of the decoders usable here, fastest first (e.g. ``["simplejpeg", "pillow"]``)."""
    return list(_DECODERS)


#: Images claiming more pixels than this are refused everywhere (pack's checks, verify, the Loader): Pillow's
#: decompression-bomb error threshold, 2 x ``PIL.Image.MAX_IMAGE_PIXELS``.
MAX_PIXELS = 178_956_970


def plausible_size(nbytes: int, width: int, height: int, is_jpeg: bool) -> str | None:
    """Why an image of ``nbytes`` bytes cannot really be ``width`` x ``height`` pixels, or None.

    More than :data:`MAX_PIXELS` is a decompression bomb. A JPEG codes every 8x8 block of its luma plane with
    at least one bit (baseline and progressive alike: a DC difference and an end-of-block code each take at
    least one), so one with fewer than blocks / 8 bytes has had its data cut off, whatever its header
    claims; decoding it would only allocate the claimed size and fill it with gray."""
    if width * height > MAX_PIXELS:
        return f"decompression bomb: {width}x{height} pixels (more than {MAX_PIXELS:,})"
    if is_jpeg and nbytes * 8 < (-(-width // 8)) * (-(-height // 8)):
        return f"truncated JPEG: {nbytes} bytes cannot hold the {width}x{height} pixels its header claims"
    return None


def _checked_size(data: bytes | memoryview) -> tuple[int, int]:
    """image_size, refusing sizes the bytes cannot hold (DecodeError)."""
    width, height = image_size(data)
    why = plausible_size(len(data), width, height, bytes(data[:3]) == b"\xff\xd8\xff")
    if why is not None:
        raise DecodeError(why)
    return width, height


def decode_rgb(data: bytes | memoryview, decoder: str | None = None) -> np.ndarray:
    """Decode ``data`` to a writable, C-contiguous (H, W, 3) uint8 RGB array.

    Grayscale and CMYK images come out as RGB. EXIF orientation is not applied (the array is the image
    as stored). ``decoder`` names one of :func:`available_decoders` and uses only it; None tries each
    in order and takes the first that succeeds, except that a JPEG libjpeg-turbo finds corrupt or truncated
    is an error, never handed to Pillow (which would fill the missing part with gray). Raises DecodeError
    when the bytes do not decode or cannot hold the size their header claims (:func:`plausible_size`),
    ValueError for a decoder name that is not available.
    """
    _checked_size(data)
    return _decode(data, 1, decoder)


def pick_reduction(width: int, height: int, min_width: int, min_height: int) -> int:
    """The largest d in :data:`REDUCTIONS` (8, 4, 2, 1) with width / d >= min_width and height / d >=
    min_height, in pixels. Reductions are only used when both sides stay >= 8 pixels at 1/d, so that every
    decoder agrees on the output size ceil(width / d) x ceil(height / d). Pure arithmetic (~1 us)."""
    for d in REDUCTIONS[:-1]:
        if width >= max(min_width, 8) * d and height >= max(min_height, 8) * d:
            return d
    return 1


def decode_crop(data: bytes | memoryview, box: tuple[int, int, int, int], out_size: tuple[int, int] | None = None,
                decoder: str | None = None) -> np.ndarray:
    """Decode the pixels of ``box`` = (x, y, w, h), in stored-image pixels, as an (h', w', 3) uint8 RGB view.

    With ``out_size`` = (width, height) of what the crop will be resized to, the image is decoded at the
    largest reduction 1/d (d in 8, 4, 2) that keeps the crop >= out_size on both sides, and the box is
    mapped to the reduced image (edges rounded to the nearest reduced pixel, so h' ~ h / d, w' ~ w / d);
    None decodes at full size (h' = h, w' = w). The result is a non-contiguous view into the decoded image
    (row stride = the image's); its (h', w') can be smaller than out_size by rounding only when out_size is
    within a pixel of the crop at 1/d.

    With ``decoder=None``, the region decoder (:func:`region_decoder`) decodes only the part of the image
    the box needs, when the JPEG is complete (ends with its EOI marker; a truncated file always goes through
    a strict whole-image decode). A named ``decoder``, or the region decoder's failure (e.g. on CMYK),
    decodes the whole image; the pixels are the same either way. Raises DecodeError when the bytes do not
    decode or the box does not fit inside the image, ValueError for a box with w or h < 1 or an unknown
    decoder.
    """
    x, y, w, h = (int(v) for v in box)
    if w < 1 or h < 1:
        raise ValueError(f"box={box!r}: crop width and height must be >= 1 pixel")
    width, height = _checked_size(data)
    if x < 0 or y < 0 or x + w > width or y + h > height:
        raise DecodeError(f"crop box (x={x}, y={y}, w={w}, h={h}) does not fit the {width}x{height} image; "
                          f"crop parameters must be computed from the stored image's size")
    d = 1 if out_size is None else pick_reduction(w, h, int(out_size[0]), int(out_size[1]))
    arr: np.ndarray | None = None
    x0 = y0 = 0
    if decoder is None and _REGION_DECODERS and bytes(data[-2:]) == b"\xff\xd9":
        try:
            arr, x0, y0 = next(iter(_REGION_DECODERS.values()))(data, (x, y, w, h), d)
        except Exception:
            pass  # the whole-image decoders below read what this one cannot, or raise a DecodeError
    if arr is None:
        arr, d = _decode_checked(data, d, decoder, width, height)
    # Map [x, x + w) to the reduced grid: pixel j there covers stored pixels [j * d, (j + 1) * d).
    left, top = _round_div(x, d) - x0, _round_div(y, d) - y0
    right, bottom = _round_div(x + w, d) - x0, _round_div(y + h, d) - y0
    left = min(max(left, 0), arr.shape[1] - 1)
    top = min(max(top, 0), arr.shape[0] - 1)
    right = min(max(right, left + 1), arr.shape[1])
    bottom = min(max(bottom, top + 1), arr.shape[0])
    return arr[top:bottom, left:right]


def region_decoder() -> str | None:
    """Name of the region decoder :func:`decode_crop` uses (``"libjpeg-turbo"``: recpack's optional C
    extension, built at install time where a C compiler and the libjpeg-turbo headers exist), or None when
    there is none here and crops are cut from whole decoded images."""
    return next(iter(_REGION_DECODERS), None)


def image_size(data: bytes | memoryview) -> tuple[int, int]:
    """(width, height) of the image in ``data``, from its header only (~1 us for a JPEG with simplejpeg,
    ~20 us via Pillow). Raises DecodeError when no header can be read."""
    if _simplejpeg is not None:
        try:
            height, width = _simplejpeg.decode_jpeg_header(data)[:2]
            return int(width), int(height)
        except Exception:  # not a JPEG simplejpeg reads: ask Pillow
            pass
    try:
        with Image.open(io.BytesIO(data)) as im:
            return int(im.width), int(im.height)
    except Exception as e:
        raise DecodeError(f"cannot read an image header from {len(data)} bytes: {_detail(e)}") from e


def _round_div(a: int, d: int) -> int:
    """round(a / d) with halves rounded up, in integers (d is a power of two)."""
    return (2 * a + d) // (2 * d)


def _decode(data: bytes | memoryview, d: int, decoder: str | None) -> np.ndarray:
    if decoder is not None:
        fn = _DECODERS.get(decoder)
        if fn is None:
            hint = " (pip install simplejpeg)" if decoder == "simplejpeg" else ""
            raise ValueError(f"decoder={decoder!r} is not available here{hint}; use one of "
                             f"{available_decoders()} or None to pick automatically")
        try:
            return fn(data, d)
        except Exception as e:
            raise DecodeError(f"{decoder} cannot decode {len(data)} bytes: {_detail(e)}") from e
    errors = []
    for name, fn in _DECODERS.items():
        try:
            return fn(data, d)
        except Exception as e:
            errors.append(f"{name}: {_detail(e)}")
            if name == "simplejpeg" and _is_damage(e):
                break  # the JPEG is damaged: the next decoder would only hide it
    raise DecodeError(f"cannot decode {len(data)} bytes as an image ({'; '.join(errors)})")


def _decode_checked(data: bytes | memoryview, d: int, decoder: str | None, width: int,
                    height: int) -> tuple[np.ndarray, int]:
    """Decode at 1/d and return (array, the reduction actually applied): 1 for images decoders cannot
    reduce (non-JPEGs). A size that matches neither is a DecodeError (header and data disagree)."""
    arr = _decode(data, d, decoder)
    got = arr.shape[:2]
    if got == (-(-height // d), -(-width // d)):
        return arr, d
    if got == (height, width):
        return arr, 1
    raise DecodeError(f"decoded size {got[1]}x{got[0]} does not match the header's {width}x{height} at 1/{d}")


def _is_damage(e: BaseException) -> bool:
    """libjpeg's strict-mode errors for damaged data (as opposed to a JPEG variant it cannot read)."""
    text = str(e)
    return text.startswith(("Premature end of JPEG file", "Corrupt JPEG data"))


def _detail(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    if text.startswith("cannot identify image file"):
        return "unrecognised format"
    return text if len(text) <= 120 else text[:117] + "..."
