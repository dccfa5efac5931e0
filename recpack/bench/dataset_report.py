"""What ``recpack bench dataset`` measured, turned into words, tables, JSON and a plot; no measuring here.

Everything below is a pure function of numbers, so the logic that names a bottleneck is tested without disks
or threads::

    busy = busy_fractions(stage_seconds(loader.stats, wall_s, threads=2, transform_fraction=0.15), wall_s)
    verdict = diagnose(busy, Context(order="random", threads=2, cores=2, device="cpu"))
    verdict.label, verdict.advice   # "decode-bound", "decode-bound: use 2 more threads (...)"

**The stage model.** The Loader is a pipeline whose stages run at the same time: a reader thread waits for
segment reads (``read``), ``threads`` decode threads check, decode (``decode``) and crop/resize/flip
(``transform``) records, the consuming thread moves each batch to the device (``copy``) and otherwise waits
(``wait``). A stage's *busy fraction* is the share of the wall time its workers spend on it (decode and
transform divided by the thread count). In a pipeline the stage closest to 100% busy limits throughput; the
others have slack. ``wait`` is the consumer's idle time: near 0 means the loader is ahead of whatever consumes
its batches.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import RecpackError

__all__ = [
    "SCHEMA",
    "STAGES",
    "RUN_NAMES",
    "Context",
    "Verdict",
    "rates",
    "pct_of",
    "stage_seconds",
    "busy_fractions",
    "diagnose",
    "format_table",
    "plot",
    "plot_available",
    "to_json",
]

#: ``"schema"`` value of the JSON that ``recpack bench dataset --json`` prints; bumped on incompatible changes.
SCHEMA = "recpack.bench.dataset/1"
#: Stages of the breakdown, in pipeline order.
STAGES = ("read", "decode", "transform", "copy", "wait")
#: The runs, in the order they are measured and printed.
RUN_NAMES = ("sequential", "files", "records_sequential", "records_shuffled", "decode", "loader")

# A stage busier than this (share of the wall time) is "the" bottleneck when it is also the busiest.
_BUSY = 0.6
# Below this share of waiting, the consumer never waits: the input pipeline keeps up.
_CONSUMER_WAIT = 0.05
# Records streamed at this share of the device's sequential rate or more are "at disk speed".
_AT_SEQUENTIAL = 0.9
# Never suggest more decode threads than this in one step.
_MAX_THREADS = 256


def rates(images: int, nbytes: int, seconds: float) -> tuple[float, float]:
    """(images/s, MB/s) for ``images`` images of ``nbytes`` bytes in total (MB = 10^6 bytes) moved in
    ``seconds``; (0, 0) for a zero or negative duration."""
    if not seconds > 0:
        return 0.0, 0.0
    return images / seconds, nbytes / 1e6 / seconds


def pct_of(value: float | None, reference: float | None) -> float | None:
    """``value / reference`` as a fraction, or None when either is missing or the reference is not > 0."""
    if value is None or reference is None or not reference > 0:
        return None
    return value / reference


def stage_seconds(stats: Mapping[str, float], wall_s: float, threads: int,
                  transform_fraction: float | None = None) -> dict[str, float]:
    """Wall-clock seconds per stage from ``Loader.stats`` after a timed run of ``wall_s`` seconds.

    ``decode_s`` in the stats is decode *and* transform summed over ``threads`` threads; it is divided by the
    thread count and split by ``transform_fraction`` (the share of the transform in the per-image work,
    measured on in-memory bytes; None: all of it counts as decode). The copy stage is the longer of the
    consumer's copy time (``copy_s``) and the device's (``copy_device_s``, CUDA events): an asynchronous copy
    can keep the link busy while the consumer has already moved on. Adds ``"wall"``.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, not {threads}")
    tf = 0.0 if transform_fraction is None else min(max(float(transform_fraction), 0.0), 1.0)
    work = float(stats.get("decode_s", 0.0)) / threads
    return {
        "read": float(stats.get("read_s", 0.0)),
        "decode": work * (1.0 - tf),
        "transform": work * tf,
        "copy": max(float(stats.get("copy_s", 0.0)), float(stats.get("copy_device_s", 0.0))),
        "wait": float(stats.get("wait_s", 0.0)),
        "wall": float(wall_s),
    }


