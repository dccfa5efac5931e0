"""Pure statistics for the bench commands: latency percentiles, rates, and the measured device class.

Nothing here touches a file; everything is unit-tested on made-up numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ..probe import HDD_MAX_IOPS, HDD_P50_MS

__all__ = [
    "percentiles_us",
    "summarize",
    "classify",
    "CLASS_LABELS",
    "RAM_P50_US",
    "NVME_P50_US",
    "NVME_IOPS",
    "HDD_P50_US",
    "HDD_MAX_IOPS",
]

#: A cold 4 KiB read at queue depth 1 faster than this (median) came from memory: the page cache (eviction did
#: not work, e.g. tmpfs), a RAM disk, or a host cache behind a virtual disk. A real NVMe read takes >= ~50 µs.
RAM_P50_US = 20.0
#: Cold 4 KiB QD1 time per read (1 / rate) below this: NVMe-like (SATA SSDs take ~80-200 µs through AHCI).
NVME_P50_US = 80.0
#: Random 4 KiB reads/s with many threads above this: NVMe-like (SATA tops out near 100k at QD32, usually far
#: below; the emulated SATA SSD at 10,000).
NVME_IOPS = 50_000.0
#: Median cold 4 KiB QD1 read above this (or fewer than :data:`HDD_MAX_IOPS` reads/s at QD1): HDD-like. The
#: same thresholds as :func:`recpack.probe.is_hdd_like`, which picks the HDD-friendly read order.
HDD_P50_US = HDD_P50_MS * 1000.0

#: Measured classes, by the key :func:`classify` returns.
CLASS_LABELS = {
    "ram": "RAM/page cache",
    "nvme": "NVMe-like",
    "sata-ssd": "SATA-SSD-like",
    "hdd": "HDD-like",
}


def percentiles_us(lat_ns: npt.ArrayLike, qs: Sequence[float] = (50, 99)) -> list[float]:
    """Percentiles ``qs`` (0-100) of latencies given in nanoseconds, in microseconds; NaN for no samples.
    Linear interpolation between order statistics (numpy's default), like most tools except fio, which
    reports histogram bin edges (so fio's p99 is up to ~3% higher)."""
    a = np.asarray(lat_ns, dtype=np.float64).reshape(-1)
    if a.size == 0:
        return [float("nan")] * len(qs)
    return [float(v) / 1e3 for v in np.percentile(a, list(qs))]


def summarize(lat_ns: npt.ArrayLike, nbytes: int, seconds: float) -> dict[str, Any]:
    """One test's numbers from its per-read latencies (ns), bytes read and wall time (s).

    Returns ``reads``, ``seconds``, ``bytes``, ``iops`` (reads per second of wall time, all threads
    together), ``mb_s`` (10^6 bytes/s), ``mean_us``, ``p50_us``, ``p99_us``, ``max_us``.
    """
    a = np.asarray(lat_ns, dtype=np.float64).reshape(-1)
    seconds = max(float(seconds), 1e-9)
    p50, p99 = percentiles_us(a)
    return {
        "reads": int(a.size),
        "seconds": round(seconds, 4),
        "bytes": int(nbytes),
        "iops": a.size / seconds,
        "mb_s": nbytes / seconds / 1e6,
        "mean_us": float(a.mean()) / 1e3 if a.size else float("nan"),
        "p50_us": p50,
        "p99_us": p99,
        "max_us": float(a.max()) / 1e3 if a.size else float("nan"),
    }


def classify(qd1_p50_us: float, qd1_iops: float, many_iops: float | None = None,
             device_share: float | None = None) -> tuple[str, str]:
    """``(class key, reason)`` from cold random 4 KiB reads: the median latency and rate at queue depth 1, the
    rate with many threads (None if not measured) and the share of the QD1 reads that the block device
    itself completed (from its sysfs counters; None if unknown). Checked in this order:

    1. ``ram``: p50 < :data:`RAM_P50_US` (20 µs), unless the device completed at least half of the reads (a
       virtual disk answered from the host's memory, a very fast drive, or a throttled device whose median
       lies: then the checks below decide);
    2. ``hdd``: p50 > :data:`HDD_P50_US` (2 ms) or QD1 rate < :data:`HDD_MAX_IOPS` (1,000/s);
    3. ``nvme``: many-thread rate > :data:`NVME_IOPS` (50,000/s) or QD1 time per read (1 / rate) below
       :data:`NVME_P50_US` (80 µs) — the mean, not the median, since a throttled device (cgroup limits, cloud
       volumes, the emulated SATA SSD) answers most reads at once and holds a few back: its median lies;
    4. ``sata-ssd``: everything else.

    NaN inputs (nothing measured) raise ValueError.
    """
    if not np.isfinite(qd1_p50_us) or not np.isfinite(qd1_iops):
        raise ValueError("classify needs a measured QD1 median and rate; run the random 4 KiB test first")
    many = many_iops if many_iops is not None and np.isfinite(many_iops) else None
    fmt = f"QD1 p50 {qd1_p50_us:,.1f} µs, {qd1_iops:,.0f} reads/s" + (f"; {many:,.0f} reads/s with threads"
                                                                       if many is not None else "")
    note = ""
    if qd1_p50_us < RAM_P50_US:
        if device_share is None or device_share < 0.5:
            return "ram", f"{fmt}: median below {RAM_P50_US:g} µs, so the reads came from memory"
        # the device did serve them: a very fast one, a virtual disk answered from the host's memory, or a
        # throttled one whose median lies; the rates below decide
        note = (f" (median below {RAM_P50_US:g} µs, but the block device served {min(device_share, 1.0):.0%} of "
                "the reads, so not the page cache)")
    if qd1_p50_us > HDD_P50_US or qd1_iops < HDD_MAX_IOPS:
        return "hdd", f"{fmt}: median above {HDD_P50_US / 1000:g} ms or below {HDD_MAX_IOPS:,.0f} reads/s{note}"
    mean_us = 1e6 / qd1_iops if qd1_iops > 0 else math.inf
    if (many is not None and many > NVME_IOPS) or mean_us < NVME_P50_US:
        return "nvme", (f"{fmt}: above {NVME_IOPS:,.0f} reads/s with threads or below {NVME_P50_US:g} µs per "
                        f"read at QD1{note}")
    return "sata-ssd", (f"{fmt}: between HDD (> {HDD_P50_US / 1000:g} ms) and NVMe "
                        f"(< {NVME_P50_US:g} µs per read or > {NVME_IOPS:,.0f} reads/s with threads){note}")
