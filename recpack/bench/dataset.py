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
import datetime as _dt
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any


from .. import __version__
from ..errors import RecpackError
from ..backends import open_source
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
    with open_source(dataset) as source:
        records = len(source)
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
        open_source(dataset).close()  # a clear error now rather than after the first runs
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
