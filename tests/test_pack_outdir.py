"""The output folder: where it may be, what a re-run keeps, who may write to it."""

from __future__ import annotations

from pathlib import Path

import importlib

import pytest

from recpack.errors import PackError
from recpack.pack import PackOptions, pack
from recpack.packing import write

QUIET = dict(progress=False, fsync=False, workers=0)
pack_module = importlib.import_module("recpack.pack")  # (the attribute recpack.pack is the function)


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


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


def test_resume_rewrites_a_finished_shard_damaged_since(tiny_jpegs: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    opts = PackOptions(num_shards=3, **QUIET)
    pack(tiny_jpegs, tmp_path / "ref", opts)
    out = tmp_path / "ds"
    real = write.write_shard
    calls = {"n": 0}

    def die_on_third(*args, **kw):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(pack_module, "write_shard", die_on_third)
    with pytest.raises(KeyboardInterrupt):
        pack(tiny_jpegs, out, opts)
    monkeypatch.undo()
    shard = out / "shard-00000.rpk"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x40  # one flipped bit in a record, same size: a size check keeps it
    shard.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=r"shard-00000.rpk: changed since it was finished .*writing it again"):
        res = pack(tiny_jpegs, out, opts)
    assert res.resumed == 1  # shard 1 kept, shard 0 rewritten, shard 2 written
    assert files_of(out) == files_of(tmp_path / "ref")
