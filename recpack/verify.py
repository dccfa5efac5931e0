"""``recpack verify``: read a whole dataset once, sequentially, and check every checksum.

Checks, per shard: magic, version and header CRC; the footer table's CRC and bounds; every record's header
CRC, payload CRC and agreement with the table; the whole-file CRC32C and size against the manifest; and with
``decode=True`` that every image decodes. Every problem is reported with shard, offset and key.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from .errors import CorruptRecord, FormatError
from .index import read_manifest
from .shard import Problem, Record, check_shard

__all__ = ["VerifyResult", "verify"]


@dataclass
class VerifyResult:
    """Outcome of :func:`verify`. ``ok`` is True when nothing is wrong."""

    path: str
    records: int = 0  # records that passed
    expected: int = 0  # records the manifest lists
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.records == self.expected

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "ok": self.ok, "records": self.records, "expected": self.expected,
                "bytes": self.bytes, "problems": [p.to_json() for p in self.problems]}


def _decoder() -> Callable[[Record], None]:
    from .decode import decode_rgb

    def run(rec: Record) -> None:
        decode_rgb(rec.data)

    return run


def verify(path: str | os.PathLike[str], decode: bool = False, progress: bool = False) -> VerifyResult:
    """Check the dataset at ``path``; never raises for damaged data (it is reported in the result)."""
    folder = os.fspath(path)
    from .backends.mxrec import is_rec, verify_rec

    if is_rec(folder):  # an MXNet RecordIO file, checked frame by frame
        return verify_rec(folder, decode, progress)
    manifest = read_manifest(folder)
    result = VerifyResult(folder, expected=manifest.records)
    dec = _decoder() if decode else None
    if manifest.backend == "lmdb":
        _verify_lmdb(folder, manifest.records, dec, result, progress)
        return result
    total = manifest.total_bytes
    with tqdm(total=total, unit="B", unit_scale=True, desc="verify", disable=not progress,
              dynamic_ncols=True) as bar:
        for entry in manifest.shards:
            spath = os.path.join(folder, entry.name)
            if not os.path.isfile(spath):
                result.problems.append(Problem(entry.name, 0, None, "shard file is missing"))
                bar.update(entry.bytes)
                continue
            check = check_shard(spath, dec, progress=bar.update)
            result.records += check.records
            result.bytes += check.bytes
            result.problems += check.problems
            if check.bytes != entry.bytes:
                result.problems.append(Problem(entry.name, min(check.bytes, entry.bytes), None,
                                               f"shard is {check.bytes} bytes, the manifest says {entry.bytes} "
                                               "(truncated or appended to)"))
            elif check.crc32c != entry.crc32c and not check.problems:
                result.problems.append(Problem(entry.name, 0, None,
                                               f"whole-file CRC32C {check.crc32c:08x} differs from the "
                                               f"manifest's {entry.crc32c:08x}"))
            if check.expected is None and check.records < entry.records:  # table unreadable: recovered by scan
                result.problems.append(Problem(entry.name, 0, None,
                                               f"only {check.records} of the {entry.records} records the "
                                               "manifest lists could be recovered; the rest are damaged or "
                                               "missing — restore the shard from a copy or re-pack"))
            if check.expected is not None and check.expected != entry.records:
                result.problems.append(Problem(entry.name, 0, None, f"shard holds {check.expected} records, "
                                                                    f"the manifest says {entry.records}"))
    return result


def _verify_lmdb(folder: str, records: int, dec: Callable[[Record], None] | None, result: VerifyResult,
                 progress: bool) -> None:
    from .backends.lmdb import LMDB_FILE, LmdbReader

    try:
        reader = LmdbReader(folder, records)
    except FormatError as exc:
        result.problems.append(Problem(LMDB_FILE, 0, None, str(exc)))
        return
    try:
        result.bytes = os.path.getsize(reader.path)
        for i in tqdm(range(records), unit="rec", desc="verify", disable=not progress, dynamic_ncols=True):
            try:
                rec = reader.read(i)
            except CorruptRecord as exc:
                result.problems.append(Problem(LMDB_FILE, i, exc.key, str(exc)))
                continue
            if dec is not None:
                try:
                    dec(rec)
                except Exception as exc:
                    result.problems.append(Problem(LMDB_FILE, i, rec.key, f"image does not decode: {exc}"))
                    continue
            result.records += 1
    finally:
        reader.close()
