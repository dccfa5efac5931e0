"""A loader soak (issue 7): many epochs of a seeded random mix of everything a training loop does to a Loader.

Many epochs over a small dataset with a seeded random mix of full epochs, break after k batches, an exception
raised inside the loop, ``close()`` mid-epoch, dropping the loader for GC mid-epoch, and
state_dict/load_state_dict resume; after every step no ``recpack*`` thread is left (within 1 s), and at
checkpoints open file descriptors and RSS must stay flat.

Test tooling, not package code (see ``campaigns/__init__.py``). The quick part runs in tests/test_soak.py;
``python benchmarks/crashes.py --soak SECONDS`` is the long run.
"""

from __future__ import annotations

import gc
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .leaks import open_fds, rss_bytes, wait_no_threads

__all__ = ["SoakStats", "ACTIONS", "soak", "soak_dataset"]


class _Boom(Exception):
    pass


@dataclass
class SoakStats:
    steps: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    leaked_threads: int = 0
    fd_growth: int = 0
    rss_growth_mib: float = 0.0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


ACTIONS = ("full epoch", "break after k", "raise inside the loop", "close mid-epoch", "drop for GC mid-epoch",
           "state_dict resume")


def soak(dataset: str | os.PathLike[str], *, seconds: float | None = None, steps: int | None = None,
         seed: int = 0, warmup: int = 30, loader_kw: dict[str, Any] | None = None) -> SoakStats:
    """Run the loader soak on a packed ``dataset`` for ``steps`` steps or ``seconds`` (after ``warmup``
    steps that let the allocator and caches settle); see the module docstring."""
    from recpack.loader import Loader

    kw: dict[str, Any] = {"batch_size": 5, "size": 32, "device": "cpu", "threads": 2, **(loader_kw or {})}
    rng = random.Random(seed)
    stats = SoakStats()
    orders = ("shard_shuffle", "random", "sequential")
    loader = Loader(dataset, order="random", **kw)
    n_batches = len(loader)
    base_fds = base_rss = 0
    t0 = time.perf_counter()
    step = 0
    while True:
        if step == warmup:
            gc.collect()
            base_fds, base_rss, t0 = open_fds(), rss_bytes(), time.perf_counter()
        if step >= warmup and ((steps is not None and step - warmup >= steps)
                               or (seconds is not None and time.perf_counter() - t0 >= seconds)):
            break
        action = ACTIONS[rng.randrange(len(ACTIONS))]
        k = rng.randrange(max(1, n_batches))
        # always another epoch: the same one again would resume where the last step stopped (by design)
        loader.set_epoch((loader.epoch + 1 + rng.randrange(999)) % 1000)
        try:
            if action == "full epoch":
                got = sum(1 for _ in loader)
                if got != n_batches:
                    stats.problems.append(f"step {step}: full epoch gave {got} batches, not {n_batches}")
                stats.batches += got
            elif action == "break after k":
                for i, _ in enumerate(loader):
                    stats.batches += 1
                    if i >= k:
                        break
            elif action == "raise inside the loop":
                try:
                    for i, _ in enumerate(loader):
                        stats.batches += 1
                        if i >= k:
                            raise _Boom
                except _Boom:
                    pass
            elif action == "close mid-epoch":
                it = iter(loader)
                for _ in range(k + 1):
                    next(it, None)
                    stats.batches += 1
                loader.close()
                del it
            elif action == "drop for GC mid-epoch":
                it = iter(loader)
                next(it, None)
                stats.batches += 1
                del it, loader
                gc.collect()
                loader = Loader(dataset, order=orders[rng.randrange(3)], **kw)
            else:  # state_dict resume: stop after k batches, resume in a new loader, count the rest
                for i, _ in enumerate(loader):
                    if i >= k:
                        break
                state = loader.state_dict()
                order = loader.order
                loader.close()
                loader = Loader(dataset, order=order, **kw)
                loader.load_state_dict(state)
                rest = sum(1 for _ in loader)
                if rest != n_batches - (k + 1):
                    stats.problems.append(f"step {step}: resumed after {k + 1} batches, got {rest} more of "
                                          f"{n_batches}")
                stats.batches += k + 1 + rest
        except Exception as exc:  # anything else is a finding
            stats.problems.append(f"step {step} ({action}): {type(exc).__name__}: {exc}")
        left = [t.name for t in wait_no_threads(1.0)]
        if left:
            stats.leaked_threads += 1
            stats.problems.append(f"step {step} ({action}): threads left after 1 s: {left}")
        stats.actions[action] = stats.actions.get(action, 0) + 1
        step += 1
    loader.close()
    del loader
    gc.collect()
    stats.steps = step - warmup
    stats.seconds = time.perf_counter() - t0
    stats.fd_growth = open_fds() - base_fds
    stats.rss_growth_mib = (rss_bytes() - base_rss) / 2**20
    if wait_no_threads(1.0):
        stats.leaked_threads += 1
    return stats


def soak_dataset(workdir: Path) -> Path:
    """47 small images in 3 shards (batches of 5: a last partial batch)."""
    from recpack.pack import PackOptions, pack
    from recpack.synth import make_image_folder

    ds = workdir / "ds"
    if not (ds / "index.json").exists():
        make_image_folder(workdir / "src", 47, classes=4, size=(80, 60), seed=3)
        pack(workdir / "src", ds, PackOptions(num_shards=3, workers=0, progress=False, fsync=False))
    return ds
