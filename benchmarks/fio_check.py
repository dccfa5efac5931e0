"""Cross-check ``recpack bench device`` against fio on the same storage: IOPS and MB/s must agree within 15%.

For each target (the native disk under --dir; as root also an emulated hdd and sata-ssd made with
recpack.bench.emulated.run_emulated), on one test file, alternating test by test, median of --repeats:

1. recpack's tests (``run_test``, the core of ``bench_device``): rand_4k_qd1, rand_4k_threads, seq_1m;
2. fio jobs making the same reads: psync, buffered, ``invalidate=1``, fio's default fadvise hints (RANDOM for
   random jobs, SEQUENTIAL for the sequential one): random 4 KiB QD1; random 4 KiB with N jobs (processes,
   fio's default, like recpack's reader processes), each on its own slice of the file (``offset_increment``);
   sequential 1 MiB reads.

The page cache is dropped before every run of either. Both stop a test at ``--duration`` seconds; fio also at
the end of its file (recpack then drops the file's pages and starts a new pass), so the file must be large
enough for the rates to be cold ones.

    python benchmarks/fio_check.py                  # native disk (+ emulated ones as root), prints the table
    python benchmarks/fio_check.py --write          # and writes "Device measurement vs fio" in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, today, versions, write_section  # noqa: E402

from recpack.bench.cache import evict  # noqa: E402
from recpack.bench.device import bench_device  # noqa: E402
from recpack.bench.readers import make_test_file, plan_file_size, run_test, tests_for  # noqa: E402
from recpack.bench.emulate import check_environment  # noqa: E402

TOLERANCE = 0.15
MiB = 1 << 20
TESTS = ["rand_4k_qd1", "rand_4k_threads", "seq_1m"]


def fio_jobs(path: str, size: int, threads: int, duration: float) -> dict[str, list[str]]:
    """fio command lines equivalent to recpack's tests, by recpack test name."""
    common = ["fio", "--output-format=json", f"--filename={path}", "--ioengine=psync", "--direct=0",
              "--invalidate=1", "--fadvise_hint=1", f"--runtime={duration}", "--group_reporting=1",
              "--randrepeat=0"]
    per = size // threads // 4096 * 4096
    return {
        "rand_4k_qd1": [*common, "--name=rand_4k_qd1", "--rw=randread", "--bs=4k", f"--size={size}"],
        "rand_4k_threads": [*common, "--name=rand_4k_threads", "--rw=randread", "--bs=4k", f"--numjobs={threads}",
                            f"--size={per}", f"--offset_increment={per}"],
        "seq_1m": [*common, "--name=seq_1m", "--rw=read", "--bs=1M", f"--size={size}"],
    }


def run_fio(argv: list[str]) -> dict[str, float]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"fio failed: {done.stderr.strip()}\n{' '.join(argv)}")
    read = json.loads(done.stdout[done.stdout.index("{"):])["jobs"][0]["read"]
    return {"iops": float(read["iops"]), "mb_s": float(read["bw_bytes"]) / 1e6,
            "p50_us": float(read["clat_ns"]["percentile"]["50.000000"]) / 1e3}


def measure_here(folder: str, size: int, threads: int, duration: float, repeats: int) -> dict[str, Any]:
    """recpack's tests (``run_test``, the core of ``bench_device``) and fio's jobs on one test file in
    ``folder``, alternating test by test, ``repeats`` times; medians. The page cache is dropped before every
    run of either. Also a short ``bench_device`` run for the identification and the class."""
    fsize = plan_file_size(size, shutil.disk_usage(folder).free)
    path = make_test_file(Path(folder), fsize, seed=1, progress=False)
    specs = {s.name: s for s in tests_for(threads, 110 << 10)}
    runs: dict[str, dict[str, list[dict[str, float]]]] = {n: {"recpack": [], "fio": []} for n in TESTS}
    try:
        jobs = fio_jobs(str(path), fsize, threads, duration)
        for rep in range(repeats):
            for name in TESTS:
                # who goes first alternates, so that a drift in the shared machine's load favours neither
                for side in (("recpack", "fio") if rep % 2 == 0 else ("fio", "recpack")):
                    how = evict([path])
                    runs[name][side].append(run_test(path, specs[name], duration=duration) if side == "recpack"
                                            else run_fio(jobs[name]))
    finally:
        path.unlink(missing_ok=True)
    med = {side: {n: {k: statistics.median(r[k] for r in runs[n][side]) for k in ("iops", "mb_s", "p50_us")}
                  for n in TESTS} for side in ("recpack", "fio")}
    info = bench_device(folder, size=min(fsize, 512 * MiB), duration=3.0, threads=threads, progress=False,
                        tests=["rand_4k_qd1", "rand_4k_threads"])
    return {**med, "cache": how, "class": info["class_label"], "chain": info["storage"]["chain"],
            "file_bytes": fsize, "runs": runs}


