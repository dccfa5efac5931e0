"""Out-of-range and malformed pack inputs get a clear error naming the option, or the list file and line, and
what to do -- a PackError (the CLI's ``error:`` line, exit 1) that is also a ValueError -- never a raw
OverflowError, ValueError or RecursionError from deep inside the packer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import _jpeg
from recpack.errors import PackError
from recpack.pack import PackInputError, PackOptions, pack
from recpack.sources import scan

QUIET = dict(progress=False, fsync=False, workers=0)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "recpack", "pack", *args, "--no-progress"], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    d = tmp_path / "img"
    d.mkdir()
    for i in range(3):
        (d / f"{i}.jpg").write_bytes(_jpeg((40, 30), seed=i))
    return d


@pytest.mark.parametrize("name,line,why", [
    ("a.lst", "1\t1e20\t0.jpg", "label '1e20' is out of range"),
    ("a.lst", "1\t-1e19\t0.jpg", "label '-1e19' is out of range"),
    ("a.lst", f"{10**23}\t1\t0.jpg", f"index '{10**23}' is out of range"),
    ("a.lst", "-1\t1\t0.jpg", "index '-1' is out of range"),
    ("a.lst", "1\t1\t0\0.jpg", "NUL character"),
    ("a.txt", "0\0.jpg\t1", "NUL character"),
    ("a.txt", "0.jpg\t" + "9" * 5000, "expected 'path[<TAB>label...]'"),
    ("a.lst", "9" * 5000 + "\t1\t0.jpg", "expected 'index<TAB>label<TAB>path'"),
    ("a.lst", "0\t1", "expected 'index<TAB>label<TAB>path'"),
])
def test_bad_list_line_is_an_error_naming_file_and_line(images: Path, tmp_path: Path, name: str, line: str,
                                                        why: str) -> None:
    lst = images / name
    first = "0\t1\t1.jpg" if name.endswith(".lst") else "1.jpg\t1"
    lst.write_text(f"{first}\n{line}\n", encoding="utf-8")
    with pytest.raises(ValueError) as err:
        scan(lst)
    assert str(err.value).startswith(f"{lst}:2: ") and why in str(err.value), err.value
    assert len(str(err.value)) < 500  # a 5,000-digit field is shortened in the message
    with pytest.raises(PackInputError, match=f"{lst}:2: "):
        pack(lst, tmp_path / "ds", PackOptions(**QUIET))
    assert not (tmp_path / "ds").exists()  # nothing written
    r = run_cli(str(lst), str(tmp_path / "cli"))
    assert r.returncode == 1 and r.stderr.startswith(f"error: {lst}:2: ") and "Traceback" not in r.stderr, r.stderr


def test_duplicate_key_is_an_error_line_in_the_cli(images: Path, tmp_path: Path) -> None:
    lst = images / "dup.txt"
    lst.write_text("0.jpg\n1.jpg\n0.jpg\n", encoding="utf-8")
    r = run_cli(str(lst), str(tmp_path / "ds"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"error: {lst}:3: duplicate key '0.jpg' (first on line 1)"), r.stderr


@pytest.mark.parametrize("seed", [2**63, -1, 1.5, "7"])
def test_seed_must_be_a_whole_number_in_0_to_2_63(images: Path, tmp_path: Path, seed: object) -> None:
    with pytest.raises(PackInputError, match=r"seed must be a whole number in 0\.\.2\*\*63-1"):
        pack(images, tmp_path / "ds", PackOptions(seed=seed, **QUIET))  # type: ignore[arg-type]
    assert issubclass(PackInputError, PackError) and issubclass(PackInputError, ValueError)
    assert pack(images, tmp_path / "max", PackOptions(seed=2**63 - 1, **QUIET)).records == 3


def test_seed_out_of_range_in_the_cli(images: Path, tmp_path: Path) -> None:
    r = run_cli(str(images), str(tmp_path / "ds"), "--seed", str(2**63))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: seed must be a whole number in 0..2**63-1"), r.stderr


@pytest.mark.parametrize("option", [dict(shard_size=2**64), dict(shard_size=0), dict(num_shards=0),
                                    dict(workers=-1), dict(workers=2.5)])
def test_other_options_out_of_range(images: Path, tmp_path: Path, option: dict[str, object]) -> None:
    opts = {**QUIET, **option}
    with pytest.raises(PackInputError, match=next(iter(option))):
        pack(images, tmp_path / "ds", PackOptions(**opts))  # type: ignore[arg-type]


def test_deeply_nested_folder_is_scanned(tmp_path: Path) -> None:
    top = tmp_path / "deep"
    (top / "c").mkdir(parents=True)
    depth = 1100  # deeper than Python's recursion limit (os.walk recursed in 3.11)
    cwd = os.getcwd()
    try:
        os.chdir(top / "c")
        for _ in range(depth):
            os.mkdir("d")
            os.chdir("d")
        Path("x.jpg").write_bytes(_jpeg((16, 16)))
        os.chdir(cwd)
        src = scan(top)
        assert [it.key for it in src.items] == ["c/" + "d/" * depth + "x.jpg"] and src.classes == ("c",)
    finally:  # shutil.rmtree (pytest's clean-up of old temporary folders) recurses too: remove it here
        os.chdir(top / "c")
        made = 0
        while os.path.isdir("d"):
            os.chdir("d")
            made += 1
        for name in os.listdir():
            os.unlink(name)
        for _ in range(made):
            os.chdir("..")
            os.rmdir("d")
        os.chdir(cwd)
