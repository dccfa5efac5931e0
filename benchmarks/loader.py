"""The "Loader bar": recpack.Loader against the usual ways of feeding a training loop, in one run, from a cold
page cache; prints a markdown table and recpack's ratios, and with --write replaces the 'Loader against peers'
section of docs/benchmarks.md.

    bash tools/setup-peers.sh            # once: .peers/{torch,ffcv,mxnet} virtual environments (root for apt)
    python benchmarks/loader.py          # 10,000 images, median of 3 epochs per row (~10-15 min on 2 cores)
    python benchmarks/loader.py --quick  # 2,000 images, 1 epoch per row: a smoke run
    python benchmarks/loader.py --write  # also update docs/benchmarks.md

Data: ``--images`` ImageNet-like JPEGs (500x375, q95, ~108 KB, ``recpack.synth.make_image_folder``), 100
classes, generated once under ``--workdir`` with a shared shuffled list (``list.tsv``) that every packer
follows; each peer's format is packed once and kept there (delete the folder to redo).

Peers, each a standalone runner in ``benchmarks/peers/`` started as a subprocess with its own interpreter
(``.peers/<env>/bin/python``; see benchmarks/peers/README.md for what each one does):
files + torch DataLoader, WebDataset, FFCV, LMDB + DataLoader, MXNet RecordIO, and recpack.Loader itself.

Grid (batch 256, ``--workers`` worker processes or threads for every loader):
(a) decoded: RandomResizedCrop(224, scale 0.08-1, ratio 3/4-4/3) + horizontal flip, uint8 batches, images/s;
(b) raw: record bytes only, shuffled, MB/s, on the native disk;
(c) emulated HDD (``recpack.bench.emulate``, if present and usable): recpack raw shard_shuffle MB/s against the
    device's sequential MB/s and against files + DataLoader.
Every timed epoch starts from a cold page cache (``drop_caches`` before each runner and again inside it before
each epoch, after the runner's untimed warm-up). This VM's disk swings by 2x from minute to minute, so the raw
rows run ``--rounds`` times (default 3), every loader taking its turn each round, and report their median run
with every run's number beside it. A runner that cannot run is skipped with its exact error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, drop_caches, machine, today, versions, write_section  # noqa: E402

PEERS_DIR = Path(__file__).resolve().parent / "peers"
VENVS = ROOT / ".peers"
SECTION = "Loader against peers"
#: How the report names recpack's two io modes (the benchmark set fits in this machine's page cache).
DIRECT = ('io="direct" (what io="auto" picks for shards larger than half the memory, the case a cold-cache epoch '
          'stands for)')
BUFFERED = "through the page cache (auto's pick for this 1 GB set on this machine)"


@dataclass
class Peer:
    """One loader to measure: its runner script, its virtual environment and the raw read paths it has."""

    key: str
    script: str
    env: str | None  # .peers/<env>; None: this interpreter (recpack)
    packs: bool = True
    raw: list[tuple[str, bool]] = field(default_factory=lambda: [("", True)])  # (variant, shuffled)
    decoded: list[str] = field(default_factory=lambda: [""])  # variants

    def python(self) -> str:
        if self.env is None:
            return sys.executable
        venv = VENVS / self.env / "bin" / "python"
        if venv.exists():
            return str(venv)
        if self.env == "torch":  # the torch peers also run with an interpreter that has their packages
            return sys.executable
        raise FileNotFoundError(f"{venv} does not exist: run `bash tools/setup-peers.sh {self.env}`")


PEERS = [
    Peer("files", "run_files.py", "torch", packs=False, raw=[("", True), ("plain", True)]),
    Peer("webdataset", "run_webdataset.py", "torch"),
    Peer("ffcv", "run_ffcv.py", "ffcv"),
    Peer("lmdb", "run_lmdb.py", "torch"),
    Peer("mxnet", "run_mxnet.py", "mxnet", raw=[("random", True), ("sequential", False)]),
    # raw twice: io="auto" (buffered here: 1 GB of shards fits this machine's page cache) and io="direct", what
    # auto picks for shards larger than half the memory -- the case a cold-cache epoch stands for
    # decoded four times: the default pack (original JPEG bytes) and `recpack pack --restart-markers`, each with
    # io="auto" and io="direct" (auto's pick for shards larger than half the memory; it also spares the CPU the
    # page cache's work, which the decode threads want on 2 cores)
    Peer("recpack", "run_recpack.py", None, raw=[("", True), ("shard_shuffle,io=direct", True)],
         decoded=["", "auto,io=direct", "auto,restart_markers", "auto,io=direct,restart_markers"]),
]


# -- data ---------------------------------------------------------------------------------------------------------
def prepare_images(work: Path, n: int) -> None:
    """``work/images`` (ImageFolder) and ``work/list.tsv`` (relative path, label) in a shuffled order."""
    from recpack.synth import make_image_folder

    src = work / "images"
    if (work / "list.tsv").exists() and sum(1 for _ in src.rglob("*.jpg")) == n:
        return
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    paths = make_image_folder(src, n, classes=100, size=(500, 375), quality=95, seed=0, progress=True)
    classes = sorted({p.parent.name for p in paths})
    order = np.random.default_rng(0).permutation(n)  # peers get one global shuffle, as recpack applies its own
    with open(work / "list.tsv.tmp", "w") as f:
        for i in order:
            f.write(f"{paths[i].relative_to(src)}\t{classes.index(paths[i].parent.name)}\n")
    os.replace(work / "list.tsv.tmp", work / "list.tsv")
    print(f"generated {n} images in {time.perf_counter() - t0:.0f} s")


def run_runner(peer: Peer, argv: list[str], timeout: float) -> tuple[dict[str, Any] | None, str]:
    """Start ``peer``'s runner; return (its JSON line, "") or (None, the reason it failed)."""
    try:
        cmd = [peer.python(), str(PEERS_DIR / peer.script), *argv]
    except FileNotFoundError as exc:
        return None, str(exc)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s: {' '.join(cmd)}"
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
        return None, f"exit {done.returncode}: " + (" | ".join(lines[-3:]) if lines else "(no stderr)")
    if argv[0] == "pack":
        return {}, ""
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line), ""
    return None, f"no result line; stdout ended: {done.stdout[-300:]!r}"