def busy_fractions(seconds: Mapping[str, float], wall_s: float | None = None) -> dict[str, float]:
    """Each stage's seconds as a share of the wall time (``seconds["wall"]`` unless ``wall_s`` is given),
    clipped to [0, 1]; all 0 when the wall time is not > 0."""
    wall = float(seconds.get("wall", 0.0) if wall_s is None else wall_s)
    if not wall > 0:
        return {s: 0.0 for s in STAGES}
    return {s: min(max(float(seconds.get(s, 0.0)) / wall, 0.0), 1.0) for s in STAGES}


@dataclass(frozen=True)
class Context:
    """What the advice depends on besides the stage times.

    order: the order the Loader used ("random", "shard_shuffle", "sequential"). threads: decode threads.
    cores: CPU cores of the machine. device: "cpu" or "cuda" (the Loader's output device type). pinned:
    whether the batch slots were pinned (the Loader pins them whenever CUDA is in use). seq_fraction: the
    shuffled packed records' MB/s as a share of the device's sequential MB/s (None: not measured).
    """

    order: str
    threads: int
    cores: int
    device: str = "cpu"
    pinned: bool = False
    seq_fraction: float | None = None


@dataclass(frozen=True)
class Verdict:
    """stage: "disk", "decode", "copy", "consumer" or "none". label: e.g. "decode-bound". advice: one
    sentence starting with the label. busy: the busy fractions it was decided from."""

    stage: str
    label: str
    advice: str
    busy: Mapping[str, float]


def _more_threads(threads: int, decode_busy: float, other_busy: float) -> int:
    """Decode threads to add so that decoding keeps up with the next-busiest stage (at least 1)."""
    target = max(other_busy, 0.05)
    wanted = math.ceil(threads * decode_busy / target - 1e-9)
    return max(1, min(wanted, _MAX_THREADS) - threads)


