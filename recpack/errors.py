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


def _located(message: str, path: str | None, offset: int | None, key: str | None = None) -> str:
    """The one place a location is formatted: ``path @ offset N: message (key 'k')``."""
    where = "" if path is None else path
    if offset is not None:
        where += f" @ offset {offset}" if where else f"offset {offset}"
    text = f"{where}: {message}" if where else message
    return text if key is None else f"{text} (key {key!r})"


class FormatError(RecpackError):
    """A file does not follow the recpack format. ``message`` says what is wrong; ``path`` and ``offset``
    say where (``str()`` joins them as ``path @ offset N: message``)."""

    def __init__(self, message: str, path: str | None = None, offset: int | None = None) -> None:
        super().__init__(message, path, offset)
        self.message = message
        self.path = path
        self.offset = offset

    def __str__(self) -> str:
        return _located(self.message, self.path, self.offset, getattr(self, "key", None))


class BadMagic(FormatError):
    """The file does not start with the recpack magic number."""


class FormatVersionError(FormatError):
    """The file was written with a format version this recpack cannot read."""


class CorruptShard(FormatError):
    """A shard's header or footer table is damaged (checksum mismatch, impossible sizes, truncation)."""


class CorruptRecord(FormatError):
    """One record is damaged. ``shard``, ``offset`` and ``key`` (when readable) say which."""

    def __init__(self, message: str, shard: str | None = None, offset: int | None = None,
                 key: str | None = None) -> None:
        super().__init__(message, path=shard, offset=offset)
        self.args = (message, shard, offset, key)
        self.shard = shard
        self.key = key


class ManifestError(RecpackError):
    """The dataset manifest (index.json) is missing, malformed, inconsistent or unsafe."""


class BadImage(RecpackError):
    """A source image cannot be packed; ``reason`` is a short, stable description for the pack report."""

    def __init__(self, reason: str, path: str | None = None) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.reason = reason
        self.path = path


class DecodeError(RecpackError):
    """Stored bytes could not be decoded as an image. ``message`` says why; ``shard``, ``offset`` and
    ``key`` say which record, when known."""

    def __init__(self, message: str, key: str | None = None, shard: str | None = None,
                 offset: int | None = None) -> None:
        super().__init__(message, key, shard, offset)
        self.message = message
        self.key = key
        self.shard = shard
        self.offset = offset

    def __str__(self) -> str:
        return _located(self.message, self.shard, self.offset, self.key)


class PackError(RecpackError):
    """Packing cannot continue; the message says what to do. Finished shards are kept for resuming."""
