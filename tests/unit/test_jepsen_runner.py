"""The parts of a Jepsen run that need no root: what the register workload records (revisions,
staleness bounds) through a real client against in-process fake servers, the checkers it runs on
that history, and the progress a run reports."""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import replace
from pathlib import Path

import pytest

from kvstore.client import Client, ReadConsistency
from kvstore.jepsen.checker import Validity
from kvstore.jepsen.history import Event, EventType, parse_jsonl
from kvstore.jepsen.nemesis import EventPhase, NemesisKind, NemesisLog
from kvstore.jepsen.runner import (
    HistoryRecorder,
    RunClock,
    RunConfig,
    _report_load,
    apply_recorded,
    build_workload,
    load_status,
)
from kvstore.jepsen.workloads import Completion, CounterWorkload, Invocation, RegisterWorkload, SetWorkload
from tests.fakes.fake_cluster import FakeCluster
from tests.fakes.progress import RecordingProgress

KEY = "jepsen/register/0"
INVOKE, OK, FAIL = EventType.INVOKE, EventType.OK, EventType.FAIL


async def recorded_history(consistency: ReadConsistency, invocations: list[Invocation]) -> list[Event]:
    """Run ``invocations`` one after another as process 0 and read back the history written."""
    stream = io.StringIO()
    recorder = HistoryRecorder(stream, RunClock())
    workload = RegisterWorkload(1, consistency)
    async with FakeCluster(nodes=3, partitions=4) as cluster, Client(cluster.endpoints, timeout=3.0) as client:
        for invocation in invocations:
            await apply_recorded(recorder, workload, client, 0, invocation)
    return parse_jsonl(stream.getvalue().splitlines())


def completions(events: list[Event]) -> list[tuple[EventType, object, int | None, int | None]]:
    return [(e.type, e.value, e.revision, e.staleness_ms) for e in events if e.type is not INVOKE]


async def test_register_workload_records_the_revision_of_every_ok_operation() -> None:
    events = await recorded_history(
        ReadConsistency.LINEARIZABLE,
        [
            Invocation("read", KEY, None),
            Invocation("write", KEY, 3),
            Invocation("cas", KEY, (3, 4)),
            Invocation("cas", KEY, (0, 1)),  # compare fails: no effect, no revision
            Invocation("read", KEY, None),
        ],
    )
    (_, _, first_write, _), (_, _, cas, _) = completions(events)[1:3]
    assert first_write is not None and cas is not None and cas > first_write > 0
    assert completions(events) == [
        (OK, None, 0, None),  # absent: revision 0; not a STALE read, so no staleness recorded
        (OK, 3, first_write, None),
        (OK, (3, 4), cas, None),
        (FAIL, (0, 1), None, None),
        (OK, 4, cas, None),  # the version the cas wrote
    ]
    assert all(event.time is not None for event in events)


async def test_stale_reads_record_the_staleness_the_server_reported() -> None:
    events = await recorded_history(
        ReadConsistency.STALE, [Invocation("write", KEY, 1), Invocation("read", KEY, None)]
    )
    (_, _, revision, _), read = completions(events)
    assert read == (OK, 1, revision, 0)  # the fake servers report a bound of 0 ms


def test_register_runs_a_checker_per_guarantee_each_a_progress_phase() -> None:
    events = asyncio.run(recorded_history(
        ReadConsistency.STALE,
        [Invocation("write", KEY, 1), Invocation("read", KEY, None), Invocation("cas", KEY, (1, 2))],
    ))  # fmt: skip
    progress = RecordingProgress()
    outcomes = RegisterWorkload(1, ReadConsistency.STALE).check(events, 10.0, progress)
    assert [(outcome.checker, outcome.validity) for outcome in outcomes] == [
        ("linearizable", Validity.VALID),
        ("session", Validity.VALID),
        ("staleness", Validity.VALID),
    ]
    assert progress.phases() == ["check linearizable", "check session", "check staleness"]
    assert [(update.completed, update.total) for update in progress.updates()] == [(0, 1), (1, 1)] * 3
    linearizable_only = RegisterWorkload(1, ReadConsistency.LINEARIZABLE).check(events, 10.0, RecordingProgress())
    assert [outcome.checker for outcome in linearizable_only] == ["linearizable", "session"]


