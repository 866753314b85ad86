"""The change-notification hub: deletion futures wake only the waiters of the deleted key; the
watch history holds each partition's recent changes within its bounds, and cursors over it take
their key range in order, in whole revisions, from any revision it still holds, or fail with
COMPACTED instead of skipping what it no longer holds."""

from __future__ import annotations

import asyncio
import tracemalloc

import pytest

from kvstore.errors import WatchCompactedError
from kvstore.hub import CHANGE_OVERHEAD_BYTES, ChangeHub, HubClosedError, HubTotals, change_cost
from kvstore.statemachine import Change, ChangeKind
from kvstore.statemachine.layout import encode_stored_kv


def put(key: bytes, revision: int, partition: int = 1, value: bytes = b"v") -> Change:
    return Change(
        partition, ChangeKind.PUT, key, revision, encode_stored_kv(value, revision, revision, 1, 0), None
    )


def delete(key: bytes, revision: int, partition: int = 1) -> Change:
    return Change(partition, ChangeKind.DELETE, key, revision, None, encode_stored_kv(b"v", 1, 1, 1, 0))


def opened(*partitions: int, **bounds: int) -> ChangeHub:
    hub = ChangeHub(**bounds)
    for partition in partitions or (1,):
        hub.open(partition, 0)
    return hub


def publish(hub: ChangeHub, *changes: Change, partition: int = 1) -> None:
    """Publish `changes` as applied up to the last one's revision."""
    hub.publish(partition, max(change.revision for change in changes), changes)


def seen(changes: tuple[Change, ...]) -> list[tuple[bytes, int]]:
    return [(change.key, change.revision) for change in changes]


# -- deletion waiters (lock waiters) ---------------------------------------------------------


async def test_a_deletion_wakes_only_the_waiters_of_that_key() -> None:
    hub = opened(1, 2)
    first = hub.deleted(1, b"lock/a")
    second = hub.deleted(1, b"lock/a")
    other_key = hub.deleted(1, b"lock/b")
    other_partition = hub.deleted(2, b"lock/a")
    publish(hub, put(b"lock/a", 5), delete(b"lock/c", 6))
    assert not any(future.done() for future in (first, second, other_key, other_partition))
    publish(hub, delete(b"lock/a", 7))
    deleted = first.result()
    assert deleted is not None and deleted.revision == 7 and second.result() is deleted
    assert not other_key.done() and not other_partition.done()
    assert hub.waiting(1) == 1 and hub.waiting(2) == 1


async def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    hub = opened()
    future = hub.deleted(1, b"k")
    future.cancel()
    await asyncio.sleep(0)  # done callbacks run on the next loop turn
    assert hub.waiting(1) == 0
    publish(hub, delete(b"k", 3))  # nothing to wake, nothing raised


# -- cursors over the history ----------------------------------------------------------------


async def test_a_cursor_takes_its_range_in_order_and_nothing_else() -> None:
    hub = opened(1, 2)
    ranged = hub.watch(1, b"b", b"d", 0)
    everything = hub.watch(1, b"", None, 0)
    publish(hub, put(b"a", 2), put(b"b", 3), put(b"c", 4), delete(b"b", 5), put(b"d", 6))
    publish(hub, put(b"b", 7, partition=2), partition=2)
    batch = await ranged.next(1 << 20)
    assert seen(batch.changes) == [(b"b", 3), (b"c", 4), (b"b", 5)]
    assert [change.kind for change in batch.changes] == [ChangeKind.PUT, ChangeKind.PUT, ChangeKind.DELETE]
    assert batch.revision == 6 and not batch.fragment and ranged.position == 7
    assert seen((await everything.next(1 << 20)).changes) == [(b"a", 2), (b"b", 3), (b"c", 4), (b"b", 5), (b"d", 6)]
    assert hub.waiting(1) == 2 and hub.waiting(2) == 0


async def test_a_cursor_waits_for_the_next_revision_and_moves_past_revisions_without_its_keys() -> None:
    hub = opened()
    cursor = hub.watch(1, b"k", b"k\x00", 0)
    getter = asyncio.ensure_future(cursor.next(1 << 20))
    await asyncio.sleep(0)
    assert not getter.done()
    publish(hub, put(b"other", 1))
    quiet = await asyncio.wait_for(getter, 5)
    assert quiet.changes == () and quiet.revision == 1  # nothing of its key, but it knows how far it saw
    hub.publish(1, 4, [])  # revisions applied without any change (no-ops, lease grants)
    assert (await cursor.next(1 << 20)).revision == 4
    publish(hub, put(b"k", 5))
    assert seen((await cursor.next(1 << 20)).changes) == [(b"k", 5)]