def rows(target: str, res: dict[str, Any]) -> list[tuple[str, str, str, float, float, float, float, str]]:
    """(target, test, metric, recpack, fio, ratio, p50 ratio, PASS/FAIL) rows."""
    out = []
    for name in TESTS:
        metric = "mb_s" if name == "seq_1m" else "iops"
        ours, theirs = res["recpack"][name], res["fio"][name]
        ratio = ours[metric] / theirs[metric] if theirs[metric] else float("nan")
        p50 = ours["p50_us"] / theirs["p50_us"] if theirs["p50_us"] else float("nan")
        ok = abs(ratio - 1) <= TOLERANCE
        out.append((target, name, "MB/s" if metric == "mb_s" else "IOPS", ours[metric], theirs[metric], ratio, p50,
                    "PASS" if ok else "FAIL"))
    return out


def table(all_rows: list[tuple[str, str, str, float, float, float, float, str]]) -> str:
    lines = ["| device | test | metric | recpack | fio | recpack / fio | p50 recpack / fio | within 15% |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for target, name, metric, ours, theirs, ratio, p50, verdict in all_rows:
        lines.append(f"| {target} | {name} | {metric} | {ours:,.0f} | {theirs:,.0f} | {ratio:.2f} | {p50:.2f} | "
                     f"{verdict} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=None, help="folder on the native disk (default: /var/tmp or the temp dir)")
    ap.add_argument("--size", type=int, default=1024, help="test file MiB (native)")
    ap.add_argument("--emulated-size", type=int, default=1536, help="test file MiB (emulated devices)")
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--duration", type=float, default=2.0,
                    help="seconds per test; keep duration x rate below the file size, since fio stops at its end")
    ap.add_argument("--repeats", type=int, default=5, help="alternating runs of each test; medians")
    ap.add_argument("--no-emulated", action="store_true", help="native disk only")
    ap.add_argument("--inner", default=None, help=argparse.SUPPRESS)  # run inside an emulated device
    ap.add_argument("--write", action="store_true", help="write the section of docs/benchmarks.md")
    args = ap.parse_args()
    if shutil.which("fio") is None:
        raise SystemExit("fio not found; install it (Debian: apt-get install fio)")
    if args.inner is not None:
        print(json.dumps(measure_here(args.inner, args.emulated_size * MiB, args.threads, args.duration,
                                     args.repeats)))
        return

    folder = args.dir or ("/var/tmp" if os.path.isdir("/var/tmp") else tempfile.gettempdir())
    results: dict[str, dict[str, Any]] = {}
    print(f"native disk under {folder} ...", file=sys.stderr)
    results["native"] = measure_here(folder, args.size * MiB, args.threads, args.duration, args.repeats)
    ok, why = check_environment()
    if not args.no_emulated:
        if ok:
            from recpack.bench.emulated import run_emulated

            inner = [sys.executable, str(Path(__file__).resolve()), "--threads", str(args.threads),
                     "--duration", str(args.duration), "--emulated-size", str(args.emulated_size),
                     "--repeats", str(args.repeats)]
            for profile in ("hdd", "sata-ssd"):
                print(f"emulated {profile} ...", file=sys.stderr)
                results[profile] = run_emulated(profile, [], lambda paths: [*inner, "--inner", str(paths[0])],
                                                size=2 * args.emulated_size * MiB + 256 * MiB, progress=False)
        else:
            print(f"skipping the emulated devices: {why}", file=sys.stderr)
    all_rows = [r for target, res in results.items() for r in rows(target, res)]
    text = table(all_rows)
    print(text)
    if args.write:
        cache = {t: r["cache"] for t, r in results.items()}
        fio_version = subprocess.run(["fio", "--version"], capture_output=True, text=True).stdout.strip()
        body = (f"{today()}, {machine()}; {versions('numpy')}; {fio_version}.\n\n"
                "`recpack bench device`'s tests (`recpack.bench.readers.run_test`) against fio jobs making the same "
                "reads (`benchmarks/fio_check.py`): psync, buffered, readahead off for random reads "
                f"(POSIX_FADV_RANDOM), {args.threads} reader processes / fio jobs (processes too) on disjoint "
                f"slices of the file for the concurrent test; one test file per device ({args.size} MiB native, "
                f"{args.emulated_size} MiB emulated), {args.duration:g} s per run, recpack and fio alternating "
                f"test by test (and which goes first), median of {args.repeats}; page cache dropped before every run "
                f"({', '.join(f'{t}: {c}' for t, c in cache.items())}). Native: "
                f"{results['native']['chain']}. IOPS / MB/s must agree within 15%; the p50 ratio is for "
                "information (fio's percentiles are histogram bin edges; its sequential p50 is a readahead-hit "
                "read).\n\n" + text + "\n\n"
                + "Measured classes (`recpack bench device`): "
                + ", ".join(f"{t}: {r['class']}" for t, r in results.items()) + ".\n")
        write_section("Device measurement vs fio", body)
        print("wrote the section 'Device measurement vs fio' of docs/benchmarks.md", file=sys.stderr)
    if any(r[-1] == "FAIL" for r in all_rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
