"""Find the input images to pack, in a deterministic order.

Three kinds of source, chosen by what ``src`` is:

* a **directory** -- with subdirectories at its top level it is an *ImageFolder*: each top-level
  subdirectory (sorted by name) is a class and its index is the label; without subdirectories it is a
  plain *folder* of unlabeled images. Images are found recursively and sorted by key (bytewise UTF-8), so
  the order never depends on the file system.
* a file ending in ``.lst`` -- an MXNet ``im2rec`` list: ``index<TAB>label[<TAB>label...]<TAB>path``.
* any other file -- a plain list: ``path[<TAB>label...]`` per line, ``#`` comments allowed.

Lists keep their file order. Nothing here opens an image; :func:`scan` costs one ``stat`` per directory
entry (folders) or one pass over the list file.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import TypeAlias
from collections.abc import Callable, Iterator

__all__ = ["IMAGE_EXTENSIONS", "Label", "SourceItem", "Source", "scan"]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff",
     ".ppm", ".pgm", ".pbm", ".pnm"}
)
"""Lower-case file extensions (with the dot) that folder scans pick up; others are counted as ignored."""

Label: TypeAlias = int | float | tuple[int | float, ...] | None
"""A label: an int class index, a float, several of them (multi-label), or None (unlabeled)."""


@dataclass(frozen=True, slots=True)
class SourceItem:
    """One input image.

    key: stable id stored in the record -- the path relative to the source root with '/' separators,
        always valid UTF-8 text (undecodable bytes of a file name appear as backslash escapes, e.g. ``\\xff``).
    path: the file-system path to open (may hold surrogate escapes of non-UTF-8 names; ``open()`` accepts it).
    label: see :data:`Label`.
    id: the index column of an im2rec ``.lst`` file, else None.
    """

    key: str
    path: str
    label: Label
    id: int | None = None


@dataclass(frozen=True, slots=True)
class Source:
    """The result of :func:`scan`.

    kind: "folder", "imagefolder", "lst" or "list".
    root: the directory that keys (and relative list paths) are relative to.
    items: the images, sorted by key for folders, in file order for lists.
    classes: ImageFolder class names in label order; () for other kinds.
    ignored: files skipped because their extension is not an image extension (folders only; for an
        ImageFolder also the files at its top level).
    """

    kind: str
    root: str
    items: tuple[SourceItem, ...]
    classes: tuple[str, ...]
    ignored: int


def scan(src: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Source:
    """Find the images named by ``src`` (a folder, an im2rec ``.lst`` file or a list file).

    ``root`` is the directory that relative paths in a list are relative to (default: the list file's
    directory); it must be None for a folder, whose root is the folder itself.
    Raises ValueError for a missing ``src``, a malformed list line (naming the file and line: not of the
    form, a label or index out of range, a NUL in a path) or a duplicate key; OSError when a directory or the
    list cannot be read. An empty result is returned as is. Class folders without images are kept as classes,
    with a warning (see :func:`_warn_empty_classes`).
    """
    src_s = os.fsdecode(src)
    if os.path.isdir(src_s):
        if root is not None and os.path.normpath(os.fsdecode(root)) != os.path.normpath(src_s):
            raise ValueError(
                f"root={os.fsdecode(root)!r} applies to list files only; a folder ({src_s!r}) is its own "
                "root: drop the root argument"
            )
        return _scan_dir(src_s)
    if os.path.isfile(src_s):
        root_s = os.path.dirname(src_s) if root is None else os.fsdecode(root)
        if src_s.lower().endswith(".lst"):
            return _scan_lst(src_s, root_s)
        return _scan_list(src_s, root_s)
    raise ValueError(
        f"{src_s!r} does not exist: expected a folder of images (or an ImageFolder of class folders), "
        "an im2rec .lst file, or a list file with one image path per line"
    )


# -- helpers ----------------------------------------------------------------------------------------------

def _text(name: str) -> str:
    """``name`` as valid UTF-8 text: undecodable bytes (surrogate escapes) become backslash escapes."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


def _sort_key(key: str) -> bytes:
    return key.encode("utf-8")


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk_images(top: str, prefix: str) -> Iterator[tuple[str, str] | None]:
    """Yield (key, path) for each image under ``top`` and None for each skipped non-image file.

    Symlinked directories are not entered (no cycles); symlinked files, broken ones included, are
    yielded so the packer can report them. Hidden entries are skipped silently. Iterative (an explicit stack,
    not recursion), so any depth the file system allows is walked; the order is left to the caller's sort.
    Raises OSError for a directory that cannot be listed.
    """
    stack = [(top, prefix)]
    while stack:
        folder, base = stack.pop()
        with os.scandir(folder) as it:
            entries = list(it)
        for e in entries:
            if _hidden(e.name):
                continue
            if e.is_dir():
                if not e.is_symlink():
                    stack.append((e.path, base + _text(e.name) + "/"))
            elif _is_image(e.name):
                yield _text(base + e.name), e.path
            else:
                yield None


