"""Linearizability checker: Wing–Gong search with Lowe's memoisation, one key at a time.

Linearizability is compositional (P-compositionality): a history is linearizable exactly when the
sub-history of every key is, so keys are checked separately, in order of first appearance, and the
check stops at the first key that cannot be linearized.

The search walks a doubly-linked list of call and return entries in history order. At a call it
tries to linearize that operation now (the model accepts it in the current state); at a return
whose operation has not been linearized yet it backtracks. Every (set of linearized operations,
model state) configuration is explored at most once: the set is an int bitset, the state hashable.
Operations of unknown outcome (``info``) have no return entry, so they may be linearized anywhere
after their invoke or never; the search succeeds once every ``ok`` operation is linearized.
``fail`` operations certainly did not happen and are dropped.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from kvstore.jepsen.history import EventType, HistoryError, Operation, Value
from kvstore.jepsen.models import Model, State
from kvstore.progress import SILENT, Progress

# How many search steps run between two looks at the clock: often enough to stop close to the
# deadline, rarely enough that reading the clock costs nothing measurable.
_STEPS_PER_CLOCK_CHECK = 1024
_WHOLE_HISTORY = sys.maxsize


class Validity(StrEnum):
    """Any checker's verdict on a history (this module's ``Verdict`` is linearizability's own)."""

    VALID = "valid"
    INVALID = "invalid"
    UNKNOWN = "unknown"


class Verdict(StrEnum):
    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not linearizable"
    UNKNOWN = "unknown"

    @property
    def validity(self) -> Validity:
        if self is Verdict.LINEARIZABLE:
            return Validity.VALID
        return Validity.INVALID if self is Verdict.NOT_LINEARIZABLE else Validity.UNKNOWN


@dataclass(frozen=True, slots=True)
class StuckState:
    """A model state in which the culprit could not take effect, and the operation linearized just
    before reaching it (None when it is the initial state)."""

    state: State
    after: Operation | None


@dataclass(frozen=True, slots=True)
class CheckResult:
    verdict: Verdict
    elapsed: float
    keys_total: int
    keys_checked: int  # keys whose check finished, the one with a violation included
    operations_checked: int  # operations (fail ones excluded) of those keys
    timeout: float | None = None
    # For a violation: the key, the operation that cannot be linearized in the shortest failing
    # prefix of that key's history, the operations worth looking at around it (in invoke order),
    # and the states the search was in when it got stuck on the culprit.
    key: Value = None
    culprit: Operation | None = None
    window: tuple[Operation, ...] = ()
    states_tried: tuple[StuckState, ...] = ()


