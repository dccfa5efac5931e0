"""The skip report: source images left out of a dataset and why, written to ``OUT/pack-report.tsv``
(``key<TAB>reason<TAB>path``, one line per skipped image, in plan order)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from ..index import atomic_write

__all__ = ["REPORT_NAME", "Skipped", "reason_counts", "write_report"]

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
