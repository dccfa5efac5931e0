"""An MXNet RecordIO file (``.rec``, with its ``.idx`` when there is one) as a record source, read in place:
``recpack.open("train.rec")``, ``recpack.Loader("train.rec")``, ``recpack verify/inspect/convert train.rec``.

Random access goes through the ``.idx`` (one pread per record) when there is one; the full table (labels and
image sizes live inside the records) is built by one sequential scan when something needs it (the Loader,
``inspect``). The byte layout is :mod:`recpack.backends.recordio`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
from tqdm import tqdm

from ..errors import CorruptRecord, FormatError
from ..fileio import pread
from ..record import Record
from ..table import Table
from .base import Damage, Decoder, Problem, RecordSource, VerifyResult
from .recordio import (
    IR_HEADER,
    MAX_RECORD_BYTES,
    RecIndex,
    build_table,
    idx_path,
    is_rec,
    label_value,
    parse_payload,
    read_idx,
    scan,
    unframe,
)

__all__ = ["RecFile", "RecSource", "verify_rec"]


class RecFile:
    """Random and sequential access to one ``.rec``: ``len``, ``read(i)`` (one pread through the ``.idx``
    when there is one, else through a table built by scanning once), ``iter_sequential()``.

    Records come back as :class:`recpack.Record`: key (the .idx key, else the header id, as text), label
    (int where integral; a tuple for multi-label records), meta ({"key", "id", "id2", "flag", "label"}),
    data (the image bytes)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.size = os.path.getsize(path)
        idx = idx_path(path)
        self._index: RecIndex | None = None
        if idx is not None:
            self.keys, self.offsets = read_idx(idx, self.size)
            self.ends = np.append(self.offsets[1:], np.uint64(self.size)) if len(self.offsets) else self.offsets
        else:
            self._load_index()

    def _load_index(self) -> RecIndex:
        if self._index is None:
            self._index = build_table(self.path, size_images=True)
            t = self._index.table
            self.keys = self._index.keys
            self.offsets = t["offset"].astype(np.uint64)
            self.ends = self.offsets + t["length"].astype(np.uint64)
        return self._index

    def index(self) -> RecIndex:
        """The full table (scans the file once, then kept)."""
        return self._load_index()

    def __len__(self) -> int:
        return len(self.offsets)

    def _record(self, payload: memoryview | bytes, key: int, offset: int) -> Record:
        header, image = parse_payload(payload, self.path, offset)
        label = label_value(header.label)
        meta: dict[str, Any] = {"key": str(key), "id": header.id, "id2": header.id2, "flag": header.flag,
                                "label": list(label) if isinstance(label, tuple) else label}
        return Record(str(key), label, meta, bytes(image))

    def read(self, i: int) -> Record:
        """Record ``i`` in file order (one pread of the span up to the next record)."""
        offset, end = int(self.offsets[i]), int(self.ends[i])
        if end - offset > MAX_RECORD_BYTES + 64:
            raise CorruptRecord(f"record span of {end - offset} bytes exceeds the {MAX_RECORD_BYTES}-byte bound",
                                self.path, offset)
        with open(self.path, "rb", buffering=0) as f:
            buf = pread(f.fileno(), end - offset, offset)
        payload, _ = unframe(buf, self.path, offset)
        return self._record(payload, int(self.keys[i]), offset)

    def iter_sequential(self) -> Iterator[tuple[int, Record | CorruptRecord]]:
        """Every record in file order by a sequential scan: (offset, record or error)."""
        by_offset = dict(zip(self.offsets.tolist(), self.keys.tolist()))
        for offset, _, item in scan(self.path):
            if isinstance(item, CorruptRecord):
                yield offset, item
                continue
            try:
                header_key = by_offset.get(offset)
                if header_key is None:
                    header_key = IR_HEADER.unpack_from(item)[2] if len(item) >= IR_HEADER.size else offset
                rec = self._record(item, header_key, offset)
            except CorruptRecord as exc:
                yield offset, exc
            else:
                yield offset, rec
            del item


