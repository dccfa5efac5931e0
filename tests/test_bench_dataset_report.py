"""recpack.bench.dataset_report: naming the bottleneck and the fix, rates and the stage breakdown (pure numbers)."""

from __future__ import annotations

import pytest

from recpack.bench.dataset_report import (
    STAGES,
    Context,
    busy_fractions,
    diagnose,
    pct_of,
    rates,
    stage_seconds,
)


def _busy(**kw: float) -> dict[str, float]:
    return {**{s: 0.0 for s in STAGES}, "wait": 0.5, **kw}


# (busy fractions, context, expected stage, words the advice must contain)
CASES: list[tuple[dict[str, float], Context, str, list[str]]] = [
    (_busy(read=0.95), Context("random", 2, 2), "disk", ["disk-bound", "shard_shuffle order"]),
    (_busy(read=0.95), Context("shard_shuffle", 2, 2, seq_fraction=0.97), "disk",
     ["disk-bound at 97% of the device's sequential rate", "already stream"]),
    (_busy(read=0.9), Context("shard_shuffle", 2, 2, seq_fraction=0.6), "disk", ["longer shard_shuffle runs"]),
    (_busy(read=0.3, decode=0.9, transform=0.05), Context("random", 2, 16), "decode",
     ["decode-bound", "use 5 more threads (threads=7)", "reduced-size decode"]),
    (_busy(read=0.1, decode=0.9), Context("random", 2, 2), "decode", ["more threads", "bigger CPU"]),
    (_busy(read=0.85, decode=0.8), Context("random", 2, 2), "disk", ["disk-bound"]),
    (_busy(read=0.7, decode=0.75), Context("random", 4, 8), "decode", ["use 1 more thread (threads=5)"]),
    (_busy(decode=0.3, transform=0.5), Context("random", 2, 64), "decode", ["most of it in the transform"]),
    (_busy(copy=0.9, decode=0.2), Context("random", 8, 8, device="cuda", pinned=False), "copy",
     ["copy-bound: pin memory"]),
    (_busy(copy=0.9), Context("random", 8, 8, device="cuda", pinned=True), "copy", ["already on"]),
    (_busy(copy=0.8), Context("random", 2, 2, device="cpu"), "copy", ["copy-bound"]),
    (_busy(read=0.2, decode=0.3, wait=0.01), Context("random", 2, 2), "consumer", ["consumer-bound"]),
    (_busy(read=0.2, decode=0.3, wait=0.6), Context("random", 2, 2), "none", ["no single bottleneck"]),
    ({}, Context("random", 2, 2), "consumer", ["consumer-bound"]),
]


@pytest.mark.parametrize("busy, ctx, stage, words", CASES)
def test_diagnose_names_the_bottleneck_and_the_fix(busy: dict[str, float], ctx: Context, stage: str,
                                                   words: list[str]) -> None:
    verdict = diagnose(busy, ctx)
    assert verdict.stage == stage, verdict
    assert verdict.advice.startswith(verdict.label)
    for w in words:
        assert w in verdict.advice, (w, verdict.advice)


def test_rates_and_percentages() -> None:
    assert rates(1000, 110_000_000, 2.0) == (500.0, 55.0)
    assert rates(10, 10, 0.0) == (0.0, 0.0) and rates(10, 10, -1.0) == (0.0, 0.0)
    assert pct_of(131.0, 138.0) == pytest.approx(0.949, abs=1e-3)
    assert pct_of(1.0, 0.0) is None and pct_of(None, 1.0) is None and pct_of(1.0, None) is None


def test_stage_seconds_and_busy_fractions() -> None:
    stats = {"read_s": 1.0, "decode_s": 8.0, "copy_s": 0.2, "copy_device_s": 0.5, "wait_s": 3.0}
    st = stage_seconds(stats, 5.0, threads=2, transform_fraction=0.25)
    assert st == {"read": 1.0, "decode": 3.0, "transform": 1.0, "copy": 0.5, "wait": 3.0, "wall": 5.0}
    busy = busy_fractions(st)
    assert busy == {"read": 0.2, "decode": 0.6, "transform": 0.2, "copy": 0.1, "wait": 0.6}
    assert stage_seconds(stats, 5.0, threads=4)["transform"] == 0.0  # no split known: all decode
    assert stage_seconds(stats, 5.0, threads=1, transform_fraction=7.0)["decode"] == 0.0  # clipped
    assert busy_fractions({"read": 9.0, "wall": 1.0})["read"] == 1.0
    assert busy_fractions({"read": 1.0, "wall": 0.0}) == {s: 0.0 for s in STAGES}
    with pytest.raises(ValueError, match="threads"):
        stage_seconds(stats, 1.0, threads=0)
