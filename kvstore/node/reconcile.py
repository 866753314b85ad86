"""Reconciling a node with the cluster state: which replicas it must create or delete, which
membership changes it must propose in the groups it leads, and which move steps it can report.

A pure function of what the node sees — the cluster state it applied from the meta group and
its own replicas' Raft views — like leader balancing (`balance.py`); the node calls it every few
ticks and whenever the state changes, and carries out what it returns. Every action is safe to
repeat: a step is reported only once its effect is visible (the conf change applied, the
learner caught up, the leadership moved), and a report of a step that is no longer the next is
ignored by the state machine. So a node that crashes in the middle of a step simply finds,
after restarting, that the step is done (and reports it) or not (and does it again).

Who does what, for a partition's move (`kvstore.ring.moves`):

* the partition's leader proposes ADD_LEARNER / PROMOTE / REMOVE conf changes, checks the
  learner's catch-up, and hands over its leadership (when it is leaving, and for
  TRANSFER_LEADER); the new leader reports a TRANSFER_LEADER step that names it;
* the node being added creates an empty replica as soon as a move targets it (it then waits,
  voteless, for the leader's snapshot); the node being removed deletes its replica at its
  DELETE_DATA step and reports it — the leader reports it for a lost node;
* only moves picked by `schedule(moves, limit)` act, which every node computes alike from the
  same state, so at most `limit` run at once in the whole cluster.

The meta group keeps up to `MAX_META_VOTERS` voters among the active members (the current ones
first, then the lowest ids) and every other member as a learner, so that every node applies the
cluster state; its leader makes those changes one at a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kvstore.raft import ConfChange, ConfChangeType, ConfState
from kvstore.ring import MoveProgress, StepKind, schedule
from kvstore.statemachine.cluster_state import MAX_META_VOTERS, ClusterState, MemberState

CATCH_UP_SLACK = 64
"""A learner is caught up once its log is within this many entries of the leader's commit
index: under steady writes it never matches exactly, and the rest arrives in the next append."""


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """One Raft group as this node's replica sees it."""

    group: int
    leader: int
    voters: frozenset[int]
    learners: frozenset[int] = frozenset()
    committed: int = 0
    matches: Mapping[int, int] = field(default_factory=dict)  # leader only: each peer's match index
    conf_pending: bool = False  # a conf change may be in the log and not applied yet
    transferring: bool = False


@dataclass(frozen=True, slots=True)
class CreateReplica:
    group: int


@dataclass(frozen=True, slots=True)
class DeleteReplica:
    group: int


@dataclass(frozen=True, slots=True)
class ProposeConfChange:
    group: int
    change: ConfChange


@dataclass(frozen=True, slots=True)
class TransferLeader:
    group: int
    to: int


@dataclass(frozen=True, slots=True)
class ReportStep:
    partition: int
    step: int


Action = CreateReplica | DeleteReplica | ProposeConfChange | TransferLeader | ReportStep


def initial_meta_conf(state: ClusterState) -> ConfState:
    """The meta group's configuration when the cluster is bootstrapped."""
    return ConfState(state.meta_voters, frozenset(m.id for m in state.members) - state.meta_voters)


def reconcile(me: int, state: ClusterState, replicas: Mapping[int, ReplicaView], meta: ReplicaView | None,
              limit: int) -> list[Action]:
    """What node `me` should do now, given the cluster `state`, its partition `replicas` and its
    view of the meta group (None when it hosts no meta replica yet).

    `state` must be fresh: applied up to a linearizable read of the meta group made before this
    call (ReadIndex). A node's own copy may lag far behind — after a restart, or cut off from
    the meta leader — and decisions taken from an old state undo newer ones: a leader would put
    back a member the cluster has since removed, a node would delete a replica the partition
    has since come back to. Reports need no such care (a stale one is ignored), but every
    other action does."""
    actions: list[Action] = [*_hosting(me, state, replicas), *_repairs(me, state, replicas)]
    for progress in schedule(state.moves(), limit):
        view = replicas.get(progress.move.partition)
        if view is not None:
            actions += _move_actions(me, state, view, progress)
    if meta is not None and meta.leader == me:
        actions += _meta_actions(me, state, meta)
    return actions


