"""The change-notification hub: each partition's applied changes, handed to whoever waits for them.

The applier reports every change it applies to a user key (a put, a delete, a key deleted by
its lease's expiry or revocation) as a `Change` (`kvstore.statemachine.events`). After the node
has written the batch holding those changes, it publishes them here with the partition's
applied revision (`publish`), in revision order. Two kinds of waiters take them:

* `deleted(partition, key)`: a future that resolves with the change that deletes `key` (or with
  None when a snapshot replaced the partition's state: look again). A lock waiter waits for the
  deletion of its predecessor's key only, so each deletion wakes exactly one waiter (no herd)
  and nobody polls.
* `watch(partition, start, end, start_revision)`: a `Cursor` over the partition's **history**,
  the `Watch` RPC's feed (docs/watch.md). The history holds the partition's most recent
  changes, oldest first, and knows the revisions it covers completely: every change at a
  revision from `first` to `last` (the applied revision) is in it. A cursor is only a position
  in it and a key range; it takes the changes of its range in order, in batches of whole
  revisions. All cursors of a partition share its one history, so memory does not grow with
  the number of watchers or with a slow one: a cursor that falls behind the history's start
  fails with `WatchCompactedError` rather than skip what it missed.

The history is bounded per partition, in changes and in bytes (`change_cost`), whichever is
reached first; the oldest revision goes first, never the newest (a watcher keeping up must see
every revision, however large). When a snapshot replaces a partition's state (`replaced`), the
changes in between are not known one by one: the history restarts after the snapshot.

Pure asyncio on the node's event loop: publishing never blocks and never awaits.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from operator import attrgetter

from kvstore.errors import WatchCompactedError
from kvstore.statemachine import Change, ChangeKind

DEFAULT_HISTORY_CHANGES = 1000
"""The most changes a partition's history holds."""

DEFAULT_HISTORY_BYTES = 256 << 10
"""The most bytes (`change_cost`) a partition's history holds, besides its newest revision:
64 partitions hosted cost at most 16 MiB."""

CHANGE_OVERHEAD_BYTES = 240
"""What a change costs in memory besides its key and stored records: the `Change` object, the
headers of its three bytes objects, its list slot (measured by tests/unit/test_hub.py)."""

_revision_of = attrgetter("revision")


def change_cost(change: Change) -> int:
    """The memory `change` holds, as the history counts it."""
    stored = len(change.stored) if change.stored is not None else 0
    prev_stored = len(change.prev_stored) if change.prev_stored is not None else 0
    return CHANGE_OVERHEAD_BYTES + len(change.key) + stored + prev_stored


class HubClosedError(Exception):
    """The hub stopped (the node is closing, or no longer holds the partition): waiters ask again
    elsewhere."""


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    """What a cursor took: `changes` of its range, in revision order, and `revision`: every
    change of the range up to and including it has now been taken. With `fragment`, the changes
    end inside revision `revision + 1`, too large for one batch; the rest of it comes next."""

    changes: tuple[Change, ...]
    revision: int
    fragment: bool


@dataclass(frozen=True, slots=True)
class HubTotals:
    """What a node's hub holds, over every partition (read when metrics are scraped)."""

    cursors: int = 0  # watches open on this node
    changes: int = 0  # changes the histories hold
    bytes: int = 0  # their memory, as `change_cost` counts it


class _History:
    """One partition's recent changes: every change at revisions `first`..`last` (`last` is the
    applied revision), oldest first."""

    def __init__(self, complete_after: int, applied: int) -> None:
        self.first = complete_after + 1
        self.last = applied
        self.changes: list[Change] = []
        self.bytes = 0
        self.cursors: set[Cursor] = set()

    def __len__(self) -> int:
        return len(self.changes)

    def append(self, applied: int, changes: Iterable[Change], max_changes: int, max_bytes: int) -> None:
        held = self.changes
        for change in changes:
            held.append(change)
            self.bytes += change_cost(change)
        self.last = max(self.last, applied)
        if not held:
            return
        newest = held[-1].revision
        trimmed = 0
        while len(held) - trimmed > max_changes or self.bytes > max_bytes:
            revision = held[trimmed].revision
            if revision == newest:
                break
            while held[trimmed].revision == revision:
                self.bytes -= change_cost(held[trimmed])
                trimmed += 1
            self.first = revision + 1
        # Dropped at once (a pointer move of at most max_changes slots): what is trimmed is freed.
        del held[:trimmed]

    def restart(self, after: int) -> None:
        """Forget every change: the history starts after revision `after`."""
        self.changes.clear()
        self.bytes = 0
        self.first = after + 1
        self.last = max(self.last, after)

    def start_index(self, revision: int) -> int:
        """The index of the first held change at or after `revision`."""
        return bisect_left(self.changes, revision, key=_revision_of)