async def test_next_returns_an_empty_batch_after_its_timeout_or_when_poked() -> None:
    hub = opened()
    cursor = hub.watch(1, b"", None, 0)
    timed_out = await cursor.next(1 << 20, timeout=0.01)
    assert timed_out.changes == () and timed_out.revision == 0
    getter = asyncio.ensure_future(cursor.next(1 << 20))
    await asyncio.sleep(0)
    cursor.poke()
    assert (await asyncio.wait_for(getter, 5)).changes == ()
    cursor.poke()  # a poke before the call makes the next call return at once
    assert (await asyncio.wait_for(cursor.next(1 << 20), 5)).changes == ()


async def test_a_transaction_s_changes_come_in_one_batch() -> None:
    hub = opened()
    cursor = hub.watch(1, b"", None, 0)
    publish(hub, put(b"a", 2), put(b"b", 2), put(b"c", 2), put(b"d", 3))
    # A budget that the first revision alone fills: the batch ends at the revision's end.
    batch = await cursor.next(3 * change_cost(put(b"a", 2)))
    assert seen(batch.changes) == [(b"a", 2), (b"b", 2), (b"c", 2)] and batch.revision == 2
    assert seen((await cursor.next(1 << 20)).changes) == [(b"d", 3)]


async def test_a_revision_larger_than_a_batch_comes_in_fragments() -> None:
    hub = opened()
    cursor = hub.watch(1, b"", None, 0)
    publish(hub, put(b"a", 2), put(b"b", 2), put(b"c", 2), put(b"d", 3))
    budget = change_cost(put(b"a", 2)) + 1  # one change per batch
    first = await cursor.next(budget)
    assert seen(first.changes) == [(b"a", 2)] and first.fragment and first.revision == 1
    second = await cursor.next(budget)
    assert seen(second.changes) == [(b"b", 2)] and second.fragment and second.revision == 1
    last = await cursor.next(budget)
    assert seen(last.changes) == [(b"c", 2)] and not last.fragment and last.revision == 2
    assert seen((await cursor.next(budget)).changes) == [(b"d", 3)]


async def test_a_cursor_starts_at_any_revision_the_history_holds() -> None:
    hub = opened()
    publish(hub, put(b"a", 2), put(b"b", 3), put(b"c", 4))
    cursor = hub.watch(1, b"", None, 3)
    assert cursor.revision == 2
    assert seen((await cursor.next(1 << 20)).changes) == [(b"b", 3), (b"c", 4)]
    from_now = hub.watch(1, b"", None, 0)
    assert from_now.revision == 4


async def test_a_start_revision_the_history_no_longer_holds_is_compacted() -> None:
    hub = opened(max_changes=3)
    publish(hub, *(put(b"k%d" % revision, revision) for revision in range(2, 7)))
    assert hub.history_bounds(1) == (4, 6)
    with pytest.raises(WatchCompactedError) as refused:
        hub.watch(1, b"", None, 3)
    assert (refused.value.partition, refused.value.revision, refused.value.compact_revision) == (1, 3, 4)
    assert seen((await hub.watch(1, b"", None, 4).next(1 << 20)).changes) == [(b"k4", 4), (b"k5", 5), (b"k6", 6)]


async def test_a_cursor_left_behind_by_the_history_is_compacted_not_skipped() -> None:
    hub = opened(max_changes=2)
    slow = hub.watch(1, b"k", b"k\x00", 0)  # its key changes once; others fill the history
    publish(hub, put(b"k", 1))
    publish(hub, put(b"x", 2), put(b"y", 3), put(b"z", 4))
    with pytest.raises(WatchCompactedError, match="from revision 1 on"):
        await slow.next(1 << 20)


async def test_a_history_opened_after_its_bootstrap_holds_everything() -> None:
    hub = ChangeHub()
    hub.open(1, 1, complete_after=0)  # a new partition: its bootstrap at revision 1 holds no change
    hub.open(2, 40)  # a restarted replica: what it applied before is not known one by one
    assert hub.watch(1, b"", None, 1).position == 1
    with pytest.raises(WatchCompactedError):
        hub.watch(2, b"", None, 40)
    assert hub.watch(2, b"", None, 41).position == 41


# -- bounds ----------------------------------------------------------------------------------


def test_the_history_keeps_its_bounds_and_drops_whole_revisions_oldest_first() -> None:
    small = put(b"k", 1)
    hub = opened(max_changes=1000, max_bytes=10 * change_cost(small))
    for revision in range(1, 50):
        hub.publish(1, revision, [put(b"k", revision), put(b"k", revision)])  # two changes per revision
    changes, size = hub.history_size(1)
    assert changes == 10 and size == 10 * change_cost(small)
    assert hub.history_bounds(1) == (45, 49)
    by_count = opened(max_changes=5)
    by_count.publish(1, 30, [put(b"k", revision) for revision in range(1, 31)])
    assert by_count.history_size(1)[0] == 5 and by_count.history_bounds(1) == (26, 30)


