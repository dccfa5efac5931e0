"""The human-readable report of ``recpack bench device`` (:func:`format_report`) and its JSON text
(:func:`to_json`); no measuring here."""

from __future__ import annotations

import json
import math
from typing import Any

from .readers import tests_for

__all__ = ["format_report", "to_json"]


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, div in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def _num(v: float, digits: int = 0) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.{digits}f}"


def _us(v: float) -> str:
    if v is None or math.isnan(v):
        return "-"
    return f"{v / 1000:,.2f} ms" if v >= 1000 else f"{v:,.1f} µs"


def format_report(result: dict[str, Any]) -> str:
    """The human-readable report of :func:`bench_device`'s result: storage, then a table of tests."""
    st = result["storage"]
    lines = [f"path        {result['path']}"]
    if st.get("mount_point") is not None:
        lines.append(f"file system {st['fstype']} at {st['mount_point']} (from {st['source']})")
    lines.append(f"storage     {st['chain']}")
    for disk in st.get("disks", []):
        what = " ".join(x for x in (disk.get("vendor"), disk.get("model")) if x) or "model unknown"
        drv = f", driver {disk['driver']}" if disk.get("driver") else ""
        rot = {True: "1 (rotational)", False: "0 (non-rotational)", None: "unknown"}[disk.get("rotational")]
        lines.append(f"disk        {disk['name']} ({disk['kind']}): {what}{drv}, {_size(disk.get('size_bytes'))}, "
                     f"kernel rotational flag {rot}")
    if st.get("note"):
        lines.append(f"note        {st['note']}")
    emu = result.get("emulation")
    if emu:
        lines.append(f"emulated    {emu['profile']}: {emu['read_iops_limit']:,} read IOPS, "
                     f"{emu['read_mb_s_limit']:g} MB/s ({emu['method']}, loop direct-io "
                     f"{'on' if emu['direct_io'] else 'off'})")
    cache = result["cache"]
    cache_text = {"drop_caches": "cold (page cache dropped before each test: drop_caches)",
                  "fadvise": "cold (test file evicted before each test: posix_fadvise DONTNEED)",
                  "o_direct": "cold (O_DIRECT reads bypass the page cache)",
                  "warm": "WARM (file read once first; numbers are the page cache, not the device)",
                  "none": "UNKNOWN (could not evict; reads may be cache hits)"}.get(cache, str(cache))
    frac = result.get("cached_after_evict")
    if frac:
        cache_text += f"; {frac:.0%} of the file was still cached after eviction"
    f = result["file"]
    lines.append(f"cache       {cache_text}")
    lines.append(f"test file   {_size(f.get('bytes'))}, {result['settings']['duration_s']:g} s per test")
    lines.append("")
    header = ("test", "reads", "IOPS", "MB/s", "p50", "p99")
    rows = [header]
    labels = {s.name: s.label for s in tests_for(result["settings"]["threads"], result["settings"]["record_bytes"])}
    for name, t in result["tests"].items():
        rows.append((labels.get(name, name), _num(t["reads"]), _num(t["iops"]), _num(t["mb_s"], 1),
                     _us(t["p50_us"]), _us(t["p99_us"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[j]) if j == 0 else c.rjust(widths[j]) for j, c in enumerate(r)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    if result.get("class"):
        lines.append(f"class       {result['class_label']}: {result['class_reason']}")
    else:
        lines.append(f"class       {result['class_reason']}")
    return "\n".join(lines)


def _jsonable(obj: Any) -> Any:
    """NaN is not JSON: write null."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    return obj


def to_json(result: dict[str, Any]) -> str:
    """:func:`recpack.bench.device.bench_device`'s result as indented JSON, NaN written as null."""
    return json.dumps(_jsonable(result), indent=1)
