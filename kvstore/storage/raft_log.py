"""Durable Raft log storage for one group, over an `Engine`.

`DurableLogStorage` implements `kvstore.raft.log_storage.LogStorage` with the same semantics as
`MemoryLogStorage`: the log starts after a dummy entry at the compaction point (its index and
term), reads at or below it raise `CompactedError`, beyond the last index `UnavailableError`.

Writes are staged into a caller-supplied `WriteBatch`, so that a node writes ONE batch per Ready
cycle for all its groups (group commit). The in-memory view (bounds, terms, the cached tail of
the log) changes as soon as a write is staged. The rules this makes binding:

* write the batch (synced when the Ready says `must_sync`) before sending any message that
  depends on what was staged, and before reading back entries staged in it (only the tail
  cache, not the engine, knows them until then; the Raft core only reads stable entries);
* write batches in the order they were staged;
* if writing a batch fails, this object is ahead of the disk: drop it and `open` again;
* stage and read from one thread (the engine's `write` may run in another).

Stored per group (see `kvstore.storage.keys`; records encoded by `kvstore.codec`): the entries, whose lowest key is always the dummy
entry (data dropped) once anything was written; the hard state; the latest snapshot's metadata.
Snapshots themselves belong to the state machine, which hands them over through a source.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable

from kvstore.codec import CodecError, Encoder, decode_entry, decode_hard_state, decode_snapshot_meta
from kvstore.raft.errors import CompactedError, SnapshotTemporarilyUnavailableError, UnavailableError
from kvstore.raft.log_storage import ENTRY_OVERHEAD_BYTES, limit_size
from kvstore.raft.types import (
    EMPTY_HARD_STATE,
    EMPTY_SNAPSHOT,
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMeta,
)
from kvstore.storage.engine import Engine, WriteBatch
from kvstore.storage.errors import CorruptionError
from kvstore.storage.keys import (
    HARD_STATE_TAG,
    hard_state_key,
    log_key,
    log_prefix,
    parse_group_key,
    parse_log_key,
    prefix_end,
    snapshot_meta_key,
)


def stored_groups(engine: Engine) -> list[int]:
    """The groups that have a Raft log on `engine` (each has a hard state)."""
    return [parse_group_key(key) for key, _ in engine.iterate(HARD_STATE_TAG, prefix_end(HARD_STATE_TAG))]

SnapshotSource = Callable[[], Snapshot]
"""Returns the state machine's snapshot as it is now (metadata: its applied index, that entry's
term and the configuration as of it), or raises `SnapshotTemporarilyUnavailableError` when it
cannot (yet)."""

DEFAULT_MAX_CACHED_ENTRIES = 1024
DEFAULT_MAX_CACHED_BYTES = 4 << 20
CACHED_ENTRY_OVERHEAD_BYTES = 128
"""What a cached entry costs in memory beside its data (the `Entry`, its bytes object and index
int, its slot in the list), so that `max_cached_bytes` bounds the memory the cache takes."""


def _cached_bytes(entries: list[Entry] | tuple[Entry, ...]) -> int:
    return sum(len(entry.data) for entry in entries) + CACHED_ENTRY_OVERHEAD_BYTES * len(entries)


class DurableLogStorage:
    """The Raft log, hard state and snapshot metadata of one group. Build it with `open`.

    Terms are kept in memory as runs (first index, term) over the whole log, so `term()` never
    reads the engine; a run starts only where the term changes, so there are few. The recent
    tail of entries is cached (at most `max_cached_entries` and `max_cached_bytes`, counted as
    the memory the entries take) so that a leader replicating what it just appended does not
    read the engine.
    """

    def __init__(
        self,
        engine: Engine,
        group_id: int,
        snapshot_source: SnapshotSource,
        *,
        max_cached_entries: int = DEFAULT_MAX_CACHED_ENTRIES,
        max_cached_bytes: int = DEFAULT_MAX_CACHED_BYTES,
    ) -> None:
        """An empty log; use `open`, which also loads what the engine holds for the group."""
        self._engine = engine
        self._group_id = group_id
        self._snapshot_source = snapshot_source
        self._max_cached_entries = max_cached_entries
        self._max_cached_bytes = max_cached_bytes
        self._encoder = Encoder()
        self._hard_state = EMPTY_HARD_STATE
        self._snapshot_meta = SnapshotMeta()
        self._dummy_index = 0
        self._last_index = 0
        # _run_starts[i] is the first index with term _run_terms[i]; the first run starts at the
        # dummy entry.
        self._run_starts: list[int] = [0]
        self._run_terms: list[int] = [0]
        # The cached tail: entries [_tail_first, _last_index].
        self._tail: list[Entry] = []
        self._tail_first = 1
        self._tail_bytes = 0

    @classmethod
    def open(
        cls,
        engine: Engine,
        group_id: int,
        snapshot_source: SnapshotSource,
        *,
        max_cached_entries: int = DEFAULT_MAX_CACHED_ENTRIES,
        max_cached_bytes: int = DEFAULT_MAX_CACHED_BYTES,
    ) -> DurableLogStorage:
        """Load group `group_id` from `engine` (empty if nothing was ever written for it).

        Reads every log entry of the group once, to rebuild the term runs and check that the
        log has no holes (`CorruptionError`); keep logs short by compacting.
        """
        storage = cls(
            engine,
            group_id,
            snapshot_source,
            max_cached_entries=max_cached_entries,
            max_cached_bytes=max_cached_bytes,
        )
        storage._load()
        return storage

    def _load(self) -> None:
        try:
            self._load_records()
        except CodecError as exc:
            raise CorruptionError(f"group {self._group_id}: a stored record does not decode: {exc}") from None

    def _load_records(self) -> None:
        raw_hard_state = self._engine.get(hard_state_key(self._group_id))
        if raw_hard_state is not None:
            self._hard_state = decode_hard_state(raw_hard_state)
        raw_meta = self._engine.get(snapshot_meta_key(self._group_id))
        if raw_meta is not None:
            self._snapshot_meta = decode_snapshot_meta(raw_meta)
        self._reset_log(self._snapshot_meta.index, self._snapshot_meta.term)
        prefix = log_prefix(self._group_id)
        found_dummy = False
        for key, raw_entry in self._engine.iterate(prefix, prefix_end(prefix)):
            entry = decode_entry(raw_entry)
            _, index = parse_log_key(key)
            if entry.index != index:
                raise CorruptionError(f"group {self._group_id}: log key {index} holds entry {entry.index}")
            if not found_dummy:
                found_dummy = True
                self._reset_log(index, entry.term)
            elif index != self._last_index + 1:
                raise CorruptionError(
                    f"group {self._group_id}: log entries {self._last_index + 1}..{index - 1} are missing"
                )
            else:
                self._extend(entry.index, [entry])

    # -- LogStorage -------------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot_meta.conf_state

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        if lo <= self._dummy_index:
            raise CompactedError(f"index {lo} is compacted (first is {self._dummy_index + 1})")
        if hi > self._last_index + 1:
            raise UnavailableError(f"index {hi - 1} is beyond the last index {self._last_index}")
        if lo >= hi:
            return []
        tail_first = self._tail_first
        if lo >= tail_first:
            return limit_size(self._tail[lo - tail_first : hi - tail_first], max_bytes)
        # Older entries come from the engine, then the rest from the tail, cut by size as
        # `limit_size` would cut the whole list.
        found: list[Entry] = []
        total = 0
        stored_hi = min(hi, tail_first)
        group = self._group_id
        for _, raw_entry in self._engine.iterate(log_key(group, lo), log_key(group, stored_hi)):
            try:
                entry = decode_entry(raw_entry)
            except CodecError as exc:
                raise CorruptionError(f"group {group}: a stored log entry does not decode: {exc}") from None
            if entry.index != lo + len(found):
                break
            total += len(entry.data) + ENTRY_OVERHEAD_BYTES
            if total > max_bytes and found:
                return found
            found.append(entry)
        if len(found) != stored_hi - lo:
            raise CorruptionError(f"group {group}: log entry {lo + len(found)} is missing from storage")
        if hi > tail_first:
            for entry in self._tail[: hi - tail_first]:
                total += len(entry.data) + ENTRY_OVERHEAD_BYTES
                if total > max_bytes:
                    return found
                found.append(entry)
        return found

    def term(self, index: int) -> int:
        if index < self._dummy_index:
            raise CompactedError(f"index {index} is compacted")
        if index > self._last_index:
            raise UnavailableError(f"index {index} is beyond the last index")
        if index >= self._run_starts[-1]:
            return self._run_terms[-1]
        return self._run_terms[bisect_right(self._run_starts, index) - 1]

    def first_index(self) -> int:
        return self._dummy_index + 1

    def last_index(self) -> int:
        return self._last_index

    def snapshot(self) -> Snapshot:
        """The state machine's snapshot, from the source, once a snapshot point was recorded
        (`EMPTY_SNAPSHOT` before). The node records points only at or behind its applied
        index, so the source's snapshot is never older than the recorded point; when newer, a
        follower that installs it needs fewer entries afterwards."""
        if self._snapshot_meta.index == 0:
            return EMPTY_SNAPSHOT
        return self._snapshot_source()

    # -- state ------------------------------------------------------------------------------

    @property
    def group_id(self) -> int:
        return self._group_id

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    @property
    def snapshot_meta(self) -> SnapshotMeta:
        return self._snapshot_meta

    # -- staged writes ----------------------------------------------------------------------

    def set_hard_state(self, batch: WriteBatch, hard_state: HardState) -> None:
        batch.put(hard_state_key(self._group_id), self._encoder.hard_state(hard_state))
        self._hard_state = hard_state

    def append(self, batch: WriteBatch, entries: tuple[Entry, ...] | list[Entry]) -> None:
        """Append consecutive `entries`, replacing any conflicting suffix (whose keys beyond the
        new last index are deleted); entries at or below the dummy are ignored."""
        if not entries:
            return
        first = self._dummy_index + 1
        if entries[-1].index < first:
            return
        if entries[0].index < first:
            entries = entries[first - entries[0].index :]
        start = entries[0].index
        new_last = entries[-1].index
        if start > self._last_index + 1:
            raise UnavailableError(f"missing log entry: last {self._last_index}, appending {start}")
        if new_last - start + 1 != len(entries):
            raise ValueError(f"entries {start}..{new_last} are not consecutive")
        group = self._group_id
        if start == 1:
            # A fresh log's dummy (0, 0) was never stored; it must be, because on `open` the
            # lowest stored key is taken for the dummy.
            batch.put(log_key(group, 0), self._encoder.entry(Entry(0, 0)))
        encode = self._encoder.entry
        for entry in entries:
            batch.put(log_key(group, entry.index), encode(entry))
        for stale in range(new_last + 1, self._last_index + 1):
            batch.delete(log_key(group, stale))
        self._extend(start, entries)

    def set_snapshot_meta(self, batch: WriteBatch, meta: SnapshotMeta) -> None:
        """Record that the state machine has a snapshot as of `meta.index` (from now on the
        source must serve a snapshot at or above it). Checks as `MemoryLogStorage.create_snapshot` does,
        and that `meta.term` is the log's term at `meta.index`."""
        if meta.index <= self._snapshot_meta.index:
            raise SnapshotTemporarilyUnavailableError(f"snapshot at {meta.index} is out of date")
        if meta.index > self._last_index:
            raise UnavailableError(f"snapshot index {meta.index} is beyond the last index")
        term = self.term(meta.index)
        if meta.term != term:
            raise ValueError(f"snapshot at {meta.index} has term {meta.term}, the log has {term}")
        batch.put(snapshot_meta_key(self._group_id), self._encoder.snapshot_meta(meta))
        self._snapshot_meta = meta

    def compact(self, batch: WriteBatch, index: int) -> None:
        """Drop the entries up to and including `index`, which becomes the dummy entry.

        Unlike `MemoryLogStorage.compact`, refuses (ValueError) to go beyond the snapshot
        index: a follower that needs the dropped entries could not be sent a snapshot covering
        them."""
        if index <= self._dummy_index:
            return
        if index > self._last_index:
            raise UnavailableError(f"compact {index} is beyond the last index {self._last_index}")
        if index > self._snapshot_meta.index:
            raise ValueError(f"compact {index} is beyond the snapshot index {self._snapshot_meta.index}")
        group = self._group_id
        term = self.term(index)
        for dropped in range(self._dummy_index, index):
            batch.delete(log_key(group, dropped))
        batch.put(log_key(group, index), self._encoder.entry(Entry(index, term)))

        run = bisect_right(self._run_starts, index) - 1
        self._run_starts = [index, *self._run_starts[run + 1 :]]
        self._run_terms = [term, *self._run_terms[run + 1 :]]
        self._dummy_index = index
        if index >= self._tail_first:
            dropped_tail = index - self._tail_first + 1
            self._tail_bytes -= _cached_bytes(self._tail[:dropped_tail])
            del self._tail[:dropped_tail]
            self._tail_first = index + 1

    def apply_snapshot(self, batch: WriteBatch, snapshot: Snapshot) -> None:
        """Replace the whole log by `snapshot`'s point (a follower installing the leader's
        snapshot); ignored unless newer than the current snapshot. Only the metadata is stored
        here: the state machine installs `snapshot.data` in the same batch."""
        meta = snapshot.meta
        if meta.index <= self._snapshot_meta.index:
            return
        group = self._group_id
        for dropped in range(self._dummy_index, self._last_index + 1):
            batch.delete(log_key(group, dropped))
        # Batches apply in order, so this put wins over a delete of the same key above.
        batch.put(log_key(group, meta.index), self._encoder.entry(Entry(meta.index, meta.term)))
        batch.put(snapshot_meta_key(group), self._encoder.snapshot_meta(meta))
        self._snapshot_meta = meta
        self._reset_log(meta.index, meta.term)

    def destroy(self, batch: WriteBatch) -> None:
        """Stage deleting the whole group: its log, hard state and snapshot metadata (the replica
        left the group; drop this object once the batch is written)."""
        group = self._group_id
        for index in range(self._dummy_index, self._last_index + 1):
            batch.delete(log_key(group, index))
        batch.delete(hard_state_key(group))
        batch.delete(snapshot_meta_key(group))

    # -- in-memory view ---------------------------------------------------------------------

    def _reset_log(self, dummy_index: int, dummy_term: int) -> None:
        self._dummy_index = dummy_index
        self._last_index = dummy_index
        self._run_starts = [dummy_index]
        self._run_terms = [dummy_term]
        self._tail = []
        self._tail_first = dummy_index + 1
        self._tail_bytes = 0

    def _extend(self, start: int, entries: tuple[Entry, ...] | list[Entry]) -> None:
        """Make `entries` (from `start`, within first..last+1) the end of the log."""
        run_starts, run_terms = self._run_starts, self._run_terms
        if start <= run_starts[-1]:
            # start > the dummy's index, so the dummy's run always stays.
            run = bisect_left(run_starts, start)
            del run_starts[run:]
            del run_terms[run:]
        term = run_terms[-1]
        for entry in entries:
            if entry.term != term:
                term = entry.term
                run_starts.append(entry.index)
                run_terms.append(term)

        tail = self._tail
        if start < self._tail_first:
            tail.clear()
            self._tail_bytes = 0
            self._tail_first = start
        elif start - self._tail_first < len(tail):
            cut = start - self._tail_first
            self._tail_bytes -= _cached_bytes(tail[cut:])
            del tail[cut:]
        tail.extend(entries)
        self._tail_bytes += _cached_bytes(entries)
        self._last_index = entries[-1].index
        if len(tail) > self._max_cached_entries or self._tail_bytes > self._max_cached_bytes:
            self._trim_tail()

    def _trim_tail(self) -> None:
        tail = self._tail
        tail_bytes = self._tail_bytes
        dropped = 0
        while dropped < len(tail) and (
            len(tail) - dropped > self._max_cached_entries or tail_bytes > self._max_cached_bytes
        ):
            tail_bytes -= len(tail[dropped].data) + CACHED_ENTRY_OVERHEAD_BYTES
            dropped += 1
        if dropped:
            del tail[:dropped]
            self._tail_first += dropped
            self._tail_bytes = tail_bytes
