"""The error tree. Every error recpack raises on purpose is one of these (or a ``ValueError`` for bad
arguments, whose message says the fix)::

    RecpackError                      base; the CLI turns it into a clean message and exit code 1
    ├── FormatError                   a file on disk is not what the format says (names file + offset)
    │   ├── BadMagic                  not a recpack file at all (wrong magic number)
    │   ├── FormatVersionError        written by a newer/older, incompatible recpack
    │   ├── CorruptShard              a shard's header or footer table fails its checksum / bounds
    │   └── CorruptRecord             one record fails its checksum / bounds (names shard, offset, key)
    ├── ManifestError                 index.json missing, unreadable, inconsistent or unsafe
    ├── BadImage                      a source image cannot be packed (reason says why)
    ├── DecodeError                   stored bytes do not decode as an image (names key, shard, offset)
    └── PackError                     packing cannot go on (disk full, conflicting output folder, ...)

Strict by default: readers raise. Skipping bad records is opt-in (``on_error="skip"``) and counted.
"""

from __future__ import annotations

__all__ = [
    "RecpackError",
    "FormatError",
    "BadMagic",
    "FormatVersionError",
    "CorruptShard",
    "CorruptRecord",
    "ManifestError",
    "BadImage",
    "DecodeError",
    "PackError",
]


class RecpackError(Exception):
    """Base class of every error recpack raises on purpose."""


class FormatError(RecpackError):
    """A file does not follow the recpack format. ``path`` and ``offset`` say where."""

    def __init__(self, message: str, path: str | None = None, offset: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}"
            if offset is not None:
                where += f" @ offset {offset}"
            where += ": "
        super().__init__(where + message)
        self.path = path
        self.offset = offset


class BadMagic(FormatError):
    """The file does not start with the recpack magic number."""


class FormatVersionError(FormatError):
    """The file was written with a format version this recpack cannot read."""


class CorruptShard(FormatError):
    """A shard's header or footer table is damaged (checksum mismatch, impossible sizes, truncation)."""


class CorruptRecord(FormatError):
    """One record is damaged. ``shard``, ``offset`` and ``key`` (when readable) say which."""

    def __init__(self, message: str, shard: str, offset: int, key: str | None = None) -> None:
        self.shard = shard
        self.key = key
        text = message if key is None else f"{message} (key {key!r})"
        super().__init__(text, path=shard, offset=offset)


class ManifestError(RecpackError):
    """The dataset manifest (index.json) is missing, malformed, inconsistent or unsafe."""


class BadImage(RecpackError):
    """A source image cannot be packed; ``reason`` is a short, stable description for the pack report."""

    def __init__(self, reason: str, path: str | None = None) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.reason = reason
        self.path = path


class DecodeError(RecpackError):
    """Stored bytes could not be decoded as an image."""

    def __init__(self, message: str, key: str | None = None, shard: str | None = None,
                 offset: int | None = None) -> None:
        parts = [p for p in (shard and f"{shard}", offset is not None and f"offset {offset}",
                             key is not None and f"key {key!r}") if p]
        super().__init__(f"{', '.join(parts)}: {message}" if parts else message)
        self.key = key
        self.shard = shard
        self.offset = offset


class PackError(RecpackError):
    """Packing cannot continue; the message says what to do. Finished shards are kept for resuming."""
