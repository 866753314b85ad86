"""The Watch service over the in-memory backend (the real applier and the real change hub, no
Raft): a watch is created (or refused) before anything else, sends the changes of its key or
prefix in order with the fields of each event, replays from a start revision the history holds,
answers COMPACTED with the revision to re-list from when it does not, sends progress when asked
or when quiet, splits a revision too large for one response into fragments, and stops when
canceled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kvstore._pb import kvstore_pb2 as pb
from kvstore.hub import ChangeHub
from kvstore.rpc import KVService, LeaseService, MemoryBackend, WatchService
from tests.unit.test_kv_service import key_in
from tests.unit.test_lease_lock_services import grant

WAIT_S = 5.0


class Stream:
    """One Watch call on the service: `send` requests, `receive` responses, `close` our side."""

    def __init__(self, service: WatchService) -> None:
        self._requests: asyncio.Queue[pb.WatchRequest | None] = asyncio.Queue()
        self._responses = service.Watch(self._iterate(), None)

    async def _iterate(self) -> AsyncIterator[pb.WatchRequest]:
        while (request := await self._requests.get()) is not None:
            yield request

    def create(self, watch_id: int, partition: int, key: bytes, **options: Any) -> None:
        self._requests.put_nowait(
            pb.WatchRequest(create=pb.WatchCreateRequest(watch_id=watch_id, partition=partition, key=key, **options))
        )

    def send(self, request: pb.WatchRequest) -> None:
        self._requests.put_nowait(request)

    def close(self) -> None:
        self._requests.put_nowait(None)

    async def receive(self) -> pb.WatchResponse:
        return await asyncio.wait_for(anext(self._responses), WAIT_S)

    async def end(self) -> None:
        """The call ends (no response left)."""
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(self._responses), WAIT_S)


async def put(kv: KVService, key: bytes, value: bytes = b"v", lease: int = 0) -> int:
    response = await kv.Put(pb.PutRequest(key=key, value=value, lease=lease), None)
    assert response.error.code == pb.OK, response.error.message
    return response.header.revision


def events(response: pb.WatchResponse) -> list[tuple[str, bytes, bytes, int]]:
    return [
        (pb.WatchEvent.EventType.Name(event.type), event.kv.key, event.kv.value, event.kv.mod_revision)
        for event in response.events
    ]


@pytest.fixture
def backend() -> MemoryBackend:
    return MemoryBackend()


async def test_a_key_watch_sends_its_changes_in_order_with_every_field(backend: MemoryBackend) -> None:
    kv, stream = KVService(backend), Stream(WatchService(backend))
    key, other = key_in(backend, 1, "watched"), key_in(backend, 1, "other")
    await put(kv, key, b"before")
    stream.create(7, 1, key, prev_kv=True)
    created = await stream.receive()
    assert (created.watch_id, created.created, created.header.revision, created.header.partition) == (7, True, 1, 1)
    await put(kv, other)
    second = await put(kv, key, b"after")
    await kv.Delete(pb.DeleteRequest(key=key), None)
    changed = await stream.receive()  # both changes were applied before the watch looked
    assert events(changed) == [("PUT", key, b"after", second), ("DELETE", key, b"", second + 1)]
    written, deleted = changed.events
    assert (written.kv.create_revision, written.kv.version, written.prev_kv.value, written.prev_kv.version) == (
        1, 2, b"before", 1
    )
    assert deleted.prev_kv.value == b"after"
    assert changed.header.revision == second + 1 and changed.header.node_id == backend.node_id


async def test_a_lease_s_expiry_is_a_delete_of_each_of_its_keys(backend: MemoryBackend) -> None:
    kv, stream = KVService(backend), Stream(WatchService(backend))
    lease = (await grant(LeaseService(backend), 1)).id
    keys = [key_in(backend, 1, "leased-a"), key_in(backend, 1, "leased-b")]
    stream.create(1, 1, b"leased-", prefix=True, prev_kv=True)
    assert (await stream.receive()).created
    written = [await put(kv, key, lease=lease) for key in keys]
    put_events: list[pb.WatchEvent] = []
    while len(put_events) < len(keys):  # in one response or two, as the watch caught up
        put_events += (await stream.receive()).events
    assert [(event.kv.key, event.kv.lease) for event in put_events] == [(keys[0], lease), (keys[1], lease)]
    backend.expire(lease)
    expired = await stream.receive()
    # One expiry entry: both deletes at one revision, each with the key as it was.
    assert sorted(events(expired)) == sorted(("DELETE", key, b"", written[1] + 1) for key in keys)
    assert {(event.prev_kv.key, event.prev_kv.lease) for event in expired.events} == {(key, lease) for key in keys}


async def test_a_prefix_watch_replays_from_its_start_revision(backend: MemoryBackend) -> None:
    kv, stream = KVService(backend), Stream(WatchService(backend))
    keys = [key_in(backend, 2, f"job/{n}") for n in range(3)]
    revisions = [await put(kv, key) for key in keys]
    await put(kv, key_in(backend, 2, "unrelated"))
    stream.create(1, 2, b"job/", prefix=True, start_revision=revisions[1])
    created = await stream.receive()
    assert created.created and created.header.revision == revisions[1] - 1
    replayed = await stream.receive()
    assert events(replayed) == [("PUT", keys[1], b"v", revisions[1]), ("PUT", keys[2], b"v", revisions[2])]
    assert not replayed.events[0].HasField("prev_kv")  # not asked for


async def test_a_start_revision_no_longer_held_is_refused_with_the_revision_to_relist_from() -> None:
    backend = MemoryBackend()
    backend.hub = ChangeHub(max_changes=2)
    for partition in range(backend.partitions):
        backend.hub.open(partition, 0)
    kv, stream = KVService(backend), Stream(WatchService(backend))
    for n in range(4):
        await put(kv, key_in(backend, 0, f"k{n}"))
    stream.create(3, 0, b"", prefix=True, start_revision=1)
    refused = await stream.receive()
    assert refused.canceled and not refused.created and refused.error.code == pb.COMPACTED
    assert refused.compact_revision == 3 and "starts at revision 3" in refused.error.message


async def test_bad_requests_are_refused_one_by_one(backend: MemoryBackend) -> None:
    stream = Stream(WatchService(backend))
    key = key_in(backend, 1)
    stream.create(1, 1, b"")  # an empty key, not a prefix
    stream.create(2, 2, key)  # a key of partition 1 asked of partition 2
    stream.create(3, 99, b"", prefix=True)  # no such partition
    stream.create(4, 1, b"x" * 65)  # over the key limit
    stream.create(5, 1, key)
    stream.create(5, 1, key)  # the id is in use
    answers = [await stream.receive() for _ in range(6)]
    assert [(a.watch_id, a.created, a.canceled) for a in answers] == [
        (1, False, True), (2, False, True), (3, False, True), (4, False, True), (5, True, False), (5, False, True)
    ]
    assert all(a.error.code == pb.INVALID_ARGUMENT for a in answers if a.canceled)
    assert "not in partition 2" in answers[1].error.message and "in use" in answers[5].error.message


async def test_a_canceled_watch_sends_nothing_more_and_the_call_ends_once_none_is_left(
    backend: MemoryBackend,
) -> None:
    kv, stream = KVService(backend), Stream(WatchService(backend))
    key = key_in(backend, 1)
    stream.create(1, 1, key)
    assert (await stream.receive()).created
    stream.send(pb.WatchRequest(cancel=pb.WatchCancelRequest(watch_id=1)))
    canceled = await stream.receive()
    assert canceled.canceled and canceled.watch_id == 1 and canceled.error.code == pb.OK
    await put(kv, key)
    assert backend.hub.waiting(1) == 0
    stream.close()
    await stream.end()


async def test_progress_is_sent_when_asked_and_when_quiet(backend: MemoryBackend) -> None:
    kv = KVService(backend)
    stream = Stream(WatchService(backend, progress_interval_s=0.05))
    quiet, busy = key_in(backend, 1, "quiet"), key_in(backend, 1, "busy")
    stream.create(1, 1, quiet, progress_notify=True)
    stream.create(2, 1, busy)
    assert [(await stream.receive()).created for _ in range(2)] == [True, True]
    revision = await put(kv, busy)
    responses = [await stream.receive() for _ in range(2)]
    by_watch = {response.watch_id: response for response in responses}
    assert events(by_watch[2]) == [("PUT", busy, b"v", revision)]
    assert not by_watch[1].events and by_watch[1].header.revision == revision  # the quiet one: progress
    stream.send(pb.WatchRequest(progress=pb.WatchProgressRequest()))
    asked = [await stream.receive() for _ in range(2)]
    assert sorted((a.watch_id, a.header.revision, len(a.events)) for a in asked) == [(1, revision, 0), (2, revision, 0)]


async def test_a_revision_too_large_for_one_response_comes_in_fragments(backend: MemoryBackend) -> None:
    kv, stream = KVService(backend), Stream(WatchService(backend, max_response_bytes=300))
    tag = key_in(backend, 1, "tag").decode()  # keys under {tag} live in partition 1 too
    keys = [f"{{{tag}}}{n}".encode() for n in range(3)]
    stream.create(1, 1, f"{{{tag}}}".encode(), prefix=True)
    await stream.receive()
    txn = pb.TxnRequest(success=[pb.RequestOp(put=pb.PutRequest(key=key, value=b"x" * 40)) for key in keys])
    revision = (await kv.Txn(txn, None)).header.revision
    pieces = [await stream.receive() for _ in range(3)]
    assert [(len(p.events), p.fragment, p.header.revision) for p in pieces] == [
        (1, True, revision - 1), (1, True, revision - 1), (1, False, revision)
    ]
    assert [event.kv.key for p in pieces for event in p.events] == keys


async def test_watches_of_a_stream_end_when_the_node_closes(backend: MemoryBackend) -> None:
    stream = Stream(WatchService(backend))
    stream.create(1, 1, b"", prefix=True)
    await stream.receive()
    backend.hub.close()
    ended = await stream.receive()
    assert ended.canceled and ended.error.code == pb.UNAVAILABLE and "closing" in ended.error.message
