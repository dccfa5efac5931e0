"""Memory and time at scale: open a 14-million-record dataset and compute its epoch orders.

    python benchmarks/scale.py [--records 14000000] [--per-shard 2800] [--payload 32] [--dir /tmp]
                               [--keep] [--no-write]

1. **Build** (fast, no source images): ``write_synthetic`` (test tooling in tests/campaigns/synthetic.py,
   shared with tests/test_scale.py and tests/test_ranks.py) writes a valid recpack dataset of tiny records
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
from campaigns.synthetic import write_synthetic  # noqa: E402
from common import machine, today, versions, write_section  # noqa: E402


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
    layout = Layout(obj.table.starts)
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
