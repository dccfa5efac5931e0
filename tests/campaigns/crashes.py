"""kill -9 while packing (issue 7): does a re-run of the same command give exactly an uninterrupted pack?

``python -m recpack pack SRC OUT --workers N`` is killed with SIGKILL at a random moment (seeded; 1-2 kills
per trial, the later ones during the resumed run), then the same command is re-run to completion. After every
kill: no ``index.json``, ``recpack.open`` refuses the folder, and every shard published under its final name
passes a full ``check_shard``. At the end every output file must equal, byte for byte, the output of one
uninterrupted pack. Runs in-process (``--workers 0``) and with a process pool (``--workers 2``).

Test tooling, not package code (see ``campaigns/__init__.py``): it kills processes on purpose. The quick part
runs in tests/test_crashes.py; ``python benchmarks/crashes.py --trials 50 [--write]`` is the long run and
fills the table in docs/reliability.md.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CrashStats", "crash_campaign", "crash_table"]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _pack_cmd(src: Path, out: Path, workers: int, shards: int) -> list[str]:
    return [sys.executable, "-m", "recpack", "pack", str(src), str(out), "--seed", "7", "--num-shards",
            str(shards), "--workers", str(workers), "--check", "decode", "--no-progress"]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the pack (the crash under test), then anything it left behind (pool workers)."""
    try:
        proc.send_signal(signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: only processes this trial started
    except (ProcessLookupError, PermissionError):
        pass


def _phase(out: Path, shards: int) -> str:
    """Where the pack was when it died, from what it left on disk."""
    if (out / "index.json").exists():
        return "finished"
    if not (out / ".recpack-pack" / "plan.json").exists():
        return "before plan"
    done = len(list(out.glob("shard-*.rpk")))
    if done == shards:
        return "all shards, no index"
    return "mid-pack"


def _check_after_kill(out: Path) -> list[str]:
    """What must hold after a kill -9: no manifest unless it finished; published shards are whole."""
    import recpack
    from recpack.backends.shards import check_shard

    problems: list[str] = []
    if not out.exists():
        return problems
    if not (out / "index.json").exists():
        try:
            recpack.open(out).close()
            problems.append("recpack.open accepted an unfinished pack")
        except recpack.RecpackError:
            pass
    for shard in sorted(out.glob("shard-*.rpk")):
        result = check_shard(str(shard))
        if not result.ok:
            problems.append(f"published {shard.name} is damaged: {result.problems[0].message}")
    return problems


@dataclass
class CrashStats:
    workers: int
    trials: int = 0
    kills: int = 0
    phases: dict[str, int] = field(default_factory=dict)
    identical: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def crash_campaign(workdir: Path, trials: int, workers: int, seed: int = 0, images: int = 400,
                   shards: int = 24) -> CrashStats:
    """``trials`` kill -9 trials of one packing mode in ``workdir``; see the module docstring."""
    from recpack.synth import make_image_folder

    t_start = time.perf_counter()
    rng = random.Random(seed * 1000 + workers)
    src = workdir / "src"
    if not src.exists():
        make_image_folder(src, images, classes=4, size=(64, 48), seed=5)
    ref = workdir / f"ref-w{workers}"
    shutil.rmtree(ref, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(_pack_cmd(src, ref, workers, shards), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    planned = None
    while proc.poll() is None:  # when the plan appears: kills before it only test start-up
        if planned is None and (ref / ".recpack-pack" / "plan.json").exists():
            planned = time.perf_counter() - t0
        time.sleep(0.002)
    full = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"the reference pack failed (exit {proc.returncode})")
    start = 0.8 * (planned if planned is not None else 0.0)
    expected = _files(ref)
    stats = CrashStats(workers)
    out = workdir / f"out-w{workers}"
    cmd = _pack_cmd(src, out, workers, shards)
    for trial in range(trials):
        shutil.rmtree(out, ignore_errors=True)
        stats.trials += 1
        for kill in range(rng.randint(1, 2)):
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
            # a resumed run has less left to do: its kill comes sooner
            delay = rng.uniform(start, full * 1.02 if kill == 0 else (start + full) / 2)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                pass
            _kill_group(proc)
            stats.kills += 1
            phase = _phase(out, shards)
            stats.phases[phase] = stats.phases.get(phase, 0) + 1
            stats.problems += [f"trial {trial}: {p}" for p in _check_after_kill(out)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            stats.problems.append(f"trial {trial}: re-run failed: {done.stderr.strip()[-300:]}")
            continue
        got = _files(out)
        if got == expected:
            stats.identical += 1
        else:
            diff = sorted(k for k in set(got) | set(expected) if got.get(k) != expected.get(k))
            stats.problems.append(f"trial {trial}: output differs from an uninterrupted pack in {diff}")
    shutil.rmtree(out, ignore_errors=True)
    stats.seconds = time.perf_counter() - t_start
    return stats


def crash_table(results: list[CrashStats]) -> str:
    phases = ["before plan", "mid-pack", "all shards, no index", "finished"]
    lines = ["| mode | trials | kills | killed before planning / mid-pack / after the last shard / after "
             "index.json | re-run identical to an uninterrupted pack | problems |",
             "| --- | ---: | ---: | --- | ---: | ---: |"]
    for s in results:
        mode = "in-process (`--workers 0`)" if s.workers <= 1 else f"process pool (`--workers {s.workers}`)"
        landed = " / ".join(str(s.phases.get(p, 0)) for p in phases)
        lines.append(f"| {mode} | {s.trials} | {s.kills} | {landed} | {s.identical} of {s.trials} | "
                     f"{len(s.problems)} |")
    return "\n".join(lines)
