"""Run a ``recpack bench`` command inside an emulated HDD or SATA SSD (``--emulate``; root only).

Both bench commands use :func:`run_emulated`: it makes the device (:mod:`recpack.bench.emulate`: a loop-mounted
ext4 file system whose reads are capped by a block-I/O cgroup), copies the inputs onto it at full speed,
runs the same command again with ``--json`` inside the cgroup, and returns that command's JSON with an
``"emulation"`` key added. The device is always torn down: on return, on errors, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .emulate import MiB, check_environment, emulated_device, get_profile
from .emulate.host import NEEDS_ROOT
from ..errors import RecpackError
from .cache import iter_files

__all__ = ["run_emulated", "required_size", "python_argv"]

_CHUNK = 8 * MiB


def python_argv(*args: str) -> list[str]:
    """``[sys.executable, "-m", "recpack", *args]``: how a parent re-runs recpack in a child process."""
    return [sys.executable, "-m", "recpack", *args]


def _tree_bytes(sources: Sequence[str | os.PathLike[str]]) -> int:
    return sum(os.path.getsize(f) for f in iter_files(sources))


def required_size(source_bytes: int) -> int:
    """Bytes of file system to hold ``source_bytes`` of copies: +10% and +256 MiB for ext4's own metadata and
    journal, rounded up to a MiB; at least 256 MiB."""
    return max(256 * MiB, -(-(source_bytes * 11 // 10 + 256 * MiB) // MiB) * MiB)


def _copy(sources: Sequence[str | os.PathLike[str]], dest_root: Path, progress: bool) -> list[Path]:
    """Copy every source (file or folder) to its own name under ``dest_root`` with a byte progress bar."""
    total = _tree_bytes(sources)
    copied: list[Path] = []
    used: set[str] = set()
    with tqdm(total=total, unit="B", unit_scale=True, desc="copying onto the emulated device",
              disable=not progress or total == 0, file=sys.stderr, leave=False) as bar:
        for i, src in enumerate(map(Path, sources)):
            name = src.resolve().name or f"source-{i}"
            if name in used:  # two sources with one name (a/data, b/data) must not collide
                name = f"{name}-{i}"
            used.add(name)
            dest = dest_root / name
            if src.is_dir():
                for f in iter_files([src]):
                    target = dest / os.path.relpath(f, src)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _copy_file(Path(f), target, bar)
                dest.mkdir(exist_ok=True)
            elif src.is_file():
                _copy_file(src, dest, bar)
            else:
                raise RecpackError(f"{src}: no such file or folder to copy onto the emulated device")
            copied.append(dest)
    return copied


def _copy_file(src: Path, dest: Path, bar: tqdm) -> None:
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        while chunk := fin.read(_CHUNK):
            fout.write(chunk)
            bar.update(len(chunk))
    shutil.copystat(src, dest)


def run_emulated(profile: str, sources: Sequence[str | os.PathLike[str]],
                 argv: Callable[[list[Path]], list[str]], *, size: int | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """Create the emulated device (profile 'hdd' or 'sata-ssd'), sized to hold copies of `sources`
    (files or folders) plus headroom (or `size` bytes), copy each source onto it (tqdm progress), call
    argv(copied_paths) to get a command line (a `python -m recpack bench ... --json` command), run it
    inside the device's cgroup, parse its stdout as JSON and return it with an added key "emulation":
    {profile, read_iops_limit, read_mb_s_limit, method, direct_io}. Raises recpack.errors.RecpackError
    saying once that root is needed (and how: sudo) when not root, or what else is missing (loop devices,
    cgroup support: :func:`recpack.bench.emulate.check_environment`). Always tears down.

    With no ``sources``, ``argv`` gets ``[mount point]``: the empty file system, for a command that writes
    its own test file there (``recpack bench device``). The child's stderr (progress bars, messages) goes
    to this process's stderr; its stdout must be one JSON object. The page cache is dropped before the child
    starts; the child evicts before each of its own tests too. ``emulation`` also holds ``mount``, ``fs``
    and ``device_bytes`` (the file system size). Cost: the copy (at full disk speed) plus the child's run.
    """
    prof = get_profile(profile)
    ok, why = check_environment()
    if not ok:
        instead = "or leave out --emulate to measure the real disk"
        if why == NEEDS_ROOT:
            raise RecpackError(f"--emulate {prof.name} needs root (loop devices, mounts, block-I/O cgroups): run "
                               f"`sudo $(command -v recpack) bench ... --emulate {prof.name}`, {instead}")
        raise RecpackError(f"--emulate {prof.name} cannot work on this machine: {why}; fix that, {instead}")
    if size is None:
        size = required_size(_tree_bytes(sources))
    if size < 64 * MiB:
        raise ValueError(f"size must be at least 64 MiB for an emulated device, not {size} bytes")
    with emulated_device(prof, size) as dev:
        copied = _copy(sources, dev.mount, progress) if sources else [dev.mount]
        cmd = argv(copied)
        proc = dev.popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True)  # drops caches first
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RecpackError(f"the benchmark inside the emulated {prof.name} failed (exit {proc.returncode}); "
                               f"its messages are above. Command: {' '.join(cmd)}")
        try:
            result = json.loads(out)
        except json.JSONDecodeError as e:
            raise RecpackError(f"the benchmark inside the emulated {prof.name} printed no JSON ({e}): "
                               f"{out[:500]!r}") from e
        if not isinstance(result, dict):
            raise RecpackError(f"the benchmark inside the emulated {prof.name} printed {type(result).__name__}, "
                               "not a JSON object")
        result["emulation"] = {
            "profile": prof.name,
            "read_iops_limit": prof.read_iops,
            "read_mb_s_limit": prof.read_bps / 1e6,
            "method": dev.method,
            "direct_io": dev.direct_io,
            "mount": str(dev.mount),
            "fs": dev.fs,
            "device_bytes": size,
        }
    return result