def diagnose(busy: Mapping[str, float], ctx: Context) -> Verdict:
    """Name the stage that limits the Loader and say what to do about it (a pure function).

    The CPU stages (decode + transform share the decode threads), the disk (``read``) and the copy compete;
    the busiest one at or above 60% busy is the bottleneck. When none is, and the consumer hardly ever waits
    (< 5%), the consumer itself is the limit; otherwise no stage stands out ("none", usually a run too short
    to say, or Python overhead in the pipeline).
    """
    b = {s: float(busy.get(s, 0.0)) for s in STAGES}
    cpu = b["decode"] + b["transform"]
    candidates = {"disk": b["read"], "decode": cpu, "copy": b["copy"]}
    stage = max(candidates, key=lambda k: candidates[k])
    top = candidates[stage]
    if top < _BUSY:
        if b["wait"] < _CONSUMER_WAIT:
            return Verdict("consumer", "consumer-bound",
                           f"consumer-bound: batches are always ready (the consumer waited {b['wait']:.0%} of "
                           "the time); the input pipeline is not the limit", b)
        return Verdict("none", "no single bottleneck",
                       f"no single bottleneck: no stage is busy {_BUSY:.0%} of the time (read {b['read']:.0%}, "
                       f"decode+transform {cpu:.0%}, copy {b['copy']:.0%}); measure a longer run "
                       "(--max-images) or give the Loader more prefetch", b)
    if stage == "disk":
        seq = ctx.seq_fraction
        at = f" at {seq:.0%} of the device's sequential rate" if seq is not None else ""
        if ctx.order == "random":
            advice = (f"disk-bound{at}: use shard_shuffle order (Loader(order='shard_shuffle') or 'auto'): "
                      "every read becomes a large sequential read instead of one seek per image")
        elif seq is not None and seq >= _AT_SEQUENTIAL:
            advice = (f"disk-bound{at}: the records already stream at the disk's speed; only a faster device "
                      "(or several), or smaller records (recpack pack --resize 256), go further")
        else:
            advice = (f"disk-bound{at}: use longer shard_shuffle runs (Loader(run=...), ~64 MiB of records) "
                      "and fewer concurrent reads (io_threads=2) so the disk streams instead of seeking")
        return Verdict("disk", "disk-bound", advice, b)
    if stage == "decode":
        other = max(b["read"], b["copy"])
        more = _more_threads(ctx.threads, cpu, other)
        where = ("" if ctx.threads + more <= ctx.cores else
                 f"; this machine has {ctx.cores} cores, so that needs a bigger CPU")
        part = " (most of it in the transform)" if b["transform"] > b["decode"] else ""
        plural = "s" if more > 1 else ""
        advice = (f"decode-bound{part}: use {more} more thread{plural} (threads={ctx.threads + more}{where}) or "
                  "reduced-size decode (pack smaller JPEGs with recpack pack --resize 256, or crops that allow "
                  "DCT downscaling)")
        return Verdict("decode", "decode-bound", advice, b)
    if ctx.device == "cuda" and not ctx.pinned:
        advice = "copy-bound: pin memory (pinned host buffers copy 2x faster and asynchronously)"
    elif ctx.device == "cuda":
        advice = ("copy-bound: pin memory is already on; copy uint8 and normalise on the device "
                  "(normalize=...), or use a faster link")
    else:
        advice = ("copy-bound: pin memory and copy to a GPU asynchronously; on the CPU the batch is copied out "
                  "of its slot, so keep batches uint8 (normalize on the device)")
    return Verdict("copy", "copy-bound", advice, b)


# ---------------------------------------------------------------------------------------------- text

_TITLES = {
    "sequential": "device sequential read (8 MiB reads of the shard files)",
    "files": "raw image files, random order",
    "records_sequential": "packed records, shard order (raw)",
    "records_shuffled": "packed records, shuffled (raw)",
    "decode": "decode + transform only, from memory",
    "loader": "full Loader to the device",
}


_SHORT = {
    "files": "raw files\n(random order)",
    "records_sequential": "records\n(shard order)",
    "records_shuffled": "records\n(shuffled)",
    "decode": "decode only\n(from memory)",
    "loader": "full Loader\n(to the device)",
}


