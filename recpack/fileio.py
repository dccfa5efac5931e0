"""Positional reads that work on every platform. ``os.pread`` does not exist on Windows; there a lock
serialises seek + read on the descriptor (correct, slower; Linux and macOS use ``pread``)."""

from __future__ import annotations

import os
import threading

__all__ = ["pread"]

_LOCK = threading.Lock()


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
