"""recpack.bench.stats: latency percentiles, the summary of a test and the device classes (pure numbers)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recpack.bench import stats


def test_percentiles_and_summary() -> None:
    lat = np.arange(1, 101) * 1000  # 1..100 µs
    p50, p99 = stats.percentiles_us(lat)
    assert p50 == pytest.approx(50.5) and p99 == pytest.approx(99.01)
    s = stats.summarize(lat, nbytes=100 * 4096, seconds=0.5)
    assert s["reads"] == 100 and s["iops"] == pytest.approx(200) and s["mb_s"] == pytest.approx(0.8192)
    assert s["mean_us"] == pytest.approx(50.5) and s["max_us"] == 100
    empty = stats.summarize([], 0, 1.0)
    assert empty["reads"] == 0 and math.isnan(empty["p50_us"]) and empty["iops"] == 0


@pytest.mark.parametrize("p50, iops, many, share, expected", [
    (3.0, 300_000, None, None, "ram"),           # page cache hits
    (3.0, 300_000, None, 0.0, "ram"),
    (16.0, 50_000, 130_000, 1.0, "nvme"),        # virtual disk answered from the host's memory
    (60.0, 15_000, 400_000, 1.0, "nvme"),
    (70.0, 13_000, None, None, "nvme"),          # 77 µs per read at QD1
    (22.0, 9_500, 10_500, 1.0, "sata-ssd"),      # throttled: the median lies, 105 µs per read
    (19.0, 9_971, 10_152, 1.0, "sata-ssd"),      # ... even below 20 µs, when the device served the reads
    (120.0, 8_000, 40_000, 1.0, "sata-ssd"),
    (3_600.0, 78, 118, 1.0, "hdd"),              # median above 2 ms
    (500.0, 900, 5_000, 1.0, "hdd"),             # below 1,000 reads/s
])
def test_classify(p50: float, iops: float, many: float | None, share: float | None, expected: str) -> None:
    key, reason = stats.classify(p50, iops, many, share)
    assert key == expected, reason
    assert key in stats.CLASS_LABELS and "µs" in reason


def test_classify_matches_order_thresholds() -> None:
    from recpack.probe import HDD_MAX_IOPS, HDD_P50_MS
    assert stats.HDD_P50_US == HDD_P50_MS * 1000 and stats.HDD_MAX_IOPS == HDD_MAX_IOPS
    with pytest.raises(ValueError, match="QD1"):
        stats.classify(float("nan"), 1.0)
