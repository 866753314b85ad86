"""The change-notification hub: the node's applied changes, handed to whoever waits for them.

The applier reports every change it applies to a user key (a put, a delete, a key deleted by
its lease's expiry or revocation) as a `Change` (`kvstore.statemachine.events`). After the node
has written the batch holding those changes, it publishes them here, per partition, in revision
order. Two kinds of waiters take them:

* `deleted(partition, key)`: a future that resolves with the change that deletes `key` (or with
  None when a snapshot replaced the partition's state: look again). A lock waiter waits for the
  deletion of its predecessor's key only, so each deletion wakes exactly one waiter (no herd)
  and nobody polls.
* `watch(partition, start, end)`: a `Subscription` receiving every change of the keys in
  ``[start, end)`` published from now on, in order (the mechanism `Watch` streams are built on;
  history before the subscription is the caller's to read from the log).

Pure asyncio on the node's event loop: publishing never blocks and never awaits. A
subscription that falls more than `max_pending` changes behind is ended (`lagging`) rather than
let grow without bound; its owner resumes from the last revision it took. When a snapshot
replaces a partition's state (`replaced`), its subscriptions end too: the changes in between
are not known one by one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

from kvstore.statemachine import Change, ChangeKind


class HubClosedError(Exception):
    """The hub stopped (the node is closing, or no longer holds the partition): waiters ask again
    elsewhere."""


class Subscription:
    """Changes of one key range of one partition, in publish order. Iterate it (`async for`), or
    `get()` one change; `close()` when done. Ends with `HubClosedError` when the hub drops the
    partition, or when it fell more than `max_pending` changes behind (`lagging` is then True)."""

    def __init__(
        self, hub: ChangeHub, partition: int, start: bytes, end: bytes | None, max_pending: int
    ) -> None:
        self.partition = partition
        self.start = start
        self.end = end
        self.lagging = False
        self._hub = hub
        self._max_pending = max_pending
        self._pending: deque[Change] = deque()
        self._ready = asyncio.Event()
        self._ended: str | None = None

    def covers(self, key: bytes) -> bool:
        return self.start <= key and (self.end is None or key < self.end)

    def _offer(self, change: Change) -> None:
        if self._ended is not None:
            return
        if len(self._pending) >= self._max_pending:
            self.lagging = True
            self._end(f"the watcher fell more than {self._max_pending} changes behind")
            return
        self._pending.append(change)
        self._ready.set()

    def _end(self, reason: str) -> None:
        if self._ended is None:
            self._ended = reason
            self._hub._forget(self)
            self._ready.set()

    async def get(self) -> Change:
        """The next change; HubClosedError once ended and drained (a lagging one at once)."""
        while not self._pending or self.lagging:
            if self._ended is not None:
                raise HubClosedError(self._ended)
            self._ready.clear()
            await self._ready.wait()
        return self._pending.popleft()

    def close(self) -> None:
        self._end("closed by its owner")

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Change:
        try:
            return await self.get()
        except HubClosedError:
            if self._ended == "closed by its owner":
                raise StopAsyncIteration from None
            raise


class ChangeHub:
    """Per partition: the futures waiting for a key's deletion, and the range subscriptions.

    Rules that bind the publisher (the node): publish a partition's changes in revision order,
    only after the batch holding them is written (a woken waiter may read the engine at once),
    and `drop_partition` when the node stops holding it.
    """

    def __init__(self, *, max_pending: int = 10_000) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self._max_pending = max_pending
        self._deletions: dict[tuple[int, bytes], list[asyncio.Future[Change | None]]] = {}
        self._subscriptions: dict[int, list[Subscription]] = {}

    def deleted(self, partition: int, key: bytes) -> asyncio.Future[Change | None]:
        """A future resolved with the change deleting `key` of `partition` (published from now
        on), or with None when a snapshot replaced the partition's state (look again). Cancel
        it to stop waiting. Check that the key exists after asking, not before, or a deletion in
        between is missed."""
        future: asyncio.Future[Change | None] = asyncio.get_running_loop().create_future()
        waiters = self._deletions.setdefault((partition, key), [])
        waiters.append(future)
        future.add_done_callback(lambda done: self._discard((partition, key), done))
        return future

    def _discard(self, key: tuple[int, bytes], future: asyncio.Future[Change | None]) -> None:
        # A waiter that gave up leaves no trace, however long the key lives. (Done callbacks run
        # on a later loop turn; a resolved future was already popped by `publish`.)
        waiters = self._deletions.get(key)
        if waiters is not None and future in waiters:
            waiters.remove(future)
            if not waiters:
                del self._deletions[key]

    def watch(self, partition: int, start: bytes, end: bytes | None = None) -> Subscription:
        """Subscribe to the changes of keys ``start <= key < end`` (`end` None: to the end of the
        partition) published from now on."""
        subscription = Subscription(self, partition, start, end, self._max_pending)
        self._subscriptions.setdefault(partition, []).append(subscription)
        return subscription

    def publish(self, changes: Iterable[Change]) -> None:
        """Hand `changes` (written, in revision order per partition) to their waiters."""
        deletions = self._deletions
        subscriptions = self._subscriptions
        for change in changes:
            if change.kind is ChangeKind.DELETE and deletions:
                for future in deletions.pop((change.partition, change.key), ()):
                    if not future.done():
                        future.set_result(change)
            for subscription in subscriptions.get(change.partition, ()):
                if subscription.covers(change.key):
                    subscription._offer(change)

    def replaced(self, partition: int, revision: int) -> None:
        """A snapshot at `revision` replaced the state of `partition`: deletion waiters look
        again, subscriptions end (their owners resume from the log or list anew)."""
        for key in [key for key in self._deletions if key[0] == partition]:
            for future in self._deletions.pop(key):
                if not future.done():
                    future.set_result(None)
        for subscription in list(self._subscriptions.get(partition, ())):
            subscription._end(f"a snapshot at revision {revision} replaced partition {partition}")

    def drop_partition(self, partition: int, reason: str) -> None:
        """Fail every waiter of `partition` with HubClosedError(`reason`)."""
        for key in [key for key in self._deletions if key[0] == partition]:
            for future in self._deletions.pop(key):
                if not future.done():
                    future.set_exception(HubClosedError(reason))
        for subscription in list(self._subscriptions.get(partition, ())):
            subscription._end(reason)

    def close(self) -> None:
        """Fail every waiter: the node is closing."""
        for partition in {key[0] for key in self._deletions} | set(self._subscriptions):
            self.drop_partition(partition, "the node is closing")

    def waiting(self, partition: int) -> int:
        """How many deletion futures and subscriptions wait on `partition` (for status/tests)."""
        futures = sum(
            sum(not future.done() for future in waiters)
            for key, waiters in self._deletions.items()
            if key[0] == partition
        )
        return futures + len(self._subscriptions.get(partition, ()))

    def _forget(self, subscription: Subscription) -> None:
        subscriptions = self._subscriptions.get(subscription.partition)
        if subscriptions is not None and subscription in subscriptions:
            subscriptions.remove(subscription)
            if not subscriptions:
                del self._subscriptions[subscription.partition]
