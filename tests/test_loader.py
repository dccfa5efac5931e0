"""recpack.Loader: batches, determinism, resume, ranks, failures, and threads that never hang or leak."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import recpack
from campaigns.leaks import open_fds, recpack_threads, rss_bytes, wait_no_threads
from recpack.errors import CorruptRecord, DecodeError
from recpack.loader import Loader
from recpack.pack import PackOptions, pack
from recpack.shard import ShardReader
from recpack.synth import make_image_folder

SMALL = {"batch_size": 5, "size": 32, "device": "cpu", "threads": 2}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("loader")
    make_image_folder(base / "src", 47, classes=4, size=(80, 60), seed=3)
    pack(base / "src", base / "ds", PackOptions(num_shards=3, workers=0, progress=False, fsync=False))
    return base / "ds"


def epoch_batches(loader: Loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def test_batches_shapes_labels_and_coverage(dataset: Path) -> None:
    with recpack.open(dataset) as ds:
        labels = {i: ds[i].label for i in range(len(ds))}
    for order in ("sequential", "shard_shuffle", "random"):
        loader = Loader(dataset, order=order, **SMALL)
        assert len(loader) == 10  # ceil(47 / 5)
        seen: list[int] = []
        for b, (x, y) in enumerate(loader):
            assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32) and y.dtype == torch.int64
            ids = loader.batch_ids(0, b)
            assert x.shape[0] == len(ids) == y.shape[0]
            assert y.tolist() == [labels[i] for i in ids.tolist()]
            seen += ids.tolist()
        assert sorted(seen) == list(range(47)), order
        assert loader.stats["batches"] == 10 and loader.stats["samples"] == 47
        loader.close()


def test_raw_records_are_the_stored_bytes(dataset: Path) -> None:
    with recpack.open(dataset) as ds:
        stored = {i: ds[i].data for i in range(len(ds))}
    loader = Loader(dataset, decode=False, transform=None, order="shard_shuffle", batch_size=8, device="cpu")
    for b, (datas, y) in enumerate(loader):
        assert datas == [stored[i] for i in loader.batch_ids(0, b).tolist()]
        assert len(y) == len(datas)


def test_same_batches_whatever_the_thread_count(dataset: Path) -> None:
    a = epoch_batches(Loader(dataset, seed=5, order="shard_shuffle", **{**SMALL, "threads": 1}))
    b = epoch_batches(Loader(dataset, seed=5, order="shard_shuffle", **{**SMALL, "threads": 3}))
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_kept_batches_are_never_overwritten(dataset: Path) -> None:
    """CPU batches are the ring's slots themselves (no copy); keeping them, or a view of one, must not let
    the ring reuse their memory: it grows instead."""
    want = epoch_batches(Loader(dataset, seed=2, order="random", **SMALL))
    loader = Loader(dataset, seed=2, order="random", prefetch=1, **SMALL)
    kept = [(x, y) for x, y in loader]  # 10 batches held at once, ring of 3 slots
    views = []
    loader.set_epoch(0)  # a completed pass moves to the next epoch; these passes repeat epoch 0
    for x, _ in loader:  # a second pass, keeping only a view of each batch's first image
        views.append(x[0, 1])
    del x
    gc.collect()
    loader.set_epoch(0)
    again = epoch_batches(loader)  # and a third: slots dropped by the consumer come back to the ring
    assert len(kept) == len(want) == len(again)
    for (xk, yk), (xw, yw), (xa, _) in zip(kept, want, again):
        assert torch.equal(xk, xw) and torch.equal(yk, yw) and torch.equal(xa, xw)
    loader.set_epoch(0)
    assert all(torch.equal(v, b[0][0, 1]) for v, b in zip(views, epoch_batches(loader)))
    numpy_loader = Loader(dataset, seed=2, order="random", prefetch=1, output="numpy", **SMALL)
    arrays = [x for x, _ in numpy_loader]
    assert all(np.array_equal(a, w.numpy()) for a, (w, _) in zip(arrays, want))
    loader.close()
    numpy_loader.close()


def test_order_changes_with_epoch_and_seed(dataset: Path) -> None:
    loader = Loader(dataset, seed=1, order="random", **SMALL)
    e0 = np.concatenate([loader.batch_ids(0, b) for b in range(len(loader))])
    e1 = np.concatenate([loader.batch_ids(1, b) for b in range(len(loader))])
    other = Loader(dataset, seed=2, order="random", **SMALL)
    s2 = np.concatenate([other.batch_ids(0, b) for b in range(len(other))])
    assert not np.array_equal(e0, e1) and not np.array_equal(e0, s2)
    loader.set_epoch(1)
    ys = torch.cat([y for _, y in loader])
    with recpack.open(dataset) as ds:
        assert ys.tolist() == [ds[i].label for i in e1.tolist()]


def test_resume_mid_epoch_gives_exactly_the_remaining_batches(dataset: Path) -> None:
    full = Loader(dataset, seed=7, order="shard_shuffle", **SMALL)
    full.set_epoch(2)
    reference = epoch_batches(full)
    first = Loader(dataset, seed=7, order="shard_shuffle", **SMALL)
    first.set_epoch(2)
    it = iter(first)
    for _ in range(4):
        next(it)
    state = first.state_dict()
    del it
    assert state["epoch"] == 2 and state["batch"] == 4
    second = Loader(dataset, seed=7, order="shard_shuffle", **{**SMALL, "threads": 1})
    second.load_state_dict(state)
    second.set_epoch(2)  # the usual loop calls set_epoch again: same epoch keeps the position
    rest = epoch_batches(second)
    assert len(rest) == len(reference) - 4
    for (xa, ya), (xb, yb) in zip(reference[4:], rest):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # nothing consumed was read again: 6 of 10 batches' bytes, not the whole epoch
    assert second.stats["read_bytes"] < 0.8 * full.stats["read_bytes"]
    assert second.state_dict()["batch"] == 0  # epoch complete
    with pytest.raises(ValueError, match="batch_size"):
        Loader(dataset, seed=7, order="shard_shuffle", **{**SMALL, "batch_size": 6}).load_state_dict(state)


def test_ranks_get_disjoint_equal_shares(dataset: Path) -> None:
    for drop_last in (False, True):
        loaders = [Loader(dataset, order="shard_shuffle", rank=r, world_size=3, drop_last=drop_last, **SMALL)
                   for r in range(3)]
        assert len({len(x) for x in loaders}) == 1
        for epoch in (0, 1):
            shares = [np.concatenate([x.batch_ids(epoch, b) for b in range(len(x))]) for x in loaders]
            assert len({len(s) for s in shares}) == 1
            allids = np.concatenate(shares)
            if drop_last:
                assert len(set(allids.tolist())) == len(allids) >= 47 - 2
            else:
                assert set(allids.tolist()) == set(range(47))
        first0 = loaders[0].batch_ids(0, 0).tolist()
        assert first0 != loaders[0].batch_ids(1, 0).tolist()  # the assignment changes every epoch


def test_ranks_agree_even_when_their_device_probes_differ(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe times reads, so separate processes can measure differently; the ranks' orders must not."""
    import recpack.loader as RL

    fast = {"p50_ms": 0.05, "p90_ms": 0.1, "reads": 64, "cold": "fadvise", "cached": 0, "iops": 15000.0}
    slow = {**fast, "p50_ms": 9.0, "iops": 100.0}
    loaders = []
    for r in range(3):
        monkeypatch.setattr(RL, "probe_latency", lambda paths, probe=(slow if r == 1 else fast): probe)
        loaders.append(Loader(dataset, rank=r, world_size=3, **SMALL))
    assert len({(x.order, str(x.order_kw)) for x in loaders}) == 1
    ids = np.concatenate([x.batch_ids(0, b) for x in loaders for b in range(len(x))])
    assert set(ids.tolist()) == set(range(47)) and len(ids) == 48  # one padding repeat, nothing missing


