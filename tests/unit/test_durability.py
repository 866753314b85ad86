"""The lost-writes checker (`kvstore.jepsen.durability`) on hand-made histories."""

from __future__ import annotations

from kvstore.jepsen.checker import Validity
from kvstore.jepsen.durability import check_lost_writes
from kvstore.jepsen.history import Event, EventType, pair_operations

INVOKE, OK, INFO = EventType.INVOKE, EventType.OK, EventType.INFO


def one_partition(key: object) -> int:
    return 0


def test_writes_at_distinct_revisions_and_reads_that_agree_lose_nothing() -> None:
    history = pair_operations([
        Event(0, INVOKE, "write", "a", 1), Event(0, OK, "write", "a", 1, revision=5),
        Event(1, INVOKE, "cas", "b", (0, 2)), Event(1, OK, "cas", "b", (0, 2), revision=6),
        Event(2, INVOKE, "read", "b", None), Event(2, OK, "read", "b", 2, revision=6),
        Event(3, INVOKE, "write", "a", 9), Event(3, INFO, "write", "a", 9),  # outcome unknown: no claim
    ])  # fmt: skip
    result = check_lost_writes(history, one_partition)
    assert (result.validity, result.writes_checked, result.lost) == (Validity.VALID, 2, ())


def test_two_acknowledged_writes_at_one_revision_mean_one_was_lost() -> None:
    history = pair_operations([
        Event(0, INVOKE, "write", "a", 1), Event(0, OK, "write", "a", 1, revision=5),
        Event(1, INVOKE, "write", "a", 2), Event(1, OK, "write", "a", 2, revision=5),
    ])  # fmt: skip
    result = check_lost_writes(history, one_partition)
    assert result.validity is Validity.INVALID
    (lost,) = result.lost
    assert (lost.lost.argument, lost.evidence.argument) == (1, 2)
    assert "both acknowledged at revision 5: at most one is in the log" in lost.explanation


def test_a_read_of_another_value_at_an_acknowledged_revision_shows_the_write_lost() -> None:
    history = pair_operations([
        Event(0, INVOKE, "write", "a", 1), Event(0, OK, "write", "a", 1, revision=5),
        Event(1, INVOKE, "read", "a", None), Event(1, OK, "read", "a", 3, revision=5),
    ])  # fmt: skip
    (lost,) = check_lost_writes(history, one_partition).lost
    assert lost.evidence.f == "read" and "returned 3 at revision 5" in lost.explanation


def test_without_revisions_it_cannot_check() -> None:
    history = pair_operations([Event(0, INVOKE, "write", "a", 1), Event(0, OK, "write", "a", 1)])
    result = check_lost_writes(history, one_partition)
    assert result.validity is Validity.UNKNOWN and "has no revision" in result.reason
