"""Check, convert and re-encode one source image before it is packed.

Pure functions of bytes and options, meant to run in the packer's worker processes:

* :func:`read_source` reads a file, mapping every file-system failure to a :class:`~recpack.errors.BadImage`.
* :func:`prepare` checks the bytes and returns what to store: the **original bytes** of an RGB or
  grayscale JPEG (pass-through, the default), or a JPEG that recpack encoded (other formats, CMYK JPEGs,
  ``resize``, ``reencode``). Encoding is deterministic: the same input and options give the same bytes.

Every failure is a ``BadImage`` whose ``reason`` is a short, stable string for the pack report, e.g.
``"not an image"``, ``"truncated JPEG"``, ``"decompression bomb: 60000x60000 pixels"``.

Costs per ~110 KB 500x375 JPEG: the default header check ~0.1 ms; ``check="decode"`` adds a full
decode (~1-2 ms); converting or re-encoding costs a decode plus an encode (~4 ms).
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import BadImage

try:
    import simplejpeg as _simplejpeg
except ImportError:  # optional: then the decode check uses Pillow only, which hides libjpeg warnings
    _simplejpeg = None

__all__ = ["ImageOptions", "PreparedImage", "read_source", "prepare"]

_CHECKS = ("header", "decode")
_CONVERTS = ("jpeg", "reject")
_JPEG_FORMATS = ("JPEG", "MPO")  # MPO = multi-picture JPEG (some cameras); its first image is plain JPEG.
_PASS_MODES = ("L", "RGB")  # JPEG modes every fast decoder reads.
_EOI_SLACK = 4096  # bytes allowed after the last EOI marker (after trailing zero padding) in a header check.
_ORIENTATION = 0x0112  # EXIF tag.


@dataclass(frozen=True)
class ImageOptions:
    """How :func:`prepare` treats each image.

    check: "header" parses the header and checks that a JPEG ends with its EOI marker (cheap, ~0.1 ms);
        "decode" fully decodes every image (~1-2 ms per ImageNet-sized JPEG) and also rejects corrupt
        data: with simplejpeg installed, any libjpeg "Corrupt JPEG data" warning makes a JPEG bad.
    convert: what to do with inputs that are not RGB/grayscale JPEGs (PNG, WebP, CMYK JPEG, ...):
        "jpeg" converts them to a JPEG at ``quality``; "reject" reports them as bad.
    resize: when set, re-encode every image with its shorter side resized to exactly this many pixels
        (up or down, like im2rec ``--resize``); the longer side is floored, keeping the aspect ratio.
    quality: JPEG quality (1-100) used whenever recpack encodes.
    reencode: re-encode JPEGs at ``quality`` even without ``resize``.
    max_bytes: files larger than this many bytes are rejected.
    max_pixels: images whose header claims more than width*height pixels are rejected before decoding.
    """

    check: str = "header"
    convert: str = "jpeg"
    resize: int | None = None
    quality: int = 95
    reencode: bool = False
    max_bytes: int = 256 << 20
    max_pixels: int = 178_956_970

    def __post_init__(self) -> None:
        if self.check not in _CHECKS:
            raise ValueError(f"check={self.check!r}: use one of {', '.join(map(repr, _CHECKS))}")
        if self.convert not in _CONVERTS:
            raise ValueError(f"convert={self.convert!r}: use one of {', '.join(map(repr, _CONVERTS))}")
        if self.resize is not None and (isinstance(self.resize, bool) or self.resize < 1):
            raise ValueError(f"resize={self.resize!r}: use a positive number of pixels, or None to keep sizes")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality={self.quality!r}: use a JPEG quality from 1 to 100 (95 is a good default)")
        if self.max_bytes < 1 or self.max_pixels < 1:
            raise ValueError("max_bytes and max_pixels must be positive")


@dataclass(frozen=True)
class PreparedImage:
    """What to store for one image.

    data: the original file bytes (pass-through JPEG) or a JPEG recpack encoded.
    width, height: of the stored JPEG in pixels, before any EXIF orientation is applied.
    meta: small, msgpack-able, deterministic key order: "format", "mode" (stored), and when recpack
        encoded: "source_format", "source_mode", "source_size" [w, h], "converted" (why); for a
        pass-through JPEG with EXIF orientation != 1: "orientation".
    """

    data: bytes
    width: int
    height: int
    meta: dict[str, Any] = field(default_factory=dict)


def read_source(path: str, max_bytes: int) -> bytes:
    """Read a whole source file (one ``stat`` and one read). Raises BadImage with reason "broken symlink",
    "not found", "unreadable: <why>", "empty file" or "too large: N bytes > max_bytes"."""
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(21, "Is a directory")
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
            raise BadImage("unreadable: not a regular file", path)
        if st.st_size > max_bytes:
            raise BadImage(f"too large: {st.st_size} bytes > {max_bytes}", path)
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise BadImage("broken symlink" if os.path.islink(path) else "not found", path) from None
    except OSError as e:
        raise BadImage(f"unreadable: {e.strerror or type(e).__name__}", path) from None
    if not data:
        raise BadImage("empty file", path)
    if len(data) > max_bytes:  # the file grew after stat
        raise BadImage(f"too large: {len(data)} bytes > {max_bytes}", path)
    return data


def prepare(raw: bytes, opts: ImageOptions) -> PreparedImage:
    """Check ``raw`` (a whole source file) and return what to store. Raises only BadImage.

    Warnings from Pillow are silenced while it runs (this changes the process-wide warning filters
    briefly, so call it from worker processes rather than from many threads). Pillow's global
    ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay False (its default) for truncation checks to work.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _prepare(raw, opts)
    except BadImage:
        raise
    except Exception as e:  # any other failure on hostile bytes is reported, never raised
        raise BadImage(_undecodable(e)) from e


