"""Writing the workers' results: one shard file at a time (:func:`write_shard`), or chunks committed to an
LMDB database (:func:`pack_lmdb`), with a progress bar (:class:`Meter`).

A shard goes to a temporary name, is fsynced, read back once against the CRC32C computed while writing (one
sequential read of the file), and only then renamed: a shard is published whole or not at all.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from functools import partial

import numpy as np
from tqdm import tqdm

from ..backends.lmdb import LmdbWriter
from ..errors import FormatError, PackError
from ..format import table_row
from ..shard import ShardInfo, ShardWriter, confirm_written
from ..sources import SourceItem
from .options import PackOptions
from .outdir import output_error, shard_name
from .plan import Plan
from .report import Skipped
from .workers import Pool, Result, chunks

__all__ = ["Meter", "pack_lmdb", "strict_error", "write_shard"]


class Meter:
    """A tqdm bar counting images that also shows MB/s written. Shown only when ``enabled`` and stderr is a
    terminal (tqdm's ``disable=None``): redirected to a file, a bar would write a line per refresh."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self.bar = tqdm(total=total, unit="img", desc=desc, disable=None if enabled else True, dynamic_ncols=True,
                        smoothing=0.1)
        self.t0 = time.perf_counter()
        self.nbytes = 0

    def update(self, images: int, nbytes: int = 0) -> None:
        self.bar.update(images)
        self.nbytes += nbytes
        dt = time.perf_counter() - self.t0
        if nbytes and dt > 0 and not self.bar.disable:
            self.bar.set_postfix_str(f"{self.nbytes / 1e6 / dt:.0f} MB/s", refresh=False)

    def close(self) -> None:
        self.bar.close()


def strict_error(path: str, reason: str) -> PackError:
    return PackError(f"{path}: {reason} (--strict stops at the first bad input; drop --strict to skip bad "
                     "files and list them in the report)")


def _row(label: object, width: int, height: int, offset: int, length: int) -> tuple[int, int, int, int, int, int]:
    return table_row(offset, length, label, width, height)


def write_shard(out: str, i: int, processed: Iterable[tuple[list[SourceItem], list[Result]]], strict: bool,
                fsync: bool, progress: Callable[[int, int], None], dataset_id: str, tmp_name: str | None = None
                ) -> tuple[ShardInfo, list[Skipped]]:
    """Write shard ``i`` of the dataset ``dataset_id`` (the plan's fingerprint, in hex) from its processed
    chunks (in plan order) to a temporary name in ``out``, fsync it, read it back against its CRC32C, then
    rename it. Used by the local packer and, with a per-attempt ``tmp_name``, by the Dask tasks (so two
    attempts at one shard never write the same file)."""
    name = shard_name(i)
    tmp = os.path.join(out, tmp_name or name + ".tmp")
    writer: ShardWriter | None = None
    skips: list[Skipped] = []
    try:
        writer = ShardWriter(tmp, bytes.fromhex(dataset_id), i)
        for chunk, results in processed:
            nbytes = 0
            for it, (kind, a, b) in zip(chunk, results):
                if kind == "skip":
                    if strict:
                        raise strict_error(it.path, b)
                    skips.append(Skipped(it.key, it.path, b))
                else:
                    writer.add(a, partial(_row, *b))
                    nbytes += len(a)
            progress(len(chunk), nbytes)
        writer.finish(fsync=fsync)
        assert writer.file_crc is not None
        try:
            size = confirm_written(tmp, writer.records, writer.file_crc)
        except FormatError as exc:
            raise PackError(f"{exc}; reading the shard back did not give what was written (failing disk "
                            "or memory?). Re-run the same command to rewrite it") from None
        os.replace(tmp, os.path.join(out, name))
    except BaseException as exc:
        # also when a signal (as KeyboardInterrupt) lands inside ShardWriter() after it created the file
        if writer is not None:
            writer.abort()
        else:
            _unlink(tmp)
        if isinstance(exc, OSError):
            raise output_error(exc, out, f"writing shard {name}") from None
        raise
    return ShardInfo(name, writer.records, size, writer.file_crc), skips


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def pack_lmdb(out: str, plan: Plan, opts: PackOptions, pool: Pool, bar: Meter) -> tuple[int, int, list[Skipped], int]:
    """Write every item of ``plan`` to ``out/data.mdb``, resuming after the last committed chunk of an
    earlier run. Returns (records, database bytes, skipped inputs, items kept from the earlier run)."""
    positions = np.arange(len(plan.order))
    try:
        with LmdbWriter(out, plan.fingerprint, map_size=2 * plan.source_bytes + (64 << 20)) as w:
            start = w.items_done
            bar.update(start)
            for chunk, results in pool.map(chunks(plan, positions[start:])):
                for it, (kind, _, reason) in zip(chunk, results):
                    if kind == "skip" and opts.strict:
                        raise strict_error(it.path, reason)
                nbytes = w.add_chunk([(r[1], r[2]) if r[0] == "ok" else None for r in results],
                                     [Skipped(it.key, it.path, r[2]) for it, r in zip(chunk, results)
                                      if r[0] == "skip"])
                bar.update(len(chunk), nbytes)
            nbytes = w.finish(plan.source.classes)
            return w.records, nbytes, w.skipped(), start
    except OSError as exc:
        raise output_error(exc, out, "writing the LMDB database") from None
