"""What a run leaves behind: ``recpack*`` threads still alive, open file descriptors, resident memory.

Shared by the thread and soak tests and the soak campaign, so that "no thread is left" means the same thing
everywhere: no thread whose name starts with ``recpack`` (reader, decode and io threads all do) is alive
within ``timeout`` seconds (threads that were told to stop may need a moment to notice).
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["recpack_threads", "wait_no_threads", "open_fds", "rss_bytes"]


def recpack_threads() -> list[threading.Thread]:
    """The live threads whose name starts with ``recpack``."""
    return [t for t in threading.enumerate() if t.name.startswith("recpack")]


def wait_no_threads(timeout: float = 1.0) -> list[threading.Thread]:
    """Wait up to ``timeout`` s for every ``recpack`` thread to end; returns those still alive then."""
    deadline = time.monotonic() + timeout
    while recpack_threads() and time.monotonic() < deadline:
        time.sleep(0.005)
    return recpack_threads()


def open_fds() -> int:
    """Open file descriptors of this process (0 where /proc/self/fd is not there)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def rss_bytes() -> int:
    """Resident memory of this process in bytes (0 where /proc/self/statm is not there)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0
