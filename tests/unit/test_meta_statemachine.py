"""The meta group's applier on an engine, and a replica's life on one: deleted with a tombstone,
re-created with its term and vote, refusing the votes its deleted log would have refused."""

from __future__ import annotations

import dataclasses
import random

import pytest

from kvstore._pb import control_pb2, meta_pb2
from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb.internal_pb2 import LogCommand
from kvstore.codec import CodecError, decode_tombstone, encode_tombstone
from kvstore.node.lessor import Lessor, LessorConfig, ManualClock
from kvstore.node.replica import KeepAlive, PartitionReplica
from kvstore.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    SnapshotMeta,
    Tombstone,
)
from kvstore.statemachine.cluster_state import ClusterState, MemberState, Refusal
from kvstore.statemachine.control import ControlState
from kvstore.statemachine.meta import MetaStateMachine, apply_meta_command
from kvstore.storage import MemoryEngine
from kvstore.storage.raft_log import DurableLogStorage, stored_groups

GROUP = 0xFFFF_FFFF
MEMBERS = {1: "10.0.0.1:2379", 2: "10.0.0.2:2379", 3: "10.0.0.3:2379", 4: "10.0.0.4:2379"}


def bootstrapped(engine: MemoryEngine) -> MetaStateMachine:
    initial = ClusterState.bootstrap("c0ffee", MEMBERS, 8, 3, 16)
    machine = MetaStateMachine(engine, GROUP, initial)
    batch = engine.new_batch()
    machine.bootstrap(batch, SnapshotMeta(1, 1, ConfState(frozenset(MEMBERS))))
    engine.write(batch, sync=True)
    return machine


def command_entry(index: int, command: meta_pb2.MetaCommand) -> Entry:
    return Entry(index, 2, command.SerializeToString())


def test_commands_and_its_own_voters_change_the_state_which_survives_a_reopen() -> None:
    engine = MemoryEngine()
    machine = bootstrapped(engine)
    remove = meta_pb2.MetaCommand(remove_member=meta_pb2.RemoveMember(node_id=4))
    batch = engine.new_batch()
    ((_, noop), (_, result)) = machine.apply(batch, [Entry(2, 2), command_entry(3, remove)])
    engine.write(batch, sync=False)
    assert noop is None and result is not None and result.refusal is None and result.epoch == 2
    state = machine.state
    assert state is not None and state.member(4).state is MemberState.LEAVING  # type: ignore[union-attr]
    # A conf change of the meta group itself: node 4 no longer votes there.
    batch = engine.new_batch()
    demote = Entry(4, 2, ConfChange(ConfChangeType.ADD_LEARNER, 4).encode(), EntryType.CONF_CHANGE)
    machine.apply(batch, [demote])
    engine.write(batch, sync=False)
    assert machine.state is not None and machine.state.meta_voters == frozenset({1, 2, 3})
    assert machine.applied == SnapshotMeta(4, 2, ConfState(frozenset({1, 2, 3}), frozenset({4})))
    reopened = MetaStateMachine(engine, GROUP)
    assert (reopened.state, reopened.applied) == (machine.state, machine.applied)


def test_a_snapshot_restores_the_state_on_another_node() -> None:
    machine = bootstrapped(MemoryEngine())
    other_engine = MemoryEngine()
    joined = MetaStateMachine(other_engine, GROUP)
    assert joined.state is None
    batch = other_engine.new_batch()
    joined.restore(batch, machine.snapshot())
    other_engine.write(batch, sync=False)
    assert (joined.state, joined.applied) == (machine.state, machine.applied)


def test_an_entry_that_is_not_a_meta_command_stops_the_applier() -> None:
    engine = MemoryEngine()
    machine = bootstrapped(engine)
    with pytest.raises(CodecError, match="not a MetaCommand"):
        machine.apply(engine.new_batch(), [Entry(2, 2, b"\xff\xff\xff")])


