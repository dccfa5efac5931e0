"""The LMDB backend: the same records, stored as values of an LMDB database instead of shard files.

Layout of ``DATASET/data.mdb`` (keys are ASCII bytes)::

    r0000000000 ...   one value per record: a msgpack map {"meta": map, "data": bin, "position": int (the
                      record number), "label": int (its table label), "crc32c": u32, "meta_crc32c": u32} —
                      CRC32C of the data, and of the meta's canonical msgpack encoding followed by the
                      identity (u64 position, i64 label, little-endian), so a value under the wrong key is
                      refused
    t0000000000 ...   that record's footer-table row (TABLE_DTYPE, 32 bytes; offset = record number)
    s0000000000 ...   skipped source images: msgpack [key, path (hex of UTF-8 bytes), reason]
    __table__         all table rows concatenated (written when the pack finishes)
    __recpack__       msgpack map {"format_version", "records", "classes", "dataset_id"} (written when the pack
                      finishes; dataset_id as in index.json)
    __progress__      msgpack map {"fingerprint", "items_done", "records", "skipped"} (only while packing)

Each chunk of records is committed in one transaction together with ``__progress__``, so an interrupted
pack resumes exactly after the last committed chunk. Values are plain msgpack, so any language can read
them (``msgpack.unpackb(value)["data"]``), and are checksummed like shard records.
"""

from __future__ import annotations

import errno
import os
import shutil
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lmdb
import msgpack
import numpy as np
from tqdm import tqdm

from ..errors import CorruptRecord, FormatError, FormatVersionError
from ..fileio import open_readonly
from ..crc import crc32c
from ..format import FORMAT_VERSION, MAX_DATA_BYTES, MAX_META_BYTES, TABLE_DTYPE, table_row
from ..index import Manifest
from ..packing.report import Skipped
from ..record import Record
from ..shard import parse_record
from ..table import Table
from .base import Damage, Decoder, Problem, RecordSource, VerifyResult

__all__ = ["LMDB_FILE", "LmdbWriter", "LmdbSource", "record_key", "encode_value", "decode_value"]

LMDB_FILE = "data.mdb"
_PROGRESS = b"__progress__"
_META = b"__recpack__"
_TABLE = b"__table__"
_IDENTITY = struct.Struct("<Qq")


def record_key(i: int) -> bytes:
    return b"r%010d" % i


def _meta_crc(meta: dict[str, Any], position: int, label: int) -> int:
    """CRC32C of the meta's msgpack encoding followed by the record's identity (u64 position, i64 label)."""
    return crc32c(_IDENTITY.pack(position, label), crc32c(msgpack.packb(meta, use_bin_type=True)))


def encode_value(meta: dict[str, Any], data: bytes, position: int, label: int) -> bytes:
    """The LMDB value of record ``position`` (see the module docstring); ``label``: its table label."""
    return bytes(msgpack.packb({"meta": meta, "data": data, "position": position, "label": label,
                                "crc32c": crc32c(data), "meta_crc32c": _meta_crc(meta, position, label)},
                               use_bin_type=True))


def decode_value(buf: bytes | memoryview, path: str, i: int, label: int) -> Record:
    """Parse and check the LMDB value of record ``i`` whose table label is ``label``: checksums, and that it
    is that record (a value moved to another key is refused). Raises CorruptRecord naming the database and
    record number."""
    if len(buf) > MAX_DATA_BYTES + MAX_META_BYTES + 64:
        raise CorruptRecord(f"value of {len(buf)} bytes exceeds the record size bound", path, i)
    try:
        obj = msgpack.unpackb(bytes(buf), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise CorruptRecord(f"value is not valid msgpack ({exc})", path, i) from None
    if not (isinstance(obj, dict) and isinstance(obj.get("meta"), dict) and isinstance(obj.get("data"), bytes)
            and isinstance(obj["meta"].get("key"), str)):
        raise CorruptRecord("value is not a recpack record map", path, i)
    meta, data = obj["meta"], obj["data"]
    if crc32c(data) != obj.get("crc32c"):
        raise CorruptRecord("record data checksum mismatch", path, i, meta["key"])
    ident = (obj.get("position"), obj.get("label"))
    if not all(isinstance(v, int) and not isinstance(v, bool) and -(1 << 63) <= v < 1 << 64 for v in ident):
        raise CorruptRecord("value has no record identity (position, label)", path, i, meta["key"])
    if _meta_crc(meta, *ident) != obj.get("meta_crc32c"):  # type: ignore[arg-type]
        raise CorruptRecord("record metadata checksum mismatch", path, i, meta["key"])
    if ident != (i, label):
        raise CorruptRecord(f"the value here is record {ident[0]} with label {ident[1]}, the table expects record "
                            f"{i} with label {label}: values were moved between keys — re-pack", path, i, meta["key"])
    label = meta.get("label")
    return Record(meta["key"], tuple(label) if isinstance(label, list) else label, meta, data)


# LMDB allows one environment per file per process: readers of the same folder share it, ref-counted.
_ENVS: dict[str, tuple[Any, int]] = {}
_ENVS_LOCK = threading.Lock()


def _forget_envs() -> None:
    """In a forked child: LMDB environments must not be used across a fork; forget the parent's."""
    global _ENVS_LOCK
    _ENVS.clear()
    _ENVS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_envs)


