"""``recpack bench dataset IMAGE_DIR [PACKED]``: how fast do these images reach the device, and what limits it?

:func:`measure` packs ``IMAGE_DIR`` into a temporary folder when no ``PACKED`` dataset is given (removed
afterwards, also on errors, Ctrl-C and SIGTERM), times the runs of :mod:`recpack.bench.dataset_runs` on it
(:func:`run_benchmark`) -- natively, or with ``emulate="hdd"|"sata-ssd"`` all over again inside an emulated
device (:func:`recpack.bench.emulated.run_emulated`, root only) -- and :func:`assemble` adds the % of
sequential of each run, the Loader's stage breakdown and the bottleneck (:mod:`recpack.bench.dataset_report`).
Cost: the pack (when needed) plus each run's ``time_limit`` / ``max_images`` bound.
"""

from __future__ import annotations

import contextlib
import json
import math
import datetime as _dt
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
import numpy as np

from .. import __version__
from ..cliutil import exit_on_errors, parse_size
from ..errors import RecpackError
from ..index import read_manifest
from ..interrupts import signals_as_interrupt
from . import dataset_report as report
from .dataset_runs import Options, data_files, decode_only, full_loader, measure_sequential, read_files, read_records
from .emulated import python_argv, run_emulated

__all__ = ["Options", "run_benchmark", "assemble", "packed_dataset", "measure"]


