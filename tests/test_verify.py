"""Damage is found and named: flipped bits, truncation, missing shards; skip mode delivers intact records."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import pytest

import recpack
from recpack.errors import CorruptRecord
from recpack.pack import PackOptions, pack
from recpack.shard import ShardReader
from recpack.verify import verify


@pytest.fixture
def packed(tiny_jpegs: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ds"
    pack(tiny_jpegs, out, PackOptions(num_shards=2, workers=0, progress=False, fsync=False))
    return out


def flip(path: Path, offset: int, mask: int = 0x10) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= mask
    path.write_bytes(raw)


def record_at(shard: Path, j: int) -> tuple[int, int, str]:
    with ShardReader(str(shard)) as r:
        return int(r.table["offset"][j]), int(r.table["length"][j]), r.read(j).key


def test_clean_dataset_verifies(packed: Path) -> None:
    res = verify(packed, decode=True)
    assert res.ok and res.records == res.expected > 0 and not res.problems


@pytest.mark.parametrize("trial", range(12))
def test_each_flipped_bit_in_a_record_is_found_and_named(packed: Path, trial: int) -> None:
    rng = random.Random(trial)
    shard = packed / "shard-00001.rpk"
    j = rng.randrange(5)
    offset, length, key = record_at(shard, j)
    flip(shard, offset + rng.randrange(length), 1 << rng.randrange(8))
    res = verify(packed)
    assert not res.ok
    bad = [p for p in res.problems if p.offset == offset]
    assert bad and bad[0].shard == "shard-00001.rpk"
    assert bad[0].key in (key, None)  # key is named unless the damage hit the metadata itself
    assert res.records == res.expected - 1
    with recpack.open(packed) as ds:
        with pytest.raises(CorruptRecord, match="shard-00001.rpk"):
            list(ds)
    with recpack.open(packed, on_error="skip") as ds, warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        keys = [r.key for r in ds]
        assert ds.stats["skipped"] == 1 and len(w) == 1
    assert len(keys) == len(set(keys)) == res.expected - 1 and key not in keys


def test_truncation_is_found_and_intact_records_recovered(packed: Path) -> None:
    shard = packed / "shard-00000.rpk"
    with recpack.open(packed) as ds:
        all_keys = {r.key for r in ds}
        n0 = ds.manifest.shards[0].records
    offset, length, _ = record_at(shard, n0 // 2)
    raw = shard.read_bytes()
    shard.write_bytes(raw[: offset + length // 2])
    res = verify(packed)
    assert not res.ok
    assert any("truncated" in p.message or "table" in p.message or "layout" in p.message for p in res.problems)
    with recpack.open(packed, on_error="skip") as ds, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = [r.key for r in ds]
    assert len(got) == len(set(got))
    assert len(got) == len(all_keys) - (n0 - n0 // 2)  # every record before the cut survives
    with recpack.open(packed) as ds, pytest.raises(recpack.FormatError):
        list(ds)


def test_damage_in_table_and_padding(packed: Path) -> None:
    shard = packed / "shard-00000.rpk"
    with ShardReader(str(shard)) as r:
        table_offset = r.header.table_offset
        pad = r.header.data_offset + r.header.data_length
    flip(shard, pad + 1 if pad + 1 < table_offset else table_offset + 5)
    res = verify(packed)
    assert not res.ok and res.problems[0].shard == "shard-00000.rpk"


def test_missing_shard_and_decode_failures(packed: Path, tmp_path: Path) -> None:
    (packed / "shard-00001.rpk").unlink()
    res = verify(packed)
    assert not res.ok and any("missing" in p.message for p in res.problems)


def test_verify_decode_catches_undecodable_image(tmp_path: Path) -> None:
    src = tmp_path / "src" / "a"
    src.mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (64, 48), (1, 2, 3)).save(src / "ok.jpg")
    jpeg = (src / "ok.jpg").read_bytes()
    # header parses and EOI present, but the entropy-coded data is garbage: only --decode finds it
    bad = jpeg[:len(jpeg) // 2] + bytes(range(256)) * 4 + b"\xff\xd9"
    (src / "bad.jpg").write_bytes(bad)
    res_pack = pack(tmp_path / "src", tmp_path / "ds", PackOptions(workers=0, progress=False, fsync=False))
    if res_pack.records < 2:
        pytest.skip("the header check already rejected the damaged JPEG")
    assert verify(tmp_path / "ds").ok
    res = verify(tmp_path / "ds", decode=True)
    assert not res.ok and [p.key for p in res.problems] == ["a/bad.jpg"]


def test_lmdb_values_are_plain_msgpack_and_damage_is_found(tiny_jpegs: Path, tmp_path: Path) -> None:
    import lmdb
    import msgpack

    out = tmp_path / "db"
    pack(tiny_jpegs, out, PackOptions(workers=0, backend="lmdb", progress=False, fsync=False))
    env = lmdb.open(str(out))
    with env.begin(write=True) as txn:
        value = msgpack.unpackb(txn.get(b"r0000000003"))
        key = value["meta"]["key"]
        assert value["data"] == (tiny_jpegs / key).read_bytes()  # readable without recpack
        value["data"] = value["data"][:-9] + b"damaged!!"
        txn.put(b"r0000000003", msgpack.packb(value))
    env.close()
    res = verify(out)
    assert not res.ok and [(p.offset, p.key) for p in res.problems] == [(3, key)]
    with recpack.open(out) as ds, pytest.raises(CorruptRecord, match="checksum"):
        ds[3]
    with recpack.open(out, on_error="skip") as ds, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keys = [r.key for r in ds]
        assert key not in keys and len(keys) == len(ds) - 1 and ds.stats["skipped"] == 1
