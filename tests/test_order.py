"""recpack.order: orders are permutations, deterministic, per-epoch different; shard_shuffle reads in runs;
rank shares."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recpack import order as O
from recpack.order import (
    ORDERS,
    Layout,
    order_shard_shuffle,
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


def shard_of(lay: Layout, ids: object) -> np.ndarray:
    """The shard of each global id (an empty shard's start equals the next shard's: side="right" skips it)."""
    return np.searchsorted(lay.starts, np.asarray(ids, dtype=np.int64), side="right") - 1


def reads_for(ids: np.ndarray, lay: Layout) -> int:
    """Reads a batch needs: stretches of consecutive ids of one shard among its sorted ids."""
    g = np.unique(ids)
    shard = shard_of(lay, g)
    return 1 + int(np.count_nonzero((np.diff(g) != 1) | (np.diff(shard) != 0))) if g.size else 0


def test_public_names() -> None:
    assert set(O.__all__) == {"Layout", "ORDERS", "SHARD_SHUFFLE_DEFAULTS", "order_sequential", "order_random",
                              "order_shard_shuffle", "rank_share", "rank_remaining"}
    assert set(ORDERS) == {"sequential", "shard_shuffle", "random"}


# -- layout -------------------------------------------------------------------------------------------------
def test_layout_basics_and_validation() -> None:
    lay = Layout.from_counts([3, 0, 2])
    assert lay.n == 5 and lay.shards == 3 and lay.counts.tolist() == [3, 0, 2]
    assert lay.starts.dtype == np.int64 and not lay.starts.flags.writeable
    assert shard_of(lay, [0, 2, 3, 4]).tolist() == [0, 0, 2, 2]
    assert Layout.from_counts([]).n == 0
    for bad in ([1, 2], [0, 3, 2], [[0, 1]], [0.0, 1.0]):
        with pytest.raises(ValueError):
            Layout(np.asarray(bad))
    with pytest.raises(ValueError):
        Layout.from_counts([1, -1])


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
    shard_a = shard_of(lay, first)
    shard_b = shard_of(lay, first + length - 1)
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
    shard = shard_of(lay, first)
    o = order_shard_shuffle(lay, 3, 1, run=64, interleave=4, window=0)
    group1, group2 = set(shard[: shard.size // 2].tolist()), set(shard[shard.size // 2:].tolist())
    assert len(group1) == 4 and len(group2) == 4 and not group1 & group2
    assert shard[0:4].tolist() == shard[4:8].tolist()  # run 0 of each shard, then run 1 of each, ...
    assert shard_of(lay, o[:1])[0] == shard[0]
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
    reads = [reads_for(o[b * 256:(b + 1) * 256], lay) for b in range(o.size // 256)]
    assert np.mean(reads) <= 256 / 64 + 2 and max(reads) <= 10
    # Runs mix across shards: consecutive stretches of 16 runs touch several shards.
    shard = shard_of(lay, o)
    assert len(set(shard[: 16 * 64].tolist())) >= 3
    # The random order, for contrast, needs ~one read per record.
    r = ORDERS["random"](lay, 7, 2)
    assert reads_for(r[:256], lay) > 200


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
