"""Many readers: 2 and 4 CPU processes on gloo (rank and world size from torch.distributed) read every
sample exactly once per epoch (plus the documented padding), with equal batch counts; resuming with the same
world size is exact, and resuming with another world size finishes the epoch with exactly the unread rest."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from campaigns.synthetic import write_synthetic
from recpack.order import ORDERS, Layout, rank_remaining, rank_share

N, PER_SHARD, BATCH = 1_003, 100, 16  # 1,003 = 4 x 250 + 3: padding on 2 and 4 ranks
ORDER_NAMES = ("random", "shard_shuffle", "sequential")


def _ceil(a: int, b: int) -> int:
    return -(-a // b)

_SCRIPT = r"""
import json, sys
import torch, torch.distributed as dist
import recpack

rank, world, init, path, out, mode = sys.argv[1:7]
rank, world = int(rank), int(world)
dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)

def make(order):
    return recpack.Loader(path, batch_size=16, order=order, seed=5, decode=False, transform=None, device="cpu",
                          threads=1, io_threads=1, run=8)

def read(loader, epoch, limit=None):
    # ids of the batches actually delivered; labels cross-check the ids (label = id % 100)
    ids = []
    loader.set_epoch(epoch)
    start = loader.state_dict()["batch"]
    for b, (views, labels) in enumerate(loader, start):
        got = loader.batch_ids(epoch, b).tolist()
        assert len(views) == len(got) and labels.tolist() == [i % 100 for i in got], (b, got)
        ids.append(got)
        if limit is not None and len(ids) == limit:
            break
    return ids

res = {"rank": make("random").rank, "world": make("random").world_size}
if mode == "cover":
    for order in ("random", "shard_shuffle", "sequential"):
        loader = make(order)
        for epoch in (0, 1):
            res[f"{order}/{epoch}"] = read(loader, epoch)
        n = torch.tensor([len(loader)])
        lo, hi = n.clone(), n.clone()
        dist.all_reduce(lo, dist.ReduceOp.MIN); dist.all_reduce(hi, dist.ReduceOp.MAX)
        res[f"{order}/len"] = [int(lo), int(hi)]
    # resume with the same world size: 3 batches of epoch 1, a fresh loader from the state, the rest
    loader = make("shard_shuffle")
    first = read(loader, 1, limit=3)
    state = loader.state_dict()
    again = make("shard_shuffle")
    again.load_state_dict(state)
    res["resume"] = first + read(again, 1)
    # save a state 5 batches into epoch 1 for the other world size to resume from
    loader = make("random")
    res["before"] = read(loader, 1, limit=5)
    if rank == 0:
        json.dump(loader.state_dict(), open(out + ".state", "w"))
elif mode == "resume":
    loader = make("random")
    loader.load_state_dict(json.load(open(sys.argv[7])))
    loader.set_epoch(1)
    res["after_len"] = len(loader)  # fewer batches: only the rest of the epoch
    res["after"] = read(loader, 1)
    res["next"] = read(loader, 2)
dist.barrier()
json.dump(res, open(out, "w"))
dist.destroy_process_group()
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ranks") / "ds"
    write_synthetic(path, N, per_shard=PER_SHARD, payload=16)
    return path


def _launch(tmp: Path, world: int, dataset: Path, mode: str, *extra: str) -> list[dict]:  # type: ignore[type-arg]
    script = tmp / "ranks.py"
    script.write_text(_SCRIPT)
    init = f"file://{tmp / f'init-{mode}-{world}'}"
    outs = [tmp / f"{mode}-{world}-r{r}.json" for r in range(world)]
    procs = [subprocess.Popen([sys.executable, str(script), str(r), str(world), init, str(dataset), str(outs[r]),
                               mode, *extra]) for r in range(world)]
    try:
        for p in procs:
            assert p.wait(timeout=180) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [json.loads(o.read_text()) for o in outs]


def _check_cover(res: list[dict], world: int) -> None:  # type: ignore[type-arg]
    assert [r["rank"] for r in res] == list(range(world)) and all(r["world"] == world for r in res)
    pad = -(-N // world) * world - N
    for name in ORDER_NAMES:
        lo, hi = res[0][f"{name}/len"]
        assert lo == hi == _ceil(_ceil(N, world), BATCH)  # equal batch counts on every rank
        for epoch in (0, 1):
            per_rank = [[i for b in r[f"{name}/{epoch}"] for i in b] for r in res]
            assert len({len(p) for p in per_rank}) == 1
            counts = Counter(i for p in per_rank for i in p)
            assert set(counts) == set(range(N)), (name, epoch)  # every sample, every epoch
            assert sum(counts.values()) == N + pad and max(counts.values()) <= 2  # padding: `pad` repeats
    assert res[0]["random/0"] != res[0]["random/1"]


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_cover_each_epoch_and_resume_exactly(dataset: Path, tmp_path: Path, world: int) -> None:
    res = _launch(tmp_path, world, dataset, "cover")
    _check_cover(res, world)
    for r in res:  # same world size: the resumed run yields exactly the uninterrupted batches
        assert r["resume"] == r["shard_shuffle/1"]
    if world == 4:  # resume 4 ranks' state on 2 ranks: the rest of the epoch, exactly once
        after = _launch(tmp_path, 2, dataset, "resume", str(tmp_path / "cover-4-r0.json.state"))
        seen = Counter(i for r in res for b in r["before"] for i in b)
        seen_after = Counter(i for r in after for b in r["after"] for i in b)
        assert set(seen) | set(seen_after) == set(range(N))
        assert not set(seen) & set(seen_after)  # nothing read before is read again
        assert max(seen_after.values()) <= 2 and sum(seen_after.values()) - len(seen_after) < 2
        assert after[0]["after_len"] == after[1]["after_len"]
        assert all(len(r["after"]) == r["after_len"] for r in after)
        for r in after:  # the next epoch is an ordinary 2-rank epoch
            assert len(r["next"]) == _ceil(_ceil(N, 2), BATCH)
        nxt = Counter(i for r in after for b in r["next"] for i in b)
        assert set(nxt) == set(range(N))


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("old,new", [(4, 2), (2, 3), (3, 1)])
def test_rank_remaining_resplits_the_rest_exactly(old: int, new: int, drop_last: bool) -> None:
    order = ORDERS["random"](Layout.from_counts([400, 403, 200]), 0, 1)
    n = order.size
    done = 37
    read = [rank_share(order, r, old, 1, drop_last=drop_last)[:done] for r in range(old)]
    rest = rank_remaining(order, old, done, drop_last=drop_last)
    before = np.concatenate(read)
    assert not set(before.tolist()) & set(rest.tolist()) and len(set(rest.tolist())) == rest.size
    if drop_last:  # the ids beyond the last whole block were never going to be read this epoch
        assert set(before.tolist()) | set(rest.tolist()) == set(order[:n // old * old].tolist())
    else:
        assert set(before.tolist()) | set(rest.tolist()) == set(range(n))
    shares = [rank_share(rest, r, new, 1, drop_last=drop_last) for r in range(new)]
    assert len({s.size for s in shares}) == 1
    assert set(np.concatenate(shares).tolist()) <= set(rest.tolist())
