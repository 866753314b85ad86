"""The state machine of the control group: the Raft group, hosted by every node, whose log
carries `ControlCommand`s (users, roles, auth on/off, alarms; `kvstore.statemachine.control`).

The state is small, so it is held in memory whole and stored whole, as one record beside the
apply state, in the same batch: a restart reads it back as of the last entry applied, and a
snapshot is that record. Deterministic, like the partitions' applier, and bound by the same
rules (`PartitionStateMachine`'s docstring): `apply`, `restore` and `bootstrap` only stage
writes into the batch they are given, which the node writes before it answers anyone.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.message import DecodeError

from kvstore._pb import control_pb2
from kvstore._pb import kvstore_pb2 as pb
from kvstore.codec import CodecError, Encoder, decode_snapshot_meta
from kvstore.raft.types import ConfChange, Entry, EntryType, Snapshot, SnapshotMeta
from kvstore.statemachine.control import ControlState, apply_control, decode_state, encode_state
from kvstore.statemachine.layout import group_state_key
from kvstore.storage.engine import Engine, WriteBatch
from kvstore.storage.errors import CorruptionError
from kvstore.storage.keys import apply_state_key

CONTROL_GROUP = 0xFFFF_FFFE
"""The control group's Raft group id: above every partition (at most 2**16 of them)."""


class ControlStateMachine:
    def __init__(self, engine: Engine, group: int = CONTROL_GROUP) -> None:
        self.group = group
        self._engine = engine
        self._encoder = Encoder()
        self._apply_state_key = apply_state_key(group)
        self._state_key = group_state_key(group)
        raw_apply_state = engine.get(self._apply_state_key)
        raw_state = engine.get(self._state_key)
        try:
            applied = SnapshotMeta() if raw_apply_state is None else decode_snapshot_meta(raw_apply_state)
            self.state = ControlState() if raw_state is None else decode_state(raw_state)
        except CodecError as exc:
            raise CorruptionError(f"the control group's stored state: {exc}") from None
        self._applied = applied

    @property
    def applied_index(self) -> int:
        return self._applied.index

    @property
    def applied(self) -> SnapshotMeta:
        return self._applied

    def apply(self, batch: WriteBatch, entries: Iterable[Entry]) -> list[tuple[Entry, pb.AuthChangeResponse | None]]:
        """Apply committed `entries` in order (those at or below the applied index are skipped),
        staging the new state and apply state into `batch`. Each command's response carries the
        revision it applied at and its refusal, if any; None for an empty or CONF_CHANGE entry."""
        outcomes: list[tuple[Entry, pb.AuthChangeResponse | None]] = []
        applied, state = self._applied, self.state
        for entry in entries:
            if entry.index <= applied.index:
                continue
            if entry.index != applied.index + 1:
                raise ValueError(f"control group: entry {entry.index} follows applied index {applied.index}")
            conf_state = applied.conf_state
            response = None
            if entry.type is EntryType.NORMAL and entry.data:
                state, refusal = apply_control(state, _command(entry), entry.index)
                response = pb.AuthChangeResponse()
                response.header.revision = entry.index
                if refusal is not None:
                    response.error.code, response.error.message = refusal.code.value, refusal.message
            elif entry.type is EntryType.CONF_CHANGE:
                conf_state = conf_state.apply(ConfChange.decode(entry.data))
            applied = SnapshotMeta(entry.index, entry.term, conf_state)
            outcomes.append((entry, response))
        if applied != self._applied:
            self._stage(batch, applied, state)
        return outcomes

    def snapshot(self) -> Snapshot:
        """The state as written (call it after the batch covering the wanted index was written)."""
        with self._engine.read_view() as view:
            raw_apply_state = view.get(self._apply_state_key)
            raw_state = view.get(self._state_key)
        try:
            meta = SnapshotMeta() if raw_apply_state is None else decode_snapshot_meta(raw_apply_state)
        except CodecError as exc:
            raise CorruptionError(f"the control group's apply state: {exc}") from None
        return Snapshot(meta, raw_state or encode_state(ControlState()))

    def restore(self, batch: WriteBatch, snapshot: Snapshot) -> None:
        """Stage replacing the state by `snapshot`'s (ValueError when it is older than the applied
        index; `CodecError` when its data is not a state)."""
        if snapshot.meta.index < self._applied.index:
            raise ValueError(f"snapshot at {snapshot.meta.index} is older than the applied index "
                             f"{self._applied.index}")
        self._stage(batch, snapshot.meta, decode_state(snapshot.data))

    def bootstrap(self, batch: WriteBatch, start: SnapshotMeta) -> None:
        if self._applied.index != 0:
            raise ValueError(f"the control group already applied up to {self._applied.index}")
        self._stage(batch, start, self.state)

    def _stage(self, batch: WriteBatch, applied: SnapshotMeta, state: ControlState) -> None:
        if state is not self.state or self._engine.get(self._state_key) is None:
            batch.put(self._state_key, encode_state(state))
        batch.put(self._apply_state_key, self._encoder.snapshot_meta(applied))
        self._applied, self.state = applied, state


def _command(entry: Entry) -> control_pb2.ControlCommand:
    try:
        return control_pb2.ControlCommand.FromString(entry.data)
    except DecodeError as exc:
        raise CodecError(f"control group: entry {entry.index} is not a ControlCommand: {exc}") from None