def _open_shared(folder: str) -> Any:
    key = os.path.realpath(folder)
    with _ENVS_LOCK:
        env, refs = _ENVS.get(key, (None, 0))
        if env is None:
            env = _open_checked(folder)
        _ENVS[key] = (env, refs + 1)
        return env


def _open_checked(folder: str) -> Any:
    """Open ``folder/data.mdb`` read-only, refusing a file that is not a whole LMDB database. LMDB maps the
    file into memory, so reading a page past the end of a truncated file would kill the process with SIGBUS:
    the file must hold every page up to the last one the database uses before anything is read."""
    path = os.path.join(folder, LMDB_FILE)
    fd = open_readonly(path)  # refuses a FIFO, folder or device in its place
    os.close(fd)
    fix = "restore it from a copy or re-pack with `recpack pack --backend lmdb`"
    try:
        env = lmdb.open(folder, readonly=True, lock=False, subdir=True, readahead=False, max_readers=512)
    except lmdb.Error as exc:
        raise FormatError(f"not a readable LMDB database ({exc}); {fix}", path) from None
    try:
        size, need = os.path.getsize(path), (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    except lmdb.Error as exc:
        env.close()
        raise FormatError(f"not a readable LMDB database ({exc}); {fix}", path) from None
    if size < need:
        env.close()
        raise FormatError(f"truncated: {size} bytes, but the database uses {need}; {fix}", path, size)
    return env


def _release_shared(folder: str) -> None:
    key = os.path.realpath(folder)
    with _ENVS_LOCK:
        env, refs = _ENVS.get(key, (None, 0))
        if env is None:
            return
        if refs <= 1:
            del _ENVS[key]
            env.close()
        else:
            _ENVS[key] = (env, refs - 1)


_ERRNO_OF = {os.strerror(code): code for code in errno.errorcode}


@contextmanager
def _system_errors(folder: str, need: int = 0) -> Iterator[None]:
    """LMDB's errors from system calls (reported as text: ``"mdb_txn_commit: Input/output error"``) as the
    OSError they stand for, so the packer treats them like any file error. A short write on a full disk comes
    back from LMDB as EIO: an EIO while less than ``need`` bytes (what the write needed, doubled) plus 1 MiB
    are free is reported as ENOSPC. Other LMDB errors (a damaged database) become a FormatError naming it."""
    try:
        yield
    except lmdb.MapFullError:
        raise
    except lmdb.Error as exc:
        code = _ERRNO_OF.get(str(exc).rpartition(": ")[2])
        if code is None:
            raise FormatError(f"the LMDB database cannot be written ({exc}); pass --overwrite to start it "
                              "again", os.path.join(folder, LMDB_FILE)) from None
        if code == errno.EIO and shutil.disk_usage(folder).free < 2 * need + (1 << 20):
            code = errno.ENOSPC
        raise OSError(code, os.strerror(code), os.path.join(folder, LMDB_FILE)) from None


class LmdbWriter:
    """Append records to ``folder/data.mdb`` in committed chunks; resumable (see module docstring). Errors of
    the file system (full disk, read-only folder) are raised as OSError."""

    def __init__(self, folder: str, fingerprint: str, map_size: int) -> None:
        self.folder = folder
        with _system_errors(folder):
            self.env = lmdb.open(folder, map_size=max(map_size, 1 << 24), subdir=True, max_dbs=0,
                                 readahead=False, meminit=False)
        self.items_done = 0
        self.records = 0
        self.n_skipped = 0
        with _system_errors(folder), self.env.begin() as txn:
            raw = txn.get(_PROGRESS)
        if raw is not None:
            prog = msgpack.unpackb(raw, raw=False)
            if isinstance(prog, dict) and prog.get("fingerprint") == fingerprint:
                self.items_done = int(prog["items_done"])
                self.records = int(prog["records"])
                self.n_skipped = int(prog["skipped"])
        self.fingerprint = fingerprint

    def __enter__(self) -> LmdbWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.env.close()

    def _write(self, puts: list[tuple[bytes, bytes]]) -> None:
        with _system_errors(self.folder, sum(len(k) + len(v) for k, v in puts)):
            while True:
                try:
                    with self.env.begin(write=True) as txn:
                        for k, v in puts:
                            txn.put(k, v)
                    return
                except lmdb.MapFullError:
                    self.env.set_mapsize(self.env.info()["map_size"] * 2)

    def add_chunk(self, results: list[tuple[bytes, tuple[Any, int, int]] | None], skipped: list[Skipped]) -> int:
        """Commit one chunk: records (None for skipped items) and the skip entries. Returns bytes added."""
        puts: list[tuple[bytes, bytes]] = []
        nbytes = 0
        records, n_skipped = self.records, self.n_skipped
        for r in results:
            if r is None:
                continue
            record, (label, w, h) = r
            rec, _ = parse_record(memoryview(record), self.folder, records)  # the packer's encoding
            row = np.array([table_row(records, len(record), label, w, h)], dtype=TABLE_DTYPE)
            puts.append((record_key(records), encode_value(rec.meta, rec.data, records, int(row["label"][0]))))
            puts.append((b"t%010d" % records, row.tobytes()))
            records += 1
            nbytes += len(record)
        for s in skipped:
            puts.append((b"s%010d" % n_skipped, msgpack.packb(
                [s.key, s.path.encode("utf-8", "surrogateescape").hex(), s.reason])))
            n_skipped += 1
        items_done = self.items_done + len(results)
        puts.append((_PROGRESS, msgpack.packb({"fingerprint": self.fingerprint, "items_done": items_done,
                                                "records": records, "skipped": n_skipped})))
        self._write(puts)
        self.items_done, self.records, self.n_skipped = items_done, records, n_skipped
        return nbytes

    def skipped(self) -> list[Skipped]:
        out = []
        with self.env.begin() as txn:
            for i in range(self.n_skipped):
                k, p, r = msgpack.unpackb(txn.get(b"s%010d" % i), raw=False)
                out.append(Skipped(k, bytes.fromhex(p).decode("utf-8", "surrogateescape"), r))
        return out

    def finish(self, classes: tuple[str, ...] | list[str]) -> int:
        """Write the table and metadata keys, drop the progress key, sync. Returns the database size."""
        with self.env.begin() as txn:
            rows = [txn.get(b"t%010d" % i) for i in range(self.records)]
        if any(r is None for r in rows):
            raise FormatError("table rows missing from the database; re-run with --overwrite", self.folder)
        table = b"".join(r for r in rows if r is not None)
        with _system_errors(self.folder, 2 * len(table)):
            with self.env.begin(write=True) as txn:
                txn.put(_TABLE, table)
                txn.put(_META, msgpack.packb({"format_version": FORMAT_VERSION, "records": self.records,
                                              "classes": list(classes), "dataset_id": self.fingerprint}))
                txn.delete(_PROGRESS)
            self.env.sync(True)
        return os.path.getsize(os.path.join(self.folder, LMDB_FILE))


class LmdbSource(RecordSource):
    """A finished LMDB dataset (``recpack pack --backend lmdb``), read through LMDB's memory map: the table
    from ``__table__``, each record from its value, checked against its CRCs."""

    kind = "lmdb"
    manifest_backend = "lmdb"
    spans = False

    def __init__(self, folder: str, manifest: Manifest) -> None:
        path = os.path.join(folder, LMDB_FILE)
        if not os.path.isfile(path):
            raise FormatError(f"missing {LMDB_FILE}; the dataset folder is incomplete", path)
        self.env = _open_shared(folder)
        self._folder = folder
        try:
            try:
                with self.env.begin(buffers=False) as txn:
                    meta_raw = txn.get(_META)
                    table_raw = txn.get(_TABLE)
            except lmdb.Error as exc:
                raise FormatError(f"not a readable LMDB database ({exc}); re-pack", path) from None
            if meta_raw is None or table_raw is None:
                raise FormatError("not a finished recpack LMDB database (no __recpack__ key); re-run "
                                  "`recpack pack --backend lmdb`", path)
            try:
                meta = msgpack.unpackb(meta_raw, raw=False)
            except Exception as exc:  # msgpack raises several unrelated types on garbage
                raise FormatError(f"the __recpack__ key is not valid msgpack ({exc}); re-pack", path) from None
            if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
                raise FormatVersionError(f"format v{meta.get('format_version') if isinstance(meta, dict) else '?'}"
                                         f", this recpack reads v{FORMAT_VERSION}", path)
            if meta.get("dataset_id") != manifest.dataset_id:
                raise FormatError(f"this database belongs to another dataset (id {meta.get('dataset_id')!r}, "
                                  f"index.json says {manifest.dataset_id}): it was copied in from another pack — "
                                  "copy the right one back or re-pack", path)
            expected = manifest.records
            if meta.get("records") != expected or len(table_raw) != expected * TABLE_DTYPE.itemsize:
                raise FormatError(f"database holds {meta.get('records')} records and a {len(table_raw)}-byte "
                                  f"table; the manifest says {expected}", path)
            table = Table.from_rows([np.frombuffer(table_raw, dtype=TABLE_DTYPE)])
        except BaseException:
            _release_shared(folder)
            self.env = None
            raise
        super().__init__(folder, table, list(manifest.classes), [])
        self.names = [LMDB_FILE]
        self.manifest = manifest
        self.db_path = path

    def record(self, i: int) -> Record:
        if self.env is None:  # closed: reopen on demand, like the shard backend's files
            self.env = _open_shared(self._folder)
        try:
            with self.env.begin(buffers=True) as txn:
                buf = txn.get(record_key(i))
                if buf is None:
                    raise CorruptRecord(f"record {i} is missing from the database", self.db_path, i)
                return decode_value(buf, self.db_path, i, int(self.table.label[i]))
        except lmdb.Error as exc:
            raise CorruptRecord(f"the database cannot be read here ({exc})", self.db_path, i) from None

    def where(self, i: int) -> tuple[str, int]:
        return LMDB_FILE, i

    @property
    def dataset_id(self) -> str:
        return self.manifest.dataset_id

    def data_files(self) -> list[str]:
        return [self.db_path]

    def scan(self) -> Iterator[tuple[int, Record] | tuple[None, Damage]]:
        for i in range(len(self)):
            try:
                yield i, self.record(i)
            except CorruptRecord as exc:
                yield None, Damage(exc)

    def verify(self, decode: Decoder | None = None, progress: bool = False) -> VerifyResult:
        result = VerifyResult(self._folder, expected=len(self), bytes=os.path.getsize(self.db_path),
                              decoded=decode is not None)
        for i in tqdm(range(len(self)), unit="rec", desc="verify", disable=None if progress else True,
                      dynamic_ncols=True):
            try:
                rec = self.record(i)
            except CorruptRecord as exc:
                result.problems.append(Problem(LMDB_FILE, i, exc.key, exc.message))
                continue
            if decode is not None:
                try:
                    decode(rec.data)
                except Exception as exc:  # any decoder failure is a finding, not a crash
                    result.problems.append(Problem(LMDB_FILE, i, rec.key, f"image does not decode: {exc}"))
                    continue
            result.records += 1
        return result

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        size = os.path.getsize(self.db_path)
        return {"backend": self.kind, "format_version": m.format_version, "created_by": m.created_by,
                "bytes": size, "pack": m.pack, "files": [{"name": LMDB_FILE, "records": m.records, "bytes": size}]}

    def after_fork(self) -> None:
        self.env = None  # the parent's environment: reopened here on demand (_ENVS was reset at the fork)

    def close(self) -> None:
        if self.env is not None:
            self.env = None
            _release_shared(self._folder)
