"""Sources -> shuffled, sharded, checksummed record files. Parallel, deterministic, crash-safe, resumable.

How a pack runs:

1. **Plan** (pure): scan the source, order items by a keyed hash of (seed, key) — a global shuffle that does
   not depend on numpy versions or worker counts — and cut the order into shards by planned bytes (source
   file sizes) or by count. The plan's fingerprint covers the options and every item's key, label, size and
   mtime.
2. **Process** (parallel): chunks of items go to a process pool; each item is read, checked, converted if
   needed and encoded as a record. Results come back in plan order, so the output is byte-identical for
   any worker count.
3. **Write** (main process): records are appended to ``shard-NNNNN.rpk.tmp``; a finished shard is fsynced,
   read back and checked, then renamed, and its summary saved in ``.recpack-pack/``. Re-running the same
   command keeps finished shards and redoes only the rest. ``index.json`` is written last, atomically.

With ``PackOptions(scheduler=...)`` steps 2 and 3 run as one Dask task per shard on a cluster's workers
(same functions, a temporary name per attempt); the main process still records progress and writes
``index.json`` (docs/scaling.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from multiprocessing import get_context
from typing import Any

import numpy as np
from tqdm import tqdm

from .errors import BadImage, FormatError, PackError
from .fileio import is_disk_full
from .format import FORMAT_VERSION, SHARD_SUFFIX, encode_record, table_row
from .imaging import ImageOptions, prepare, read_source
from .index import MANIFEST_NAME, Manifest, ShardEntry, atomic_write, read_manifest, write_manifest
from .shard import ShardInfo, ShardWriter, confirm_written
from .sources import IMAGE_EXTENSIONS, Source, SourceItem, scan

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "REPORT_NAME",
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

DEFAULT_SHARD_SIZE = 256 << 20
REPORT_NAME = "pack-report.tsv"
STATE_DIR = ".recpack-pack"
_CHUNK_ITEMS = 32
_CHUNK_BYTES = 16 << 20


@dataclass(frozen=True)
class PackOptions:
    """How to pack.

    seed: global shuffle seed. shard_size: target bytes per shard, planned from source file sizes
    (re-encoded shards come out smaller). num_shards: use exactly this many shards instead (by count).
    workers: processes that read/check/encode (None = :func:`default_workers`; 0 or 1 = in this process).
    backend: "shards" (recpack files) or "lmdb". strict: stop at the first bad input instead of skipping it.
    overwrite: replace an existing dataset or unfinished pack in the output folder.
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
        if self.backend not in ("shards", "lmdb"):
            raise ValueError(f"backend must be 'shards' or 'lmdb', not {self.backend!r}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be a positive number of bytes, not {self.shard_size}")
        if self.num_shards is not None and self.num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, not {self.num_shards}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be >= 0, not {self.workers}")
        if self.image.restart_markers:
            from .imaging import restart_markers_available

            why = restart_markers_available()
            if why is not None:
                raise ValueError(why)
        if self.scheduler is not None and self.backend != "shards":
            raise ValueError("a Dask scheduler writes shard files; use backend='shards' (or no scheduler for "
                             "lmdb)")


@dataclass(frozen=True)
class Skipped:
    """A source image left out of the dataset, and why."""

    key: str
    path: str
    reason: str


@dataclass
class PackResult:
    """What a pack produced. ``resumed`` counts shards kept from an interrupted run."""

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


# ---------------------------------------------------------------------------------------------- planning


def shuffle_order(keys: Sequence[str], seed: int) -> np.ndarray:
    """A permutation of ``range(len(keys))``: items sorted by BLAKE2b(seed, key).

    Stable across platforms and numpy versions, independent of input order for distinct keys."""
    salt = int(seed).to_bytes(8, "little", signed=True)
    h = np.fromiter(
        (int.from_bytes(hashlib.blake2b(k.encode("utf-8", "surrogateescape"), digest_size=8, key=salt)
                        .digest(), "little") for k in keys),
        dtype=np.uint64, count=len(keys))
    return np.argsort(h, kind="stable")