def _hosting(me: int, state: ClusterState, replicas: Mapping[int, ReplicaView]) -> list[Action]:
    """Replicas to create (a move targets this node, or the state counts it in) and to delete:
    at its DELETE_DATA step (reported even when the replica is gone already, as after a crash
    between the two), or a leftover that nothing in the state refers to — a replica removed
    from its group often never learns it (the leader stops writing to it), so only the state,
    read fresh, can tell."""
    actions: list[Action] = []
    for partition, current in enumerate(state.partitions):
        move = current.move
        view = replicas.get(partition)
        if move is not None and me in move.source and me not in move.target:
            progress = move.progress(partition)
            step = progress.next_step()
            if step.kind is StepKind.DELETE_DATA and int(step.node) == me:
                actions += [] if view is None else [DeleteReplica(partition)]
                actions.append(ReportStep(partition, progress.done))
        elif me in current.replicas or me in current.learners or (move is not None and me in move.target):
            actions += [] if view is not None else [CreateReplica(partition)]
        elif view is not None:
            actions.append(DeleteReplica(partition))
    return actions


def _repairs(me: int, state: ClusterState, replicas: Mapping[int, ReplicaView]) -> list[Action]:
    """Conf changes that bring each group this node leads back to the voters and learners the
    state records, apart from the node of the move's next step (which may or may not show that
    step's effect yet). They differ when a change was made from an older state than the one
    that won: a leader acting on a stale copy of the state, or a step applied just before its
    move was abandoned. One change per group at a time, as Raft takes them. (A node an
    ADD_LEARNER, PROMOTE or REMOVE step is about is left to that step.)"""
    actions: list[Action] = []
    lost = _lost(state)
    for partition, view in replicas.items():
        if view.leader != me or view.conf_pending or view.transferring:
            continue
        current = state.partitions[partition]
        stepping = set()
        if current.move is not None:
            step = current.move.progress(partition).next_step()
            if step.kind in (StepKind.ADD_LEARNER, StepKind.PROMOTE, StepKind.REMOVE):
                stepping.add(int(step.node))
        voters, learners = set(current.replicas) - stepping - lost, set(current.learners) - stepping - lost
        members = view.voters | view.learners
        if missing := sorted((voters | learners) - members):
            actions += _propose(view, ConfChangeType.ADD_LEARNER, missing[0])
        elif unpromoted := sorted(voters & view.learners):
            actions += _propose(view, ConfChangeType.ADD_VOTER, unpromoted[0])
        elif demoted := sorted(learners & view.voters - {me}):
            actions += _propose(view, ConfChangeType.ADD_LEARNER, demoted[0])
        elif strays := sorted(members - set(current.replicas) - set(current.learners) - stepping - {me}):
            actions += _propose(view, ConfChangeType.REMOVE, strays[0])
    return actions


