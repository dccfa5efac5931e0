"""recpack against an earlier recpack, in the same run: did a change cost throughput?

Each tree packs the same generated images with its own code (formats may differ between versions), then the
two Loaders take turns, ``--rounds`` times: decoded train-224 (threads 2) and raw records, both in random
order from a warm page cache (what changed is the CPU work per record, not the disk). Each run reports the
median of several timed epochs after a warm-up epoch; the table gives every round and the medians. Also the
per-record cost of the checks a raw record goes through (checksums, and from format v2 its identity),
in memory, best of 7.

    git worktree add /tmp/recpack-old <commit>      # the tree to compare with (build its C extension, or
                                                    # copy recpack/_jpegregion*.so into it)
    python benchmarks/versions.py --old /tmp/recpack-old
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_PACK = """
import sys
from recpack import pack, PackOptions
pack(sys.argv[1], sys.argv[2], PackOptions(workers=0, progress=False))
"""

_RUN = """
import json, statistics, sys, time
from recpack import Loader
ds, mode = sys.argv[1], sys.argv[2]
kw = dict(batch_size=256, device="cpu", threads=2, seed=0, order="random")
ld = (Loader(ds, transform="train", size=224, **kw) if mode == "decoded"
      else Loader(ds, transform=None, decode=False, **kw))
for _ in ld:
    pass
rates = []
for e in range(1, 4 if mode == "decoded" else 8):
    ld.set_epoch(e)
    n, t = 0, time.perf_counter()
    for _, y in ld:
        n += len(y)
    rates.append(n / (time.perf_counter() - t))
print(json.dumps(statistics.median(rates)))
"""

_CHECK = """
import json, os, sys, time
import recpack
ds = sys.argv[1]
try:
    from recpack.backends import open_source
    src = open_source(ds)
    t, files, check = src.table, src.files, src.payload
    names = None
except ImportError:  # before the record-source protocol
    from recpack.loader import Loader
    from recpack.storage import record_payload
    ld = Loader(ds, batch_size=64, decode=False, transform=None, device="cpu", order="sequential")
    t = ld.table
    names = [s.name for s in ld.manifest.shards]
    files = [os.path.join(ds, n) for n in names]
    check = lambda i, v: record_payload(v, names[int(t.shard[i])], int(t.offset[i]))
data = [open(f, "rb").read() for f in files]
views = [memoryview(data[int(t.shard[i])])[int(t.offset[i]):int(t.offset[i]) + int(t.length[i])] for i in range(t.n)]
best = 1e9
for _ in range(7):
    t0 = time.perf_counter()
    for i, v in enumerate(views):
        check(i, v)
    best = min(best, time.perf_counter() - t0)
print(json.dumps(best / len(views) * 1e6))
"""


def _py(tree: Path, code: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                         cwd=tempfile.gettempdir(), check=True)
    return out.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", type=Path, required=True, help="the earlier recpack tree")
    ap.add_argument("--new", type=Path, default=ROOT, help="the tree to test (default: this one)")
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(args.new))
    from recpack.synth import make_image_folder

    work = args.workdir or Path(tempfile.mkdtemp(prefix="recpack-versions-"))
    if not (work / "src").exists():
        make_image_folder(work / "src", args.images, classes=100, seed=1)
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    for name, tree in trees.items():
        if not (work / name).exists():
            _py(tree, _PACK, str(work / "src"), str(work / name))
    runs: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for mode in ("decoded", "raw"):
            for name, tree in trees.items():
                runs.setdefault((name, mode), []).append(float(_py(tree, _RUN, str(work / name), mode)))
    checks = {name: float(_py(tree, _CHECK, str(work / name))) for name, tree in trees.items()}
    print(f"{args.images} ImageNet-like JPEGs, warm page cache, 2 threads, random order, {args.rounds} rounds")
    print("| run | old | new | new / old |\n| --- | --- | --- | --- |")
    for mode, label in (("decoded", "decoded train-224 (images/s"), ("raw", "raw records (records/s")):
        old, new = statistics.median(runs[("old", mode)]), statistics.median(runs[("new", mode)])
        print(f"| {label}; rounds " + ", ".join(f"{v:,.0f}" for v in runs[("old", mode)]) + " / "
              + ", ".join(f"{v:,.0f}" for v in runs[("new", mode)]) + f") | {old:,.0f} | {new:,.0f} | "
              f"{new / old:.3f} |")
    print(f"| record checks, in memory (µs per record) | {checks['old']:.2f} | {checks['new']:.2f} | "
          f"{checks['new'] / checks['old']:.3f} |")
    print(json.dumps({"runs": {f"{k[0]}-{k[1]}": v for k, v in runs.items()}, "checks_us": checks}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
