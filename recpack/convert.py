"""``recpack convert SRC OUT``: an existing packed image dataset -> a recpack dataset, through the packer.

Sources, chosen by what ``SRC`` is:

* anything ``recpack.open`` reads (:mod:`recpack.backends`): an MXNet RecordIO file (``.rec``, with or
  without ``.idx``: key = the .idx key, else the IRHeader id; label = the IRHeader label, int where
  integral, the float labels of a multi-label record as a tuple), a recpack LMDB dataset, or a recpack shard
  dataset (re-packed: a new shuffle, shard size or backend) — key, label and bytes of every record;
* WebDataset tar shards (a folder of ``.tar`` files, one ``.tar`` or a glob): samples grouped by key as
  webdataset does (the name up to the first dot of the last path component), image from
  ``.jpg``/``.jpeg``/``.png``/``.webp``, label from ``.cls`` (an integer in text) else ``"label"`` in ``.json``.

The packer does everything else — global shuffle, sharding, checks, crash-safe resumable writing, the
worker pool — exactly as for ``recpack pack``: each item here is a :class:`~recpack.sources.SourceItem`
that reads its own bytes (:meth:`ConvertItem.read`) from the container instead of from a file of its own.
Image bytes are kept unchanged (JPEGs pass through; other formats follow ``--convert`` as in ``pack``).

Nothing is unpickled: RecordIO and tar are parsed by hand (tar headers through :mod:`tarfile`, which never
extracts here), LMDB values are msgpack. Every size is checked against the container before reading.
"""

from __future__ import annotations

import glob
import json
import os
import tarfile
import threading
from dataclasses import dataclass

from tqdm import tqdm

from .backends import RecordSource, open_source
from .errors import BadImage, FormatError, ManifestError, PackError
from .pack import PackOptions, PackResult, pack
from .record import Record
from .sources import Label, Source, SourceItem

__all__ = ["ConvertItem", "convert", "source_for"]

IMAGE_MEMBERS = (".jpg", ".jpeg", ".png", ".webp")
_MAX_SIDECAR = 1 << 20  # .cls / .json members read at planning time


@dataclass(frozen=True, slots=True)
class ConvertItem(SourceItem):
    """An image inside a container: ``kind`` "record" (record ``offset`` of the dataset ``container``, read
    through its backend) or "tar" (the member data at byte ``offset`` of the tar file ``container``);
    ``size``: the bytes planned for it; ``mtime``: the container's, for resume fingerprints."""

    kind: str = "record"
    container: str = ""
    offset: int = 0
    size: int = 0
    mtime: int = 0

    def stat(self) -> tuple[int, int]:
        """(bytes planned for this item, mtime) — what pack's planner otherwise stats the file for."""
        return self.size, self.mtime

    def read(self, max_bytes: int) -> bytes:
        """The image bytes (raises BadImage with a short reason, like reading a source file)."""
        if self.size > max_bytes:
            raise BadImage(f"too large: {self.size} bytes > {max_bytes}", self.path)
        try:
            if self.kind == "record":
                return bytes(_opened(self.container).record(self.offset).data)
            with open(self.container, "rb", buffering=0) as f:
                f.seek(self.offset)
                raw = f.read(self.size)
            if len(raw) != self.size:
                raise BadImage(f"unreadable: container ends after {len(raw)} of {self.size} bytes", self.path)
            return raw
        except FormatError as exc:
            raise BadImage(f"corrupt record: {exc}", self.path) from None
        except OSError as exc:
            raise BadImage(f"unreadable: {exc.strerror or type(exc).__name__}", self.path) from None


_SOURCES: dict[str, RecordSource] = {}
_SOURCES_LOCK = threading.Lock()


def _opened(path: str) -> RecordSource:
    """One open record source per dataset per process (worker processes keep theirs for the whole pack)."""
    with _SOURCES_LOCK:
        source = _SOURCES.get(path)
        if source is None:
            source = _SOURCES[path] = open_source(path)
        return source


# ---------------------------------------------------------------------------------------------- sources


def source_for(src: str, progress: bool = False) -> Source:
    """The :class:`~recpack.sources.Source` of items to convert from ``src`` (see the module docstring).
    Planning reads a record source once (keys and labels live in the records) or the tar headers and
    sidecars."""
    tars = [] if os.path.isfile(os.path.join(src, "index.json")) else _tar_paths(src)
    if tars:
        return _wds_source(tars, progress)
    try:
        source = open_source(src)
    except ManifestError:
        raise ValueError(f"{src!r}: expected an MXNet .rec file, a folder (or glob) of WebDataset .tar shards, "
                         "or a recpack dataset folder; for image folders and .lst files use `recpack pack`"
                         ) from None
    with source:
        return _record_source(src, source, progress)