# -- steps ------------------------------------------------------------------------------------------------

def _prepare(raw: bytes, opts: ImageOptions) -> PreparedImage:
    if not raw:
        raise BadImage("empty file")
    if len(raw) > opts.max_bytes:
        raise BadImage(f"too large: {len(raw)} bytes > {opts.max_bytes}")
    im = _open(raw)
    fmt, mode, (width, height) = im.format or "unknown", im.mode, im.size
    if width * height > opts.max_pixels:
        raise BadImage(f"decompression bomb: {width}x{height} pixels")
    is_jpeg = fmt in _JPEG_FORMATS
    if opts.check == "decode":
        _decode_check(raw, im, is_jpeg)
    if is_jpeg:
        _check_jpeg_end(raw, im)

    why = _why_encode(fmt, mode, opts)
    if why is None:
        meta: dict[str, Any] = {"format": "JPEG", "mode": mode}
        orientation = _orientation(im)
        if orientation is not None:
            meta["orientation"] = orientation
        return PreparedImage(raw, width, height, meta)
    if opts.convert == "reject" and why in ("non-JPEG input", "CMYK JPEG"):
        what = f"non-JPEG input ({fmt})" if why == "non-JPEG input" else f"{mode} JPEG"
        raise BadImage(f"{what} rejected by --convert reject")

    _load(im, is_jpeg)
    out = _to_rgb_or_l(_transpose(im))
    if opts.resize is not None:
        out = _resize_shorter(out, opts.resize)
    data = _encode_jpeg(out, opts.quality)
    meta = {"format": "JPEG", "mode": out.mode, "source_format": fmt, "source_mode": mode,
            "source_size": [width, height], "converted": why}
    return PreparedImage(data, out.width, out.height, meta)


def _open(raw: bytes) -> Image.Image:
    """Parse the header (lazy: no pixel data is decoded)."""
    try:
        return Image.open(io.BytesIO(raw))
    except Image.DecompressionBombError:
        # Pillow refuses sizes over 2x its own limit before we can see them; ask the parser directly.
        size = _unchecked_size(raw)
        raise BadImage("decompression bomb: " + (f"{size[0]}x{size[1]} pixels" if size else
                                                 f"over {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels")) from None
    except UnidentifiedImageError:
        if raw[:3] == b"\xff\xd8\xff":
            raise BadImage("truncated JPEG" if b"\xff\xd9" not in raw else "undecodable: bad JPEG header") \
                from None
        raise BadImage("not an image") from None
    except Exception as e:
        if raw[:3] == b"\xff\xd8\xff" and b"\xff\xd9" not in raw:
            raise BadImage("truncated JPEG") from None
        raise BadImage(_undecodable(e)) from e


def _unchecked_size(raw: bytes) -> tuple[int, int] | None:
    """(width, height) from the first Pillow plugin that parses ``raw``, bypassing Pillow's pixel limit."""
    Image.init()
    for fmt in Image.ID:
        try:
            factory, accept = Image.OPEN[fmt]
            ok = accept is None or accept(raw[:16])
            if ok and not isinstance(ok, str):
                size = factory(io.BytesIO(raw), "").size
                return int(size[0]), int(size[1])
        except Exception:  # this plugin does not read it (or also refuses): try the next
            continue
    return None


def _load(im: Image.Image, is_jpeg: bool) -> None:
    """Decode the pixels (a no-op when already loaded), mapping failures to reasons."""
    try:
        im.load()
    except Exception as e:
        if "truncat" in str(e).lower():
            raise BadImage("truncated JPEG" if is_jpeg else "truncated image") from None
        raise BadImage(_undecodable(e)) from e