def plan_shards(sizes: np.ndarray, shard_size: int, num_shards: int | None) -> list[np.ndarray]:
    """Cut positions ``0..len(sizes)`` (already in shuffled order) into consecutive shards.

    By count when ``num_shards`` is given (as even as possible), else by bytes: an item goes to the shard
    its start offset falls in, so a shard holds at most ``shard_size`` plus one item."""
    n = len(sizes)
    if num_shards is not None:
        return [a for a in np.array_split(np.arange(n), min(num_shards, max(n, 1)))]
    starts = np.cumsum(sizes, dtype=np.int64) - sizes
    ids = starts // shard_size
    _, first = np.unique(ids, return_index=True)
    return [np.arange(a, b) for a, b in zip(first, list(first[1:]) + [n])]


def default_workers(image: ImageOptions, cores: int | None = None) -> int:
    """All cores, except for pure pass-through packing on <= 2 cores, which runs in-process.

    Measured (docs/benchmarks.md): passing a JPEG through costs ~100 µs of CPU, less than a pool spends
    pickling it through a pipe, so on 2 cores two workers plus the writer reached 3,409 images/s against
    3,837 in-process (10,000 images, cold); with ``--check decode`` the pool was 1.5x faster there."""
    cores = cores or os.cpu_count() or 1
    light = image.check == "header" and image.resize is None and not image.reencode and not image.restart_markers
    return 0 if light and cores <= 2 else cores


def shard_name(i: int) -> str:
    return f"shard-{i:05d}{SHARD_SUFFIX}"


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    except OSError:
        return 0, 0


@dataclass
class _Plan:
    source: Source
    order: np.ndarray  # source item index for each position
    shards: list[np.ndarray]  # positions per shard
    sizes: np.ndarray  # source file size per position
    fingerprint: str
    source_bytes: int


def _make_plan(src: str | Source, root: str | None, opts: PackOptions) -> _Plan:
    source = src if isinstance(src, Source) else scan(src, root)
    if not source.items:
        raise PackError(f"{src}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}); "
                        "pass an ImageFolder tree, a .lst file or a list of image paths")
    order = shuffle_order([it.key for it in source.items], opts.seed)
    # items that live inside a container (recpack.convert) say their own size and mtime
    stats = [it.stat() if hasattr(it, "stat") else _stat(it.path) for it in (source.items[i] for i in order)]
    sizes = np.array([s for s, _ in stats], dtype=np.int64)
    shards = plan_shards(sizes + 128, opts.shard_size, opts.num_shards)  # ~128 B of header + meta each
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(_params(opts, source), sort_keys=True).encode())
    for pos, i in enumerate(order.tolist()):
        it = source.items[i]
        h.update(json.dumps([it.key, it.path.encode("utf-8", "surrogateescape").hex(), _json_label(it.label),
                             it.id, *stats[pos]]).encode())
    h.update(json.dumps([len(s) for s in shards]).encode())
    return _Plan(source, order, shards, sizes, h.hexdigest(), int(sizes.sum()))


def _json_label(label: Any) -> Any:
    return list(label) if isinstance(label, tuple) else label


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


# ---------------------------------------------------------------------------------------------- processing


