"""Coverage-guided fuzzing of recpack's parsers with atheris (libFuzzer for Python): the long, on-demand
complement of tests/test_fuzz.py (hypothesis, in CI). Only recpack's own errors (RecpackError) may come out.

    pip install atheris
    python benchmarks/fuzz_atheris.py                      # every target, 60 s each, a table at the end
    python benchmarks/fuzz_atheris.py --seconds 600 record shard
    python benchmarks/fuzz_atheris.py --target shard -- -runs=100000   # one target, libFuzzer flags after --

Targets: record (split_record + decode_meta), header (unpack_header), shard (a whole shard file through
ShardReader, iter_sequential, scan_records and check_shard), manifest (index.json through read_manifest and
recpack.open), mxrec (a .rec through unframe/parse_payload, scan and RecFile), idx (an MXNet .idx). Each
target runs in its own process (atheris.Fuzz runs once per process), seeded with real inputs (a packed shard,
its manifest, the mxnet-written fixtures). A crash prints the input that caused it, is saved by libFuzzer as
crash-* in the working folder, and makes the run exit non-zero.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("record", "header", "shard", "manifest", "mxrec", "idx")


def _seeds(corpus: Path, target: str) -> None:
    """Write real inputs for ``target`` into ``corpus`` (libFuzzer mutates from them)."""
    from recpack.format import encode_record
    from recpack.pack import PackOptions, pack
    from recpack.synth import make_image_folder

    corpus.mkdir(parents=True, exist_ok=True)
    mx = ROOT / "tests" / "data" / "mxnet"
    if target in ("record",):
        (corpus / "record").write_bytes(encode_record({"key": "a/b.jpg", "label": 3}, b"\xff\xd8" + bytes(64)))
        return
    if target in ("mxrec", "idx"):
        for p in mx.glob("*.rec" if target == "mxrec" else "*.idx"):
            (corpus / p.name).write_bytes(p.read_bytes()[:4096])
        return
    with tempfile.TemporaryDirectory() as d:
        make_image_folder(Path(d) / "src", 4, classes=2, size=(24, 16), seed=1)
        pack(Path(d) / "src", Path(d) / "ds", PackOptions(num_shards=1, workers=0, progress=False, fsync=False))
        shard = (Path(d) / "ds" / "shard-00000.rpk").read_bytes()
        manifest = (Path(d) / "ds" / "index.json").read_bytes()
    if target == "header":
        (corpus / "header").write_bytes(shard[:4096])
    elif target == "shard":
        (corpus / "shard").write_bytes(shard)
    else:
        (corpus / "manifest").write_bytes(manifest)


def _harness(target: str, work: str):  # type: ignore[no-untyped-def]
    """The function libFuzzer calls with each input; imports are instrumented by the caller."""
    import recpack
    from recpack.errors import RecpackError
    from recpack.format import decode_meta, split_record, unpack_header
    from recpack.index import read_manifest
    from recpack.backends.mxrec import RecFile
    from recpack.backends.recordio import parse_payload, read_idx, scan, unframe
    from recpack.backends.shards import check_shard, scan_records
    from recpack.shard import ShardReader

    def guarded(fn, *args):  # type: ignore[no-untyped-def]
        try:
            fn(*args)
        except RecpackError:
            pass

    def shard(path: str) -> None:
        def read_all() -> None:
            with ShardReader(path) as r:
                for j in range(len(r)):
                    guarded(r.read, j)
                for _ in r.iter_sequential():
                    pass

        guarded(read_all)
        guarded(lambda: [None for _ in scan_records(path)])
        check_shard(path)

    def one(data: bytes) -> None:
        if target == "record":
            guarded(split_record, memoryview(data), "fuzz", 0, len(data))
            guarded(decode_meta, data, "fuzz", 0)
        elif target == "header":
            guarded(unpack_header, data, "fuzz", 1 << 30)
        elif target == "shard":
            p = os.path.join(work, "shard-00000.rpk")
            Path(p).write_bytes(data)
            shard(p)
        elif target == "manifest":
            Path(work, "index.json").write_bytes(data)

            def open_all() -> None:
                read_manifest(work)
                with recpack.open(work) as ds:
                    for _ in ds:
                        pass

            guarded(open_all)
        elif target == "mxrec":
            p = os.path.join(work, "x.rec")
            Path(p).write_bytes(data)

            def frames() -> None:
                payload, _ = unframe(data, p, 0)
                parse_payload(payload, p, 0)

            def rec_all() -> None:
                f = RecFile(p)
                for i in range(len(f)):
                    guarded(f.read, i)

            guarded(frames)
            guarded(lambda: [None for _ in scan(p)])
            guarded(rec_all)
        else:
            p = os.path.join(work, "x.idx")
            Path(p).write_bytes(data)
            guarded(read_idx, p, None)
            guarded(read_idx, p, 1 << 20)

    return one


def run_one(target: str, libfuzzer_args: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=["recpack"]):
        import recpack.format  # noqa: F401
        import recpack.index  # noqa: F401
        import recpack.backends.mxrec  # noqa: F401
        import recpack.shard  # noqa: F401
    work = tempfile.mkdtemp(prefix=f"recpack-atheris-{target}-")
    if target == "manifest":  # a real shard next to the fuzzed manifest
        _seeds(Path(work) / "seed", "shard")
        os.replace(Path(work) / "seed" / "shard", Path(work) / "shard-00000.rpk")
    corpus = Path(work) / "corpus"
    _seeds(corpus, target)
    atheris.Setup([sys.argv[0], *libfuzzer_args, str(corpus)], _harness(target, work))
    atheris.Fuzz()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="*", default=list(TARGETS), help=f"any of {', '.join(TARGETS)}")
    ap.add_argument("--seconds", type=int, default=60, help="fuzzing time per target")
    ap.add_argument("--target", choices=TARGETS, default=None, help="run one target in this process")
    argv = sys.argv[1:]
    rest = argv[argv.index("--") + 1:] if "--" in argv else []  # libFuzzer's own flags
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if args.target:
        run_one(args.target, rest)
        return
    try:
        import atheris  # noqa: F401
    except ImportError:
        sys.exit("atheris is not installed: pip install atheris")
    rows = []
    for target in args.targets:
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, "--target", target, "--", f"-max_total_time={args.seconds}",
                               "-rss_limit_mb=4096", "-print_final_stats=1"],
                              capture_output=True, text=True, cwd=tempfile.gettempdir())
        runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", done.stderr)
        cov = re.findall(r"cov: (\d+)", done.stderr)
        outcome = "no crash" if done.returncode == 0 else f"CRASH (exit {done.returncode})"
        rows.append((target, int(runs[-1]) if runs else 0, int(cov[-1]) if cov else 0, outcome))
        print(f"{target}: {rows[-1][1]:,} inputs, coverage {rows[-1][2]}, {outcome} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
    print("\n| target | inputs | coverage (edges) | outcome |\n| --- | ---: | ---: | --- |")
    for target, runs_n, cov_n, outcome in rows:
        print(f"| {target} | {runs_n:,} | {cov_n} | {outcome} |")
    sys.exit(0 if all(r[3] == "no crash" for r in rows) else 1)


if __name__ == "__main__":
    main()