class Cursor:
    """A position in one partition's history (the next revision to take) and a key range
    ``start <= key < end`` (`end` None: to the end of the partition). `next` takes the next
    batch; `close` when done."""

    def __init__(
        self, hub: ChangeHub, history: _History, partition: int, start: bytes, end: bytes | None, position: int
    ) -> None:
        self.partition = partition
        self.start = start
        self.end = end
        self.position = position
        self._hub = hub
        self._history = history
        self._skip = 0  # changes of the range at revision `position` already taken (fragments)
        self._wake: asyncio.Future[None] | None = None
        self._poked = False
        self._ended: str | None = None

    @property
    def revision(self) -> int:
        """Every change of the range up to this revision has been taken."""
        return self.position - 1

    def covers(self, key: bytes) -> bool:
        return self.start <= key and (self.end is None or key < self.end)

    async def next(self, max_bytes: int, timeout: float | None = None) -> ChangeBatch:
        """The changes of the range from `position` on, in whole revisions of at most about
        `max_bytes` (`change_cost`; a revision larger than that alone comes in fragments).

        Waits until the partition applied a revision at or past `position`; returns an empty
        batch, and `revision` where it is, after `timeout` seconds or when `poke`d. An empty
        batch may also mean revisions applied without a change of the range: `revision` then
        moved on. Raises `WatchCompactedError` when the history no longer reaches back to
        `position`, `HubClosedError` once the partition was dropped or the cursor closed."""
        history = self._history
        if self._ended is None and history.last < self.position and not self._poked:
            self._wake = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._wake
            except TimeoutError:
                pass
            finally:
                self._wake = None
        self._poked = False
        if self._ended is not None:
            raise HubClosedError(self._ended)
        if self.position < history.first:
            raise WatchCompactedError(
                f"partition {self.partition}: the changes from revision {self.position} on are no longer in "
                f"this replica's history, which starts at revision {history.first}",
                partition=self.partition,
                revision=self.position,
                compact_revision=history.first,
            )
        return self._take(max_bytes)

    def _take(self, max_bytes: int) -> ChangeBatch:
        history = self._history
        held = history.changes
        index = history.start_index(self.position)
        taken: list[Change] = []
        size = 0
        while index < len(held):
            revision = held[index].revision
            group = []
            while index < len(held) and held[index].revision == revision:
                if self.covers(held[index].key):
                    group.append(held[index])
                index += 1
            if revision == self.position and self._skip:
                group = group[self._skip :]
            if not group:
                continue
            group_size = sum(map(change_cost, group))
            if taken and size + group_size > max_bytes:
                return self._taken(taken, revision - 1)
            if group_size > max_bytes and len(group) > 1:  # (nothing taken yet)
                return self._fragment(group, revision, max_bytes)
            taken.extend(group)
            size += group_size
        return self._taken(taken, history.last)

    def _fragment(self, group: list[Change], revision: int, max_bytes: int) -> ChangeBatch:
        """The first changes of `group`, the rest of revision `revision`, that fit in
        `max_bytes` (at least one)."""
        fitting, size = 1, change_cost(group[0])
        while size + change_cost(group[fitting]) <= max_bytes:
            size += change_cost(group[fitting])
            fitting += 1
        self._skip = (self._skip if revision == self.position else 0) + fitting
        self.position = revision
        return ChangeBatch(tuple(group[:fitting]), revision - 1, True)

    def _taken(self, taken: list[Change], revision: int) -> ChangeBatch:
        self.position = max(self.position, revision + 1)
        self._skip = 0
        return ChangeBatch(tuple(taken), self.revision, False)

    def poke(self) -> None:
        """Make a waiting (or the next) `next` return at once."""
        self._poked = True
        self._wakeup()

    def _wakeup(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _end(self, reason: str) -> None:
        if self._ended is None:
            self._ended = reason
            self._history.cursors.discard(self)
            self._wakeup()

    def close(self) -> None:
        self._end("closed by its owner")


class ChangeHub:
    """Per partition: the futures waiting for a key's deletion, and the history its cursors read.

    Rules that bind the publisher (the node): `open` a partition before publishing to it, with
    the revision after which its history is complete; publish a partition's changes in revision
    order, only after the batch holding them is written (a woken waiter may read the engine at
    once); `replaced` when a snapshot replaces its state; `drop_partition` when the node stops
    holding it.
    """

    def __init__(self, *, max_changes: int = DEFAULT_HISTORY_CHANGES, max_bytes: int = DEFAULT_HISTORY_BYTES) -> None:
        if max_changes < 1 or max_bytes < 1:
            raise ValueError(f"the history bounds must be at least 1, got {max_changes} changes, {max_bytes} bytes")
        self.max_changes = max_changes
        self.max_bytes = max_bytes
        self._deletions: dict[tuple[int, bytes], list[asyncio.Future[Change | None]]] = {}
        self._histories: dict[int, _History] = {}

    def open(self, partition: int, applied: int, complete_after: int | None = None) -> None:
        """Start the history of `partition`, whose state is at revision `applied`: it holds the
        changes published from now on, so it is complete after `applied` (or after
        `complete_after`, when no change happened in between: a partition that never applied
        anything but its bootstrap)."""
        after = applied if complete_after is None else complete_after
        self._histories[partition] = _History(after, applied)

    def history_bounds(self, partition: int) -> tuple[int, int]:
        """(first, last): the history of `partition` holds every change from revision `first`
        to `last`, the applied revision."""
        history = self._history(partition)
        return history.first, history.last

    def history_size(self, partition: int) -> tuple[int, int]:
        """(changes, bytes) the history of `partition` holds."""
        history = self._history(partition)
        return len(history), history.bytes

    def totals(self) -> HubTotals:
        """The cursors, changes and bytes of every partition's history together."""
        histories = self._histories.values()
        return HubTotals(sum(len(h.cursors) for h in histories), sum(len(h) for h in histories),
                         sum(h.bytes for h in histories))

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

    def watch(self, partition: int, start: bytes, end: bytes | None, start_revision: int) -> Cursor:
        """A cursor over the changes of keys ``start <= key < end`` (`end` None: to the end of
        the partition) from `start_revision` on (0: from the next revision applied).
        `WatchCompactedError` when the history no longer reaches back to `start_revision`."""
        history = self._history(partition)
        position = start_revision or history.last + 1
        if position < history.first:
            raise WatchCompactedError(
                f"partition {partition}: the changes from revision {position} on are no longer in this "
                f"replica's history, which starts at revision {history.first}",
                partition=partition,
                revision=position,
                compact_revision=history.first,
            )
        cursor = Cursor(self, history, partition, start, end, position)
        history.cursors.add(cursor)
        return cursor

    def publish(self, partition: int, applied: int, changes: Iterable[Change]) -> None:
        """The partition applied up to revision `applied`, making `changes` (written, in
        revision order): record them and wake their waiters."""
        changes = list(changes)
        deletions = self._deletions
        if deletions:
            for change in changes:
                if change.kind is ChangeKind.DELETE:
                    for future in deletions.pop((partition, change.key), ()):
                        if not future.done():
                            future.set_result(change)
        history = self._history(partition)
        if applied <= history.last and not changes:
            return
        history.append(applied, changes, self.max_changes, self.max_bytes)
        for cursor in history.cursors:
            cursor._wakeup()

    def replaced(self, partition: int, revision: int) -> None:
        """A snapshot at `revision` replaced the state of `partition`: deletion waiters look
        again; the history restarts after `revision`, so cursors short of it are compacted."""
        for key in [key for key in self._deletions if key[0] == partition]:
            for future in self._deletions.pop(key):
                if not future.done():
                    future.set_result(None)
        history = self._history(partition)
        history.restart(revision)
        for cursor in history.cursors:
            cursor._wakeup()

    def drop_partition(self, partition: int, reason: str) -> None:
        """Fail every waiter of `partition` with HubClosedError(`reason`) and drop its history."""
        for key in [key for key in self._deletions if key[0] == partition]:
            for future in self._deletions.pop(key):
                if not future.done():
                    future.set_exception(HubClosedError(reason))
        history = self._histories.pop(partition, None)
        if history is not None:
            for cursor in list(history.cursors):
                cursor._end(reason)

    def close(self) -> None:
        """Fail every waiter: the node is closing."""
        for partition in {key[0] for key in self._deletions} | set(self._histories):
            self.drop_partition(partition, "the node is closing")

    def waiting(self, partition: int) -> int:
        """How many deletion futures and cursors wait on `partition` (for status/tests)."""
        futures = sum(
            sum(not future.done() for future in waiters)
            for key, waiters in self._deletions.items()
            if key[0] == partition
        )
        history = self._histories.get(partition)
        return futures + (len(history.cursors) if history is not None else 0)

    def _history(self, partition: int) -> _History:
        history = self._histories.get(partition)
        if history is None:
            raise HubClosedError(f"partition {partition} is not held here")
        return history
