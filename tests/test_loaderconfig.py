"""recpack.loaderconfig and the Loader's iteration contract (issue 14): every argument is checked when the
Loader is made, with the fix in the message; iteration behaves like torch's DataLoader."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from recpack import Loader, PackOptions, pack
from recpack.loaderconfig import LoaderConfig, resolve_device
from recpack.synth import make_image_folder

SMALL = {"batch_size": 4, "size": 16, "device": "cpu", "threads": 1}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("cfg")
    make_image_folder(base / "src", 18, classes=3, size=(40, 30), seed=2)
    pack(base / "src", base / "ds", PackOptions(num_shards=2, workers=0, progress=False, fsync=False))
    return base / "ds"


@pytest.mark.parametrize("kw, match", [
    ({"transform": 42}, "transform must be"),
    ({"threads": -1}, "threads must be between"),
    ({"seed": -1}, "seed must be between"),
    ({"seed": 1.5}, "seed must be an integer"),
    ({"batch_size": 2.5}, "batch_size must be an integer"),
    ({"batch_size": True}, "batch_size must be an integer"),
    ({"prefetch": 10**6}, "prefetch must be between"),
    ({"order": "fast"}, "order must be one of"),
    ({"io": "fast"}, "io must be one of"),
    ({"normalize": ((0.5, 0.5, 0.5), (0.0, 1.0, 1.0))}, "std must be > 0"),
    ({"normalize": ((1, 2), (3, 4))}, "1 or 3 finite numbers"),
    ({"dtype": torch.int32}, "float dtype"),
    ({"decode": True, "transform": None}, "needs decode=False"),
])
def test_bad_arguments_are_refused_at_construction(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LoaderConfig(**kw)  # type: ignore[arg-type]


def test_normalize_in_0_1_units_warns() -> None:
    with pytest.warns(UserWarning, match="0..255"):
        LoaderConfig(normalize=((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LoaderConfig(normalize=((123.7, 116.3, 103.5), (58.4, 57.1, 57.4)))


def test_devices_the_machine_lacks_are_refused() -> None:
    assert resolve_device("cpu").type == "cpu"
    for device in ("mps", "xpu"):
        with pytest.raises(ValueError, match=f"'{device}'"):
            resolve_device(device)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="is_available"):
            resolve_device("cuda")


def test_huge_batch_size_allocates_only_what_an_epoch_holds(dataset: Path) -> None:
    loader = Loader(dataset, **{**SMALL, "batch_size": 10**6})
    assert loader.memory_bytes < 200 << 20  # slots for 18 records (a million would be 3 GB), plus read buffers
    (images, labels), = list(loader)
    assert images.shape[0] == labels.shape[0] == 18


def _ids(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[int]:
    return [int(v) for _, y in batches for v in y]


def test_each_iter_starts_the_epoch_like_a_dataloader(dataset: Path) -> None:
    loader = Loader(dataset, seed=1, order="random", **SMALL)
    full = [(x.clone(), y.clone()) for x, y in loader]  # epoch 0, then the loader moves to epoch 1
    loader.set_epoch(0)
    for _ in loader:
        break  # a break, then a new pass: the whole epoch again, not the rest of it
    again = [(x.clone(), y.clone()) for x, y in loader]
    assert len(again) == len(full) and all(torch.equal(a[0], b[0]) for a, b in zip(again, full))
    assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["batch"] == 0  # the next epoch


def test_a_second_live_iterator_is_refused(dataset: Path) -> None:
    loader = Loader(dataset, **SMALL)
    first = iter(loader)
    next(first)
    with pytest.raises(RuntimeError, match="already being iterated"):
        next(iter(loader))
    first.close()
    assert len(list(loader)) == len(loader)  # the first one closed: a new pass runs


def test_a_state_at_the_end_of_an_epoch_resumes_at_the_next(dataset: Path) -> None:
    a = Loader(dataset, seed=4, order="random", **SMALL)
    list(a)
    state = a.state_dict()
    assert (state["epoch"], state["batch"]) == (1, 0)
    b = Loader(dataset, seed=4, order="random", **SMALL)
    b.load_state_dict(state)
    a.set_epoch(1)
    assert _ids([(x, y) for x, y in b]) == _ids([(x, y) for x, y in a])


def test_a_batch_of_only_bad_records_is_not_yielded(dataset: Path, tmp_path: Path) -> None:
    import shutil

    from recpack.shard import ShardReader

    shutil.copytree(dataset, tmp_path / "ds")
    shard = tmp_path / "ds" / "shard-00000.rpk"
    with ShardReader(str(shard)) as r:
        offsets, lengths = r.table["offset"].tolist(), r.table["length"].tolist()
    raw = bytearray(shard.read_bytes())
    for off, ln in zip(offsets, lengths):
        raw[off + ln - 10] ^= 0xFF  # every record of shard 0 damaged
    shard.write_bytes(bytes(raw))
    loader = Loader(tmp_path / "ds", order="sequential", on_error="skip", **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(loader)
    assert all(len(y) > 0 for _, y in batches)
    assert sum(len(y) for _, y in batches) + loader.stats["skipped"] == 18


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_loader_used_in_a_forked_child_starts_afresh(dataset: Path) -> None:
    loader = Loader(dataset, order="sequential", **SMALL)
    it = iter(loader)
    next(it)  # threads running in the parent
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's threads do not exist here
        try:
            n = sum(len(y) for _, y in loader)
            os.write(w, str(n).encode())
        finally:
            os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    got = os.read(r, 100).decode()
    os.close(r)
    it.close()
    assert status == 0 and got == "18"


def test_epoch_must_be_a_non_negative_integer(dataset: Path) -> None:
    loader = Loader(dataset, **SMALL)
    for bad in (-1, 1.5, "2", np.float64(1)):
        with pytest.raises(ValueError, match="epoch"):
            loader.set_epoch(bad)  # type: ignore[arg-type]
