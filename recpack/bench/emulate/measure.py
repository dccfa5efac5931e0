"""How fast an emulated device really reads: a quick measurement inside its cgroup.

:func:`measure` times sequential 8 MiB reads and random 4 KiB and 128 KiB reads, each in a child process
inside the device's cgroup with a cold page cache, and reports what the throttle let through next to the
profile's caps (:func:`format_measurement` puts it on one line). Cost: ``3 x seconds`` plus writing the test
file (unthrottled) when none is given.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...errors import RecpackError
from .device import EmulatedDevice
from .profiles import MiB

__all__ = ["measure", "format_measurement"]

# The probe runs as `python -c` in a child process inside the cgroup, so it is self-contained: it needs no
# recpack import (the child may not find one) and calls os.posix_fadvise itself.
_PROBE = r"""
import json, os, random, sys, time
path, mode, block, seconds, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
fd = os.open(path, os.O_RDONLY)
done = reads = passes = 0
rng = random.Random(seed)
try:
    size = os.fstat(fd).st_size
    buf = memoryview(bytearray(block))
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL if mode == "seq" else os.POSIX_FADV_RANDOM)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        if passes:  # the file was read through: forget its pages so that the next pass is cold too
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        passes += 1
        if mode == "seq":
            offsets = range(0, size, block)
        else:
            offsets = [b * block for b in range(size // block)]
            rng.shuffle(offsets)
        for offset in offsets:
            done += os.preadv(fd, [buf], offset)
            reads += 1
            if time.perf_counter() - t0 >= seconds:
                break
    elapsed = time.perf_counter() - t0
finally:
    os.close(fd)
print(json.dumps({"bytes": done, "reads": reads, "seconds": elapsed, "passes": passes}))
"""


def _probe(dev: EmulatedDevice, path: Path, mode: str, block: int, seconds: float, seed: int) -> dict[str, Any]:
    before = dev.io_stats()
    done = dev.run([sys.executable, "-c", _PROBE, str(path), mode, str(block), str(seconds), str(seed)],
                   capture_output=True, text=True)
    if done.returncode != 0:
        raise RecpackError(f"measurement ({mode}, {block} B) failed: {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout)
    after = dev.io_stats()
    result["device_reads"] = after[0] - before[0]
    result["device_bytes"] = after[1] - before[1]
    return result


def measure(dev: EmulatedDevice, size: int = 256 * MiB, *, path: str | os.PathLike[str] | None = None,
            seconds: float = 2.0, seed: int = 0) -> dict[str, Any]:
    """Quick sanity check of an emulated device, every test inside its cgroup with a cold page cache.

    Reads ``path`` (a file on the device), or else writes a ``size``-byte file of random bytes (capped at
    half the free space) and deletes it afterwards. Each test runs for ``seconds``, going over the file
    again (its pages dropped with ``POSIX_FADV_DONTNEED``) when it is read through. Takes ``3 x seconds``
    plus writing the file. Returns:

    - ``seq_mb_s``: 8 MiB buffered reads, normal readahead;
    - ``rand_4k_iops``, ``rand_128k_iops``: buffered ``pread`` at shuffled aligned offsets, readahead off
      (``POSIX_FADV_RANDOM``);
    - ``seq_avg_request_kib``: mean request size the device saw during the sequential test, after splitting;
    - the setup (profile, limits, method, direct_io, file bytes) and ``raw``, each test's counts.
    """
    dev.check_open()
    made = path is None
    if path is None:
        free = shutil.disk_usage(dev.mount).free
        size = max(8 * MiB, min(size, free // 2) // MiB * MiB)
        target = dev.mount / f".recpack-measure-{os.urandom(4).hex()}"
        chunk = os.urandom(8 * MiB)
        with open(target, "wb") as f:
            for offset in range(0, size, len(chunk)):
                f.write(chunk[: size - offset])
            f.flush()
            os.fsync(f.fileno())
    else:
        target = Path(path)
    try:
        seq = _probe(dev, target, "seq", 8 * MiB, seconds, seed)
        r4k = _probe(dev, target, "rand", 4096, seconds, seed)
        r128k = _probe(dev, target, "rand", 128 << 10, seconds, seed)
    finally:
        if made:
            target.unlink(missing_ok=True)
    return {
        "profile": dev.profile.name,
        "read_iops_limit": dev.profile.read_iops,
        "read_mb_s_limit": dev.profile.read_bps / 1e6,
        "method": dev.method,
        "direct_io": dev.direct_io,
        "file_bytes": os.path.getsize(target) if not made else size,
        "seq_mb_s": seq["bytes"] / seq["seconds"] / 1e6,
        "seq_avg_request_kib": seq["device_bytes"] / max(1, seq["device_reads"]) / 1024,
        "rand_4k_iops": r4k["reads"] / r4k["seconds"],
        "rand_128k_iops": r128k["reads"] / r128k["seconds"],
        "rand_128k_mb_s": r128k["bytes"] / r128k["seconds"] / 1e6,
        "raw": {"seq": seq, "rand_4k": r4k, "rand_128k": r128k},
    }


def format_measurement(result: Mapping[str, Any]) -> str:
    """A one-line summary of :func:`measure`'s result."""
    return (f"{result['profile']}: sequential {result['seq_mb_s']:.0f} MB/s "
            f"(cap {result['read_mb_s_limit']:.0f}; {result['seq_avg_request_kib']:.0f} KiB/request), "
            f"random 4 KiB {result['rand_4k_iops']:,.0f} IOPS, random 128 KiB {result['rand_128k_iops']:,.0f} IOPS "
            f"(cap {result['read_iops_limit']:,})")