class _TimedOut(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Budget:
    clock: Callable[[], float]
    deadline: float | None

    def check(self) -> None:
        if self.deadline is not None and self.clock() >= self.deadline:
            raise _TimedOut


@dataclass(frozen=True, slots=True)
class _Violation:
    culprit: Operation | None
    window: tuple[Operation, ...]
    states_tried: tuple[StuckState, ...]


def check(
    operations: Sequence[Operation],
    model: Model,
    initial: Value = None,
    *,
    timeout: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    progress: Progress = SILENT,
) -> CheckResult:
    """Check ``operations`` (from ``pair_operations``) against ``model``.

    Raises HistoryError when an operation does not fit the model and ValueError when ``initial``
    does not. With ``timeout`` (seconds, measured with ``clock``) the verdict may be UNKNOWN.
    Keys finished of the total go to ``progress.update`` as they finish.
    """
    start = clock()
    budget = _Budget(clock, None if timeout is None else start + timeout)
    initial_state = model.init(initial)
    operations_by_key: dict[Value, list[Operation]] = {}
    for op in operations:
        problem = model.invalid_operation(op)
        if problem is not None:
            raise HistoryError(op.invoke_line, problem)
        if op.outcome is not EventType.FAIL:
            operations_by_key.setdefault(op.key, []).append(op)

    def result(
        verdict: Verdict,
        keys_checked: int,
        operations_checked: int,
        key: Value = None,
        violation: _Violation | None = None,
    ) -> CheckResult:
        return CheckResult(
            verdict=verdict,
            elapsed=clock() - start,
            keys_total=len(operations_by_key),
            keys_checked=keys_checked,
            operations_checked=operations_checked,
            timeout=timeout,
            key=key,
            culprit=None if violation is None else violation.culprit,
            window=() if violation is None else violation.window,
            states_tried=() if violation is None else violation.states_tried,
        )

    operations_checked = 0
    report_keys_checked(progress, 0, len(operations_by_key), 0)
    for keys_checked, (key, key_operations) in enumerate(operations_by_key.items()):
        try:
            budget.check()
            violation = _check_key(key_operations, model, initial_state, budget)
        except _TimedOut:
            return result(Verdict.UNKNOWN, keys_checked, operations_checked)
        operations_checked += len(key_operations)
        report_keys_checked(progress, keys_checked + 1, len(operations_by_key), operations_checked)
        if violation is not None:
            return result(Verdict.NOT_LINEARIZABLE, keys_checked + 1, operations_checked, key, violation)
    return result(Verdict.LINEARIZABLE, len(operations_by_key), operations_checked)


def report_keys_checked(progress: Progress, keys_checked: int, keys_total: int, operations_checked: int) -> None:
    """How every checker reports its progress: keys done of the total, and operations."""
    progress.update(keys_checked, total=keys_total, detail=f"{operations_checked:,} ops")


def _check_key(
    key_operations: list[Operation], model: Model, initial_state: State, budget: _Budget
) -> _Violation | None:
    if _search(key_operations, model, initial_state, _WHOLE_HISTORY, budget) is None:
        return None
    try:
        return _narrow(key_operations, model, initial_state, budget)
    except _TimedOut:
        # The verdict is already certain; only the explanation ran out of time.
        return _Violation(culprit=None, window=(), states_tried=())


def _narrow(
    key_operations: list[Operation], model: Model, initial_state: State, budget: _Budget
) -> _Violation:
    """Find the shortest failing prefix of the key's history and explain where it gets stuck.

    Prefixes end at a completion; failing is monotone in the prefix length (a linearization of a
    longer prefix, cut after its last operation completed within the shorter one, linearizes the
    shorter one), so a binary search over completion positions finds the shortest.
    """
    completions = sorted(op.complete_index for op in key_operations if op.complete_index is not None)
    stuck_by_cut: dict[int, dict[State, Operation | None]] = {}

    def fails(cut: int) -> bool:
        stuck = _search(key_operations, model, initial_state, cut, budget)
        if stuck is not None:
            stuck_by_cut[cut] = stuck
        return stuck is not None

    low, high = 0, len(completions) - 1  # the whole history (cut at its last completion) fails
    while low < high:
        middle = (low + high) // 2
        if fails(completions[middle]):
            high = middle
        else:
            low = middle + 1
    cut = completions[high]
    if cut not in stuck_by_cut:
        fails(cut)
    stuck = stuck_by_cut[cut]
    culprit = next(op for op in key_operations if op.complete_index == cut)
    concurrent = [
        op
        for op in key_operations
        if op.invoke_index < cut
        and (op.complete_index is None or op.complete_index > culprit.invoke_index)
        and (op.complete_index is not None or op.f not in model.read_only_functions)
    ]
    window_ids = {op.id for op in concurrent} | {op.id for op in stuck.values() if op is not None}
    return _Violation(
        culprit=culprit,
        window=tuple(op for op in key_operations if op.id in window_ids),
        states_tried=tuple(StuckState(state, after) for state, after in stuck.items()),
    )


def _search(
    key_operations: list[Operation], model: Model, initial_state: State, cut: int, budget: _Budget
) -> dict[State, Operation | None] | None:
    """None when the prefix of the history up to position ``cut`` is linearizable.

    Otherwise the states (each with the operation linearized last) in which the search stood at
    the last return entry with that entry's operation still not linearized: the states in which
    the last-completing operation could not take effect.
    """
    read_only = model.read_only_functions
    operations: list[Operation] = []
    # Entries as (history position, operation number, is_call); an operation still pending at the
    # cut has no return entry, like an `info` one.
    entries: list[tuple[int, int, bool]] = []
    for op in key_operations:
        if op.invoke_index >= cut:
            break
        completes = op.complete_index is not None and op.complete_index <= cut
        if not completes and op.f in read_only:
            continue  # an unobserved read changes nothing
        number = len(operations)
        operations.append(op)
        entries.append((op.invoke_index, number, True))
        if completes:
            entries.append((op.complete_index, number, False))  # type: ignore[arg-type]
    entries.sort()

    # Entry i of the list is slot i + 1; slot 0 is the head and slot len + 1 the tail sentinel.
    size = len(entries)
    next_slot = list(range(1, size + 2)) + [size + 1]
    previous_slot = [0] + list(range(0, size + 1))
    operation_of = [0] * (size + 2)
    is_call = [False] * (size + 2)
    return_slot = [0] * (size + 2)  # call slot -> its return slot, 0 when it has none
    call_slot_of: dict[int, int] = {}
    for slot, (_, number, call) in enumerate(entries, start=1):
        operation_of[slot] = number
        is_call[slot] = call
        if call:
            call_slot_of[number] = slot
        else:
            return_slot[call_slot_of[number]] = slot
    last_return = max((slot for slot in range(1, size + 1) if not is_call[slot]), default=0)

    step = model.step
    seen: set[tuple[int, State]] = set()
    trail: list[tuple[int, State]] = []  # (call slot linearized, state before it)
    stuck: dict[State, Operation | None] = {}
    state = initial_state
    linearized = 0
    unlinearized_returns = sum(1 for slot in range(1, size + 1) if not is_call[slot])
    slot = next_slot[0]
    steps = 0
    while unlinearized_returns:
        steps += 1
        if steps % _STEPS_PER_CLOCK_CHECK == 0:
            budget.check()
        if is_call[slot]:
            op = operations[operation_of[slot]]
            new_state = step(state, op)
            if new_state is not None:
                new_linearized = linearized | (1 << operation_of[slot])
                configuration = (new_linearized, new_state)
                if configuration not in seen:
                    seen.add(configuration)
                    trail.append((slot, state))
                    state = new_state
                    linearized = new_linearized
                    # Lift the call and its return out of the list (dancing links).
                    next_slot[previous_slot[slot]] = next_slot[slot]
                    previous_slot[next_slot[slot]] = previous_slot[slot]
                    paired = return_slot[slot]
                    if paired:
                        next_slot[previous_slot[paired]] = next_slot[paired]
                        previous_slot[next_slot[paired]] = previous_slot[paired]
                        unlinearized_returns -= 1
                    slot = next_slot[0]
                    continue
            slot = next_slot[slot]
            continue
        # A return entry whose operation is not linearized: this branch is dead.
        if slot == last_return and state not in stuck:
            stuck[state] = operations[operation_of[trail[-1][0]]] if trail else None
        if not trail:
            return stuck
        slot, state = trail.pop()
        linearized &= ~(1 << operation_of[slot])
        # Put the return back before the call: the reverse of the order they were lifted in.
        paired = return_slot[slot]
        if paired:
            previous_slot[next_slot[paired]] = paired
            next_slot[previous_slot[paired]] = paired
            unlinearized_returns += 1
        previous_slot[next_slot[slot]] = slot
        next_slot[previous_slot[slot]] = slot
        slot = next_slot[slot]
    return None
