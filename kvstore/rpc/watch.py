"""The Watch service: streams of the changes a replica applies to a key or to the keys under a
prefix, one partition per watch (docs/watch.md).

One bidirectional stream per client and node carries any number of watches. A create request
starts one: a task takes batches from its cursor over the replica's watch history
(`Backend.watch`) and sends them in order, each response holding whole revisions (a revision
too large for one response comes in fragments); a cancel request stops it; a progress request
asks every watch of the stream for a progress response. The watches of a stream share one
short queue of responses: when the client reads slowly, its watches wait, their cursors stay
where they are, and a watch the history leaves behind ends with COMPACTED instead of the node
buffering for it without bound.

The stream ends when the client cancels it, or once it closed its side and no watch is left.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc
from kvstore.errors import InvalidArgumentError, UnavailableError, WatchCompactedError
from kvstore.hub import ChangeBatch, Cursor, HubClosedError
from kvstore.rpc.answers import check_partition, error_of, fill_header
from kvstore.rpc.backend import Backend
from kvstore.statemachine import Change
from kvstore.storage.keys import prefix_end

log = logging.getLogger("kvstore.rpc")

PROGRESS_INTERVAL_S = 1.0
"""A quiet watch with progress_notify gets a progress response this often, when its revision moved."""

MAX_RESPONSE_BYTES = 256 << 10
"""About the most a response holds (`kvstore.hub.change_cost`): a partition's whole history
(`kvstore.hub.DEFAULT_HISTORY_BYTES`), well below a client's 4 MiB limit."""

QUEUED_RESPONSES = 16
"""Per stream, the responses waiting for the client to read them: at most about 4 MiB."""


@dataclass(eq=False, slots=True)
class _Watch:
    watch_id: int
    partition: int
    cursor: Cursor
    prev_kv: bool
    progress_notify: bool
    progress_requested: bool = False
    task: asyncio.Task[None] | None = field(default=None)


def _event(change: Change, prev_kv: bool) -> pb.WatchEvent:
    event = pb.WatchEvent()
    kv = change.kv()
    if kv is None:  # a delete
        event.type = pb.WatchEvent.DELETE
        event.kv.key = change.key
        event.kv.mod_revision = change.revision
    else:
        event.kv.CopyFrom(kv)
    if prev_kv:
        previous = change.prev_kv()
        if previous is not None:
            event.prev_kv.CopyFrom(previous)
    return event


