"""Watches, client side (docs/watch.md): `Watch`, an async iterator of the changes of a key or of
the keys under a prefix, across every partition it covers, which survives node deaths and leader
changes without delivering a change twice or skipping one.

* A node serves watches of single partitions. A `Watch` follows each partition it covers with
  a task of its own (`_follow`): it creates the partition's watch on one of its replicas (the
  leader when known) from the partition's position, the next revision to deliver, and hands on
  what comes. When the stream breaks or the replica ends the watch, it creates it again on a
  replica that can serve it, from the same position. A revision comes whole: its fragments are
  held back until the last one arrived.
* One stream per node carries the partition watches of one `Watch` there (another `Watch`
  reads at its own pace on streams of its own).
* A replica whose history no longer reaches back to the position answers COMPACTED; another
  replica's may. Only when every replica of the partition answered so does the watch end with
  `WatchCompactedError`: it never skips changes silently. A consumer slower than the writes
  for longer than the history lasts ends that way too.
* The partition watches ask for progress notifications: a position moves on with its
  partition even when none of the watched keys change, so a resumed watch asks for revisions
  the history still holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.client.backoff import Backoff
from kvstore.client.batching import TransportError, failure_reason, transport_failure
from kvstore.client.routing import Router
from kvstore.client.types import WatchEvent
from kvstore.client.wire import event_from_pb
from kvstore.errors import (
    ERRORS,
    ErrorCode,
    KvError,
    KvTimeoutError,
    WatchCompactedError,
    WrongNodeError,
    error_code,
    exception_for,
)

_INBOX_RESPONSES = 8  # per partition watch: responses read from its stream, not yet taken
_QUEUED_BATCHES = 64  # per Watch: batches of events taken, not yet iterated

T = TypeVar("T")
StartRevision = int | Mapping[int, int] | None


class _Mailbox(Generic[T]):
    """A bounded handoff from one producer to one consumer: `put` waits for room, `get` for an
    item. Once `close`d, `put` drops what it is given, and `get` hands out what is left, then
    raises the closing error (or returns None when closed without one)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: deque[T] = deque()
        self._arrived = asyncio.Event()
        self._taken = asyncio.Event()
        self._closed = False
        self._error: BaseException | None = None

    async def put(self, item: T) -> None:
        while len(self._items) >= self._capacity and not self._closed:
            self._taken.clear()
            await self._taken.wait()
        if not self._closed:
            self._items.append(item)
            self._arrived.set()

    async def get(self) -> T | None:
        while not self._items:
            if self._closed:
                if self._error is not None:
                    raise self._error
                return None
            self._arrived.clear()
            await self._arrived.wait()
        item = self._items.popleft()
        self._taken.set()
        return item

    def close(self, error: BaseException | None = None) -> None:
        if not self._closed:
            self._closed = True
            self._error = error
            self._arrived.set()
            self._taken.set()


class _NodeStream:
    """The Watch stream to one node: creates partition watches and hands each response to its
    watch's inbox (waiting when that is full: the node then waits too)."""

    def __init__(self, stub: pb_grpc.WatchStub, address: str) -> None:
        self.address = address
        self.broken: str | None = None
        self._call = stub.Watch()
        self._writing = asyncio.Lock()  # one write at a time on a gRPC stream
        self._inboxes: dict[int, _Mailbox[pb.WatchResponse]] = {}
        self._ids = itertools.count(1)
        self._reader = asyncio.create_task(self._read(), name=f"watch stream {address}")

    async def create(self, request: pb.WatchCreateRequest) -> _Mailbox[pb.WatchResponse]:
        """Send `request` (its watch id is set here); the inbox its responses go to."""
        if self.broken is not None:
            raise TransportError(self.broken)
        request.watch_id = next(self._ids)
        inbox: _Mailbox[pb.WatchResponse] = _Mailbox(_INBOX_RESPONSES)
        self._inboxes[request.watch_id] = inbox
        try:
            async with self._writing:
                await self._call.write(pb.WatchRequest(create=request))
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as error:
            self._inboxes.pop(request.watch_id, None)
            reason = failure_reason(error) if isinstance(error, grpc.aio.AioRpcError) else "it ended"
            raise TransportError(f"the watch stream to {self.address} broke: {reason}") from None
        return inbox

    async def _read(self) -> None:
        reason = f"the watch stream to {self.address} ended"
        failure: Exception | None = None
        try:
            while True:
                response = await self._call.read()
                if response is grpc.aio.EOF:
                    break
                inbox = self._inboxes.get(response.watch_id)
                if inbox is None:
                    continue
                if response.canceled:
                    del self._inboxes[response.watch_id]
                await inbox.put(response)
        except grpc.aio.AioRpcError as error:
            failure = transport_failure(error)  # a final error (refused for good) ends the watches
            reason = f"the watch stream to {self.address} broke: {failure}"
        finally:
            self.broken = reason
            for inbox in self._inboxes.values():
                inbox.close(failure if isinstance(failure, KvError) else TransportError(reason))
            self._inboxes.clear()

    async def close(self) -> None:
        self._call.cancel()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@dataclass(frozen=True, slots=True)
