"""The Lease and Lock services over the in-memory backend (the real applier, no Raft, no
clock): grants, revocations, keepalives on one stream, TimeToLive and Leases, and locks taken in
FIFO order and passed on when the holder unlocks or its lease expires."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from kvstore._pb import kvstore_pb2 as pb
from kvstore.names import lock_key, lock_prefix
from kvstore.rpc import KVService, LeaseService, LockService, MemoryBackend
from kvstore.statemachine import lease_id, lease_partition
from tests.unit.test_kv_service import key_in


async def grant(
    service: LeaseService, partition: int, ttl: int = 10, lease: int = 0
) -> pb.LeaseGrantResponse:
    return await service.Grant(pb.LeaseGrantRequest(ttl_seconds=ttl, partition=partition, id=lease), None)


async def test_a_grant_lives_in_the_partition_asked_for() -> None:
    backend = MemoryBackend()
    service = LeaseService(backend)
    granted = await grant(service, 2, ttl=30)
    assert granted.error.code == pb.OK and granted.ttl_seconds == 30
    assert lease_partition(granted.id) == 2 and granted.header.partition == 2 and granted.header.revision == 1
    chosen = lease_id(3, 40)
    assert (await grant(service, 3, lease=chosen)).id == chosen
    wrong = await grant(service, 1, lease=chosen)
    assert wrong.error.code == pb.INVALID_ARGUMENT and "belongs to partition 3" in wrong.error.message
    assert (await grant(service, 0, ttl=0)).error.code == pb.INVALID_ARGUMENT
    assert (await grant(service, 99)).error.code == pb.INVALID_ARGUMENT
    backend.leaders[1] = 2
    refused = await grant(service, 1)
    assert refused.error.code == pb.NOT_LEADER and refused.error.leader_hint == 2


async def test_a_leased_key_shows_in_time_to_live_and_goes_with_revoke() -> None:
    backend = MemoryBackend()
    leases, kv = LeaseService(backend), KVService(backend)
    key = key_in(backend, 1)
    lease = (await grant(leases, 1, ttl=15)).id
    put = await kv.Put(pb.PutRequest(key=key, value=b"v", lease=lease), None)
    assert put.error.code == pb.OK
    status = await leases.TimeToLive(pb.LeaseTimeToLiveRequest(id=lease, keys=True), None)
    assert (status.error.code, status.granted_ttl_seconds, status.ttl_seconds, list(status.keys)) == (
        pb.OK,
        15,
        15,
        [key],
    )
    listed = await leases.Leases(pb.LeaseLeasesRequest(partition=1), None)
    assert [(entry.id, entry.granted_ttl_seconds) for entry in listed.leases] == [(lease, 15)]
    assert (await leases.Revoke(pb.LeaseRevokeRequest(id=lease), None)).error.code == pb.OK
    assert not (await kv.Get(pb.GetRequest(key=key), None)).found
    for response in (
        await leases.Revoke(pb.LeaseRevokeRequest(id=lease), None),
        await leases.TimeToLive(pb.LeaseTimeToLiveRequest(id=lease), None),
    ):
        assert response.error.code == pb.LEASE_NOT_FOUND
    assert list((await leases.Leases(pb.LeaseLeasesRequest(partition=1), None)).leases) == []


async def test_a_put_naming_a_lease_of_another_partition_is_refused_with_the_way_out() -> None:
    backend = MemoryBackend()
    leases, kv = LeaseService(backend), KVService(backend)
    lease = (await grant(leases, 2)).id
    put = await kv.Put(pb.PutRequest(key=key_in(backend, 1), value=b"v", lease=lease), None)
    assert put.error.code == pb.CROSS_PARTITION
    assert (
        "partition 1" in put.error.message
        and "partition 2" in put.error.message
        and "Session" in put.error.message
    )


async def requests(*ids: int) -> AsyncIterator[pb.LeaseKeepAliveRequest]:
    for lease in ids:
        yield pb.LeaseKeepAliveRequest(id=lease)


async def test_one_keepalive_stream_answers_every_lease_it_carries() -> None:
    backend = MemoryBackend()
    service = LeaseService(backend)
    first, second = (await grant(service, 0, ttl=7)).id, (await grant(service, 3, ttl=9)).id
    missing = lease_id(2, 5)
    answers = [answer async for answer in service.KeepAlive(requests(first, second, missing, 0), None)]
    by_id = {answer.id: answer for answer in answers}
    assert len(answers) == 4
    assert (by_id[first].error.code, by_id[first].ttl_seconds) == (pb.OK, 7)
    assert (by_id[second].error.code, by_id[second].ttl_seconds) == (pb.OK, 9)
    assert by_id[missing].error.code == pb.LEASE_NOT_FOUND
    assert by_id[0].error.code == pb.INVALID_ARGUMENT


async def lock(service: LockService, name: bytes, lease: int) -> pb.LockResponse:
    return await service.Lock(pb.LockRequest(name=name, lease=lease), None)


async def test_waiters_get_the_lock_in_fifo_order_as_holders_unlock_or_expire() -> None:
    backend = MemoryBackend()
    leases, locks = LeaseService(backend), LockService(backend)
    partition = backend.cluster_state.partition_for_key(lock_prefix(b"orders"))
    holder, second, third = [(await grant(leases, partition)).id for _ in range(3)]

    held = await lock(locks, b"orders", holder)
    assert held.error.code == pb.OK and held.key == lock_key(b"orders", holder)
    waiting_second = asyncio.ensure_future(lock(locks, b"orders", second))
    await asyncio.sleep(0.01)
    waiting_third = asyncio.ensure_future(lock(locks, b"orders", third))
    await asyncio.sleep(0.01)
    assert not waiting_second.done() and not waiting_third.done()

    assert (await locks.Unlock(pb.UnlockRequest(key=held.key), None)).error.code == pb.OK
    got_second = await asyncio.wait_for(waiting_second, 5)
    assert got_second.error.code == pb.OK and got_second.fencing_token > held.fencing_token
    await asyncio.sleep(0.01)
    assert not waiting_third.done()

    backend.expire(second)  # the holder stopped keeping its lease alive
    got_third = await asyncio.wait_for(waiting_third, 5)
    assert got_third.fencing_token > got_second.fencing_token
    unlocked_twice = await locks.Unlock(pb.UnlockRequest(key=held.key), None)
    assert unlocked_twice.error.code == pb.LOCK_NOT_HELD


async def test_a_waiter_whose_lease_expires_is_told_it_does_not_hold_the_lock() -> None:
    backend = MemoryBackend()
    leases, locks = LeaseService(backend), LockService(backend)
    partition = backend.cluster_state.partition_for_key(lock_prefix(b"jobs"))
    holder, waiter = [(await grant(leases, partition)).id for _ in range(2)]
    await lock(locks, b"jobs", holder)
    waiting = asyncio.ensure_future(lock(locks, b"jobs", waiter))
    await asyncio.sleep(0.01)
    backend.expire(waiter)
    assert (await asyncio.wait_for(waiting, 5)).error.code == pb.LOCK_NOT_HELD


async def test_a_lock_refuses_a_lease_of_another_partition_a_missing_lease_and_bad_names() -> None:
    backend = MemoryBackend()
    leases, locks = LeaseService(backend), LockService(backend)
    partition = backend.cluster_state.partition_for_key(lock_prefix(b"orders"))
    foreign = (await grant(leases, (partition + 1) % backend.partitions)).id
    crossed = await lock(locks, b"orders", foreign)
    assert crossed.error.code == pb.CROSS_PARTITION and "Session" in crossed.error.message
    assert (await lock(locks, b"orders", lease_id(partition, 99))).error.code == pb.LEASE_NOT_FOUND
    assert (await lock(locks, b"", lease_id(partition, 1))).error.code == pb.INVALID_ARGUMENT
    assert (await locks.Unlock(pb.UnlockRequest(key=b"orders"), None)).error.code == pb.INVALID_ARGUMENT


async def test_a_lock_taken_again_with_the_same_lease_has_the_same_token() -> None:
    backend = MemoryBackend()
    leases, locks = LeaseService(backend), LockService(backend)
    partition = backend.cluster_state.partition_for_key(lock_prefix(b"orders"))
    lease = (await grant(leases, partition)).id
    first, again = await lock(locks, b"orders", lease), await lock(locks, b"orders", lease)
    assert (again.key, again.fencing_token) == (first.key, first.fencing_token)
