"""The dataset manifest, ``index.json``: what a dataset is made of. Written last and atomically.

A folder is a recpack dataset exactly when it holds a valid ``index.json``. Shard names in it are plain file
names inside that folder; anything else (``../``, absolute paths, sub-folders, symlinks leading out) is
refused, so a manifest can never make a reader open files elsewhere.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._version import __version__
from .errors import ManifestError
from .format import FORMAT_VERSION, SHARD_SUFFIX

__all__ = [
    "MANIFEST_NAME",
    "MAX_MANIFEST_BYTES",
    "Manifest",
    "ShardEntry",
    "read_manifest",
    "write_manifest",
    "atomic_write",
    "dataset_folder",
    "repack_command",
]

MANIFEST_NAME = "index.json"
MAX_MANIFEST_BYTES = 512 << 20


@dataclass(frozen=True)
class ShardEntry:
    """One shard as listed in the manifest. ``crc32c`` covers the whole file."""

    name: str
    records: int
    bytes: int
    crc32c: int


@dataclass
class Manifest:
    """The decoded index.json. ``pack`` holds the pack parameters (seed, sizes, options, source)."""

    records: int
    backend: str = "shards"
    shards: list[ShardEntry] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    pack: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    created_by: str = f"recpack {__version__}"
    #: 32 hex digits naming this pack; in every shard header too, so a shard from another pack is refused
    dataset_id: str = "0" * 32

    @property
    def seed(self) -> int | None:
        seed = self.pack.get("seed")
        return seed if isinstance(seed, int) else None

    @property
    def total_bytes(self) -> int:
        return sum(s.bytes for s in self.shards)

    def starts(self) -> np.ndarray:
        """Global index of each shard's first record (int64, len = shards + 1)."""
        return np.concatenate([[0], np.cumsum([s.records for s in self.shards], dtype=np.int64)])

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "recpack",
            "format_version": self.format_version,
            "created_by": self.created_by,
            "dataset_id": self.dataset_id,
            "backend": self.backend,
            "records": self.records,
            "bytes": self.total_bytes,
            "classes": list(self.classes),
            "seed": self.seed,
            "shards": [{"name": s.name, "records": s.records, "bytes": s.bytes, "crc32c": f"{s.crc32c:08x}"}
                       for s in self.shards],
            "pack": self.pack,
        }


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` via ``path.tmp`` + fsync + rename, so readers see all or nothing."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(os.path.dirname(path) or ".")


def _fsync_dir(path: str) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_manifest(folder: str, manifest: Manifest) -> str:
    """Write ``folder/index.json`` atomically (deterministic bytes: sorted keys, fixed indent)."""
    path = os.path.join(folder, MANIFEST_NAME)
    text = json.dumps(manifest.to_json(), indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write(path, text.encode("utf-8"))
    return path


def dataset_folder(path: str | os.PathLike[str]) -> str:
    """The dataset folder for ``path`` (the folder itself or its index.json)."""
    p = os.fspath(path)
    if os.path.basename(p) == MANIFEST_NAME and os.path.isfile(p):
        return os.path.dirname(p) or "."
    return p


def _encodable(name: str) -> bool:
    """True when ``name`` is a file name the OS can take: encodable, and at most 255 bytes (NAME_MAX)."""
    try:
        return len(os.fsencode(name)) <= 255
    except UnicodeEncodeError:  # a lone surrogate from a JSON "\\ud800" escape
        return False


def _safe_name(folder: str, name: Any, what: str) -> str:
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
            or os.path.isabs(name) or "\x00" in name or not _encodable(name)):
        raise ManifestError(f"{folder}/{MANIFEST_NAME}: {what} name {name!r} is not a plain file name inside "
                            "the dataset folder; refusing to open it (was the manifest edited?)")
    full = os.path.join(folder, name)
    real_folder = os.path.realpath(folder)
    if os.path.lexists(full) and os.path.dirname(os.path.realpath(full)) != real_folder:
        raise ManifestError(f"{full}: is a symlink leading outside the dataset folder; refusing to open it")
    return name


def _int(obj: dict[str, Any], key: str, where: str, lo: int = 0) -> int:
    v = obj.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v < 1 << 62:
        raise ManifestError(f"{where}: field {key!r} must be an integer from {lo} to 2**62, got {v!r}; the "
                            "manifest is damaged — re-run `recpack pack`")
    return v


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate ``index.json`` of the dataset at ``path`` (folder or the file itself)."""
    folder = dataset_folder(path)
    mpath = os.path.join(folder, MANIFEST_NAME)
    if not os.path.isfile(mpath):
        if not os.path.exists(folder):
            raise ManifestError(f"{folder}: does not exist; pass the folder `recpack pack` wrote")
        if os.path.isdir(os.path.join(folder, ".recpack-pack")):
            raise ManifestError(f"{folder}: packing did not finish (no {MANIFEST_NAME}); re-run the same "
                                "`recpack pack` command to resume it")
        raise ManifestError(f"{folder}: not a recpack dataset (no {MANIFEST_NAME}); pass the folder "
                            "`recpack pack` wrote")
    size = os.path.getsize(mpath)
    if size > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{mpath}: {size} bytes, larger than the {MAX_MANIFEST_BYTES}-byte limit for a "
                            "manifest; it is not a recpack manifest")
    try:
        with open(mpath, "rb") as f:
            obj = json.loads(f.read().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError; so are
        # integers of more than 4,300 digits; deeply nested arrays exhaust the recursion limit
        raise ManifestError(f"{mpath}: not valid JSON ({exc}); the manifest is damaged — re-run "
                            "`recpack pack` or restore it from a copy") from None
    if not isinstance(obj, dict) or obj.get("format") != "recpack":
        raise ManifestError(f"{mpath}: not a recpack manifest (no \"format\": \"recpack\")")
    version = obj.get("format_version")
    if version != FORMAT_VERSION:
        raise ManifestError(f"{mpath}: format v{version}, this recpack reads v{FORMAT_VERSION} (v2 added record and "
                            f"dataset identity checks); re-pack it: {repack_command(folder, obj.get('pack'))}")
    backend = obj.get("backend", "shards")
    if not isinstance(backend, str) or not backend:
        raise ManifestError(f"{mpath}: 'backend' must be a non-empty string, not {backend!r}")
    records = _int(obj, "records", mpath)
    shards_obj = obj.get("shards", [])
    if not isinstance(shards_obj, list):
        raise ManifestError(f"{mpath}: 'shards' must be a list")
    shards = []
    for i, s in enumerate(shards_obj):
        where = f"{mpath}: shards[{i}]"
        if not isinstance(s, dict):
            raise ManifestError(f"{where} must be an object")
        name = _safe_name(folder, s.get("name"), "shard")
        if not name.endswith(SHARD_SUFFIX):
            raise ManifestError(f"{where}: shard name {name!r} does not end in {SHARD_SUFFIX}")
        try:
            crc = int(str(s.get("crc32c")), 16)
        except ValueError:
            raise ManifestError(f"{where}: 'crc32c' must be 8 hex digits") from None
        shards.append(ShardEntry(name, _int(s, "records", where), _int(s, "bytes", where), crc))
    if shards and sum(s.records for s in shards) != records:
        raise ManifestError(f"{mpath}: shard record counts add up to {sum(s.records for s in shards)}, "
                            f"not {records}; the manifest is inconsistent — re-run `recpack pack`")
    classes = obj.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ManifestError(f"{mpath}: 'classes' must be a list of strings")
    pack = obj.get("pack", {})
    if not isinstance(pack, dict):
        raise ManifestError(f"{mpath}: 'pack' must be an object")
    dataset_id = obj.get("dataset_id")
    if not isinstance(dataset_id, str) or len(dataset_id) != 32 or not all(c in "0123456789abcdef" for c in dataset_id):
        raise ManifestError(f"{mpath}: 'dataset_id' must be 32 lowercase hex digits, not {dataset_id!r}; the manifest "
                            "is damaged — re-run `recpack pack`")
    return Manifest(records=records, backend=backend, shards=shards, classes=classes, pack=pack,
                    format_version=version, created_by=str(obj.get("created_by", "")), dataset_id=dataset_id)


def repack_command(folder: str, pack: Any) -> str:
    """The command that re-packs the dataset in ``folder`` from its recorded source and options (as far as
    index.json recorded them)."""
    p = pack if isinstance(pack, dict) else {}
    src = p.get("source") if isinstance(p.get("source"), str) else "SOURCE"
    verb = "convert" if str(p.get("source_kind", "")).startswith(("mxnet", "webdataset", "recpack-")) else "pack"
    args = [f"recpack {verb}", shlex.quote(src), shlex.quote(folder)]
    if isinstance(p.get("seed"), int):
        args.append(f"--seed {p['seed']}")
    if isinstance(p.get("num_shards"), int):
        args.append(f"--num-shards {p['num_shards']}")
    elif isinstance(p.get("shard_size"), int):
        args.append(f"--shard-size {p['shard_size']}")
    if isinstance(p.get("backend"), str) and p["backend"] != Manifest.backend:
        args.append(f"--backend {shlex.quote(p['backend'])}")
    image = p.get("image") if isinstance(p.get("image"), dict) else {}
    if isinstance(image.get("resize"), int):
        args.append(f"--resize {image['resize']}")
    if image.get("restart_markers"):
        args.append("--restart-markers")
    args.append("--overwrite")
    return " ".join(args)