def _scan_dir(top: str) -> Source:
    with os.scandir(top) as it:
        entries = sorted(it, key=lambda e: _sort_key(_text(e.name)))
    classes = [e for e in entries if not _hidden(e.name) and e.is_dir(follow_symlinks=False)]
    items: list[SourceItem] = []
    ignored = 0
    if classes:
        # Top-level files of an ImageFolder belong to no class.
        # (A symlinked directory is neither a class nor counted: symlinked directories are not entered.)
        ignored = sum(1 for e in entries if not _hidden(e.name) and not e.is_dir())
        for label, entry in enumerate(classes):
            for found in _walk_images(entry.path, _text(entry.name) + "/"):
                if found is None:
                    ignored += 1
                else:
                    items.append(SourceItem(found[0], found[1], label))
    else:
        for found in _walk_images(top, ""):
            if found is None:
                ignored += 1
            else:
                items.append(SourceItem(found[0], found[1], None))
    items.sort(key=lambda item: _sort_key(item.key))
    for a, b in zip(items, items[1:]):
        if a.key == b.key:  # only possible when escaping two different undecodable names collides
            raise ValueError(f"{a.path!r} and {b.path!r} map to the same key {a.key!r}; rename one of them")
    names = tuple(_text(e.name) for e in classes)
    _warn_empty_classes(top, names, {it.label for it in items})
    kind = "imagefolder" if classes else "folder"
    return Source(kind, top, tuple(items), names, ignored)


def _warn_empty_classes(top: str, names: tuple[str, ...], used: set[Label]) -> None:
    """Warn about class folders without images. They stay classes -- every folder keeps the label of its
    place among the sorted names, as in a train split whose val split lacks a class, and as torchvision's
    ``ImageFolder(allow_empty=True)`` -- but an empty class is more often a mistake, so say so."""
    empty = [f"{name!r} (label {label})" for label, name in enumerate(names) if label not in used]
    if empty:
        warnings.warn(
            f"{top}: class folder{'s' if len(empty) > 1 else ''} {', '.join(empty[:10])}"
            f"{f' and {len(empty) - 10} more' if len(empty) > 10 else ''} hold no images; they are kept as "
            "classes with no records, so every label stays the index of its folder among the sorted names. "
            "Add the images, or remove the empty folders to drop those classes (later labels then shift down)",
            stacklevel=3)


_I64 = 1 << 63


class _OutOfRange(ValueError):
    """A list field with the right form but a value recpack cannot store; the message says which and why."""


def _parse_label(text: str) -> int | float:
    """Parse one label; im2rec writes floats ("3.000000"), so integral values become ints, which must fit the
    table's signed 64-bit label column."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    if not value.is_integer():
        return value
    if not -_I64 <= value < _I64:
        raise _OutOfRange(f"label {text!r} is out of range: a whole-number label must be within "
                          "-2**63..2**63-1 (a signed 64-bit integer)")
    return int(value)


def _parse_labels(fields: list[str]) -> Label:
    labels = tuple(_parse_label(f) for f in fields)
    if not labels:
        return None
    return labels[0] if len(labels) == 1 else labels


def _lines(path: str) -> Iterator[tuple[int, str]]:
    """Yield (line number, line) for non-blank lines, newline stripped. UTF-8 (BOM allowed); bytes that
    are not UTF-8 survive as surrogate escapes, like ``os.fsdecode`` file names."""
    with open(path, "rb") as f:
        text = f.read().decode("utf-8-sig", "surrogateescape")
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if line.strip():
            yield lineno, line


def _shown(line: str, limit: int = 200) -> str:
    """``repr(line)``, shortened to about ``limit`` characters for an error message."""
    return repr(line) if len(line) <= limit else repr(line[:limit]) + f"... ({len(line)} characters)"


def _key(path_field: str) -> str:
    return _text(path_field.replace(os.sep, "/") if os.sep != "/" else path_field)


def _scan_list_file(path: str, root: str, kind: str,
                    parse: Callable[[str], tuple[str, Label, int | None]]) -> Source:
    items: list[SourceItem] = []
    seen: dict[str, int] = {}
    for lineno, line in _lines(path):
        if kind == "list" and line.lstrip().startswith("#"):
            continue
        try:
            rel, label, index = parse(line)
            if "\0" in rel:
                raise _OutOfRange("the path holds a NUL character, which no file name can")
        except _OutOfRange as exc:
            raise ValueError(f"{path}:{lineno}: {exc}; got {_shown(line)}") from None
        except ValueError:
            expected = "index<TAB>label<TAB>path" if kind == "lst" else "path[<TAB>label...]"
            raise ValueError(f"{path}:{lineno}: expected '{expected}', got {_shown(line)}") from None
        key = _key(rel)
        if key in seen:
            raise ValueError(
                f"{path}:{lineno}: duplicate key {key!r} (first on line {seen[key]}); "
                "each image may be listed once"
            )
        seen[key] = lineno
        items.append(SourceItem(key, os.path.join(root, rel), label, index))
    return Source(kind, root, tuple(items), (), 0)


def _parse_lst_line(line: str) -> tuple[str, Label, int | None]:
    fields = line.split("\t")
    if len(fields) < 3 or not fields[-1]:
        raise ValueError(line)
    index = int(fields[0])
    if not 0 <= index < 1 << 64:
        raise _OutOfRange(f"index {fields[0]!r} is out of range: im2rec indexes are whole numbers in "
                          "0..2**64-1")
    return fields[-1], _parse_labels(fields[1:-1]), index


def _parse_list_line(line: str) -> tuple[str, Label, int | None]:
    fields = line.split("\t")
    if not fields[0].strip():
        raise ValueError(line)
    return fields[0], _parse_labels(fields[1:]), None


def _scan_lst(path: str, root: str) -> Source:
    return _scan_list_file(path, root, "lst", _parse_lst_line)


def _scan_list(path: str, root: str) -> Source:
    return _scan_list_file(path, root, "list", _parse_list_line)