class RecSource(RecordSource):
    """The :class:`~recpack.backends.base.RecordSource` over one ``.rec`` (see the module docstring).
    Records are spans of the file; ``payload`` unframes one and checks its image header."""

    kind = "mxrec"
    spans = True

    def __init__(self, path: str) -> None:
        self.rec = RecFile(path)
        self._table: Table | None = None
        super().__init__(path, None, [], [path])

    @classmethod
    def claims(cls, path: str) -> bool:
        return is_rec(path)

    @property  # type: ignore[override]
    def table(self) -> Table:
        """The table of the intact records, from one sequential scan (kept); see :meth:`problems`."""
        if self._table is None:
            self._table = Table.from_rows([self.rec.index().table])
        return self._table

    @table.setter
    def table(self, value: Table | None) -> None:
        self._table = value

    def __len__(self) -> int:
        return len(self.rec)

    def problems(self) -> list[FormatError]:
        """Damaged regions the scan skipped, and an .idx that does not match the .rec (scans once)."""
        return list(self.rec.index().problems)

    def record(self, i: int) -> Record:
        return self.rec.read(i)

    def payload(self, i: int, view: memoryview) -> memoryview:
        offset = int(self.table.offset[i])
        payload, _ = unframe(view, self.path, offset)
        return memoryview(parse_payload(payload, self.path, offset)[1])

    def scan(self) -> Iterator[tuple[int, Record] | tuple[None, Damage]]:
        """Every record in file order. With an .idx, only what it lists is delivered (so ``len`` and
        iteration agree): a record it does not list is reported (damage of 0 records: it is not part of the
        dataset), and entries it lists that the scan does not find are counted at the end."""
        index = {off: i for i, off in enumerate(self.rec.offsets.tolist())}
        delivered = damaged = 0
        for offset, item in self.rec.iter_sequential():
            if isinstance(item, CorruptRecord):
                damaged += 1
                yield None, Damage(item)
                continue
            i = index.get(offset)
            if i is None:
                yield None, Damage(CorruptRecord("record is not in the .idx, so the .idx does not match the .rec; "
                                                 "regenerate the .idx or delete it (the .rec is then scanned)",
                                                 self.path, offset, item.key), 0)
            else:
                delivered += 1
                yield i, item
        missing = len(self) - delivered - damaged
        if missing > 0:
            yield None, Damage(CorruptRecord(f"{missing} records the .idx lists were not found in the .rec; "
                                             "regenerate the .idx or delete it", self.path, 0), missing)

    def verify(self, decode: Decoder | None = None, progress: bool = False) -> VerifyResult:
        return verify_rec(self.path, decode, progress)

    def summary(self) -> dict[str, Any]:
        size = os.path.getsize(self.path)
        return {"backend": self.kind, "format_version": None, "created_by": "MXNet RecordIO (read directly)",
                "bytes": size, "pack": {"source_kind": "mxnet-recordio", "index": idx_path(self.path)},
                "files": [{"name": os.path.basename(self.path), "records": len(self), "bytes": size}]}


def verify_rec(path: str, decode: Decoder | None = None, progress: bool = False) -> VerifyResult:
    """``recpack verify train.rec``: scan every frame and image header (and decode each image with
    ``decode``), cross-check the ``.idx``; returns a :class:`~recpack.backends.base.VerifyResult`."""
    name = os.path.basename(path)
    size = os.path.getsize(path)
    result = VerifyResult(path, bytes=size, decoded=decode is not None)
    idx = idx_path(path)
    idx_offs: set[int] | None = None
    if idx is not None:
        try:
            keys, offs = read_idx(idx, size)
            idx_offs = set(offs.tolist())
            result.expected = len(offs)
        except FormatError as exc:
            result.problems.append(Problem(os.path.basename(idx), 0, None, exc.message))
    found = 0
    with tqdm(total=size, unit="B", unit_scale=True, desc="verify", disable=None if progress else True,
              dynamic_ncols=True) as bar:
        for offset, span, item in scan(path):
            bar.update(span)
            if isinstance(item, CorruptRecord):
                result.problems.append(Problem(name, offset, None, item.message))
                continue
            try:
                header, image = parse_payload(item, path, offset)
            except CorruptRecord as exc:
                result.problems.append(Problem(name, offset, None, exc.message))
                continue
            found += 1
            if idx_offs is not None and offset not in idx_offs:
                result.problems.append(Problem(name, offset, str(header.id), "record is not in the .idx"))
                continue
            if decode is not None:
                try:
                    decode(image)
                except Exception as exc:  # any decoder failure is a finding, not a crash
                    result.problems.append(Problem(name, offset, str(header.id), f"image does not decode: {exc}"))
                    continue
            result.records += 1
    if idx_offs is None:
        result.expected = found
    elif len(idx_offs) != found:
        result.problems.append(Problem(os.path.basename(idx or ""), 0, None,
                                       f"the .idx lists {len(idx_offs)} records, the .rec holds {found}"))
    return result
