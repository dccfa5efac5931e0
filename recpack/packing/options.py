"""What to pack and how: :class:`PackOptions`, checked by :meth:`PackOptions.validate` before anything is
read or written."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import imaging
from ..imaging import ImageOptions

__all__ = ["DEFAULT_SHARD_SIZE", "PackOptions"]

DEFAULT_SHARD_SIZE = 256 << 20


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
    result is byte-identical to a local pack. Needs ``pip install 'recpack[dask]'`` and the shards backend.
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
        """Raise ValueError naming the first option that cannot be used, and what to use instead."""
        if self.backend not in ("shards", "lmdb"):
            raise ValueError(f"backend must be 'shards' or 'lmdb', not {self.backend!r}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be a positive number of bytes, not {self.shard_size}")
        if self.num_shards is not None and self.num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, not {self.num_shards}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be >= 0, not {self.workers}")
        if self.image.restart_markers:
            why = imaging.restart_markers_available()
            if why is not None:
                raise ValueError(why)
        if self.scheduler is not None and self.backend != "shards":
            raise ValueError("a Dask scheduler writes shard files; use backend='shards' (or no scheduler for "
                             "lmdb)")