async def test_the_newest_revision_stays_however_large() -> None:
    hub = opened(max_bytes=1000)
    cursor = hub.watch(1, b"", None, 0)
    publish(hub, put(b"big", 1, value=b"x" * 5000))
    assert hub.history_size(1)[0] == 1
    assert seen((await cursor.next(1 << 20)).changes) == [(b"big", 1)]  # a watcher keeping up sees it
    publish(hub, put(b"small", 2))
    assert hub.history_bounds(1) == (2, 2)


def test_a_change_costs_no_more_memory_than_the_history_counts() -> None:
    """`change_cost` bounds what the history holds: measured, the changes (as the applier makes
    them: fresh bytes objects) of a full history take no more than the bytes it counts."""
    hub = opened(max_changes=100_000, max_bytes=1 << 30)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for revision in range(1, 2001):
            key = b"user/%08d" % revision
            stored = encode_stored_kv(b"v" * 20, revision, revision, 2, 0)
            previous = encode_stored_kv(b"w" * 20, revision - 1, revision - 1, 1, 0)
            hub.publish(1, revision, [Change(1, ChangeKind.PUT, key, revision, stored, previous)])
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    counted = hub.history_size(1)[1]
    assert used <= counted, (used, counted)
    assert used >= counted - 2000 * CHANGE_OVERHEAD_BYTES // 2, "the overhead is far above what it costs"


def test_a_full_history_frees_what_it_trims() -> None:
    """Past its bound, the history's memory stays at what it counts: trimmed changes are freed
    (the history is what a node holds for watches, per partition: docs/architecture.md)."""
    hub = opened(max_changes=500, max_bytes=1 << 30)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for revision in range(1, 5001):
            stored = encode_stored_kv(b"v" * 20, revision, revision, 1, 0)
            hub.publish(1, revision, [Change(1, ChangeKind.PUT, b"user/%08d" % revision, revision, stored, None)])
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    changes, counted = hub.history_size(1)
    assert changes == 500
    assert used <= counted, (used, counted)


async def test_the_totals_count_every_partition_s_cursors_changes_and_bytes() -> None:
    hub = opened(1, 2)
    hub.watch(1, b"", None, 0)
    hub.watch(2, b"a", b"b", 0)
    publish(hub, put(b"a", 1, partition=1), partition=1)
    publish(hub, put(b"b", 1, partition=2), delete(b"c", 2, partition=2), partition=2)
    changes = [put(b"a", 1, partition=1), put(b"b", 1, partition=2), delete(b"c", 2, partition=2)]
    assert hub.totals() == HubTotals(cursors=2, changes=3, bytes=sum(map(change_cost, changes)))


# -- snapshots, dropped partitions, closing ---------------------------------------------------


async def test_a_snapshot_restarts_the_history_and_wakes_deletion_waiters_to_look_again() -> None:
    hub = opened()
    waiter = hub.deleted(1, b"k")
    behind = hub.watch(1, b"", None, 0)
    ahead = hub.watch(1, b"", None, 50)
    publish(hub, put(b"a", 2))
    hub.replaced(1, 40)
    assert waiter.result() is None
    with pytest.raises(WatchCompactedError) as compacted:
        await behind.next(1 << 20)
    assert compacted.value.compact_revision == 41
    assert hub.history_bounds(1) == (41, 40)
    publish(hub, put(b"b", 50))
    assert seen((await ahead.next(1 << 20)).changes) == [(b"b", 50)]


async def test_dropping_a_partition_fails_its_waiters_only() -> None:
    hub = opened(1, 2)
    waiter = hub.deleted(1, b"k")
    cursor = hub.watch(1, b"", None, 0)
    waiting = asyncio.ensure_future(cursor.next(1 << 20))
    survivor = hub.deleted(2, b"k")
    hub.drop_partition(1, "partition 1 moved to another node")
    with pytest.raises(HubClosedError, match="moved"):
        await waiter
    with pytest.raises(HubClosedError, match="moved"):
        await waiting
    with pytest.raises(HubClosedError):
        hub.watch(1, b"", None, 0)
    assert not survivor.done()
    hub.close()
    with pytest.raises(HubClosedError, match="closing"):
        await survivor


async def test_a_closed_cursor_is_forgotten() -> None:
    hub = opened()
    cursor = hub.watch(1, b"", None, 0)
    cursor.close()
    assert hub.waiting(1) == 0
    with pytest.raises(HubClosedError, match="closed by its owner"):
        await cursor.next(1 << 20)


def test_the_bounds_are_checked() -> None:
    with pytest.raises(ValueError):
        ChangeHub(max_changes=0)
    with pytest.raises(ValueError):
        ChangeHub(max_bytes=0)
