"""recpack.backends: every backend keeps the RecordSource protocol the same way — the registry picks it, the
table describes every record, ``record``, ``scan`` and ``payload`` (span reads) agree byte for byte, ``verify``
passes an intact dataset and ``summary`` says what it is."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from recpack import PackOptions, pack
from recpack.backends import BACKENDS, RecordSource, open_source
from recpack.backends.lmdb import LmdbSource
from recpack.backends.mxrec import RecSource
from recpack.backends.shards import ShardSource
from recpack.decode import decode_rgb
from recpack.errors import CorruptRecord, ManifestError
from recpack.record import Record
from recpack.synth import make_image_folder

MXNET = Path(__file__).parent / "data" / "mxnet"


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("backends")
    make_image_folder(base / "src", 14, classes=3, size=(40, 30), seed=5)
    out = {}
    for backend in ("shards", "lmdb"):
        out[backend] = base / backend
        pack(base / "src", out[backend], PackOptions(num_shards=3, workers=0, progress=False, fsync=False,
                                                     backend=backend))
    out["mxrec"] = MXNET / "im2rec.rec"
    return out


KINDS = {"shards": ShardSource, "lmdb": LmdbSource, "mxrec": RecSource}


def test_registry_knows_every_backend_once() -> None:
    assert BACKENDS == KINDS
    assert all(issubclass(c, RecordSource) for c in BACKENDS.values())


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_open_source_picks_the_backend(datasets: dict[str, Path], kind: str) -> None:
    with open_source(datasets[kind]) as src:
        assert type(src) is KINDS[kind] and src.kind == kind
        assert src.problems() == []


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_record_scan_and_payload_agree(datasets: dict[str, Path], kind: str) -> None:
    with open_source(datasets[kind]) as src:
        n = len(src)
        assert n == src.table.n > 0
        by_record = [src.record(i) for i in range(n)]
        assert all(isinstance(r, Record) and r.data for r in by_record)
        scanned = list(src.scan())
        assert [i for i, _ in scanned] == list(range(n))  # storage order, every record, nothing damaged
        assert [r for _, r in scanned] == by_record
        labels = np.array([(r.label[0] if isinstance(r.label, tuple) else r.label) for r in by_record])
        assert np.array_equal(src.table.label, labels)
        for i, rec in enumerate(by_record):
            assert src.where(i)[0]  # a file name for messages
            if src.spans:  # what the Loader does: read the record's bytes from its file, let the source check them
                s, off, ln = int(src.table.shard[i]), int(src.table.offset[i]), int(src.table.length[i])
                with open(src.files[s], "rb") as f:
                    f.seek(off)
                    view = memoryview(f.read(ln))
                assert bytes(src.payload(i, view)) == rec.data
            else:
                assert bytes(src.fetch(i)) == rec.data
            w, h = int(src.table.width[i]), int(src.table.height[i])
            assert decode_rgb(rec.data).shape[:2] == (h, w)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_verify_and_summary(datasets: dict[str, Path], kind: str) -> None:
    with open_source(datasets[kind]) as src:
        result = src.verify(decode_rgb)
        assert result.ok and result.records == result.expected == len(src) and result.decoded
        summary = src.summary()
        assert summary["backend"] == kind
        assert {"format_version", "created_by", "bytes", "files", "pack"} <= set(summary)
        assert sum(f["records"] for f in summary["files"]) == len(src)
        assert all(Path(p).is_file() for p in src.data_files())


def test_payload_refuses_damaged_bytes(datasets: dict[str, Path]) -> None:
    with open_source(datasets["shards"]) as src:
        s, off, ln = int(src.table.shard[1]), int(src.table.offset[1]), int(src.table.length[1])
        with open(src.files[s], "rb") as f:
            f.seek(off)
            data = bytearray(f.read(ln))
        data[len(data) // 2] ^= 0xFF  # damage inside the image bytes
        with pytest.raises(CorruptRecord, match="checksum"):
            src.payload(1, memoryview(bytes(data)))


def test_close_releases_files_and_reading_reopens_them(datasets: dict[str, Path]) -> None:
    for kind in ("shards", "lmdb"):
        src = open_source(datasets[kind])
        first = src.record(0)
        src.close()
        assert src.record(0) == first
        src.close()


def test_unknown_backend_and_missing_path(tmp_path: Path, datasets: dict[str, Path]) -> None:
    shutil.copytree(datasets["shards"], tmp_path / "ds")
    index = tmp_path / "ds" / "index.json"
    index.write_text(index.read_text().replace('"backend": "shards"', '"backend": "tfrecord"'))
    with pytest.raises(ManifestError, match="tfrecord.*upgrade recpack or re-pack"):
        open_source(tmp_path / "ds")
    with pytest.raises(ManifestError, match="does not exist"):
        open_source(tmp_path / "no" / "such")