class WatchService(kvstore_pb2_grpc.WatchServicer):
    def __init__(
        self,
        backend: Backend,
        *,
        progress_interval_s: float = PROGRESS_INTERVAL_S,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self._backend = backend
        self._progress_interval_s = progress_interval_s
        self._max_response_bytes = max_response_bytes

    def add_to(self, server: Any) -> None:
        kvstore_pb2_grpc.add_WatchServicer_to_server(self, server)

    async def Watch(
        self, request_iterator: AsyncIterator[pb.WatchRequest], context: Any
    ) -> AsyncIterator[pb.WatchResponse]:
        stream = _WatchStream(self._backend, self._progress_interval_s, self._max_response_bytes)
        reader = asyncio.create_task(stream.read(request_iterator), name="watch stream")
        try:
            while (response := await stream.responses.get()) is not None:
                yield response
        finally:
            reader.cancel()
            stream.close()


class _WatchStream:
    """The watches of one Watch call, and the responses waiting to be sent."""

    def __init__(self, backend: Backend, progress_interval_s: float, max_response_bytes: int) -> None:
        self.responses: asyncio.Queue[pb.WatchResponse | None] = asyncio.Queue(maxsize=QUEUED_RESPONSES)
        self._backend = backend
        self._progress_interval_s = progress_interval_s
        self._max_response_bytes = max_response_bytes
        self._watches: dict[int, _Watch] = {}
        self._requests_ended = False

    async def read(self, requests: AsyncIterator[pb.WatchRequest]) -> None:
        try:
            async for request in requests:
                kind = request.WhichOneof("request")
                if kind == "create":
                    await self._create(request.create)
                elif kind == "cancel":
                    await self._cancel(request.cancel.watch_id)
                elif kind == "progress":
                    for watch in self._watches.values():
                        watch.progress_requested = True
                        watch.cursor.poke()
        except Exception as error:  # the client's side broke: nobody reads the responses any more
            log.debug("watch stream ended: %s", error)
            self.close()
            self._finish()
            return
        self._requests_ended = True
        if not self._watches:
            await self.responses.put(None)

    async def _create(self, create: pb.WatchCreateRequest) -> None:
        backend = self._backend
        watch_id, partition = create.watch_id, create.partition
        try:
            if watch_id in self._watches:
                raise InvalidArgumentError(f"watch id {watch_id} is in use on this stream")
            start, end = self._range(create)
            cursor = backend.watch(partition, start, end, create.start_revision)
        except Exception as error:
            await self.responses.put(self._canceled(watch_id, partition, error))
            return
        watch = _Watch(watch_id, partition, cursor, create.prev_kv, create.progress_notify)
        self._watches[watch_id] = watch
        await self.responses.put(self._response(watch, cursor.revision, created=True))
        watch.task = asyncio.create_task(self._serve(watch), name=f"watch {watch_id}")

    def _range(self, create: pb.WatchCreateRequest) -> tuple[bytes, bytes | None]:
        """The keys ``[start, end)`` the request watches (`end` None: to the partition's end)."""
        backend = self._backend
        check_partition(backend, create.partition)
        key, limit = create.key, backend.limits.max_key_bytes
        if len(key) > limit:
            raise InvalidArgumentError(f"the key is {len(key)} bytes; the limit is {limit}")
        if create.prefix:
            return key, prefix_end(key)
        if not key:
            raise InvalidArgumentError("the key is empty (to watch every key, ask for the empty prefix)")
        home = backend.cluster_state.partition_for_key(key)
        if home != create.partition:
            raise InvalidArgumentError(f"key {key!r:.80} is in partition {home}, not in partition {create.partition}")
        return key, key + b"\x00"

    async def _serve(self, watch: _Watch) -> None:
        """Send the watch's batches, and progress responses when asked or due, until it ends."""
        cursor = watch.cursor
        loop = asyncio.get_running_loop()
        interval = self._progress_interval_s
        sent_revision, sent_at = cursor.revision, loop.time()
        try:
            while True:
                timeout = max(0.0, sent_at + interval - loop.time()) if watch.progress_notify else None
                batch = await cursor.next(self._max_response_bytes, timeout)
                now = loop.time()
                due = watch.progress_notify and now >= sent_at + interval
                if batch.changes or watch.progress_requested or (due and batch.revision > sent_revision):
                    watch.progress_requested = False
                    await self.responses.put(self._response(watch, batch.revision, batch))
                    sent_revision, sent_at = batch.revision, now
                elif due:
                    sent_at = now  # nothing new: the next progress response is due an interval later
        except Exception as error:  # COMPACTED, the node closing (HubClosedError), or a bug (INTERNAL)
            reason = UnavailableError(str(error)) if isinstance(error, HubClosedError) else error
            await self.responses.put(self._canceled(watch.watch_id, watch.partition, reason))
            await self._forget(watch)
        finally:
            cursor.close()

    async def _cancel(self, watch_id: int) -> None:
        watch = self._watches.pop(watch_id, None)
        if watch is not None and watch.task is not None:
            watch.task.cancel()
            await asyncio.gather(watch.task, return_exceptions=True)  # no response of it after this one
        partition = watch.partition if watch is not None else 0
        await self.responses.put(self._canceled(watch_id, partition, None))
        if watch is not None:
            await self._forget(watch)

    async def _forget(self, watch: _Watch) -> None:
        if self._watches.get(watch.watch_id) is watch:
            del self._watches[watch.watch_id]
        if self._requests_ended and not self._watches:
            await self.responses.put(None)

    def _response(
        self, watch: _Watch, revision: int, batch: ChangeBatch | None = None, *, created: bool = False
    ) -> pb.WatchResponse:
        response = pb.WatchResponse(watch_id=watch.watch_id, created=created)
        fill_header(self._backend, response.header, watch.partition, revision, pb.STALE)
        if batch is not None:
            response.fragment = batch.fragment
            response.events.extend(_event(change, watch.prev_kv) for change in batch.changes)
        return response

    def _canceled(self, watch_id: int, partition: int, error: BaseException | None) -> pb.WatchResponse:
        response = pb.WatchResponse(watch_id=watch_id, canceled=True)
        fill_header(self._backend, response.header, partition, 0, pb.STALE)
        if error is not None:
            response.error.CopyFrom(error_of(self._backend, error))
            if isinstance(error, WatchCompactedError):
                response.compact_revision = error.compact_revision
                response.header.revision = error.revision - 1
        return response

    def close(self) -> None:
        """Stop every watch (the call ended)."""
        for watch in self._watches.values():
            if watch.task is not None:
                watch.task.cancel()
            watch.cursor.close()
        self._watches.clear()

    def _finish(self) -> None:
        """End the call: drop what was queued (nobody will read it) and queue its end."""
        while not self.responses.empty():
            self.responses.get_nowait()
        self.responses.put_nowait(None)
