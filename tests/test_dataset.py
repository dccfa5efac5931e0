"""recpack.open / Dataset: indexing like a sequence, iteration in storage order, and skip mode that accounts
for every record (delivered + skipped == len), whatever the damage."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import recpack
from recpack import PackOptions, pack
from recpack.errors import FormatError, ManifestError
from recpack.synth import make_image_folder


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("dataset")
    make_image_folder(base / "src", 30, classes=3, size=(40, 30), seed=4)
    pack(base / "src", base / "ds", PackOptions(num_shards=3, workers=0, progress=False, fsync=False))
    return base / "ds"


def test_sequence_behaviour(packed: Path) -> None:
    with recpack.open(packed) as ds:
        assert len(ds) == 30 and ds.backend == "shards" and ds.classes == ["class_000", "class_001", "class_002"]
        records = list(ds)
        assert [r.key for r in records] == [ds[i].key for i in range(30)]
        assert ds[-1] == ds[29] and ds[-30] == ds[0]
        assert ds[3:7] == records[3:7] and ds[::10] == records[::10] and ds[40:] == []
        assert np.array_equal(ds.labels, [r.label for r in records])
        assert ds.table()["length"].sum() > sum(len(r.data) for r in records)  # headers and metadata on top
        for bad in (30, -31):
            with pytest.raises(IndexError, match="out of range"):
                ds[bad]
        with pytest.raises(TypeError, match="integers or slices"):
            ds["0"]  # type: ignore[call-overload]
        assert "30 records" in repr(ds)


def test_open_errors_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="does not exist"):
        recpack.open(tmp_path / "no" / "such")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="not a recpack dataset"):
        recpack.open(tmp_path / "empty")
    with pytest.raises(ValueError, match="on_error"):
        recpack.open(tmp_path, on_error="ignore")


@pytest.mark.parametrize("keep", [0, 4096, 6000])
def test_skip_mode_counts_everything_not_delivered(packed: Path, tmp_path: Path, keep: int) -> None:
    shutil.copytree(packed, tmp_path / "ds")
    shard = tmp_path / "ds" / "shard-00001.rpk"
    shard.write_bytes(shard.read_bytes()[:keep])  # truncated: header, table and most records gone
    with recpack.open(tmp_path / "ds", on_error="skip") as ds:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            delivered = list(ds)
        assert len(delivered) + ds.stats["skipped"] == len(ds) == 30
        assert ds.stats["skipped"] >= 1 and caught
        assert len({r.key for r in delivered}) == len(delivered)  # nothing twice
    with recpack.open(tmp_path / "ds") as ds, pytest.raises(FormatError, match="shard-00001.rpk"):
        list(ds)
