"""The meta group's applier: the cluster state (`cluster_state.ClusterState`) on the engine.

It keeps, for its Raft group ``g``, the apply state under ``A g`` (as the partitions' applier:
applied index, term and configuration, `kvstore.codec`) and the encoded cluster state under
``D g`` with an empty user key, both staged into the same batch, so the state on disk is always
the one as of the applied index. It follows the same rules as `PartitionStateMachine`: `apply`,
`restore` and `bootstrap` only stage writes; the node writes the batch before it acts on them.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.message import DecodeError

from kvstore._pb import meta_pb2
from kvstore.codec import CodecError, Encoder, decode_snapshot_meta
from kvstore.raft.types import ConfChange, Entry, EntryType, Snapshot, SnapshotMeta
from kvstore.statemachine.cluster_state import (
    ClusterState,
    CommandResult,
    apply_command,
    decode_state,
    encode_state,
    with_meta_voters,
)
from kvstore.storage.engine import Engine, WriteBatch
from kvstore.storage.errors import CorruptionError
from kvstore.storage.keys import apply_state_key, data_key


class MetaStateMachine:
    """The cluster state as the meta group `group` applied it (None until its first snapshot
    arrives, on a node that joined). `initial` is the state a new cluster starts with, which
    `bootstrap` stages (every initial node computes the same one)."""

    def __init__(self, engine: Engine, group: int, initial: ClusterState | None = None) -> None:
        self.group = group
        self._initial = initial
        self._apply_state_key = apply_state_key(group)
        self._state_key = data_key(group, b"")
        self._encoder = Encoder()
        try:
            raw_applied = engine.get(self._apply_state_key)
            raw_state = engine.get(self._state_key)
            self._applied = SnapshotMeta() if raw_applied is None else decode_snapshot_meta(raw_applied)
            self._state = None if raw_state is None else decode_state(raw_state)
        except CodecError as exc:
            raise CorruptionError(f"meta group: {exc}") from None

    @property
    def state(self) -> ClusterState | None:
        return self._state

    @property
    def applied_index(self) -> int:
        return self._applied.index

    @property
    def applied(self) -> SnapshotMeta:
        return self._applied

    def apply(self, batch: WriteBatch, entries: Iterable[Entry]) -> list[tuple[Entry, CommandResult | None]]:
        """Apply committed entries in order (see `PartitionStateMachine.apply`): each command's
        result; None for a no-op or a CONF_CHANGE entry."""
        outcomes: list[tuple[Entry, CommandResult | None]] = []
        applied = self._applied
        state = self._state
        for entry in entries:
            if entry.index <= applied.index:
                continue
            if entry.index != applied.index + 1:
                raise ValueError(f"meta group: entry {entry.index} follows applied index {applied.index}")
            conf_state = applied.conf_state
            result = None
            if entry.type is EntryType.CONF_CHANGE:
                conf_state = conf_state.apply(ConfChange.decode(entry.data))
                if state is not None:
                    state = with_meta_voters(state, conf_state.voters)
            elif entry.data:
                if state is None:
                    raise CodecError(f"meta group: entry {entry.index} is a command, but no cluster state is known")
                try:
                    command = meta_pb2.MetaCommand.FromString(entry.data)
                except DecodeError as exc:
                    raise CodecError(f"meta group: entry {entry.index} is not a MetaCommand: {exc}") from None
                state, result = apply_command(state, command)
            applied = SnapshotMeta(entry.index, entry.term, conf_state)
            outcomes.append((entry, result))
        if state is not self._state and state is not None:
            batch.put(self._state_key, encode_state(state))
        if applied != self._applied:
            batch.put(self._apply_state_key, self._encoder.snapshot_meta(applied))
        self._state, self._applied = state, applied
        return outcomes

    def snapshot(self) -> Snapshot:
        return Snapshot(self._applied, encode_state(self._state) if self._state is not None else b"")

    def restore(self, batch: WriteBatch, snapshot: Snapshot) -> None:
        if snapshot.meta.index < self._applied.index:
            raise ValueError(f"snapshot at {snapshot.meta.index} is older than the applied index {self._applied.index}")
        self._stage(batch, snapshot.meta, decode_state(snapshot.data) if snapshot.data else None)

    def bootstrap(self, batch: WriteBatch, start: SnapshotMeta) -> None:
        """Stage the initial state as of `start`, the cluster's bootstrap point."""
        self._stage(batch, start, self._initial)

    def _stage(self, batch: WriteBatch, applied: SnapshotMeta, state: ClusterState | None) -> None:
        if state is not None:
            batch.put(self._state_key, encode_state(state))
        batch.put(self._apply_state_key, self._encoder.snapshot_meta(applied))
        self._state, self._applied = state, applied
