"""What to pack and how: :class:`PackOptions`, checked by :meth:`PackOptions.validate` before anything is
read or written."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

from .. import imaging
from ..errors import PackError
from ..imaging import ImageOptions

__all__ = ["DEFAULT_SHARD_SIZE", "PackInputError", "PackOptions"]

DEFAULT_SHARD_SIZE = 256 << 20
_I64 = 1 << 63


class PackInputError(PackError, ValueError):
    """The options or the source listing cannot be used; the message names the option, or the list file and
    line, and what to do. Both a PackError (the CLI prints ``error: ...``) and a ValueError."""


def _whole(value: Any) -> int | None:
    """``value`` as an int when it is a whole number (not a bool), else None."""
    try:
        return None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        return None


def _at_least(value: Any, low: int) -> bool:
    n = _whole(value)
    return n is not None and n >= low


@dataclass(frozen=True)
class PackOptions:
    """How to pack.

    seed: global shuffle seed. shard_size: target bytes per shard, planned from source file sizes
    (re-encoded shards come out smaller). num_shards: use exactly this many shards instead (by count).
    workers: processes that read/check/encode (None = :func:`recpack.pack.default_workers`; 0 or 1 = in this
    process). backend: "shards" (recpack files) or "lmdb". strict: stop at the first bad input instead of
    skipping it. overwrite: replace an existing dataset or unfinished pack in the output folder.
    scheduler: address of a Dask distributed scheduler ("tcp://HOST:PORT") or a ``distributed.Client``:
    each shard is then written by one task on the cluster's workers, straight into ``out`` (which every
    worker must see at the same path), instead of by a local process pool; ``workers`` is ignored. The
    result is byte-identical to a local pack. Needs ``pip install 'recpack-io[dask]'`` (``-e '.[dask]'`` in a
    clone) and the shards backend.
    """

    seed: int = 0
    shard_size: int = DEFAULT_SHARD_SIZE
    num_shards: int | None = None
    workers: int | None = None
    backend: str = "shards"
    image: ImageOptions = field(default_factory=ImageOptions)
    strict: bool = False
    overwrite: bool = False
    progress: bool = True
    fsync: bool = True
    scheduler: Any = None

    def validate(self) -> None:
        """Raise :class:`PackInputError` naming the first option that cannot be used, and what to use instead."""
        seed = _whole(self.seed)
        if seed is None or not 0 <= seed < _I64:
            raise PackInputError(f"seed must be a whole number in 0..2**63-1, not {self.seed!r}")
        if self.backend not in ("shards", "lmdb"):
            raise PackInputError(f"backend must be 'shards' or 'lmdb', not {self.backend!r}")
        size = _whole(self.shard_size)
        if size is None or not 1 <= size < _I64:
            raise PackInputError(f"shard_size must be a number of bytes in 1..2**63-1, not {self.shard_size!r}")
        if self.num_shards is not None and not _at_least(self.num_shards, 1):
            raise PackInputError(f"num_shards must be a whole number >= 1, not {self.num_shards!r}")
        if self.workers is not None and not _at_least(self.workers, 0):
            raise PackInputError(f"workers must be a whole number >= 0, not {self.workers!r}")
        if self.image.restart_markers:
            why = imaging.restart_markers_available()
            if why is not None:
                raise PackInputError(why)
        if self.scheduler is not None and self.backend != "shards":
            raise PackInputError("a Dask scheduler writes shard files; use backend='shards' (or no scheduler "
                                 "for lmdb)")