def _record_meta(item: SourceItem, width: int, height: int, extra: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {"key": item.key}
    if item.label is not None:
        meta["label"] = _json_label(item.label)
    if item.id is not None:
        meta["id"] = item.id
    meta["size"] = [width, height]
    meta.update(extra)
    return meta


_Result = tuple[str, Any, Any]  # ("ok", record bytes, (label, width, height)) | ("skip", key, reason)


def _process(items: list[SourceItem], opts: ImageOptions) -> list[_Result]:
    """Read, check, convert and encode ``items`` (runs in a worker process; pure given the files)."""
    out: list[_Result] = []
    for it in items:
        try:
            read = getattr(it, "read", None)  # recpack.convert items read themselves out of a container
            img = prepare(read(opts.max_bytes) if read else read_source(it.path, opts.max_bytes), opts)
        except BadImage as exc:
            out.append(("skip", it.key, exc.reason))
            continue
        record = encode_record(_record_meta(it, img.width, img.height, img.meta), img.data)
        out.append(("ok", record, (it.label, img.width, img.height)))
    return out


def _row(label: Any, width: int, height: int, offset: int, length: int) -> tuple[int, int, int, int, int, int]:
    return table_row(offset, length, label, width, height)


def _chunks(plan: _Plan, positions: np.ndarray) -> Iterator[list[SourceItem]]:
    items = plan.source.items
    chunk: list[SourceItem] = []
    nbytes = 0
    for i, size in zip(plan.order[positions].tolist(), plan.sizes[positions].tolist()):
        chunk.append(items[i])
        nbytes += size
        if len(chunk) >= _CHUNK_ITEMS or nbytes >= _CHUNK_BYTES:
            yield chunk
            chunk, nbytes = [], 0
    if chunk:
        yield chunk


class _Pool:
    """Runs :func:`_process` on chunks, in order, in a process pool (or inline for workers <= 1)."""

    def __init__(self, workers: int, opts: ImageOptions) -> None:
        self.opts = opts
        self.workers = workers
        self.ex: ProcessPoolExecutor | None = None
        if workers > 1:
            self.ex = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))

    def map(self, chunks: Iterator[list[SourceItem]]) -> Iterator[tuple[list[SourceItem], list[_Result]]]:
        if self.ex is None:
            for c in chunks:
                yield c, _process(c, self.opts)
            return
        window: deque[tuple[list[SourceItem], Future[list[_Result]]]] = deque()
        for c in chunks:
            window.append((c, self.ex.submit(_process, c, self.opts)))
            if len(window) >= 3 * self.workers:
                c0, fut = window.popleft()
                yield c0, fut.result()
        while window:
            c0, fut = window.popleft()
            yield c0, fut.result()

    def close(self) -> None:
        if self.ex is not None:
            self.ex.shutdown(wait=True, cancel_futures=True)
            self.ex = None


# ---------------------------------------------------------------------------------------------- output folder


_OUR_FILES = (MANIFEST_NAME, REPORT_NAME, "data.mdb", "lock.mdb")


def _is_ours(name: str) -> bool:
    return name in _OUR_FILES or name == STATE_DIR or (name.startswith("shard-") and (
        name.endswith(SHARD_SUFFIX) or name.endswith(SHARD_SUFFIX + ".tmp"))) or name == MANIFEST_NAME + ".tmp"


def _clear(out: str) -> None:
    for name in os.listdir(out):
        if _is_ours(name):
            p = os.path.join(out, name)
            shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)


def _prepare_out(out: str, plan: _Plan, opts: PackOptions) -> Manifest | None:
    """Make ``out`` ready; returns the existing manifest when the same pack already finished."""
    os.makedirs(out, exist_ok=True)
    state = os.path.join(out, STATE_DIR)
    names = os.listdir(out)
    if MANIFEST_NAME in names:
        if opts.overwrite:
            _clear(out)
        else:
            old = read_manifest(out)
            if old.pack.get("fingerprint") == plan.fingerprint:
                return old
            raise PackError(f"{out}: already holds a recpack dataset packed from other inputs or with other "
                            "options; pass --overwrite to replace it, or choose another folder")
    elif os.path.isdir(state):
        try:
            with open(os.path.join(state, "plan.json"), "rb") as f:
                old_fp = json.loads(f.read(1 << 20)).get("fingerprint")
        except FileNotFoundError:
            # killed between creating the state folder and writing plan.json (found by kill -9 trials):
            # nothing is written before plan.json, so there is nothing to keep or to protect
            old_fp = plan.fingerprint
        except (OSError, ValueError, AttributeError):
            old_fp = None
        if old_fp != plan.fingerprint:
            if not opts.overwrite:
                raise PackError(f"{out}: holds an unfinished pack of different inputs or options; re-run "
                                "that command to finish it, or pass --overwrite to discard it")
            _clear(out)
    elif any(not n.startswith(".") for n in names):
        raise PackError(f"{out}: folder is not empty and holds no recpack dataset; choose a new or empty "
                        "folder")
    os.makedirs(state, exist_ok=True)
    atomic_write(os.path.join(state, "plan.json"),
                 json.dumps({"fingerprint": plan.fingerprint, "params": _params(opts, plan.source)},
                            sort_keys=True).encode())
    return None


