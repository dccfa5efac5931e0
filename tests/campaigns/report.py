"""Writing a campaign's results into a Markdown document (docs/reliability.md).

Here rather than in the benchmark scripts, which call it with ``--write``, so that the tests can check it:
tests never import benchmarks/. Both functions re-read the document just before writing it.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["replace_section", "replace_marked"]


def replace_section(title: str, body: str, path: Path) -> None:
    """Replace the text under ``## title`` (up to the next ``## ``) in ``path``."""
    text = path.read_text()
    pat = re.compile(rf"(^## {re.escape(title)}\n)(.*?)(?=^## |\Z)", re.S | re.M)
    if not pat.search(text):
        raise SystemExit(f"{path}: no section '## {title}'")
    path.write_text(pat.sub(lambda m: m.group(1) + "\n" + body.strip() + "\n\n", text, count=1))


def replace_marked(name: str, text: str, path: Path) -> None:
    """Replace the text between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in ``path``."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    body = path.read_text()
    a, b = body.index(begin) + len(begin), body.index(end)
    path.write_text(body[:a] + "\n" + text + "\n" + body[b:])
