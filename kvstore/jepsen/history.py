"""Histories of a concurrent test: events, the operations they pair into, and the JSONL format.

A history is the list of events in the order they happened. Each line of a JSONL history is one
event, for example::

    {"process": 3, "type": "invoke", "f": "cas", "key": "k1", "value": [1, 2], "time": 123456789}

An ``invoke`` starts an operation; ``ok``, ``fail`` or ``info`` completes it. ``fail`` means the
operation certainly did not take effect, ``info`` that its outcome is unknown. A process has at most
one operation outstanding and never invokes again after an ``info``. Values are frozen on the way in
(JSON arrays become tuples) so that checkers can hash them.

A ``fail`` or ``info`` completion may carry ``error``: why, as text (a client error as its class
name and message, e.g. ``StaleFencingTokenError: fencing token 7 is older than ...``).

Optional fields, for the checkers of guarantees weaker than linearizability (``guarantees.py``):
``revision`` on an ``ok`` completion is the version the operation wrote or read (for a write, the
revision it was applied at; for a read, the revision of the version it returned, 0 when the key did
not exist); ``staleness_ms`` on a read's completion is the staleness bound the server reported, and
``max_staleness_ms`` on a read's invoke the bound the client asked for. Histories without them are
still valid; checkers that need them say they cannot check.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, TypeAlias

# A frozen value: None, bool, int, float, str, or tuples/frozensets of frozen values.
Value: TypeAlias = Hashable


class EventType(StrEnum):
    INVOKE = "invoke"
    OK = "ok"
    FAIL = "fail"
    INFO = "info"


class HistoryError(ValueError):
    """A history that cannot be read or does not follow the rules above."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message

    def __str__(self) -> str:
        return self.message if self.line is None else f"line {self.line}: {self.message}"


@dataclass(frozen=True, slots=True)
class Event:
    process: int
    type: EventType
    f: str
    key: Value = None
    value: Value = None
    time: int | None = None
    revision: int | None = None
    staleness_ms: int | None = None
    max_staleness_ms: int | None = None
    # Why a fail or info completion failed, and where the event came from (for error messages):
    # neither is part of the event's identity.
    error: str | None = field(default=None, compare=False)
    line: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Operation:
    """An invoke paired with its completion.

    ``argument`` is the invoke's value (what was written, ``[expected, new]`` of a cas...);
    ``result`` is the ``ok`` completion's value (what a read returned) and None otherwise;
    ``error`` the ``fail`` or ``info`` completion's error, when it gave one.
    Positions are indexes into the history's event list; ``complete_index`` is None when the
    outcome is unknown (an ``info`` completion, or no completion at all). ``revision`` and
    ``staleness_ms`` come from an ``ok`` completion, ``max_staleness_ms`` from the invoke.
    """

    id: int
    process: int
    f: str
    key: Value
    argument: Value
    result: Value
    outcome: EventType
    invoke_index: int
    complete_index: int | None
    invoke_line: int
    complete_line: int | None
    invoke_time: int | None = None
    complete_time: int | None = None
    revision: int | None = None
    staleness_ms: int | None = None
    max_staleness_ms: int | None = None
    error: str | None = None

    def describe(self) -> str:
        """``write 3``, ``read → 3``, ``cas [1, 2]``: what the operation did, for reports."""
        parts = [self.f]
        if self.argument is not None:
            parts.append(render_value(self.argument))
        # A completion usually echoes the argument; show the result when it says more, and always
        # for a read, whose null result means "absent".
        if self.outcome is EventType.OK and (
            self.f == "read" or (self.result is not None and self.result != self.argument)
        ):
            parts.append(f"→ {render_value(self.result)}")
        return " ".join(parts)


