"""The linearizability checker on hand-made histories of every model, and a property test."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore.jepsen.checker import CheckResult, Verdict, check
from kvstore.jepsen.history import Event, EventType, HistoryError, Operation, Value, pair_operations
from kvstore.jepsen.models import Absent, CasRegisterModel, Free, Model, MutexModel, RegisterModel, SetModel
from tests.fakes.progress import RecordingProgress

INVOKE, OK, FAIL, INFO = EventType.INVOKE, EventType.OK, EventType.FAIL, EventType.INFO


def history(
    *events: tuple[int, EventType, str, Value] | tuple[int, EventType, str, Value, Value],
) -> list[Operation]:
    """Operations from (process, type, f, value[, key]) tuples; line numbers count from 1."""
    return pair_operations(
        [
            Event(process, event_type, f, rest[0] if rest else None, value, line=line)
            for line, (process, event_type, f, value, *rest) in enumerate(events, start=1)
        ]
    )


def verdict(operations: list[Operation], model: Model, initial: Value = None) -> Verdict:
    return check(operations, model, initial).verdict


REGISTER, CAS_REGISTER, SET, MUTEX = RegisterModel(), CasRegisterModel(), SetModel(), MutexModel()


# --- register -------------------------------------------------------------------------------------


def test_sequential_register_history_is_linearizable() -> None:
    operations = history(
        (0, INVOKE, "read", None), (0, OK, "read", None),
        (0, INVOKE, "write", 1), (0, OK, "write", 1),
        (1, INVOKE, "read", None), (1, OK, "read", 1),
    )  # fmt: skip
    assert verdict(operations, REGISTER) is Verdict.LINEARIZABLE


def test_stale_read_after_completed_write_is_reported_with_its_window() -> None:
    operations = history(
        (0, INVOKE, "write", 1), (0, OK, "write", 1),
        (1, INVOKE, "write", 2), (1, OK, "write", 2),
        (2, INVOKE, "read", None), (2, OK, "read", 1),
    )  # fmt: skip
    result = check(operations, REGISTER)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert result.culprit == operations[2]
    assert result.window == (operations[1], operations[2])
    assert [(stuck.state, stuck.after) for stuck in result.states_tried] == [(2, operations[1])]


def test_read_concurrent_with_a_write_may_see_either_value() -> None:
    for seen in (None, 1):
        operations = history(
            (0, INVOKE, "write", 1),
            (1, INVOKE, "read", None), (1, OK, "read", seen),
            (0, OK, "write", 1),
        )  # fmt: skip
        assert verdict(operations, REGISTER) is Verdict.LINEARIZABLE


def test_read_cannot_go_back_in_time_between_two_concurrent_reads() -> None:
    # The write overlaps both reads, but once the first read saw 1 the later one cannot see null.
    operations = history(
        (0, INVOKE, "write", 1),
        (1, INVOKE, "read", None), (1, OK, "read", 1),
        (2, INVOKE, "read", None), (2, OK, "read", None),
        (0, OK, "write", 1),
    )  # fmt: skip
    result = check(operations, REGISTER)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert result.culprit == operations[2]
    assert operations[0] in result.window


def test_lost_write_is_not_linearizable() -> None:
    operations = history(
        (0, INVOKE, "write", 1), (0, OK, "write", 1),
        (1, INVOKE, "read", None), (1, OK, "read", None),
    )  # fmt: skip
    result = check(operations, REGISTER)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert [stuck.state for stuck in result.states_tried] == [1]


def test_timed_out_write_that_was_observed_is_taken_as_applied() -> None:
    operations = history(
        (0, INVOKE, "write", 1), (0, INFO, "write", 1),
        (1, INVOKE, "read", None), (1, OK, "read", 1),
    )  # fmt: skip
    assert verdict(operations, REGISTER) is Verdict.LINEARIZABLE


def test_timed_out_write_cannot_take_effect_before_its_invoke() -> None:
    operations = history(
        (1, INVOKE, "read", None), (1, OK, "read", 1),
        (0, INVOKE, "write", 1), (0, INFO, "write", 1),
    )  # fmt: skip
    assert verdict(operations, REGISTER) is Verdict.NOT_LINEARIZABLE


def test_never_completed_invoke_counts_as_outcome_unknown() -> None:
    operations = history((0, INVOKE, "write", 1), (1, INVOKE, "read", None), (1, OK, "read", 1))
    assert verdict(operations, REGISTER) is Verdict.LINEARIZABLE


def test_failed_operations_are_dropped() -> None:
    operations = history(
        (0, INVOKE, "write", 1), (0, FAIL, "write", 1),
        (1, INVOKE, "read", None), (1, OK, "read", None),
    )  # fmt: skip
    assert verdict(operations, REGISTER) is Verdict.LINEARIZABLE
    result = check(
        history(
            (0, INVOKE, "write", 1), (0, FAIL, "write", 1), (1, INVOKE, "read", None), (1, OK, "read", 1)
        ),
        REGISTER,
    )
    assert result.verdict is Verdict.NOT_LINEARIZABLE


def test_initial_value_is_what_the_first_read_must_see() -> None:
    operations = history((0, INVOKE, "read", None), (0, OK, "read", 0))
    assert verdict(operations, REGISTER, initial=0) is Verdict.LINEARIZABLE
    assert verdict(operations, REGISTER) is Verdict.NOT_LINEARIZABLE


# --- cas-register ---------------------------------------------------------------------------------


def test_timed_out_cas_that_can_never_apply_is_taken_as_never_applied() -> None:
    operations = history(
        (0, INVOKE, "write", 2), (0, OK, "write", 2),
        (1, INVOKE, "cas", (0, 1)), (1, INFO, "cas", (0, 1)),
        (0, INVOKE, "read", None), (0, OK, "read", 2),
    )  # fmt: skip
    assert verdict(operations, CAS_REGISTER, initial=0) is Verdict.LINEARIZABLE


def test_concurrent_cas_chain_is_linearizable() -> None:
    operations = history(
        (0, INVOKE, "cas", (0, 1)),
        (1, INVOKE, "cas", (1, 2)),
        (1, OK, "cas", (1, 2)),
        (0, OK, "cas", (0, 1)),
        (2, INVOKE, "read", None), (2, OK, "read", 2),
    )  # fmt: skip
    assert verdict(operations, CAS_REGISTER, initial=0) is Verdict.LINEARIZABLE


def test_two_concurrent_cas_from_the_same_value_cannot_both_succeed() -> None:
    operations = history(
        (0, INVOKE, "cas", (0, 1)),
        (1, INVOKE, "cas", (0, 2)),
        (1, OK, "cas", (0, 2)),
        (0, OK, "cas", (0, 1)),
    )  # fmt: skip
    result = check(operations, CAS_REGISTER, initial=0)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert result.culprit == operations[0]
    assert set(result.window) == set(operations)
    assert [(stuck.state, stuck.after) for stuck in result.states_tried] == [(2, operations[1])]


def test_cas_from_null_matches_an_empty_register() -> None:
    operations = history(
        (0, INVOKE, "cas", (None, 1)),
        (0, OK, "cas", (None, 1)),
        (0, INVOKE, "read", None),
        (0, OK, "read", 1),
    )
    assert verdict(operations, CAS_REGISTER) is Verdict.LINEARIZABLE


def test_operation_outside_the_model_is_an_input_error_with_its_line() -> None:
    with pytest.raises(HistoryError, match="^line 1: operation 'cas' is not part of the register model"):
        check(history((0, INVOKE, "cas", (0, 1)), (0, OK, "cas", (0, 1))), REGISTER)
    with pytest.raises(HistoryError, match=r"^line 1: cas value must be \[expected, new\]"):
        check(history((0, INVOKE, "cas", 5), (0, OK, "cas", 5)), CAS_REGISTER)


# --- set ------------------------------------------------------------------------------------------


def test_set_reads_see_every_completed_add() -> None:
    operations = history(
        (0, INVOKE, "add", 1), (0, OK, "add", 1),
        (1, INVOKE, "add", 2),
        (2, INVOKE, "read", None), (2, OK, "read", (1,)),
        (1, OK, "add", 2),
        (2, INVOKE, "read", None), (2, OK, "read", (2, 1)),
    )  # fmt: skip
    assert verdict(operations, SET) is Verdict.LINEARIZABLE


def test_set_lost_element_is_not_linearizable() -> None:
    operations = history(
        (0, INVOKE, "add", 1), (0, OK, "add", 1),
        (1, INVOKE, "add", 2), (1, OK, "add", 2),
        (2, INVOKE, "read", None), (2, OK, "read", (1,)),
    )  # fmt: skip
    result = check(operations, SET)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert [stuck.state for stuck in result.states_tried] == [frozenset({1, 2})]


def test_set_initial_value_is_a_list_and_must_be_one() -> None:
    operations = history((0, INVOKE, "read", None), (0, OK, "read", (7,)))
    assert verdict(operations, SET, initial=(7,)) is Verdict.LINEARIZABLE
    with pytest.raises(ValueError, match="initial value of a set must be a list"):
        check(operations, SET, initial=7)


# --- mutex ----------------------------------------------------------------------------------------


def test_mutex_handed_over_is_linearizable() -> None:
    operations = history(
        (0, INVOKE, "acquire", None), (0, OK, "acquire", None),
        (1, INVOKE, "acquire", None),
        (0, INVOKE, "release", None), (0, OK, "release", None),
        (1, OK, "acquire", None),
    )  # fmt: skip
    assert verdict(operations, MUTEX) is Verdict.LINEARIZABLE


def test_mutex_double_acquire_is_not_linearizable() -> None:
    operations = history(
        (0, INVOKE, "acquire", None), (0, OK, "acquire", None),
        (1, INVOKE, "acquire", None), (1, OK, "acquire", None),
    )  # fmt: skip
    result = check(operations, MUTEX)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert result.culprit == operations[1]
    assert [stuck.state for stuck in result.states_tried] == [0]


def test_mutex_release_by_a_process_not_holding_it_is_not_linearizable() -> None:
    operations = history(
        (0, INVOKE, "acquire", None), (0, OK, "acquire", None),
        (1, INVOKE, "release", None), (1, OK, "release", None),
    )  # fmt: skip
    assert verdict(operations, MUTEX) is Verdict.NOT_LINEARIZABLE


def test_mutex_acquire_with_unknown_outcome_may_never_have_happened() -> None:
    operations = history(
        (0, INVOKE, "acquire", None), (0, INFO, "acquire", None),
        (1, INVOKE, "acquire", None), (1, OK, "acquire", None),
    )  # fmt: skip
    assert verdict(operations, MUTEX) is Verdict.LINEARIZABLE


def test_model_states_are_never_none() -> None:
    assert REGISTER.init(None) is Absent.ABSENT
    assert MUTEX.init(None) is Free.FREE


# --- keys, time-outs ------------------------------------------------------------------------------


def test_keys_are_checked_separately_and_the_first_illegal_one_is_reported() -> None:
    operations = history(
        (0, INVOKE, "write", 1, "a"), (0, OK, "write", 1, "a"),
        (1, INVOKE, "read", None, "b"), (1, OK, "read", 1, "b"),
        (2, INVOKE, "read", None, "a"), (2, OK, "read", 1, "a"),
        (1, INVOKE, "read", None, "c"), (1, OK, "read", 5, "c"),
    )  # fmt: skip
    result = check(operations, REGISTER)
    assert (result.verdict, result.key) == (Verdict.NOT_LINEARIZABLE, "b")
    assert (result.keys_checked, result.keys_total) == (2, 3)


def test_same_value_on_another_key_does_not_help() -> None:
    operations = history(
        (0, INVOKE, "write", 1, "a"), (0, OK, "write", 1, "a"),
        (1, INVOKE, "read", None, "b"), (1, OK, "read", 1, "b"),
    )  # fmt: skip
    assert verdict(operations, REGISTER) is Verdict.NOT_LINEARIZABLE


def stepping_clock(*readings: float) -> Callable[[], float]:
    """A clock that returns ``readings`` one after the other, then keeps returning the last."""
    values = itertools.chain(readings, itertools.repeat(readings[-1]))
    return lambda: next(values)


def test_time_out_gives_an_unknown_verdict_after_the_keys_that_finished() -> None:
    operations = history(
        (0, INVOKE, "write", 1, "a"), (0, OK, "write", 1, "a"),
        (0, INVOKE, "read", None, "b"), (0, OK, "read", 7, "b"),
    )  # fmt: skip
    # start, key a, key b: the deadline passes between the two keys.
    result = check(operations, REGISTER, timeout=10, clock=stepping_clock(0, 1, 11))
    assert result.verdict is Verdict.UNKNOWN
    assert (result.keys_checked, result.operations_checked, result.timeout) == (1, 1, 10)


def test_without_time_out_the_clock_only_measures() -> None:
    operations = history((0, INVOKE, "write", 1), (0, OK, "write", 1))
    result = check(operations, REGISTER, clock=stepping_clock(100, 1000))
    assert result.verdict is Verdict.LINEARIZABLE
    assert result.elapsed == 900


def test_shortest_failing_prefix_is_found_in_a_long_history() -> None:
    events: list[tuple[int, EventType, str, Value]] = []
    for value in range(50):
        events += [(0, INVOKE, "write", value), (0, OK, "write", value)]
        events += [(1, INVOKE, "read", None), (1, OK, "read", value if value != 30 else 29)]
    operations = history(*events)
    result = check(operations, REGISTER)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert result.culprit is not None and (result.culprit.result, result.culprit.complete_line) == (29, 124)
    assert [op.describe() for op in result.window] == ["write 30", "read → 29"]


# --- property: real executions are linearizable, a corrupted read is not ----------------------------


@st.composite
def executions(draw: st.DrawFn) -> list[Event]:
    """A history of a real register: each client invokes, takes effect on the register at a later
    step and completes later still, so the real order is consistent with every interval. Clients
    may crash (info) before or after taking effect and come back as a new process."""
    processes = draw(st.integers(1, 4))
    register: Value = None
    clients: list[dict[str, object]] = [{"process": process, "phase": "idle"} for process in range(processes)]
    next_process = processes
    events: list[Event] = []
    for choice in draw(st.lists(st.tuples(st.integers(0, processes - 1), st.integers(0, 9)), max_size=60)):
        client_number, dice = choice
        client = clients[client_number]
        process, phase = client["process"], client["phase"]
        assert isinstance(process, int)
        if phase == "idle":
            client["f"], client["argument"] = ("read", None) if dice < 5 else ("write", dice)
            events.append(Event(process, INVOKE, str(client["f"]), None, client["argument"]))
            client["phase"] = "invoked"
        elif dice == 0:
            events.append(Event(process, INFO, str(client["f"]), None, client["argument"]))
            clients[client_number] = {"process": next_process, "phase": "idle"}
            next_process += 1
        elif phase == "invoked":
            if client["f"] == "write":
                register = client["argument"]
            client["result"] = register if client["f"] == "read" else client["argument"]
            client["phase"] = "applied"
        else:
            events.append(Event(process, OK, str(client["f"]), None, client["result"]))
            client["phase"] = "idle"
    return [dataclasses.replace(event, line=line) for line, event in enumerate(events, start=1)]


@settings(max_examples=300, deadline=None)
@given(executions())
def test_real_executions_are_linearizable(events: list[Event]) -> None:
    assert check(pair_operations(events), REGISTER).verdict is Verdict.LINEARIZABLE


@settings(max_examples=300, deadline=None)
@given(executions(), st.data())
def test_a_read_of_a_never_written_value_is_not_linearizable(
    events: list[Event], data: st.DataObject
) -> None:
    read_completions = [index for index, event in enumerate(events) if event.type is OK and event.f == "read"]
    if not read_completions:
        return
    corrupted = data.draw(st.sampled_from(read_completions))
    events[corrupted] = dataclasses.replace(events[corrupted], value="never written")
    result: CheckResult = check(pair_operations(events), REGISTER)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert result.culprit is not None and result.culprit.complete_line == corrupted + 1


def test_progress_counts_keys_as_they_finish_and_stops_at_the_violation() -> None:
    progress = RecordingProgress()
    operations = history(
        (0, INVOKE, "write", 1, "a"), (0, OK, "write", 1, "a"),
        (1, INVOKE, "write", 1, "b"), (1, OK, "write", 1, "b"),
        (2, INVOKE, "read", None, "b"), (2, OK, "read", 2, "b"),
        (3, INVOKE, "read", None, "c"), (3, OK, "read", None, "c"),
    )  # fmt: skip
    assert check(operations, REGISTER, progress=progress).verdict is Verdict.NOT_LINEARIZABLE
    assert [(u.completed, u.total, u.text) for u in progress.updates()] == [
        (0, 3, "0 ops"), (1, 3, "1 ops"), (2, 3, "3 ops"),
    ]  # fmt: skip
