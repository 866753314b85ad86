"""JSONL histories: parsing, validation with line numbers, pairing into operations."""

from __future__ import annotations

import io

import pytest

from kvstore.jepsen.history import (
    Event,
    EventType,
    HistoryError,
    pair_operations,
    parse_jsonl,
    write_jsonl,
)


def lines(*texts: str) -> list[str]:
    return list(texts)


def test_parses_every_field_and_freezes_arrays() -> None:
    (event,) = parse_jsonl(
        lines('{"process": 3, "type": "invoke", "f": "cas", "key": "k1", "value": [1, 2], "time": 123456789}')
    )
    assert event == Event(process=3, type=EventType.INVOKE, f="cas", key="k1", value=(1, 2), time=123456789)
    assert event.line == 1
    hash(event.value)


def test_key_time_and_value_are_optional_and_extra_fields_ignored() -> None:
    (event,) = parse_jsonl(lines('{"process": 0, "type": "fail", "f": "read", "error": "timeout", "why": 1}'))
    assert (event.key, event.value, event.time, event.error) == (None, None, None, "timeout")


def test_blank_lines_are_skipped_but_count_for_line_numbers() -> None:
    events = parse_jsonl(lines('{"process": 0, "type": "invoke", "f": "read"}', "", "  "))
    assert len(events) == 1
    with pytest.raises(HistoryError, match="^line 3: invalid JSON"):
        parse_jsonl(lines('{"process": 0, "type": "invoke", "f": "read"}', "", "{oops"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "expected a JSON object"),
        ('{"type": "invoke", "f": "read"}', "'process' must be an integer"),
        ('{"process": true, "type": "invoke", "f": "read"}', "'process' must be an integer"),
        ('{"process": 0, "type": "start", "f": "read"}', "unknown type 'start'"),
        ('{"process": 0, "type": "invoke", "f": ""}', "'f' must be a non-empty string"),
        ('{"process": 0, "type": "invoke", "f": "read", "time": 1.5}', "'time' must be an integer"),
        ('{"process": 0, "type": "invoke", "f": "write", "value": {"a": 1}}', "unsupported value"),
        ('{"process": 0, "type": "ok", "f": "read", "revision": -1}', "'revision' must be a non-negative integer"),
        ('{"process": 0, "type": "ok", "f": "read", "staleness_ms": 2.5}', "'staleness_ms' must be a non-neg"),
        ('{"process": 0, "type": "invoke", "f": "read", "max_staleness_ms": true}', "'max_staleness_ms' must"),
        ('{"process": 0, "type": "fail", "f": "read", "error": 3}', "'error' must be a string"),
    ],
)
def test_malformed_events_are_reported_with_their_line(text: str, message: str) -> None:
    with pytest.raises(HistoryError, match=message) as caught:
        parse_jsonl(lines('{"process": 9, "type": "invoke", "f": "read"}', text))
    assert caught.value.line == 2
    assert str(caught.value).startswith("line 2: ")


def test_pairs_invokes_with_completions_in_invoke_order() -> None:
    events = parse_jsonl(
        lines(
            '{"process": 0, "type": "invoke", "f": "write", "value": 1}',
            '{"process": 1, "type": "invoke", "f": "read", "value": null}',
            '{"process": 1, "type": "ok", "f": "read", "value": 1}',
            '{"process": 0, "type": "ok", "f": "write", "value": 1}',
            '{"process": 2, "type": "invoke", "f": "write", "value": 2}',
            '{"process": 2, "type": "fail", "f": "write", "value": 2}',
        )
    )
    write, read, failed = pair_operations(events)
    assert (write.process, write.argument, write.outcome, write.invoke_index, write.complete_index) == (
        0,
        1,
        EventType.OK,
        0,
        3,
    )
    assert (read.argument, read.result, read.invoke_line, read.complete_line) == (None, 1, 2, 3)
    assert failed.outcome is EventType.FAIL and failed.result is None
    assert [op.id for op in (write, read, failed)] == [0, 1, 2]


