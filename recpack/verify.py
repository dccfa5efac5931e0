"""``recpack verify``: read a whole dataset once, sequentially, and check every checksum.

What is checked depends on the backend (each backend's ``verify``); for recpack shards: magic, version and
header CRC; the footer table's CRC and bounds; every record's header CRC, payload CRC and agreement with the
table; the whole-file CRC32C and size against the manifest. With ``decode=True`` every image is decoded too.
Every problem is reported with file, offset and key.
"""

from __future__ import annotations

import os

from .backends import Problem, VerifyResult, open_source
from .decode import decode_rgb
from .errors import FormatError, ManifestError
from .index import read_manifest

__all__ = ["VerifyResult", "Problem", "verify"]


def verify(path: str | os.PathLike[str], decode: bool = False, progress: bool = False) -> VerifyResult:
    """Check the dataset at ``path``; never raises for damaged data (it is reported in the result). A path
    that is not a dataset at all raises ManifestError."""
    try:
        source = open_source(path)
    except ManifestError:
        raise
    except FormatError as exc:  # the dataset cannot even be opened: that is the finding
        result = VerifyResult(os.fspath(path))
        try:
            result.expected = read_manifest(path).records
        except ManifestError:
            pass
        result.problems.append(Problem(os.path.basename(exc.path or os.fspath(path)), exc.offset or 0, None,
                                       exc.message))
        return result
    with source:
        return source.verify(decode_rgb if decode else None, progress)
