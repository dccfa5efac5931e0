"""Memory and time at scale: open a 14-million-record dataset and compute its epoch orders.

    python benchmarks/scale.py [--records 14000000] [--per-shard 2800] [--payload 32] [--dir /tmp]
                               [--keep] [--no-write]

1. **Build** (fast, no source images): ``write_synthetic`` writes a valid recpack dataset of tiny records
   (``--payload`` bytes of data each, a real msgpack metadata map with a unique key) straight from numpy:
   every record has the same length, so a shard is one ``(records, length)`` uint8 array; the per-record
   CRC32Cs are computed from per-byte-position tables (CRC is affine over GF(2), so for equal-length messages
   ``crc(base ^ e1 ^ e2) = crc(base) ^ (crc(base ^ e1) ^ crc(base)) ^ (crc(base ^ e2) ^ crc(base))``). The
   bytes are exactly what ``recpack.format.encode_record`` would write (the unit test checks that and runs
   ``recpack verify`` on a 10k-record instance).
2. **Measure**, each in a fresh subprocess (so RSS starts clean and nothing is cached in Python): the wall
   time and resident-memory delta of ``recpack.open(path)`` and of ``recpack.Loader(path, decode=False, ...)``
   (which reads every shard's footer table), as bytes per record: the steady delta after construction and
   the peak during it; then the time of one epoch's order for each order in ``recpack.order.ORDERS`` (median
   of 3 after a warm-up), per million records. Page cache: warm (the dataset was just written).
3. Writes a section of docs/benchmarks.md, prints the rows, and deletes the dataset unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, today, versions, write_section  # noqa: E402

from recpack.crc import crc32c  # noqa: E402
from recpack.format import (  # noqa: E402
    ALIGN,
    DATA_OFFSET,
    FORMAT_VERSION,
    RECORD_HEADER_STRUCT,
    RECORD_MAGIC,
    TABLE_DTYPE,
    ShardHeader,
    align_up,
    pack_header,
)
from recpack.index import Manifest, ShardEntry, write_manifest  # noqa: E402
from recpack.pack import REPORT_NAME, shard_name  # noqa: E402

_DIGITS = 8  # keys img/00000000.jpg .. img/99999999.jpg
_LABELS = 100  # labels 0..99: one msgpack byte (positive fixint)
_W, _H = 64, 48


def _meta(i: int) -> dict[str, object]:
    return {"key": f"img/{i:0{_DIGITS}d}.jpg", "label": i % _LABELS, "size": [_W, _H], "format": "JPEG",
            "mode": "RGB"}


def _payload(n: int) -> bytes:
    return bytes((7 * k + 1) % 256 for k in range(n))


def _deltas(base: bytes, positions: list[int], values: int) -> np.ndarray:
    """(len(positions), values) uint32: crc(base with byte p set to v) ^ crc(base)."""
    c0 = crc32c(base)
    out = np.zeros((len(positions), values), np.uint32)
    buf = bytearray(base)
    for k, p in enumerate(positions):
        for v in range(values):
            buf[p] = v
            out[k, v] = crc32c(buf) ^ c0
        buf[p] = base[p]
    return out


class _Recipe:
    """Everything needed to produce record bytes for any ids with numpy, computed once."""

    def __init__(self, payload: int) -> None:
        meta0 = msgpack.packb(_meta(0), use_bin_type=True)
        data = _payload(payload)
        body = meta0 + data  # meta || data, the span payload_crc covers
        key0 = f"img/{0:0{_DIGITS}d}.jpg".encode()
        kpos = meta0.index(key0) + 4  # first digit
        lpos = meta0.index(b"\xa5label") + 6  # the label's single byte
        self.digit_pos = [kpos + k for k in range(_DIGITS)]
        self.label_pos = lpos
        self.body = np.frombuffer(body, np.uint8)
        self.body_crc = crc32c(body)
        self.d_digit = _deltas(body, self.digit_pos, 256)  # indexed by the byte value
        self.d_label = _deltas(body, [lpos], 256)[0]
        head0 = RECORD_HEADER_STRUCT.pack(RECORD_MAGIC, len(meta0), len(data), 0, 0)[:20]
        self.head = np.frombuffer(head0, np.uint8)
        self.head_crc = crc32c(head0)
        self.d_head = _deltas(head0, [16, 17, 18, 19], 256)
        self.length = 24 + len(body)

    def records(self, ids: np.ndarray) -> np.ndarray:
        """(len(ids), length) uint8: the encoded records of global ids ``ids``."""
        n = len(ids)
        body = np.tile(self.body, (n, 1))
        pcrc = np.full(n, self.body_crc, np.uint32)
        for k, p in enumerate(self.digit_pos):
            digit = ((ids // 10 ** (_DIGITS - 1 - k)) % 10 + ord("0")).astype(np.uint8)
            body[:, p] = digit
            pcrc ^= self.d_digit[k][digit]
        label = (ids % _LABELS).astype(np.uint8)
        body[:, self.label_pos] = label
        pcrc ^= self.d_label[label]
        hcrc = np.full(n, self.head_crc, np.uint32)
        for b in range(4):
            hcrc ^= self.d_head[b][(pcrc >> np.uint32(8 * b)) & np.uint32(255)]
        out = np.empty((n, self.length), np.uint8)
        out[:, :16] = self.head[:16]
        out[:, 16:20] = pcrc.astype("<u4").view(np.uint8).reshape(n, 4)
        out[:, 20:24] = hcrc.astype("<u4").view(np.uint8).reshape(n, 4)
        out[:, 24:] = body
        return out


def write_synthetic(folder: str | os.PathLike[str], records: int, per_shard: int = 2800, payload: int = 32) -> int:
    """Write a valid recpack dataset of ``records`` tiny records into the new folder ``folder``; returns
    the bytes written. Record ``i`` has key ``img/{i:08d}.jpg``, label ``i % 100``, size 64x48 and
    ``payload`` bytes of (non-image) data, exactly as ``encode_record`` would store it."""
    if records >= 10 ** _DIGITS:
        raise ValueError(f"at most {10 ** _DIGITS - 1} records")
    out = os.fspath(folder)
    os.makedirs(out, exist_ok=False)
    recipe = _Recipe(payload)
    entries: list[ShardEntry] = []
    total = 0
    for s, lo in enumerate(range(0, records, per_shard)):
        ids = np.arange(lo, min(records, lo + per_shard), dtype=np.int64)
        data = recipe.records(ids).tobytes()
        table = np.zeros(len(ids), TABLE_DTYPE)
        table["offset"] = DATA_OFFSET + np.arange(len(ids), dtype=np.uint64) * recipe.length
        table["label"] = ids % _LABELS
        table["length"] = recipe.length
        table["width"], table["height"] = _W, _H
        tbytes = table.tobytes()
        table_offset = align_up(DATA_OFFSET + len(data))
        end = table_offset + len(tbytes)
        head = pack_header(ShardHeader(FORMAT_VERSION, 0, len(ids), DATA_OFFSET, len(data), table_offset,
                                       len(tbytes), crc32c(tbytes)))
        pieces = (head, data, bytes(table_offset - DATA_OFFSET - len(data)), tbytes, bytes(align_up(end) - end))
        crc = 0
        with open(os.path.join(out, shard_name(s)), "wb") as f:
            for piece in pieces:
                f.write(piece)
                crc = crc32c(piece, crc)
        size = align_up(end)
        assert size % ALIGN == 0
        entries.append(ShardEntry(shard_name(s), len(ids), size, crc))
        total += size
    with open(os.path.join(out, REPORT_NAME), "w") as f:
        f.write("key\treason\tpath\n")
    write_manifest(out, Manifest(records=records, shards=entries, classes=[f"c{c:02d}" for c in range(_LABELS)],
                                 pack={"seed": 0, "source_kind": "synthetic", "payload": payload,
                                       "per_shard": per_shard}))
    return total


# ------------------------------------------------------------------------------------------- measuring

_MEASURE = r"""
import json, os, resource, sys, time
import numpy as np, torch
import recpack
from recpack.order import ORDERS, Layout