def test_a_tombstone_refuses_votes_for_logs_behind_the_deleted_one() -> None:
    tombstone = Tombstone(term=5, vote=2, last_index=40, last_term=4)
    assert decode_tombstone(encode_tombstone(tombstone)) == tombstone
    with pytest.raises(CodecError):
        decode_tombstone(encode_tombstone(tombstone)[:-1])
    vote = Message(MessageType.VOTE, 3, 2, term=6, log_term=4, index=39)
    assert tombstone.refuses(vote)
    assert not tombstone.refuses(Message(MessageType.VOTE, 3, 2, term=6, log_term=4, index=40))
    assert not tombstone.refuses(Message(MessageType.PRE_VOTE, 3, 2, term=6, log_term=5, index=1))
    assert not tombstone.refuses(Message(MessageType.APPEND, 3, 2, term=6, log_term=1, index=1))
    later = tombstone.merged(Tombstone(term=7, vote=0, last_index=3, last_term=7))
    assert later == Tombstone(term=7, vote=0, last_index=3, last_term=7)
    assert tombstone.merged(Tombstone(8, 1, 0, 0)) == Tombstone(8, 1, 40, 4)


CACHE_BYTES = 1 << 20


def lessor() -> Lessor[KeepAlive]:
    return Lessor(ManualClock(), LessorConfig())


def test_a_deleted_replica_leaves_nothing_behind_and_a_re_created_one_keeps_term_and_vote() -> None:
    engine = MemoryEngine()
    config = Config(3, election_tick=10, heartbeat_tick=1)
    replica = PartitionReplica.open(engine, 5, config, random.Random(1), lessor(), CACHE_BYTES,
                                    SnapshotMeta(1, 1, ConfState(frozenset({1, 2, 3}))))
    assert stored_groups(engine) == [5]
    header = pb.RequestHeader(client_id="c", request_seq=1)
    lease = pb.LeaseGrantRequest(header=pb.RequestHeader(client_id="c", request_seq=2), ttl_seconds=30)
    commands = [LogCommand(put=pb.PutRequest(header=header, key=b"k", value=b"v")), LogCommand(lease_grant=lease)]
    batch = engine.new_batch()
    applied = replica.sm.apply(batch, [Entry(2 + i, 1, c.SerializeToString()) for i, c in enumerate(commands)])
    engine.write(batch, sync=True)
    assert all(response is not None and not response.error.code for _, response in applied)
    assert replica.sm.get(b"k") is not None and len(replica.sm.leases.leases()) == 1
    batch = engine.new_batch()
    replica.log.destroy(batch)
    replica.sm.destroy(batch)
    engine.write(batch, sync=True)
    assert list(engine.iterate(b"", None)) == [] and stored_groups(engine) == []
    tombstone = Tombstone(term=4, vote=2, last_index=30, last_term=4)
    again = PartitionReplica.open(engine, 5, config, random.Random(1), lessor(), CACHE_BYTES, tombstone=tombstone)
    assert (again.log.hard_state.term, again.log.hard_state.vote, again.log.last_index()) == (4, 2, 0)
    assert DurableLogStorage.open(engine, 5, again.sm.snapshot).hard_state.term == 4
    assert not again.step(Message(MessageType.VOTE, 3, 1, term=5, log_term=4, index=10))
    assert again.step(Message(MessageType.VOTE, 3, 1, term=5, log_term=4, index=30))


def test_a_restarted_replica_knows_the_conf_changes_it_applied_after_its_snapshot_point() -> None:
    """Raft starts from the configuration of the log's snapshot point; a move's conf changes
    applied after it must not be forgotten on restart (a promoted learner would never campaign,
    a replica would ask removed members for votes: no election ever succeeds)."""
    engine = MemoryEngine()
    config = Config(3, election_tick=10, heartbeat_tick=1)
    replica = PartitionReplica.open(engine, 5, config, random.Random(1), lessor(), CACHE_BYTES,
                                    SnapshotMeta(1, 1, ConfState(frozenset({1, 2, 3}))))
    changes = [ConfChange(ConfChangeType.ADD_LEARNER, 4), ConfChange(ConfChangeType.ADD_VOTER, 4),
               ConfChange(ConfChangeType.REMOVE, 1)]
    entries = [Entry(2 + i, 2, change.encode(), EntryType.CONF_CHANGE) for i, change in enumerate(changes)]
    batch = engine.new_batch()
    replica.log.append(batch, entries)
    replica.sm.apply(batch, entries)
    replica.log.set_hard_state(batch, dataclasses.replace(replica.log.hard_state, term=2, commit=4))
    engine.write(batch, sync=True)
    moved = ConfState(frozenset({2, 3, 4}))
    assert replica.sm.applied.conf_state == moved

    again = PartitionReplica.open(engine, 5, config, random.Random(1), lessor(), CACHE_BYTES)

    assert again.log.snapshot_meta.index == 1  # the snapshot point is still before the changes
    assert again.raw.conf_state() == moved


# -- the control section: users, roles, auth, alarms in the same group --------------------------


