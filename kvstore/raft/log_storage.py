"""The seam between the Raft core and durable log storage, with an in-memory implementation.

The core only reads through `LogStorage`; the caller writes to it while handling a `Ready`
(append entries, set the hard state, install snapshots) and compacts it when it has taken a
snapshot of its state machine. `kvstore.storage` provides the LevelDB-backed implementation.
"""

from __future__ import annotations

from typing import Protocol

from kvstore.raft.errors import CompactedError, SnapshotTemporarilyUnavailableError, UnavailableError
from kvstore.raft.types import (
    EMPTY_HARD_STATE,
    EMPTY_SNAPSHOT,
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMeta,
)

ENTRY_OVERHEAD_BYTES = 24
"""Rough per-entry framing cost used when limiting batches by size."""


def entries_size(entries: list[Entry] | tuple[Entry, ...]) -> int:
    return sum(len(e.data) for e in entries) + ENTRY_OVERHEAD_BYTES * len(entries)


def limit_size(entries: list[Entry], max_bytes: int) -> list[Entry]:
    """Cut `entries` to at most `max_bytes`, but always keep the first entry."""
    total = 0
    for i, entry in enumerate(entries):
        total += len(entry.data) + ENTRY_OVERHEAD_BYTES
        if total > max_bytes and i > 0:
            return entries[:i]
    return entries


class LogStorage(Protocol):
    """Read access to the stable part of a Raft log."""

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state and the configuration as of the last applied snapshot."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries in [lo, hi), at most `max_bytes` (but at least one). Raises CompactedError
        when lo is at or below the snapshot index, UnavailableError when hi > last_index + 1."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at `index`; valid from `first_index() - 1` (the snapshot's term)."""
        ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot; may raise SnapshotTemporarilyUnavailableError."""
        ...


class MemoryLogStorage:
    """`LogStorage` kept in a Python list: for tests, the simulator and benchmarks.

    `_entries[0]` is a dummy entry standing for the snapshot point (its index and term).
    """

    def __init__(self) -> None:
        self._hard_state = EMPTY_HARD_STATE
        self._snapshot = EMPTY_SNAPSHOT
        self._entries: list[Entry] = [Entry(0, 0)]

    # -- LogStorage -------------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.meta.conf_state

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        offset = self._entries[0].index
        if lo <= offset:
            raise CompactedError(f"index {lo} is compacted (first is {offset + 1})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"index {hi - 1} is beyond the last index {self.last_index()}")
        return limit_size(self._entries[lo - offset : hi - offset], max_bytes)

    def term(self, index: int) -> int:
        offset = self._entries[0].index
        if index < offset:
            raise CompactedError(f"index {index} is compacted")
        if index - offset >= len(self._entries):
            raise UnavailableError(f"index {index} is beyond the last index")
        return self._entries[index - offset].term

    def first_index(self) -> int:
        return self._entries[0].index + 1

    def last_index(self) -> int:
        return self._entries[0].index + len(self._entries) - 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- writes by the caller ---------------------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def set_hard_state(self, hard_state: HardState) -> None:
        self._hard_state = hard_state

    def append(self, entries: tuple[Entry, ...] | list[Entry]) -> None:
        """Append, replacing any conflicting suffix; entries already compacted are ignored."""
        if not entries:
            return
        first = self.first_index()
        last = entries[-1].index
        if last < first:
            return
        if first > entries[0].index:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._entries[0].index
        if offset == len(self._entries):
            self._entries.extend(entries)
        elif offset < len(self._entries):
            del self._entries[offset:]
            self._entries.extend(entries)
        else:
            raise UnavailableError(f"missing log entry: last {self.last_index()}, appending {entries[0].index}")

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the whole log by `snapshot` (a follower installing the leader's snapshot)."""
        if snapshot.meta.index <= self._snapshot.meta.index:
            return
        self._snapshot = snapshot
        self._entries = [Entry(snapshot.meta.index, snapshot.meta.term)]

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the state machine as of applied `index`."""
        if index <= self._snapshot.meta.index:
            raise SnapshotTemporarilyUnavailableError(f"snapshot at {index} is out of date")
        if index > self.last_index():
            raise UnavailableError(f"snapshot index {index} is beyond the last index")
        self._snapshot = Snapshot(SnapshotMeta(index, self.term(index), conf_state), data)
        return self._snapshot

    def compact(self, index: int) -> None:
        """Drop entries up to and including `index` (which must be covered by a snapshot)."""
        offset = self._entries[0].index
        if index <= offset:
            return
        if index > self.last_index():
            raise UnavailableError(f"compact {index} is beyond the last index {self.last_index()}")
        i = index - offset
        self._entries = [Entry(index, self._entries[i].term), *self._entries[i + 1 :]]
