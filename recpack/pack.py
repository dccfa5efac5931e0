"""Sources -> shuffled, sharded, checksummed record files. Parallel, deterministic, crash-safe, resumable.

How a pack runs (the parts live in :mod:`recpack.packing`):

1. **Plan** (pure, :mod:`~recpack.packing.plan`): scan the source, order items by a keyed hash of (seed, key)
   — a global shuffle that does not depend on numpy versions or worker counts — and cut the order into shards
   by planned bytes (source file sizes) or by count. The plan's fingerprint covers the options and every
   item's key, label, size and mtime.
2. **Process** (parallel, :mod:`~recpack.packing.workers`): chunks of items go to a process pool; each item
   is read, checked, converted if needed and encoded as a record. Results come back in plan order, so the
   output is byte-identical for any worker count.
3. **Write** (main process, :mod:`~recpack.packing.write`): records are appended to
   ``shard-NNNNN.rpk.tmp``; a finished shard is fsynced, read back and checked, then renamed, and its summary
   saved in ``.recpack-pack/`` (:mod:`~recpack.packing.outdir`). Re-running the same command keeps finished
   shards and redoes only the rest. ``index.json`` is written last, atomically.

With ``PackOptions(scheduler=...)`` steps 2 and 3 run as one Dask task per shard on a cluster's workers
(:mod:`~recpack.packing.cluster`, same functions, a temporary name per attempt); the main process still
records progress and writes ``index.json`` (docs/scaling.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from .errors import PackError
from .format import FORMAT_VERSION
from .index import Manifest, ShardEntry, write_manifest
from .interrupts import signals_as_interrupt
from .packing.cluster import dask_shards
from .packing.lock import PackLock
from .packing.options import DEFAULT_SHARD_SIZE, PackInputError, PackOptions
from .packing.outdir import (STATE_DIR, clear, load_done, output_error, prepare_out, refuse_inside,
                             save_done, shard_name)
from .packing.plan import Plan, make_plan, plan_shards, shuffle_order
from .packing.report import REPORT_NAME, Skipped, nothing_packed, write_report
from .packing.workers import CHUNK_ITEMS, Pool, chunks, default_workers
from .packing.write import Meter, pack_lmdb, write_shard
from .shard import ShardInfo
from .sources import IMAGE_EXTENSIONS, Source, scan

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "REPORT_NAME",
    "PackInputError",
    "STATE_DIR",
    "PackOptions",
    "PackResult",
    "Skipped",
    "pack",
    "shuffle_order",
    "plan_shards",
    "shard_name",
    "default_workers",
]


@dataclass
class PackResult:
    """What a pack produced. ``resumed`` counts shards (LMDB: items) kept from an interrupted run."""

    path: str
    records: int
    skipped: list[Skipped]
    shards: list[ShardInfo]
    bytes: int
    source_items: int
    seconds: float
    resumed: int = 0
    already_done: bool = False

    @property
    def images_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


def _params(opts: PackOptions, source: Source) -> dict[str, Any]:
    """Pack parameters recorded in the manifest (no worker count, no times: output must not depend on them)."""
    return {
        "format_version": FORMAT_VERSION,
        "backend": opts.backend,
        "seed": opts.seed,
        "shard_size": None if opts.num_shards else opts.shard_size,
        "num_shards": opts.num_shards,
        "image": asdict(opts.image),
        "source": source.root,
        "source_kind": source.kind,
    }


def _scan(src: str, root: str | None) -> Source:
    """:func:`recpack.sources.scan` with its errors as PackErrors (the CLI's ``error:`` line)."""
    try:
        return scan(src, root)
    except ValueError as exc:  # a malformed list line, a duplicate key: the message names the file and line
        raise PackInputError(str(exc)) from None
    except OSError as exc:
        raise PackError(f"{exc.filename or src}: cannot read the source ({exc.strerror or exc}); fix its "
                        "permissions, or move it out of the source") from None


def _pack_shards(out: str, plan: Plan, opts: PackOptions, pool: Pool, bar: Meter
                 ) -> tuple[list[ShardInfo], list[Skipped], int]:
    """Write every shard a previous run did not finish (locally or on the Dask cluster); returns the shards
    in order, the skipped inputs in plan order and how many shards were kept."""
    infos: dict[int, ShardInfo] = {}
    skipped: dict[int, list[Skipped]] = {}
    for i, positions in enumerate(plan.shards):  # keep what a previous run finished
        done = load_done(out, i)
        if done is not None:
            infos[i], skipped[i] = done
            bar.update(len(positions))
    resumed = len(infos)
    todo = [i for i in range(len(plan.shards)) if i not in infos]
    if opts.scheduler is not None:
        for i, info, skips in dask_shards(out, plan, opts, todo):
            save_done(out, i, info, skips)
            infos[i], skipped[i] = info, skips
            bar.update(len(plan.shards[i]), info.bytes)
    for i in todo:
        if i in infos:
            continue
        info, skips = write_shard(out, i, pool.map(chunks(plan, plan.shards[i])), opts.strict, opts.fsync,
                                  bar.update, plan.fingerprint)
        save_done(out, i, info, skips)
        infos[i], skipped[i] = info, skips
    ordered = [infos[i] for i in range(len(plan.shards))]
    return ordered, [s for i in range(len(plan.shards)) for s in skipped[i]], resumed


def pack(src: str | os.PathLike[str] | Source, out: str | os.PathLike[str], options: PackOptions | None = None,
         *, root: str | os.PathLike[str] | None = None) -> PackResult:
    """Pack the images found at ``src`` (ImageFolder tree, ``.lst`` file or list file) into the dataset
    folder ``out``. Returns a :class:`PackResult`; bad inputs are skipped and listed in
    ``out/pack-report.tsv`` unless ``options.strict``. Re-running after an interruption resumes.

    Raises PackError when nothing can be packed: no images found, or every one skipped (then only the
    report is left in ``out``, and the error gives the reasons with their counts and the likely fix).

    In the main thread, SIGTERM and SIGHUP stop the pack like Ctrl-C (a KeyboardInterrupt, after removing the
    shard being written and stopping the pool), so a re-run resumes from the finished shards."""
    with signals_as_interrupt():
        return _pack(src, out, options, root)


def _pack(src: str | os.PathLike[str] | Source, out: str | os.PathLike[str], options: PackOptions | None,
          root: str | os.PathLike[str] | None) -> PackResult:
    opts = options or PackOptions()
    opts.validate()
    t0 = time.perf_counter()
    out = os.fspath(out)
    if not isinstance(src, Source):
        refuse_inside(out, os.fspath(src))
    source = src if isinstance(src, Source) else _scan(os.fspath(src), None if root is None else os.fspath(root))
    if not source.items:
        raise PackError(f"{src}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}); "
                        "pass an ImageFolder tree, a .lst file or a list of image paths")
    params = _params(opts, source)
    plan = make_plan(source, opts.seed, opts.shard_size, opts.num_shards, params)
    with _writing(out, "preparing the output folder"):
        existing, lock = prepare_out(out, plan.fingerprint, params, opts.overwrite)
    if existing is not None:
        return PackResult(out, existing.records, [], [ShardInfo(s.name, s.records, s.bytes, s.crc32c)
                                                     for s in existing.shards], existing.total_bytes,
                          len(plan.order), 0.0, already_done=True)
    assert lock is not None
    try:
        return _write(out, plan, opts, params, root is not None, lock, t0)
    finally:
        lock.release()


def _write(out: str, plan: Plan, opts: PackOptions, params: dict[str, Any], root_given: bool, lock: PackLock,
           t0: float) -> PackResult:
    """Everything after planning, under the lock on ``out``: records, report, manifest."""
    workers = default_workers(opts.image) if opts.workers is None else opts.workers
    n = len(plan.order)
    bar = Meter(n, f"pack {os.path.basename(out.rstrip('/')) or out}", opts.progress)
    pool = Pool(0 if opts.scheduler is not None else min(workers, max(1, n // CHUNK_ITEMS)), opts.image)
    try:
        with _writing(out, "writing the shards, progress records or the pack report"):
            if opts.backend == "shards":
                infos, skipped, resumed = _pack_shards(out, plan, opts, pool, bar)
                records, nbytes = sum(s.records for s in infos), sum(s.bytes for s in infos)
            else:
                records, nbytes, skipped, resumed = pack_lmdb(out, plan, opts, pool, bar)
                infos = []
            write_report(out, skipped)
            if records == 0:  # publish nothing; keep the report, which says why; any pack may reuse the folder
                clear(out, keep=(REPORT_NAME, STATE_DIR))
                lock.release(remove_state=True)
                raise nothing_packed(out, plan.source, skipped, root_given)
    finally:
        pool.close()
        bar.close()
    manifest = Manifest(records=records, backend=opts.backend,
                        shards=[ShardEntry(s.name, s.records, s.bytes, s.crc32c) for s in infos],
                        classes=list(plan.source.classes),
                        dataset_id=plan.fingerprint,
                        pack={**params, "fingerprint": plan.fingerprint,
                              "source_items": n, "skipped": len(skipped), "report": REPORT_NAME})
    with _writing(out, "writing index.json"):
        write_manifest(out, manifest)
    lock.release(remove_state=True)
    return PackResult(out, records, skipped, infos, nbytes, n, time.perf_counter() - t0, resumed)


@contextmanager
def _writing(out: str, what: str) -> Iterator[None]:
    """OSErrors of the block (a full disk, a read-only folder) as the PackError that says what to do."""
    try:
        yield
    except OSError as exc:
        raise output_error(exc, out, what) from None
