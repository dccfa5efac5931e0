"""Make the next read of some files cold (or say that it will not be), for benchmarks.

:func:`evict` is what ``recpack bench device`` and ``recpack bench dataset`` call before every timed test::

    how = evict([shard_dir], warm=warm)   # "drop_caches" | "fadvise" | "o_direct" | "warm" | "none"

The methods, best first:

- ``"drop_caches"`` (root on Linux): ``sync`` then ``echo 3 > /proc/sys/vm/drop_caches``. Drops the page cache of
  the whole machine, including metadata (dentries, inodes), so even the first ``open`` is cold.
- ``"fadvise"`` (any user on Linux): each file is fsynced (dirty pages cannot be dropped) and its pages are
  dropped with ``posix_fadvise(POSIX_FADV_DONTNEED)``. File-system metadata may stay cached.
- ``"o_direct"`` (``direct=True``): the caller reads with ``O_DIRECT``, bypassing the page cache; the files are
  still fsynced and their pages dropped, so that no cached copy can answer instead.
- ``"warm"`` (``warm=True``): nothing is dropped; the caller labels its numbers as warm-cache ones.
- ``"none"``: nothing could be dropped (no ``posix_fadvise``, e.g. macOS or Windows); numbers may be cache hits.

:func:`cached_fraction` checks the result (``mincore``: reads nothing).
"""

from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

__all__ = ["METHODS", "evict", "evict_file", "drop_all_caches", "iter_files", "cached_fraction", "supports_o_direct"]

#: Every value :func:`evict` can return.
METHODS = ("drop_caches", "fadvise", "o_direct", "warm", "none")

_DROP_CACHES = "/proc/sys/vm/drop_caches"


def iter_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[str]:
    """Every regular file under ``paths`` (files, or folders walked recursively; symlinks to folders are not
    followed). Missing paths are skipped."""
    for p in paths:
        path = os.fspath(p)
        if os.path.isdir(path):
            for dirpath, _, names in os.walk(path):
                for name in sorted(names):
                    full = os.path.join(dirpath, name)
                    if os.path.isfile(full):
                        yield full
        elif os.path.isfile(path):
            yield path


def evict_file(path: str | os.PathLike[str], offset: int = 0, length: int = 0) -> bool:
    """fsync ``path`` and drop its pages in ``[offset, offset + length)`` (``length`` 0: to the end) from the
    page cache with ``POSIX_FADV_DONTNEED``. True when the advice was given (it may still keep pages that
    are mapped or locked by some process)."""
    fadvise = getattr(os, "posix_fadvise", None)
    if fadvise is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        try:
            os.fsync(fd)
        except OSError:
            pass  # read-only file systems refuse fsync; their pages are clean anyway
        fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def drop_all_caches() -> bool:
    """``sync`` then ``echo 3 > /proc/sys/vm/drop_caches`` (root on Linux): the whole machine's page cache,
    dentries and inodes are dropped. False where that is not allowed."""
    if os.name != "posix" or os.geteuid() != 0:
        return False
    try:
        os.sync()
        with open(_DROP_CACHES, "w") as f:
            f.write("3\n")
        return True
    except OSError:  # read-only /proc in a container, or not Linux
        return False


def evict(paths: Sequence[str | os.PathLike[str]], *, warm: bool = False, direct: bool = False,
          drop_all: bool = True) -> str:
    """Make the next read of ``paths`` (files or folders) come from the device; return the method used.

    warm (bool): do nothing and return ``"warm"``.
    direct (bool): the caller reads with ``O_DIRECT``; drop these files' pages anyway and return ``"o_direct"``.
    drop_all (bool): as root, drop the whole machine's page cache (``"drop_caches"``) rather than only these
        files' pages; pass False inside a timed loop, where dropping everything would also cost the other
        readers their metadata.

    Otherwise: ``"drop_caches"`` as root (where /proc/sys/vm/drop_caches is writable), ``"fadvise"`` for
    anyone else, ``"none"`` where neither works. Cost: ``sync`` (flushes every dirty page on the machine)
    plus a few ms; ``fadvise`` costs one ``open`` + ``fsync`` per file.
    """
    if warm:
        return "warm"
    files = list(iter_files(paths))
    if direct:
        for f in files:
            evict_file(f)
        return "o_direct"
    if drop_all and drop_all_caches():
        return "drop_caches"
    done = [evict_file(f) for f in files]
    if files and not any(done):
        return "none"
    return "fadvise" if hasattr(os, "posix_fadvise") else "none"


def cached_fraction(path: str | os.PathLike[str]) -> float | None:
    """Fraction of ``path``'s pages in the page cache, from ``mincore(2)`` on a mapping of the file (which reads
    nothing: a ``RWF_NOWAIT`` probe would start readahead on a miss, and on a throttled device that I/O counts
    against the very limits being measured). None where this cannot be checked (no libc ``mincore``, a file
    that cannot be mapped)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        mmap_fn, mincore, munmap = libc.mmap, libc.mincore, libc.munmap
    except (OSError, AttributeError):
        return None
    mmap_fn.restype = ctypes.c_void_p
    mmap_fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return 0.0
        addr = mmap_fn(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr is None or addr == ctypes.c_void_p(-1).value:
            return None
        try:
            pages = -(-size // mmap.PAGESIZE)
            vec = (ctypes.c_ubyte * pages)()
            if mincore(addr, size, vec) != 0:
                return None
            return float((np.frombuffer(bytes(vec), dtype=np.uint8) & 1).mean())
        finally:
            munmap(addr, size)
    finally:
        os.close(fd)


def supports_o_direct(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` (an existing file) can be opened with ``O_DIRECT`` (tmpfs and some FUSE file systems
    refuse it)."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | flag)
    except OSError:
        return False
    os.close(fd)
    return True
