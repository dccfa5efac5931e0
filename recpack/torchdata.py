"""A ``torch.utils.data.IterableDataset`` over a recpack dataset, for training scripts that keep DataLoader.

::

    ds = recpack.LoaderDataset("data/train", transform="train", size=224, seed=0)
    dl = torch.utils.data.DataLoader(ds, batch_size=256, num_workers=8, pin_memory=True)
    for epoch in range(90):
        ds.set_epoch(epoch)
        for images, labels in dl:
            ...

Each DataLoader worker runs a single-threaded :class:`recpack.Loader` on its own contiguous share of this
rank's samples (so its reads stay large and sequential) and yields samples one by one. The order and crops are
a pure function of (seed, epoch, rank, world size, number of workers). To make the shares equal, up to
``num_workers - 1`` samples per rank and epoch may be repeated (or dropped with ``drop_last=True``). The
:class:`recpack.Loader` itself is faster (no per-sample hand-off, no worker processes); use this adapter when
you need DataLoader's features.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .backends import open_source
from .loader import Loader, _dist_rank_world

__all__ = ["LoaderDataset"]


class LoaderDataset(IterableDataset[tuple[torch.Tensor, torch.Tensor]]):
    """Samples ``(image uint8 (3, size, size), label int64)`` of a recpack dataset; see the module docstring.

    Arguments have the meaning they have for :class:`recpack.Loader`. ``chunk`` is how many samples each
    worker decodes at a time."""

    def __init__(self, path: str | os.PathLike[str], *, shuffle: bool = True, seed: int = 0, order: str = "auto",
                 transform: str | Callable[[np.ndarray], Any] = "train", size: int = 224,
                 rank: int | None = None, world_size: int | None = None, drop_last: bool = False,
                 on_error: str = "raise", chunk: int = 32) -> None:
        super().__init__()
        with open_source(path) as source:
            self.path = source.path
            self.records = len(source)
        dist_rank, dist_world = _dist_rank_world()
        self.rank = dist_rank if rank is None else rank
        self.world_size = dist_world if world_size is None else world_size
        self.kwargs: dict[str, Any] = {"shuffle": shuffle, "seed": seed, "order": order, "transform": transform,
                                       "size": size, "drop_last": drop_last, "on_error": on_error}
        self.chunk = chunk
        self.epoch = 0
        self._passes = 0  # passes since the last set_epoch (in this process: a worker counts its own)
        if order in ("auto", "shard_shuffle"):
            # decide once here, from one device probe, so that every worker and every epoch use the same order
            # and run length (a probe per worker or per epoch could measure differently under load)
            probe = Loader(self.path, batch_size=1, device="cpu", rank=0, world_size=1,
                           **{k: v for k, v in self.kwargs.items() if k != "drop_last"})
            self.kwargs["order"] = probe.order
            self.kwargs["run"] = probe.order_kw["run"]
            probe.close()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch. Workers see it when DataLoader creates them (each epoch, by default); persistent
        workers (``persistent_workers=True``) never see later calls, so each worker moves to the next epoch
        itself after every pass: the epoch of a pass is the last epoch set plus the passes since then."""
        self.epoch = int(epoch)
        self._passes = 0

    def _worker_loader(self) -> Loader:
        info = get_worker_info()
        workers, wid = (info.num_workers, info.id) if info is not None else (1, 0)
        loader = Loader(self.path, batch_size=self.chunk, device="cpu", threads=1, prefetch=1,
                        rank=self.rank * workers + wid, world_size=self.world_size * workers, **self.kwargs)
        loader._whole_batches = False  # drop_last drops the uneven remainder across workers, not partial chunks
        loader.set_epoch(self.epoch + self._passes)
        self._passes += 1
        return loader

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = self._worker_loader()
        try:
            for images, labels in loader:
                yield from zip(images, labels)
        finally:
            loader.close()

    def __len__(self) -> int:
        """Samples per epoch for this rank, summed over all workers (an upper bound when workers pad)."""
        n, w = self.records, self.world_size
        return n // w if self.kwargs["drop_last"] else -(-n // w)