def test_set_and_counter_checkers_are_progress_phases_too() -> None:
    set_history = [
        Event(0, INVOKE, "add", None, 1), Event(0, OK, "add", None, 1),
        Event(1, INVOKE, "read", None, None), Event(1, OK, "read", None, (1,)),
    ]  # fmt: skip
    progress = RecordingProgress()
    outcomes = SetWorkload(ReadConsistency.LINEARIZABLE).check(set_history, 10.0, progress)
    assert [(outcome.checker, outcome.validity) for outcome in outcomes] == [
        ("set", Validity.VALID), ("set-model", Validity.VALID),
    ]  # fmt: skip
    assert progress.phases() == ["check set", "check set-model"]
    counter_history = [Event(0, INVOKE, "read", "c", None), Event(0, OK, "read", "c", 0)]
    progress = RecordingProgress()
    CounterWorkload(ReadConsistency.LINEARIZABLE).check(counter_history, 10.0, progress)
    assert progress.phases() == ["check counter"]


def test_a_session_anomaly_is_reported_with_its_timeline() -> None:
    history = [
        Event(0, INVOKE, "write", KEY, 1, 0), Event(0, OK, "write", KEY, 1, 1, revision=5),
        Event(0, INVOKE, "read", KEY, None, 2), Event(0, OK, "read", KEY, None, 3, revision=0),
    ]  # fmt: skip
    outcomes = RegisterWorkload(1, ReadConsistency.SESSION).check(history, 10.0, RecordingProgress())
    session = next(outcome for outcome in outcomes if outcome.checker == "session")
    assert session.validity is Validity.INVALID
    assert session.summary == "1 anomaly: read-your-writes 1; first read-your-writes on key jepsen/register/0"
    assert session.details["anomalies"] == {"read-your-writes": 1}
    assert session.timeline_html is not None and 'class="culprit"' in session.timeline_html


def test_run_progress_counts_outcomes_and_faults_by_nemesis() -> None:
    clock = RunClock()
    recorder = HistoryRecorder(io.StringIO(), clock)
    nemesis_log = NemesisLog(io.StringIO(), clock.now_ns)
    assert load_status(recorder, nemesis_log) == "0 ok, 0 fail, 0 info · faults: none yet"
    for outcome in (OK, OK, FAIL, EventType.INFO):
        recorder.invoke(1, Invocation("read", KEY, None))
        recorder.complete(1, Invocation("read", KEY, None), Completion(outcome))
    nemesis_log.record(EventPhase.FAULT, NemesisKind.KILL, "kill node 1", [1])
    nemesis_log.record(EventPhase.HEAL, NemesisKind.KILL, "restart node 1", [1])
    nemesis_log.record(EventPhase.FAULT, NemesisKind.PARTITION, "isolate node 2", [2])
    assert load_status(recorder, nemesis_log) == "2 ok, 1 fail, 1 info · faults: kill 1, partition 1"


async def test_run_phase_reports_time_operations_and_faults_until_stopped() -> None:
    progress = RecordingProgress()
    clock = RunClock()
    stop = asyncio.Event()
    recorder, nemesis_log = HistoryRecorder(io.StringIO(), clock), NemesisLog(io.StringIO(), clock.now_ns)
    # Started long ago: the seconds reported stop at the length of the run.
    reporter = asyncio.create_task(_report_load(progress, recorder, nemesis_log, started=time.monotonic() - 100,
                                                time_s=30.0, stop=stop))  # fmt: skip
    await asyncio.sleep(0)  # its first report, then it waits for the next second or the stop
    stop.set()
    await asyncio.wait_for(reporter, timeout=10)
    assert [(u.completed, u.text) for u in progress.updates()] == [(30.0, "0 ok, 0 fail, 0 info · faults: none yet")]


@pytest.mark.parametrize(("workload", "nemeses", "refusal"), [
    ("lock", (), "worker processes do not sign in"),
    ("register", (NemesisKind.MEMBERSHIP,), "certificate of its own"),
])
def test_a_secure_run_refuses_what_it_cannot_secure(tmp_path: Path, workload: str, nemeses: tuple[NemesisKind, ...],
                                                    refusal: str) -> None:
    config = RunConfig(workload=workload, nemeses=nemeses, time_s=1, out_dir=tmp_path, secure=True)
    with pytest.raises(ValueError, match=refusal):
        build_workload(config)
    assert isinstance(build_workload(replace(config, workload="register", nemeses=())), RegisterWorkload)