def control_entry(index: int, change: control_pb2.ControlCommand) -> Entry:
    return command_entry(index, meta_pb2.MetaCommand(control=change))


ADD_ALICE = control_pb2.ControlCommand(add_user=control_pb2.AddUser(name="alice", password_hash="hash"))


def test_a_control_command_answers_with_its_revision_and_leaves_the_cluster_state_alone() -> None:
    engine = MemoryEngine()
    machine = bootstrapped(engine)
    cluster_before = machine.state
    batch = engine.new_batch()
    ((_, added), (_, again)) = machine.apply(batch, [control_entry(2, ADD_ALICE), control_entry(3, ADD_ALICE)])
    engine.write(batch, sync=False)
    assert added is not None and added.refusal is None and added.revision == 2 and added.epoch == 1
    assert again is not None and again.refusal is Refusal.INVALID and "exists already" in again.message
    assert again.revision == 3
    assert machine.state is cluster_before, "a user added is no change of the cluster map (nor its epoch)"
    assert set(machine.control.users) == {"alice"} and machine.control.revision == 2
    reopened = MetaStateMachine(engine, GROUP)
    assert (reopened.control, reopened.state, reopened.applied) == (machine.control, machine.state, machine.applied)


def test_a_snapshot_carries_both_sections_to_another_node() -> None:
    engine = MemoryEngine()
    machine = bootstrapped(engine)
    batch = engine.new_batch()
    machine.apply(batch, [control_entry(2, ADD_ALICE)])
    engine.write(batch, sync=False)
    other_engine = MemoryEngine()
    joined = MetaStateMachine(other_engine, GROUP)
    batch = other_engine.new_batch()
    joined.restore(batch, machine.snapshot())
    other_engine.write(batch, sync=False)
    assert (joined.state, joined.control, joined.applied) == (machine.state, machine.control, machine.applied)
    reopened = MetaStateMachine(other_engine, GROUP)
    assert (reopened.state, reopened.control) == (machine.state, machine.control)


def test_a_removed_members_alarm_is_dropped_with_it() -> None:
    engine = MemoryEngine()
    initial = ClusterState.bootstrap("c0ffee", MEMBERS, 1, 1, 16)  # one partition on one node
    machine = MetaStateMachine(engine, GROUP, initial)
    batch = engine.new_batch()
    machine.bootstrap(batch, SnapshotMeta(1, 1, ConfState(frozenset(MEMBERS))))
    idle = next(node for node in MEMBERS if node not in initial.partitions[0].replicas)
    raise_alarm = control_pb2.ControlCommand(raise_alarm=pb.Alarm(node_id=idle, type=pb.NOSPACE))
    remove = meta_pb2.MetaCommand(remove_member=meta_pb2.RemoveMember(node_id=idle))
    demote = Entry(4, 2, ConfChange(ConfChangeType.ADD_LEARNER, idle).encode(), EntryType.CONF_CHANGE)
    machine.apply(batch, [control_entry(2, raise_alarm), command_entry(3, remove)])
    assert {alarm.node_id for alarm in machine.control.alarms} == {idle}, "LEAVING: the alarm stays"
    machine.apply(batch, [demote, Entry(5, 2)])  # it no longer votes in the meta group: REMOVED
    state = machine.state
    assert state is not None and state.member(idle).state is MemberState.REMOVED  # type: ignore[union-attr]
    assert machine.control.alarms == frozenset()


def test_every_kind_of_meta_command_is_applied_by_its_own_handler() -> None:
    """A command added to meta.proto's oneof (or to control.proto's) without a handler would be
    refused by every node as 'not a meta command' ('not a control command')."""
    initial = ClusterState.bootstrap("c0ffee", MEMBERS, 8, 3, 16)
    commands = []
    for field in meta_pb2.MetaCommand.DESCRIPTOR.oneofs_by_name["command"].fields:
        if field.name == "control":
            continue  # a section of its own: each of its commands below
        command = meta_pb2.MetaCommand()
        getattr(command, field.name).SetInParent()
        commands.append(command)
    for field in control_pb2.ControlCommand.DESCRIPTOR.oneofs_by_name["command"].fields:
        command = meta_pb2.MetaCommand()
        getattr(command.control, field.name).SetInParent()
        commands.append(command)
    for command in commands:
        _, _, result = apply_meta_command(initial, ControlState(), command, 2)
        assert "not a meta command" not in result.message and "not a control command" not in result.message, command
        assert result.revision == 2
