"""The session and staleness checkers on hand-made histories that must pass and must fail, and on
generated executions of stores that keep (or break) the guarantees."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore.jepsen.checker import Validity, Verdict, check
from kvstore.jepsen.guarantees import (
    AnomalyKind,
    GuaranteeResult,
    check_guarantee,
    check_session,
    check_staleness,
)
from kvstore.jepsen.history import Event, EventType, HistoryError, Operation, pair_operations
from kvstore.jepsen.models import CasRegisterModel
from tests.fakes.progress import RecordingProgress

INVOKE, OK, FAIL, INFO = EventType.INVOKE, EventType.OK, EventType.FAIL, EventType.INFO
MS = 1_000_000  # history times are nanoseconds


def invoke(process: int, f: str, value: object = None, *, key: str = "k", at: int | None = None,
           max_ms: int | None = None) -> Event:  # fmt: skip
    return Event(process, INVOKE, f, key, value, at, max_staleness_ms=max_ms)


def done(process: int, f: str, value: object = None, *, key: str = "k", rev: int | None = None,
         at: int | None = None, stale_ms: int | None = None, outcome: EventType = OK) -> Event:  # fmt: skip
    return Event(process, outcome, f, key, value, at, revision=rev, staleness_ms=stale_ms)


def operations(*events: Event) -> list[Operation]:
    return pair_operations([dataclasses.replace(event, line=line) for line, event in enumerate(events, start=1)])


def kinds(result: GuaranteeResult) -> list[AnomalyKind]:
    return [anomaly.kind for anomaly in result.anomalies]


# --- session guarantees -----------------------------------------------------------------------------


def test_a_process_that_sees_its_own_writes_in_order_is_valid_even_when_not_linearizable() -> None:
    ops = operations(
        invoke(0, "write", 1), done(0, "write", 1, rev=5),
        invoke(0, "read"), done(0, "read", 1, rev=5),
        # Another process may still read the older (absent) version: no session promised it more.
        invoke(1, "read"), done(1, "read", None, rev=0),
        invoke(0, "cas", (1, 2)), done(0, "cas", (1, 2), rev=8),
        invoke(0, "read"), done(0, "read", 2, rev=8),
    )  # fmt: skip
    result = check_session(ops)
    assert result.validity is Validity.VALID and result.anomalies == ()
    assert (result.keys_total, result.keys_checked, result.operations_checked) == (1, 1, 5)
    assert check(ops, CasRegisterModel()).verdict is Verdict.NOT_LINEARIZABLE


def test_read_older_than_the_process_own_write_breaks_read_your_writes() -> None:
    ops = operations(
        invoke(0, "write", 1), done(0, "write", 1, rev=5),
        invoke(1, "write", 2), done(1, "write", 2, rev=6),
        invoke(0, "read"), done(0, "read", None, rev=0),
    )  # fmt: skip
    result = check_session(ops)
    assert result.validity is Validity.INVALID
    (anomaly,) = result.anomalies
    assert anomaly.kind is AnomalyKind.READ_YOUR_WRITES
    assert anomaly.culprit == ops[2] and anomaly.window == (ops[0], ops[2]) and anomaly.key == "k"
    assert "read revision 0 after its own write 1 was applied at revision 5" in anomaly.explanation
    assert "lines 5-6" in anomaly.explanation


def test_reading_an_older_version_than_before_breaks_monotonic_reads() -> None:
    ops = operations(
        invoke(0, "read"), done(0, "read", 3, rev=7),
        invoke(0, "read"), done(0, "read", 3, rev=7),
        invoke(0, "read"), done(0, "read", 2, rev=4),
    )  # fmt: skip
    result = check_session(ops)
    assert kinds(result) == [AnomalyKind.MONOTONIC_READS]
    assert result.anomalies[0].window == (ops[0], ops[2])  # the first read of revision 7 set the floor


def test_writes_applied_out_of_their_process_order_break_monotonic_writes() -> None:
    ops = operations(
        invoke(0, "write", 1), done(0, "write", 1, rev=9),
        invoke(0, "write", 2), done(0, "write", 2, rev=6),
    )  # fmt: skip
    result = check_session(ops)
    assert kinds(result) == [AnomalyKind.MONOTONIC_WRITES]
    assert "write 2 took effect at revision 6, not after its earlier write 1 at revision 9" in (
        result.anomalies[0].explanation
    )


def test_floors_are_per_process_and_per_key() -> None:
    ops = operations(
        invoke(1, "write", 1), done(1, "write", 1, rev=9),
        invoke(0, "read"), done(0, "read", None, rev=0),  # process 1's write is not process 0's
        invoke(1, "read", key="other"), done(1, "read", None, key="other", rev=0),  # nor key k's revision
    )  # fmt: skip
    assert check_session(ops).validity is Validity.VALID


def test_failed_and_unknown_operations_set_no_floor() -> None:
    ops = operations(
        invoke(0, "cas", (4, 5)), done(0, "cas", (4, 5), outcome=FAIL),
        invoke(0, "read"), done(0, "read", None, rev=0),
        invoke(1, "write", 3), done(1, "write", 3, outcome=INFO),
    )  # fmt: skip
    assert check_session(ops).validity is Validity.VALID


def test_every_anomaly_is_listed_in_history_order() -> None:
    ops = operations(
        invoke(0, "write", 1, key="b"), done(0, "write", 1, key="b", rev=5),
        invoke(1, "read", key="a"), done(1, "read", 1, key="a", rev=8),
        invoke(1, "read", key="a"), done(1, "read", None, key="a", rev=0),
        invoke(0, "read", key="b"), done(0, "read", None, key="b", rev=0),
    )  # fmt: skip
    result = check_session(ops)
    assert kinds(result) == [AnomalyKind.MONOTONIC_READS, AnomalyKind.READ_YOUR_WRITES]
    assert [anomaly.key for anomaly in result.anomalies] == ["a", "b"]


def test_history_without_revisions_cannot_be_checked() -> None:
    ops = operations(invoke(0, "write", 1), done(0, "write", 1), invoke(0, "read"), done(0, "read", 1))
    result = check_session(ops)
    assert result.validity is Validity.UNKNOWN
    assert result.reason.startswith("cannot check: the write of process 0 (lines 1-2) has no revision")


def test_operations_outside_the_register_models_are_an_input_error() -> None:
    with pytest.raises(HistoryError, match="operation 'add' cannot be checked on revisions") as caught:
        check_session(operations(invoke(0, "read"), done(0, "read", rev=0), invoke(0, "add", 1)))
    assert caught.value.line == 3


def stepping_clock(*readings: float) -> Callable[[], float]:
    values = iter(readings)
    return lambda: next(values)


def test_time_out_gives_unknown_after_the_keys_that_finished() -> None:
    ops = operations(
        invoke(0, "read", key="a"), done(0, "read", key="a", rev=0),
        invoke(0, "read", key="b"), done(0, "read", key="b", rev=0),
    )  # fmt: skip
    # start, before key a, before key b (past the deadline), end
    result = check_session(ops, timeout=1.0, clock=stepping_clock(0.0, 0.5, 1.5, 1.6))
    assert result.validity is Validity.UNKNOWN and result.reason == "timed out after 1s"
    assert (result.keys_checked, result.keys_total) == (1, 2)


def test_progress_counts_keys_of_the_total() -> None:
    progress = RecordingProgress()
    ops = operations(
        invoke(0, "read", key="a"), done(0, "read", key="a", rev=0),
        invoke(0, "write", 1, key="b"), done(0, "write", 1, key="b", rev=3),
        invoke(0, "read", key="b"), done(0, "read", 1, key="b", rev=3),
    )  # fmt: skip
    check_session(ops, progress=progress)
    assert [(u.completed, u.total, u.text) for u in progress.updates()] == [
        (0, 2, "0 ops"), (1, 2, "1 ops"), (2, 2, "3 ops"),
    ]  # fmt: skip


# --- bounded staleness ------------------------------------------------------------------------------

# Version 1 (revision 3) is written by 100 ms and overwritten by version 2 (revision 4) at 200 ms.
TWO_VERSIONS = (
    invoke(0, "write", 1, at=0), done(0, "write", 1, rev=3, at=100 * MS),
    invoke(0, "write", 2, at=150 * MS), done(0, "write", 2, rev=4, at=200 * MS),
)  # fmt: skip


def stale_read(value: int, rev: int, invoked_ms: int, *, stale_ms: int | None = None,
               max_ms: int | None = None, process: int = 1) -> tuple[Event, Event]:  # fmt: skip
    return (
        invoke(process, "read", at=invoked_ms * MS, max_ms=max_ms),
        done(process, "read", value, rev=rev, at=(invoked_ms + 5) * MS, stale_ms=stale_ms),
    )


def test_a_read_of_the_current_version_is_within_a_zero_bound() -> None:
    result = check_staleness(operations(*TWO_VERSIONS, *stale_read(2, 4, invoked_ms=300, stale_ms=0)))
    assert result.validity is Validity.VALID
    assert (result.keys_checked, result.operations_checked) == (1, 3)


def test_an_old_version_is_within_a_bound_that_reaches_back_to_when_it_was_current() -> None:
    # Overwritten at 200 ms; read invoked at 300 ms with a 150 ms bound may look back to 150 ms.
    ops = operations(*TWO_VERSIONS, *stale_read(1, 3, invoked_ms=300, stale_ms=150))
    assert check_staleness(ops).validity is Validity.VALID


def test_an_old_version_beyond_the_bound_is_reported_with_its_excess() -> None:
    ops = operations(*TWO_VERSIONS, *stale_read(1, 3, invoked_ms=300, stale_ms=40))
    result = check_staleness(ops)
    assert result.validity is Validity.INVALID
    (anomaly,) = result.anomalies
    assert anomaly.kind is AnomalyKind.STALE_READ
    assert anomaly.excess_ms == pytest.approx(60.0)  # overwritten at 200 ms, the bound allows 260 ms
    assert anomaly.culprit == ops[2] and anomaly.window == (ops[0], ops[1], ops[2])
    assert "write 2 (revision 4) had overwritten by 0.200s, 60.0 ms before" in anomaly.explanation


def test_a_write_still_in_flight_when_the_read_started_does_not_make_it_stale() -> None:
    ops = operations(
        invoke(0, "write", 1, at=0), done(0, "write", 1, rev=3, at=10 * MS),
        invoke(0, "write", 2, at=20 * MS),
        invoke(1, "read", at=30 * MS), done(1, "read", 1, rev=3, at=40 * MS, stale_ms=0),
        done(0, "write", 2, rev=4, at=50 * MS),
    )  # fmt: skip
    assert check_staleness(ops).validity is Validity.VALID


def test_an_absent_key_is_stale_once_a_write_completed_before_the_bound() -> None:
    ops = operations(*TWO_VERSIONS, *stale_read(None, 0, invoked_ms=300, stale_ms=100))  # type: ignore[arg-type]
    (anomaly,) = check_staleness(ops).anomalies
    assert anomaly.excess_ms == pytest.approx(100.0)  # absent until version 1 completed at 100 ms


def test_the_smaller_of_the_reported_and_the_requested_bound_holds() -> None:
    within_request = operations(*TWO_VERSIONS, *stale_read(1, 3, invoked_ms=300, stale_ms=50, max_ms=500))
    (anomaly,) = check_staleness(within_request).anomalies
    assert anomaly.kind is AnomalyKind.STALE_READ and anomaly.excess_ms == pytest.approx(50.0)
    requested_only = operations(*TWO_VERSIONS, *stale_read(1, 3, invoked_ms=300, max_ms=120))
    assert check_staleness(requested_only).validity is Validity.VALID


def test_a_reported_staleness_above_the_requested_one_is_an_anomaly() -> None:
    ops = operations(*TWO_VERSIONS, *stale_read(2, 4, invoked_ms=300, stale_ms=800, max_ms=500))
    (anomaly,) = check_staleness(ops).anomalies
    assert anomaly.kind is AnomalyKind.BOUND_ABOVE_REQUEST and anomaly.excess_ms == 300.0


def test_a_version_written_after_the_read_completed_is_from_the_future() -> None:
    ops = operations(
        invoke(1, "read", at=0), done(1, "read", 7, rev=9, at=10 * MS, stale_ms=0),
        invoke(0, "write", 7, at=30 * MS), done(0, "write", 7, rev=9, at=40 * MS),
    )  # fmt: skip
    (anomaly,) = check_staleness(ops).anomalies
    assert anomaly.kind is AnomalyKind.FUTURE_READ and anomaly.excess_ms == pytest.approx(20.0)
    assert anomaly.window == (ops[0], ops[1])


def test_the_worst_excess_comes_first() -> None:
    ops = operations(
        *TWO_VERSIONS,
        *stale_read(1, 3, invoked_ms=300, stale_ms=90, process=1),  # 10 ms too old
        *stale_read(1, 3, invoked_ms=600, stale_ms=100, process=2),  # 300 ms too old
    )
    result = check_staleness(ops)
    assert [round(anomaly.excess_ms) for anomaly in result.anomalies] == [300, 10]
    assert result.anomalies[0].culprit.process == 2


def test_reads_without_a_bound_are_not_held_to_one() -> None:
    ops = operations(
        *TWO_VERSIONS,
        *stale_read(1, 3, invoked_ms=9000),  # no bound: not a bounded-staleness read
        *stale_read(2, 4, invoked_ms=9000, stale_ms=0, process=2),
    )
    result = check_staleness(ops)
    assert result.validity is Validity.VALID and result.operations_checked == 4


def test_staleness_cannot_be_checked_without_bounds_revisions_or_times() -> None:
    no_bound = check_staleness(operations(*TWO_VERSIONS, *stale_read(1, 3, invoked_ms=300)))
    assert no_bound.validity is Validity.UNKNOWN and "no read carries a staleness bound" in no_bound.reason
    no_revision = operations(invoke(0, "write", 1, at=0), done(0, "write", 1, at=MS), *stale_read(1, 3, 5, stale_ms=0))
    assert check_staleness(no_revision).reason.startswith("cannot check: the write of process 0 (lines 1-2) has no revision")
    no_time = operations(invoke(0, "write", 1), done(0, "write", 1, rev=3), *stale_read(1, 3, 5, stale_ms=0))
    assert check_staleness(no_time).reason == "cannot check: the write of process 0 (lines 1-2) has no time"


def test_checkers_are_found_by_name() -> None:
    ops = operations(*TWO_VERSIONS, *stale_read(2, 4, invoked_ms=300, stale_ms=0))
    assert check_guarantee("session", ops).checker == "session"
    assert check_guarantee("staleness", ops).validity is Validity.VALID
    with pytest.raises(ValueError, match="unknown checker 'causal'"):
        check_guarantee("causal", ops)


# --- properties: stores that keep the guarantee pass; one broken read fails -------------------------


@dataclasses.dataclass(frozen=True)
class Execution:
    """A generated history and, for each of its bounded reads, the revisions it could have returned
    instead while still breaking the guarantee (none when every older version would keep it)."""

    events: list[Event]
    breaking_revisions: dict[int, list[int]]  # completion index -> revisions that break the guarantee


@st.composite
def executions(draw: st.DrawFn, guarantee: str) -> Execution:
    """Operations one after another over two keys, from three processes, on a store whose replicas
    lag: a write gets the next revision (of a log shared by the keys) and a read returns any
    version the guarantee allows: for "session" none older than the process has seen, for
    "staleness" one still current at some time within its bound before its invoke."""
    versions: dict[str, list[tuple[int, int]]] = {"a": [(0, 0)], "b": [(0, 0)]}  # (revision, completed at)
    floors: dict[tuple[int, str], int] = {}
    revision, now = 0, 0
    events: list[Event] = []
    breaking: dict[int, list[int]] = {}
    for process, key, is_write, duration, bound in draw(st.lists(st.tuples(
        st.integers(0, 2), st.sampled_from(["a", "b"]), st.booleans(), st.integers(1, 50), st.integers(0, 200),
    ), max_size=40)):  # fmt: skip
        invoked, now = now, now + duration * MS
        if is_write:
            revision += draw(st.integers(1, 3))
            versions[key].append((revision, now))
            events += [invoke(process, "write", revision, key=key, at=invoked),
                       done(process, "write", revision, key=key, rev=revision, at=now)]  # fmt: skip
            floors[(process, key)] = revision
            now += MS
            continue
        # When each version stopped being current: the completion of the next one.
        lifetimes = [(rev, (versions[key] + [(0, None)])[index + 1][1])
                     for index, (rev, _) in enumerate(versions[key])]  # fmt: skip
        if guarantee == "session":
            floor = floors.get((process, key), 0)
            allowed = [rev for rev, _ in lifetimes if rev >= floor]
            breaks = [rev for rev, _ in lifetimes if rev < floor]
        else:
            oldest = invoked - bound * MS
            allowed = [rev for rev, end in lifetimes if end is None or end > oldest]
            breaks = [rev for rev, end in lifetimes if end is not None and end <= oldest]
        read = draw(st.sampled_from(allowed))
        floors[(process, key)] = max(floors.get((process, key), 0), read)
        breaking[len(events) + 1] = breaks
        events += [invoke(process, "read", key=key, at=invoked),
                   done(process, "read", read, key=key, rev=read, at=now, stale_ms=bound)]  # fmt: skip
        now += MS
    return Execution(events, breaking)


@settings(max_examples=200, deadline=None)
@given(executions("session"))
def test_stores_that_keep_sessions_pass_the_session_checker(execution: Execution) -> None:
    assert check_session(operations(*execution.events)).validity is Validity.VALID


@settings(max_examples=200, deadline=None)
@given(executions("staleness"))
def test_stores_that_keep_their_staleness_bound_pass_the_staleness_checker(execution: Execution) -> None:
    has_reads = bool(execution.breaking_revisions)
    expected = Validity.VALID if has_reads else Validity.UNKNOWN  # no bounded read: nothing to check
    assert check_staleness(operations(*execution.events)).validity is expected


@pytest.mark.parametrize("guarantee", ["session", "staleness"])
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_one_read_of_a_version_the_guarantee_forbids_is_caught(guarantee: str, data: st.DataObject) -> None:
    execution = data.draw(executions(guarantee))
    candidates = {index: revisions for index, revisions in execution.breaking_revisions.items() if revisions}
    if not candidates:
        return
    index = data.draw(st.sampled_from(sorted(candidates)))
    events = list(execution.events)
    events[index] = dataclasses.replace(events[index], revision=data.draw(st.sampled_from(candidates[index])))
    ops = operations(*events)
    result = check_guarantee(guarantee, ops)
    assert result.validity is Validity.INVALID
    assert index + 1 in {anomaly.culprit.complete_line for anomaly in result.anomalies}