def test_transforms_val_callable_normalize_numpy(dataset: Path) -> None:
    x, y = next(iter(Loader(dataset, transform="val", order="sequential", **SMALL)))
    assert x.shape == (5, 3, 32, 32)
    x2, _ = next(iter(Loader(dataset, transform="val", order="sequential", **SMALL)))
    assert torch.equal(x, x2)  # val is deterministic
    calls: list[tuple[int, ...]] = []

    def user(img: np.ndarray) -> np.ndarray:
        calls.append(img.shape)
        return np.full((32, 32, 3), 7, np.uint8)

    x3, _ = next(iter(Loader(dataset, transform=user, order="sequential", **SMALL)))
    assert (x3 == 7).all() and calls and calls[0][2] == 3
    xn, yn = next(iter(Loader(dataset, transform="val", order="sequential", output="numpy", **SMALL)))
    assert isinstance(xn, np.ndarray) and xn.dtype == np.uint8 and isinstance(yn, np.ndarray)
    xf, _ = next(iter(Loader(dataset, transform="val", order="sequential", normalize=((100, 100, 100), (50, 50, 50)),
                             **SMALL)))
    assert xf.dtype == torch.float32
    assert torch.allclose(xf, (x.float() - 100) / 50)


def test_lmdb_dataset_through_the_loader(dataset: Path, tmp_path: Path) -> None:
    src = dataset.parent / "src"
    pack(src, tmp_path / "db", PackOptions(backend="lmdb", workers=0, progress=False, fsync=False))
    a = epoch_batches(Loader(tmp_path / "db", order="random", seed=3, **SMALL))
    b = epoch_batches(Loader(dataset, order="random", seed=3, **SMALL))
    assert len(a) == len(b)
    assert sorted(torch.cat([y for _, y in a]).tolist()) == sorted(torch.cat([y for _, y in b]).tolist())


