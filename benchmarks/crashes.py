"""Reliability campaigns of issue 7 that need real processes and time: kill -9 while packing, and a loader soak.

Crashes: ``python -m recpack pack SRC OUT --workers N`` is killed with SIGKILL at a random moment (seeded;
1-2 kills per trial, the later ones during the resumed run), then the same command is re-run to completion.
After every kill: no ``index.json``, ``recpack.open`` refuses the folder, and every shard published under
its final name passes a full ``check_shard``. At the end every output file must equal, byte for byte, the
output of one uninterrupted pack. Runs in-process (``--workers 0``) and with a process pool (``--workers 2``).

Soak: many epochs over a small dataset with a seeded random mix of full epochs, break after k batches, an
exception raised inside the loop, ``close()`` mid-epoch, dropping the loader for GC mid-epoch, and
state_dict/load_state_dict resume; after every step no ``recpack*`` thread is left (within 1 s), and at
checkpoints open file descriptors and RSS must stay flat.

    python benchmarks/crashes.py --trials 50            # both modes, prints the table
    python benchmarks/crashes.py --trials 50 --write    # ... and fills "Crashes while packing" in reliability.md
    python benchmarks/crashes.py --soak 600             # loader soak for 10 minutes

The quick parts run in CI: tests/test_crashes.py and tests/test_soak.py.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RELIABILITY_MD = ROOT / "docs" / "reliability.md"

__all__ = ["CrashStats", "crash_campaign", "SoakStats", "soak", "replace_section"]


# ---------------------------------------------------------------------------------------------- crashes


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

    problems = []
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


# ---------------------------------------------------------------------------------------------- soak


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _recpack_threads(timeout: float = 1.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        names = [t.name for t in threading.enumerate() if t.name.startswith("recpack")]
        if not names or time.monotonic() > deadline:
            return names
        time.sleep(0.005)


class _Boom(Exception):
    pass


@dataclass
class SoakStats:
    steps: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    leaked_threads: int = 0
    fd_growth: int = 0
    rss_growth_mib: float = 0.0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


ACTIONS = ("full epoch", "break after k", "raise inside the loop", "close mid-epoch", "drop for GC mid-epoch",
           "state_dict resume")


def soak(dataset: str | os.PathLike[str], *, seconds: float | None = None, steps: int | None = None,
         seed: int = 0, warmup: int = 30, loader_kw: dict[str, Any] | None = None) -> SoakStats:
    """Run the loader soak on a packed ``dataset`` for ``steps`` steps or ``seconds`` (after ``warmup``
    steps that let the allocator and caches settle); see the module docstring."""
    from recpack.loader import Loader

    kw: dict[str, Any] = {"batch_size": 5, "size": 32, "device": "cpu", "threads": 2, **(loader_kw or {})}
    rng = random.Random(seed)
    stats = SoakStats()
    orders = ("shard_shuffle", "random", "sequential")
    loader = Loader(dataset, order="random", **kw)
    n_batches = len(loader)
    base_fds = base_rss = 0
    t0 = time.perf_counter()
    step = 0
    while True:
        if step == warmup:
            gc.collect()
            base_fds, base_rss, t0 = _fds(), _rss(), time.perf_counter()
        if step >= warmup and ((steps is not None and step - warmup >= steps)
                               or (seconds is not None and time.perf_counter() - t0 >= seconds)):
            break
        action = ACTIONS[rng.randrange(len(ACTIONS))]
        k = rng.randrange(max(1, n_batches))
        # always another epoch: the same one again would resume where the last step stopped (by design)
        loader.set_epoch((loader.epoch + 1 + rng.randrange(999)) % 1000)
        try:
            if action == "full epoch":
                got = sum(1 for _ in loader)
                if got != n_batches:
                    stats.problems.append(f"step {step}: full epoch gave {got} batches, not {n_batches}")
                stats.batches += got
            elif action == "break after k":
                for i, _ in enumerate(loader):
                    stats.batches += 1
                    if i >= k:
                        break
            elif action == "raise inside the loop":
                try:
                    for i, _ in enumerate(loader):
                        stats.batches += 1
                        if i >= k:
                            raise _Boom
                except _Boom:
                    pass
            elif action == "close mid-epoch":
                it = iter(loader)
                for _ in range(k + 1):
                    next(it, None)
                    stats.batches += 1
                loader.close()
                del it
            elif action == "drop for GC mid-epoch":
                it = iter(loader)
                next(it, None)
                stats.batches += 1
                del it, loader
                gc.collect()
                loader = Loader(dataset, order=orders[rng.randrange(3)], **kw)
            else:  # state_dict resume: stop after k batches, resume in a new loader, count the rest
                for i, _ in enumerate(loader):
                    if i >= k:
                        break
                state = loader.state_dict()
                order = loader.order
                loader.close()
                loader = Loader(dataset, order=order, **kw)
                loader.load_state_dict(state)
                rest = sum(1 for _ in loader)
                if rest != n_batches - (k + 1):
                    stats.problems.append(f"step {step}: resumed after {k + 1} batches, got {rest} more of "
                                          f"{n_batches}")
                stats.batches += k + 1 + rest
        except Exception as exc:  # anything else is a finding
            stats.problems.append(f"step {step} ({action}): {type(exc).__name__}: {exc}")
        left = _recpack_threads(1.0)
        if left:
            stats.leaked_threads += 1
            stats.problems.append(f"step {step} ({action}): threads left after 1 s: {left}")
        stats.actions[action] = stats.actions.get(action, 0) + 1
        step += 1
    loader.close()
    del loader
    gc.collect()
    stats.steps = step - warmup
    stats.seconds = time.perf_counter() - t0
    stats.fd_growth = _fds() - base_fds
    stats.rss_growth_mib = (_rss() - base_rss) / 2**20
    if _recpack_threads(1.0):
        stats.leaked_threads += 1
    return stats


def soak_dataset(workdir: Path) -> Path:
    """47 small images in 3 shards (batches of 5: a last partial batch)."""
    from recpack.pack import PackOptions, pack
    from recpack.synth import make_image_folder

    ds = workdir / "ds"
    if not (ds / "index.json").exists():
        make_image_folder(workdir / "src", 47, classes=4, size=(80, 60), seed=3)
        pack(workdir / "src", ds, PackOptions(num_shards=3, workers=0, progress=False, fsync=False))
    return ds


# ---------------------------------------------------------------------------------------------- docs


def replace_section(title: str, body: str, path: Path = RELIABILITY_MD) -> None:
    """Replace the text under ``## title`` (up to the next ``## ``) in ``path``, re-reading it first."""
    text = path.read_text()
    pat = re.compile(rf"(^## {re.escape(title)}\n)(.*?)(?=^## |\Z)", re.S | re.M)
    if not pat.search(text):
        raise SystemExit(f"{path}: no section '## {title}'")
    path.write_text(pat.sub(lambda m: m.group(1) + "\n" + body.strip() + "\n\n", text, count=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=50, help="kill -9 trials per mode (default 50)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="modes to run (default: 0 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", action="store_true", help="fill 'Crashes while packing' in docs/reliability.md")
    ap.add_argument("--soak", type=float, metavar="SECONDS", help="run the loader soak instead, this long")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="recpack-crashes-") as tmp:
        if args.soak is not None:
            s = soak(soak_dataset(Path(tmp)), seconds=args.soak, seed=args.seed)
            print(f"soak: {s.steps} steps, {s.batches} batches in {s.seconds:.0f} s; actions {s.actions}; "
                  f"threads left {s.leaked_threads}; fd growth {s.fd_growth}; RSS growth "
                  f"{s.rss_growth_mib:.1f} MiB; problems {len(s.problems)}")
            for p in s.problems[:20]:
                print("  ", p)
            sys.exit(1 if s.problems or s.fd_growth > 0 or s.rss_growth_mib > 64 else 0)
        results = []
        for w in args.workers:
            s = crash_campaign(Path(tmp), args.trials, w, seed=args.seed)
            results.append(s)
            print(f"workers={w}: {s.trials} trials, {s.kills} kills {s.phases}, {s.identical} identical, "
                  f"{len(s.problems)} problems, {s.seconds:.0f} s", flush=True)
            for p in s.problems[:20]:
                print("  ", p)
    table = crash_table(results)
    print(table)
    if args.write:
        replace_section("Crashes while packing", CRASHES_TEXT.format(table=table))
    sys.exit(1 if any(s.problems or s.identical != s.trials for s in results) else 0)


CRASHES_TEXT = """
`python -m recpack pack SRC OUT --num-shards 24 --check decode` over 400 small JPEGs is killed with SIGKILL
at a random moment (seeded, uniform from shortly before the plan is written to the end of an uninterrupted
pack; one or two kills per trial, the second one landing in the resumed run), then the same command is
re-run to completion. After every kill: no `index.json` unless the pack had finished, `recpack.open`
refuses the folder, and every shard under its final name passes a full record-by-record check (a killed
shard is only ever a `.tmp`). At the end every file in OUT (shards, `index.json`, `pack-report.tsv`) is
compared byte for byte with one uninterrupted pack.

{table}

Found and fixed by these trials: a kill between creating `OUT/.recpack-pack/` and writing its `plan.json`
made every later run refuse the folder as "an unfinished pack of different inputs" (a missing `plan.json`
now means nothing was started).

Quick part (CI): `tests/test_crashes.py`, 3 trials per mode. Long part:
`python benchmarks/crashes.py --trials 50 --write`.
"""


if __name__ == "__main__":
    main()
