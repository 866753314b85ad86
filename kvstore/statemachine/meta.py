"""The meta group's applier: the cluster's one system Raft group, hosted by every member.

Its state has two sections, each a pure module applying its own commands:

* the cluster state (`cluster_state.ClusterState`: members, each partition's replicas, the
  moves, the epoch), changed by the membership commands;
* the control section (`control.ControlState`: users, roles, auth on/off, the token-signing
  secret, the alarms), changed by `MetaCommand.control`. Its changes leave the cluster state
  (and so its epoch) as they were: a user added is no reason to refresh a cluster map.

Both are small, so they are held in memory whole and stored whole, each as one record beside
the apply state, all staged into the same batch (the cluster state under ``D g`` with an empty
user key, the control section under ``D g "control"``, the apply state under ``A g``, as the
partitions' applier keeps it: applied index, term and configuration, `kvstore.codec`), so the
state on disk is always the one as of the applied index. A snapshot is both records
(`MetaSnapshot`). It follows the same rules as `PartitionStateMachine`: `apply`, `restore` and
`bootstrap` only stage writes; the node writes the batch before it acts on them.

Every command's result (`CommandResult`) carries the index of its entry (`revision`): the
control section's revision, by which tokens are judged (`kvstore.credentials`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from google.protobuf.message import DecodeError

from kvstore._pb import meta_pb2
from kvstore.codec import CodecError, Encoder, decode_snapshot_meta
from kvstore.raft.types import ConfChange, Entry, EntryType, Snapshot, SnapshotMeta
from kvstore.statemachine import control
from kvstore.statemachine.cluster_state import (
    ClusterState,
    CommandResult,
    MemberState,
    apply_command,
    decode_state,
    encode_state,
    with_meta_voters,
)
from kvstore.statemachine.control import ControlState, apply_control
from kvstore.storage.engine import Engine, WriteBatch
from kvstore.storage.errors import CorruptionError
from kvstore.storage.keys import apply_state_key, data_key

META_GROUP = 0xFFFF_FFFF
"""The meta group's Raft group id: above every partition (at most 2**16 of them)."""

CONTROL_RECORD = b"control"
"""The user key, in the meta group's data keys, of the control section's record."""


class MetaStateMachine:
    """The cluster state as the meta group `group` applied it (None until its first snapshot
    arrives, on a node that joined) and its control section. `initial` is the cluster state a
    new cluster starts with, which `bootstrap` stages (every initial node computes the same
    one), with an empty control section."""

    def __init__(self, engine: Engine, group: int, initial: ClusterState | None = None) -> None:
        self.group = group
        self._initial = initial
        self._apply_state_key = apply_state_key(group)
        self._state_key = data_key(group, b"")
        self._control_key = data_key(group, CONTROL_RECORD)
        self._encoder = Encoder()
        try:
            raw_applied = engine.get(self._apply_state_key)
            raw_state = engine.get(self._state_key)
            raw_control = engine.get(self._control_key)
            self._applied = SnapshotMeta() if raw_applied is None else decode_snapshot_meta(raw_applied)
            self._state = None if raw_state is None else decode_state(raw_state)
            self._control = ControlState() if raw_control is None else control.decode_state(raw_control)
        except CodecError as exc:
            raise CorruptionError(f"meta group: {exc}") from None

    @property
    def state(self) -> ClusterState | None:
        return self._state

    @property
    def control(self) -> ControlState:
        return self._control

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
        applied, state, control_state = self._applied, self._state, self._control
        for entry in entries:
            if entry.index <= applied.index:
                continue
            if entry.index != applied.index + 1:
                raise ValueError(f"meta group: entry {entry.index} follows applied index {applied.index}")
            conf_state = applied.conf_state
            result = None
            cluster_before = state
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
                state, control_state, result = apply_meta_command(state, control_state, command, entry.index)
            if state is not cluster_before and state is not None:
                # Members become REMOVED on commands and on the meta group's own conf changes.
                control_state = _without_alarms_of_removed(control_state, state, entry.index)
            applied = SnapshotMeta(entry.index, entry.term, conf_state)
            outcomes.append((entry, result))
        if state is not self._state and state is not None:
            batch.put(self._state_key, encode_state(state))
        if control_state is not self._control:
            batch.put(self._control_key, control.encode_state(control_state))
        if applied != self._applied:
            batch.put(self._apply_state_key, self._encoder.snapshot_meta(applied))
        self._state, self._control, self._applied = state, control_state, applied
        return outcomes

    def snapshot(self) -> Snapshot:
        data = meta_pb2.MetaSnapshot(cluster=encode_state(self._state) if self._state is not None else b"",
                                     control=control.encode_state(self._control))
        return Snapshot(self._applied, data.SerializeToString(deterministic=True))

    def restore(self, batch: WriteBatch, snapshot: Snapshot) -> None:
        if snapshot.meta.index < self._applied.index:
            raise ValueError(f"snapshot at {snapshot.meta.index} is older than the applied index {self._applied.index}")
        try:
            data = meta_pb2.MetaSnapshot.FromString(snapshot.data)
        except DecodeError as exc:
            raise CodecError(f"meta group: the snapshot at {snapshot.meta.index} is not a MetaSnapshot: {exc}") from None
        self._stage(batch, snapshot.meta, decode_state(data.cluster) if data.cluster else None,
                    control.decode_state(data.control))

    def bootstrap(self, batch: WriteBatch, start: SnapshotMeta) -> None:
        """Stage the initial state as of `start`, the cluster's bootstrap point."""
        self._stage(batch, start, self._initial, ControlState())

    def _stage(self, batch: WriteBatch, applied: SnapshotMeta, state: ClusterState | None,
               control_state: ControlState) -> None:
        if state is not None:
            batch.put(self._state_key, encode_state(state))
        batch.put(self._control_key, control.encode_state(control_state))
        batch.put(self._apply_state_key, self._encoder.snapshot_meta(applied))
        self._state, self._control, self._applied = state, control_state, applied


def apply_meta_command(state: ClusterState, control_state: ControlState, command: meta_pb2.MetaCommand,
                       revision: int) -> tuple[ClusterState, ControlState, CommandResult]:
    """Both sections after `command` (the entry at index `revision`) and its result: `control`
    goes to the control section, every other command to the cluster state's table. Pure."""
    if command.WhichOneof("command") == "control":
        control_state, refused = apply_control(control_state, command.control, revision)
        result = CommandResult(epoch=state.epoch) if refused is None else CommandResult(
            refusal=refused.reason, message=refused.message, epoch=state.epoch)
    else:
        state, result = apply_command(state, command)
    return state, control_state, replace(result, revision=revision)


def _without_alarms_of_removed(control_state: ControlState, state: ClusterState, revision: int) -> ControlState:
    """A removed member's alarm goes with it: nothing could clear it any more."""
    removed = {member.id for member in state.members if member.state is MemberState.REMOVED}
    if not any(alarm.node_id in removed for alarm in control_state.alarms):
        return control_state
    return control.without_alarms_of(control_state, removed, revision)
