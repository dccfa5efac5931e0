"""recpack.torchdata.LoaderDataset under torch's DataLoader: every record exactly once per epoch with its own
label, in worker processes or not; ranks split the records; an epoch's order is reproducible and changes with
set_epoch; errors reach the training loop; break, an exception in the loop and GC stop every thread."""

from __future__ import annotations

import gc
import shutil
from collections import Counter
from pathlib import Path
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, get_worker_info

import recpack
from campaigns.leaks import recpack_threads, wait_no_threads
from recpack.loader import Loader
from recpack.pack import PackOptions, pack
from recpack.shard import ShardReader
from recpack.torchdata import LoaderDataset

SIZE = 24


def _pack(src: Path, out: Path) -> Path:
    pack(src, out, PackOptions(seed=3, num_shards=4, workers=0, progress=False, fsync=False))
    return out


@pytest.fixture
def dataset(tiny_jpegs: Path, tmp_path: Path) -> Path:
    """24 records (3 classes x 8 photo-like JPEGs of mixed sizes) in 4 shards."""
    return _pack(tiny_jpegs, tmp_path / "ds")


class Records:
    """Which record a delivered sample is: its val-transformed image is unique to it (read independently
    with a sequential Loader)."""

    def __init__(self, path: Path) -> None:
        with recpack.open(path) as ds:
            self.labels = [ds[i].label for i in range(len(ds))]
        loader = Loader(path, batch_size=len(self.labels), shuffle=False, transform="val", size=SIZE,
                        device="cpu")
        (images, labels), = list(loader)
        ids = loader.batch_ids(0, 0).tolist()
        loader.close()
        assert labels.tolist() == [self.labels[i] for i in ids]
        self.by_image = {images[k].numpy().tobytes(): i for k, i in enumerate(ids)}
        assert len(self.by_image) == len(self.labels)  # the images tell the records apart

    def ids(self, samples: list[tuple[torch.Tensor, torch.Tensor]]) -> list[int]:
        """The record of each (image, label), checking that the label is that record's."""
        out = []
        for image, label in samples:
            assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.uint8
            i = self.by_image[image.numpy().tobytes()]
            assert int(label) == self.labels[i], f"record {i} came with label {int(label)}"
            out.append(i)
        return out


