"""Bit-rot and truncation campaigns against a packed dataset (issue 7).

Pack a small dataset once, then per trial copy it, damage one copy (flip 1..3 distinct random bits somewhere in
the shard files, or truncate one shard at a random offset) and check every reader against the ground truth
taken from the intact copy:

* ``recpack.verify`` reports the dataset as damaged, names every damaged record (by its offset) and never an
  intact one, and counts exactly the intact records;
* ``recpack.open(on_error="skip")`` yields every intact record exactly once, with its stored bytes;
* ``Loader(on_error="skip", decode=False)`` delivers every intact (bytes, label) exactly once and counts the
  damaged records in ``stats["skipped"]``;
* the strict ``recpack.open`` and ``Loader`` raise a :class:`recpack.errors.FormatError`
  (``CorruptRecord``/``CorruptShard``) when a record is damaged, and deliver everything when none is;
* nothing else is ever raised, and every trial finishes within ``TRIAL_TIMEOUT_S`` (a SIGALRM watchdog).

A record counts as damaged when a changed bit lies inside its bytes ``[offset, offset + length)``. Bits in the
header block, the footer table or padding damage no record: ``verify`` still reports them (header/table
checksums, non-zero padding, the whole-file CRC32C in the manifest). A damaged header or footer table makes
the shard's table untrustworthy, so the decision is: ``recpack.open``/``verify`` recover its records by scanning
(resynchronising on record magic + header CRC), while ``Loader`` (which plans epochs from the footer tables)
refuses the dataset at construction with a ``CorruptShard`` naming the file — in both ``on_error`` modes.

Test tooling, not package code (see ``campaigns/__init__.py``): it damages files on purpose and knows the
shard layout. The quick part runs in tests/test_faults.py; the long runs and the table in docs/reliability.md
come from ``python benchmarks/faults.py --trials N [--write]``, a command line over :func:`campaign` and
:func:`table`.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import numpy as np

import recpack
from recpack.errors import FormatError
from recpack.loader import Loader
from recpack.pack import PackOptions, pack
from recpack.shard import ShardReader
from recpack.synth import make_image_folder
from recpack.verify import verify

TRIAL_TIMEOUT_S = 30.0
IMAGES = 40
SHARDS = 3


class TrialTimeout(Exception):
    """A trial ran past TRIAL_TIMEOUT_S: a reader hung."""


@contextlib.contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Raise TrialTimeout in the main thread after ``seconds`` (SIGALRM; Unix, main thread only)."""
    def fire(signum: int, frame: FrameType | None) -> None:
        raise TrialTimeout(f"trial ran past {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@dataclass(frozen=True)
class StoredRecord:
    shard: str
    offset: int
    length: int
    label: int
    data: bytes


@dataclass
class Truth:
    """The intact dataset: where each record lies and what it holds."""

    folder: Path
    records: list[StoredRecord]
    shards: dict[str, int]  # name -> file size
    regions: dict[str, dict[str, tuple[int, int]]]  # name -> {"header"|"data"|"table": (start, end)}


def build(base: Path, images: int = IMAGES, shards: int = SHARDS) -> Truth:
    """Pack ``images`` small JPEGs into ``shards`` shards under ``base`` and record the ground truth."""
    make_image_folder(base / "src", images, classes=4, size=(64, 48), seed=7)
    folder = base / "ds"
    pack(base / "src", folder, PackOptions(num_shards=shards, workers=0, progress=False, fsync=False))
    records: list[StoredRecord] = []
    sizes: dict[str, int] = {}
    regions: dict[str, dict[str, tuple[int, int]]] = {}
    with recpack.open(folder) as ds:
        for entry in ds.manifest.shards:
            path = os.path.join(folder, entry.name)
            sizes[entry.name] = os.path.getsize(path)
            with ShardReader(path) as r:
                h = r.header
                regions[entry.name] = {"header": (0, 64), "data": (h.data_offset, h.data_offset + h.data_length),
                                       "table": (h.table_offset, h.table_offset + h.table_length)}
                for j in range(len(r)):
                    rec = r.read(j)
                    records.append(StoredRecord(entry.name, int(r.table["offset"][j]), int(r.table["length"][j]),
                                                int(r.table["label"][j]), rec.data))
    return Truth(folder, records, sizes, regions)


@dataclass
class Outcome:
    """One trial's result. ``failures`` lists every expectation that did not hold (empty = passed)."""

    kind: str
    damaged: int  # records with a changed byte (or cut off)
    shard_level: bool  # header or footer table damaged / shard truncated
    verify_named: int = 0
    skipped: int = 0
    loader_refused: bool = False
    wrong: int = 0  # wrong bytes or labels delivered
    failures: list[str] = field(default_factory=list)


def _copy(truth: Truth, work: Path) -> Path:
    dst = work / "ds"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(truth.folder, dst)
    return dst


def flip_bits(truth: Truth, folder: Path, rng: np.random.Generator, max_bits: int = 3
              ) -> tuple[set[tuple[str, int]], bool, list[tuple[str, int]]]:
    """Flip 1..max_bits distinct bits in the shards of ``folder``. Where: 60% inside the data region, 15% in
    the 64 header bytes, 15% in the footer table, 10% anywhere in the file. Returns (damaged records as
    (shard, offset), whether a header or table was hit, the flipped (shard, bit) positions)."""
    names = sorted(truth.shards)
    bits: set[tuple[str, int]] = set()
    k = int(rng.integers(1, max_bits + 1))
    while len(bits) < k:
        name = names[int(rng.integers(len(names)))]
        where = rng.choice(["data", "header", "table", "any"], p=[0.6, 0.15, 0.15, 0.1])
        lo, hi = (0, truth.shards[name]) if where == "any" else truth.regions[name][str(where)]
        bits.add((name, int(rng.integers(lo * 8, hi * 8))))
    for name, bit in bits:
        with open(folder / name, "r+b") as f:
            f.seek(bit // 8)
            byte = f.read(1)[0]
            f.seek(bit // 8)
            f.write(bytes([byte ^ (1 << (bit % 8))]))
    damaged = {(r.shard, r.offset) for r in truth.records for name, bit in bits
               if name == r.shard and r.offset <= bit // 8 < r.offset + r.length}
    shard_level = any(truth.regions[name][part][0] <= bit // 8 < truth.regions[name][part][1]
                      for name, bit in bits for part in ("header", "table"))
    return damaged, shard_level, sorted(bits)


def truncate(truth: Truth, folder: Path, rng: np.random.Generator) -> tuple[set[tuple[str, int]], bool, int]:
    """Cut one shard of ``folder`` at a random offset. Returns (records not wholly before the cut, whether
    the cut reaches the footer table, the cut offset)."""
    names = sorted(truth.shards)
    name = names[int(rng.integers(len(names)))]
    cut = int(rng.integers(0, truth.shards[name]))
    os.truncate(folder / name, cut)
    lost = {(r.shard, r.offset) for r in truth.records if r.shard == name and r.offset + r.length > cut}
    return lost, cut < truth.regions[name]["table"][1], cut  # a cut in the final padding leaves the table


def check(truth: Truth, folder: Path, kind: str, damaged: set[tuple[str, int]], shard_level: bool,
          any_change: bool = True) -> Outcome:
    """Run every reader over the damaged copy at ``folder`` and compare with the ground truth."""
    out = Outcome(kind, len(damaged), shard_level)
    fail = out.failures.append
    intact = [r for r in truth.records if (r.shard, r.offset) not in damaged]
    starts = {(r.shard, r.offset) for r in truth.records}

    # verify: reports the damage, names every damaged record and no intact one, counts the intact ones
    res = verify(folder)
    if any_change and res.ok:
        fail("verify reported a damaged dataset as ok")
    named = {(p.shard, p.offset) for p in res.problems if (p.shard, p.offset) in starts}
    out.verify_named = len(named & damaged)
    if kind == "flip":
        if named != damaged:
            fail(f"verify named records {sorted(named)}, damaged were {sorted(damaged)}")
    elif not named <= damaged:  # truncation: records cut off entirely cannot be named, only counted
        fail(f"verify named intact records {sorted(named - damaged)}")
    if res.records != len(intact):
        fail(f"verify counted {res.records} intact records, expected {len(intact)}")

    expected = collections.Counter(r.data for r in intact)

    # recpack.open(on_error="skip"): every intact record exactly once, stored bytes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with recpack.open(folder, on_error="skip") as ds:
            got = collections.Counter(rec.data for rec in ds)
            if damaged and not shard_level and ds.stats["skipped"] != len(damaged):
                fail(f"open(skip) counted {ds.stats['skipped']} skipped, {len(damaged)} damaged")
    if got != expected:
        out.wrong += sum((got - expected).values())
        fail(f"open(skip) delivered {sum(got.values())} records, {sum((got - expected).values())} wrong, "
             f"{sum((expected - got).values())} intact ones missing")

    # strict recpack.open: raises a FormatError when a record is damaged, else delivers everything
    try:
        with recpack.open(folder) as ds:
            got = collections.Counter(rec.data for rec in ds)
        if damaged or shard_level:
            fail("strict open delivered a damaged dataset without raising")
        elif got != expected:
            fail("strict open delivered wrong records")
    except FormatError:
        if not damaged and not shard_level:
            fail("strict open raised on a dataset whose records are intact")

    # Loader(on_error="skip"): every intact (bytes, label) exactly once, the rest counted
    expected_pairs = collections.Counter((r.data, r.label) for r in intact)
    for mode in ("skip", "raise"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                loader = Loader(folder, batch_size=8, decode=False, transform=None, device="cpu",
                                order="random", seed=int(out.damaged), on_error=mode, threads=2)
        except FormatError:
            out.loader_refused = True
            if not shard_level:
                fail(f"Loader({mode}) refused a dataset whose headers and tables are intact")
            continue
        if shard_level:
            fail(f"Loader({mode}) opened a dataset with a damaged header or footer table")
        pairs: collections.Counter[tuple[bytes, int]] = collections.Counter()
        try:
            with loader, warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                for datas, labels in loader:
                    pairs.update(zip((bytes(d) for d in datas), np.asarray(labels).tolist()))
        except FormatError:
            if mode == "skip" or not damaged:
                fail(f"Loader({mode}) raised on damage it should have skipped")
            continue
        if mode == "raise" and damaged:
            fail("strict Loader delivered a damaged dataset without raising")
            continue
        if pairs != expected_pairs:
            out.wrong += sum((pairs - expected_pairs).values())
            fail(f"Loader({mode}) delivered {sum((pairs - expected_pairs).values())} wrong, missed "
                 f"{sum((expected_pairs - pairs).values())} intact records")
        if mode == "skip":
            out.skipped = int(loader.stats["skipped"])
            if out.skipped != len(damaged):
                fail(f"Loader(skip) counted {out.skipped} skipped, {len(damaged)} damaged")
    return out


def run_trial(truth: Truth, work: Path, kind: str, rng: np.random.Generator) -> Outcome:
    """One trial of ``kind`` ("flip" or "truncate") under the watchdog; never raises for a failed trial."""
    folder = _copy(truth, work)
    if kind == "flip":
        damaged, shard_level, _ = flip_bits(truth, folder, rng)
    else:
        damaged, shard_level, cut = truncate(truth, folder, rng)
    try:
        with watchdog(TRIAL_TIMEOUT_S):
            return check(truth, folder, kind, damaged, shard_level)
    except TrialTimeout as exc:
        return Outcome(kind, len(damaged), shard_level, failures=[f"hang: {exc}"])
    except Exception as exc:  # anything escaping the readers is a finding, reported with its type
        return Outcome(kind, len(damaged), shard_level, failures=[f"unexpected {type(exc).__name__}: {exc}"])


def campaign(trials: int, seed: int = 0, base: Path | None = None) -> dict[str, list[Outcome]]:
    """``trials`` bit-flip trials and ``trials`` truncation trials; returns the outcomes by kind."""
    with contextlib.ExitStack() as stack:
        if base is None:
            base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="recpack-faults-")))
        truth = build(base)
        rng = np.random.default_rng(seed)
        return {kind: [run_trial(truth, base / "work", kind, rng) for _ in range(trials)]
                for kind in ("flip", "truncate")}


def table(results: dict[str, list[Outcome]], seconds: float, peak_mib: float) -> str:
    """The Markdown table for docs/reliability.md."""
    rows = ["| campaign | trials | damaged records | shards refused by Loader | failed expectations | "
            "wrong records delivered | hangs |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    label = {"flip": "bit flips (1-3 bits)", "truncate": "truncation at a random offset"}
    for kind, outs in results.items():
        rows.append(f"| {label[kind]} | {len(outs)} | {sum(o.damaged for o in outs)} | "
                    f"{sum(o.loader_refused for o in outs)} | {sum(bool(o.failures) for o in outs)} | "
                    f"{sum(o.wrong for o in outs)} | {sum(any('hang' in f for f in o.failures) for o in outs)} |")
    rows.append("")
    rows.append(f"{IMAGES} records in {SHARDS} shards; {seconds:.0f} s on {os.cpu_count()} cores; peak RSS "
                f"{peak_mib:.0f} MiB (the campaign process, torch included).")
    return "\n".join(rows)
