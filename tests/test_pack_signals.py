"""Stopping a pack from outside: SIGTERM and SIGHUP behave like Ctrl-C (the shard being written is removed,
"interrupted; ... re-run" is printed, exit 130, a re-run resumes), and after a SIGKILL of the pack no pool
worker or resource tracker is left behind. Linux only (processes are found through /proc)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from recpack.imaging import ImageOptions
from recpack.pack import PackOptions, pack
from recpack.synth import make_image_folder

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds processes through /proc")
ARGS = ["--num-shards", "40", "--workers", "2", "--check", "decode", "--no-progress"]


@pytest.fixture(scope="module")
def src_and_ref(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("signals")
    make_image_folder(base / "src", 400, classes=4, size=(64, 48), seed=2)
    pack(base / "src", base / "ref", PackOptions(num_shards=40, workers=0, image=ImageOptions(check="decode"),
                                                 progress=False, fsync=False))
    return base / "src", base / "ref"


def session_members(sid: int) -> list[int]:
    """Live processes (not zombies) of session ``sid`` other than its leader."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == sid:
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.append(int(d))
    return found


def wait_gone(sid: int, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := session_members(sid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@contextmanager
def stopped_pack(src: Path, out: Path, sig: int) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Start ``recpack pack`` in a session of its own, send ``sig`` once it finished a shard, yield the
    process and its stderr; whatever the session still holds afterwards is killed."""
    err = out.with_suffix(".err")
    with open(err, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "recpack", "pack", str(src), str(out), *ARGS],
                                stdout=subprocess.DEVNULL, stderr=f, start_new_session=True)
    try:
        state = out / ".recpack-pack"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if state.is_dir() and any(n.startswith("shard-") and n.endswith(".json") for n in os.listdir(state)):
                break
            time.sleep(0.002)
        proc.send_signal(sig)
        proc.wait(60)
        yield proc, err.read_text()
    finally:
        for pid in session_members(proc.pid):
            os.kill(pid, signal.SIGKILL)


def test_sigkill_of_the_pack_leaves_no_pool_worker(src_and_ref: tuple[Path, Path], tmp_path: Path) -> None:
    src, ref = src_and_ref
    with stopped_pack(src, tmp_path / "ds", signal.SIGKILL) as (proc, _):
        assert proc.returncode == -signal.SIGKILL
        assert not (tmp_path / "ds" / "index.json").exists(), "the pack finished before it was killed"
        left = wait_gone(proc.pid, 10)
        assert not left, f"left behind after the pack was killed: {left}"
    res = subprocess.run([sys.executable, "-m", "recpack", "pack", str(src), str(tmp_path / "ds"), *ARGS],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert files_of(tmp_path / "ds") == files_of(ref)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_like_ctrl_c(src_and_ref: tuple[Path, Path], tmp_path: Path, sig: int) -> None:
    src, ref = src_and_ref
    out = tmp_path / "ds"
    with stopped_pack(src, out, sig) as (proc, stderr):
        assert not (out / "index.json").exists(), "the pack finished before it was stopped"
        assert proc.returncode == 130, stderr
        assert "interrupted; finished shards are kept" in stderr and "Traceback" not in stderr, stderr
        assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
        assert not wait_gone(proc.pid, 10)
    res = subprocess.run([sys.executable, "-m", "recpack", "pack", str(src), str(out), *ARGS, "--json"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and '"resumed_shards": 0' not in res.stdout, res.stderr
    assert files_of(out) == files_of(ref)
