"""The output folder of a pack: what may be written into it, and the resume state.

While a pack runs, ``OUT/.recpack-pack/`` holds ``plan.json`` (the plan's fingerprint and parameters) and one
``shard-NNNNN.rpk.json`` per finished shard (its size, record count, whole-file CRC32C and skipped inputs).
A re-run with the same fingerprint keeps those shards whose whole-file CRC32C still matches (one sequential read
of each); the folder is removed once ``index.json`` is written.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import warnings

from ..errors import FormatError, PackError
from ..fileio import file_crc, is_disk_full, open_readonly
from ..format import SHARD_SUFFIX
from ..index import MANIFEST_NAME, Manifest, atomic_write, read_manifest
from ..shard import ShardInfo
from .lock import LOCK_NAME, PackLock
from .report import REPORT_NAME, Skipped

__all__ = ["STATE_DIR", "clear", "load_done", "output_error", "prepare_out", "refuse_inside", "save_done",
           "shard_name"]

STATE_DIR = ".recpack-pack"
_OUR_FILES = (MANIFEST_NAME, REPORT_NAME, "data.mdb", "lock.mdb")


def shard_name(i: int) -> str:
    return f"shard-{i:05d}{SHARD_SUFFIX}"


def _is_ours(name: str) -> bool:
    return name in _OUR_FILES or name == STATE_DIR or (name.startswith("shard-") and (
        name.endswith(SHARD_SUFFIX) or name.endswith(SHARD_SUFFIX + ".tmp"))) or name == MANIFEST_NAME + ".tmp"


def clear(out: str, keep: tuple[str, ...] = ()) -> None:
    """Remove every file a pack writes from ``out`` (and nothing else), except the names in ``keep``."""
    for name in os.listdir(out):
        if _is_ours(name) and name not in keep:
            p = os.path.join(out, name)
            shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)


def refuse_inside(out: str, src: str) -> None:
    """Refuse (PackError) an output folder inside the source folder ``src``, where the next scan would take
    the pack's own files for input: in an ImageFolder the output folder would become a class (shifting the
    labels of the classes after it), and a re-run would plan other inputs and could not resume. A hidden
    folder (a name starting with '.') is allowed: scans skip hidden entries."""
    if not os.path.isdir(src):
        return
    try:
        rel = os.path.relpath(os.path.realpath(out), os.path.realpath(src))
    except ValueError:  # on another drive (Windows)
        return
    parts = rel.split(os.sep)
    if parts[0] == os.pardir or any(p.startswith(".") and p != os.curdir for p in parts):
        return
    raise PackError(f"{out}: the output folder is inside the source folder {src}, so the next scan would take "
                    "it for input (in an ImageFolder, a class of its own that shifts the labels, and a re-run "
                    "could not resume); choose an output folder outside the source")


def prepare_out(out: str, fingerprint: str, params: dict[str, object], overwrite: bool
                ) -> tuple[Manifest, None] | tuple[None, PackLock]:
    """Make ``out`` ready for the pack with ``fingerprint``: returns (the existing manifest, None) when the same
    pack already finished, else (None, the lock on ``out``, to release when done). Refuses (PackError) a folder
    that another pack is writing to, or that holds another dataset, another unfinished pack or files not made
    by recpack; ``overwrite`` replaces the first two (only recpack's files)."""
    os.makedirs(out, exist_ok=True)
    state = os.path.join(out, STATE_DIR)
    if not os.path.isdir(state):  # refuse before creating anything in a folder that is not ours
        done = _finished(out, fingerprint, overwrite)
        if done is not None:
            return done, None
    os.makedirs(state, exist_ok=True)
    lock = PackLock(out, state)
    try:
        done = _finished(out, fingerprint, overwrite)  # again, under the lock: another pack may have finished
        if done is not None:
            lock.release(remove_state=True)
            return done, None
        replace = MANIFEST_NAME in os.listdir(out)  # (left by _finished only with overwrite)
        if replace or _planned(state, fingerprint) != fingerprint:
            if not replace and not overwrite:
                raise PackError(f"{out}: holds an unfinished pack of different inputs or options; re-run "
                                "that command to finish it, or pass --overwrite to discard it")
            clear(out, keep=(STATE_DIR,))
            for name in os.listdir(state):
                if name != LOCK_NAME:
                    os.unlink(os.path.join(state, name))
        atomic_write(os.path.join(state, "plan.json"),
                     json.dumps({"fingerprint": fingerprint, "params": params}, sort_keys=True).encode())
    except BaseException:
        lock.release()
        raise
    return None, lock


def _finished(out: str, fingerprint: str, overwrite: bool) -> Manifest | None:
    """The manifest of ``out`` when it holds this pack, finished; raises PackError when it holds something
    this pack may not replace; None otherwise."""
    names = os.listdir(out)
    if MANIFEST_NAME in names:
        if overwrite:
            return None
        old = read_manifest(out)
        if old.pack.get("fingerprint") == fingerprint:
            return old
        raise PackError(f"{out}: already holds a recpack dataset packed from other inputs or with other "
                        "options; pass --overwrite to replace it, or choose another folder")
    if STATE_DIR not in names and any(not n.startswith(".") and n != REPORT_NAME for n in names):
        # (a report alone is what a pack that packed nothing leaves)
        raise PackError(f"{out}: folder is not empty and holds no recpack dataset; choose a new or empty "
                        "folder")
    return None


def _planned(state: str, fingerprint: str) -> str | None:
    """The fingerprint of the unfinished pack in ``state`` (``fingerprint`` itself when none was planned
    yet: nothing is written before plan.json), or None when plan.json is damaged."""
    try:
        with open(os.path.join(state, "plan.json"), "rb") as f:
            found = json.loads(f.read(1 << 20)).get("fingerprint")
    except FileNotFoundError:
        return fingerprint
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return found if isinstance(found, str) else None


def output_error(exc: OSError, out: str, what: str) -> PackError:
    """The PackError for ``exc``, raised while ``what`` in the output folder ``out``: for a full disk
    (:func:`recpack.fileio.is_disk_full`) the space left and how to resume; for a folder that cannot be written
    what to do; else the system's message. What was finished is kept, so a re-run resumes."""
    name = f"{exc.filename}: " if exc.filename else ""
    if is_disk_full(exc):
        where = out
        while not os.path.isdir(where) and os.path.dirname(where) != where:  # out itself may not exist yet
            where = os.path.dirname(where) or "."
        free = shutil.disk_usage(where).free if os.path.isdir(where) else 0
        return PackError(f"{what}: {os.strerror(exc.errno or 0)} ({free} bytes free on the device of {out}). "
                         "Finished shards are kept: free some space and re-run the same command to resume.")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return PackError(f"{what}: {name}{exc.strerror}; the output folder {out} must be writable: fix its "
                         "permissions or mount, or choose another output folder")
    return PackError(f"{what}: {name}{exc.strerror or exc}. Finished shards are kept: fix the cause and re-run "
                     "the same command to resume.")


def save_done(out: str, i: int, info: ShardInfo, skips: list[Skipped]) -> None:
    """Record shard ``i`` as finished (atomically), with the inputs it skipped."""
    doc = {"shard": info.to_json(), "skipped": [[s.key, s.path.encode("utf-8", "surrogateescape").hex(),
                                                 s.reason] for s in skips]}
    atomic_write(os.path.join(out, STATE_DIR, shard_name(i) + ".json"), json.dumps(doc).encode())


def load_done(out: str, i: int) -> tuple[ShardInfo, list[Skipped]] | None:
    """Shard ``i`` as a previous run finished it, or None when it has to be (re)written: no record of it,
    or the shard file is missing, has another size or another whole-file CRC32C than when it was finished
    (then with a warning). Costs one sequential read of the kept shard."""
    name = shard_name(i)
    try:
        with open(os.path.join(out, STATE_DIR, name + ".json"), "rb") as f:
            doc = json.loads(f.read(64 << 20))
        s = doc["shard"]
        info = ShardInfo(s["name"], int(s["records"]), int(s["bytes"]), int(s["crc32c"], 16))
        skips = [Skipped(k, bytes.fromhex(p).decode("utf-8", "surrogateescape"), r) for k, p, r in doc["skipped"]]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):  # damaged: write the shard again
        return None
    path = os.path.join(out, name)
    try:
        if info.name != name or os.path.getsize(path) != info.bytes:
            return None
        fd = open_readonly(path)
        try:
            crc = file_crc(fd, info.bytes)
        finally:
            os.close(fd)
    except (OSError, FormatError):
        return None
    if crc != info.crc32c:
        warnings.warn(f"{path}: changed since it was finished (CRC32C {crc:08x}, {info.crc32c:08x} when written); "
                      "writing it again", stacklevel=2)
        return None
    return info, skips
