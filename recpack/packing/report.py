"""The skip report: source images left out of a dataset and why, written to ``OUT/pack-report.tsv``
(``key<TAB>reason<TAB>path``, one line per skipped image, in plan order)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import PackError
from ..index import atomic_write
from ..sources import Source

__all__ = ["REPORT_NAME", "Skipped", "nothing_packed", "reason_counts", "write_report"]

REPORT_NAME = "pack-report.tsv"


@dataclass(frozen=True)
class Skipped:
    """A source image left out of the dataset, and why."""

    key: str
    path: str
    reason: str


def reason_counts(skipped: Iterable[Skipped]) -> list[tuple[str, int]]:
    """(reason, count) per kind of reason (the text before the first ':'), most frequent first."""
    return Counter(s.reason.split(":")[0] for s in skipped).most_common()


def write_report(out: str, skipped: list[Skipped]) -> None:
    """Write ``out/pack-report.tsv`` atomically (tabs and newlines inside fields become spaces)."""
    lines = ["key\treason\tpath"]
    for s in skipped:
        lines.append("\t".join(x.replace("\t", " ").replace("\n", " ") for x in (s.key, s.reason, s.path)))
    atomic_write(os.path.join(out, REPORT_NAME), ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))


def nothing_packed(out: str, source: Source, skipped: list[Skipped], root_given: bool) -> PackError:
    """The error for a pack in which every input was skipped: the reasons with their counts, where the report
    is, and the likely fix (``--root`` when a list's relative paths were not found)."""
    counts = ", ".join(f"{n} {reason}" for reason, n in reason_counts(skipped))
    msg = (f"{out}: no images were packed: all {len(skipped)} inputs were skipped ({counts}); "
           f"{os.path.join(out, REPORT_NAME)} lists each one with its reason and the path tried.")
    missing = [s for s in skipped if s.reason == "not found"]
    if missing and source.kind in ("lst", "list"):
        where = "--root" if root_given else "the list's folder (no --root given)"
        msg += (f" Relative paths in the list are looked up under {os.path.abspath(source.root)}, {where}: "
                f"{os.path.abspath(missing[0].path)} does not exist. Pass --root with the folder the paths are "
                "relative to.")
    elif all("rejected by --convert reject" in s.reason for s in skipped):
        msg += " Drop --convert reject to convert them to JPEG."
    else:
        msg += " See docs/guide.md (Bad inputs) for what each reason means."
    return PackError(msg)
