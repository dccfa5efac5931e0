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

from . import decode as _decode
from .decode import MAX_PIXELS, plausible_size
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
    restart_markers: losslessly re-write every stored JPEG (its DCT coefficients copied, not re-quantised;
        APPn/COM markers kept) as a baseline JPEG with optimised Huffman tables and a restart marker after
        every MCU (:func:`add_restart_markers`). Same pixels, about the same size (-1%..+3%); the Loader's
        crops then entropy-decode only the MCUs they touch (train-224 region decode ~25% faster). ~3 ms per
        image when packing. Needs the C extension ``recpack._jpegregion``.
    """

    check: str = "header"
    convert: str = "jpeg"
    resize: int | None = None
    quality: int = 95
    reencode: bool = False
    max_bytes: int = 256 << 20
    max_pixels: int = MAX_PIXELS
    restart_markers: bool = False

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
            out = _prepare(raw, opts)
    except BadImage:
        raise
    except Exception as e:  # any other failure on hostile bytes is reported, never raised
        raise BadImage(_undecodable(e)) from e
    return _with_restart_markers(out) if opts.restart_markers else out


def restart_markers_available() -> str | None:
    """None when :func:`add_restart_markers` works here, else why not and what to do."""
    _jpegregion = _decode._jpegregion  # None where the extension was not built
    if _jpegregion is None:
        return ("restart markers need recpack's C extension (recpack._jpegregion), which was not built: "
                "install the libjpeg-turbo headers (apt-get install libjpeg-dev; brew install jpeg-turbo) and "
                "a C compiler, then reinstall recpack (pip install -e .)")
    return None


def add_restart_markers(data: bytes) -> bytes:
    """``data`` (a JPEG) losslessly re-written with a restart marker after every MCU (see
    ``ImageOptions.restart_markers``). Raises RuntimeError with libjpeg's message on bytes libjpeg refuses
    (corrupt data included) and ImportError without the C extension."""
    _jpegregion = _decode._jpegregion
    if _jpegregion is None:
        raise ImportError(restart_markers_available())
    out: bytes = _jpegregion.add_restarts(data)
    return out


def _with_restart_markers(p: PreparedImage) -> PreparedImage:
    """``p`` with restart markers; unchanged when libjpeg refuses the bytes (they still decode through the
    ordinary path: a header-checked JPEG with corrupt data stays as it was)."""
    try:
        data = add_restart_markers(p.data)
    except RuntimeError:
        return p
    return PreparedImage(data, p.width, p.height, p.meta)


# -- steps ------------------------------------------------------------------------------------------------

def _prepare(raw: bytes, opts: ImageOptions) -> PreparedImage:
    if not raw:
        raise BadImage("empty file")
    if len(raw) > opts.max_bytes:
        raise BadImage(f"too large: {len(raw)} bytes > {opts.max_bytes}")
    if opts.check == "header" and opts.resize is None and not opts.reencode:
        fast = _pass_through_jpeg(raw, opts)
        if fast is not None:
            return fast
    im = _open(raw)
    fmt, mode, (width, height) = im.format or "unknown", im.mode, im.size
    if width * height > opts.max_pixels:
        raise BadImage(f"decompression bomb: {width}x{height} pixels")
    is_jpeg = fmt in _JPEG_FORMATS
    if is_jpeg and (plausible_size(len(raw), width, height, True) or "").startswith("truncated"):
        raise BadImage("truncated JPEG: too few bytes for the size its header claims")  # as every decoder says
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


_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (DHT, JPG, DAC excluded)
# Markers Pillow reads without a length (JPG, RSTn, SOI, EOI, JPGn): mirrored so both parsers agree.
_NO_LENGTH = frozenset(range(0xD0, 0xDA)) | frozenset(range(0xF0, 0xFE)) | {0xC8}


def _pass_through_jpeg(raw: bytes, opts: ImageOptions) -> PreparedImage | None:
    """The header check for the common case, without Pillow: walk the JPEG markers up to SOS, read the
    frame size and component count, the EXIF orientation, and check the end-of-image marker.

    ~10x cheaper than Pillow's parser, which matters because pass-through packing is otherwise only a copy.
    Returns None whenever anything is unusual (not 8-bit L/RGB, odd EXIF, a distant EOI, ...), and the
    caller then takes the Pillow path, which decides; so both paths accept and reject the same files."""
    n = len(raw)
    if raw[:3] != b"\xff\xd8\xff":
        return None
    pos, frame, orientation, exif_seen = 2, None, None, False
    while pos + 4 <= n:
        if raw[pos] != 0xFF:
            return None
        marker = raw[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker < 0xC0:  # Pillow rejects these; let it name the problem
            return None
        if marker in _NO_LENGTH:
            pos += 2
            continue
        length = int.from_bytes(raw[pos + 2:pos + 4], "big")
        end = pos + 2 + length
        if length < 2 or end > n:
            return None
        if marker == 0xDA:  # start of scan: the header is over
            break
        if marker in _SOF:
            if frame is not None or length < 8:
                return None
            precision = raw[pos + 4]
            height = int.from_bytes(raw[pos + 5:pos + 7], "big")
            width = int.from_bytes(raw[pos + 7:pos + 9], "big")
            frame = (precision, width, height, raw[pos + 9])
        elif marker == 0xE1 and raw[pos + 4:pos + 10] == b"Exif\x00\x00":
            if exif_seen:
                return None
            exif_seen = True
            orientation = _exif_orientation(raw[pos + 10:end])
            if orientation == -1:
                return None
        elif marker == 0xDB and not _dqt_ok(raw[pos + 4:end]):
            return None
        elif marker == 0xE2 and raw[pos + 4:pos + 8] == b"MPF\x00":
            return None  # multi-picture JPEG: Pillow's MPO handling decides
        pos = end
    else:
        return None
    if frame is None:
        return None
    precision, width, height, components = frame
    if precision != 8 or width == 0 or height == 0 or components not in (1, 3):
        return None
    if width * height > opts.max_pixels:
        raise BadImage(f"decompression bomb: {width}x{height} pixels")
    if plausible_size(len(raw), width, height, True) is not None:
        return None  # the Pillow path decides and names it
    end = len(raw.rstrip(b"\x00")) if raw.endswith(b"\x00") else n
    last = raw.rfind(b"\xff\xd9", max(pos, end - _EOI_SLACK - 2), end)
    if last < 0:
        return None  # truncated, or an EOI far before the end: the Pillow path decides and names it
    meta: dict[str, Any] = {"format": "JPEG", "mode": "L" if components == 1 else "RGB"}
    if orientation is not None:
        meta["orientation"] = orientation
    return PreparedImage(raw, width, height, meta)


def _dqt_ok(s: bytes) -> bool:
    """The quantization-table lengths add up (Pillow's DQT check)."""
    while s:
        qt_length = 1 + (1 if s[0] // 16 == 0 else 2) * 64
        if len(s) < qt_length:
            return False
        s = s[qt_length:]
    return True


def _exif_orientation(tiff: bytes) -> int | None:
    """Orientation (2..8) from an EXIF TIFF block's IFD0; None if absent or 1; -1 if the block is odd."""
    if tiff[:4] == b"II*\x00":
        order = "little"
    elif tiff[:4] == b"MM\x00*":
        order = "big"
    else:
        return -1
    ifd = int.from_bytes(tiff[4:8], order)  # type: ignore[arg-type]
    if ifd + 2 > len(tiff):
        return -1
    count = int.from_bytes(tiff[ifd:ifd + 2], order)  # type: ignore[arg-type]
    if ifd + 2 + 12 * count > len(tiff):
        return -1
    for k in range(count):
        e = ifd + 2 + 12 * k
        if int.from_bytes(tiff[e:e + 2], order) == _ORIENTATION:  # type: ignore[arg-type]
            if int.from_bytes(tiff[e + 2:e + 4], order) != 3:  # type: ignore[arg-type]  # not SHORT
                return -1
            value = int.from_bytes(tiff[e + 8:e + 10], order)  # type: ignore[arg-type]
            return value if 2 <= value <= 8 else None
    return None


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
