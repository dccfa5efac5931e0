"""Storage devices x read methods: ``recpack bench dataset`` on the native disk, an emulated SATA SSD and an
emulated HDD, on the same ImageNet-like JPEGs; prints a markdown section and with --write replaces the
'Storage devices: raw files vs packed records' section of docs/benchmarks.md and writes docs/devices.png.

    python benchmarks/devices.py            # 10,000 images (~5 min on 2 cores; emulated devices need root)
    python benchmarks/devices.py --quick    # 2,000 images, shorter time limits: a smoke run
    python benchmarks/devices.py --write    # also update docs/benchmarks.md and docs/devices.png

Data: the same images as benchmarks/loader.py (``recpack.synth.make_image_folder``: 500x375, q95, ~108 KB,
100 classes; generated once under ``--workdir`` and shared with that script), packed here once with
``recpack pack`` defaults, and once more with ``--resize 256`` (the im2rec-style resized records the MXNet
"~3,000 images/s from an HDD" figure refers to).

Each device column is one ``python -m recpack bench dataset IMAGES PACKED --json --max-images 0`` run (with
``--emulate sata-ssd`` / ``--emulate hdd`` for the emulated ones): every run from a cold page cache, the
device's sequential bandwidth measured inside the same run. The raw-files run is time-limited
(``--time-limit``, default 30 s): on the HDD it reads a random sample and the whole pass is extrapolated
(labelled). Nothing from the peer comparison is rerun: that section stays as measured by benchmarks/loader.py.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, today, versions, write_section  # noqa: E402
from loader import SECTION as PEERS_SECTION  # noqa: E402
from loader import prepare_images  # noqa: E402

SECTION = "Storage devices: raw files vs packed records"
PLOT = ROOT / "docs" / "devices.png"
DEVICES = ("native", "sata-ssd", "hdd")


def pack_once(src: Path, out: Path, extra: list[str]) -> None:
    """``recpack pack src out *extra`` unless ``out`` is already that pack (re-running it is a no-op)."""
    cmd = [sys.executable, "-m", "recpack", "pack", str(src), str(out), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    print(f"  {done.stdout.strip().splitlines()[-1] if done.stdout.strip() else 'packed'}")


def bench(images: Path, packed: Path, device: str, args: argparse.Namespace, runs: str | None = None) -> dict[str, Any]:
    """One ``recpack bench dataset --json`` run (natively or emulated); its JSON, or exit with its error."""
    cmd = [sys.executable, "-m", "recpack", "bench", "dataset", str(images), str(packed), "--json",
           "--max-images", "0", "--time-limit", str(args.time_limit), "--threads", str(args.threads),
           "--device", args.device]
    if runs:
        cmd += ["--runs", runs]
    if device != "native":
        cmd += ["--emulate", device]
    if not args.progress:
        cmd.append("--no-progress")
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)  # progress bars: our stderr
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit {done.returncode}")
    result: dict[str, Any] = json.loads(done.stdout)
    print(f"  {device}: {time.perf_counter() - t0:.0f} s")
    return result


def _runs(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in result["runs"]}


def _cell(run: dict[str, Any] | None) -> list[str]:
    if run is None:
        return ["-", "-", "-"]
    pct = run.get("pct_of_sequential")
    ips = f"{run['images_per_s']:,.0f}" if run["images"] else "-"
    return [ips, f"{run['mb_per_s']:,.0f}", "-" if pct is None else f"{100 * pct:.0f}%"]


def _title(run: dict[str, Any]) -> str:
    from recpack.bench.dataset_report import run_title

    return run_title({**run, "order": None}) + (f" ({run['order']})" if run.get("order") else "")


def _load_note(results: dict[str, dict[str, Any]]) -> str:
    loads = {d: r["machine"].get("load_1min") for d, r in results.items()}
    if not any(v is not None for v in loads.values()):
        return ""
    return (" The machine is shared: 1-minute load average when each run started: "
            + ", ".join(f"{d} {v:.1f}" for d, v in loads.items() if v is not None)
            + " (2 cores), so compare ratios within a column rather than absolute CPU-bound rates.")


def section(results: dict[str, dict[str, Any]], resized: dict[str, Any] | None, n: int, src_bytes: int,
            shards: int, args: argparse.Namespace) -> str:
    from recpack.bench.dataset_report import STAGES

    names = [d for d in DEVICES if d in results]
    first = results[names[0]]
    head = "| run | " + " | ".join(f"{d} images/s | {d} MB/s | {d} % of seq" for d in names) + " |"
    sep = "| --- | " + " | ".join("---: | ---: | ---:" for _ in names) + " |"
    rows = []
    for run in first["runs"]:
        cells = [c for d in names for c in _cell(next((r for r in results[d]["runs"] if r["name"] == run["name"]),
                                                      None))]
        orders = sorted({str(o) for d in names if (o := _runs(results[d]).get(run["name"], {}).get("order"))})
        title = _title({**run, "order": "/".join(orders) if orders else None})
        rows.append(f"| {title} | " + " | ".join(cells) + " |")
    stage_head = "| stage (share of the Loader's wall time) | " + " | ".join(names) + " |"
    stage_rows = [f"| {s} | " + " | ".join(f"{100 * results[d]['busy'][s]:.0f}%" for d in names) + " |"
                  for s in STAGES]
    stage_rows.append("| **bottleneck** | " + " | ".join(f"**{results[d]['bottleneck']['label']}**" for d in names)
                      + " |")
    advice = [f"- {d}: {results[d]['bottleneck']['advice']}." for d in names]
    emu = {d: results[d]["emulation"] for d in names if results[d].get("emulation")}
    caches = sorted({r["cache"] for d in names for r in results[d]["runs"] if r["cache"] != "warm (in memory)"})
    lines = [
        f"{n:,} ImageNet-like JPEGs (500x375, q95, mean {src_bytes / n / 1e3:.0f} KB, from bundled photos), packed "
        f"with `recpack pack` defaults ({shards} shards of <= 256 MiB). Machine: "
        f"{machine()}. Date: {today()}. Versions: {versions('recpack', 'torch', 'numpy', 'simplejpeg')}. "
        f"Each device column is one `recpack bench dataset IMAGES PACKED --json --max-images 0 --time-limit "
        f"{args.time_limit:g} --threads {args.threads} --device {args.device}` run (plus `--emulate sata-ssd` / "
        f"`--emulate hdd`); every row starts from a cold page cache ({', '.join(caches)}), and each device's "
        "sequential bandwidth is measured inside the same run (8 MiB reads of the shard files), so \"% of seq\" "
        "is computed. Emulated devices: " + "; ".join(
            f"{d} = {e['read_iops_limit']:,} read IOPS, {e['read_mb_s_limit']:g} MB/s ({e['method']}, loop device "
            f"direct-io {'on' if e['direct_io'] else 'off'})" for d, e in emu.items())
        + f". No GPU on this machine: the Loader delivers to `{args.device}`. Script: `python benchmarks/devices.py`."
        + _load_note(results),
        "",
        head,
        sep,
        *rows,
        "",
        "Notes per device (sample sizes, the order `auto` chose and why):",
        "",
    ]
    for d in names:
        by = _runs(results[d])
        notes = [f"files: {by['files']['note']}" if "files" in by else "",
                 f"shuffled records: {by['records_shuffled']['order']}"
                 + (f", run {by['records_shuffled']['run']} records" if by["records_shuffled"].get("run") else "")
                 + f", {by['records_shuffled']['io_threads']} concurrent reads"
                 + f", {by['records_shuffled'].get('io', 'buffered')} I/O" if "records_shuffled" in by else "",
                 f"decode: {by['decode']['note']}" if "decode" in by else ""]
        lines.append(f"- {d}: " + "; ".join(x for x in notes if x) + ".")
    lines += ["", stage_head, "| --- | " + " | ".join("---:" for _ in names) + " |", *stage_rows, "", *advice, ""]
    lines += [f"Stages: {first['transform_split']}; read is the reader thread waiting for its segment reads; copy is "
              "the batch leaving its slot (on CUDA: issuing the copy and, from CUDA events, the copy itself); wait is "
              "the consuming loop waiting (high here because the benchmark loop does no work of its own)."]
    if "hdd" in results:
        by = _runs(results["hdd"])
        seq = by["sequential"]
        files, shuf, rseq = by.get("files"), by.get("records_shuffled"), by.get("records_sequential")
        if files and shuf and rseq:
            lines += ["", f"**Emulated HDD: raw files {files['images_per_s']:,.0f} images/s "
                      f"({100 * files['pct_of_sequential']:.0f}% of sequential); packed records shuffled "
                      f"({shuf['order']}) {shuf['images_per_s']:,.0f} images/s = "
                      f"{100 * shuf['pct_of_sequential']:.0f}% of the device's sequential {seq['mb_per_s']:.0f} MB/s "
                      f"(bar: within 5%), {shuf['images_per_s'] / files['images_per_s']:.1f}x the raw files; shard "
                      f"order {100 * rseq['pct_of_sequential']:.0f}%.**"]
        if resized is not None:
            rby = _runs(resized)
            rs = rby["records_shuffled"]
            rbytes = rs["bytes"] / max(1, rs["images"])
            lines += ["", f"Why not MXNet's ~3,000 images/s from an HDD: a disk delivers bytes, so images/s = "
                      f"sequential MB/s / record size. Our {src_bytes / n / 1e3:.0f} KB records at "
                      f"{seq['mb_per_s']:.0f} MB/s cap at ~{seq['mb_per_s'] * 1e6 / (src_bytes / n):,.0f} images/s. "
                      f"The same images packed with `recpack pack --resize 256` (im2rec-style; mean "
                      f"{rbytes / 1e3:.0f} KB) reached {rs['images_per_s']:,.0f} images/s shuffled ({rs['order']}) "
                      f"on the same emulated HDD, {100 * rs['pct_of_sequential']:.0f}% of that run's sequential "
                      f"{rby['sequential']['mb_per_s']:.0f} MB/s. 3,000 images/s at {seq['mb_per_s']:.0f} MB/s needs "
                      f"records of at most {seq['mb_per_s'] * 1e3 / 3000:.0f} KB: the figure describes resized "
                      "records, not a faster record format."]
    lines += ["", f"How these compare with other loaders (FFCV, WebDataset, MXNet RecordIO, LMDB, files + DataLoader) "
              f"on the same images and machine: see [{PEERS_SECTION}](#{PEERS_SECTION.lower().replace(' ', '-')}) "
              "above (measured by benchmarks/loader.py, not rerun here).",
              "", "![images/s per run and Loader stage breakdown per device](devices.png)"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=None, help="default 10,000 (2,000 with --quick)")
    ap.add_argument("--quick", action="store_true", help="2,000 images, 10 s time limits")
    ap.add_argument("--time-limit", type=float, default=None, help="seconds for the raw-files run (default 30)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="the Loader's device (default cpu; cuda where there is one)")
    ap.add_argument("--devices", nargs="+", default=list(DEVICES), choices=DEVICES)
    ap.add_argument("--no-resized", action="store_true", help="skip the --resize 256 pack on the HDD")
    ap.add_argument("--workdir", default="/tmp/recpack-bench-loader", help="shared with benchmarks/loader.py")
    ap.add_argument("--no-progress", dest="progress", action="store_false")
    ap.add_argument("--json", type=Path, default=None, help="also write every result here")
    ap.add_argument("--from-json", type=Path, default=None, help="render a --json file again instead of measuring")
    ap.add_argument("--write", action="store_true", help=f"replace the '{SECTION}' section and docs/devices.png")
    args = ap.parse_args()
    n = args.images or (2000 if args.quick else 10000)
    args.time_limit = args.time_limit or (10.0 if args.quick else 30.0)
    work = Path(args.workdir) / f"n{n}"
    t_start = time.perf_counter()
    print(f"# {machine()}")
    prepare_images(work, n)
    images = work / "images"
    src_bytes = sum(p.stat().st_size for p in images.rglob("*.jpg"))
    packed, resized_ds = work / "bench-packed", work / "bench-packed-resize256"
    pack_once(images, packed, ["--no-progress"])
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        results, resized = saved["results"], saved["resized_hdd"]
    else:
        results = {}
        for device in args.devices:
            results[device] = bench(images, packed, device, args)
        resized = None
        if "hdd" in args.devices and not args.no_resized:
            pack_once(images, resized_ds, ["--no-progress", "--resize", "256"])
            resized = bench(images, resized_ds, "hdd", args, runs="sequential,records_shuffled")
        if args.json:
            args.json.write_text(json.dumps({"results": results, "resized_hdd": resized}, indent=1))
    from recpack.index import read_manifest

    shards = len(read_manifest(packed).shards)
    body = section(results, resized, n, src_bytes, shards, args)
    print()
    print(body)
    print(f"\n(total {time.perf_counter() - t_start:.0f} s)")
    if args.write:
        from recpack.bench.dataset_report import plot

        names = [d for d in DEVICES if d in results]
        plot([results[d] for d in names], PLOT, labels=names,
             title=f"recpack bench dataset: {n:,} ImageNet-like JPEGs, 2 cores, cold cache ({today()})")
        write_section(SECTION, body)
        print(f"wrote docs/benchmarks.md and {PLOT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