def _disk_error(exc: OSError, out: str, what: str) -> PackError:
    where = out
    while not os.path.isdir(where) and os.path.dirname(where) != where:  # out itself may not exist yet
        where = os.path.dirname(where) or "."
    free = shutil.disk_usage(where).free if os.path.isdir(where) else 0
    return PackError(f"{what}: {os.strerror(exc.errno or 0)} ({free} bytes free on the device of {out}). "
                     "Finished shards are kept: free some space and re-run the same command to resume.")


# ---------------------------------------------------------------------------------------------- backends


def _pack_shards(out: str, plan: _Plan, opts: PackOptions, pool: _Pool, bar: _Meter
                 ) -> tuple[list[ShardInfo], list[Skipped], int]:
    state = os.path.join(out, STATE_DIR)
    infos: dict[int, ShardInfo] = {}
    skipped: dict[int, list[Skipped]] = {}
    for i, positions in enumerate(plan.shards):  # keep what a previous run finished
        done = _load_done(state, out, i)
        if done is not None:
            infos[i], skipped[i] = done
            bar.update(len(positions))
    resumed = len(infos)
    todo = [i for i in range(len(plan.shards)) if i not in infos]
    if opts.scheduler is not None:
        for i, info, skips in _dask_shards(out, plan, opts, todo):
            _save_done(state, i, info, skips)
            infos[i], skipped[i] = info, skips
            bar.update(len(plan.shards[i]), info.bytes)
    for i in todo:
        if i in infos:
            continue
        info, skips = _write_shard(out, i, pool.map(_chunks(plan, plan.shards[i])), opts.strict, opts.fsync,
                                   bar.update, plan.fingerprint)
        _save_done(state, i, info, skips)
        infos[i], skipped[i] = info, skips
    ordered = [infos[i] for i in range(len(plan.shards))]
    return ordered, [s for i in range(len(plan.shards)) for s in skipped[i]], resumed


def _write_shard(out: str, i: int, processed: Iterable[tuple[list[SourceItem], list[_Result]]], strict: bool,
                 fsync: bool, progress: Callable[[int, int], None], dataset_id: str, tmp_name: str | None = None
                 ) -> tuple[ShardInfo, list[Skipped]]:
    """Write shard ``i`` from its processed chunks (in plan order) to a temporary name in ``out``, fsync it,
    read it back against its CRC32C, then rename it: a shard is published whole or not at all. Used by the
    local packer and, with a per-attempt ``tmp_name``, by the Dask tasks (so two attempts at one shard never
    write the same file)."""
    name = shard_name(i)
    tmp = os.path.join(out, tmp_name or name + ".tmp")
    writer = ShardWriter(tmp, bytes.fromhex(dataset_id), i)
    skips: list[Skipped] = []
    try:
        for chunk, results in processed:
            nbytes = 0
            for it, (kind, a, b) in zip(chunk, results):
                if kind == "skip":
                    if strict:
                        raise PackError(f"{it.path}: {b} (--strict stops at the first bad input; drop "
                                        "--strict to skip bad files and list them in the report)")
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
    except OSError as exc:
        writer.abort()
        if is_disk_full(exc):
            raise _disk_error(exc, out, f"writing shard {name}") from None
        raise
    except BaseException:
        writer.abort()
        raise
    return ShardInfo(name, writer.records, size, writer.file_crc), skips


