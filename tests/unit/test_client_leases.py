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
from kvstore.errors import KvError, LeaseNotFoundError, UnavailableError
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

    async def grant(self, ttl: int, partition: int) -> tuple[int, int, float]:
        await asyncio.sleep(0.01)
        self.granted.append(partition)
        return 1000 + partition, ttl, asyncio.get_running_loop().time()

    async def revoke(self, lease: int) -> None:
        self.revoked.append(lease)

    async def unlock(self, key: bytes) -> None:
        self.unlocked.append(key)

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
