"""One stored record as readers hand it out, whatever the backend it came from."""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["Record"]


class Record(NamedTuple):
    """One stored record. ``data`` is exactly the stored image bytes; ``meta`` the record's metadata map
    (always holding ``"key"``; ``"label"`` when it has one)."""

    key: str
    label: Any
    meta: dict[str, Any]
    data: bytes
