"""The library commands of ``recpack``: ``pack``, ``inspect``, ``verify``, ``convert`` and ``demo``.

Each parses its options, calls the library's public functions (imported when the command runs, so that
``recpack --help`` stays quick) and prints the result as text or JSON.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time

import click

from .options import SizeType, exit_on_errors

__all__ = ["pack", "inspect", "verify", "demo", "convert"]

_errors = exit_on_errors("interrupted; finished shards are kept — re-run the same command to resume")


@click.command()
@click.argument("src", type=click.Path(exists=True))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True, help="Seed of the global shuffle.")
@click.option("--shard-size", type=SizeType(), default="256MiB", show_default=True,
              help="Target bytes per shard (planned from source file sizes).")
@click.option("--num-shards", type=click.IntRange(1), default=None, help="Exactly this many shards instead.")
@click.option("--workers", type=click.IntRange(0), default=None,
              help="Worker processes (default: all cores; in-process for plain pass-through on <= 2 cores, "
                   "where a pool costs more than it saves; 0 = in this process).")
@click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
              help="Write the shards on a Dask distributed cluster (pip install 'recpack-io[dask]', or -e '.[dask]' "
                   "in a clone); OUT must be a folder every worker sees at the same path. Same bytes as a local pack.")
@click.option("--resize", type=click.IntRange(1), default=None, metavar="SHORTER_SIDE",
              help="Re-encode with the shorter side resized to this many pixels (like im2rec).")
@click.option("--quality", type=click.IntRange(1, 100), default=None,
              help="JPEG quality when re-encoding (default 95); given alone, re-encodes every image.")
@click.option("--restart-markers", is_flag=True,
              help="Losslessly re-write each JPEG with a restart marker after every MCU (same pixels, about the "
                   "same size, ~3 ms more per image when packing): the Loader's random crops then decode only "
                   "the part of each image they need (~25% faster). Needs the C extension.")
@click.option("--convert", type=click.Choice(["jpeg", "reject"]), default="jpeg", show_default=True,
              help="Non-JPEG and CMYK inputs: convert to RGB JPEG, or reject them as bad inputs.")
@click.option("--check", type=click.Choice(["header", "decode"]), default="header", show_default=True,
              help="How hard to check each image: parse its header, or fully decode it.")
@click.option("--strict", is_flag=True, help="Stop at the first bad input instead of skipping it.")
@click.option("--backend", type=click.Choice(["shards", "lmdb"]), default="shards", show_default=True,
              help="Write recpack shard files (sequential reads, any storage) or one LMDB database.")
@click.option("--root", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder that paths in a list/.lst file are relative to (default: the list's folder).")
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset or unfinished pack in OUT.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_errors
def pack(src: str, out: str, seed: int, shard_size: int, num_shards: int | None, workers: int | None,
         scheduler: str | None, resize: int | None, quality: int | None, restart_markers: bool, convert: str,
         check: str, strict: bool,
         backend: str, root: str | None, overwrite: bool, no_progress: bool, as_json: bool) -> None:
    """Pack the images in SRC (an ImageFolder tree, an im2rec .lst file or a list of paths) into the
    dataset folder OUT. Bad inputs are skipped and listed in OUT/pack-report.tsv. Re-running the same
    command after an interruption keeps finished shards and redoes only the rest."""
    from .. import ImageOptions, PackOptions
    from .. import pack as run_pack

    image = ImageOptions(check=check, convert=convert, resize=resize, quality=quality or 95,
                         reencode=quality is not None, restart_markers=restart_markers)
    opts = PackOptions(seed=seed, shard_size=shard_size, num_shards=num_shards, workers=workers,
                       backend=backend, image=image, strict=strict, overwrite=overwrite,
                       progress=not no_progress and not as_json, scheduler=scheduler)
    res = run_pack(src, out, opts, root=root)
    if as_json:
        click.echo(json.dumps({"path": res.path, "records": res.records, "skipped": len(res.skipped),
                               "source_items": res.source_items, "shards": len(res.shards), "bytes": res.bytes,
                               "seconds": round(res.seconds, 3), "resumed_shards": res.resumed,
                               "already_done": res.already_done}))
        return
    if res.already_done:
        click.echo(f"{out}: already packed with these inputs and options ({res.records} records); nothing to do")
        return
    click.echo(f"packed {res.records} of {res.source_items} images into {len(res.shards) or 1} "
               f"{'shard' if len(res.shards) <= 1 else 'shards'} ({res.bytes / 1e6:.1f} MB) in "
               f"{res.seconds:.1f} s: {res.images_per_s:.0f} images/s, {res.mb_per_s:.0f} MB/s"
               + (f"; kept {res.resumed} finished shards from an earlier run" if res.resumed else ""))
    if res.skipped:
        reasons: dict[str, int] = {}
        for s in res.skipped:
            reasons[s.reason.split(":")[0]] = reasons.get(s.reason.split(":")[0], 0) + 1
        click.echo(f"skipped {len(res.skipped)} bad inputs (listed in {os.path.join(out, 'pack-report.tsv')}):")
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            click.echo(f"  {n:6d}  {reason}")


@click.command()
@click.argument("dataset", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with a top-level 'records' count).")
@_errors
def inspect(dataset: str, as_json: bool) -> None:
    """Show what DATASET holds: counts, classes, shard sizes, image and record size statistics."""
    from ..info import inspect_dataset

    info = inspect_dataset(dataset)
    if as_json:
        click.echo(json.dumps(info, indent=1))
        return
    fmt = f"format v{info['format_version']}, " if info["format_version"] else ""
    click.echo(f"{info['path']}: {info['records']} records, {info['bytes'] / 1e6:.1f} MB, backend "
               f"{info['backend']}, {fmt}{info['created_by']}")
    sb = info["shard_bytes"]
    if info["shards"]:
        click.echo(f"shards: {len(info['shards'])}, {sb['min'] / 1e6:.1f}–{sb['max'] / 1e6:.1f} MB "
                   f"(mean {sb['mean'] / 1e6:.1f} MB)")
    per = info["records_per_class"]
    named = f"classes: {info['classes']}" if info["classes"] else f"labels: {len(per)} distinct (no class names)"
    click.echo(named + (f", unlabeled records: {info['unlabeled']}" if info["unlabeled"] else ""))
    for name, n in list(per.items())[:20]:
        click.echo(f"  {n:8d}  {name}")
    if len(per) > 20:
        click.echo(f"  ... {len(per) - 20} more classes (use --json for all)")
    for label, key in (("record bytes", "record_bytes"), ("image width", "image_width"),
                       ("image height", "image_height")):
        s = info[key]
        click.echo(f"{label:13s} min {s['min']}, median {s['median']:.0f}, mean {s['mean']:.0f}, max {s['max']}")
    pk = info["pack"]
    click.echo(f"packed with seed {pk.get('seed')}, {pk.get('skipped', 0)} bad inputs skipped "
               f"(see {pk.get('report', 'pack-report.tsv')})")
    for problem in info["problems"]:
        click.echo(f"DAMAGED: {problem}", err=True)
    if info["problems"]:
        click.echo(f"{len(info['problems'])} file(s) could not be read; their records are not counted above — "
                   f"run `recpack verify {dataset}`", err=True)
        raise SystemExit(1)


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


@click.command()
@click.argument("dataset", type=click.Path(exists=True))
@click.option("--decode", is_flag=True, help="Also decode every image.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@_errors
def verify(dataset: str, decode: bool, as_json: bool, no_progress: bool) -> None:
    """Check every checksum in DATASET (sequential reads); list each bad record by shard, offset and key.
    Exits with status 1 if anything is wrong."""
    from .. import verify as run_verify

    t0 = time.perf_counter()
    res = run_verify(dataset, decode=decode, progress=not no_progress and not as_json)
    dt = time.perf_counter() - t0
    if as_json:
        click.echo(json.dumps({**res.to_json(), "seconds": round(dt, 3)}, indent=1))
    else:
        for p in res.problems:
            click.echo(f"BAD  {p.shard} @ offset {p.offset}" + (f" key {p.key!r}" if p.key else "")
                       + f": {p.message}")
        n = len(res.problems)
        status = "OK" if res.ok else f"FAILED ({n} {_plural(n, 'problem')})"
        rate = res.bytes / 1e6 / max(dt, 1e-9)
        click.echo(f"{status}: {res.records} of {res.expected} {_plural(res.expected, 'record')} intact, "
                   f"{res.bytes / 1e6:.1f} MB checked{' and decoded' if decode else ''} in {dt:.1f} s "
                   f"({rate:.0f} MB/s)")
    if not res.ok:
        sys.exit(1)


@click.command()
@click.option("--images", type=click.IntRange(1), default=2000, show_default=True,
              help="How many JPEGs to generate.")
@click.option("--size", default="500x375", show_default=True, help="Generated image size WxH.")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Keep the generated images and dataset here (default: a temporary folder, removed).")
@click.option("--workers", type=click.IntRange(0), default=None, help="Pack worker processes.")
@_errors
def demo(images: int, size: str, workdir: str | None, workers: int | None) -> None:
    """Generate ImageNet-like JPEGs from bundled photos, pack them, verify, read them back and print
    throughput. Everything happens in a temporary folder unless --workdir is given."""
    from ..demo import run_demo

    m = re.fullmatch(r"(\d+)x(\d+)", size)
    if not m:
        raise click.BadParameter("use WxH, e.g. 500x375", param_hint="--size")
    wh = (int(m.group(1)), int(m.group(2)))
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="recpack-demo-")
        try:
            run_demo(tmp, images, wh, workers, click.echo)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        run_demo(workdir, images, wh, workers, click.echo)


@click.command()
@click.argument("src", type=click.Path(exists=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True, help="Seed of the global shuffle.")
@click.option("--shard-size", type=SizeType(), default="256MiB", show_default=True, help="Target bytes per shard.")
@click.option("--num-shards", type=click.IntRange(1), default=None, help="Exactly this many shards instead.")
@click.option("--workers", type=click.IntRange(0), default=None, help="Worker processes (as for pack).")
@click.option("--backend", type=click.Choice(["shards", "lmdb"]), default="shards", show_default=True,
              help="Write recpack shard files (sequential reads, any storage) or one LMDB database.")
@click.option("--strict", is_flag=True, help="Stop at the first bad image instead of skipping it.")
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset or unfinished conversion in OUT.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_errors
def convert(src: str, out: str, seed: int, shard_size: int, num_shards: int | None, workers: int | None,
            backend: str, strict: bool, overwrite: bool, no_progress: bool, as_json: bool) -> None:
    """Convert SRC -- an MXNet .rec (+ .idx), WebDataset .tar shards (a folder or a quoted glob) or a recpack
    LMDB dataset -- into the recpack dataset OUT, keeping image bytes, labels and keys. Shuffles, shards,
    checks and resumes exactly like `recpack pack`."""
    from .. import PackOptions
    from ..convert import convert as run_convert

    opts = PackOptions(seed=seed, shard_size=shard_size, num_shards=num_shards, workers=workers, backend=backend,
                       strict=strict, overwrite=overwrite, progress=not no_progress and not as_json)
    try:
        res = run_convert(src, out, opts)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="SRC") from None
    if as_json:
        click.echo(json.dumps({"path": res.path, "records": res.records, "skipped": len(res.skipped),
                               "source_items": res.source_items, "shards": len(res.shards), "bytes": res.bytes,
                               "seconds": round(res.seconds, 3), "already_done": res.already_done}))
        return
    click.echo(f"converted {res.records} of {res.source_items} images into {out} ({res.bytes / 1e6:.1f} MB) in "
               f"{res.seconds:.1f} s" + (f"; skipped {len(res.skipped)} (see {os.path.join(out, 'pack-report.tsv')})"
                                         if res.skipped else ""))
