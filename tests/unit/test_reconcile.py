"""Reconciling nodes with the cluster state: each move step is taken by the right node, once its
effect shows, and nodes acting on their own views drive any membership change to its end."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvstore._pb import meta_pb2
from kvstore.node.reconcile import (
    CATCH_UP_SLACK,
    MAX_META_VOTERS,
    Action,
    CreateReplica,
    DeleteReplica,
    ProposeConfChange,
    ReplicaView,
    ReportStep,
    TransferLeader,
    initial_meta_conf,
    reconcile,
)
from kvstore.raft import ConfChange, ConfChangeType
from kvstore.statemachine.cluster_state import ClusterState, MemberState, apply_command, with_meta_voters

PARTITIONS = 8
MEMBERS = {n: f"10.0.0.{n}:2379" for n in (1, 2, 3)}


def bootstrap(members: dict[int, str] = MEMBERS) -> ClusterState:
    return ClusterState.bootstrap("c0ffee", members, PARTITIONS, 3, 16)


def command(state: ClusterState, message: meta_pb2.MetaCommand) -> ClusterState:
    after, result = apply_command(state, message)
    assert result.refusal is None, result.message
    return after


def add(state: ClusterState, address: str) -> ClusterState:
    return command(state, meta_pb2.MetaCommand(add_member=meta_pb2.AddMember(address=address)))


def step_done(state: ClusterState, partition: int, step: int) -> ClusterState:
    return command(state, meta_pb2.MetaCommand(move_step_done=meta_pb2.MoveStepDone(partition=partition, step=step)))


def view(partition: int, leader: int, voters: set[int], learners: set[int] = frozenset(),  # type: ignore[assignment]
         matches: dict[int, int] | None = None, **extra: bool) -> ReplicaView:
    return ReplicaView(partition, leader, frozenset(voters), frozenset(learners), committed=100,
                       matches=matches or {}, **extra)


def about(partition: int, actions: list[Action]) -> list[Action]:
    """The actions about one partition (a test's views hold only some of a node's replicas)."""
    return [a for a in actions if (a.partition if isinstance(a, ReportStep) else a.group) == partition]


def moving(state: ClusterState, node: int) -> tuple[int, tuple[int, ...]]:
    """A partition whose move adds `node`, and its replicas before the move."""
    progress = next(m for m in state.moves() if str(node) in m.move.add)
    return progress.move.partition, state.partitions[progress.move.partition].replicas


def test_a_node_creates_the_replicas_the_state_gives_it_and_nothing_else() -> None:
    state = bootstrap()
    mine = [p for p, current in enumerate(state.partitions) if 1 in current.replicas]
    assert reconcile(1, state, {}, None, 3) == [CreateReplica(p) for p in mine]
    hosted = {p: view(p, 0, set(state.partitions[p].replicas)) for p in mine}
    assert reconcile(1, state, hosted, None, 3) == []
    leftover = {**hosted, 99 % PARTITIONS: view(99 % PARTITIONS, 0, {2, 3})} if 99 % PARTITIONS not in mine else hosted
    assert all(isinstance(a, DeleteReplica) for a in reconcile(1, state, leftover, None, 3))


def test_a_joining_node_prepares_an_empty_replica_for_each_partition_coming_to_it() -> None:
    state = add(bootstrap(), "10.0.0.4:2379")
    targets = sorted(m.move.partition for m in state.moves())
    assert reconcile(4, state, {}, None, 1) == [CreateReplica(p) for p in targets]


def test_the_leader_takes_each_step_once_its_effect_shows() -> None:
    state = add(bootstrap(), "10.0.0.4:2379")
    partition, before = moving(state, 4)
    leader = next(n for n in before if n != 4)
    voters = set(before)

    def act(replica: ReplicaView) -> list[Action]:
        return about(partition, reconcile(leader, state, {partition: replica}, None, PARTITIONS))

    add_learner = ProposeConfChange(partition, ConfChange(ConfChangeType.ADD_LEARNER, 4))
    assert act(view(partition, leader, voters)) == [add_learner]
    assert act(view(partition, leader, voters, conf_pending=True)) == []
    assert act(view(partition, leader, voters, {4})) == [ReportStep(partition, 0)]
    state = step_done(state, partition, 0)
    assert act(view(partition, leader, voters, {4}, {4: 0})) == []
    assert act(view(partition, leader, voters, {4}, {4: 100 - CATCH_UP_SLACK - 1})) == []
    assert act(view(partition, leader, voters, {4}, {4: 100 - CATCH_UP_SLACK})) == [ReportStep(partition, 1)]
    state = step_done(state, partition, 1)
    assert act(view(partition, leader, voters, {4})) == [
        ProposeConfChange(partition, ConfChange(ConfChangeType.ADD_VOTER, 4))]
    assert act(view(partition, leader, voters | {4})) == [ReportStep(partition, 2)]
    # A follower does nothing; so does a leader that is handing over its leadership.
    assert about(partition, reconcile(4, state, {partition: view(partition, leader, voters | {4})}, None,
                                      PARTITIONS)) == []
    assert act(view(partition, leader, voters, {4}, transferring=True)) == []


def test_a_leader_that_is_leaving_hands_over_before_it_is_removed() -> None:
    state = add(bootstrap(), "10.0.0.4:2379")
    partition, before = moving(state, 4)
    move = state.partitions[partition].move
    assert move is not None
    (leaving,) = set(move.source) - set(move.target)
    for step in range(3):
        state = step_done(state, partition, step)
    voters = set(before) | {4}

    def act(node: int, leader: int, group: set[int]) -> list[Action]:
        return about(partition, reconcile(node, state, {partition: view(partition, leader, group)}, None, PARTITIONS))

    assert act(leaving, leaving, voters) == [TransferLeader(partition, move.target[0])]
    other = next(n for n in voters if n != leaving)
    assert act(other, other, voters) == [ProposeConfChange(partition, ConfChange(ConfChangeType.REMOVE, leaving))]
    state = step_done(state, partition, 3)
    # TRANSFER_LEADER: the leader hands over; the new leader reports it.
    wanted = move.target[0]
    if wanted != other:
        assert act(other, other, voters - {leaving}) == [TransferLeader(partition, wanted)]
    assert act(wanted, wanted, voters - {leaving}) == [ReportStep(partition, 4)]
    state = step_done(state, partition, 4)
    # DELETE_DATA is the leaver's: it deletes its replica and reports.
    assert act(leaving, wanted, voters - {leaving}) == [DeleteReplica(partition), ReportStep(partition, 5)]
    assert act(wanted, wanted, voters - {leaving}) == []


def test_only_scheduled_moves_act() -> None:
    state = add(bootstrap(), "10.0.0.4:2379")
    first, second = (m.move.partition for m in state.moves()[:2])
    views = {p: view(p, state.partitions[p].replicas[0], set(state.partitions[p].replicas)) for p in (first, second)}
    leaders = {state.partitions[first].replicas[0], state.partitions[second].replicas[0]}
    acted = {a.group for n in leaders for a in reconcile(n, state, views, None, 1) if isinstance(a, ProposeConfChange)}
    assert acted == {first}


def test_the_meta_leader_keeps_five_voters_among_active_members_and_the_rest_learners() -> None:
    members = {n: f"10.0.0.{n}:2379" for n in range(1, 8)}
    state = bootstrap(members)
    conf = initial_meta_conf(state)
    assert (conf.voters, conf.learners) == (frozenset({1, 2, 3, 4, 5}), frozenset({6, 7}))
    meta = ReplicaView(0, 1, conf.voters, conf.learners, committed=50, matches={n: 50 for n in members})
    assert reconcile(1, state, {}, meta, 3) == [CreateReplica(p) for p, c in enumerate(state.partitions)
                                                if 1 in c.replicas]
    state = command(state, meta_pb2.MetaCommand(replace_member=meta_pb2.ReplaceMember(node_id=3)))
    changes = [a for a in reconcile(1, state, {p: view(p, 0, set()) for p in range(PARTITIONS)}, meta, 3)
               if isinstance(a, ProposeConfChange)]
    assert changes == [ProposeConfChange(0, ConfChange(ConfChangeType.ADD_VOTER, 6))]
    promoted = ReplicaView(0, 1, conf.voters | {6}, frozenset({7}), committed=50, matches={n: 50 for n in members})
    changes = [a for a in reconcile(1, state, {}, promoted, 3) if isinstance(a, ProposeConfChange)]
    assert changes == [ProposeConfChange(0, ConfChange(ConfChangeType.REMOVE, 3))]


# -- many nodes acting on their own views ----------------------------------------------------


@dataclass
class Group:
    voters: set[int]
    learners: set[int] = field(default_factory=set)
    leader: int = 0

    def change(self, change: ConfChange) -> None:
        node = change.node_id
        if change.type is ConfChangeType.ADD_LEARNER:
            self.voters.discard(node)
            self.learners.add(node)
        elif change.type is ConfChangeType.ADD_VOTER:
            self.learners.discard(node)
            self.voters.add(node)
        else:
            self.voters.discard(node)
            self.learners.discard(node)

    def elect(self, down: set[int]) -> None:
        """A leader that left the group, or is down, is replaced by another voter."""
        if self.leader not in self.voters or self.leader in down:
            self.leader = min(self.voters - down)


@dataclass
class World:
    """Groups whose conf changes apply at once; a replica is caught up once it exists; lost
    nodes are down and do nothing."""

    state: ClusterState
    groups: dict[int, Group]
    meta: Group
    hosted: dict[int, set[int]]  # node -> groups it has a replica of
    lost: set[int] = field(default_factory=set)

    def elect(self) -> None:
        for model in (self.meta, *self.groups.values()):
            model.elect(self.lost)

    def view_of(self, node: int, group: int, model: Group) -> ReplicaView:
        members = model.voters | model.learners
        matches = {n: 100 if group in self.hosted.get(n, set()) or group < 0 else 0 for n in members}
        return ReplicaView(group, model.leader, frozenset(model.voters), frozenset(model.learners), 100,
                           matches if model.leader == node else {})

    def act(self, node: int, action: Action) -> None:
        if isinstance(action, CreateReplica):
            self.hosted[node].add(action.group)
        elif isinstance(action, DeleteReplica):
            self.hosted[node].discard(action.group)
        elif isinstance(action, ProposeConfChange):
            (self.meta if action.group < 0 else self.groups[action.group]).change(action.change)
            if action.group < 0:  # the meta group's log tells its state machine its voters
                self.state = with_meta_voters(self.state, frozenset(self.meta.voters))
            self.elect()
        elif isinstance(action, TransferLeader):
            model = self.meta if action.group < 0 else self.groups[action.group]
            if action.to in model.voters:
                model.leader = action.to
        else:
            after, result = apply_command(self.state, meta_pb2.MetaCommand(
                move_step_done=meta_pb2.MoveStepDone(partition=action.partition, step=action.step)))
            self.state = after


@given(change=st.sampled_from(["add", "remove", "replace", "replace-fresh"]), seed=st.integers(0, 2**32),
       limit=st.integers(1, 4))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_nodes_acting_on_their_own_views_carry_any_change_to_its_end(change: str, seed: int, limit: int) -> None:
    rng = random.Random(seed)
    members = {n: f"10.0.0.{n}:2379" for n in range(1, 6)}
    state = bootstrap(members)
    conf = initial_meta_conf(state)
    world = World(state, {p: Group(set(c.replicas), leader=c.replicas[0]) for p, c in enumerate(state.partitions)},
                  Group(set(conf.voters), set(conf.learners), leader=1),
                  {n: {p for p, c in enumerate(state.partitions) if n in c.replicas} for n in range(1, 8)})
    victim = rng.choice(list(members))
    if change == "add":
        message = meta_pb2.MetaCommand(add_member=meta_pb2.AddMember(address="10.0.0.6:2379"))
    elif change == "remove":
        message = meta_pb2.MetaCommand(remove_member=meta_pb2.RemoveMember(node_id=victim))
    else:
        address = members[victim] if change == "replace-fresh" else ""
        message = meta_pb2.MetaCommand(replace_member=meta_pb2.ReplaceMember(node_id=victim, address=address))
    world.state = command(world.state, message)
    lost = world.lost = {m.id for m in world.state.members if m.lost}
    world.elect()
    for _ in range(300):
        quiet = True
        # Removed nodes are stopped (their groups elect new leaders), as lost ones are dead.
        world.lost = lost | {m.id for m in world.state.members if m.state is MemberState.REMOVED}
        world.elect()
        nodes = [m.id for m in world.state.members if m.state is not MemberState.REMOVED and m.id not in lost]
        rng.shuffle(nodes)
        for node in nodes:
            views = {p: world.view_of(node, p, world.groups[p]) for p in world.hosted.setdefault(node, set())}
            meta = world.view_of(node, -1, world.meta)
            for action in reconcile(node, world.state, views, meta, limit):
                quiet = False
                if rng.random() < 0.2:
                    break  # the node crashed (or timed out) here: the rest must be redone later
                world.act(node, action)
        if quiet:
            break
    final = world.state
    assert not final.moves()
    assert all(m.state in (MemberState.ACTIVE, MemberState.REMOVED) for m in final.members)
    for partition, current in enumerate(final.partitions):
        group = world.groups[partition]
        assert group.voters == set(current.replicas) and not group.learners
        assert {n for n, hosted in world.hosted.items() if partition in hosted and n not in lost} == group.voters
    active = {m.id for m in final.members if m.state is MemberState.ACTIVE}
    assert world.meta.voters <= active and len(world.meta.voters) == min(MAX_META_VOTERS, len(active))
    assert world.meta.learners == active - world.meta.voters
