"""The client's lease machinery without a cluster: a kept lease's `lost` is computed from the
send time of the last acknowledged keepalive, renewals retry and stop when the lease is gone, a
session grants once per partition and revokes at the end, and a lock given up while queued
leaves no key behind."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from kvstore._pb import kvstore_pb2 as pb
from kvstore.client.leases import CLIENT_MAX_DRIFT, KeepAlives, KeptLease, LockContext, Session
from kvstore.errors import KvError, LeaseNotFoundError, LockNotHeldError, UnavailableError
from kvstore.names import lock_key

Send = Callable[[str, float], Awaitable[pb.LeaseKeepAliveResponse]]


class FakeNode:
    """Answers keepalives as scripted: each call pops the next behaviour (a TTL to acknowledge
    after `delay` seconds, or an exception); when the script runs out, the last one repeats."""

    def __init__(self, *script: int | KvError, delay: float = 0.0) -> None:
        self.script = list(script)
        self.delay = delay
        self.sent_at: list[float] = []

    async def call_partition(self, partition: int, deadline: float, send: Send) -> pb.LeaseKeepAliveResponse:
        self.sent_at.append(asyncio.get_running_loop().time())
        behaviour = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        await asyncio.sleep(self.delay)
        if isinstance(behaviour, KvError):
            raise behaviour
        return pb.LeaseKeepAliveResponse(ttl_seconds=behaviour)


def keep_alives(node: FakeNode) -> KeepAlives:
    return KeepAlives(node.call_partition, lambda address: pytest.fail("no stream in these tests"))


async def test_lost_counts_from_the_send_time_of_the_last_acknowledged_keepalive() -> None:
    node = FakeNode(3, delay=0.2)  # every answer takes 0.2 s to come back
    alive = keep_alives(node)
    kept = alive.keep(KeptLease(7, 0, 0))
    while len(node.sent_at) < 1 or kept.expires_at == float("inf"):
        await asyncio.sleep(0.01)
    assert kept.expires_at == pytest.approx(node.sent_at[0] + 3 * (1 - CLIENT_MAX_DRIFT))
    assert kept.next_send == pytest.approx(node.sent_at[0] + 1)
    # What was acknowledged, and when, for callers that log it (the Jepsen lock workload does).
    assert kept.last_ack is not None
    assert kept.last_ack.sent_at == pytest.approx(node.sent_at[0]) and kept.last_ack.ttl == 3
    assert kept.last_ack.received_at >= kept.last_ack.sent_at + 0.2
    await alive.close()


async def test_a_lease_that_cannot_be_renewed_in_time_is_lost_and_stays_lost() -> None:
    node = FakeNode(1, UnavailableError("no leader"))
    alive = keep_alives(node)
    kept = alive.keep(KeptLease(7, 0, 0))
    seen: list[str] = []
    kept.on_lost(lambda: seen.append("lost"))
    await asyncio.wait_for(kept.lost.wait(), 10)
    assert "no keepalive was acknowledged within 1 s" in kept.lost_reason and seen == ["lost"]
    assert len(node.sent_at) > 2  # it kept trying in the meantime
    node.script = [1]
    await asyncio.sleep(0.5)
    assert kept.lost.is_set()  # an acknowledgement after the fact does not make it trustworthy again
    await alive.close()


async def test_a_lease_found_gone_is_lost_at_once_and_no_longer_renewed() -> None:
    node = FakeNode(LeaseNotFoundError("lease 7 does not exist (expired or revoked)"))
    alive = keep_alives(node)
    kept = alive.keep(KeptLease(7, 10, 0))
    await asyncio.wait_for(kept.lost.wait(), 5)
    assert "expired or revoked" in kept.lost_reason
    sent = len(node.sent_at)
    await asyncio.sleep(0.3)
    assert len(node.sent_at) == sent
    await alive.close()


class FakeLeases:
    def __init__(self) -> None:
        self.granted: list[int] = []
        self.revoked: list[int] = []
        self.unlocked: list[bytes] = []
        self.expired: set[bytes] = set()  # lock keys whose lease expired: unlocking them is refused

    async def grant(self, ttl: int, partition: int) -> tuple[int, int, float]:
        await asyncio.sleep(0.01)
        self.granted.append(partition)
        return 1000 + partition, ttl, asyncio.get_running_loop().time()

    async def revoke(self, lease: int) -> None:
        self.revoked.append(lease)

    async def unlock(self, key: bytes) -> None:
        self.unlocked.append(key)
        if key in self.expired:
            raise LockNotHeldError(f"lock key {key!r} does not exist")

    async def partition_of(self, key: bytes) -> int:
        return len(key) % 4


async def test_a_session_grants_once_per_partition_and_revokes_everything_at_the_end() -> None:
    leases = FakeLeases()
    alive = keep_alives(FakeNode(10))
    async with Session(10, leases.grant, leases.revoke, alive, leases.partition_of) as session:
        found = await asyncio.gather(
            session.lease_for(b"a"), session.lease_for(b"b"), session.lease_for(b"ab")
        )
        assert found == [1001, 1001, 1002]
        assert sorted(leases.granted) == [1, 2]
    assert sorted(leases.revoked) == [1001, 1002]
    with pytest.raises(KvError, match="closed"):
        await session.lease_for(b"a")
    await alive.close()


async def test_a_session_is_lost_when_any_of_its_leases_is() -> None:
    leases = FakeLeases()
    alive = keep_alives(FakeNode(LeaseNotFoundError("gone")))
    async with Session(10, leases.grant, leases.revoke, alive, leases.partition_of) as session:
        await session.lease_for(b"a")
        await asyncio.wait_for(session.lost.wait(), 5)
    await alive.close()


async def test_a_lock_given_up_while_queued_leaves_no_key_and_closes_its_session() -> None:
    leases = FakeLeases()
    alive = keep_alives(FakeNode(10))
    queued = asyncio.Event()

    async def acquire(name: bytes, kept: KeptLease) -> tuple[bytes, int]:
        queued.set()
        await asyncio.sleep(3600)  # another client holds the lock
        raise AssertionError("unreachable")

    def new_session() -> Session:
        return Session(10, leases.grant, leases.revoke, alive, leases.partition_of)

    context = LockContext(b"orders", None, new_session, acquire, leases.unlock, leases.partition_of)
    waiting = asyncio.ensure_future(context.__aenter__())
    await queued.wait()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    lease = 1000 + len(b"orders") % 4
    assert leases.unlocked == [lock_key(b"orders", lease)] and leases.revoked == [lease]
    await alive.close()


async def held(leases: FakeLeases, alive: KeepAlives) -> LockContext:
    async def acquire(name: bytes, kept: KeptLease) -> tuple[bytes, int]:
        return lock_key(name, kept.id), 42

    def new_session() -> Session:
        return Session(10, leases.grant, leases.revoke, alive, leases.partition_of)

    context = LockContext(b"orders", None, new_session, acquire, leases.unlock, leases.partition_of)
    lock = await context.__aenter__()
    assert lock.token == 42 and lock.lease.id == 1000 + len(b"orders") % 4
    return context


async def test_release_tells_a_lock_lost_to_its_lease_and_the_exit_adds_nothing() -> None:
    leases = FakeLeases()
    alive = keep_alives(FakeNode(10))
    context = await held(leases, alive)
    key = lock_key(b"orders", 1000 + len(b"orders") % 4)
    leases.expired.add(key)
    with pytest.raises(LockNotHeldError):
        await context.release()
    await context.__aexit__(None, None, None)
    assert leases.unlocked == [key] and leases.revoked == [1000 + len(b"orders") % 4]
    await alive.close()


async def test_the_exit_releases_quietly_a_lock_already_lost() -> None:
    leases = FakeLeases()
    alive = keep_alives(FakeNode(10))
    context = await held(leases, alive)
    leases.expired.add(lock_key(b"orders", 1000 + len(b"orders") % 4))
    await context.__aexit__(None, None, None)  # no LockNotHeldError: `async with` does not ask
    assert len(leases.unlocked) == 1 and len(leases.revoked) == 1
    await alive.close()


async def test_a_lost_lease_is_no_longer_renewed_even_when_the_cluster_answers_again() -> None:
    """Renewing a lease the client already gave up would keep its lock from passing on (and, with
    every acknowledgement ignored, would send keepalives back to back); closing it is then
    immediate."""
    node = FakeNode(1, UnavailableError("no leader"))
    alive = keep_alives(node)
    kept = alive.keep(KeptLease(7, 0, 0))
    await asyncio.wait_for(kept.lost.wait(), 10)
    node.script = [1]  # the cluster answers again
    sent = len(node.sent_at)
    await asyncio.sleep(0.3)
    assert len(node.sent_at) <= sent + 1  # at most the attempt in flight when it was lost
    await asyncio.wait_for(kept.close(), 1)
    await alive.close()