def _decode_check(raw: bytes, im: Image.Image, is_jpeg: bool) -> None:
    """Fully decode. JPEGs go through libjpeg-turbo with its warnings as errors (what the fast reader
    does), because Pillow silently fills corrupt or missing data with gray."""
    if is_jpeg and _simplejpeg is not None:
        try:
            _simplejpeg.decode_jpeg(raw, colorspace="RGB", strict=True)
            return  # decodes cleanly; Pillow decodes again only if the image must be converted
        except Exception as e:
            msg = " ".join(str(e).split())
            if msg.startswith("Premature end of JPEG file"):
                raise BadImage("truncated JPEG") from None
            if msg.startswith("Corrupt JPEG data"):
                detail = msg.split(":", 1)[-1].strip()
                raise BadImage("corrupt JPEG: " + (detail if len(detail) <= 60 else detail[:57] + "...")) \
                    from None
            # Anything else (a JPEG variant this build cannot read): Pillow decides below.
    _load(im, is_jpeg)


def _check_jpeg_end(raw: bytes, im: Image.Image) -> None:
    """A JPEG must end with EOI (FF D9), allowing zero padding and a few KB of trailing bytes."""
    end = len(raw.rstrip(b"\x00")) if raw.endswith(b"\x00") else len(raw)
    last = raw.rfind(b"\xff\xd9", 0, end)
    if last < 0:
        raise BadImage("truncated JPEG")
    if last + 2 < end - _EOI_SLACK:
        # An EOI well before the end is either an embedded thumbnail's (the file is truncated) or the
        # real one followed by appended data (motion photos append a video): a full decode tells which.
        _load(im, True)


def _why_encode(fmt: str, mode: str, opts: ImageOptions) -> str | None:
    """Why recpack must encode this image, or None to store the original bytes."""
    if fmt not in _JPEG_FORMATS:
        return "non-JPEG input"
    if mode not in _PASS_MODES:
        return "CMYK JPEG" if mode == "CMYK" else f"{mode} JPEG"
    if opts.resize is not None:
        return "resize"
    if opts.reencode:
        return "reencode"
    return None


def _orientation(im: Image.Image) -> int | None:
    try:
        value = im.getexif().get(_ORIENTATION)
    except Exception:  # corrupt EXIF does not make the image bad
        return None
    return value if isinstance(value, int) and 2 <= value <= 8 else None


def _transpose(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation to the pixels, so the encoded JPEG needs no EXIF."""
    try:
        out = ImageOps.exif_transpose(im)
    except Exception:  # corrupt EXIF: keep the pixels as stored
        return im
    return im if out is None else out


def _to_rgb_or_l(im: Image.Image) -> Image.Image:
    """8-bit RGB, or L for single-channel images; alpha is composited over white, 16-bit is scaled."""
    mode = im.mode
    if mode in ("RGB", "L"):
        return im
    if mode == "1":
        return im.convert("L")
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(im).astype(np.int64)
        # 0..65535 -> 0..255 with rounding; mode "I" is read as 16-bit too, clamped.
        a = (np.clip(a, 0, 65535) * 255 + 32767) // 65535
        return Image.fromarray(a.astype(np.uint8), "L")
    if mode == "F":
        f = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0)
        scale = 255.0 if f.size and float(f.max()) <= 1.0 else 1.0
        return Image.fromarray(np.clip(f * scale + 0.5, 0, 255).astype(np.uint8), "L")
    if mode == "P":
        mode = "RGBA" if "transparency" in im.info else "RGB"
        im = im.convert(mode)
    if mode in ("LA", "La"):
        return _gray_over_white(im.convert("LA"))
    if mode in ("RGBA", "RGBa", "PA"):
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, im.convert("RGBA")).convert("RGB")
    return im.convert("RGB")


def _gray_over_white(im: Image.Image) -> Image.Image:
    """LA -> L composited over white (alpha_composite takes RGBA only; numpy is exact and cheap)."""
    a = np.asarray(im).astype(np.uint32)
    gray, alpha = a[..., 0], a[..., 1]
    out = (gray * alpha + 255 * (255 - alpha) + 127) // 255
    return Image.fromarray(out.astype(np.uint8), "L")


def _resize_shorter(im: Image.Image, short: int) -> Image.Image:
    w, h = im.size
    if w <= h:
        size = (short, max(1, h * short // w))
    else:
        size = (max(1, w * short // h), short)
    if size == im.size:
        return im
    return im.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)


def _encode_jpeg(im: Image.Image, quality: int) -> bytes:
    """Baseline JPEG, Pillow's default 4:2:0 subsampling, no EXIF/ICC: deterministic bytes."""
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, optimize=False)
    return buf.getvalue()


def _undecodable(e: BaseException) -> str:
    detail = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, UnidentifiedImageError):
        detail = "unrecognised format"
    return "undecodable: " + (detail if len(detail) <= 80 else detail[:77] + "...")
