"""The output folder: where it may be, what a re-run keeps, who may write to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from recpack.errors import PackError
from recpack.pack import PackOptions, pack

QUIET = dict(progress=False, fsync=False, workers=0)


@pytest.mark.parametrize("where", ["ds", "cat/ds", "."])
def test_output_inside_the_source_folder_is_refused(tiny_jpegs: Path, where: str) -> None:
    out = tiny_jpegs / where
    with pytest.raises(PackError, match="inside the source folder.*choose an output folder outside"):
        pack(tiny_jpegs, out, PackOptions(**QUIET))
    assert where == "." or not out.exists()  # refused before anything was written
    assert sorted(p.name for p in tiny_jpegs.iterdir()) == ["cat", "dog", "fish"]


def test_hidden_output_inside_the_source_is_skipped_by_scans(tiny_jpegs: Path) -> None:
    out = tiny_jpegs / ".recpack"
    first = pack(tiny_jpegs, out, PackOptions(**QUIET))
    assert first.records == 24
    again = pack(tiny_jpegs, out, PackOptions(**QUIET))  # the same plan: the output is not an input
    assert again.already_done and again.records == 24