def samples(dl: DataLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:  # type: ignore[type-arg]
    return [(x, y) for images, labels in dl for x, y in zip(images, labels)]


def make(path: Path, **kw: object) -> LoaderDataset:
    """order="random" (shard_shuffle's run length comes from a device probe, taken once per LoaderDataset)."""
    kw = {"size": SIZE, "seed": 1, "order": "random", "transform": "val", **kw}
    return LoaderDataset(path, **kw)  # type: ignore[arg-type,unused-ignore]


@pytest.mark.parametrize("workers", [0, 2])
def test_every_record_once_per_epoch_with_its_label(dataset: Path, workers: int) -> None:
    rec = Records(dataset)
    lds = make(dataset)
    assert len(lds) == 24
    dl = DataLoader(lds, batch_size=5, num_workers=workers)
    orders = {}
    for epoch in (0, 1):
        lds.set_epoch(epoch)  # DataLoader makes new workers each epoch: they see it
        orders[epoch] = rec.ids(samples(dl))
        assert sorted(orders[epoch]) == list(range(24)), f"epoch {epoch}: {Counter(orders[epoch])}"
    assert orders[0] != orders[1]  # a new order each epoch
    lds.set_epoch(0)
    assert rec.ids(samples(dl)) == orders[0]  # and the same one again for the same epoch


def test_the_order_depends_on_the_seed_and_not_on_the_batch_size(dataset: Path) -> None:
    rec = Records(dataset)
    base = rec.ids(samples(DataLoader(make(dataset), batch_size=5)))
    assert rec.ids(samples(DataLoader(make(dataset), batch_size=7))) == base
    other = make(dataset, seed=2)
    assert sorted(again := rec.ids(samples(DataLoader(other, batch_size=5)))) == list(range(24)) and again != base


def test_ranks_split_the_records(dataset: Path) -> None:
    rec = Records(dataset)
    halves = [rec.ids(samples(DataLoader(make(dataset, rank=r, world_size=2), batch_size=8))) for r in (0, 1)]
    assert [len(h) for h in halves] == [12, 12] and sorted(halves[0] + halves[1]) == list(range(24))
    # 24 records over 5 ranks: 5 each, one record repeated to even out the shares
    fifths = [rec.ids(samples(DataLoader(make(dataset, rank=r, world_size=5), batch_size=8))) for r in range(5)]
    assert [len(f) for f in fifths] == [len(make(dataset, rank=0, world_size=5))] * 5 == [5] * 5
    counts = Counter(i for f in fifths for i in f)
    assert set(counts) == set(range(24)) and sorted(counts.values())[-2:] == [1, 2]


def test_uneven_worker_shares_repeat_one_record(tiny_jpegs: Path, tmp_path: Path) -> None:
    next(iter(sorted((tiny_jpegs / "cat").iterdir()))).unlink()  # 23 records
    path = _pack(tiny_jpegs, tmp_path / "ds23")
    rec = Records(path)
    got = rec.ids(samples(DataLoader(make(path), batch_size=4, num_workers=2)))
    assert set(got) == set(range(23)) and len(got) == 24  # one record repeated as padding


def test_drop_last_drops_only_the_uneven_remainder(dataset: Path) -> None:
    rec = Records(dataset)
    kept = [rec.ids(samples(DataLoader(make(dataset, rank=r, world_size=5, drop_last=True), batch_size=8)))
            for r in range(5)]
    assert len(make(dataset, rank=0, world_size=5, drop_last=True)) == 4
    assert [len(k) for k in kept] == [4] * 5 and len({i for k in kept for i in k}) == 20


def test_set_epoch_reaches_persistent_workers(dataset: Path) -> None:
    rec = Records(dataset)
    lds = make(dataset)
    dl = DataLoader(lds, batch_size=4, num_workers=2, persistent_workers=True)
    first = rec.ids(samples(dl))
    lds.set_epoch(1)
    second = rec.ids(samples(dl))
    del dl  # stops the workers now, not when a failed assertion's traceback is collected
    assert sorted(second) == list(range(24))
    assert second != first


def _probes(monkeypatch: pytest.MonkeyPatch, slow: Callable[[], bool]) -> None:
    """Make the Loader's device probe say "HDD-like" whenever ``slow()`` is true (as a burst of load can)."""
    import recpack.loader

    real = recpack.loader.probe_latency

    def probe(*args: Any, **kw: Any) -> Any:
        result = dict(real(*args, **kw))
        hdd = slow()
        result.update(p50_ms=100.0 if hdd else 0.05, iops=10.0 if hdd else 1e5)
        return result

    monkeypatch.setattr(recpack.loader, "probe_latency", probe)


def test_workers_agree_on_the_order_whatever_their_device_probes(dataset: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """shard_shuffle's run length follows the device probe; workers that measured differently must still split
    one order (they do: workers, like ranks without torch.distributed, do not probe)."""
    def slow() -> bool:
        info = get_worker_info()
        return info is not None and info.id == 1

    _probes(monkeypatch, slow)
    rec = Records(dataset)
    got = rec.ids(samples(DataLoader(make(dataset, order="shard_shuffle"), batch_size=4, num_workers=2)))
    assert sorted(got) == list(range(24)), Counter(got)


def test_an_epoch_order_does_not_depend_on_the_device_probe(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def slow() -> bool:
        calls.append(1)
        return len(calls) > 1  # a second probe would run during a burst of load and see an HDD

    rec = Records(dataset)
    _probes(monkeypatch, slow)
    lds = make(dataset, order="shard_shuffle")
    passes = []
    for _ in range(2):
        lds.set_epoch(0)
        passes.append(rec.ids(samples(DataLoader(lds, batch_size=4))))
    assert len(calls) == 1 and passes[0] == passes[1]  # one probe, in __init__, decides for every epoch


def _damage_one_record(path: Path) -> str:
    """Flip a byte in the middle of the first record of shard 1; returns the shard's name."""
    name = "shard-00001.rpk"
    with ShardReader(str(path / name)) as r:
        offset, length = int(r.table["offset"][0]), int(r.table["length"][0])
    with open(path / name, "r+b") as f:
        f.seek(offset + length // 2)
        byte = f.read(1)[0]
        f.seek(offset + length // 2)
        f.write(bytes([byte ^ 0xFF]))
    return name


def error_of(dl: DataLoader) -> tuple[type[BaseException], str]:  # type: ignore[type-arg]
    """The type and message of the error that ends an epoch of ``dl``.

    Not the exception itself, and its traceback dropped: DataLoader's re-raise leaves the exception in a
    reference cycle with its own traceback, whose frames keep the DataLoader iterator alive until some later
    gc; that worker shutdown (from gc) then waits 5 s per worker for a stop message that never arrives."""
    try:
        samples(dl)
    except Exception as exc:
        exc.__traceback__ = None
        return type(exc), str(exc)
    raise AssertionError("the epoch ended without an error")


@pytest.mark.parametrize("workers", [0, 2])
def test_a_damaged_record_stops_the_epoch_with_its_error(dataset: Path, tmp_path: Path, workers: int) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(dataset, bad)
    shard = _damage_one_record(bad)
    kind, message = error_of(DataLoader(make(bad), batch_size=4, num_workers=workers))
    assert "checksum mismatch" in message and shard in message
    if workers == 0:
        assert issubclass(kind, recpack.errors.CorruptRecord)
    else:  # DataLoader re-raises a worker's error as its type when it can rebuild it from the message alone
        assert "Caught CorruptRecord in DataLoader worker process" in message
    assert not wait_no_threads()


def test_a_damaged_record_in_a_worker_is_still_a_recpack_error(dataset: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(dataset, bad)
    _damage_one_record(bad)
    kind, _ = error_of(DataLoader(make(bad), batch_size=4, num_workers=2))
    assert issubclass(kind, recpack.RecpackError)


def test_a_damaged_record_is_skipped_when_asked(dataset: Path, tmp_path: Path) -> None:
    rec = Records(dataset)
    bad = tmp_path / "bad"
    shutil.copytree(dataset, bad)
    _damage_one_record(bad)
    with pytest.warns(RuntimeWarning, match="skipping bad record"):
        got = rec.ids(samples(DataLoader(make(bad, on_error="skip"), batch_size=4)))
    assert len(got) == len(set(got)) == 23


class Boom(Exception):
    pass


def test_break_exception_and_gc_stop_every_thread(dataset: Path) -> None:
    dl = DataLoader(make(dataset), batch_size=4)
    for _ in dl:
        assert recpack_threads()  # the worker's Loader runs in this process (num_workers=0)
        break
    assert not wait_no_threads()
    with pytest.raises(Boom):
        for _ in dl:
            raise Boom
    assert not wait_no_threads()
    it = iter(dl)
    next(it)
    assert recpack_threads()
    del it
    gc.collect()
    assert not wait_no_threads()
    assert len(samples(dl)) == 24  # and the dataset still works afterwards
    assert not wait_no_threads()
