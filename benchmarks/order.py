"""Cost of computing one epoch's sample order (recpack.order), per million records, and its peak memory.

    python benchmarks/order.py [--sizes 1000000 14000000] [--per-shard 2800] [--repeat 3] [--json out.json]

Grid: every order in ``recpack.order.ORDERS`` x N in ``--sizes``, on a synthetic layout of ``--per-shard``
records per shard (14M records -> 5,000 shards). Each cell: one warm-up, then the median wall time of
``--repeat`` runs (pure CPU, no I/O, so there is no cache state); then one more run under tracemalloc for the
peak bytes allocated (numpy reports its buffers to tracemalloc), given per record including the result
(8 bytes per record). For shard_shuffle it also reports the mean number of coalesced reads per batch of 256
with the default options. Prints a table; ``--json`` also writes the rows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, versions  # noqa: E402

from recpack.order import ORDERS, Layout, rank_share  # noqa: E402


def layout_for(n: int, per_shard: int) -> Layout:
    shards = max(1, -(-n // per_shard))
    counts = np.full(shards, n // shards, dtype=np.int64)
    counts[: n % shards] += 1
    return Layout.from_counts(counts)


def reads_per_batch(order: np.ndarray, layout: Layout, batch: int = 256, batches: int = 2000) -> float:
    """Mean number of reads per batch: stretches of consecutive ids of one shard in the batch's sorted ids."""
    nb = min(batches, order.size // batch)
    counts = []
    for b in range(nb):
        ids = np.unique(order[b * batch:(b + 1) * batch])
        shard = np.searchsorted(layout.starts, ids, side="right") - 1
        counts.append(1 + int(np.count_nonzero((np.diff(ids) != 1) | (np.diff(shard) != 0))))
    return float(np.mean(counts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 14_000_000])
    ap.add_argument("--per-shard", type=int, default=2800)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    print(f"# {machine()}; {versions('numpy')}")
    print(f"{'order':>14} {'N':>11} {'shards':>7} {'ms/epoch':>9} {'ms/M rec':>9} {'peak B/rec':>10} "
          f"{'rank_share ms':>13} {'reads/256':>9}")
    rows = []
    for n in args.sizes:
        layout = layout_for(n, args.per_shard)
        for name, fn in ORDERS.items():
            fn(layout, 0, 0)  # warm-up
            times = []
            for e in range(args.repeat):
                t0 = time.perf_counter()
                order = fn(layout, 0, e + 1)
                times.append(time.perf_counter() - t0)
            del order
            tracemalloc.start()
            order = fn(layout, 0, 99)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            t0 = time.perf_counter()
            rank_share(order, 3, 8, 99)
            share_ms = (time.perf_counter() - t0) * 1e3
            rpb = reads_per_batch(order, layout)
            med = statistics.median(times)
            row = {"order": name, "n": n, "shards": layout.shards, "s_median": med,
                   "ms_per_million": med * 1e3 / (n / 1e6), "peak_bytes": peak, "peak_bytes_per_record": peak / n,
                   "rank_share_ms_world8": share_ms, "reads_per_256_batch": rpb}
            rows.append(row)
            print(f"{name:>14} {n:>11,} {layout.shards:>7,} {med * 1e3:>9.1f} {row['ms_per_million']:>9.1f} "
                  f"{row['peak_bytes_per_record']:>10.1f} {share_ms:>13.1f} {rpb:>9.1f}")
            del order
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "versions": versions("numpy"), "rows": rows},
                                        indent=1) + "\n")


if __name__ == "__main__":
    main()
