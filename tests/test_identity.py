"""Every delivered sample is the right one, or an error (issue 14): records carry their identity, shards their
dataset and place, files their version — swapped records, swapped LMDB values, a shard listed twice, a shard
from another pack, a re-pack under a running Loader and a state from another dataset are all refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import recpack
from recpack import Loader, PackOptions, pack
from recpack.errors import CorruptRecord, FormatError
from recpack.shard import ShardReader
from recpack.synth import make_image_folder
from recpack.verify import verify

SMALL = {"batch_size": 4, "size": 16, "device": "cpu", "threads": 1, "order": "sequential"}


def _pack(src: Path, out: Path, **kw: object) -> Path:
    pack(src, out, PackOptions(num_shards=2, workers=0, progress=False, fsync=False, **kw))  # type: ignore[arg-type]
    return out


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("identity")
    # equal-size images of one colour pattern: records of equal length are likely, and forced below anyway
    make_image_folder(base / "src", 12, classes=3, size=(32, 24), seed=9)
    return base / "src"


def _read_all(path: Path) -> None:
    with recpack.open(path) as ds:
        list(ds)


def _loader_epoch(path: Path) -> None:
    for _ in Loader(path, **SMALL):
        pass


def _swap_two_records(ds: Path) -> tuple[str, int, int]:
    """Swap two records of shard 0 in place, keeping the file's size: the second record is padded (or the
    first cut) so both spans keep their table lengths. Returns the shard and both offsets."""
    name = "shard-00000.rpk"
    with ShardReader(str(ds / name)) as r:
        (o1, o2), (n1, n2) = r.table["offset"][:2].tolist(), r.table["length"][:2].tolist()
    raw = bytearray((ds / name).read_bytes())
    a, b = bytes(raw[o1:o1 + n1]), bytes(raw[o2:o2 + n2])
    raw[o1:o1 + n1 + n2] = (b + a)[:n1 + n2] if n1 == n2 else (b + a)
    (ds / name).write_bytes(bytes(raw))
    return name, o1, o2


def test_swapped_records_are_refused_by_every_reader(src: Path, tmp_path: Path) -> None:
    ds = _pack(src, tmp_path / "ds")
    name, o1, _ = _swap_two_records(ds)
    with pytest.raises(CorruptRecord, match="moved, swapped|length|checksum"):
        _read_all(ds)
    with pytest.raises(CorruptRecord, match="moved, swapped|length|checksum"):
        _loader_epoch(ds)
    with recpack.open(ds) as d, pytest.raises(CorruptRecord):
        d[0]
    result = verify(ds)
    assert not result.ok and any(p.shard == name and p.offset == o1 for p in result.problems)


def test_records_of_equal_length_swapped_name_the_records(src: Path, tmp_path: Path) -> None:
    """The case a length check cannot catch: two records of exactly the same length trade places (the same
    image file in two class folders: same bytes, same key length, labels 0 and 1)."""
    for c in ("a", "b"):
        (tmp_path / "src" / c).mkdir(parents=True)
        shutil.copy(next((src / "class_000").iterdir()), tmp_path / "src" / c / "x.jpg")
    ds = tmp_path / "ds"
    pack(tmp_path / "src", ds, PackOptions(workers=0, progress=False, fsync=False))
    name = "shard-00000.rpk"
    with ShardReader(str(ds / name)) as r:
        (o0, o1), (n0, n1) = r.table["offset"].tolist(), r.table["length"].tolist()
    assert n0 == n1
    raw = bytearray((ds / name).read_bytes())
    raw[o0:o0 + n0], raw[o1:o1 + n1] = raw[o1:o1 + n1], raw[o0:o0 + n0]
    (ds / name).write_bytes(bytes(raw))
    with pytest.raises(CorruptRecord, match="record 1 of shard 0 with label .* expects record 0 of shard 0"):
        _loader_epoch(ds)
    with pytest.raises(CorruptRecord, match="moved, swapped"):
        _read_all(ds)
    result = verify(ds)
    assert sorted(p.offset for p in result.problems) == [o0, o1]


def test_lmdb_values_swapped_between_keys(src: Path, tmp_path: Path) -> None:
    import lmdb

    ds = _pack(src, tmp_path / "ds", backend="lmdb")
    env = lmdb.open(str(ds), subdir=True)
    with env.begin(write=True) as txn:
        a, b = txn.get(b"r0000000000"), txn.get(b"r0000000001")
        txn.put(b"r0000000000", b)
        txn.put(b"r0000000001", a)
    env.close()
    with pytest.raises(CorruptRecord, match="moved between keys"):
        _loader_epoch(ds)
    result = verify(ds)
    assert not result.ok and {p.offset for p in result.problems} == {0, 1}


def test_a_shard_listed_twice_is_refused(src: Path, tmp_path: Path) -> None:
    ds = _pack(src, tmp_path / "ds")
    index = json.loads((ds / "index.json").read_text())
    index["shards"][1] = dict(index["shards"][0])
    index["records"] = 2 * index["shards"][0]["records"]
    (ds / "index.json").write_text(json.dumps(index))
    with pytest.raises(FormatError, match="listed twice"):
        Loader(ds, **SMALL)
    with pytest.raises(FormatError, match="listed twice"):
        _read_all(ds)
    assert any("listed twice" in p.message for p in verify(ds).problems)


def test_a_shard_from_another_pack_is_refused(src: Path, tmp_path: Path) -> None:
    ds = _pack(src, tmp_path / "ds")
    other = _pack(src, tmp_path / "other", seed=1)  # same images, another shuffle: same sizes and counts
    shutil.copy(other / "shard-00001.rpk", ds / "shard-00001.rpk")
    with pytest.raises(FormatError, match="another dataset"):
        Loader(ds, **SMALL)
    assert any("another dataset" in p.message for p in verify(ds).problems)


def test_a_repack_under_a_running_loader_is_refused(src: Path, tmp_path: Path) -> None:
    ds = _pack(src, tmp_path / "ds")
    loader = Loader(ds, **SMALL)
    next(iter(loader))
    _pack(src, ds, seed=5, overwrite=True)  # re-packed in place, new shuffle
    with pytest.raises(FormatError, match="changed since the dataset was opened"):
        for _ in loader:
            pass
    loader.close()


def test_a_state_from_another_dataset_is_refused(src: Path, tmp_path: Path) -> None:
    a, b = _pack(src, tmp_path / "a"), _pack(src, tmp_path / "b", seed=3)
    state = Loader(a, **SMALL).state_dict()
    with pytest.raises(ValueError, match="another dataset"):
        Loader(b, **SMALL).load_state_dict(state)


def test_a_version_1_dataset_is_refused_with_the_command_that_repacks_it(src: Path, tmp_path: Path) -> None:
    ds = _pack(src, tmp_path / "ds")
    index = json.loads((ds / "index.json").read_text())
    index["format_version"] = 1
    (ds / "index.json").write_text(json.dumps(index))
    with pytest.raises(recpack.ManifestError, match=f"recpack pack {src} {ds} --seed 0 --num-shards 2 --overwrite"):
        recpack.open(ds)


def test_identity_campaign_quick() -> None:
    """Two trials of every identity attack: no wrong record is ever delivered, and verify finds each."""
    from campaigns.identity import campaign

    results = campaign(2, seed=1)
    failures = [(attack, o.failures) for attack, outs in results.items() for o in outs if o.failures]
    assert not failures
    assert all(sum(o.checked for o in outs) > 0 or attack in ("duplicate", "foreign", "repack")
               for attack, outs in results.items())
