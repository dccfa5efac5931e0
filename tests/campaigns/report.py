"""Writing a campaign's results into a Markdown document (docs/reliability.md).

Here rather than in the benchmark scripts, which call it with ``--write``, so that the tests can check it:
tests never import benchmarks/. Both functions re-read the document just before writing it.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["replace_section", "replace_marked", "campaign_main"]


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


def campaign_main(argv: Sequence[str] | None, description: str, campaign: Callable[[int, int], dict[str, list[Any]]],
                  table: Callable[[dict[str, list[Any]], float], str], marker: str, doc: Path,
                  default_trials: int) -> int:
    """The command line of a campaign script: run ``campaign(trials, seed)``, print ``table(results, seconds)``
    and the failed trials (outcomes with ``failures``), with ``--write`` put the table between the ``marker``
    comments of ``doc``; exit status 1 when a trial failed."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--trials", type=int, default=default_trials,
                    help=f"trials per campaign (default {default_trials})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", action="store_true", help=f"put the table into {doc.parent.name}/{doc.name}")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    results = campaign(args.trials, args.seed)
    text = table(results, time.perf_counter() - t0)
    print(text)
    failed = [(k, o) for k, outs in results.items() for o in outs if o.failures]
    for kind, o in failed[:20]:
        print(f"FAILED {kind}: {o.failures}", file=sys.stderr)
    if args.write:
        replace_marked(marker, text, doc)
    return 1 if failed else 0
