"""recpack.order: orders are permutations, deterministic, per-epoch different; shard_shuffle reads in runs;
rank shares; batches; coalesce against a naive reference; the device probe runs."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recpack import order as O
from recpack.order import (
    ORDERS,
    Layout,
    batch_bounds,
    batch_slice,
    choose_order,
    coalesce,
    order_shard_shuffle,
    probe_latency,
    rank_share,
)

counts_st = st.lists(st.integers(0, 300), min_size=0, max_size=12)
options_st = st.fixed_dictionaries({"run": st.integers(1, 100), "interleave": st.integers(1, 6),
                                    "window": st.integers(0, 20)})


def big_layout() -> Layout:
    return Layout.from_counts([1000 + 37 * (i % 11) for i in range(60)])


def run_lengths(o: np.ndarray) -> np.ndarray:
    """Lengths of maximal stretches of consecutive ascending ids."""
    if o.size == 0:
        return np.zeros(0, np.int64)
    brk = np.flatnonzero(np.diff(o) != 1) + 1
    edges = np.concatenate([[0], brk, [o.size]])
    return np.diff(edges)


def test_public_names() -> None:
    assert set(O.__all__) == {"Layout", "ORDERS", "SHARD_SHUFFLE_DEFAULTS", "HDD_P50_MS", "ProbeResult",
                              "order_sequential", "order_random", "order_shard_shuffle", "rank_share",
                              "batch_bounds", "batch_slice", "coalesce", "probe_latency", "choose_order",
                              "HDD_MAX_IOPS", "is_hdd_like", "order_for_probe"}
    assert set(ORDERS) == {"sequential", "shard_shuffle", "random"}


# -- layout -------------------------------------------------------------------------------------------------
def test_layout_basics_and_validation() -> None:
    lay = Layout.from_counts([3, 0, 2])
    assert lay.n == 5 and lay.shards == 3 and lay.counts.tolist() == [3, 0, 2]
    assert lay.starts.dtype == np.int64 and not lay.starts.flags.writeable
    shard, local = lay.locate([0, 2, 3, 4])
    assert shard.tolist() == [0, 0, 2, 2] and local.tolist() == [0, 2, 0, 1]
    assert Layout.from_counts([]).n == 0
    for bad in ([1, 2], [0, 3, 2], [[0, 1]], [0.0, 1.0]):
        with pytest.raises(ValueError):
            Layout(np.asarray(bad))
    with pytest.raises(ValueError):
        Layout.from_counts([1, -1])
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        lay.locate([5])


def test_layout_from_manifest() -> None:
    from recpack.index import Manifest, ShardEntry

    m = Manifest(records=7, shards=[ShardEntry("a.rec", 4, 0, 0), ShardEntry("b.rec", 3, 0, 0)])
    assert Layout.from_manifest(m).starts.tolist() == [0, 4, 7]
    assert Layout.from_manifest(Manifest(records=9, backend="lmdb")).starts.tolist() == [0, 9]


# -- orders -------------------------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(counts=counts_st, seed=st.integers(0, 2**32), epoch=st.integers(0, 50), opts=options_st)
def test_every_order_is_a_deterministic_permutation(counts: list[int], seed: int, epoch: int,
                                                    opts: dict[str, int]) -> None:
    lay = Layout.from_counts(counts)
    for name, fn in ORDERS.items():
        o = fn(lay, seed, epoch, **opts)
        assert o.dtype == np.int64 and o.ndim == 1, name
        assert np.array_equal(np.sort(o), np.arange(lay.n)), name
        assert np.array_equal(o, fn(lay, seed, epoch, **opts)), name


@settings(max_examples=100, deadline=None)
@given(counts=counts_st, seed=st.integers(0, 1000), epoch=st.integers(0, 50), opts=options_st)
def test_shard_shuffle_structure(counts: list[int], seed: int, epoch: int, opts: dict[str, int]) -> None:
    """Runs hold consecutive ids of one shard, at most `run` long; they tile every shard; the bounded shuffle
    moves each run fewer than `window` places; the order is exactly the runs laid end to end."""
    lay = Layout.from_counts(counts)
    run, inter, window = opts["run"], opts["interleave"], opts["window"]
    first, length = O._shard_runs(lay, seed, epoch, run, inter)
    assert length.min(initial=1) >= 1 and length.max(initial=0) <= run
    shard_a, _ = lay.locate(first)
    shard_b, _ = lay.locate(first + length - 1)
    assert np.array_equal(shard_a, shard_b)
    assert np.array_equal(np.sort(np.concatenate([np.arange(f, f + n) for f, n in zip(first, length)] or
                                                 [np.zeros(0, np.int64)])), np.arange(lay.n))
    perm = O._bounded_shuffle(first.size, window, O._rng(seed, epoch, O._TAG_RUN_NOISE))
    assert np.array_equal(np.sort(perm), np.arange(first.size))
    if perm.size:
        assert int(np.abs(perm - np.arange(perm.size)).max()) < max(window, 1)
    expect = [np.arange(f, f + n) for f, n in zip(first[perm], length[perm])]
    got = order_shard_shuffle(lay, seed, epoch, **opts)
    assert np.array_equal(got, np.concatenate(expect) if expect else np.zeros(0, np.int64))


def test_shard_shuffle_round_robin_without_window() -> None:
    """window=0: groups of `interleave` shards, their runs alternating."""
    lay = Layout.from_counts([256] * 8)
    first, _ = O._shard_runs(lay, 3, 1, 64, 4)
    shard, _ = lay.locate(first)
    o = order_shard_shuffle(lay, 3, 1, run=64, interleave=4, window=0)
    group1, group2 = set(shard[: shard.size // 2].tolist()), set(shard[shard.size // 2:].tolist())
    assert len(group1) == 4 and len(group2) == 4 and not group1 & group2
    assert shard[0:4].tolist() == shard[4:8].tolist()  # run 0 of each shard, then run 1 of each, ...
    assert lay.locate(o[:1])[0][0] == shard[0]
    assert len(set(shard[:4].tolist())) == 4  # run 0 of each of the four shards first


def test_orders_differ_across_epochs_and_seeds() -> None:
    lay = big_layout()
    for name in ("shard_shuffle", "random"):
        fn = ORDERS[name]
        base = fn(lay, 0, 0)
        assert not np.array_equal(base, fn(lay, 0, 1)), name
        assert not np.array_equal(base, fn(lay, 1, 0)), name
    # shard_shuffle: the run boundaries themselves move between epochs
    starts0 = set(O._shard_runs(lay, 0, 0, 64, 4)[0].tolist())
    starts1 = set(O._shard_runs(lay, 0, 1, 64, 4)[0].tolist())
    assert len(starts0 & starts1) < 0.5 * len(starts0)


def test_shard_shuffle_run_lengths_and_batches() -> None:
    lay = big_layout()
    o = order_shard_shuffle(lay, 7, 2)  # run=64, interleave=4, window=16
    lengths = run_lengths(o)
    # Maximal consecutive stretches: ~run (shard-edge pieces shorten, neighbouring runs of one shard may join).
    assert 0.8 * 64 <= lengths.mean() <= 1.5 * 64
    reads = [len(coalesce(o[batch_slice(b, o.size, 256)], lay)) for b in range(batch_bounds(o.size, 256, True))]
    assert np.mean(reads) <= 256 / 64 + 2 and max(reads) <= 10
    # Runs mix across shards: consecutive stretches of 16 runs touch several shards.
    shard, _ = lay.locate(o)
    assert len(set(shard[: 16 * 64].tolist())) >= 3
    # The random order, for contrast, needs ~one read per record.
    r = ORDERS["random"](lay, 7, 2)
    assert len(coalesce(r[:256], lay)) > 200


def test_order_argument_errors() -> None:
    lay = Layout.from_counts([10])
    with pytest.raises(ValueError, match="seed"):
        ORDERS["random"](lay, -1, 0)
    with pytest.raises(ValueError, match="epoch"):
        ORDERS["sequential"](lay, 0, -1)
    with pytest.raises(ValueError, match="run"):
        order_shard_shuffle(lay, 0, 0, run=0)
    with pytest.raises(TypeError, match="unknown options"):
        ORDERS["random"](lay, 0, 0, rnu=4)
    assert ORDERS["random"](lay, 0, 0, run=8, window=2).size == 10  # shard_shuffle options are accepted


# -- ranks and batches --------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 500), world=st.integers(1, 9), epoch=st.integers(0, 20), seed=st.integers(0, 99))
def test_rank_share(n: int, world: int, epoch: int, seed: int) -> None:
    order = ORDERS["random"](Layout.from_counts([n]), seed, 0)
    pad = [rank_share(order, r, world, epoch) for r in range(world)]
    per = math.ceil(n / world)
    assert all(p.size == per and p.dtype == np.int64 for p in pad)
    allp = np.concatenate(pad)
    assert set(allp.tolist()) == set(range(n))
    # disjoint except for the padding, which repeats the order from its start
    extra = per * world - n
    vals, cnt = np.unique(allp, return_counts=True)
    assert int((cnt - 1).sum()) == extra and extra < world
    drop = [rank_share(order, r, world, epoch, drop_last=True) for r in range(world)]
    assert all(d.size == n // world for d in drop)
    alld = np.concatenate(drop)
    assert np.unique(alld).size == alld.size and n - alld.size < world
    # each block is a contiguous stretch of the order
    for d in drop:
        if d.size:
            i = int(np.flatnonzero(order == d[0])[0])
            assert np.array_equal(order[i:i + d.size], d)


@pytest.mark.parametrize("name", sorted(ORDERS))
def test_rank_assignment_changes_every_epoch(name: str) -> None:
    lay = big_layout()
    for world in (2, 3, 8):
        for epoch in range(4):
            a = rank_share(ORDERS[name](lay, 5, epoch), 0, world, epoch)
            b = rank_share(ORDERS[name](lay, 5, epoch + 1), 0, world, epoch + 1)
            assert not np.array_equal(a, b), (world, epoch)
            # and for sequential, a genuinely different set of ids (up to the padded repeats)
            if name == "sequential":
                assert np.intersect1d(a, b).size < world


def test_rank_share_validation() -> None:
    o = np.arange(10)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        rank_share(o, 2, 2, 0)
    with pytest.raises(ValueError, match="world"):
        rank_share(o, 0, 0, 0)
    with pytest.raises(ValueError, match="rank"):
        rank_share(o, -1, 2, 0)
    with pytest.raises(ValueError, match="1-D integer"):
        rank_share(np.zeros(3), 0, 1, 0)
    s = rank_share(o, 0, 1, 0)
    s[0] = 99
    assert o[0] == 0  # a copy, safe to shuffle in place


def test_batches() -> None:
    assert batch_bounds(10, 4, False) == 3 and batch_bounds(10, 4, True) == 2 and batch_bounds(0, 4, False) == 0
    assert batch_slice(2, 10, 4) == slice(8, 10)
    with pytest.raises(ValueError, match="past the end"):
        batch_slice(3, 10, 4)
    with pytest.raises(ValueError, match="batch_size"):
        batch_bounds(10, 0, False)


# -- coalesce -----------------------------------------------------------------------------------------------
def coalesce_reference(ids: list[int], starts: list[int], max_gap: int) -> list[tuple[int, int, int]]:
    def where(g: int) -> tuple[int, int]:
        s = max(i for i in range(len(starts) - 1) if starts[i] <= g < starts[i + 1])
        return s, g - starts[s]

    out: list[tuple[int, int, int]] = []
    prev = None
    for g in sorted(set(ids)):
        s, j = where(g)
        if prev is not None and prev[0] == s and g - prev[1] <= max_gap + 1:
            sh, first, _ = out[-1]
            out[-1] = (sh, first, j - first + 1)
        else:
            out.append((s, j, 1))
        prev = (s, g)
    return out


@settings(max_examples=300, deadline=None)
@given(data=st.data(), counts=st.lists(st.integers(0, 40), min_size=1, max_size=8), max_gap=st.integers(0, 5))
def test_coalesce_matches_reference(data: st.DataObject, counts: list[int], max_gap: int) -> None:
    lay = Layout.from_counts(counts)
    ids = data.draw(st.lists(st.integers(0, lay.n - 1), max_size=60)) if lay.n else []
    got = coalesce(np.asarray(ids, dtype=np.int64), lay, max_gap)
    assert got == coalesce_reference(ids, lay.starts.tolist(), max_gap)
    assert all(type(v) is int for t in got for v in t)


def test_coalesce_errors() -> None:
    lay = Layout.from_counts([4])
    with pytest.raises(ValueError):
        coalesce([4], lay)
    with pytest.raises(ValueError, match="max_gap"):
        coalesce([1], lay, -1)
    assert coalesce([], lay) == []


# -- device probe -------------------------------------------------------------------------------------------
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
    order, reason = choose_order(paths)
    assert order in ("shard_shuffle", "random") and "ms" in reason
    empty = probe_latency([paths[2], os.path.join(tmp_path, "missing")])
    assert empty["reads"] == 0 and math.isnan(empty["p50_ms"])
    assert choose_order([])[0] == "shard_shuffle"
    many = []
    for i in range(50):  # opens only as many files as it reads (datasets can exceed the open-file limit)
        many.append(os.path.join(tmp_path, f"m{i}.rec"))
        with open(many[-1], "wb") as f:
            f.write(b"x" * 5000)
    assert probe_latency(many, reads=3)["reads"] == 3


def test_hdd_like_from_latency_or_rate() -> None:
    from recpack.order import is_hdd_like, order_for_probe

    fast = {"p50_ms": 0.05, "p90_ms": 0.1, "reads": 64, "cold": "fadvise", "cached": 0, "iops": 15000.0}
    slow = {**fast, "p50_ms": 8.0, "iops": 120.0}
    throttled = {**fast, "iops": 130.0}  # quick first burst, then rate-limited
    assert not is_hdd_like(fast) and is_hdd_like(slow) and is_hdd_like(throttled)  # type: ignore[arg-type]
    assert order_for_probe(throttled)[0] == "shard_shuffle"  # type: ignore[arg-type]
    assert order_for_probe(fast)[0] == "random"  # type: ignore[arg-type]
