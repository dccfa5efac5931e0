"""The manifest: validation, safety against paths leading outside the dataset, clear errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import recpack
from recpack.errors import ManifestError
from recpack.index import Manifest, ShardEntry, read_manifest, write_manifest


def _write(folder: Path, **over: object) -> None:
    doc = Manifest(records=1, shards=[ShardEntry("shard-00000.rpk", 1, 8192, 0xDEADBEEF)]).to_json()
    doc.update(over)
    (folder / "index.json").write_text(json.dumps(doc))


def test_round_trip(tmp_path: Path) -> None:
    m = Manifest(records=3, shards=[ShardEntry("shard-00000.rpk", 3, 8192, 0x0102ABCD)], classes=["a", "b"],
                 pack={"seed": 5})
    write_manifest(str(tmp_path), m)
    back = read_manifest(tmp_path)
    assert back.records == 3 and back.shards == m.shards and back.classes == ["a", "b"] and back.seed == 5
    assert read_manifest(tmp_path / "index.json").records == 3
    assert not (tmp_path / "index.json.tmp").exists()


@pytest.mark.parametrize("name", ["../evil.rpk", "/etc/passwd.rpk", "sub/shard.rpk", "..", "shard.txt"])
def test_refuses_names_outside_the_folder(tmp_path: Path, name: str) -> None:
    _write(tmp_path, shards=[{"name": name, "records": 1, "bytes": 1, "crc32c": "00000000"}])
    with pytest.raises(ManifestError):
        read_manifest(tmp_path)


def test_refuses_symlink_out(tmp_path: Path) -> None:
    outside = tmp_path / "outside.rpk"
    outside.write_bytes(b"x")
    ds = tmp_path / "ds"
    ds.mkdir()
    try:
        os.symlink(outside, ds / "shard-00000.rpk")
    except OSError:
        pytest.skip("symlinks not available")
    _write(ds)
    with pytest.raises(ManifestError, match="outside the dataset"):
        read_manifest(ds)


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not a recpack dataset"):
        recpack.open(tmp_path)
    (tmp_path / ".recpack-pack").mkdir()
    with pytest.raises(ManifestError, match="resume"):
        recpack.open(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_manifest(tmp_path)
    _write(tmp_path, format_version=3)
    with pytest.raises(ManifestError, match="v3"):
        read_manifest(tmp_path)
    _write(tmp_path, format_version=1, pack={"source": "my photos", "seed": 3, "shard_size": 1 << 20,
                                             "source_kind": "imagefolder"})
    with pytest.raises(ManifestError, match=r"format v1.*recpack pack 'my photos' .* --seed 3 --shard-size 1048576 "
                                            r"--overwrite"):
        read_manifest(tmp_path)
    _write(tmp_path, records=5)
    with pytest.raises(ManifestError, match="add up"):
        read_manifest(tmp_path)


@pytest.mark.parametrize("text", ['{"format": "recpack", "records": ' + "9" * 5000 + "}",
                                  "[" * 100_000 + "]" * 100_000,
                                  '{"format": "recpack", "format_version": 2, "records": 18446744073709551616}'])
def test_out_of_range_json_is_a_manifest_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "index.json").write_text(text)
    with pytest.raises(ManifestError):
        read_manifest(tmp_path)


def test_counts_beyond_int64_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, records=2**64, shards=[{"name": "shard-00000.rpk", "records": 2**64, "bytes": 1,
                                             "crc32c": "00000000"}])
    with pytest.raises(ManifestError, match="records"):
        read_manifest(tmp_path)
