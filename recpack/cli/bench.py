"""``recpack bench``: the ``device`` and ``dataset`` commands over :mod:`recpack.bench`.

Options and output only; the measuring is :func:`recpack.bench.device.bench_device` and
:func:`recpack.bench.dataset.measure`, imported when a command runs.
"""

from __future__ import annotations

from typing import Any

import click

from ..bench import dataset_report
from ..bench.dataset_report import RUN_NAMES
from ..bench.emulate.profiles import PROFILES
from ..errors import RecpackError
from .options import SizeType, exit_on_errors

__all__ = ["bench"]


@click.group()
def bench() -> None:
    """Measure storage devices and datasets: random vs sequential reads, disk-to-device images/s and the
    bottleneck stage."""


@click.command("device")
@click.argument("path", type=click.Path(exists=True))
@click.option("--size", type=SizeType(), default="1GiB", show_default=True,
              help="Test file size (capped at half the free space). Larger than RAM makes warm runs impossible.")
@click.option("--duration", type=click.FloatRange(min=0.1), default=3.0, show_default=True,
              help="Seconds per test.")
@click.option("--reads", "max_reads", type=click.IntRange(1), default=None,
              help="Stop a test after this many reads (whichever comes first with --duration).")
@click.option("--threads", type=click.IntRange(1, 256), default=16, show_default=True,
              help="Threads of the concurrent random 4 KiB test.")
@click.option("--record-size", "record_bytes", type=SizeType(), default="110KiB", show_default=True,
              help="Read size of the random record test (a dataset's typical record).")
@click.option("--direct", is_flag=True, help="Read with O_DIRECT instead of dropping the page cache.")
@click.option("--warm", is_flag=True, help="Read the file once first and never evict (labelled warm).")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Seed of the random offsets.")
@click.option("--emulate", type=click.Choice(list(PROFILES)), default=None,
              help="Measure an emulated WD Black HDD (110 IOPS, 170 MB/s) or Samsung 850 PRO SSD (10,000 IOPS, "
                   "550 MB/s) made on PATH's disk instead (root: loop device + cgroup).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (keys: see recpack.bench.device).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@exit_on_errors("interrupted; the test file (and any emulated device) was removed")
def device_command(path: str, size: int, duration: float, max_reads: int | None, threads: int, record_bytes: int,
                   direct: bool, warm: bool, seed: int, emulate: str | None, as_json: bool, no_progress: bool) -> None:
    """Identify the storage under PATH (file system, block device, model, rotational flag) and measure it
    with a temporary test file: random 4 KiB reads at queue depth 1 and with threads, random record-size
    reads and sequential 1 MiB reads, cold cache each time; then name its class (HDD-like, SATA-SSD-like,
    NVMe-like, RAM/page cache) from the numbers."""
    from ..bench.device import bench_device, bench_device_emulated
    from ..bench.device_report import format_report, to_json

    settings: dict[str, Any] = {"size": size, "duration": duration, "max_reads": max_reads, "threads": threads,
                "record_bytes": record_bytes, "direct": direct, "warm": warm, "seed": seed,
                "progress": not no_progress}
    try:
        result = (bench_device_emulated(emulate, **settings) if emulate is not None
                  else bench_device(path, **settings))
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    click.echo(to_json(result) if as_json else format_report(result))


def _runs(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [n for n in names if n not in RUN_NAMES]
    if bad or not names:
        raise click.BadParameter(f"{', '.join(bad) or 'nothing'}: choose from {','.join(RUN_NAMES)}")
    return names


@click.command("dataset")
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
@click.option("--seq-bytes", type=SizeType(), metavar="TEXT", default="1GiB", show_default=True,
              help="Bytes of the shard files read sequentially at most.")
@click.option("--runs", "runs", default=",".join(RUN_NAMES), show_default=True, callback=_runs,
              help="Which runs, comma-separated.")
@click.option("--emulate", type=click.Choice(list(PROFILES)), default=None,
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
    from ..bench.dataset import Options, measure

    opts = Options(device=device, threads=threads, batch_size=batch_size, transform=transform, size=size,
                   order=order, max_images=max_images, time_limit=time_limit, decode_images=decode_images,
                   seq_bytes=seq_bytes, warm=warm, seed=seed, progress=not no_progress, io=io)

    def body() -> None:
        try:
            if plot_path is not None:
                dataset_report.plot_available()
            result = measure(image_dir, packed_dataset, opts, emulate=emulate, workdir=workdir, runs=runs)
        except (ValueError, OSError) as exc:
            raise RecpackError(str(exc)) from exc
        if plot_path is not None:
            dataset_report.plot([result], plot_path)
        if as_json:
            click.echo(dataset_report.to_json(result))
        else:
            click.echo(dataset_report.format_table(result))
            if plot_path is not None:
                click.echo(f"plot: {plot_path}")

    exit_on_errors("interrupted; temporary files were removed")(body)()


bench.add_command(device_command)
bench.add_command(dataset_command)
