"""Identity attacks (issue 14): damage that keeps every checksum valid but puts a record, a value or a shard
where another belongs. Test tooling: it rewrites datasets on purpose.

Per trial, a fresh copy of a small dataset (shards or LMDB) gets one attack:

- ``swap``: two records of one shard trade places in the file (records of equal length when there are any,
  so even the lengths still match the table);
- ``lmdb-swap``: two LMDB values trade keys;
- ``duplicate``: index.json lists one shard twice (record counts adjusted to match);
- ``foreign``: a shard is replaced by the same-numbered shard of another pack of the same images (same
  record count, another shuffle);
- ``repack``: the dataset is re-packed in place (another seed) under a Loader that already delivered a batch.

Then the Loader (raw records, ``on_error="skip"``: the mode that must not deliver wrong data silently) and
``recpack.open`` (skip mode) read everything, and every delivered record is compared with the truth: the
bytes and label that record id has in the intact copy. A trial passes when no wrong record is delivered,
every reader's delivered + skipped accounts for the whole epoch, and ``verify`` reports the damage.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import recpack
from recpack import Loader, PackOptions, pack
from recpack.errors import RecpackError
from recpack.shard import ShardReader
from recpack.synth import make_image_folder
from recpack.verify import verify

__all__ = ["ATTACKS", "Outcome", "campaign", "table"]

ATTACKS = ("swap", "lmdb-swap", "duplicate", "foreign", "repack")


@dataclass
class Outcome:
    attack: str
    checked: int = 0  # records delivered and compared with the truth
    wrong: int = 0  # delivered with bytes or label of another record
    refused: bool = False  # a reader raised a RecpackError, or counted what it did not deliver
    verify_found: bool = False
    failures: list[str] = field(default_factory=list)


def _pack(src: Path, out: Path, seed: int, backend: str = "shards") -> Path:
    pack(src, out, PackOptions(seed=seed, num_shards=3, workers=0, progress=False, fsync=False, backend=backend))
    return out


def _truth(ds: Path) -> dict[str, tuple[bytes, Any]]:
    with recpack.open(ds) as d:
        return {r.key: (r.data, r.label) for r in d}


def _swap(ds: Path, rng: random.Random) -> None:
    name = f"shard-{rng.randrange(3):05d}.rpk"
    with ShardReader(str(ds / name)) as r:
        offsets, lengths = r.table["offset"].tolist(), r.table["length"].tolist()
    pairs = [(i, j) for i in range(len(offsets)) for j in range(i + 1, len(offsets)) if lengths[i] == lengths[j]]
    i, j = rng.choice(pairs) if pairs else sorted(rng.sample(range(len(offsets)), 2))
    raw = bytearray((ds / name).read_bytes())
    a, b = bytes(raw[offsets[i]:offsets[i] + lengths[i]]), bytes(raw[offsets[j]:offsets[j] + lengths[j]])
    if lengths[i] == lengths[j]:
        raw[offsets[i]:offsets[i] + lengths[i]], raw[offsets[j]:offsets[j] + lengths[j]] = b, a
    else:  # unequal: swap within the span from i to the end of j (the records between move too)
        mid = bytes(raw[offsets[i] + lengths[i]:offsets[j]])
        raw[offsets[i]:offsets[j] + lengths[j]] = b + mid + a
    (ds / name).write_bytes(bytes(raw))


def _lmdb_swap(ds: Path, rng: random.Random) -> None:
    import lmdb

    with recpack.open(ds) as d:
        i, j = rng.sample(range(len(d)), 2)
    env = lmdb.open(str(ds), subdir=True)
    with env.begin(write=True) as txn:
        ki, kj = b"r%010d" % i, b"r%010d" % j
        a, b = txn.get(ki), txn.get(kj)
        txn.put(ki, b)
        txn.put(kj, a)
    env.close()


def _duplicate(ds: Path, rng: random.Random) -> None:
    index = json.loads((ds / "index.json").read_text())
    s, t = rng.sample(range(len(index["shards"])), 2)
    index["shards"][t] = dict(index["shards"][s])
    index["records"] = sum(e["records"] for e in index["shards"])
    (ds / "index.json").write_text(json.dumps(index))


def _read(ds: Path, truth: dict[str, tuple[bytes, Any]], outcome: Outcome, loader: Loader | None = None) -> None:
    """Read with the Loader (raw, skip) and recpack.open (skip); compare what arrives with the truth."""
    def check(key: str | None, data: bytes, label: Any) -> None:
        outcome.checked += 1
        want = truth.get(key) if key is not None else None
        if want is None or want[0] != data or (label is not None and want[1] != label):
            outcome.wrong += 1

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ld = loader or Loader(ds, batch_size=8, decode=False, transform=None, device="cpu", threads=1,
                                  on_error="skip", order="sequential")
            by_bytes = {v[0]: k for k, v in truth.items()}
            for items, labels in ld:
                for data, label in zip(items, labels.tolist()):
                    key = by_bytes.get(bytes(data))
                    check(key, bytes(data), label if label >= 0 else None)
            outcome.refused |= ld.stats["skipped"] > 0
            ld.close()
        except RecpackError:
            outcome.refused = True
        try:
            with recpack.open(ds, on_error="skip") as d:
                n = 0
                for rec in d:
                    check(rec.key, rec.data, rec.label)
                    n += 1
                outcome.refused |= d.stats["skipped"] > 0
                if n + d.stats["skipped"] != len(d):
                    outcome.failures.append(f"open: delivered {n} + skipped {d.stats['skipped']} != {len(d)}")
        except RecpackError:
            outcome.refused = True


def trial(attack: str, base: Path, work: Path, rng: random.Random) -> Outcome:
    out = Outcome(attack)
    backend = "lmdb" if attack == "lmdb-swap" else "shards"
    ds = work / "ds"
    shutil.copytree(base / backend, ds)
    truth = _truth(ds)
    loader = None
    if attack == "swap":
        _swap(ds, rng)
    elif attack == "lmdb-swap":
        _lmdb_swap(ds, rng)
    elif attack == "duplicate":
        _duplicate(ds, rng)
    elif attack == "foreign":
        s = rng.randrange(3)
        shutil.copy(base / "other" / f"shard-{s:05d}.rpk", ds / f"shard-{s:05d}.rpk")
    elif attack == "repack":
        loader = Loader(ds, batch_size=8, decode=False, transform=None, device="cpu", threads=1,
                        on_error="skip", order="sequential")
        next(iter(loader))
        shutil.rmtree(ds)
        _pack(base / "src", ds, seed=rng.randrange(1, 1000))
        loader.set_epoch(1)
    _read(ds, truth, out, loader)
    out.verify_found = attack == "repack" or not verify(ds).ok
    if out.wrong:
        out.failures.append(f"{out.wrong} wrong records delivered")
    if not out.refused and attack != "repack":
        out.failures.append("no reader noticed")
    if not out.verify_found:
        out.failures.append("verify said OK")
    shutil.rmtree(work / "ds", ignore_errors=True)
    return out


def campaign(trials: int, seed: int = 0) -> dict[str, list[Outcome]]:
    """``trials`` trials of every attack; returns the outcomes by attack."""
    rng = random.Random(seed)
    results: dict[str, list[Outcome]] = {a: [] for a in ATTACKS}
    with tempfile.TemporaryDirectory(prefix="recpack-identity-") as tmp:
        base = Path(tmp)
        make_image_folder(base / "src", 24, classes=3, size=(48, 32), seed=seed)
        _pack(base / "src", base / "shards", 0)
        _pack(base / "src", base / "lmdb", 0, backend="lmdb")
        _pack(base / "src", base / "other", 1)
        for k in range(trials):
            for attack in ATTACKS:
                work = base / f"t{k}-{attack}"
                work.mkdir()
                results[attack].append(trial(attack, base, work, rng))
                shutil.rmtree(work, ignore_errors=True)
    return results


def table(results: dict[str, list[Outcome]], seconds: float) -> str:
    rows = ["| attack | trials | records checked | wrong records delivered | refused or counted | verify found it |",
            "| --- | --- | --- | --- | --- | --- |"]
    for attack, outs in results.items():
        rows.append(f"| {attack} | {len(outs)} | {sum(o.checked for o in outs):,} | {sum(o.wrong for o in outs)} | "
                    f"{sum(o.refused for o in outs)} | "
                    + ("n/a (the files are valid: the running Loader refuses them)" if attack == "repack"
                       else str(sum(o.verify_found for o in outs))) + " |")
    total = sum(len(o) for o in results.values())
    rows.append(f"\n{total} trials in {seconds:.0f} s.")
    return "\n".join(rows)