def _num(v: float | None, fmt: str = ",.0f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def run_title(run: Mapping[str, Any]) -> str:
    """A run's row title, with its order where it has one."""
    title = _TITLES.get(str(run.get("name")), str(run.get("name")))
    if run.get("order"):
        title += f", order={run['order']}"
    return title


def format_table(result: Mapping[str, Any]) -> str:
    """The readable terminal report of one ``recpack bench dataset`` result (its JSON form)."""
    lines: list[str] = []
    emu = result.get("emulation")
    where = (f"emulated {emu['profile']} ({emu['read_iops_limit']:,} read IOPS, {emu['read_mb_s_limit']:g} MB/s)"
             if emu else "native storage")
    lines.append(f"recpack bench dataset: {result.get('records', 0):,} records from {result.get('image_dir')}; "
                 f"{where}; cache {result.get('cache')}; device {result.get('device')}; "
                 f"{result.get('threads')} decode threads")
    rows = [("run", "images", "seconds", "images/s", "MB/s", "% of seq")]
    for run in result.get("runs", []):
        rows.append((run_title(run), _num(run.get("images")), _num(run.get("seconds"), ".2f"),
                     _num(run.get("images_per_s")), _num(run.get("mb_per_s")),
                     _num(None if run.get("pct_of_sequential") is None else 100 * run["pct_of_sequential"], ".0f")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, r in enumerate(rows):
        lines.append("  " + "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
        if k == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    notes = [f"  {run['name']}: {run['note']}" for run in result.get("runs", []) if run.get("note")]
    if notes:
        lines += ["", "notes:", *notes]
    stages, busy = result.get("stages"), result.get("busy")
    if stages and busy:
        lines += ["", f"stage breakdown of the full Loader run ({stages['wall']:.2f} s wall; share of wall time, "
                      "decode/transform per thread):"]
        for s in STAGES:
            bar = "#" * round(30 * busy[s])
            lines.append(f"  {s:<10} {stages[s]:8.2f} s  {100 * busy[s]:5.1f}%  {bar}")
        if result.get("transform_split"):
            lines.append(f"  ({result['transform_split']})")
    verdict = result.get("bottleneck")
    if verdict:
        lines += ["", f"bottleneck: {verdict['advice']}"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- plot

def plot_available() -> None:
    """Raise RecpackError saying how to install matplotlib when it is missing (checked before a long run)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise RecpackError(f"--plot needs matplotlib ({exc}); install it with `pip install matplotlib`") from None


def plot(results: Sequence[Mapping[str, Any]], out: str | os.PathLike[str], labels: Sequence[str] | None = None,
         title: str | None = None) -> None:
    """Write a PNG: images/s per run, grouped by device (left), and the Loader's stage breakdown per device
    (right). ``results`` are ``recpack bench dataset`` results (one per device); ``labels`` name the devices
    (default: the emulated profile, or "native"). Needs matplotlib (``pip install matplotlib``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RecpackError(f"--plot needs matplotlib ({exc}); install it with `pip install matplotlib`") from None
    if not results:
        raise ValueError("plot needs at least one result")
    if labels is None:
        labels = [r["emulation"]["profile"] if r.get("emulation") else "native" for r in results]
    names = [n for n in RUN_NAMES if n != "sequential" and any(r["name"] == n for res in results
                                                                for r in res.get("runs", []))]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / len(results)
    top = 1.0
    for j, (res, label) in enumerate(zip(results, labels)):
        by_name = {r["name"]: r for r in res.get("runs", [])}
        values = [float(by_name[n]["images_per_s"]) if n in by_name else 0.0 for n in names]
        top = max([top, *values])
        xs = [i + (j - (len(results) - 1) / 2) * width for i in range(len(names))]
        bars = ax1.bar(xs, values, width, label=label)
        ax1.bar_label(bars, labels=[f"{v:,.0f}" if v else "" for v in values], fontsize=7, padding=2)
    ax1.set_xticks(range(len(names)))
    ax1.set_xticklabels([_SHORT[n] for n in names], fontsize=8)
    ax1.set_yscale("log")
    ax1.set_ylim(top=top * 3)
    ax1.set_ylabel("images/s (log scale)")
    ax1.set_title("images/s per run (cold cache)")
    ax1.legend(fontsize=8, loc="upper right")
    for j, (res, label) in enumerate(zip(results, labels)):
        busy = res.get("busy") or {}
        values = [100 * float(busy.get(s, 0.0)) for s in STAGES]
        xs = [i + (j - (len(results) - 1) / 2) * width for i in range(len(STAGES))]
        verdict = (res.get("bottleneck") or {}).get("label")
        ax2.bar(xs, values, width, label=f"{label}: {verdict}" if verdict else label)
    ax2.set_xticks(range(len(STAGES)))
    ax2.set_xticklabels(list(STAGES), fontsize=8)
    ax2.set_ylim(0, 119)
    ax2.set_ylabel("% of the Loader's wall time")
    ax2.set_title("full Loader: busy share per stage (stages overlap)")
    ax2.legend(fontsize=8, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(os.fspath(out), dpi=110)
    plt.close(fig)


def to_json(result: Mapping[str, Any]) -> str:
    """The result of :func:`recpack.bench.dataset.measure` as indented JSON; numpy numbers become plain ones,
    anything else JSON cannot hold its ``str``."""
    return json.dumps(result, indent=1, default=_json_default)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    return str(obj)