def _shard_task(out: str, i: int, items: list[SourceItem], image: ImageOptions, strict: bool, fsync: bool,
                dataset_id: str) -> tuple[ShardInfo, list[Skipped]]:
    """One Dask task: read, check and encode ``items`` and write them as shard ``i`` (see _write_shard)."""
    chunks = (items[a:a + _CHUNK_ITEMS] for a in range(0, len(items), _CHUNK_ITEMS))
    stem = shard_name(i)[:-len(SHARD_SUFFIX)]
    tmp = f"{stem}.{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SHARD_SUFFIX}.tmp"
    return _write_shard(out, i, ((c, _process(c, image)) for c in chunks), strict, fsync, lambda n, b: None,
                        dataset_id, tmp)


def _dask_shards(out: str, plan: _Plan, opts: PackOptions, todo: list[int]
                 ) -> Iterator[tuple[int, ShardInfo, list[Skipped]]]:
    """Submit one :func:`_shard_task` per shard in ``todo`` to the Dask cluster at ``opts.scheduler``;
    yields (shard, info, skipped) as shards finish. The scheduler re-runs the task of a lost worker; a task
    that raises is retried twice, then the pack stops with its error (finished shards are kept for resume)."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise PackError("--scheduler needs Dask distributed: pip install 'recpack[dask]'") from None
    client = opts.scheduler if isinstance(opts.scheduler, Client) else Client(str(opts.scheduler))  # type: ignore[no-untyped-call]
    futures: dict[Any, tuple[int, Any]] = {}
    try:
        for i in todo:
            # workers may run elsewhere in another folder: plain files are passed by absolute path
            items = [replace(it, path=os.path.abspath(it.path)) if type(it) is SourceItem else it
                     for it in (plan.source.items[j] for j in plan.order[plan.shards[i]].tolist())]
            fut = client.submit(_shard_task, os.path.abspath(out), i, items, opts.image, opts.strict,
                                opts.fsync, plan.fingerprint, key=f"recpack-{plan.fingerprint[:12]}-{shard_name(i)}",
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


class _Meter:
    """A tqdm bar counting images that also shows MB/s written."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self.bar = tqdm(total=total, unit="img", desc=desc, disable=not enabled, dynamic_ncols=True,
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


def _save_done(state: str, i: int, info: ShardInfo, skips: list[Skipped]) -> None:
    doc = {"shard": info.to_json(), "skipped": [[s.key, s.path.encode("utf-8", "surrogateescape").hex(),
                                                 s.reason] for s in skips]}
    atomic_write(os.path.join(state, shard_name(i) + ".json"), json.dumps(doc).encode())


