"""recpack.bench.emulated without root: sizing the device, the child command line, copying the sources and the
messages when the emulation cannot run. Real runs inside an emulated device are in test_bench_device.py and
test_bench_dataset.py (marked ``root``)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from tqdm import tqdm

from recpack.bench import emulated
from recpack.bench.emulate.host import NEEDS_ROOT
from recpack.errors import RecpackError

MiB = 1 << 20


def test_required_size_and_python_argv() -> None:
    assert emulated.required_size(0) == 256 * MiB
    assert emulated.required_size(1000 * MiB) == 1356 * MiB  # +10%, +256 MiB, rounded up to a MiB
    assert emulated.required_size(1) == 257 * MiB  # a byte more is a MiB more
    assert emulated.python_argv("bench", "device") == [sys.executable, "-m", "recpack", "bench", "device"]


def test_copy_keeps_names_apart(tmp_path: Path) -> None:
    for sub in ("a", "b"):
        (tmp_path / sub / "data" / "x").mkdir(parents=True)
        (tmp_path / sub / "data" / "x" / "f.bin").write_bytes(sub.encode() * 10)
    (tmp_path / "single.txt").write_text("hi")
    dest = tmp_path / "dest"
    dest.mkdir()
    copied = emulated._copy([tmp_path / "a" / "data", tmp_path / "b" / "data", tmp_path / "single.txt"], dest,
                            progress=False)
    assert [p.name for p in copied] == ["data", "data-1", "single.txt"]
    assert (dest / "data-1" / "x" / "f.bin").read_bytes() == b"b" * 10 and (dest / "single.txt").read_text() == "hi"
    with pytest.raises(RecpackError, match="no such file"):
        emulated._copy([tmp_path / "missing"], dest, progress=False)


def test_copy_file_counts_bytes(tmp_path: Path) -> None:
    src = tmp_path / "s"
    src.write_bytes(b"z" * 1000)
    with tqdm(total=1000, file=io.StringIO()) as bar:
        emulated._copy_file(src, tmp_path / "d", bar)
        assert bar.n == 1000
    assert (tmp_path / "d").read_bytes() == b"z" * 1000


@pytest.mark.parametrize("why, words", [
    (NEEDS_ROOT, ["needs root", "sudo", "leave out --emulate"]),
    ("no /dev/loop-control: no loop devices", ["cannot work on this machine", "/dev/loop-control",
                                                "leave out --emulate"]),
])
def test_says_why_the_emulation_cannot_run(monkeypatch: pytest.MonkeyPatch, why: str, words: list[str]) -> None:
    monkeypatch.setattr(emulated, "check_environment", lambda: (False, why))
    with pytest.raises(RecpackError) as info:
        emulated.run_emulated("hdd", [], lambda paths: ["true"])
    message = str(info.value)
    assert all(w in message for w in words), message
    assert message.count("root") == (1 if why == NEEDS_ROOT else 0), message