def _move_actions(me: int, state: ClusterState, view: ReplicaView, progress: MoveProgress) -> list[Action]:
    """The next step of the move of `view.group`, as far as this replica can take it."""
    partition = view.group
    step = progress.next_step()
    kind, node = step.kind, int(step.node)
    report: list[Action] = [ReportStep(partition, progress.done)]
    if kind is StepKind.TRANSFER_LEADER and node == me and view.leader == me:
        return report  # the new leader reports its own election
    if view.leader != me or view.transferring:
        return []
    if view.conf_pending and kind in (StepKind.ADD_LEARNER, StepKind.PROMOTE, StepKind.REMOVE):
        # The applied configuration is about to change (a conf change, or a new leader's log, is
        # not applied yet): neither its absence nor its presence says anything about the step.
        return []
    members = view.voters | view.learners
    if kind is StepKind.ADD_LEARNER:
        return report if node in members else _propose(view, ConfChangeType.ADD_LEARNER, node)
    if kind is StepKind.CATCH_UP:
        return report if _caught_up(view, node) else []
    if kind is StepKind.PROMOTE:
        if node in view.voters:
            return report
        # A learner that a change from a stale state removed is added back first.
        return _propose(view, ConfChangeType.ADD_VOTER if node in view.learners else ConfChangeType.ADD_LEARNER, node)
    if kind is StepKind.REMOVE:
        if node not in members:
            return report
        if node == me:
            return _hand_over(view, tuple(int(n) for n in progress.move.new_replicas), _lost(state))
        return _propose(view, ConfChangeType.REMOVE, node)
    member = state.member(node)
    if member is not None and member.lost:
        return report  # a lost node takes no leadership and deletes nothing: done without it
    if kind is StepKind.TRANSFER_LEADER:
        return [TransferLeader(partition, node)] if node in view.voters else []
    return []  # DELETE_DATA: the leaver does it


def _caught_up(view: ReplicaView, node: int) -> bool:
    match = view.matches.get(node, 0)
    return match > 0 and match + CATCH_UP_SLACK >= view.committed


def _propose(view: ReplicaView, kind: ConfChangeType, node: int) -> list[Action]:
    return [ProposeConfChange(view.group, ConfChange(kind, node))]


def _lost(state: ClusterState) -> set[int]:
    return {m.id for m in state.members if m.lost}


def _hand_over(view: ReplicaView, preferred: tuple[int, ...], lost: set[int]) -> list[Action]:
    """This leader is leaving the group: its leadership goes first to another live voter, the
    preferred one when it already votes."""
    candidates = view.voters - {view.leader} - lost
    others = [n for n in preferred if n in candidates] or sorted(candidates)
    return [TransferLeader(view.group, others[0])] if others else []


def _meta_actions(me: int, state: ClusterState, meta: ReplicaView) -> list[Action]:
    """The meta leader's next change to the meta group's own configuration, if any (Raft takes
    one at a time: none while one is not applied)."""
    if meta.conf_pending:
        return []
    # Voters among the members alive as far as the state knows: active ones first, then joining,
    # the current voters first within each kind so that the group does not churn. Leaving ones
    # only when no other remains: a leaving member is soon stopped, and should by then be a
    # learner, whose loss costs the group nothing.
    rank = {MemberState.ACTIVE: 0, MemberState.JOINING: 1, MemberState.LEAVING: 2}
    usable = sorted((m for m in state.members if m.state is not MemberState.REMOVED and not m.lost),
                    key=lambda m: (rank[m.state], m.id not in meta.voters, m.id))
    staying = [m for m in usable if m.state is not MemberState.LEAVING]
    want_voters = {m.id for m in (staying or usable)[:MAX_META_VOTERS]}
    want_learners = {m.id for m in usable} - want_voters
    members = meta.voters | meta.learners
    missing = sorted((want_voters | want_learners) - members)
    if missing:
        return _propose(meta, ConfChangeType.ADD_LEARNER, missing[0])
    ready = sorted(n for n in want_voters & meta.learners if _caught_up(meta, n))
    if ready:
        return _propose(meta, ConfChangeType.ADD_VOTER, ready[0])
    surplus = sorted(meta.voters - want_voters)
    if surplus and len(meta.voters) > 1:
        if surplus[0] == me:
            return _hand_over(meta, tuple(sorted(want_voters)), _lost(state))
        change = ConfChangeType.ADD_LEARNER if surplus[0] in want_learners else ConfChangeType.REMOVE
        return _propose(meta, change, surplus[0])
    gone = sorted(meta.learners - want_learners - want_voters)
    return _propose(meta, ConfChangeType.REMOVE, gone[0]) if gone else []
