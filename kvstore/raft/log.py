"""The Raft log as the core sees it: stable storage plus an unstable tail not yet persisted.

Invariant: applied <= committed <= last_index. Entries (and a snapshot) in the unstable part
are handed to the caller in a `Ready`; once the caller has persisted them, `stable_to` /
`stable_snapshot_to` moves the boundary.
"""

from __future__ import annotations

from kvstore.raft.errors import CompactedError, UnavailableError
from kvstore.raft.log_storage import LogStorage, limit_size
from kvstore.raft.types import Entry, EntryType, Snapshot


class RaftLog:
    __slots__ = (
        "storage",
        "committed",
        "applied",
        "unstable_offset",
        "unstable_entries",
        "unstable_snapshot",
        "max_apply_bytes",
    )

    def __init__(self, storage: LogStorage, max_apply_bytes: int) -> None:
        self.storage = storage
        self.max_apply_bytes = max_apply_bytes
        first = storage.first_index()
        last = storage.last_index()
        self.unstable_offset = last + 1
        self.unstable_entries: list[Entry] = []
        self.unstable_snapshot: Snapshot | None = None
        # The snapshot point is committed and applied by definition.
        self.committed = first - 1
        self.applied = first - 1

    # -- bounds and terms -------------------------------------------------------------------

    def first_index(self) -> int:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.meta.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self.unstable_entries:
            return self.unstable_offset + len(self.unstable_entries) - 1
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.meta.index
        return self.storage.last_index()

    def last_term(self) -> int:
        return self.term(self.last_index())

    def term(self, index: int) -> int:
        """Term at `index`; raises CompactedError / UnavailableError outside the log."""
        offset = self.unstable_offset
        if index >= offset:
            i = index - offset
            if i < len(self.unstable_entries):
                return self.unstable_entries[i].term
            raise UnavailableError(f"index {index} is beyond the last index {self.last_index()}")
        snapshot = self.unstable_snapshot
        if snapshot is not None:
            if index == snapshot.meta.index:
                return snapshot.meta.term
            if index < snapshot.meta.index:
                raise CompactedError(f"index {index} is compacted")
        return self.storage.term(index)

    def term_or_zero(self, index: int) -> int:
        try:
            return self.term(index)
        except (CompactedError, UnavailableError):
            return 0

    def match_term(self, index: int, term: int) -> bool:
        try:
            return self.term(index) == term
        except (CompactedError, UnavailableError):
            return False

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Election restriction (§5.4.1): is a candidate's log at least as up-to-date as ours?"""
        our_term = self.last_term()
        return last_term > our_term or (last_term == our_term and last_index >= self.last_index())

    # -- reading entries --------------------------------------------------------------------

    def slice(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries in [lo, hi), size-limited (at least one). Raises CompactedError below the log."""
        if lo >= hi:
            return []
        first = self.first_index()
        if lo < first:
            raise CompactedError(f"index {lo} is compacted (first is {first})")
        offset = self.unstable_offset
        if hi <= offset:
            return self.storage.entries(lo, hi, max_bytes)
        if lo >= offset:
            return limit_size(self.unstable_entries[lo - offset : hi - offset], max_bytes)
        stable = self.storage.entries(lo, offset, max_bytes)
        if len(stable) < offset - lo:
            return stable
        return limit_size(stable + self.unstable_entries[: hi - offset], max_bytes)

    def entries_from(self, lo: int, max_bytes: int) -> list[Entry]:
        return self.slice(lo, self.last_index() + 1, max_bytes)

    def has_next_committed_entries(self) -> bool:
        return self.committed > self.applied and self.unstable_snapshot is None

    def next_committed_entries(self) -> list[Entry]:
        """Committed entries not yet applied. Unstable ones are included: the caller persists
        the Ready's entries before it applies its committed entries."""
        if not self.has_next_committed_entries():
            return []
        return self.slice(max(self.applied + 1, self.first_index()), self.committed + 1, self.max_apply_bytes)

    def has_pending_conf_change(self) -> bool:
        """Is a committed conf change waiting to be applied? (A node must not campaign then.)"""
        lo = self.applied + 1
        while lo <= self.committed:
            batch = self.slice(lo, self.committed + 1, self.max_apply_bytes)
            if any(e.type is EntryType.CONF_CHANGE for e in batch):
                return True
            lo = batch[-1].index + 1
        return False

    # -- appending --------------------------------------------------------------------------

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> int:
        """Append to the unstable tail, truncating a conflicting suffix. Returns the last index."""
        if not entries:
            return self.last_index()
        after = entries[0].index
        if after <= self.committed:
            raise AssertionError(f"entry {after} would overwrite committed entry {self.committed}")
        offset = self.unstable_offset
        unstable = self.unstable_entries
        if after == offset + len(unstable):
            unstable.extend(entries)
        elif after <= offset:
            # Replaces part of the stable log; storage truncates when it persists these.
            self.unstable_offset = after
            self.unstable_entries = list(entries)
        else:
            del unstable[after - offset :]
            unstable.extend(entries)
        return self.last_index()

    def find_conflict(self, entries: tuple[Entry, ...]) -> int:
        """Index of the first entry whose term differs from ours, or that we lack; 0 if none."""
        if not entries:
            return 0
        last = self.last_index()
        first_new = entries[0].index
        if first_new > last:
            return first_new
        for entry in entries:
            if entry.index > last or not self.match_term(entry.index, entry.term):
                return entry.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest index <= `index` whose term is <= `term`, with that term (fast backtracking)."""
        while index > 0:
            try:
                our_term = self.term(index)
            except CompactedError:
                return index, 0
            except UnavailableError:
                index = self.last_index()
                continue
            if our_term <= term:
                return index, our_term
            index -= 1
        return 0, 0

    def maybe_append(self, prev_index: int, prev_term: int, commit: int, entries: tuple[Entry, ...]) -> int:
        """Follower side of AppendEntries. Returns the last index the leader's message covers,
        or -1 when the log does not contain (prev_index, prev_term)."""
        if not self.match_term(prev_index, prev_term):
            return -1
        last_new = prev_index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            if conflict <= self.committed:
                raise AssertionError(f"conflict at {conflict} is at or below commit {self.committed}")
            self.append(entries[conflict - entries[0].index :])
        self.commit_to(min(commit, last_new))
        return last_new

    # -- commit, apply, persist -------------------------------------------------------------

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise AssertionError(f"commit {index} is beyond the last index {self.last_index()}")
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Leader commit rule (Figure 8): only an entry of the leader's own term is committed by
        counting replicas; earlier entries are committed with it."""
        if index > self.committed and self.term_or_zero(index) == term:
            self.committed = index
            return True
        return False

    def applied_to(self, index: int) -> None:
        if index:
            if index > self.committed or index < self.applied:
                raise AssertionError(f"applied {index} outside [{self.applied}, {self.committed}]")
            self.applied = index

    def stable_to(self, index: int, term: int) -> None:
        """The caller persisted entries up to `index`: drop them from the unstable tail."""
        if index < self.unstable_offset or self.term_or_zero(index) != term:
            return
        del self.unstable_entries[: index + 1 - self.unstable_offset]
        self.unstable_offset = index + 1

    def stable_snapshot_to(self, index: int) -> None:
        if self.unstable_snapshot is not None and self.unstable_snapshot.meta.index == index:
            self.unstable_snapshot = None

    def snapshot(self) -> Snapshot:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot
        return self.storage.snapshot()

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by a snapshot received from the leader."""
        self.committed = snapshot.meta.index
        self.unstable_offset = snapshot.meta.index + 1
        self.unstable_entries = []
        self.unstable_snapshot = snapshot
