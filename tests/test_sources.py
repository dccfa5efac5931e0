from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from recpack.sources import IMAGE_EXTENSIONS, Source, SourceItem, scan


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def can_symlink(tmp_path: Path) -> bool:
    try:
        os.symlink(str(tmp_path / "nowhere"), str(tmp_path / ".probe"))
    except (OSError, NotImplementedError):
        return False
    os.unlink(tmp_path / ".probe")
    return True


def test_extensions_are_lower_case_with_dot() -> None:
    assert {".jpg", ".jpeg", ".png", ".webp", ".tiff", ".pnm"} <= IMAGE_EXTENSIONS
    assert all(e.startswith(".") and e == e.lower() for e in IMAGE_EXTENSIONS)


def test_imagefolder_labels_follow_sorted_class_names(tiny_jpegs: Path) -> None:
    src = scan(tiny_jpegs)
    assert src.kind == "imagefolder"
    assert src.classes == ("cat", "dog", "fish")
    assert len(src.items) == 24
    for item in src.items:
        assert src.classes[item.label] == item.key.split("/")[0]  # type: ignore[index]
        assert Path(item.path).read_bytes()[:2] == b"\xff\xd8"
        assert item.id is None
    assert [i.key for i in src.items] == sorted(i.key for i in src.items)


def test_imagefolder_recursive_hidden_ignored_and_top_level_files(tmp_path: Path) -> None:
    touch(tmp_path / "b_class" / "x.JPG")
    touch(tmp_path / "b_class" / "deep" / "er" / "y.png")
    touch(tmp_path / "b_class" / "notes.txt")
    touch(tmp_path / "b_class" / ".hidden.jpg")
    touch(tmp_path / "b_class" / ".cache" / "z.jpg")
    touch(tmp_path / "a_class" / "w.jpeg")
    touch(tmp_path / ".git" / "objects" / "q.jpg")
    touch(tmp_path / "top.jpg")
    touch(tmp_path / "README.md")
    src = scan(tmp_path)
    assert src.kind == "imagefolder"
    assert src.classes == ("a_class", "b_class")
    assert [(i.key, i.label) for i in src.items] == [
        ("a_class/w.jpeg", 0), ("b_class/deep/er/y.png", 1), ("b_class/x.JPG", 1)]
    assert src.ignored == 3  # notes.txt + the two top-level files
    assert src.root == str(tmp_path)


def test_plain_folder_is_unlabeled_and_sorted_bytewise(tmp_path: Path) -> None:
    names = ["b.jpg", "B.jpg", "a10.jpg", "a9.jpg", "é.jpg", "z.png", "_.jpg"]
    for name in reversed(names):
        touch(tmp_path / name)
    touch(tmp_path / "skip.txt")
    src = scan(tmp_path)
    assert src.kind == "folder" and src.classes == () and src.ignored == 1
    keys = [i.key for i in src.items]
    assert keys == sorted(names, key=lambda k: k.encode("utf-8"))
    assert all(i.label is None for i in src.items)
    assert scan(tmp_path) == src  # deterministic


def test_scan_accepts_pathlike_and_empty_folder(tmp_path: Path) -> None:
    src = scan(tmp_path)
    assert src == Source("folder", str(tmp_path), (), (), 0)


def test_symlinked_files_included_even_broken_dirs_not_followed(tmp_path: Path) -> None:
    if not can_symlink(tmp_path):
        pytest.skip("symlinks unavailable")
    real = touch(tmp_path / "elsewhere" / "real.jpg")
    touch(tmp_path / "elsewhere" / "inside.jpg")
    data = tmp_path / "data"
    touch(data / "own.jpg")
    os.symlink(str(real), str(data / "link.jpg"))
    os.symlink(str(tmp_path / "missing.jpg"), str(data / "broken.jpg"))
    os.symlink(str(tmp_path / "elsewhere"), str(data / "linked_dir"))
    src = scan(data)
    assert src.kind == "folder"  # a symlinked directory is no class
    assert [i.key for i in src.items] == ["broken.jpg", "link.jpg", "own.jpg"]


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="needs a file system accepting any bytes")
def test_non_utf8_file_name_gets_text_key_and_openable_path(tmp_path: Path) -> None:
    raw = os.fsencode(str(tmp_path)) + b"/caf\xe9.jpg"
    try:
        with open(raw, "wb") as f:
            f.write(b"data")
    except OSError:
        pytest.skip("file system rejects non-UTF-8 names")
    (item,) = scan(tmp_path).items
    assert item.key == "caf\\xe9.jpg"
    item.key.encode("utf-8")  # valid text, msgpack can store it
    with open(item.path, "rb") as f:
        assert f.read() == b"data"