def _machine() -> dict[str, Any]:
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # shared machines: numbers need context
    return {"platform": platform.platform(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_1min": load}


def assemble(runs: list[dict[str, Any]], opts: Options, *, image_dir: str, dataset: str, packed_here: bool,
             records: int) -> dict[str, Any]:
    """The result (the ``--json`` object) from measured runs: % of sequential, stage breakdown, bottleneck."""
    by = {r["name"]: r for r in runs}
    seq = by.get("sequential")
    seq_mb = seq["mb_per_s"] if seq else None
    for r in runs:
        if r["name"] == "sequential":
            r["pct_of_sequential"] = 1.0 if seq_mb else None
        elif r["name"] != "decode":
            r["pct_of_sequential"] = report.pct_of(r["mb_per_s"], seq_mb)
    result: dict[str, Any] = {
        "schema": report.SCHEMA, "recpack": __version__, "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": _machine(), "image_dir": image_dir, "dataset": dataset, "packed_here": packed_here,
        "records": records, "threads": opts.n_threads, "options": asdict(opts),
        "cache": next((r["cache"] for r in runs if r["cache"] != "warm (in memory)"), "warm" if opts.warm else None),
        "device": None, "runs": runs, "stages": None, "busy": None, "transform_fraction": None,
        "transform_split": None, "bottleneck": None, "summary": None,
    }
    loader = by.get("loader")
    if loader is None:
        return result
    result["device"] = loader["device"]
    tf = by["decode"]["transform_fraction"] if "decode" in by else None
    stages = report.stage_seconds(loader["loader_stats"], loader["seconds"], loader["threads"], tf)
    busy = report.busy_fractions(stages)
    ctx = report.Context(order=loader["order"], threads=loader["threads"], cores=os.cpu_count() or 1,
                         device=loader["device"].split(":")[0], pinned=loader["pinned"],
                         seq_fraction=loader["pct_of_sequential"])
    verdict = report.diagnose(busy, ctx)
    result.update(stages=stages, busy=busy, transform_fraction=tf,
                  bottleneck={"stage": verdict.stage, "label": verdict.label, "advice": verdict.advice})
    result["transform_split"] = (
        "the Loader times decode and transform together; they are split by the in-memory ratio of run 'decode' "
        f"(transform = {tf:.0%} of the per-image work)" if tf is not None else
        "decode and transform together (no in-memory decode run to split them)")
    parts = [f"end to end {loader['images_per_s']:,.0f} images/s"]
    if "decode" in by and by["decode"]["images_per_s"]:
        parts.append(f"{loader['images_per_s'] / by['decode']['images_per_s']:.0%} of the decode ceiling")
    shuf = by.get("records_shuffled")
    if shuf and shuf["images_per_s"]:
        parts.append(f"{loader['images_per_s'] / shuf['images_per_s']:.0%} of what the shuffled records deliver")
    result["summary"] = ", ".join(parts)
    return result


def run_benchmark(image_dir: str, dataset: str, opts: Options, *, packed_here: bool = False,
                  runs: Sequence[str] = report.RUN_NAMES) -> dict[str, Any]:
    """Measure the ``runs`` (names from :data:`recpack.bench.dataset_report.RUN_NAMES`) and return the result dict."""
    from ..sources import scan

    unknown = set(runs) - set(report.RUN_NAMES)
    if unknown:
        raise ValueError(f"unknown runs {sorted(unknown)}; choose from {', '.join(report.RUN_NAMES)}")
    files = data_files(dataset)
    records = read_manifest(dataset).records
    out: list[dict[str, Any]] = []
    if "sequential" in runs:
        out.append(measure_sequential(files, opts))
    if "files" in runs:
        paths = [item.path for item in scan(image_dir).items]
        if not paths:
            raise RecpackError(f"{image_dir} holds no images; pass the folder the dataset was packed from")
        out.append(read_files(paths, opts, [image_dir]))
    if "records_sequential" in runs:
        out.append(read_records(dataset, opts, shuffled=False))
    if "records_shuffled" in runs:
        out.append(read_records(dataset, opts, shuffled=True))
    if "decode" in runs:
        out.append(decode_only(dataset, opts))
    if "loader" in runs:
        out.append(full_loader(dataset, opts))
    return assemble(out, opts, image_dir=image_dir, dataset=dataset, packed_here=packed_here, records=records)


@contextlib.contextmanager
def packed_dataset(image_dir: str, dataset: str | None, *, workdir: str | None = None,
                   progress: bool = True) -> Iterator[tuple[str, bool]]:
    """``(dataset path, packed_here)``: ``dataset`` itself, or ``image_dir`` packed (recpack.pack defaults) into
    a temporary folder under ``workdir`` (default: the temp folder) that is removed when the block ends, also
    on errors, Ctrl-C and SIGTERM."""
    if dataset is not None:
        read_manifest(dataset)  # a clear error now rather than after the first runs
        yield dataset, False
        return
    from .. import PackOptions, pack

    with signals_as_interrupt():
        tmp = tempfile.mkdtemp(prefix="recpack-bench-", dir=workdir)
        try:
            out = os.path.join(tmp, "dataset")
            res = pack(image_dir, out, PackOptions(progress=progress))
            if res.records == 0:
                raise RecpackError(f"{image_dir}: no image could be packed ({len(res.skipped)} skipped); "
                                   "see `recpack pack` for the reasons")
            yield out, True
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _child_argv(opts: Options, runs: Sequence[str]) -> Callable[[list[Path]], list[str]]:
    """How to run the same measurement inside the emulated device on the copied paths."""

    def argv(paths: list[Path]) -> list[str]:
        args = ["bench", "dataset", str(paths[0]), str(paths[1]), "--json",
                "--batch-size", str(opts.batch_size), "--transform", opts.transform, "--size", str(opts.size),
                "--order", opts.order, "--max-images", str(opts.max_images), "--time-limit", str(opts.time_limit),
                "--decode-images", str(opts.decode_images), "--seq-bytes", str(opts.seq_bytes),
                "--seed", str(opts.seed), "--runs", ",".join(runs), "--io", opts.io]
        if opts.device:
            args += ["--device", opts.device]
        if opts.threads:
            args += ["--threads", str(opts.threads)]
        if opts.warm:
            args.append("--warm")
        if not opts.progress:
            args.append("--no-progress")
        return python_argv(*args)

    return argv


def measure(image_dir: str, dataset: str | None, opts: Options, *, emulate: str | None = None,
            workdir: str | None = None, runs: Sequence[str] = report.RUN_NAMES) -> dict[str, Any]:
    """Everything the command does short of printing: pack if needed, measure natively or inside an emulated
    device, and return the result dict."""
    with packed_dataset(image_dir, dataset, workdir=workdir, progress=opts.progress) as (path, packed_here):
        if emulate is None:
            return run_benchmark(image_dir, path, opts, packed_here=packed_here, runs=runs)
        result = run_emulated(emulate, [image_dir, path], _child_argv(opts, runs), progress=opts.progress)
    result["emulated_paths"] = {"image_dir": result.get("image_dir"), "dataset": result.get("dataset")}
    result["image_dir"], result["packed_here"] = image_dir, dataset is None
    result["dataset"] = dataset if dataset is not None else "(temporary pack, removed)"
    return result


# ---------------------------------------------------------------------------------------------- command

def _size(ctx: click.Context, param: click.Parameter, value: Any) -> int:
    try:
        return value if isinstance(value, int) else parse_size(str(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _runs(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [n for n in names if n not in report.RUN_NAMES]
    if bad or not names:
        raise click.BadParameter(f"{', '.join(bad) or 'nothing'}: choose from {','.join(report.RUN_NAMES)}")
    return names


@click.command()
@click.argument("image_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("packed_dataset", type=click.Path(exists=True, file_okay=False), required=False)
@click.option("--device", default=None, help="Loader device: cuda, cuda:N or cpu (default: cuda when available).")
@click.option("--threads", type=click.IntRange(1), default=None, help="Decode threads (default: all cores).")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True)
@click.option("--transform", type=click.Choice(["train", "val"]), default="train", show_default=True)
@click.option("--size", type=click.IntRange(1), default=224, show_default=True, help="Output side in pixels.")
@click.option("--order", type=click.Choice(["auto", "shard_shuffle", "random"]), default="auto", show_default=True,
              help="Order of the shuffled runs; auto measures the device and picks (reported).")
@click.option("--io", type=click.Choice(["cold", "auto", "buffered", "direct"]), default="cold", show_default=True,
              help="Loader io mode of the packed-record and Loader runs. cold: what io=auto picks for a dataset "
                   "larger than RAM (direct I/O).")
@click.option("--max-images", type=click.IntRange(0), default=10_000, show_default=True,
              help="Images per run at most (0: a whole epoch).")
@click.option("--time-limit", type=click.FloatRange(0.1), default=30.0, show_default=True,
              help="Seconds at most for the raw-files run and the sequential read (the rest is extrapolated).")
@click.option("--decode-images", type=click.IntRange(1), default=1000, show_default=True,
              help="Records decoded from memory for the CPU ceiling.")
@click.option("--seq-bytes", default="1GiB", show_default=True, callback=_size,
              help="Bytes of the shard files read sequentially at most.")
@click.option("--runs", "runs", default=",".join(report.RUN_NAMES), show_default=True, callback=_runs,
              help="Which runs, comma-separated.")
@click.option("--emulate", type=click.Choice(["hdd", "sata-ssd"]), default=None,
              help="Run the whole measurement on an emulated device (root: loop device + block-I/O cgroup).")
@click.option("--warm", is_flag=True, help="Do not evict the page cache (numbers are labelled warm).")
@click.option("--seed", default=0, show_default=True, help="Seed of the orders, samples and crops.")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Where the temporary pack goes when PACKED_DATASET is not given (default: the temp folder).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Also write a PNG with bars per run and per stage (needs matplotlib).")
@click.option("--no-progress", is_flag=True, help="No progress bars (they go to stderr).")
def dataset_command(image_dir: str, packed_dataset: str | None, device: str | None, threads: int | None,
                    batch_size: int, transform: str, size: int, order: str, io: str, max_images: int, time_limit: float,
                    decode_images: int, seq_bytes: int, runs: tuple[str, ...], emulate: str | None, warm: bool,
                    seed: int, workdir: str | None, as_json: bool, plot_path: str | None, no_progress: bool) -> None:
    """Time IMAGE_DIR's raw files, its packed records (PACKED_DATASET, or a temporary pack of IMAGE_DIR), decode
    alone and the full Loader, each from a cold cache; print images/s and MB/s per run, the Loader's stage
    breakdown and the bottleneck with what to do about it."""
    opts = Options(device=device, threads=threads, batch_size=batch_size, transform=transform, size=size,
                   order=order, max_images=max_images, time_limit=time_limit, decode_images=decode_images,
                   seq_bytes=seq_bytes, warm=warm, seed=seed, progress=not no_progress, io=io)

    def body() -> None:
        try:
            if plot_path is not None:
                report.plot_available()
            result = measure(image_dir, packed_dataset, opts, emulate=emulate, workdir=workdir, runs=runs)
        except (ValueError, OSError) as exc:
            raise RecpackError(str(exc)) from exc
        if plot_path is not None:
            report.plot([result], plot_path)
        if as_json:
            click.echo(json.dumps(result, indent=1, default=_jsonable))
        else:
            click.echo(report.format_table(result))
            if plot_path is not None:
                click.echo(f"plot: {plot_path}")

    exit_on_errors("interrupted; temporary files were removed")(body)()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return str(obj)
