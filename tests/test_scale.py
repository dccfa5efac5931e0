"""campaigns/synthetic.py's writer (benchmarks/scale.py builds its 14M-record dataset with it) produces a valid
dataset, and the loader's table stays small."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner

import recpack
from campaigns.synthetic import Recipe, payload_bytes, record_meta, write_synthetic
from recpack.cli import cli
from recpack.format import encode_record, position
from recpack.loader import Loader
from recpack.order import ORDERS, Layout


def test_synthetic_dataset_is_valid_and_exact(tmp_path: Path) -> None:
    ds_path = tmp_path / "ds"
    write_synthetic(ds_path, 10_000, per_shard=2_800, payload=32)
    res = CliRunner().invoke(cli, ["verify", str(ds_path)])
    assert res.exit_code == 0, res.output
    with recpack.open(ds_path) as ds:
        assert len(ds) == 10_000 and len(ds.manifest.shards) == 4
        for i in (0, 1, 2_799, 2_800, 9_999):
            rec = ds[i]
            assert rec.key == f"img/{i:08d}.jpg" and rec.label == i % 100
        # the bytes are exactly what the normal record encoder writes
        for i in (0, 7, 2_801, 9_999):
            s, j = divmod(i, 2_800)
            row = Recipe(32).records(np.array([i]), s, j)[0]
            assert bytes(row) == encode_record(record_meta(i), payload_bytes(32), position(s, j), i % 100)


def test_loader_table_is_flat_arrays_of_31_bytes_per_record(tmp_path: Path) -> None:
    write_synthetic(tmp_path / "ds", 10_000, per_shard=1_000, payload=16)
    loader = Loader(tmp_path / "ds", batch_size=256, order="random", decode=False, transform=None, device="cpu")
    t = loader.table
    per_record = sum(a.nbytes for a in (t.shard, t.offset, t.length, t.label, t.width, t.height, t.flags)) / t.n
    assert per_record == 31
    assert t.label.tolist() == [i % 100 for i in range(10_000)]
    assert t.shard.tolist() == [i // 1_000 for i in range(10_000)]
    for name, fn in ORDERS.items():
        order = fn(Layout(t.starts), 0, 1, **loader.order_kw)
        assert sorted(order.tolist()) == list(range(10_000)), name
    loader.close()
