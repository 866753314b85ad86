"""Importing Jepsen EDN histories."""

from __future__ import annotations

import pytest

from kvstore.jepsen.checker import Verdict, check
from kvstore.jepsen.edn import parse_edn
from kvstore.jepsen.history import Event, EventType, HistoryError, pair_operations
from kvstore.jepsen.models import CasRegisterModel, SetModel

JEPSEN_CAS_HISTORY = """\
{:type :invoke, :f :write, :value 3, :process 0, :time 2161420, :index 0}
{:type :invoke, :f :cas, :value [3 4], :process 1, :time 2200000, :index 1}
{:type :ok, :f :write, :value 3, :process 0, :time 3551390, :index 2}
{:type :info, :f :start-partition, :value nil, :process :nemesis, :time 3600000, :index 3}
{:type :ok, :f :cas, :value [3 4], :process 1, :time 4000000, :index 4}
{:type :invoke, :f :read, :value nil, :process 0, :time 5000000, :index 5}
{:type :ok, :f :read, :value 4, :process 0, :time 6000000, :index 6}
{:type :invoke, :f :cas, :value [0 1], :process 2, :time 6100000, :index 7}
{:type :fail, :f :cas, :value [0 1], :process 2, :time 6200000, :error :mismatch, :index 8}
"""


def test_reads_a_jepsen_history_and_skips_nemesis_events() -> None:
    events = parse_edn(JEPSEN_CAS_HISTORY.splitlines())
    assert len(events) == 8
    assert events[1] == Event(1, EventType.INVOKE, "cas", None, (3, 4), 2200000)
    assert [event.line for event in events[2:4]] == [3, 5]
    assert check(pair_operations(events), CasRegisterModel()).verdict is Verdict.LINEARIZABLE


def test_detects_a_violation_in_an_edn_history() -> None:
    text = JEPSEN_CAS_HISTORY.replace(":value 4, :process 0", ":value 3, :process 0")
    result = check(pair_operations(parse_edn(text.splitlines())), CasRegisterModel())
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert result.culprit is not None and result.culprit.complete_line == 7


def test_reads_keys_strings_keywords_sets_and_comments() -> None:
    (event,) = parse_edn(
        [r'{:process 4 :type :ok :f "read" :key "k\"1" :value #{1 2 :a [nil true]} :time 7N} ; done']
    )
    assert event == Event(4, EventType.OK, "read", 'k"1', frozenset({1, 2, ":a", (None, True)}), 7)


def test_revision_and_staleness_fields_are_read_like_the_json_ones() -> None:
    invoke, completion = parse_edn(
        [
            "{:process 0, :type :invoke, :f :read, :key :k, :max_staleness_ms 500}",
            "{:process 0, :type :ok, :f :read, :key :k, :value 1, :revision 12, :staleness_ms 30}",
        ]
    )
    assert invoke.max_staleness_ms == 500
    assert (completion.revision, completion.staleness_ms) == (12, 30)


def test_keyword_values_do_not_equal_strings() -> None:
    (invoke,) = parse_edn(["{:process 0, :type :invoke, :f :write, :value :a, :key :k}"])
    assert (invoke.value, invoke.key) == (":a", ":k")


def test_final_set_read_is_checked_as_a_set() -> None:
    events = parse_edn(
        [
            "{:process 0 :type :invoke :f :add :value 1}",
            "{:process 0 :type :ok :f :add :value 1}",
            "{:process 0 :type :invoke :f :read :value nil}",
            "{:process 0 :type :ok :f :read :value #{1}}",
        ]
    )
    assert check(pair_operations(events), SetModel()).verdict is Verdict.LINEARIZABLE


def test_blank_and_comment_lines_are_skipped() -> None:
    events = parse_edn(["", "; a comment", "{:process 0 :type :invoke :f :read}"])
    assert [event.line for event in events] == [3]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1 2]", "line 1: expected one map per line"),
        ("{:process 0 :type :invoke", "line 1: column 26: missing '}'"),
        ("{:process 0 :type :invoke :f :read} {}", "line 1: column 37: unexpected text after the map"),
        ('{:process 0 :type :invoke :f :read :value "abc}', "line 1: column 43: unterminated string"),
        ("{:process 0 :type :invoke :f read}", "line 1: column 30: unsupported symbol 'read'"),
        (
            '{:process 0 :time #inst "2020"}',
            r"line 1: column 19: tagged literals and dispatch forms \(#...\)",
        ),
        (
            "{:process 0 :type :invoke :f :w :value {:a 1}}",
            "line 1: column 47: maps are only supported as the event",
        ),
        ("{:process 0 :type :invoke :f :w :value}", "line 1: column 40: a map needs an even number of forms"),
        (
            "{:process 0 :type :invoke :f :w :value [1 2)}",
            r"line 1: column 44: unexpected '\)', expected '\]'",
        ),
        ("{:process :worker :type :invoke :f :w}", "line 1: 'process' must be an integer, got :worker"),
        ('{"process" 0 :type :invoke :f :w}', "line 1: map keys must be keywords"),
        ("{:process 0 :type :begin :f :w}", "line 1: unknown type 'begin'"),
        ("{:process 0 :type :invoke :f :w :value 1.5M}", "line 1: column 40: unsupported decimal 1.5M"),
    ],
)
def test_unsupported_or_malformed_input_is_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(HistoryError, match=f"^{message}"):
        parse_edn([text])
