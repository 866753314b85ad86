"""Short Jepsen-style runs on a real cluster in network namespaces (needs root and `ip netns`).

Each run injects real faults while clients work, then checks the history: every run under the
default (linearizable) consistency must be valid. The negative controls, which prove that the
harness and checkers bite, are the weaker settings of tests/jepsen/test_matrix.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvstore.jepsen.checker import Validity
from kvstore.jepsen.history import EventType, read_jsonl
from kvstore.jepsen.nemesis import EventPhase, Intervals, NemesisKind, read_nemesis_log
from kvstore.jepsen.netns import missing_prerequisites
from kvstore.jepsen.runner import (
    ExitStatus,
    RunConfig,
    run,
)

_WHY_NOT = missing_prerequisites()
pytestmark = pytest.mark.skipif(_WHY_NOT is not None, reason=f"Jepsen tests skipped: {_WHY_NOT}")

LOAD_S = 15.0
# Short healthy stretches and faults long enough to force elections, so ~2 faults fit in a run.
INTERVALS = Intervals(healthy=(1.5, 3.0), faulty=(3.0, 5.0))
WAIT_S = 60.0


@pytest.mark.slow
@pytest.mark.parametrize("workload", ["register", "set"])
@pytest.mark.parametrize("nemesis", [NemesisKind.KILL, NemesisKind.PAUSE, NemesisKind.PARTITION])
def test_short_run_is_valid(tmp_path: Path, workload: str, nemesis: NemesisKind) -> None:
    config = RunConfig(
        workload=workload,
        nemeses=(nemesis,),
        time_s=LOAD_S,
        out_dir=tmp_path / "run",
        seed=7,
        intervals=INTERVALS,
    )

    result = run(config)

    details = [f"{o.checker}: {o.validity} {o.summary}" for o in result.outcomes]
    assert result.status is ExitStatus.VALID, f"{result.error}; {details}; see {config.out_dir}"
    assert all(outcome.validity is Validity.VALID for outcome in result.outcomes)
    # The nemesis really struck, and healed everything it broke.
    events = read_nemesis_log(config.out_dir / "nemesis.jsonl")
    phases = [event.phase for event in events]
    assert EventPhase.FAULT in phases
    assert phases.count(EventPhase.FAULT) == phases.count(EventPhase.HEAL)
    assert {event.nemesis for event in events} == {nemesis}
    # Clients got work done, and everything the report promises is there.
    history = read_jsonl(config.out_dir / "history.jsonl")
    assert any(event.type is EventType.OK for event in history)
    assert all(event.time is not None for event in history)
    for name in ("index.html", "results.json", "latency.png", "nodes/node-1.log"):
        assert (config.out_dir / name).is_file(), name
    assert json.loads((config.out_dir / "results.json").read_text())["status"] == "valid"
