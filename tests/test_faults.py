"""Bit rot and truncation (issue 7), the quick part: benchmarks/faults.py's campaigns with 25 trials each.

The long part: ``python benchmarks/faults.py --trials 2000`` (docs/reliability.md has its table)."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "faults.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("recpack_bench_faults", _PATH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


faults = _load()


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list]:  # type: ignore[type-arg]
    return faults.campaign(25, seed=1234, base=tmp_path_factory.mktemp("faults"))  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", ["flip", "truncate"])
def test_every_trial_meets_every_expectation(results: dict[str, list], kind: str) -> None:  # type: ignore[type-arg]
    outs = results[kind]
    assert len(outs) == 25
    failed = [o.failures for o in outs if o.failures]
    assert not failed, failed
    assert sum(o.wrong for o in outs) == 0
    assert sum(o.damaged for o in outs) > 0  # the campaign really damaged records


def test_campaign_covers_record_and_shard_level_damage(results: dict[str, list]) -> None:  # type: ignore[type-arg]
    flips = results["flip"]
    assert any(o.shard_level for o in flips) and any(not o.shard_level and o.damaged for o in flips)
    assert any(o.skipped for o in flips)  # Loader(skip) counted damaged records


def test_watchdog_turns_a_hang_into_an_error() -> None:
    t0 = time.monotonic()
    with pytest.raises(faults.TrialTimeout):
        with faults.watchdog(0.2):
            time.sleep(5)
    assert time.monotonic() - t0 < 2


def test_a_trial_that_hangs_or_crashes_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    truth = faults.build(tmp_path, images=6, shards=1)
    monkeypatch.setattr(faults, "TRIAL_TIMEOUT_S", 0.2)
    monkeypatch.setattr(faults, "check", lambda *a, **k: time.sleep(5))
    import numpy as np

    out = faults.run_trial(truth, tmp_path / "w", "flip", np.random.default_rng(0))
    assert out.failures and "hang" in out.failures[0]
    monkeypatch.setattr(faults, "check", lambda *a, **k: [][1])
    out = faults.run_trial(truth, tmp_path / "w", "truncate", np.random.default_rng(0))
    assert out.failures == ["unexpected IndexError: list index out of range"]