class _Batch:
    """Events of one partition, and the partition's position once they are delivered."""

    partition: int
    events: tuple[WatchEvent, ...]
    position: int


class Watch:
    """The changes of a key, or of the keys under a prefix, as they are applied (see the module
    doc and `Client.watch`). Iterate it (`async for event in watch`); `close()` it, or use
    `async with`, which also waits until the watch is established: every write sent after
    that is seen.

    `position` says how far the events handed out go: per partition, the next revision to
    deliver. Give it as `start_revision` to a new watch to go on where this one stopped.
    """

    def __init__(
        self,
        key: bytes,
        prefix: bool,
        start_revision: StartRevision,
        prev_kv: bool,
        *,
        router: Callable[[float], Awaitable[Router]],
        refresh: Callable[[float], Awaitable[None]],
        stub: Callable[[str], pb_grpc.WatchStub],
        timeout: float,
        on_close: Callable[[Watch], None],
    ) -> None:
        self.key = key
        self.prefix = prefix
        self.prev_kv = prev_kv
        self._start_revision = start_revision
        self._router = router
        self._refresh = refresh
        self._stub = stub
        self._timeout = timeout
        self._on_close = on_close
        self._rng = random.Random()
        self._next: dict[int, int] = {}  # partition -> next revision to take from its replica (0: "now")
        self._delivered: dict[int, int] = {}  # partition -> next revision to hand out
        self._created: set[int] = set()
        self._problems: dict[int, str] = {}  # partition -> why its last attempt failed
        self._established = asyncio.Event()
        self._output: _Mailbox[_Batch] = _Mailbox(_QUEUED_BATCHES)
        self._current: deque[tuple[WatchEvent, int]] = deque()  # events to hand out, with the position after each
        self._streams: dict[str, _NodeStream] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._failure: BaseException | None = None
        self._started = False
        self._closed = False

    @property
    def position(self) -> dict[int, int]:
        """Per partition, the next revision this watch hands out: every change before it was."""
        return {partition: revision for partition, revision in self._delivered.items() if revision}

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the watch on every partition it covers, within the client's timeout; once
        this returns, every write sent afterwards is seen. (Iterating starts it too.)"""
        if self._started:
            return
        self._started = True
        try:
            await self._establish()
        except BaseException as error:
            self._fail(error)
            await self.close()
            raise

    async def _establish(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        router = await self._router(deadline)
        partitions = router.partitions_under(self.key) if self.prefix else [router.partition_for(self.key)]
        start = self._start_revision
        for partition in partitions:
            revision = start if isinstance(start, int) else 0 if start is None else start.get(partition, 0)
            self._next[partition] = self._delivered[partition] = revision
        self._tasks = [asyncio.create_task(self._follow(p), name=f"watch partition {p}") for p in partitions]
        try:
            async with asyncio.timeout(max(0.0, deadline - loop.time())):
                await self._established.wait()
        except TimeoutError:
            by_problem: dict[str, list[str]] = {}  # one line, however many partitions share a problem
            for partition in sorted(set(partitions) - self._created):
                by_problem.setdefault(self._problems.get(partition, "no answer yet"), []).append(str(partition))
            problems = "; ".join(
                f"partition{'s' if len(waiting) > 1 else ''} {', '.join(waiting)}: {problem}"
                for problem, waiting in by_problem.items()
            )
            raise KvTimeoutError(f"the watch could not be started within {self._timeout:g}s ({problems})") from None
        if self._failure is not None:
            raise self._failure

    async def close(self) -> None:
        """Stop watching; iteration ends after the events already taken. Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        streams, self._streams = self._streams, {}
        await asyncio.gather(*(stream.close() for stream in streams.values()))
        self._output.close(self._failure)
        self._on_close(self)

    async def __aenter__(self) -> Watch:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> WatchEvent:
        await self.start()
        while not self._current:
            batch = await self._output.get()
            if batch is None:
                raise StopAsyncIteration
            if not batch.events:
                self._delivered[batch.partition] = batch.position
            self._current.extend(_with_positions(batch))
        event, position = self._current.popleft()
        if position:
            self._delivered[event.partition] = position
        return event

    # -- following one partition --------------------------------------------------------------

    async def _follow(self, partition: int) -> None:
        """Keep a watch of `partition` on one of its replicas, from its position, until closed."""
        unreachable: set[int] = set()  # nodes that failed since the position last moved
        compacted: dict[int, WatchCompactedError] = {}  # nodes whose history misses the position
        backoff = Backoff(self._rng)
        try:
            while True:
                router = await self._router(math.inf)
                replicas = router.replicas_of(partition)
                if replicas and all(node in compacted for node in replicas):
                    raise _compacted_everywhere(partition, list(compacted.values()))
                node = router.choose(partition, unreachable | set(compacted))
                if node is None:
                    unreachable.clear()
                    await self._refresh(asyncio.get_running_loop().time() + self._timeout)
                    await backoff.pause(math.inf)
                    continue
                address = router.address_of(node) or ""
                position = self._next[partition]
                try:
                    await self._serve(partition, address)
                except WatchCompactedError as error:
                    compacted[node] = error
                except (TransportError, KvError) as error:
                    if isinstance(error, KvError) and not ERRORS[error.code].retryable:
                        raise
                    self._problems[partition] = f"node {node} ({address}): {error}"
                    unreachable.add(node)
                    router.forget_leader(partition, node)
                    if isinstance(error, WrongNodeError):
                        await self._refresh(asyncio.get_running_loop().time() + self._timeout)
                    await backoff.pause(math.inf)
                if self._next[partition] != position:  # what the nodes said was about an older position
                    unreachable.clear()
                    compacted.clear()
                    backoff = Backoff(self._rng)
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # the watch cannot go on
            self._fail(error)

    async def _serve(self, partition: int, address: str) -> None:
        """Watch `partition` on the node at `address` until the node ends it (raised as its
        error) or the stream breaks (`TransportError`)."""
        stream = self._streams.get(address)
        if stream is None or stream.broken is not None:
            stream = self._streams[address] = _NodeStream(self._stub(address), address)
        request = pb.WatchCreateRequest(
            partition=partition,
            key=self.key,
            prefix=self.prefix,
            start_revision=self._next[partition],
            prev_kv=self.prev_kv,
            progress_notify=True,
        )
        inbox = await stream.create(request)
        fragments: list[pb.WatchEvent] = []
        while True:
            response = await inbox.get()
            if response is None or response.canceled:
                raise self._ended(partition, response)
            if response.created:
                if not self._next[partition]:  # started "now": now is known
                    self._next[partition] = self._delivered[partition] = response.header.revision + 1
                self._note_created(partition)
                continue
            if response.fragment:
                fragments.extend(response.events)
                continue
            events = tuple(event_from_pb(event, partition) for event in (*fragments, *response.events))
            fragments = []
            position = response.header.revision + 1
            await self._output.put(_Batch(partition, events, position))
            self._next[partition] = position

    def _ended(self, partition: int, response: pb.WatchResponse | None) -> BaseException:
        if response is None or not response.error.code:
            return TransportError("the node ended the watch")
        if error_code(response.error.code) is ErrorCode.COMPACTED:
            return WatchCompactedError(
                response.error.message,
                partition=partition,
                revision=self._next[partition],
                compact_revision=response.compact_revision,
            )
        return exception_for(response.error.code, response.error.message)

    def _note_created(self, partition: int) -> None:
        self._created.add(partition)
        self._problems.pop(partition, None)
        if len(self._created) == len(self._next):
            self._established.set()

    def _fail(self, error: BaseException) -> None:
        """End the watch with `error`: raised by iteration after the events already taken."""
        if self._failure is None:
            self._failure = error
            self._output.close(error)
            self._established.set()
            for task in self._tasks:
                if task is not asyncio.current_task():
                    task.cancel()