def freeze(value: Any, line: int | None = None) -> Value:
    """Turn a decoded JSON value into a hashable one (arrays become tuples)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return tuple(freeze(item, line) for item in value)
    if isinstance(value, frozenset):
        return value
    raise HistoryError(line, f"unsupported value {value!r}: use null, booleans, numbers, strings or arrays")


def thaw(value: Value) -> Any:
    """The JSON-encodable form of a frozen value (tuples and sets become lists)."""
    if isinstance(value, tuple):
        return [thaw(item) for item in value]
    if isinstance(value, frozenset):
        items = [thaw(item) for item in value]
        try:
            return sorted(items)
        except TypeError:  # mixed types do not sort; any order is a valid rendering of a set
            return items
    return value


def render_value(value: Value) -> str:
    return json.dumps(thaw(value), ensure_ascii=False)


def render_key(key: Value) -> str:
    return key if isinstance(key, str) else render_value(key)


_KNOWN_TYPES = ", ".join(event_type.value for event_type in EventType)


def event_from_mapping(fields: dict[str, Any], line: int) -> Event:
    """Validate the fields of one decoded event (extra fields such as ``error`` are ignored)."""
    process = fields.get("process")
    if isinstance(process, bool) or not isinstance(process, int):
        raise HistoryError(line, f"'process' must be an integer, got {process!r}")
    type_name = fields.get("type")
    try:
        event_type = EventType(str(type_name))
    except ValueError:
        raise HistoryError(line, f"unknown type {type_name!r} (expected one of {_KNOWN_TYPES})") from None
    f = fields.get("f")
    if not isinstance(f, str) or not f:
        raise HistoryError(line, f"'f' must be a non-empty string, got {f!r}")
    time = fields.get("time")
    if time is not None and (isinstance(time, bool) or not isinstance(time, int)):
        raise HistoryError(line, f"'time' must be an integer number of nanoseconds, got {time!r}")
    error = fields.get("error")
    if error is not None and not isinstance(error, str):
        raise HistoryError(line, f"'error' must be a string, got {error!r}")
    return Event(
        process=process,
        type=event_type,
        f=f,
        key=freeze(fields.get("key"), line),
        value=freeze(fields.get("value"), line),
        time=time,
        revision=_optional_count(fields, "revision", line),
        staleness_ms=_optional_count(fields, "staleness_ms", line),
        max_staleness_ms=_optional_count(fields, "max_staleness_ms", line),
        error=error,
        line=line,
    )


_OPTIONAL_COUNTS = ("revision", "staleness_ms", "max_staleness_ms")


def _optional_count(fields: dict[str, Any], name: str, line: int) -> int | None:
    count = fields.get(name)
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise HistoryError(line, f"'{name}' must be a non-negative integer, got {count!r}")
    return count


def parse_jsonl(lines: Iterable[str]) -> list[Event]:
    """Parse a JSONL history; blank lines are skipped. Raises HistoryError with the line number."""
    events: list[Event] = []
    for line_number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            fields = json.loads(text)
        except json.JSONDecodeError as error:
            raise HistoryError(line_number, f"invalid JSON: {error.msg} (column {error.colno})") from None
        if not isinstance(fields, dict):
            raise HistoryError(line_number, "expected a JSON object")
        events.append(event_from_mapping(fields, line_number))
    return events


def read_jsonl(path: Path) -> list[Event]:
    with path.open(encoding="utf-8") as stream:
        return parse_jsonl(stream)


def event_to_json(event: Event) -> str:
    fields: dict[str, Any] = {"process": event.process, "type": event.type.value, "f": event.f}
    if event.key is not None:
        fields["key"] = thaw(event.key)
    fields["value"] = thaw(event.value)
    if event.time is not None:
        fields["time"] = event.time
    for name in _OPTIONAL_COUNTS:
        count = getattr(event, name)
        if count is not None:
            fields[name] = count
    if event.error is not None:
        fields["error"] = event.error
    return json.dumps(fields, ensure_ascii=False)


def write_jsonl(events: Iterable[Event], stream: IO[str]) -> None:
    for event in events:
        stream.write(event_to_json(event))
        stream.write("\n")


def pair_operations(events: Sequence[Event]) -> list[Operation]:
    """Pair each invoke with its completion, in invoke order.

    Invokes never completed are operations of unknown outcome, like ``info`` ones. Raises
    HistoryError for a completion without invoke, a second outstanding operation on a process, a
    process invoking after an ``info``, or a completion whose ``f`` or ``key`` differs from its invoke.
    """
    outstanding: dict[int, int] = {}  # process -> index of its pending invoke in `events`
    crashed: dict[int, int] = {}  # process -> line of its info completion
    completion_of: dict[int, int] = {}  # invoke index -> completion index
    for index, event in enumerate(events):
        process = event.process
        if event.type is EventType.INVOKE:
            if process in crashed:
                raise HistoryError(
                    event.line,
                    f"process {process} invokes again after its outcome-unknown (info) completion "
                    f"at line {crashed[process]}",
                )
            if process in outstanding:
                pending = events[outstanding[process]]
                raise HistoryError(
                    event.line,
                    f"process {process} invokes while its {pending.f} from line {pending.line} is "
                    "still outstanding",
                )
            outstanding[process] = index
            continue
        invoke_index = outstanding.pop(process, None)
        if invoke_index is None:
            raise HistoryError(
                event.line, f"{event.type.value} completion of process {process} without an invoke"
            )
        invoke = events[invoke_index]
        if event.f != invoke.f:
            raise HistoryError(
                event.line,
                f"completion f {event.f!r} differs from its invoke's {invoke.f!r} (line {invoke.line})",
            )
        if event.key is not None and event.key != invoke.key:
            raise HistoryError(
                event.line,
                f"completion key {render_key(event.key)!r} differs from its invoke's (line {invoke.line})",
            )
        if event.type is EventType.INFO:
            crashed[process] = event.line
        completion_of[invoke_index] = index

    operations: list[Operation] = []
    for index, invoke in enumerate(events):
        if invoke.type is not EventType.INVOKE:
            continue
        completion_index = completion_of.get(index)
        completion = None if completion_index is None else events[completion_index]
        outcome = EventType.INFO if completion is None else completion.type
        known = outcome is not EventType.INFO
        operations.append(
            Operation(
                id=len(operations),
                process=invoke.process,
                f=invoke.f,
                key=invoke.key,
                argument=invoke.value,
                result=completion.value if completion is not None and outcome is EventType.OK else None,
                outcome=outcome,
                invoke_index=index,
                complete_index=completion_index if known else None,
                invoke_line=invoke.line,
                complete_line=completion.line if completion is not None else None,
                invoke_time=invoke.time,
                complete_time=completion.time if completion is not None else None,
                revision=completion.revision if completion is not None and outcome is EventType.OK else None,
                staleness_ms=(
                    completion.staleness_ms if completion is not None and outcome is EventType.OK else None
                ),
                max_staleness_ms=invoke.max_staleness_ms,
                error=completion.error if completion is not None else None,
            )
        )
    return operations