def _corrupt_copy(dataset: Path, dest: Path, j: int = 2) -> tuple[Path, str, int]:
    import shutil

    shutil.copytree(dataset, dest)
    shard = dest / "shard-00001.rpk"
    with ShardReader(str(shard)) as r:
        offset, length = int(r.table["offset"][j]), int(r.table["length"][j])
        key = r.read(j).key
    raw = bytearray(shard.read_bytes())
    raw[offset + length - 50] ^= 0xFF  # inside the image bytes: the payload CRC catches it
    shard.write_bytes(raw)
    return dest, key, offset


def test_corrupt_record_raises_or_is_skipped(dataset: Path, tmp_path: Path) -> None:
    bad, key, offset = _corrupt_copy(dataset, tmp_path / "bad")
    with pytest.raises(CorruptRecord) as info:
        for _ in Loader(bad, order="sequential", **SMALL):
            pass
    assert "shard-00001.rpk" in str(info.value) and str(offset) in str(info.value) and key in str(info.value)
    assert not wait_no_threads()
    loader = Loader(bad, order="sequential", on_error="skip", **SMALL)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        n = sum(x.shape[0] for x, _ in loader)
    assert n == 46 and loader.stats["skipped"] == 1 and len(w) == 1
    raw = Loader(bad, order="sequential", decode=False, transform=None, on_error="skip", batch_size=7, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert sum(len(d) for d, _ in raw) == 46


def test_undecodable_image_raises_decode_error_or_is_skipped(tmp_path: Path) -> None:
    from PIL import Image

    src = tmp_path / "src" / "a"
    src.mkdir(parents=True)
    for i in range(6):
        Image.new("RGB", (40, 30), (i * 30, 80, 20)).save(src / f"{i}.jpg", quality=90)
    good = (src / "0.jpg").read_bytes()
    broken = bytearray(good)
    for i in range(len(broken) // 2, len(broken) - 2):
        broken[i] = 0xFF if i % 3 == 0 else 0x00
    (src / "9.jpg").write_bytes(bytes(broken))  # header and EOI fine: passes the default pack check
    res = pack(tmp_path / "src", tmp_path / "ds", PackOptions(workers=0, progress=False, fsync=False))
    if res.records < 7:
        pytest.skip("the pack-time header check already rejected the damaged JPEG")
    with pytest.raises(DecodeError, match="a/9.jpg"):
        for _ in Loader(tmp_path / "ds", order="sequential", batch_size=3, size=16, device="cpu"):
            pass
    loader = Loader(tmp_path / "ds", order="sequential", batch_size=3, size=16, device="cpu", on_error="skip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert sum(x.shape[0] for x, _ in loader) == 6 and loader.stats["skipped"] == 1


class Boom(Exception):
    pass


def test_break_exception_close_and_gc_stop_all_threads(dataset: Path) -> None:
    loader = Loader(dataset, order="shard_shuffle", **SMALL)
    for _ in loader:
        break
    assert not wait_no_threads()
    with pytest.raises(Boom):
        for _ in loader:
            raise Boom
    assert not wait_no_threads()
    it = iter(loader)
    next(it)
    loader.close()
    assert not wait_no_threads()
    it2 = iter(Loader(dataset, order="random", **SMALL))
    next(it2)
    assert recpack_threads()
    del it2
    gc.collect()
    assert not wait_no_threads()


def test_error_in_reader_thread_reaches_the_consumer(dataset: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(dataset, tmp_path / "ds")
    loader = Loader(tmp_path / "ds", order="sequential", **SMALL)
    shard = tmp_path / "ds" / "shard-00002.rpk"
    shard.write_bytes(shard.read_bytes()[:6000])  # truncated after the tables were read: refused
    with pytest.raises(recpack.FormatError, match="changed since the dataset was opened"):
        for _ in loader:
            pass
    assert not wait_no_threads()


def test_stress_open_iterate_break_close_1000_times(dataset: Path) -> None:
    def once(i: int) -> None:
        loader = Loader(dataset, order=("shard_shuffle", "random", "sequential")[i % 3], **SMALL)
        for k, _ in enumerate(loader):
            if k == i % 3:
                break
        loader.close()

    for i in range(30):  # warm up allocator, imports, caches
        once(i)
    gc.collect()
    fds, rss, threads = open_fds(), rss_bytes(), threading.active_count()
    for i in range(1000):
        once(i)
    gc.collect()
    assert not wait_no_threads()
    assert threading.active_count() <= threads
    assert open_fds() <= fds
    assert rss_bytes() - rss < 64 << 20, f"RSS grew by {(rss_bytes() - rss) >> 20} MiB"


def test_order_auto_says_what_it_picked(dataset: Path) -> None:
    loader = Loader(dataset, order="auto", **SMALL)
    assert loader.order in ("shard_shuffle", "random") and loader.order_reason
    assert Loader(dataset, shuffle=False, **SMALL).order == "sequential"


def test_bad_arguments_say_the_fix(dataset: Path) -> None:
    with pytest.raises(ValueError, match="order must be"):
        Loader(dataset, order="fast")
    with pytest.raises(ValueError, match="rank"):
        Loader(dataset, rank=2, world_size=2, device="cpu")
    with pytest.raises(ValueError, match="decode=False"):
        Loader(dataset, transform=None, device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cpu'"):
            Loader(dataset, device="cuda")


_DIST_SCRIPT = r"""
import sys, json, torch, torch.distributed as dist
import recpack
rank, world, port, path, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
loader = recpack.Loader(path, batch_size=4, size=16, device="cpu", order="shard_shuffle", seed=3)
result = {"rank": loader.rank, "world": loader.world_size, "batches": 0, "ids": {}}
for epoch in (0, 1):
    loader.set_epoch(epoch)
    ids = []
    for b, (x, y) in enumerate(loader):
        ids += loader.batch_ids(epoch, b).tolist()
        result["batches"] += 1
    result["ids"][epoch] = ids
counts = torch.tensor([result["batches"]])
dist.all_reduce(counts)
result["total_batches"] = int(counts)
json.dump(result, open(out, "w"))
dist.destroy_process_group()
"""


def test_two_processes_on_gloo(dataset: Path, tmp_path: Path) -> None:
    import json
    import socket

    script = tmp_path / "dist.py"
    script.write_text(_DIST_SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, str(script), str(r), "2", str(port), str(dataset),
                               str(tmp_path / f"r{r}.json")]) for r in range(2)]
    for p in procs:
        assert p.wait(timeout=120) == 0
    res = [json.loads((tmp_path / f"r{r}.json").read_text()) for r in range(2)]
    assert [r["rank"] for r in res] == [0, 1] and all(r["world"] == 2 for r in res)
    assert res[0]["batches"] == res[1]["batches"] and res[0]["total_batches"] == 2 * res[0]["batches"]
    for epoch in ("0", "1"):
        a, b = set(res[0]["ids"][epoch]), set(res[1]["ids"][epoch])
        assert a | b == set(range(47))
        assert len(a & b) <= 1  # 47 samples over 2 ranks: one sample is repeated as padding
    assert res[0]["ids"]["0"] != res[0]["ids"]["1"]


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
def test_cuda_batches_equal_cpu_batches(dataset: Path) -> None:
    kw = {**SMALL, "seed": 4, "order": "shard_shuffle"}
    cpu = epoch_batches(Loader(dataset, **{**kw, "device": "cpu"}))
    gpu_loader = Loader(dataset, **{**kw, "device": "cuda"})
    gpu = [(x, y) for x, y in gpu_loader]
    assert len(cpu) == len(gpu)
    for (xc, yc), (xg, yg) in zip(cpu, gpu):
        assert xg.is_cuda and yg.is_cuda
        assert torch.equal(xc, xg.cpu()) and torch.equal(yc, yg.cpu())
    assert not wait_no_threads()


@pytest.mark.gpu
@needs_cuda
def test_cuda_normalize_on_device(dataset: Path) -> None:
    kw = {**SMALL, "order": "sequential", "transform": "val"}
    x, _ = next(iter(Loader(dataset, **{**kw, "device": "cpu"})))
    xf, _ = next(iter(Loader(dataset, **{**kw, "device": "cuda", "normalize": ((120,) * 3, (60,) * 3),
                                         "dtype": torch.float16})))
    assert xf.is_cuda and xf.dtype == torch.float16
    assert torch.allclose(xf.float().cpu(), (x.float() - 120) / 60, atol=1e-2)


def test_memory_is_flat_across_epochs(dataset: Path) -> None:
    loader = Loader(dataset, order="shard_shuffle", **SMALL)
    assert loader.memory_bytes > 0
    for epoch in range(3):  # warm up: slot buffers reach their size, caches fill
        loader.set_epoch(epoch)
        for _ in loader:
            pass
    gc.collect()
    rss, fds = rss_bytes(), open_fds()
    for epoch in range(3, 23):
        loader.set_epoch(epoch)
        for _ in loader:
            pass
    gc.collect()
    assert open_fds() <= fds and not wait_no_threads()
    assert rss_bytes() - rss < 16 << 20, f"RSS grew by {(rss_bytes() - rss) >> 20} MiB over 20 epochs"


def test_direct_io_reads_the_same_bytes(dataset: Path) -> None:
    from recpack.fileio import PositionalFile

    probe = PositionalFile(str(next(dataset.glob("*.rpk"))), direct=True)
    direct_here = probe.direct
    probe.close()
    want = epoch_batches(Loader(dataset, seed=3, order="shard_shuffle", io="buffered", **SMALL))
    loader = Loader(dataset, seed=3, order="shard_shuffle", io="direct", **SMALL)
    got = epoch_batches(loader)
    assert loader.io == "direct" and loader.io_reason == "chosen by the caller"
    assert len(got) == len(want) and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                                         for a, b in zip(got, want))
    with recpack.open(dataset) as ds:
        stored = {i: bytes(ds[i].data) for i in range(len(ds))}
    raw = Loader(dataset, seed=1, order="random", decode=False, transform=None, io="direct", **SMALL)
    for b, (items, _) in enumerate(raw):
        assert [bytes(x) for x in items] == [stored[i] for i in raw.batch_ids(0, b).tolist()]
    for ld in (loader, raw):
        ld.close()
    if not direct_here:
        pytest.skip("this file system refuses O_DIRECT: the Loader read through the page cache instead")


def test_io_must_be_known(dataset: Path) -> None:
    with pytest.raises(ValueError, match="io must be"):
        Loader(dataset, io="fast", **SMALL)
