"""Bit rot and truncation (issue 7), the quick part: campaigns/faults.py's campaigns with 25 trials each.

The long part: ``python benchmarks/faults.py --trials 2000`` (docs/reliability.md has its table)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from campaigns import faults
from campaigns.report import replace_marked


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[faults.Outcome]]:
    return faults.campaign(25, seed=1234, base=tmp_path_factory.mktemp("faults"))


@pytest.mark.parametrize("kind", ["flip", "truncate"])
def test_every_trial_meets_every_expectation(results: dict[str, list[faults.Outcome]], kind: str) -> None:
    outs = results[kind]
    assert len(outs) == 25
    failed = [o.failures for o in outs if o.failures]
    assert not failed, failed
    assert sum(o.wrong for o in outs) == 0
    assert sum(o.damaged for o in outs) > 0  # the campaign really damaged records


def test_campaign_covers_record_and_shard_level_damage(results: dict[str, list[faults.Outcome]]) -> None:
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
    out = faults.run_trial(truth, tmp_path / "w", "flip", np.random.default_rng(0))
    assert out.failures and "hang" in out.failures[0]
    monkeypatch.setattr(faults, "check", lambda *a, **k: [][1])
    out = faults.run_trial(truth, tmp_path / "w", "truncate", np.random.default_rng(0))
    assert out.failures == ["unexpected IndexError: list index out of range"]


def test_the_table_and_where_it_goes(tmp_path: Path) -> None:
    outs = {"flip": [faults.Outcome("flip", 2, False), faults.Outcome("flip", 1, True, loader_refused=True,
                                                                        failures=["hang: trial ran past 30 s"])],
            "truncate": [faults.Outcome("truncate", 3, True, wrong=1, failures=["x"])]}
    text = faults.table(outs, 12.0, 300.0)
    assert "| bit flips (1-3 bits) | 2 | 3 | 1 | 1 | 0 | 1 |" in text
    assert "| truncation at a random offset | 1 | 3 | 0 | 1 | 1 | 0 |" in text
    doc = tmp_path / "r.md"
    doc.write_text("a\n<!-- faults:begin -->\nold\n<!-- faults:end -->\nb\n")
    replace_marked("faults", text, doc)
    assert doc.read_text() == f"a\n<!-- faults:begin -->\n{text}\n<!-- faults:end -->\nb\n"