def _record_source(path: str, source: RecordSource, progress: bool) -> Source:
    """Every record of ``source`` as an item (one sequential pass). Keys must be unique; a repeated key (MXNet
    ids without an .idx need not be unique) gets ``@offset`` appended."""
    problems = source.problems()
    if problems:
        raise PackError(f"{problems[0]}; run `recpack verify {path}` for every damaged record")
    mtime = max(os.stat(f).st_mtime_ns for f in source.files) if source.files else os.stat(path).st_mtime_ns
    items: list[SourceItem] = []
    seen: set[str] = set()
    for i, item in tqdm(source.scan(), total=len(source), unit="rec", desc="scan",
                        disable=None if progress else True, dynamic_ncols=True):
        if i is None or not isinstance(item, Record):
            damage = item.error if not isinstance(item, Record) else None
            raise PackError(f"{damage}; run `recpack verify {path}` for every damaged record")
        key = item.key
        name, offset = source.where(i)
        if key in seen:
            key = f"{key}@{offset}"
        seen.add(key)
        items.append(ConvertItem(key, f"{path}@{offset}" if source.spans else f"{path}#{i}", item.label,
                                 item.meta.get("id"), kind="record", container=path, offset=i,
                                 size=len(item.data), mtime=mtime))
    return Source(f"recpack-{source.kind}", path, tuple(items), tuple(source.classes), 0)


def _tar_paths(src: str) -> list[str]:
    if os.path.isdir(src):
        return sorted(os.path.join(src, n) for n in os.listdir(src) if n.endswith(".tar"))
    if os.path.isfile(src) and src.endswith(".tar"):
        return [src]
    return sorted(p for p in glob.glob(src) if p.endswith(".tar") and os.path.isfile(p))


def _wds_split(name: str) -> tuple[str, str]:
    """webdataset's base_plus_ext: key = the path up to the first dot of the last component."""
    d, base = os.path.split(name)
    if "." not in base:
        return name, ""
    stem, ext = base.split(".", 1)
    return (f"{d}/{stem}" if d else stem), ext.lower()


def _wds_label(cls: bytes | None, meta: bytes | None, where: str) -> Label:
    if cls is not None:
        try:
            return int(cls.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raise PackError(f"{where}.cls: {cls[:40]!r} is not an integer class index") from None
    if meta is not None:
        try:
            obj = json.loads(meta)
        except (UnicodeDecodeError, ValueError):
            raise PackError(f"{where}.json: not valid JSON") from None
        lab = obj.get("label") if isinstance(obj, dict) else None
        if isinstance(lab, bool) or not isinstance(lab, int | float | list):
            return None
        return tuple(lab) if isinstance(lab, list) else lab
    return None


def _wds_source(tars: list[str], progress: bool) -> Source:
    items: list[SourceItem] = []
    seen: set[str] = set()
    for tar in tqdm(tars, unit="shard", desc="scan tars", disable=not progress, dynamic_ncols=True):
        mtime = os.stat(tar).st_mtime_ns
        groups: dict[str, dict[str, tarfile.TarInfo]] = {}
        order: list[str] = []
        with tarfile.open(tar, "r:") as tf:  # plain, uncompressed tar: members are byte ranges of the file
            for m in tf:
                if not m.isfile():
                    continue
                key, ext = _wds_split(m.name)
                if key not in groups:
                    groups[key] = {}
                    order.append(key)
                groups[key][ext] = m
            for key in order:
                g = groups[key]
                img = next((g[e[1:]] for e in IMAGE_MEMBERS if e[1:] in g), None)
                if img is None:
                    continue  # a sample without an image (webdataset would fail to decode it too)

                def side(ext: str, g: dict[str, tarfile.TarInfo] = g) -> bytes | None:
                    m = g.get(ext)
                    if m is None or m.size > _MAX_SIDECAR:
                        return None
                    f = tf.extractfile(m)
                    return None if f is None else f.read()

                label = _wds_label(side("cls"), side("json"), f"{tar}:{key}")
                if key in seen:
                    raise PackError(f"{tar}: key {key!r} appears in two samples; WebDataset keys must be unique")
                seen.add(key)
                items.append(ConvertItem(key, f"{tar}:{img.name}", label, None, kind="tar", container=tar,
                                         offset=img.offset_data, size=img.size, mtime=mtime))
    return Source("webdataset", os.path.dirname(tars[0]) if tars else "", tuple(items), (), 0)


def convert(src: str | os.PathLike[str], out: str | os.PathLike[str], options: PackOptions | None = None
            ) -> PackResult:
    """Convert ``src`` (an MXNet .rec, WebDataset tar shards, or a recpack dataset of any backend) into the recpack
    dataset folder ``out`` with the packer (``options`` as for :func:`recpack.pack`). Resumable like pack."""
    opts = options or PackOptions()
    source = source_for(os.fspath(src), progress=opts.progress)
    if not source.items:
        raise PackError(f"{os.fspath(src)}: no images found to convert")
    return pack(source, out, opts)
