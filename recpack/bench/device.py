"""``recpack bench device PATH``: what storage is under PATH, and how fast does it read when cold?

:func:`bench_device` identifies the storage (:mod:`recpack.bench.identify`), writes a test file of random
bytes (``.recpack-bench-<random>`` in PATH; removed afterwards, also on Ctrl-C and SIGTERM), runs each test of
:data:`recpack.bench.readers.TESTS` for ``duration`` seconds with the page cache made cold before each
(:func:`recpack.bench.cache.evict`), and names the device class from the numbers
(:func:`recpack.bench.stats.classify`). Cost: writing the file plus about ``duration`` per test.
:func:`bench_device_emulated` does the same inside an emulated HDD or SATA SSD (root).

The JSON result (:func:`bench_device`; ``recpack bench device --json``), keys stable:

- ``path`` (str), ``recpack`` (version), ``cache`` (str: "drop_caches", "fadvise", "o_direct", "warm" or
  "none": how each test was made cold), ``cached_after_evict`` (float | null: fraction of the test file still
  in the page cache after the first eviction, checked with ``mincore``);
- ``storage``: ``path``, ``real_path``, ``mount_point``, ``fstype``, ``source``, ``majmin`` (str | null),
  ``device`` (the block device tree: ``name``, ``kind`` — disk, partition, dm, md, loop, virtual, ram —,
  ``majmin``, ``size_bytes``, ``rotational`` (bool | null), ``model``, ``vendor``, ``driver``, ``dm_name``,
  ``backing_file`` (loop), ``parents`` (list of such trees)), ``disks`` (the leaves of that tree, without
  ``parents``), ``rotational`` (bool | null: the first disk's flag), ``chain`` (str: one line, e.g.
  ``ext4 on loop0 -> file /tmp/x/backing.img -> ext4 on vda``), ``note`` (str | null: e.g. no block device);
- ``file``: ``bytes`` (test file size), ``write_seconds``;
- ``settings``: ``duration_s``, ``max_reads``, ``threads``, ``record_bytes``, ``direct``, ``warm``, ``seed``;
- ``tests``: ``{name: {block, threads, pattern, reads, seconds, bytes, iops, mb_s, mean_us, p50_us, p99_us,
  max_us, passes, device_reads, device_bytes}}`` for each test run (``passes``: how many times a
  thread started over its slice, summed over threads; ``device_reads``/``device_bytes``: what the file
  system's block device completed meanwhile, from its sysfs ``stat``, null without one: a cold test shows
  about one device read per read, a cached one none);
- ``class`` (``ram`` | ``nvme`` | ``sata-ssd`` | ``hdd``), ``class_label`` ("NVMe-like", ...),
  ``class_reason`` (the numbers and the thresholds of :func:`recpack.bench.stats.classify`);
- ``emulation`` (only with ``--emulate``): see :func:`recpack.bench.emulated.run_emulated`.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .. import __version__
from ..errors import RecpackError
from ..interrupts import signals_as_interrupt
from .cache import cached_fraction, evict, supports_o_direct
from .emulate.profiles import MiB
from .emulated import python_argv, run_emulated
from .identify import device_counters, identify
from .readers import make_test_file, plan_file_size, run_test, tests_for
from .stats import CLASS_LABELS, classify

__all__ = ["bench_device", "bench_device_emulated"]

GiB = 1 << 30


def _test_dir(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise RecpackError(f"{p} does not exist; pass a folder (or a file) on the storage to measure")
    d = p if p.is_dir() else p.parent
    if not os.access(d, os.W_OK | os.X_OK):
        raise RecpackError(f"cannot write a test file in {d} (permission denied); pass a folder you can write "
                           "to on the same storage")
    return d


def _warm_up(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(8 * MiB)
        while f.readinto(buf):
            pass


def bench_device(path: str | os.PathLike[str], *, size: int = GiB, duration: float = 3.0,
                 max_reads: int | None = None, threads: int = 16, record_bytes: int = 110 << 10,
                 direct: bool = False, warm: bool = False, seed: int = 0, progress: bool = True,
                 tests: Sequence[str] | None = None) -> dict[str, Any]:
    """Identify the storage under ``path`` and measure it (the JSON described in this module's docstring).

    size (int): test file bytes (capped at half the free space). duration (float): seconds per test.
    max_reads (int | None): stop a test after this many reads. threads (int): readers of ``rand_4k_threads``.
    record_bytes (int): read size of ``rand_record_qd1``. direct (bool): ``O_DIRECT`` reads. warm (bool): read
    the file once first and never evict (labelled "warm"). tests (names | None): run only these of
    :data:`TESTS` (the class needs ``rand_4k_qd1``). Cost: writing the file plus ~``duration`` per test.
    """
    for name, value, lo in (("threads", threads, 1), ("record_bytes", record_bytes, 512)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, not {value!r}")
    if not duration > 0:
        raise ValueError(f"duration must be > 0 seconds, not {duration!r}")
    if direct and warm:
        raise ValueError("direct (O_DIRECT) reads bypass the page cache, so they cannot be warm; pick one")
    if direct and record_bytes % 512:
        raise ValueError(f"O_DIRECT reads need a multiple of 512 bytes; record size {record_bytes} is not")
    specs = tests_for(threads, record_bytes)
    if tests is not None:
        unknown = set(tests) - {s.name for s in specs}
        if unknown:
            raise ValueError(f"unknown tests {sorted(unknown)}; use some of {[s.name for s in specs]}")
        specs = [s for s in specs if s.name in tests]
    folder = _test_dir(path)
    storage = identify(folder)
    fsize = plan_file_size(size, shutil.disk_usage(folder).free)
    result: dict[str, Any] = {"path": os.fspath(path), "recpack": __version__, "cache": None,
                              "cached_after_evict": None, "storage": storage,
                              "settings": {"duration_s": duration, "max_reads": max_reads, "threads": threads,
                                           "record_bytes": record_bytes, "direct": direct, "warm": warm,
                                           "seed": seed},
                              "file": {}, "tests": {}}
    test_file: Path | None = None
    with signals_as_interrupt():
        try:
            t0 = time.perf_counter()
            test_file = make_test_file(folder, fsize, seed=seed, progress=progress)
            result["file"] = {"bytes": fsize, "write_seconds": round(time.perf_counter() - t0, 3)}
            if direct and not supports_o_direct(test_file):
                raise RecpackError(f"{storage['fstype']} at {folder} does not support O_DIRECT; leave out --direct "
                                   "(the page cache is then dropped before each test instead)")
            if warm:
                _warm_up(test_file)
            fmt = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s{postfix}"
            with tqdm(total=duration * len(specs), desc="measuring", unit="s", disable=not progress,
                      file=sys.stderr, leave=False, bar_format=fmt) as bar:
                for spec in specs:
                    bar.set_postfix_str(spec.label)
                    how = evict([test_file], warm=warm, direct=direct)
                    if result["cache"] is None:
                        result["cache"] = how
                        result["cached_after_evict"] = None if warm else cached_fraction(test_file)
                    start_n = bar.n
                    before = device_counters(storage)
                    result["tests"][spec.name] = run_test(test_file, spec, duration=duration,
                                                          max_reads=max_reads, seed=seed, direct=direct,
                                                          warm=warm, bar=bar)
                    after = device_counters(storage)
                    done = result["tests"][spec.name]
                    done["device_reads"] = after[0] - before[0] if after and before else None
                    done["device_bytes"] = after[1] - before[1] if after and before else None
                    bar.n = start_n + duration  # a test stopped early by --reads still counts in full
                    bar.refresh()
        finally:
            if test_file is not None:
                test_file.unlink(missing_ok=True)
    qd1 = result["tests"].get("rand_4k_qd1")
    many = result["tests"].get("rand_4k_threads")
    if qd1 and qd1["reads"]:
        dev_reads = qd1.get("device_reads")
        share = None if dev_reads is None or warm else dev_reads / max(1, qd1["reads"])
        key, reason = classify(qd1["p50_us"], qd1["iops"], many["iops"] if many else None, share)
        if warm:
            reason += " (warm cache: this is the page cache, not the device)"
        elif result["cache"] == "none":
            reason += " (nothing could be evicted, so reads may be cache hits)"
    else:
        key, reason = "", "not classified: the random 4 KiB QD1 test did not run"
    result.update({"class": key or None, "class_label": CLASS_LABELS.get(key), "class_reason": reason})
    return result


def bench_device_emulated(profile: str, *, size: int = GiB, duration: float = 3.0, max_reads: int | None = None,
                          threads: int = 16, record_bytes: int = 110 << 10, direct: bool = False, warm: bool = False,
                          seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """:func:`bench_device` on an empty emulated ``profile`` device ("hdd" or "sata-ssd"), made in the temp
    folder's disk and run in a child ``recpack bench device --json`` inside its cgroup
    (:func:`recpack.bench.emulated.run_emulated`: root only, always torn down). The result gains ``emulation``."""
    # the child caps its file at half the free space: room for twice the file plus ext4's overhead
    dev_size = max(256 * MiB, 2 * size + 128 * MiB)
    child = ["bench", "device", "--json", "--size", str(size), "--duration", str(duration),
             "--threads", str(threads), "--record-size", str(record_bytes), "--seed", str(seed)]
    child += (["--reads", str(max_reads)] if max_reads else []) + (["--direct"] if direct else [])
    child += (["--warm"] if warm else []) + ([] if progress else ["--no-progress"])
    return run_emulated(profile, [], lambda paths: python_argv(*child, str(paths[0])), size=dev_size,
                        progress=progress)
