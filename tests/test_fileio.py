"""recpack.fileio: data files that are not regular files are refused (a FIFO never hangs a reader), the set of
open files stays bounded (thousands of shards under a small ``ulimit -n``), and a file replaced since its table
was read is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from campaigns.synthetic import write_synthetic
from recpack.errors import FormatError
from recpack.fileio import OpenFiles, identity, open_readonly


def test_open_readonly_refuses_what_is_not_a_data_file(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="missing.rpk: cannot open the file"):
        open_readonly(str(tmp_path / "missing.rpk"))
    (tmp_path / "dir.rpk").mkdir()
    with pytest.raises(FormatError, match="is a directory"):
        open_readonly(str(tmp_path / "dir.rpk"))
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.rpk")
        with pytest.raises(FormatError, match="is a FIFO"):
            open_readonly(str(tmp_path / "fifo.rpk"))  # returns at once: opened non-blocking
    (tmp_path / "ok.rpk").write_bytes(b"abc")
    fd = open_readonly(str(tmp_path / "ok.rpk"))
    assert os.read(fd, 10) == b"abc"
    os.close(fd)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else -1


def test_open_files_stay_bounded_and_reopen(tmp_path: Path) -> None:
    paths = []
    for i in range(12):
        paths.append(str(tmp_path / f"f{i}"))
        Path(paths[-1]).write_bytes(bytes([i]) * 100)
    files = OpenFiles(paths, limit=3)
    before = _open_fds()
    for _ in range(2):
        for i in range(12):
            buf = bytearray(10)
            assert files.read_into(i, memoryview(buf), 5) == 10 and buf == bytes([i]) * 10
            if before >= 0:
                assert _open_fds() - before <= 3
    files.close()
    if before >= 0:
        assert _open_fds() == before


def test_a_replaced_file_is_refused_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    fd = os.open(path, os.O_RDONLY)
    expect = [identity(fd)]
    os.close(fd)
    files = OpenFiles([str(path)], expect=expect)
    files.read_into(0, memoryview(bytearray(4)), 0)
    files.close()
    (tmp_path / "g").write_bytes(b"y" * 100)
    os.replace(tmp_path / "g", path)  # what a re-pack does: a new file renamed into place
    with pytest.raises(FormatError, match="changed since the dataset was opened"):
        files.read_into(0, memoryview(bytearray(4)), 0)


def _child(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_in_place_of_a_shard_is_an_error_not_a_hang(tmp_path: Path) -> None:
    write_synthetic(tmp_path / "ds", 40, per_shard=10, payload=16)
    (tmp_path / "ds" / "shard-00002.rpk").unlink()
    os.mkfifo(tmp_path / "ds" / "shard-00002.rpk")
    code = """
import sys, recpack
from recpack.info import inspect_dataset
from recpack.verify import verify
path = sys.argv[1]
def inspect():
    problems = inspect_dataset(path)["problems"]
    if problems:
        raise recpack.FormatError(problems[0])
for name, fn in [("open", lambda: list(recpack.open(path))), ("inspect", inspect),
                 ("loader", lambda: recpack.Loader(path, decode=False, transform=None, device="cpu"))]:
    try:
        fn()
        print(name, "no error")
    except recpack.FormatError as e:
        print(name, "FormatError", "FIFO" in str(e))
print("verify", verify(path).ok)
"""
    out = _child(code, str(tmp_path / "ds"), timeout=60)  # a hang fails here, after 60 s
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:4] == ["open FormatError True", "inspect FormatError True",
                                          "loader FormatError True", "verify False"], out.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="resource limits are POSIX")
def test_thousands_of_shards_under_a_small_open_file_limit(tmp_path: Path) -> None:
    write_synthetic(tmp_path / "ds", 2_200, per_shard=2, payload=16)  # 1,100 shards
    code = """
import resource, sys, recpack
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
path = sys.argv[1]
with recpack.open(path) as ds:
    n = sum(1 for _ in ds) + sum(1 for i in range(0, len(ds), 7) if ds[i])
loader = recpack.Loader(path, batch_size=64, decode=False, transform=None, device="cpu", order="random")
m = sum(len(y) for _, y in loader)
print(n, m)
"""
    out = _child(code, str(tmp_path / "ds"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [str(2_200 + 315), "2200"]
