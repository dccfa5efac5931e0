"""Termination signals as KeyboardInterrupt, so that cleanup (``finally`` blocks: temporary files, mounts,
loop devices, cgroups) also runs when a command is stopped with SIGTERM or SIGHUP, not only with Ctrl-C."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["Terminated", "signals_as_interrupt"]


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised as KeyboardInterrupt so that ``finally`` blocks run."""


@contextmanager
def signals_as_interrupt() -> Iterator[None]:
    """In the main thread, turn SIGTERM and SIGHUP (where they exist and their handler is the default, which
    would end the process without cleanup) into :class:`Terminated` for the block; elsewhere, do nothing.
    The previous handlers are put back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated(f"signal {signal.Signals(signum).name}")

    previous = {}
    for sig in (getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)):
        if signal.getsignal(sig) == signal.SIG_DFL:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
