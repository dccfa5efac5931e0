"""The Loader's options, checked once, at construction, each with a message that says the fix.

:class:`LoaderConfig` is frozen: a Loader's behaviour is a pure function of its config, its dataset and
``(epoch, rank, world_size)``. What depends on the machine (the CUDA device, the order and io mode ``auto``
picks) is decided by the Loader from the config, not stored in it.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["LoaderConfig", "ORDER_NAMES", "TRANSFORMS", "IO_MODES", "MAX_PREFETCH", "resolve_device"]

ORDER_NAMES = ("auto", "sequential", "shard_shuffle", "random")
TRANSFORMS = ("train", "val")
IO_MODES = ("auto", "buffered", "direct")
#: Batches prepared ahead at most: each costs a batch of pinned memory, and more than a few never helps.
MAX_PREFETCH = 64
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _int(name: str, value: Any, lo: int, hi: int | None = None, fix: str = "") -> int:
    """``value`` as an int in [lo, hi]; bools, floats and strings are refused (``2.5`` is not a batch size)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, not {value!r}{fix}")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        bound = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise ValueError(f"{name} must be {bound}, not {v}{fix}")
    return v


def _opt_int(name: str, value: Any, lo: int, hi: int | None = None, fix: str = "") -> int | None:
    return None if value is None else _int(name, value, lo, hi, fix)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, not {value!r}")
    return str(value)


def _normalize(value: Any, dtype: torch.dtype) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) per channel in 0..255 units, each of length 1 or 3, finite, std > 0."""
    if value is None:
        return None
    try:
        mean, std = value
        m = tuple(float(x) for x in np.asarray(mean, dtype=np.float64).reshape(-1))
        s = tuple(float(x) for x in np.asarray(std, dtype=np.float64).reshape(-1))
    except (TypeError, ValueError):
        raise ValueError(f"normalize must be (mean, std), each a number or 3 numbers, not {value!r}") from None
    for name, v in (("mean", m), ("std", s)):
        if len(v) not in (1, 3) or not all(math.isfinite(x) for x in v):
            raise ValueError(f"normalize {name} must be 1 or 3 finite numbers (one per channel), not {v}")
    if any(x <= 0 for x in s):
        raise ValueError(f"normalize std must be > 0 for every channel, not {s} (x / 0 is not a number)")
    if max(map(abs, m)) <= 1.0 and max(s) <= 1.0:
        warnings.warn(f"normalize={value!r} looks like 0..1 units, but images are 0..255 (uint8), so values "
                      "would reach ~1,000; pass mean and std in 0..255 units, e.g. "
                      "((123.7, 116.3, 103.5), (58.4, 57.1, 57.4)) for ImageNet", UserWarning, stacklevel=4)
    return m, s


@dataclass(frozen=True)
class LoaderConfig:
    """Every option of :class:`recpack.Loader`, validated (see its docstring for their meaning)."""

    batch_size: int = 256
    shuffle: bool = True
    seed: int = 0
    order: str = "auto"
    transform: str | Callable[[np.ndarray], Any] | None = "train"
    size: int = 224
    device: str | None = None
    threads: int | None = None
    prefetch: int = 2
    drop_last: bool = False
    rank: int | None = None
    world_size: int | None = None
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    dtype: torch.dtype = torch.float32
    output: str = "torch"
    on_error: str = "raise"
    decode: bool = True
    run: int | None = None
    interleave: int = 4
    window: int = 16
    io_threads: int | None = None
    io: str = "auto"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "batch_size", _int("batch_size", self.batch_size, 1, 1 << 20))
        set_(self, "seed", _int("seed", self.seed, 0, (1 << 63) - 1, " (use a non-negative integer seed)"))
        set_(self, "order", _choice("order", self.order, ORDER_NAMES))
        if isinstance(self.transform, str):
            _choice("transform", self.transform, TRANSFORMS)
        elif self.transform is not None and not callable(self.transform):
            raise ValueError(f"transform must be 'train', 'val', a callable taking an HWC uint8 array, or None "
                             f"(with decode=False), not {self.transform!r}")
        for name in ("shuffle", "drop_last", "decode"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, not {getattr(self, name)!r}")
        if self.decode and self.transform is None:
            raise ValueError("transform=None needs decode=False (raw records); pass transform='val' to decode")
        set_(self, "size", _int("size", self.size, 1, 1 << 14))
        set_(self, "threads", _opt_int("threads", self.threads, 1, 1024, " (or None: one per core)"))
        set_(self, "prefetch", _int("prefetch", self.prefetch, 1, MAX_PREFETCH))
        set_(self, "rank", _opt_int("rank", self.rank, 0))
        set_(self, "world_size", _opt_int("world_size", self.world_size, 1))
        if self.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"dtype must be a float dtype for normalize (torch.float32, float16 or bfloat16), "
                             f"not {self.dtype}")
        set_(self, "normalize", _normalize(self.normalize, self.dtype))
        set_(self, "output", _choice("output", self.output, ("torch", "numpy")))
        set_(self, "on_error", _choice("on_error", self.on_error, ("raise", "skip")))
        set_(self, "run", _opt_int("run", self.run, 1))
        set_(self, "interleave", _int("interleave", self.interleave, 1))
        set_(self, "window", _int("window", self.window, 0))
        set_(self, "io_threads", _opt_int("io_threads", self.io_threads, 1, 256))
        set_(self, "io", _choice("io", self.io, IO_MODES))
        if self.device is not None and not isinstance(self.device, (str, torch.device)):
            raise ValueError(f"device must be 'cuda', 'cuda:N', 'cpu' or None, not {self.device!r}")

    @property
    def decode_threads(self) -> int:
        """Decode threads: ``threads``, else one per core."""
        return self.threads or os.cpu_count() or 1


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device batches go to: CUDA when available for None; a device the machine does not have is a
    ValueError (batches would otherwise silently stay on the CPU)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {device!r} is not a torch device ({exc}); use 'cuda', 'cuda:N' or 'cpu'") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' but torch.cuda.is_available() is False; pass device='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA devices")
        return dev
    raise ValueError(f"device {device!r}: recpack copies batches to CUDA devices or keeps them on the CPU; "
                     f"for {dev.type!r}, pass device='cpu' and move each batch with .to({str(dev)!r})")