def pack_all(work: Path, n: int, peers: list[Peer], skipped: dict[str, str], timeout: float) -> dict[str, float]:
    """Pack every peer's format once (kept under ``work/<key>``, marked done by ``work/<key>.packed``)."""
    secs: dict[str, float] = {}
    for peer in peers:
        if not peer.packs or peer.key in skipped:
            continue
        mark = work / f"{peer.key}.packed"
        if mark.exists() and mark.read_text().strip() == str(n):
            continue
        shutil.rmtree(work / peer.key, ignore_errors=True)
        t0 = time.perf_counter()
        res, why = run_runner(peer, ["pack", "--work", str(work)], timeout)
        if res is None:
            skipped[peer.key] = f"pack failed: {why}"
            print(f"  {peer.key}: SKIPPED ({skipped[peer.key]})")
            continue
        secs[peer.key] = time.perf_counter() - t0
        mark.write_text(f"{n}\n")
        print(f"  packed {peer.key} in {secs[peer.key]:.0f} s")
    return secs


# -- emulated HDD ----------------------------------------------------------------------------------------------------
def hdd_part(work: Path, args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    """(c) raw records shuffled on an emulated HDD: recpack vs the device's sequential MB/s and vs files +
    DataLoader. Returns (markdown lines, numbers); skips with the reason when recpack.bench.emulate cannot run."""
    try:
        from recpack.bench import emulate
    except ImportError as exc:
        return [f"(c) emulated HDD: skipped: recpack.bench.emulate is not importable ({exc})."], {}
    ok, reason = emulate.check_environment()
    if not ok:
        return [f"(c) emulated HDD: skipped: {reason}."], {}
    files_peer = next(p for p in PEERS if p.key == "files")
    rp_peer = next(p for p in PEERS if p.key == "recpack")
    ds, src = work / "recpack", work / "images"
    data_bytes = sum(p.stat().st_size for p in ds.iterdir()) + sum(p.stat().st_size for p in src.rglob("*"))
    size = int(data_bytes * 1.3) + (512 << 20)
    common = ["--work", str(work), "--mode", "raw", "--repeat", "1", "--warmup", "0", "--workers", str(args.workers)]
    out: dict[str, Any] = {}
    with emulate.emulated_device("hdd", size=size) as dev:
        seq = emulate.measure(dev)
        out["device"] = seq
        on_dev_ds = dev.copy_in(ds, "recpack")
        on_dev_src = dev.copy_in(src, "images")
        # recpack twice: the default (io="auto": buffered here, since 1 GB of shards fits this machine's page
        # cache) and io="direct", what auto picks on an HDD-like device for shards larger than half the RAM
        # -- the case a cold-cache epoch stands for; both args.rounds times, interleaved; files once (slow)
        jobs = [("recpack", rp_peer, ["--data", str(on_dev_ds)]),
                ("recpack_direct", rp_peer, ["--data", str(on_dev_ds), "--variant", "shard_shuffle,io=direct"])]
        runs: dict[str, list[dict[str, Any]]] = {}
        for name, peer, extra in jobs * args.rounds + [
                ("files", files_peer, ["--data", str(on_dev_src), "--limit", str(args.hdd_files)])]:
            done = dev.run([peer.python(), str(PEERS_DIR / peer.script), "read", *common, *extra],
                           capture_output=True, text=True, timeout=args.timeout)
            line = next((ln for ln in reversed(done.stdout.splitlines()) if ln.startswith("{")), None)
            if done.returncode != 0 or line is None:
                err = " | ".join(done.stderr.strip().splitlines()[-3:])
                return [f"(c) emulated HDD: {peer.key} failed (exit {done.returncode}): {err}"], out
            runs.setdefault(name, []).append(json.loads(line))
    rp, rpd, files = (median_run(runs[name], "mb_per_s") for name in ("recpack", "recpack_direct", "files"))
    out.update(recpack=rp, recpack_direct=rpd, files=files)
    seq_mb = seq["seq_mb_s"]

    def share(r: dict[str, Any]) -> str:
        return " / ".join(f"{v / seq_mb:.0%}" for v in r["rounds"])

    lines = [
        f"(c) Emulated HDD ({emulate.format_measurement(seq)}); raw records, shuffled, cold, one epoch per run; "
        f"recpack's rows: median of {args.rounds} run(s), alternating:",
        "",
        "| reader | images/s | MB/s | vs device sequential | each run |",
        "| --- | ---: | ---: | ---: | --- |",
        f"| {rp['peer']} | {rp['images_per_s']:,.0f} | {rp['mb_per_s']:,.0f} | {rp['mb_per_s'] / seq_mb:.0%} | "
        f"{share(rp)} |",
        f"| {rpd['peer']} | {rpd['images_per_s']:,.0f} | {rpd['mb_per_s']:,.0f} | {rpd['mb_per_s'] / seq_mb:.0%} | "
        f"{share(rpd)} |",
        f"| {files['peer']}, {files['images']} random files | {files['images_per_s']:,.0f} | "
        f"{files['mb_per_s']:,.0f} | {files['mb_per_s'] / seq_mb:.0%} | {share(files)} |",
        "",
        f"**HDD: recpack raw shuffled = {rpd['mb_per_s'] / seq_mb:.0%} of sequential with {DIRECT}, "
        f"{rp['mb_per_s'] / seq_mb:.0%} {BUFFERED} (bar >= 95%); "
        f"{rpd['mb_per_s'] / files['mb_per_s']:.1f}x files + DataLoader (bar >= 15x).**",
    ]
    return lines, out


# -- report ----------------------------------------------------------------------------------------------------------
def median_run(runs: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The run with the median ``metric`` (the lower middle one of an even count), with every run's value
    under ``rounds`` in the order they ran."""
    row = dict(sorted(runs, key=lambda r: r[metric])[(len(runs) - 1) // 2])
    row["rounds"] = [r[metric] for r in runs]
    return row


def fmt_row(r: dict[str, Any]) -> str:
    note = r.get("note", "")
    return (f"| {r['peer']} | {r['images_per_s']:,.0f} | {r['mb_per_s']:,.0f} | "
            f"{' / '.join(f'{s:.2f}' for s in r['all_seconds'])} | {' / '.join(f'{v:,.0f}' for v in r['rounds'])} | "
            f"{r['version']} | {note} |")


def gpu_line() -> str:
    """Where disk-to-GPU numbers come from: every row above delivers to the CPU."""
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    where = ("this machine has one: run it" if cuda else
             "no CUDA device on this machine, so it is not measured here; run it where one is present")
    return ("Disk-to-GPU (copy overlapped on a side stream, and the share of time the consumer waits): every row "
            "above delivers to the CPU; `recpack bench dataset IMAGES PACKED --device cuda` measures it "
            f"({where}).")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=None, help="default 10,000 (2,000 with --quick)")
    ap.add_argument("--repeat", type=int, default=None, help="timed cold epochs per row (default 3; 1 with --quick)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="runs of every raw row, (b) and (c), interleaved round by round; a row reports its median "
                         "run (default 3; 1 with --quick)")
    ap.add_argument("--decoded-rounds", type=int, default=None,
                    help="the same for the decoded rows, (a) (default 3; 1 with --quick)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2,000 images, 1 epoch per row")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers / decode threads for every loader")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workdir", default="/tmp/recpack-bench-loader")
    ap.add_argument("--peers", nargs="+", default=[p.key for p in PEERS], choices=[p.key for p in PEERS])
    ap.add_argument("--no-hdd", action="store_true", help="skip the emulated-HDD part")
    ap.add_argument("--hdd-files", type=int, default=None, help="files read on the emulated HDD (default 600)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per runner before it counts as failed")
    ap.add_argument("--json", type=Path, default=None, help="also write every row here")
    ap.add_argument("--write", action="store_true", help=f"replace the '{SECTION}' section of docs/benchmarks.md")
    args = ap.parse_args()
    n = args.images or (2000 if args.quick else 10000)
    repeat = args.repeat or (1 if args.quick else 3)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.decoded_rounds = args.decoded_rounds or (1 if args.quick else 3)
    args.hdd_files = args.hdd_files or (200 if args.quick else 600)
    work = Path(args.workdir) / f"n{n}"
    peers = [p for p in PEERS if p.key in args.peers]
    t_start = time.perf_counter()

    print(f"# {machine()}")
    prepare_images(work, n)
    src_bytes = sum(p.stat().st_size for p in (work / "images").rglob("*.jpg"))
    skipped: dict[str, str] = {}
    pack_secs = pack_all(work, n, peers, skipped, args.timeout)

    common = ["--work", str(work), "--repeat", str(repeat), "--batch-size", str(args.batch_size),
              "--workers", str(args.workers)]
    jobs = [(peer, mode, variant, shuffled) for peer in peers if peer.key not in skipped
            for mode, variant, shuffled in [("decoded", v, True) for v in peer.decoded] + [("raw", v, s)
                                                                                          for v, s in peer.raw]]
    runs: dict[str, list[dict[str, Any]]] = {}  # label -> its runs, in the order they ran
    for r in range(max(args.rounds, args.decoded_rounds)):
        for peer, mode, variant, shuffled in jobs:
            label = f"{peer.key} {mode}{' ' + variant if variant else ''}"
            if label in skipped or r >= (args.rounds if mode == "raw" else args.decoded_rounds):
                continue
            drop_caches(work)
            t0 = time.perf_counter()
            res, why = run_runner(peer, ["read", *common, "--mode", mode, *(["--variant", variant] if variant else [])],
                                  args.timeout)
            if res is None:
                skipped[label] = why
                print(f"  {label}: SKIPPED ({why})")
                continue
            res["key"], res["shuffled"], res["mode"], res["variant"] = peer.key, shuffled, mode, variant
            if not shuffled:
                res["note"] = "not shuffled: reference only"
            runs.setdefault(label, []).append(res)
            print(f"  [{r + 1}] {label}: {res['images_per_s']:,.0f} images/s, {res['mb_per_s']:,.0f} MB/s "
                  f"({res['all_seconds']} s; runner {time.perf_counter() - t0:.0f} s)")
    decoded = [median_run(v, "images_per_s") for k, v in runs.items() if k not in skipped and v[0]["mode"] == "decoded"]
    raw = [median_run(v, "mb_per_s") for k, v in runs.items() if k not in skipped and v[0]["mode"] == "raw"]

    def ratio(rows: list[dict[str, Any]], metric: str, variant: str = "") -> str:
        """recpack's row of ``variant`` against the fastest shuffled peer."""
        ours = next((r for r in rows if r["key"] == "recpack" and r["variant"] == variant), None)
        theirs = [r for r in rows if r["key"] != "recpack" and r["shuffled"]]
        if ours is None or not theirs:
            return "not measured (recpack or every peer missing)"
        best = max(theirs, key=lambda r: r[metric])
        return f"{ours[metric] / best[metric]:.2f}x (fastest peer: {best['peer']}, {best[metric]:,.0f})"

    def dec_ratio(variant: str) -> str:
        return ratio(decoded, "images_per_s", variant)

    hdd_lines, hdd = (["(c) emulated HDD: skipped (--no-hdd)."], {}) if args.no_hdd else hdd_part(work, args)

    head = ("| loader | images/s | MB/s | seconds per epoch | {} per run | versions | note |\n"
            "| --- | ---: | ---: | --- | --- | --- | --- |")
    ffcv_note = next((f" FFCV stores its own re-encoding ({r['stored_bytes_per_image'] / 1e3:.0f} KB/image, "
                      "its MB/s counts those bytes)." for r in decoded if r["key"] == "ffcv"), "")
    lines = [
        f"{n:,} ImageNet-like JPEGs (500x375, q95, mean {src_bytes / n / 1e3:.0f} KB, from bundled photos), "
        f"100 classes. Machine: {machine()}. Date: {today()}. Versions: "
        f"{versions('recpack', 'torch', 'numpy', 'PIL', 'simplejpeg')}. Batch {args.batch_size}, "
        f"{args.workers} worker processes/threads per loader; cold page cache (drop_caches) before every epoch; "
        f"median of {repeat} epoch(s) per run; each row is its median run of {args.decoded_rounds} (a) or "
        f"{args.rounds} ((b), (c)), the loaders taking turns round by round. "
        f"Script: `python benchmarks/loader.py{' --quick' if args.quick else ''}` "
        "(peers: `bash tools/setup-peers.sh`; runners and what each does: benchmarks/peers/README.md).",
        "",
        "(a) Decoded: RandomResizedCrop-224 (scale 0.08-1, ratio 3/4-4/3) + flip, uint8 batches." + ffcv_note,
        "",
        head.format("images/s"),
        *[fmt_row(r) for r in decoded],
        "",
        f"**(a) recpack / fastest peer, decoded train-224 images/s: {dec_ratio('auto,io=direct,restart_markers')} "
        f"packed with `--restart-markers` and {dec_ratio('auto,io=direct')} with the default pack (original JPEG "
        f"bytes), reading with {DIRECT}; {dec_ratio('auto,restart_markers')} and {dec_ratio('')} {BUFFERED}.**",
        "",
        "(b) Raw records (no decode), shuffled, native disk. MB/s of image bytes handed out (the same bytes for every "
        "loader; recpack's record headers and padding are not counted).",
        "",
        head.format("MB/s"),
        *[fmt_row(r) for r in raw],
        "",
        f"**(b) recpack / fastest peer, raw shuffled MB/s: {ratio(raw, 'mb_per_s', 'shard_shuffle,io=direct')} with "
        f"{DIRECT}; {ratio(raw, 'mb_per_s')} {BUFFERED}.**",
        "",
        *hdd_lines,
        "",
        gpu_line(),
    ]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + "."]
    body = "\n".join(lines)
    print()
    print(body)
    print(f"\n(total {time.perf_counter() - t_start:.0f} s; packing: "
          + ", ".join(f"{k} {v:.0f} s" for k, v in pack_secs.items()) + ")")
    if args.json:
        args.json.write_text(json.dumps({"images": n, "repeat": repeat, "decoded": decoded, "raw": raw,
                                         "hdd": hdd, "skipped": skipped, "machine": machine(), "date": today()},
                                        indent=1, default=str))
    if args.write:
        write_section(SECTION, body)
        print("wrote docs/benchmarks.md")


if __name__ == "__main__":
    main()