def _load_done(state: str, out: str, i: int) -> tuple[ShardInfo, list[Skipped]] | None:
    name = shard_name(i)
    try:
        with open(os.path.join(state, name + ".json"), "rb") as f:
            doc = json.loads(f.read(64 << 20))
        s = doc["shard"]
        info = ShardInfo(s["name"], int(s["records"]), int(s["bytes"]), int(s["crc32c"], 16))
        skips = [Skipped(k, bytes.fromhex(p).decode("utf-8", "surrogateescape"), r) for k, p, r in doc["skipped"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        if info.name != name or os.path.getsize(os.path.join(out, name)) != info.bytes:
            return None
    except OSError:
        return None
    return info, skips


def _pack_lmdb(out: str, plan: _Plan, opts: PackOptions, pool: _Pool, bar: _Meter
               ) -> tuple[int, int, list[Skipped], int]:
    from .backends.lmdb import LmdbWriter

    positions = np.arange(len(plan.order))
    with LmdbWriter(out, plan.fingerprint, map_size=2 * plan.source_bytes + (64 << 20)) as w:
        start = w.items_done
        resumed = start
        bar.update(start)
        try:
            for chunk, results in pool.map(_chunks(plan, positions[start:])):
                for it, (kind, _, reason) in zip(chunk, results):
                    if kind == "skip" and opts.strict:
                        raise PackError(f"{it.path}: {reason} (--strict stops at the first bad input; drop "
                                        "--strict to skip bad files and list them in the report)")
                nbytes = w.add_chunk([(r[1], r[2]) if r[0] == "ok" else None for r in results],
                                     [Skipped(it.key, it.path, r[2]) for it, r in zip(chunk, results)
                                      if r[0] == "skip"])
                bar.update(len(chunk), nbytes)
            nbytes = w.finish(plan.source.classes)
        except OSError as exc:
            if is_disk_full(exc):
                raise _disk_error(exc, out, "writing the LMDB database") from None
            raise
        return w.records, nbytes, w.skipped(), resumed


# ---------------------------------------------------------------------------------------------- entry point


def pack(src: str | os.PathLike[str] | Source, out: str | os.PathLike[str], options: PackOptions | None = None,
         *, root: str | os.PathLike[str] | None = None) -> PackResult:
    """Pack the images found at ``src`` (ImageFolder tree, ``.lst`` file or list file) into the dataset
    folder ``out``. Returns a :class:`PackResult`; bad inputs are skipped and listed in
    ``out/pack-report.tsv`` unless ``options.strict``. Re-running after an interruption resumes."""
    opts = options or PackOptions()
    opts.validate()
    t0 = time.perf_counter()
    out = os.fspath(out)
    plan = _make_plan(src if isinstance(src, Source) else os.fspath(src), None if root is None else os.fspath(root),
                      opts)
    try:
        existing = _prepare_out(out, plan, opts)
    except OSError as exc:  # a disk full before the first shard (found on a real full ext4)
        if is_disk_full(exc):
            raise _disk_error(exc, out, "preparing the output folder") from None
        raise
    if existing is not None:
        return PackResult(out, existing.records, [], [ShardInfo(s.name, s.records, s.bytes, s.crc32c)
                                                     for s in existing.shards], existing.total_bytes,
                          len(plan.order), 0.0, already_done=True)
    workers = default_workers(opts.image) if opts.workers is None else opts.workers
    n = len(plan.order)
    bar = _Meter(n, f"pack {os.path.basename(out.rstrip('/')) or out}", opts.progress)
    pool = _Pool(0 if opts.scheduler is not None else min(workers, max(1, n // _CHUNK_ITEMS)), opts.image)
    try:
        if opts.backend == "shards":
            infos, skipped, resumed = _pack_shards(out, plan, opts, pool, bar)
            records, nbytes = sum(s.records for s in infos), sum(s.bytes for s in infos)
        else:
            records, nbytes, skipped, resumed = _pack_lmdb(out, plan, opts, pool, bar)
            infos = []
        _write_report(out, skipped)
    except OSError as exc:  # shards turn their own into PackError; this is progress records and the report
        if is_disk_full(exc):
            raise _disk_error(exc, out, "writing progress records or the pack report") from None
        raise
    finally:
        pool.close()
        bar.close()
    manifest = Manifest(records=records, backend=opts.backend,
                        shards=[ShardEntry(s.name, s.records, s.bytes, s.crc32c) for s in infos],
                        classes=list(plan.source.classes),
                        dataset_id=plan.fingerprint,
                        pack={**_params(opts, plan.source), "fingerprint": plan.fingerprint,
                              "source_items": n, "skipped": len(skipped), "report": REPORT_NAME})
    try:
        write_manifest(out, manifest)
    except OSError as exc:
        if is_disk_full(exc):
            raise _disk_error(exc, out, "writing index.json") from None
        raise
    shutil.rmtree(os.path.join(out, STATE_DIR), ignore_errors=True)
    return PackResult(out, records, skipped, infos, nbytes, n, time.perf_counter() - t0, resumed)


def _write_report(out: str, skipped: list[Skipped]) -> None:
    lines = ["key\treason\tpath"]
    for s in skipped:
        lines.append("\t".join(x.replace("\t", " ").replace("\n", " ") for x in (s.key, s.reason, s.path)))
    atomic_write(os.path.join(out, REPORT_NAME),
                 ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
