"""The change-notification hub: deletion futures wake only the waiters of the deleted key,
subscriptions receive the changes of their range in order, slow subscribers are ended rather
than buffered without bound, and dropping a partition fails its waiters."""

from __future__ import annotations

import asyncio

import pytest

from kvstore.node.hub import ChangeHub, HubClosedError
from kvstore.statemachine import Change, ChangeKind
from kvstore.statemachine.layout import encode_stored_kv


def put(key: bytes, revision: int, partition: int = 1) -> Change:
    return Change(
        partition, ChangeKind.PUT, key, revision, encode_stored_kv(b"v", revision, revision, 1, 0), None
    )


def delete(key: bytes, revision: int, partition: int = 1) -> Change:
    return Change(partition, ChangeKind.DELETE, key, revision, None, encode_stored_kv(b"v", 1, 1, 1, 0))


async def test_a_deletion_wakes_only_the_waiters_of_that_key() -> None:
    hub = ChangeHub()
    first = hub.deleted(1, b"lock/a")
    second = hub.deleted(1, b"lock/a")
    other_key = hub.deleted(1, b"lock/b")
    other_partition = hub.deleted(2, b"lock/a")
    hub.publish([put(b"lock/a", 5), delete(b"lock/c", 6)])
    assert not any(future.done() for future in (first, second, other_key, other_partition))
    hub.publish([delete(b"lock/a", 7)])
    deleted = first.result()
    assert deleted is not None and deleted.revision == 7 and second.result() is deleted
    assert not other_key.done() and not other_partition.done()
    assert hub.waiting(1) == 1 and hub.waiting(2) == 1


async def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    hub = ChangeHub()
    future = hub.deleted(1, b"k")
    future.cancel()
    await asyncio.sleep(0)  # done callbacks run on the next loop turn
    assert hub.waiting(1) == 0
    hub.publish([delete(b"k", 3)])  # nothing to wake, nothing raised


async def test_a_subscription_receives_its_range_in_order() -> None:
    hub = ChangeHub()
    subscription = hub.watch(1, b"b", b"d")
    everything = hub.watch(1, b"")
    hub.publish(
        [put(b"a", 2), put(b"b", 3), put(b"c", 4), delete(b"b", 5), put(b"d", 6), put(b"b", 7, partition=2)]
    )
    assert [(c.key, c.revision, c.kind) for c in [await subscription.get() for _ in range(3)]] == [
        (b"b", 3, ChangeKind.PUT),
        (b"c", 4, ChangeKind.PUT),
        (b"b", 5, ChangeKind.DELETE),
    ]
    assert [(await everything.get()).revision for _ in range(5)] == [2, 3, 4, 5, 6]
    subscription.close()
    assert [change async for change in subscription] == []
    assert hub.waiting(1) == 1


async def test_a_subscriber_waits_for_the_next_change() -> None:
    hub = ChangeHub()
    subscription = hub.watch(1, b"")
    getter = asyncio.ensure_future(subscription.get())
    await asyncio.sleep(0)
    assert not getter.done()
    hub.publish([put(b"x", 9)])
    assert (await asyncio.wait_for(getter, 5)).revision == 9


async def test_a_lagging_subscriber_is_ended_instead_of_buffered() -> None:
    hub = ChangeHub(max_pending=3)
    slow = hub.watch(1, b"")
    hub.publish([put(b"k", revision) for revision in range(1, 5)])
    assert slow.lagging
    with pytest.raises(HubClosedError, match="fell more than 3 changes behind"):
        await slow.get()
    assert hub.waiting(1) == 0


async def test_dropping_a_partition_fails_its_waiters_only() -> None:
    hub = ChangeHub()
    waiter = hub.deleted(1, b"k")
    subscription = hub.watch(1, b"")
    survivor = hub.deleted(2, b"k")
    hub.drop_partition(1, "partition 1 moved to another node")
    with pytest.raises(HubClosedError, match="moved"):
        await waiter
    with pytest.raises(HubClosedError, match="moved"):
        async for _ in subscription:
            pass
    assert not survivor.done()
    hub.close()
    with pytest.raises(HubClosedError, match="closing"):
        await survivor


async def test_a_snapshot_wakes_deletion_waiters_to_look_again_and_ends_subscriptions() -> None:
    hub = ChangeHub()
    waiter = hub.deleted(1, b"k")
    subscription = hub.watch(1, b"")
    hub.replaced(1, 40)
    assert waiter.result() is None
    with pytest.raises(HubClosedError, match="snapshot at revision 40"):
        await subscription.get()


def test_max_pending_is_checked() -> None:
    with pytest.raises(ValueError):
        ChangeHub(max_pending=0)
