"""recpack.backends.lmdb: the LMDB backend reads what it wrote and refuses damaged databases with a clear
error — never a bus error from reading past the end of a truncated memory-mapped file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import recpack
from recpack import PackOptions, pack
from recpack.errors import FormatError
from recpack.synth import make_image_folder
from recpack.verify import verify


@pytest.fixture(scope="module")
def lmdb_ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("lmdb")
    make_image_folder(base / "src", 20, classes=2, size=(40, 30), seed=6)
    pack(base / "src", base / "ds", PackOptions(backend="lmdb", workers=0, progress=False, fsync=False))
    return base / "ds"


def test_reads_back(lmdb_ds: Path) -> None:
    with recpack.open(lmdb_ds) as ds:
        assert ds.backend == "lmdb" and len(ds) == 20 == len(list(ds))
        assert ds[5].key == list(ds)[5].key


def _damaged(lmdb_ds: Path, tmp_path: Path, keep: int | None = None, garbage: bool = False) -> Path:
    shutil.copytree(lmdb_ds, tmp_path / "ds")
    db = tmp_path / "ds" / "data.mdb"
    if garbage:
        db.write_bytes(os.urandom(20000))
    else:
        with open(db, "r+b") as f:
            f.truncate(keep)
    return tmp_path / "ds"


@pytest.mark.parametrize("fraction", [0.0, 0.02, 0.5, 0.98])
def test_truncated_database_is_a_clear_error(lmdb_ds: Path, tmp_path: Path, fraction: float) -> None:
    size = os.path.getsize(lmdb_ds / "data.mdb")
    ds = _damaged(lmdb_ds, tmp_path, keep=int(size * fraction) // 4096 * 4096)
    # in a child process: a regression here is a SIGBUS that would kill the test run
    code = ("import recpack, sys\ntry:\n    recpack.open(sys.argv[1])\nexcept recpack.FormatError as e:\n"
            "    print('refused:', e)\n")
    out = subprocess.run([sys.executable, "-c", code, str(ds)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "refused:" in out.stdout and "data.mdb" in out.stdout, out.stderr
    result = verify(ds)
    assert not result.ok and result.expected == 20 and result.problems
    with pytest.raises(FormatError, match="data.mdb"):
        recpack.Loader(ds, batch_size=4, size=16, device="cpu")


def test_garbage_database_is_a_clear_error(lmdb_ds: Path, tmp_path: Path) -> None:
    ds = _damaged(lmdb_ds, tmp_path, garbage=True)
    with pytest.raises(FormatError, match="not a readable LMDB database"):
        recpack.open(ds)
    assert not verify(ds).ok


def test_a_fifo_in_place_of_the_database_does_not_hang(lmdb_ds: Path, tmp_path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    shutil.copytree(lmdb_ds, tmp_path / "ds")
    (tmp_path / "ds" / "data.mdb").unlink()
    os.mkfifo(tmp_path / "ds" / "data.mdb")
    with pytest.raises(FormatError):
        recpack.open(tmp_path / "ds")
