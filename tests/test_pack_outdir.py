"""The output folder: where it may be, what a re-run keeps, who may write to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import importlib
import os
import subprocess
import sys
import time

import pytest

from recpack.errors import PackError
from recpack.pack import PackOptions, pack
from recpack.packing import write

QUIET = dict(progress=False, fsync=False, workers=0)
pack_module = importlib.import_module("recpack.pack")  # (the attribute recpack.pack is the function)


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("where", ["ds", "cat/ds", "."])
def test_output_inside_the_source_folder_is_refused(tiny_jpegs: Path, where: str) -> None:
    out = tiny_jpegs / where
    with pytest.raises(PackError, match="inside the source folder.*choose an output folder outside"):
        pack(tiny_jpegs, out, PackOptions(**QUIET))
    assert where == "." or not out.exists()  # refused before anything was written
    assert sorted(p.name for p in tiny_jpegs.iterdir()) == ["cat", "dog", "fish"]


def test_hidden_output_inside_the_source_is_skipped_by_scans(tiny_jpegs: Path) -> None:
    out = tiny_jpegs / ".recpack"
    first = pack(tiny_jpegs, out, PackOptions(**QUIET))
    assert first.records == 24
    again = pack(tiny_jpegs, out, PackOptions(**QUIET))  # the same plan: the output is not an input
    assert again.already_done and again.records == 24


def test_resume_rewrites_a_finished_shard_damaged_since(tiny_jpegs: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    opts = PackOptions(num_shards=3, **QUIET)
    pack(tiny_jpegs, tmp_path / "ref", opts)
    out = tmp_path / "ds"
    real = write.write_shard
    calls = {"n": 0}

    def die_on_third(*args, **kw):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(pack_module, "write_shard", die_on_third)
    with pytest.raises(KeyboardInterrupt):
        pack(tiny_jpegs, out, opts)
    monkeypatch.undo()
    shard = out / "shard-00000.rpk"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x40  # one flipped bit in a record, same size: a size check keeps it
    shard.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=r"shard-00000.rpk: changed since it was finished .*writing it again"):
        res = pack(tiny_jpegs, out, opts)
    assert res.resumed == 1  # shard 1 kept, shard 0 rewritten, shard 2 written
    assert files_of(out) == files_of(tmp_path / "ref")


SLOW_PACK = """
import sys, time
from recpack.packing import workers
real = workers.process
def slow(items, opts):
    time.sleep(0.2)
    return real(items, opts)
workers.process = slow
from recpack.pack import PackOptions, pack
pack(sys.argv[1], sys.argv[2], PackOptions(num_shards=24, workers=0, progress=False, fsync=False))
"""


def test_a_second_pack_into_the_same_folder_is_refused_until_the_first_ends(tiny_jpegs: Path,
                                                                             tmp_path: Path) -> None:
    out = tmp_path / "ds"
    first = subprocess.Popen([sys.executable, "-c", SLOW_PACK, str(tiny_jpegs), str(out)])
    try:
        deadline = time.monotonic() + 60
        while not (out / ".recpack-pack" / "plan.json").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first.poll() is None, "the first pack ended too soon"
        for opts in (PackOptions(num_shards=24, **QUIET), PackOptions(seed=5, overwrite=True, **QUIET)):
            with pytest.raises(PackError, match=rf"another recpack pack is writing to {out} \(pid {first.pid}\); "
                                                "wait for it to finish, or choose another output folder"):
                pack(tiny_jpegs, out, opts)
        while not list((out / ".recpack-pack").glob("shard-*.json")) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        first.kill()  # SIGKILL on POSIX: its lock ends with it, nothing to clean up
        first.wait()
    assert not (out / "index.json").exists()
    res = pack(tiny_jpegs, out, PackOptions(num_shards=24, **QUIET))
    assert res.records == 24 and res.resumed >= 1
    assert not (out / ".recpack-pack").exists()


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A folder this process cannot write into: a read-only tmpfs under root on Linux, else mode 0o555."""
    where = tmp_path / "ro"
    where.mkdir()
    if sys.platform == "win32":
        pytest.skip("read-only folders differ on Windows")
    if os.geteuid() != 0:
        where.chmod(0o555)
        yield where
        where.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(where)],
                      capture_output=True).returncode != 0:
        pytest.skip("needs a read-only mount (root can write into any mode-0o555 folder)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.parametrize("backend", ["shards", "lmdb"])
@pytest.mark.parametrize("inside", [False, True])
def test_read_only_output_folder_is_a_clear_error(tiny_jpegs: Path, read_only: Path, backend: str,
                                                  inside: bool) -> None:
    out = read_only / "ds" if inside else read_only
    with pytest.raises(PackError, match=r"(Read-only file system|Permission denied); the output folder .* must "
                                        "be writable"):
        pack(tiny_jpegs, out, PackOptions(backend=backend, **QUIET))
    r = subprocess.run([sys.executable, "-m", "recpack", "pack", str(tiny_jpegs), str(out), "--backend", backend,
                        "--no-progress"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr, r.stderr
