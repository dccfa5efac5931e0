"""Reading files: every way recpack reads bytes from disk, and the cache hints it gives the kernel.

- :func:`open_readonly` opens a data file, refusing anything that is not a regular file (a FIFO would block
  the open forever, a directory fails later with a confusing error) with a :class:`FormatError` naming it.
- :func:`pread`: one positional read (single records, headers, tables).
- :class:`SequentialReader`: a file front to back in large pieces into one reused buffer, checksumming every
  byte on the way (iteration, verification, recovery scans).
- :class:`PositionalFile`: positional reads into caller-owned buffers, optionally with ``O_DIRECT`` (the
  Loader's segment reads).
- :func:`advise`: ``posix_fadvise`` where the platform has it, a no-op elsewhere.
- :func:`file_crc`: CRC32C of a whole file.
- :func:`is_disk_full`: whether an ``OSError`` means the disk (or quota) is full.

``os.pread`` does not exist on Windows; there a lock serialises seek + read on the descriptor (correct, slower).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from typing import Any

from .crc import crc32c
from .errors import FormatError
from .format import ALIGN

__all__ = [
    "ALIGN",
    "CHUNK_BYTES",
    "DISK_FULL",
    "PositionalFile",
    "SequentialReader",
    "advise",
    "file_crc",
    "identity",
    "is_disk_full",
    "OpenFiles",
    "open_readonly",
    "pread",
    "read_span",
]

#: Size of one sequential read (a multiple of ALIGN). 8 MiB keeps an HDD streaming and costs ~nothing per record.
CHUNK_BYTES = 8 << 20
#: errno values that mean "no room left": disk full, file too large, quota exceeded.
DISK_FULL = frozenset({errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)})

_O_BINARY = getattr(os, "O_BINARY", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_LOCK = threading.Lock()


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` is an OSError saying the disk or the user's quota is full."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL


def open_readonly(path: str, direct: bool = False,
                  fix: str = "the dataset's index.json lists it, so the dataset is incomplete or unreadable: "
                             "copy it again, or fix the permissions") -> int:
    """A read-only descriptor of the regular file at ``path`` (with ``O_DIRECT`` when ``direct``; raises
    OSError when the file system refuses that). Anything else -- missing, unreadable, a directory, a FIFO or
    a device -- is a :class:`FormatError` naming the file and ending with ``fix``. A FIFO is opened
    non-blocking, so it is refused instead of hanging until a writer appears."""
    flags = os.O_RDONLY | _O_BINARY | _O_NONBLOCK | (os.O_DIRECT if direct else 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if direct and exc.errno == errno.EINVAL:
            raise
        raise FormatError(f"cannot open the file ({exc.strerror or exc}); {fix}", path) from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
            raise FormatError(f"is {kind}, not a data file; {fix}", path)
        if _O_NONBLOCK and hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def pread(fd: int, n: int, offset: int) -> bytes:
    """Up to ``n`` bytes of ``fd`` from ``offset`` (fewer at end of file), without moving a shared position."""
    if hasattr(os, "pread"):
        return os.pread(fd, n, offset)
    with _LOCK:  # pragma: no cover - Windows
        os.lseek(fd, offset, os.SEEK_SET)
        chunks = []
        while n > 0:
            piece = os.read(fd, n)
            if not piece:
                break
            chunks.append(piece)
            n -= len(piece)
        return b"".join(chunks)


def advise(fd: int, advice: str, offset: int = 0, length: int = 0) -> None:
    """``posix_fadvise(fd, offset, length, POSIX_FADV_<advice>)`` where it exists; hints never fail.

    ``advice``: "SEQUENTIAL" (larger kernel readahead), "RANDOM" (no readahead), "DONTNEED" (drop cached
    pages) or "WILLNEED"."""
    flag = getattr(os, f"POSIX_FADV_{advice}", None)
    if flag is not None and hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, offset, length, flag)
        except OSError:
            pass


class SequentialReader:
    """Reads a file strictly front to back in ``chunk``-byte pieces into one reused buffer, handing out
    byte ranges as memoryviews into it.

    Only a range that straddles the end of the buffer is moved (to the front) before the next read, so
    the cost per byte is one read and nothing else. ``crc`` is the CRC32C of every byte read so far, so a
    verifying pass checksums the whole file in the same single read. A view returned by :meth:`get` is
    valid until the next call: release it (``del``) or copy what you keep. Memory: one buffer of
    ``min(chunk, file size)`` bytes, grown only for a single range larger than that."""

    def __init__(self, fd: int, size: int, chunk: int = CHUNK_BYTES) -> None:
        self.fd, self.size = fd, size
        self.buf = bytearray(max(ALIGN, min(chunk, size)))
        self.start = 0  # file offset of buf[0]
        self.len = 0  # valid bytes in buf
        self.crc = 0
        self._f = open(fd, "rb", buffering=0, closefd=False)
        advise(fd, "SEQUENTIAL")

    def _read(self) -> int:
        """Append the next piece of the file to the buffer; returns the bytes read (0 at EOF)."""
        pos = self.start + self.len
        room = min(len(self.buf) - self.len, self.size - pos)
        if room <= 0:
            return 0
        self._f.seek(pos)
        n = self._f.readinto(memoryview(self.buf)[self.len:self.len + room]) or 0
        if n:
            self.crc = crc32c(memoryview(self.buf)[self.len:self.len + n], self.crc)
            self.len += n
        return n

    def get(self, a: int, b: int) -> memoryview:
        """Bytes [a, b) of the file (shorter at EOF). ``a`` never goes backwards."""
        b = min(b, self.size)
        end = self.start + self.len
        if self.start <= a and b <= end:
            return memoryview(self.buf)[a - self.start:b - self.start]
        if a < self.start:
            raise ValueError(f"sequential reader cannot go back to {a} (at {self.start})")
        if a < end:  # keep the part of [a, end) already read
            keep = end - a
            self.buf[:keep] = self.buf[a - self.start:self.len]
            self.start, self.len = a, keep
        else:  # skip to a, reading (and checksumming) the gap
            self.start, self.len = end, 0
            while a - self.start >= len(self.buf):
                if not self._read():
                    break
                self.start, self.len = self.start + self.len, 0
        if b - self.start > len(self.buf):  # a range larger than the buffer
            self.buf.extend(bytes(b - self.start - len(self.buf)))
        while self.start + self.len < b and self._read():
            pass
        return memoryview(self.buf)[a - self.start:min(b, self.start + self.len) - self.start]

    def finish(self) -> int:
        """Read to the end of the file; return the CRC32C of the whole file."""
        while True:
            self.start, self.len = self.start + self.len, 0
            if not self._read():
                return self.crc

    def close(self) -> None:
        self._f.close()


def file_crc(fd: int, size: int) -> int:
    """CRC32C of the first ``size`` bytes of ``fd``, read into one reused buffer (no per-chunk allocation)."""
    advise(fd, "SEQUENTIAL")
    buf = bytearray(min(CHUNK_BYTES, max(size, 1)))
    view = memoryview(buf)
    crc, off = 0, 0
    with open(fd, "rb", buffering=0, closefd=False) as f:
        f.seek(0)
        while off < size:
            n = f.readinto(view[:min(len(buf), size - off)])
            if not n:
                break
            crc = crc32c(view[:n], crc)
            off += n
    return crc


class PositionalFile:
    """A read-only file with positional reads into caller-owned buffers that work on every platform
    (``os.preadv`` where it exists, else a locked seek + readinto). With ``direct``, ``O_DIRECT`` where the
    file system allows it (tmpfs and some network file systems refuse it: the file is then read through the
    page cache, and ``direct`` is False)."""

    def __init__(self, path: str, direct: bool = False) -> None:
        self.path = path
        self.direct = False
        fd = -1
        if direct and hasattr(os, "O_DIRECT"):
            try:
                fd = open_readonly(path, direct=True)
                self.direct = True
            except OSError:
                fd = -1
        if fd < 0:
            fd = open_readonly(path)
        self._f = open(fd, "rb", buffering=0)
        self.fd = self._f.fileno()
        self.size = os.fstat(self.fd).st_size
        self._lock = threading.Lock()

    def read_into(self, view: memoryview, offset: int) -> int:
        """Fill ``view`` from ``offset`` (fewer bytes at EOF); returns the bytes read. With direct I/O,
        ``view``'s address, length and ``offset`` must be multiples of ALIGN."""
        done = 0
        while done < len(view):
            if hasattr(os, "preadv"):
                try:
                    n = os.preadv(self.fd, [view[done:]], offset + done)
                except OSError as exc:
                    if not self.direct or exc.errno != errno.EINVAL:
                        raise
                    self._buffered()  # direct I/O refused this request (alignment): go through the cache
                    continue
            else:
                with self._lock:
                    self._f.seek(offset + done)
                    n = self._f.readinto(view[done:]) or 0
            if n <= 0:
                break
            done += n
        return done

    def _buffered(self) -> None:
        with self._lock:
            if self.direct:
                f = open(self.path, "rb", buffering=0)
                old, self._f, self.fd, self.direct = self._f, f, f.fileno(), False
                old.close()

    def close(self) -> None:
        self._f.close()