def _with_positions(batch: _Batch) -> list[tuple[WatchEvent, int]]:
    """The batch's events, each with the partition's position once it is handed out (0 while more
    of its revision follow: a revision counts as delivered once all of it was)."""
    events = batch.events
    positioned = []
    for index, event in enumerate(events):
        if index + 1 == len(events):
            position = batch.position
        elif events[index + 1].revision != event.revision:
            position = event.revision + 1
        else:
            position = 0
        positioned.append((event, position))
    return positioned


def _compacted_everywhere(partition: int, refusals: list[WatchCompactedError]) -> WatchCompactedError:
    """The error of a position no replica of `partition` holds any more. Its compact_revision is
    the latest of the replicas' oldest revisions: every replica that caught up holds the changes
    from there on (a lagging follower's history reaches back further only until it catches up)."""
    revision = refusals[0].revision
    held_from = max(refusal.compact_revision for refusal in refusals)
    return WatchCompactedError(
        f"partition {partition}: no replica holds the changes from revision {revision} on any more (they "
        f"hold them from revision {held_from} on): start a new watch from now, then list the keys again "
        f"(docs/watch.md, 'Re-listing'); or watch from revision {held_from}, knowing the changes before it were missed",
        partition=partition,
        revision=revision,
        compact_revision=held_from,
    )
