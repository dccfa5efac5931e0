"""recpack.probe: the cold random-read probe runs on real files (skipping what it cannot read), the HDD-like
verdict follows latency or rate, and the io mode goes direct only for data larger than the page cache."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from recpack import probe as P
from recpack.probe import choose_io, choose_order, is_hdd_like, probe_latency


def test_probe_and_choose(tmp_path: os.PathLike[str]) -> None:
    paths = []
    for i, size in enumerate((1 << 20, 100, 0)):
        p = os.path.join(tmp_path, f"s{i}.rec")
        with open(p, "wb") as f:
            f.write(os.urandom(size))
        paths.append(p)
    r = probe_latency(paths, reads=10)
    assert r["reads"] == 10 and r["cold"] in ("fadvise", "none") and 0 <= r["cached"] <= 10
    assert 0 <= r["p50_ms"] <= r["p90_ms"] < 60_000
    order, reason = choose_order(probe_latency(paths), paths)
    assert order in ("shard_shuffle", "random") and "ms" in reason
    empty = probe_latency([paths[2], os.path.join(tmp_path, "missing")])
    assert empty["reads"] == 0 and math.isnan(empty["p50_ms"])
    assert choose_order(probe_latency([]))[0] == "shard_shuffle"
    many = []
    for i in range(50):  # opens only as many files as it reads (datasets can exceed the open-file limit)
        many.append(os.path.join(tmp_path, f"m{i}.rec"))
        with open(many[-1], "wb") as f:
            f.write(b"x" * 5000)
    assert probe_latency(many, reads=3)["reads"] == 3


def test_hdd_like_from_latency_or_rate() -> None:
    fast = {"p50_ms": 0.05, "p90_ms": 0.1, "reads": 64, "cold": "fadvise", "cached": 0, "iops": 15000.0}
    slow = {**fast, "p50_ms": 8.0, "iops": 120.0}
    throttled = {**fast, "iops": 130.0}  # quick first burst, then rate-limited
    assert not is_hdd_like(fast) and is_hdd_like(slow) and is_hdd_like(throttled)  # type: ignore[arg-type]
    assert choose_order(throttled)[0] == "shard_shuffle"  # type: ignore[arg-type]
    assert choose_order(fast)[0] == "random"  # type: ignore[arg-type]


def test_io_auto_goes_direct_only_for_data_larger_than_the_page_cache(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    shards = []
    for i in range(2):
        shards.append(str(tmp_path / f"s{i}.rpk"))
        Path(shards[-1]).write_bytes(bytes(8192))
    monkeypatch.setattr(P, "memory_available", lambda: 1 << 40)
    for hdd in (False, True):
        assert choose_io("auto", hdd, shards)[0] == "buffered"  # fits the cache
    monkeypatch.setattr(P, "memory_available", lambda: 1000)
    for hdd in (False, True):
        mode, why = choose_io("auto", hdd, shards)
        assert mode == "direct" and "page cache" in why
        assert choose_io("buffered", hdd, shards) == ("buffered", "chosen by the caller")


def test_probe_skips_fifos_and_folders(tmp_path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(tmp_path / "fifo.rpk")
    (tmp_path / "dir.rpk").mkdir()
    r = probe_latency([str(tmp_path / "fifo.rpk"), str(tmp_path / "dir.rpk")], reads=4)
    assert r["reads"] == 0  # and it returned: opening a FIFO for reading would block
