"""A real full disk: a 24 MiB ext4 on a loop device, partly taken by a filler file, receives a pack bigger
than its free space. The pack stops with a clear PackError, publishes nothing half-written (no index.json;
every shard under its final name passes a full check), and after the filler is deleted the same command
resumes and produces exactly the files of a pack on a roomy disk. Needs root, loop devices and mkfs.ext4.
Filled in docs/reliability.md ("Full disk")."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import recpack
from recpack.bench.emulate.host import MKFS_OPTIONS as _MKFS, find_tool as _which
from recpack.errors import FormatError, PackError
from recpack.pack import PackOptions, pack
from recpack.backends.shards import check_shard

MiB = 1 << 20
DISK = 24 * MiB
OPTS = PackOptions(shard_size=MiB, workers=0, progress=False)  # fsync on: the real write path
# free space left before packing ~14 MiB: from nothing at all (the state folder fails) to all but the last shard
FREE_MIB = [0.0, 0.05, 0.5, 2.0, 5.0, 9.0, 13.0, 13.6]


def _tool(name: str) -> str:
    """The full path of a system tool (found in /usr/sbin and /sbin too, as the library finds them): a PATH
    without /usr/sbin must not make these tests fail."""
    return _which(name) or name


def _run(*argv: str) -> str:
    return subprocess.run([_tool(argv[0]), *argv[1:]], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def small_ext4(tmp_path: Path) -> Iterator[Path]:
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("needs root on Linux (loop device, mkfs.ext4, mount)")
    missing = [t for t in ("losetup", "mount", "umount", "mkfs.ext4") if _which(t) is None]
    if missing or not os.path.exists("/dev/loop-control"):
        pytest.skip(f"needs loop devices and {', '.join(missing) or 'mkfs.ext4'}")
    backing, mnt = tmp_path / "disk.img", tmp_path / "mnt"
    with open(backing, "wb") as f:
        f.truncate(DISK)
    mnt.mkdir()
    loop = ""
    try:
        _run("mkfs.ext4", *_MKFS["ext4"], str(backing))
        try:
            loop = _run("losetup", "--find", "--show", str(backing)).strip()
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"no loop device here: {exc.stderr.strip()}")
        _run("mount", "-o", "noatime", loop, str(mnt))
        yield mnt
    finally:
        if os.path.ismount(mnt):
            if subprocess.run([_tool("umount"), str(mnt)], capture_output=True).returncode != 0:
                subprocess.run([_tool("umount"), "-l", str(mnt)], capture_output=True)
        if loop:
            subprocess.run([_tool("losetup"), "-d", loop], capture_output=True)
        backing.unlink(missing_ok=True)


def make_source(src: Path, total: int) -> None:
    """Noise JPEGs (~190 KB each, barely compressible) adding up to about ``total`` bytes."""
    rng = np.random.default_rng(0)
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    size, i = 0, 0
    while size < total:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
        (src / "ab"[i % 2] / f"{i:04d}.jpg").write_bytes(buf.getvalue())
        size += len(buf.getvalue())
        i += 1


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def fill(mnt: Path, leave: int) -> Path:
    """A filler file that leaves about ``leave`` bytes free."""
    filler = mnt / "filler"
    free = shutil.disk_usage(mnt).free
    with open(filler, "wb") as f:
        chunk = b"\0" * MiB
        todo = max(0, free - leave)
        try:
            while todo > 0:
                todo -= f.write(chunk[:min(todo, MiB)])
        except OSError:
            pass
        f.flush()
        os.fsync(f.fileno())
    return filler


@pytest.mark.root
def test_full_disk_clear_error_nothing_half_published_then_resume(small_ext4: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_source(src, 14 * MiB)
    pack(src, tmp_path / "ref", OPTS)
    expected = files_of(tmp_path / "ref")
    assert sum(len(b) for b in expected.values()) < 20 * MiB
    out = small_ext4 / "ds"
    for free_mib in FREE_MIB:
        filler = fill(small_ext4, int(free_mib * MiB))
        with pytest.raises(PackError) as info:
            pack(src, out, OPTS)
        msg = str(info.value)
        assert "No space left on device" in msg and "bytes free" in msg, msg
        assert "free some space and re-run the same command" in msg, msg
        if out.exists():
            names = os.listdir(out)
            assert "index.json" not in names, free_mib
            assert not [n for n in names if n.endswith(".tmp")], (free_mib, names)
            for name in names:
                if name.endswith(".rpk"):
                    assert check_shard(str(out / name)).ok, (free_mib, name)
            with pytest.raises(recpack.ManifestError):
                recpack.open(out)
        kept = len(list(out.glob("*.rpk"))) if out.exists() else 0
        print(f"free {free_mib} MiB: {kept} shards kept; {msg}")
        filler.unlink()
        res = pack(src, out, OPTS)
        assert res.resumed == kept
        assert files_of(out) == expected, free_mib
        assert res.records == len(list(src.rglob("*.jpg")))
        shutil.rmtree(out)


@pytest.mark.root
@pytest.mark.parametrize("free_mib", [0.05, 5.0])
def test_lmdb_full_disk_clear_error_then_resume(small_ext4: Path, tmp_path: Path, free_mib: float) -> None:
    """LMDB reports a short write on a full disk as EIO: the same PackError as for shards, and a re-run after
    freeing space completes the database with the same records as on a roomy disk."""
    src = tmp_path / "src"
    make_source(src, 10 * MiB)
    opts = PackOptions(backend="lmdb", workers=0, progress=False)
    pack(src, tmp_path / "ref", opts)
    out = small_ext4 / "db"
    filler = fill(small_ext4, int(free_mib * MiB))
    with pytest.raises(PackError) as info:
        pack(src, out, opts)
    msg = str(info.value)
    assert "No space left on device" in msg and "free some space and re-run the same command" in msg, msg
    assert not (out / "index.json").exists()
    filler.unlink()
    res = pack(src, out, opts)
    assert res.records == len(list(src.rglob("*.jpg")))
    with recpack.open(out) as got, recpack.open(tmp_path / "ref") as want:
        assert [(r.key, r.label, r.data) for r in got] == [(r.key, r.label, r.data) for r in want]


def test_lmdb_system_errors_become_os_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without root: LMDB's text errors from system calls map to the OSError they stand for, others to a
    FormatError; an EIO (LMDB's word for a short write) counts as a full disk only when less than twice the
    write plus 1 MiB is free."""
    import errno

    import lmdb

    from recpack.backends import lmdb as backend

    def raising(text: str, need: int = 0) -> OSError:
        with pytest.raises(OSError) as info, backend._system_errors(str(tmp_path), need):
            raise lmdb.Error(text)
        return info.value

    assert raising(f"{tmp_path}: Read-only file system").errno == errno.EROFS
    assert raising("mdb_txn_commit: No space left on device").errno == errno.ENOSPC
    assert raising("mdb_txn_commit: Input/output error", need=1000).errno == errno.EIO  # plenty free here
    monkeypatch.setattr(backend.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 30, 1 << 30, 4096))
    assert raising("mdb_txn_commit: Input/output error", need=1000).errno == errno.ENOSPC
    with pytest.raises(FormatError, match=r"data.mdb: the LMDB database cannot be written \(mdb_get: "
                       "MDB_CORRUPTED.*pass --overwrite"), backend._system_errors(str(tmp_path)):
        raise lmdb.CorruptedError("mdb_get: MDB_CORRUPTED: Located page was wrong type")