def identity(fd: int) -> tuple[int, int, int, int]:
    """What identifies one version of an open file: (device, inode, size, mtime in ns). A file replaced by
    a rename (a re-pack) has a new inode; one rewritten in place a new size or mtime."""
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class OpenFiles:
    """At most ``limit`` files of ``paths`` open at once, reopened on demand (least recently used closed
    first), so a dataset of thousands of files works under the usual ``ulimit -n 1024``. A file in use is
    never closed. Thread-safe.

    With ``expect`` (one :func:`identity` per path, or None where unknown yet, taken when the file's table
    was read), every (re)open checks
    that the file is still that version: a dataset re-packed in place while it is being read raises a
    :class:`FormatError` naming the file instead of mixing old tables with new records."""

    def __init__(self, paths: list[str], direct: bool = False, limit: int = 64,
                 advice: str | None = None, expect: list[tuple[int, int, int, int] | None] | None = None) -> None:
        self.paths = paths
        self.direct = direct
        self.limit = max(1, limit)
        self.advice = advice
        self.expect = expect
        self._open: dict[int, PositionalFile] = {}  # insertion order = least recently used first
        self._users: dict[int, int] = {}
        self._lock = threading.Lock()

    def acquire(self, s: int) -> PositionalFile:
        """Open (or reuse) file ``s``; pair with :meth:`release`. Files are closed oldest-opened first when
        more than ``limit`` are open (a dict lookup and a counter per call: this is on the per-read path)."""
        with self._lock:
            f = self._open.get(s)
            if f is not None:
                self._users[s] = self._users.get(s, 0) + 1
                return f
        f = PositionalFile(self.paths[s], self.direct)
        try:
            if self.expect is not None and self.expect[s] is not None and identity(f.fd) != self.expect[s]:
                raise FormatError("the file changed since the dataset was opened (re-packed or rewritten in "
                                  "place?); reading on would mix old tables with new records — open the "
                                  "dataset again", self.paths[s])
            if self.advice and not f.direct:
                advise(f.fd, self.advice)
        except BaseException:
            f.close()
            raise
        with self._lock:
            old = self._open.get(s)
            if old is not None:  # opened concurrently by another thread: keep one
                f.close()
                f = old
            else:
                self._open[s] = f
            self._users[s] = self._users.get(s, 0) + 1
            if len(self._open) > self.limit:
                self._evict()
        return f

    def release(self, s: int) -> None:
        with self._lock:
            n = self._users[s] - 1
            if n:
                self._users[s] = n
            else:
                del self._users[s]
            if len(self._open) > self.limit:
                self._evict()

    def _evict(self) -> None:
        for k in [k for k in self._open if k not in self._users][:len(self._open) - self.limit]:
            self._open.pop(k).close()

    def read_into(self, s: int, view: memoryview, offset: int) -> int:
        """:meth:`PositionalFile.read_into` on file ``s``."""
        f = self.acquire(s)
        try:
            return f.read_into(view, offset)
        finally:
            self.release(s)

    def after_fork(self) -> None:
        """In a forked child: a new lock (the parent's may have been held at the fork) and no open files
        (the inherited descriptors are closed here, in the child only)."""
        self._lock = threading.Lock()
        self._users = {}
        for f in self._open.values():
            f.close()
        self._open = {}

    def close(self) -> None:
        """Close every open file (files in use must have been released); later reads reopen them."""
        with self._lock:
            for f in self._open.values():
                f.close()
            self._open.clear()


def read_span(f: PositionalFile, buf: Any, at: int, start: int, end: int) -> tuple[int, int]:
    """Read file bytes [start, end) widened to ALIGN boundaries into ``buf[at:]``.

    Returns (buffer position of file offset ``start``, bytes read). ``buf[at:]`` must hold the widened span
    and, for direct I/O, start at an ALIGN-aligned address (BufferPool's buffers do)."""
    a = start - start % ALIGN
    b = -(-end // ALIGN) * ALIGN  # a direct read must be whole blocks; past EOF it just comes back short
    if not f.direct:
        b = min(b, f.size)
    n = f.read_into(memoryview(buf)[at:at + (b - a)], a)
    if a + n < end:
        raise FormatError(f"shard is shorter than its table says (read ended at {a + n}, needed {end}); "
                          "the file was truncated — run `recpack verify`", f.path, a + n)
    return at + (start - a), b - a
