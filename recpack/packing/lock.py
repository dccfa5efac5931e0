"""One pack at a time per output folder: :class:`PackLock`, an operating-system lock on
``OUT/.recpack-pack/lock`` (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows).

The lock belongs to the open file, so it ends with the process however the process ends: a killed pack never
blocks the next one, and there is no stale lock to clean up. The file holds the holder's pid, for the message
that refuses a second pack. Where the file system cannot lock at all, packing goes on unlocked.
"""

from __future__ import annotations

import errno
import os
import shutil

from ..errors import PackError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt

__all__ = ["LOCK_NAME", "PackLock"]

LOCK_NAME = "lock"
_WIN_OFFSET = 4096  # Windows locks byte ranges against reads too: lock a byte past the pid


def _try_lock(fd: int) -> bool:
    """Take the lock without waiting; False when another process holds it."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            os.lseek(fd, _WIN_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, errno.EDEADLK):
            return False
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return True  # a file system without locks: go on unlocked
        raise
    return True


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return str(int(os.read(fd, 32).split()[0]))
    except (OSError, ValueError, IndexError):
        return "unknown"


class PackLock:
    """The exclusive right to write into ``out``, from the constructor (which raises PackError when another
    pack holds it) until :meth:`release`, through a lock file in the existing folder ``state``."""

    def __init__(self, out: str, state: str) -> None:
        self.state = state
        path = os.path.join(state, LOCK_NAME)
        for _ in range(100):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)
            if not _try_lock(fd):
                pid = _holder(fd)
                os.close(fd)
                raise PackError(f"another recpack pack is writing to {out} (pid {pid}); wait for it to finish, "
                                "or choose another output folder")
            try:  # the previous holder may have finished and removed the folder after we opened the file
                if os.path.samestat(os.fstat(fd), os.stat(path)):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
            os.makedirs(self.state, exist_ok=True)
        else:
            raise PackError(f"{path}: the lock file keeps being replaced; is another program emptying {out}?")
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd: int | None = fd

    def release(self, remove_state: bool = False) -> None:
        """Give the lock up; with ``remove_state``, remove the state folder too, lock file included (while
        still holding the lock where the system allows it, so no other pack takes a lock on a file about to
        be removed)."""
        if self.fd is None:
            return
        if remove_state and fcntl is not None:
            shutil.rmtree(self.state, ignore_errors=True)
        os.close(self.fd)  # (closing also ends a Windows byte-range lock)
        self.fd = None
        if remove_state and fcntl is None:
            shutil.rmtree(self.state, ignore_errors=True)