def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

path, what = sys.argv[1], sys.argv[2]
before = rss()
t0 = time.perf_counter()
if what == "open":
    obj = recpack.open(path)
    n = len(obj)
elif what == "loader":
    obj = recpack.Loader(path, batch_size=256, order="random", run=64, decode=False, transform=None,
                         device="cpu")
    n = obj.table.n
seconds = time.perf_counter() - t0
after = rss()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
out = {"what": what, "records": n, "seconds": seconds, "rss_delta": after - before,
       "peak_delta": max(peak - before, after - before)}
if what == "loader":
    layout = obj.layout
    for name, fn in ORDERS.items():
        fn(layout, 0, 0, **obj.order_kw)
        times = []
        for epoch in (1, 2, 3):
            t = time.perf_counter()
            fn(layout, 0, epoch, **obj.order_kw)
            times.append(time.perf_counter() - t)
        out["order_" + name] = sorted(times)[1]
print(json.dumps(out))
"""


def measure(path: str, what: str) -> dict[str, float]:
    """Run one measurement in a fresh interpreter (see _MEASURE); returns its JSON row."""
    res = subprocess.run([sys.executable, "-c", _MEASURE, path, what], check=True, capture_output=True,
                         text=True)
    row: dict[str, float] = json.loads(res.stdout.strip().splitlines()[-1])
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=14_000_000)
    ap.add_argument("--per-shard", type=int, default=2800)
    ap.add_argument("--payload", type=int, default=32)
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where to build the dataset (default /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the dataset (default: delete it at the end)")
    ap.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = ap.parse_args(argv)

    est = args.records * (24 + 80 + args.payload + 32) * 1.1
    free = shutil.disk_usage(args.dir).free
    if free < 2 * est:
        print(f"need ~{est / 1e9:.1f} GB in {args.dir}, only {free / 1e9:.1f} GB free", file=sys.stderr)
        return 1
    path = os.path.join(args.dir, f"recpack-scale-{args.records}")
    shutil.rmtree(path, ignore_errors=True)
    try:
        t0 = time.perf_counter()
        nbytes = write_synthetic(path, args.records, args.per_shard, args.payload)
        build_s = time.perf_counter() - t0
        shards = -(-args.records // args.per_shard)
        print(f"built {args.records:,} records in {shards:,} shards, {nbytes / 1e9:.2f} GB, in {build_s:.1f} s")
        rows = [measure(path, "open"), measure(path, "loader")]
    finally:
        if not args.keep:
            shutil.rmtree(path, ignore_errors=True)
    n = args.records
    lines = [f"{today()}, {machine()}; {versions('numpy', 'torch')}.",
             f"Synthetic dataset: {n:,} records of {args.payload} data bytes ({nbytes / n:.0f} bytes per record "
             f"on disk with metadata, header, table and padding) in {shards:,} shards of {args.per_shard:,}, "
             f"{nbytes / 1e9:.2f} GB, built in {build_s:.1f} s by `benchmarks/scale.py`; page cache warm. Each "
             "row runs in a fresh interpreter (numpy and torch already imported); RSS delta is resident memory "
             "after minus before, peak is the highest resident memory during the call minus before.",
             "", "| step | time (s) | RSS delta (bytes/record) | peak delta (bytes/record) |",
             "| --- | ---: | ---: | ---: |"]
    labels = {"open": "`recpack.open(path)`",
              "loader": "`recpack.Loader(path, decode=False, order='random')` (reads every footer table)"}
    for r in rows:
        lines.append(f"| {labels[str(r['what'])]} | {r['seconds']:.2f} | {r['rss_delta'] / n:.1f} | "
                     f"{r['peak_delta'] / n:.1f} |")
    lines += ["", "One epoch's order for all records (median of 3 epochs after a warm-up; default options):", "",
              "| order | time (s) | per million records (ms) |", "| --- | ---: | ---: |"]
    loader = rows[1]
    for name in ("sequential", "shard_shuffle", "random"):
        t = float(loader[f"order_{name}"])
        lines.append(f"| {name} | {t:.3f} | {t / (n / 1e6) * 1e3:.1f} |")
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section(f"Scale: opening {n / 1e6:g}M records and computing epoch orders", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
