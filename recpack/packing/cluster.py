"""Writing shards on a Dask distributed cluster (``PackOptions(scheduler=...)``): one task per shard reads,
checks and encodes its items and writes the shard straight into the output folder, which every worker must
see at the same path. Same functions, same bytes as a local pack (docs/scaling.md)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from ..errors import PackError
from ..format import SHARD_SUFFIX
from ..imaging import ImageOptions
from ..shard import ShardInfo
from ..sources import SourceItem
from . import workers
from .options import PackOptions
from .outdir import shard_name
from .plan import Plan
from .report import Skipped
from .write import write_shard

__all__ = ["dask_shards", "shard_task"]


def shard_task(out: str, i: int, items: list[SourceItem], image: ImageOptions, strict: bool, fsync: bool,
               dataset_id: str) -> tuple[ShardInfo, list[Skipped]]:
    """One Dask task: read, check and encode ``items`` and write them as shard ``i`` (see write_shard), under
    a temporary name of its own (host, pid, random) so that two attempts never write the same file."""
    size = workers.CHUNK_ITEMS
    parts = (items[a:a + size] for a in range(0, len(items), size))
    stem = shard_name(i)[:-len(SHARD_SUFFIX)]
    tmp = f"{stem}.{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SHARD_SUFFIX}.tmp"
    return write_shard(out, i, ((c, workers.process(c, image)) for c in parts), strict, fsync,
                       lambda n, b: None, dataset_id, tmp)


def dask_shards(out: str, plan: Plan, opts: PackOptions, todo: list[int]
                ) -> Iterator[tuple[int, ShardInfo, list[Skipped]]]:
    """Submit one :func:`shard_task` per shard in ``todo`` to the Dask cluster at ``opts.scheduler``;
    yields (shard, info, skipped) as shards finish. The scheduler re-runs the task of a lost worker; a task
    that raises is retried twice, then the pack stops with its error (finished shards are kept for resume)."""
    try:
        from distributed import Client, as_completed  # optional dependency: imported only when asked for
    except ImportError:
        raise PackError("--scheduler needs Dask distributed: pip install 'recpack-io[dask]' (or -e '.[dask]' in a "
                        "clone)") from None
    client = opts.scheduler if isinstance(opts.scheduler, Client) else Client(str(opts.scheduler))  # type: ignore[no-untyped-call]
    futures: dict[Any, tuple[int, Any]] = {}
    try:
        for i in todo:
            # workers may run elsewhere in another folder: plain files are passed by absolute path
            items = [replace(it, path=os.path.abspath(it.path)) if type(it) is SourceItem else it
                     for it in (plan.source.items[j] for j in plan.order[plan.shards[i]].tolist())]
            fut = client.submit(shard_task, os.path.abspath(out), i, items, opts.image, opts.strict, opts.fsync,
                                plan.fingerprint, key=f"recpack-{plan.fingerprint[:12]}-{shard_name(i)}",
                                retries=2, pure=False)
            futures[fut.key] = (i, fut)
        for fut in as_completed([f for _, f in futures.values()]):  # type: ignore[no-untyped-call]
            info, skips = fut.result()
            yield futures[fut.key][0], info, skips
    finally:
        for _, fut in futures.values():
            fut.cancel()  # after an error: stop what was not started
        if client is not opts.scheduler:
            client.close()  # type: ignore[no-untyped-call]
        for name in os.listdir(out):  # attempts that died mid-write leave their temporary file behind
            if name.startswith("shard-") and name.endswith(SHARD_SUFFIX + ".tmp") and name.count(".") > 2:
                try:
                    os.unlink(os.path.join(out, name))
                except OSError:
                    pass
