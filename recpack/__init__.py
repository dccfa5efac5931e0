"""recpack: pack images into shuffled, sharded, checksummed record files and stream them to a GPU.

Public API::

    recpack.pack(src, out, recpack.PackOptions(...))   # folder / .lst / list -> dataset folder
    ds = recpack.open(out)                             # len(ds), ds[i], iteration -> Record
    recpack.verify(out)                                 # check every checksum (and decode)
    for images, labels in recpack.Loader(out, batch_size=256, device="cuda"): ...

``Loader`` and ``LoaderDataset`` import torch, so they are loaded on first use (packing does not need torch).

Errors are in :mod:`recpack.errors`; the most useful ones are re-exported here.
"""

from __future__ import annotations

from ._version import __version__  # noqa: E402

from .dataset import Dataset, open  # noqa: E402
from .errors import (  # noqa: E402
    BadImage,
    CorruptRecord,
    DecodeError,
    FormatError,
    ManifestError,
    PackError,
    RecpackError,
)
from .pack import PackOptions, PackResult, pack  # noqa: E402
from .record import Record  # noqa: E402
from .imaging import ImageOptions  # noqa: E402
from .verify import verify  # noqa: E402

_LAZY = {"Loader": ".loader", "LoaderDataset": ".torchdata"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'recpack' has no attribute {name!r}")

__all__ = [
    "__version__",
    "open",
    "Dataset",
    "Loader",
    "LoaderDataset",
    "verify",
    "Record",
    "pack",
    "PackOptions",
    "PackResult",
    "ImageOptions",
    "RecpackError",
    "FormatError",
    "CorruptRecord",
    "ManifestError",
    "BadImage",
    "DecodeError",
    "PackError",
]