def test_lst_multi_and_float_labels_keep_file_order(tmp_path: Path) -> None:
    lst = tmp_path / "train.lst"
    lst.write_text(
        "7\t3.000000\tdogs/b.jpg\n"
        "\n"
        "2\t0.5\tcats/a.jpg\r\n"
        "9\t1.000000\t0.000000\t2.5\tcats/c.jpg\n",
        encoding="utf-8",
    )
    src = scan(lst)
    assert src.kind == "lst" and src.root == str(tmp_path) and src.classes == ()
    assert src.items == (
        SourceItem("dogs/b.jpg", os.path.join(str(tmp_path), "dogs/b.jpg"), 3, 7),
        SourceItem("cats/a.jpg", os.path.join(str(tmp_path), "cats/a.jpg"), 0.5, 2),
        SourceItem("cats/c.jpg", os.path.join(str(tmp_path), "cats/c.jpg"), (1, 0, 2.5), 9),
    )
    assert isinstance(src.items[0].label, int)


def test_lst_root_argument(tmp_path: Path) -> None:
    lst = touch(tmp_path / "lists" / "val.lst", b"0\t1\timg.jpg\n")
    src = scan(lst, root=tmp_path / "images")
    assert src.root == str(tmp_path / "images")
    assert src.items[0].path == os.path.join(str(tmp_path / "images"), "img.jpg")


@pytest.mark.parametrize("line", ["0\timg.jpg", "x\t1\timg.jpg", "0\tcat\timg.jpg", "0 1 img.jpg", "0\t1\t"])
def test_lst_malformed_line_names_file_and_line(tmp_path: Path, line: str) -> None:
    lst = tmp_path / "bad.lst"
    lst.write_text("0\t1\tok.jpg\n" + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError) as err:
        scan(lst)
    assert str(err.value) == f"{lst}:2: expected 'index<TAB>label<TAB>path', got {line!r}"


def test_list_file_comments_labels_and_order(tmp_path: Path) -> None:
    lst = tmp_path / "files.txt"
    absolute = str(tmp_path / "abs" / "z.png")
    lst.write_text(
        "# my images\n"
        "b/2.jpg\n"
        "\n"
        "   # indented comment\n"
        "a/1.jpg\t4\n"
        f"{absolute}\t1.0\t2.25\n",
        encoding="utf-8",
    )
    src = scan(lst)
    assert src.kind == "list" and src.ignored == 0
    assert [(i.key, i.label, i.id) for i in src.items] == [
        ("b/2.jpg", None, None), ("a/1.jpg", 4, None), (absolute.replace(os.sep, "/"), (1, 2.25), None)]
    assert src.items[2].path == absolute
    assert src.items[0].path == os.path.join(str(tmp_path), "b/2.jpg")


def test_list_bad_label(tmp_path: Path) -> None:
    lst = tmp_path / "files.txt"
    lst.write_text("a.jpg\tnot-a-number\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"files.txt:1: expected 'path\[<TAB>label...\]'"):
        scan(lst)


@pytest.mark.parametrize("name,body", [
    ("files.txt", "a.jpg\nb.jpg\n\na.jpg\n"),
    ("train.lst", "0\t1\ta.jpg\n1\t1\tb.jpg\n\n2\t0\ta.jpg\n"),
])
def test_duplicate_keys_name_both_lines(tmp_path: Path, name: str, body: str) -> None:
    lst = tmp_path / name
    lst.write_text(body, encoding="utf-8")
    with pytest.raises(ValueError, match=r":4: duplicate key 'a.jpg' \(first on line 1\)"):
        scan(lst)


def test_missing_source_says_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected a folder.*\\.lst file.*list file"):
        scan(tmp_path / "nope")


def test_root_for_a_folder_is_refused(tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg")
    with pytest.raises(ValueError, match="list files only"):
        scan(tmp_path, root=tmp_path / "other")
    assert scan(tmp_path, root=tmp_path).kind == "folder"


def test_empty_class_folder_is_kept_with_a_warning(tmp_path: Path) -> None:
    touch(tmp_path / "b" / "1.jpg")
    (tmp_path / "a").mkdir()
    (tmp_path / "c").mkdir()
    touch(tmp_path / "c" / "notes.txt")  # no image either
    with pytest.warns(UserWarning, match=r"class folders 'a' \(label 0\), 'c' \(label 2\) hold no images.*kept"):
        src = scan(tmp_path)
    assert src.classes == ("a", "b", "c") and [it.label for it in src.items] == [1]
