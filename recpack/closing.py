"""One way for every resource-holding object to be closed: ``close()``, a ``with`` block, or garbage
collection (a last resort that must never raise)."""

from __future__ import annotations

from typing import Any, TypeVar

__all__ = ["Closing"]

T = TypeVar("T", bound="Closing")


class Closing:
    """Mixin: subclasses implement an idempotent :meth:`close`; ``with`` and ``__del__`` call it."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown or a half-built object: nothing useful to report
            pass