def test_info_and_never_completed_operations_have_unknown_outcome() -> None:
    events = parse_jsonl(
        lines(
            '{"process": 0, "type": "invoke", "f": "write", "value": 1}',
            '{"process": 0, "type": "info", "f": "write", "value": 1}',
            '{"process": 1, "type": "invoke", "f": "write", "value": 2}',
        )
    )
    crashed, pending = pair_operations(events)
    assert crashed.outcome is EventType.INFO and crashed.complete_index is None and crashed.complete_line == 2
    assert (
        pending.outcome is EventType.INFO and pending.complete_index is None and pending.complete_line is None
    )


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (
            ('{"process": 0, "type": "ok", "f": "read", "value": 1}',),
            "line 1: ok completion of process 0 without an invoke",
        ),
        (
            (
                '{"process": 0, "type": "invoke", "f": "read"}',
                '{"process": 0, "type": "invoke", "f": "write", "value": 1}',
            ),
            "line 2: process 0 invokes while its read from line 1 is still outstanding",
        ),
        (
            (
                '{"process": 0, "type": "invoke", "f": "read"}',
                '{"process": 0, "type": "info", "f": "read"}',
                '{"process": 0, "type": "invoke", "f": "read"}',
            ),
            r"line 3: process 0 invokes again after its outcome-unknown \(info\) completion at line 2",
        ),
        (
            ('{"process": 0, "type": "invoke", "f": "read"}', '{"process": 0, "type": "ok", "f": "write"}'),
            "line 2: completion f 'write' differs from its invoke's 'read'",
        ),
        (
            (
                '{"process": 0, "type": "invoke", "f": "read", "key": "a"}',
                '{"process": 0, "type": "ok", "f": "read", "key": "b"}',
            ),
            "line 2: completion key 'b' differs",
        ),
    ],
)
def test_structural_errors_name_the_offending_line(texts: tuple[str, ...], message: str) -> None:
    with pytest.raises(HistoryError, match=f"^{message}"):
        pair_operations(parse_jsonl(texts))


def test_completion_may_omit_the_key_of_its_invoke() -> None:
    (op,) = pair_operations(
        parse_jsonl(
            lines(
                '{"process": 0, "type": "invoke", "f": "read", "key": "a"}',
                '{"process": 0, "type": "ok", "f": "read"}',
            )
        )
    )
    assert op.key == "a"


def test_revisions_and_staleness_bounds_are_optional_and_land_on_the_operation() -> None:
    write, read, timed_out = pair_operations(
        parse_jsonl(
            lines(
                '{"process": 0, "type": "invoke", "f": "write", "key": "k", "value": 1}',
                '{"process": 0, "type": "ok", "f": "write", "key": "k", "value": 1, "revision": 7}',
                '{"process": 1, "type": "invoke", "f": "read", "key": "k", "max_staleness_ms": 500}',
                '{"process": 1, "type": "ok", "f": "read", "key": "k", "value": 1, "revision": 7, "staleness_ms": 40}',
                '{"process": 2, "type": "invoke", "f": "write", "key": "k", "value": 2}',
                '{"process": 2, "type": "info", "f": "write", "key": "k", "value": 2, "revision": 9}',
            )
        )
    )
    assert (write.revision, write.staleness_ms, write.max_staleness_ms) == (7, None, None)
    assert (read.revision, read.staleness_ms, read.max_staleness_ms) == (7, 40, 500)
    # Only an ok completion says what happened; an outcome-unknown one has no revision to trust.
    assert timed_out.revision is None


def test_the_error_of_a_failed_completion_lands_on_the_operation_and_is_written_back() -> None:
    events = [
        Event(0, EventType.INVOKE, "write", "k", 1, 10),
        Event(0, EventType.FAIL, "write", "k", 1, 20, error="StaleFencingTokenError: fencing token 3 is older"),
    ]
    (write,) = pair_operations(events)
    assert write.error == "StaleFencingTokenError: fencing token 3 is older"
    stream = io.StringIO()
    write_jsonl(events, stream)
    assert [event.error for event in parse_jsonl(stream.getvalue().splitlines())] == [None, write.error]


def test_written_history_reads_back_equal() -> None:
    events = [
        Event(0, EventType.INVOKE, "cas", "k", (1, 2), 10),
        Event(0, EventType.OK, "cas", "k", (1, 2), 20, revision=3),
        Event(1, EventType.INVOKE, "read", max_staleness_ms=250),
        Event(1, EventType.OK, "read", None, ((1, "a"), None), revision=0, staleness_ms=0),
    ]
    stream = io.StringIO()
    write_jsonl(events, stream)
    assert parse_jsonl(stream.getvalue().splitlines()) == events


def test_describe_shows_what_the_operation_did() -> None:
    events = parse_jsonl(
        lines(
            '{"process": 0, "type": "invoke", "f": "read"}',
            '{"process": 0, "type": "ok", "f": "read", "value": null}',
            '{"process": 0, "type": "invoke", "f": "cas", "value": [1, 2]}',
            '{"process": 0, "type": "ok", "f": "cas", "value": [1, 2]}',
        )
    )
    read, cas = pair_operations(events)
    assert read.describe() == "read → null"
    assert cas.describe() == "cas [1, 2]"
