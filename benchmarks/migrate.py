"""Migrating from MXNet RecordIO: reading a ``.rec`` written by mxnet's own ``MXIndexedRecordIO``, with mxnet and
with recpack, in one run, from a cold page cache; and what converting costs.

    python benchmarks/migrate.py              # reuses benchmarks/loader.py's data (10,000 images) when present
    python benchmarks/migrate.py --write      # also replace the 'Migrating from MXNet RecordIO' section of
                                              # docs/benchmarks.md

Rows (raw image bytes, no decode, one thread unless said; median of ``--repeat`` epochs, each after dropping
the page cache; the reads of one repeat alternate between the readers so drift hits all alike):

* MXNet ``MXRecordIO.read`` + ``recordio.unpack`` in file order (``benchmarks/peers/run_mxnet.py``, mxnet venv);
* ``recpack.Loader(data.rec, shuffle=False, decode=False)``: the .rec read directly, in shard (file) order;
  its one-time table scan when constructed (labels and image sizes live inside the records) is timed apart;
* ``recpack.open(data.rec)`` iterated (a sequential scan, one bytes object per image);
* ``recpack convert`` of the .rec, then ``recpack.Loader`` (shard_shuffle, raw) on the result.

Needs the mxnet venv (``bash tools/setup-peers.sh mxnet``) and root for cold-cache runs (else fadvise).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, drop_caches, machine, today, versions, write_section  # noqa: E402

SECTION = "Migrating from MXNet RecordIO"
MXPY = ROOT / ".peers" / "mxnet" / "bin" / "python"
RUNNER = ROOT / "benchmarks" / "peers" / "run_mxnet.py"


def mxnet_sequential(work: Path) -> tuple[float, int, int, str]:
    out = subprocess.run([str(MXPY), str(RUNNER), "read", "--work", str(work), "--mode", "raw",
                          "--variant", "sequential", "--repeat", "1", "--warmup", "0"],
                         check=True, capture_output=True, text=True, cwd=ROOT)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return float(res["seconds"]), int(res["images"]), int(res["bytes"]), str(res["version"])


def recpack_loader(rec: Path, loader: Any) -> tuple[float, int, int]:
    """One raw epoch of ``loader`` from a cold cache of ``rec``: (seconds, images, bytes)."""
    drop_caches(rec)
    t0 = time.perf_counter()
    n = nbytes = 0
    for data, _ in loader:
        n += len(data)
        nbytes += sum(len(d) for d in data)
    return time.perf_counter() - t0, n, nbytes


def recpack_open(rec: Path) -> tuple[float, int, int]:
    import recpack

    drop_caches(rec)
    t0 = time.perf_counter()
    n = nbytes = 0
    with recpack.open(rec) as ds:
        for r in ds:
            n += 1
            nbytes += len(r.data)
    return time.perf_counter() - t0, n, nbytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/recpack-bench-loader/n10000",
                    help="a benchmarks/loader.py work folder (images/, list.tsv, mxnet/data.rec)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    work = Path(args.workdir)
    rec = work / "mxnet" / "data.rec"
    if not rec.exists():
        n = int(work.name[1:]) if work.name.startswith("n") and work.name[1:].isdigit() else 2000
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from loader import prepare_images  # type: ignore[import-not-found]

        prepare_images(work, n)
        subprocess.run([str(MXPY), str(RUNNER), "pack", "--work", str(work)], check=True, cwd=ROOT)

    import recpack
    from recpack.convert import convert
    from recpack.pack import PackOptions

    rows: dict[str, list[float]] = {"mx": [], "loader": [], "open": []}
    scans: list[float] = []
    counts: dict[str, tuple[int, int]] = {}
    mxver = ""
    for _ in range(args.repeat):
        s, n, b, mxver = mxnet_sequential(work)
        rows["mx"].append(s)
        counts["mx"] = (n, b)
        drop_caches(rec)
        t0 = time.perf_counter()
        loader = recpack.Loader(rec, batch_size=256, shuffle=False, decode=False, transform=None, device="cpu",
                                threads=2)
        scans.append(time.perf_counter() - t0)
        s, n, b = recpack_loader(rec, loader)
        loader.close()
        rows["loader"].append(s)
        counts["loader"] = (n, b)
        s, n, b = recpack_open(rec)
        rows["open"].append(s)
        counts["open"] = (n, b)

    out = work / "converted"
    shutil.rmtree(out, ignore_errors=True)
    drop_caches(rec)
    t0 = time.perf_counter()
    res = convert(rec, out, PackOptions(progress=False))
    convert_s = time.perf_counter() - t0
    conv: list[float] = []
    shards = [out / s.name for s in res.shards]
    for _ in range(args.repeat):
        loader = recpack.Loader(out, batch_size=256, order="shard_shuffle", decode=False, transform=None,
                                device="cpu", threads=2)
        drop_caches(*shards)
        t0 = time.perf_counter()
        n = b = 0
        for data, _ in loader:
            n += len(data)
            b += sum(len(d) for d in data)
        conv.append(time.perf_counter() - t0)
        loader.close()
        counts["conv"] = (n, b)
    shutil.rmtree(out, ignore_errors=True)

    def line(name: str, key: str, secs: list[float], note: str = "") -> str:
        n, b = counts[key]
        med = statistics.median(secs)
        return (f"| {name} | {n / med:,.0f} | {b / 1e6 / med:,.0f} | {' / '.join(f'{s:.2f}' for s in secs)} | "
                f"{note} |")

    mx_med, ld_med = statistics.median(rows["mx"]), statistics.median(rows["loader"])
    n_images, n_bytes = counts["mx"]
    body = "\n".join([
        f"{n_images:,} ImageNet-like JPEGs ({n_bytes / 1e6:,.0f} MB of image bytes) in one `.rec` + `.idx` written by "
        f"{mxver}'s `MXIndexedRecordIO` + `recordio.pack` (benchmarks/peers/run_mxnet.py). Machine: {machine()}. "
        f"Date: {today()}. Versions: {versions('recpack', 'numpy', 'torch')}, {mxver}. Raw image bytes, no "
        f"decode; cold page cache before every timed read; median of {args.repeat}. Script: "
        "`python benchmarks/migrate.py`.",
        "",
        "| reader | images/s | MB/s | seconds per epoch | note |",
        "| --- | ---: | ---: | --- | --- |",
        line("MXNet MXRecordIO.read + unpack, file order (1 thread)", "mx", rows["mx"]),
        line("recpack.Loader(data.rec, shuffle=False, decode=False)", "loader", rows["loader"],
             f"+ {statistics.median(scans):.2f} s table scan when constructed"),
        line("recpack.open(data.rec), iterated", "open", rows["open"], "one bytes copy per image"),
        line("recpack.Loader on the converted dataset (shard_shuffle)", "conv", conv,
             f"`recpack convert` took {convert_s:.1f} s"),
        "",
        f"**.rec read directly by recpack.Loader in shard order / MXNet MXRecordIO sequential read: "
        f"{mx_med / ld_med:.2f}x (bar >= 1x).**",
    ])
    print(body)
    if args.write:
        write_section(SECTION, body)


if __name__ == "__main__":
    main()
