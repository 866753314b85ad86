"""The meta group's state machine: the cluster's members, each partition's replicas and the moves
between replica sets, at one epoch.

Pure and deterministic like the partitions' applier (no clock, randomness, I/O): every node of the
meta group applies the same `MetaCommand`s (`kvstore/_pb/meta.proto`) in log order and holds the
same `ClusterState`. `apply_command` returns the next state and the command's `CommandResult`;
the epoch grows by one with every command that changes anything, so anyone holding a map can
tell whether another one is newer.

What the commands do:

* ``AddMember(address)``: a new member, JOINING, under the next node id (ids are never reused;
  removed members stay listed as REMOVED);
* ``RemoveMember(id)``: the member is LEAVING: its partitions are drained to the others;
* ``ReplaceMember(id, address)``: the member is LEAVING and ``lost`` (its data is gone or not
  trusted, so no step waits on it); with an address, a fresh member takes over its ring tokens,
  so exactly its partitions move to the newcomer;
* ``MoveStepDone(partition, step)``: one step of a partition's move is done (see
  `kvstore.ring.moves`); reports of any other step than the next are stale and change nothing.

The state also keeps the meta group's own voters (`meta_voters`, from the CONF_CHANGE entries
of the meta group's log, `with_meta_voters`): a LEAVING member becomes REMOVED only once it no
longer votes there either, so that REMOVED means "safe to stop" — stopping a member that still
votes in the meta group would cost that group a voter it may need for its quorum.

After each change the target placement (`kvstore.ring.place` over the JOINING and ACTIVE
members) is compared with each partition that is not moving: a partition whose replica set
differs gets a move. A move under way is never redirected; when it ends, the partition is
compared again. A JOINING member becomes ACTIVE once no move is adding it; a LEAVING member
becomes REMOVED once no partition or move refers to it any more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import IntEnum
from types import MappingProxyType
from typing import Any

from google.protobuf.message import DecodeError

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import meta_pb2
from kvstore.codec import CodecError
from kvstore.ring import MoveProgress, PartitionMove, StepKind, place, resolve_tokens, vnode_tokens
from kvstore.ring.hashing import key_partition

MAX_META_VOTERS = 5
"""The meta group's largest number of voters; every other member is a learner of it."""


class MemberState(IntEnum):
    JOINING = pb.JOINING
    ACTIVE = pb.ACTIVE
    LEAVING = pb.LEAVING
    REMOVED = pb.REMOVED


class Refusal(IntEnum):
    NOT_FOUND = 1  # no such member (or partition; or user, role, grant: `control`)
    INVALID = 2  # the command cannot apply to this state
    STALE = 3  # a move step that is not the next one: already recorded, or from an old move


@dataclass(frozen=True, slots=True)
class CommandResult:
    node_id: int = 0  # the member added (AddMember, ReplaceMember with an address)
    refusal: Refusal | None = None  # None: applied
    message: str = ""
    epoch: int = 0  # of the state after the command
    revision: int = 0  # the index of the meta group's entry that carried it (set by the meta applier)

    def to_pb(self) -> meta_pb2.MetaResult:
        return meta_pb2.MetaResult(node_id=self.node_id, refusal=0 if self.refusal is None else self.refusal.value,
                                   message=self.message, epoch=self.epoch, revision=self.revision)

    @classmethod
    def from_pb(cls, result: meta_pb2.MetaResult) -> CommandResult:
        return cls(result.node_id, Refusal(result.refusal) if result.refusal else None, result.message, result.epoch,
                   result.revision)


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    address: str
    state: MemberState
    lost: bool = False
    tokens: tuple[int, ...] = ()  # ring tokens; empty: derived from the id

    @property
    def placed(self) -> bool:
        """Whether the ring places partitions on this member."""
        return self.state in (MemberState.JOINING, MemberState.ACTIVE)


@dataclass(frozen=True, slots=True)
class Move:
    """A partition's move from replica set `source` to `target`; `done` steps of it are done."""

    source: tuple[int, ...]
    target: tuple[int, ...]
    done: int = 0

    def progress(self, partition: int) -> MoveProgress:
        return MoveProgress(PartitionMove.between(partition, _ring_ids(self.source), _ring_ids(self.target)),
                            self.done)


@dataclass(frozen=True, slots=True)
class PartitionState:
    replicas: tuple[int, ...]  # voters, preferred leader first
    learners: tuple[int, ...] = ()
    move: Move | None = None


@dataclass(frozen=True, slots=True)
class ClusterState:
    cluster_id: str
    partition_count: int
    replication_factor: int
    vnodes: int
    epoch: int
    next_node_id: int
    members: tuple[Member, ...]  # by id, removed ones included
    partitions: tuple[PartitionState, ...]
    meta_voters: frozenset[int] = frozenset()  # the meta group's voters, as its log last changed them

    @classmethod
    def bootstrap(cls, cluster_id: str, members: Mapping[int, str], partition_count: int,
                  replication_factor: int, vnodes: int) -> ClusterState:
        """The state every initial node computes alike: the members ACTIVE at epoch 1, each
        partition on its placement."""
        ids = sorted(members)
        state = cls(cluster_id, partition_count, replication_factor, vnodes, 1, max(members) + 1,
                    tuple(Member(node_id, members[node_id], MemberState.ACTIVE) for node_id in ids), (),
                    frozenset(ids[:MAX_META_VOTERS]))
        return replace(state, partitions=tuple(PartitionState(replicas) for replicas in state.target_placement()))

    def member(self, node_id: int) -> Member | None:
        return next((member for member in self.members if member.id == node_id), None)

    def partition_for_key(self, key: bytes) -> int:
        """The partition holding `key` (hash tags honoured)."""
        return key_partition(key, self.partition_count.bit_length() - 1)

    def addresses(self) -> dict[int, str]:
        """Node id -> address of every member that may still run (not removed, not lost)."""
        return {m.id: m.address for m in self.members if m.state is not MemberState.REMOVED and not m.lost}

    def target_placement(self) -> tuple[tuple[int, ...], ...]:
        """Each partition's replicas as the ring places them on the JOINING and ACTIVE members."""
        placed = [member for member in self.members if member.placed]
        ids = [str(member.id) for member in placed]
        tokens = resolve_tokens(ids, self.vnodes, {str(m.id): m.tokens for m in placed if m.tokens})
        return tuple(tuple(int(node_id) for node_id in replicas)
                     for replicas in place(ids, tokens, self.partition_count, self.replication_factor))

    def moves(self) -> list[MoveProgress]:
        """The moves under way, in partition order."""
        return [p.move.progress(partition) for partition, p in enumerate(self.partitions) if p.move is not None]


def _ring_ids(node_ids: Iterable[int]) -> tuple[str, ...]:
    return tuple(str(node_id) for node_id in node_ids)


def with_meta_voters(state: ClusterState, voters: frozenset[int]) -> ClusterState:
    """The state once the meta group's voters are `voters` (a CONF_CHANGE entry of its log was
    applied): a new epoch when that settles a member (a leaving one may now be REMOVED)."""
    if voters == state.meta_voters:
        return state
    settled = _settle(replace(state, meta_voters=voters))
    return replace(settled, epoch=state.epoch + 1) if settled.members != state.members else settled


def apply_command(state: ClusterState, command: meta_pb2.MetaCommand) -> tuple[ClusterState, CommandResult]:
    """The state after `command`, and its result. A refused command leaves the state as it was."""
    kind = command.WhichOneof("command")
    handler = _COMMANDS.get(kind or "")
    if handler is None:
        return state, CommandResult(refusal=Refusal.INVALID, message=f"not a meta command: {kind!r}", epoch=state.epoch)
    after, result = handler(state, getattr(command, kind or ""))
    return after, replace(result, epoch=after.epoch)


def _refused(state: ClusterState, refusal: Refusal, message: str) -> tuple[ClusterState, CommandResult]:
    return state, CommandResult(refusal=refusal, message=message)


def _address_problem(state: ClusterState, address: str, replacing: int = 0) -> str:
    """Why `address` cannot be a new member's ("" when it can)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return f"address {address!r} is not HOST:PORT"
    taken = [m.id for m in state.members
             if m.address == address and m.state is not MemberState.REMOVED and not m.lost and m.id != replacing]
    return f"address {address} is already member {taken[0]}'s" if taken else ""


def _changed(state: ClusterState, members: tuple[Member, ...], partitions: tuple[PartitionState, ...],
             next_node_id: int | None = None) -> ClusterState:
    """The next epoch's state: moves planned for partitions that need one, member states settled."""
    changed = replace(state, epoch=state.epoch + 1, members=members, partitions=partitions,
                      next_node_id=state.next_node_id if next_node_id is None else next_node_id)
    return _settle(_plan(changed))


def _add(state: ClusterState, address: str) -> tuple[ClusterState, CommandResult]:
    problem = _address_problem(state, address)
    if problem:
        return _refused(state, Refusal.INVALID, problem)
    node_id = state.next_node_id
    members = (*state.members, Member(node_id, address, MemberState.JOINING))
    return _changed(state, members, state.partitions, node_id + 1), CommandResult(node_id)


def _leaving(state: ClusterState, node_id: int, joining: bool) -> tuple[Refusal, str] | None:
    """Why member `node_id` cannot leave, a member `joining` in its place or not; None when it can."""
    member = state.member(node_id)
    if member is None or member.state is MemberState.REMOVED:
        return Refusal.NOT_FOUND, f"node {node_id} is not a member"
    if not joining and not any(m.placed for m in state.members if m.id != node_id):
        return Refusal.INVALID, f"node {node_id} is the last member; a cluster cannot remove its last node"
    return None


def _remove(state: ClusterState, node_id: int) -> tuple[ClusterState, CommandResult]:
    problem = _leaving(state, node_id, joining=False)
    if problem is not None:
        return _refused(state, *problem)
    if any(m.id == node_id and m.state is MemberState.LEAVING for m in state.members):
        return state, CommandResult(node_id)  # already draining
    members = tuple(replace(m, state=MemberState.LEAVING) if m.id == node_id else m for m in state.members)
    return _changed(state, members, state.partitions), CommandResult(node_id)


def _replace(state: ClusterState, node_id: int, address: str) -> tuple[ClusterState, CommandResult]:
    problem = _leaving(state, node_id, joining=bool(address))
    if problem is not None:
        return _refused(state, *problem)
    address_problem = _address_problem(state, address, replacing=node_id) if address else ""
    if address_problem:
        return _refused(state, Refusal.INVALID, address_problem)
    old = state.member(node_id)
    assert old is not None
    members = tuple(replace(m, state=MemberState.LEAVING, lost=True) if m.id == node_id else m
                    for m in state.members)
    # A move that was adding the lost member would wait for it forever: it ends where it is, and
    # the partition is planned again from its current voters and learners.
    partitions = tuple(
        PartitionState(p.replicas, p.learners)
        if p.move is not None and node_id in p.move.target and node_id not in p.move.source else p
        for p in state.partitions
    )
    if not address:
        return _changed(state, members, partitions), CommandResult()
    # The newcomer takes the lost member's place on the ring: exactly its partitions move.
    fresh = Member(state.next_node_id, address, MemberState.JOINING,
                   tokens=old.tokens or vnode_tokens(str(old.id), state.vnodes))
    return _changed(state, (*members, fresh), partitions, fresh.id + 1), CommandResult(fresh.id)


def _step_done(state: ClusterState, partition: int, step: int) -> tuple[ClusterState, CommandResult]:
    if not 0 <= partition < state.partition_count:
        return _refused(state, Refusal.NOT_FOUND, f"there is no partition {partition}")
    current = state.partitions[partition]
    move = current.move
    if move is None or step != move.done:
        expected = "none is under way" if move is None else f"the next is step {move.done}"
        return _refused(state, Refusal.STALE, f"step {step} of partition {partition}'s move is not the next: {expected}")
    done = move.progress(partition).next_step()
    node = int(done.node)
    replicas, learners = current.replicas, current.learners
    if done.kind is StepKind.ADD_LEARNER:
        learners = (*learners, node)
    elif done.kind is StepKind.PROMOTE:
        learners = tuple(n for n in learners if n != node)
        replicas = (*replicas, node)
    elif done.kind is StepKind.REMOVE:
        replicas = tuple(n for n in replicas if n != node)
        learners = tuple(n for n in learners if n != node)
    elif done.kind is StepKind.TRANSFER_LEADER:
        replicas = (node, *(n for n in replicas if n != node))
    advanced = replace(move, done=move.done + 1)
    if advanced.progress(partition).finished:
        updated = PartitionState(advanced.target)
    else:
        updated = PartitionState(replicas, learners, advanced)
    partitions = tuple(updated if p == partition else other for p, other in enumerate(state.partitions))
    return _changed(state, state.members, partitions), CommandResult()


def _plan(state: ClusterState) -> ClusterState:
    """A move for every partition that is not moving and whose group (voters and learners) is
    not its target replica set."""
    partitions = tuple(
        PartitionState(current.replicas, current.learners, Move((*current.replicas, *current.learners), target))
        if current.move is None and set(current.replicas) | set(current.learners) != set(target) else current
        for current, target in zip(state.partitions, state.target_placement(), strict=True)
    )
    return replace(state, partitions=partitions)


def _settle(state: ClusterState) -> ClusterState:
    """JOINING members no move is adding become ACTIVE; LEAVING members nothing refers to (nor
    votes in the meta group), REMOVED."""
    adding: set[int] = set()
    referred: set[int] = set(state.meta_voters)
    for partition in state.partitions:
        referred.update(partition.replicas, partition.learners)
        if partition.move is not None:
            adding.update(set(partition.move.target) - set(partition.move.source))
            referred.update(partition.move.source, partition.move.target)
    members = tuple(
        replace(m, state=MemberState.ACTIVE) if m.state is MemberState.JOINING and m.id not in adding
        else replace(m, state=MemberState.REMOVED) if m.state is MemberState.LEAVING and m.id not in referred
        else m
        for m in state.members
    )
    return replace(state, members=members)


# -- codec ---------------------------------------------------------------------------------


# The meta group's membership commands, one row each: MetaCommand's oneof field -> what applying
# it does. A new replicated system command is a message in that oneof (meta.proto), a pure
# function (state, message) -> (state, result) here, and its row below. The one other field,
# `control`, is the control section's (`kvstore.statemachine.control`, a table of its own);
# `meta.apply_meta_command` hands each section its commands, and nothing else dispatches on them.
_COMMANDS: Mapping[str, Callable[[ClusterState, Any], tuple[ClusterState, CommandResult]]] = MappingProxyType({
    "add_member": lambda state, add: _add(state, add.address),
    "remove_member": lambda state, remove: _remove(state, remove.node_id),
    "replace_member": lambda state, swap: _replace(state, swap.node_id, swap.address),
    "move_step_done": lambda state, step: _step_done(state, step.partition, step.step),
})


def encode_state(state: ClusterState) -> bytes:
    """The state as a `MetaState` message; equal states encode to equal bytes."""
    record = meta_pb2.MetaState(
        cluster_id=state.cluster_id, partition_count=state.partition_count,
        replication_factor=state.replication_factor, vnodes=state.vnodes, epoch=state.epoch,
        next_node_id=state.next_node_id, meta_voters=sorted(state.meta_voters),
        members=[meta_pb2.MetaMember(id=m.id, address=m.address, state=m.state.value, lost=m.lost, tokens=m.tokens)
                 for m in state.members],
    )
    for partition in state.partitions:
        entry = record.partitions.add(replicas=partition.replicas, learners=partition.learners)
        if partition.move is not None:
            entry.moving = True
            entry.move_from.extend(partition.move.source)
            entry.move_to.extend(partition.move.target)
            entry.move_done = partition.move.done
    return record.SerializeToString(deterministic=True)


def decode_state(data: bytes) -> ClusterState:
    """The state `encode_state` wrote; `CodecError` when `data` is not one."""
    try:
        record = meta_pb2.MetaState.FromString(data)
    except DecodeError as exc:
        raise CodecError(f"not a cluster state: {exc}") from None
    if len(record.partitions) != record.partition_count or not record.members:
        raise CodecError(f"cluster state of {len(record.partitions)} partitions says it has "
                         f"{record.partition_count}, and {len(record.members)} members")
    known = {m.id for m in record.members}
    for partition in record.partitions:
        unknown = set(partition.replicas) | set(partition.learners) | set(partition.move_from) | set(partition.move_to)
        if not unknown <= known:
            raise CodecError(f"cluster state refers to nodes that are not members: {sorted(unknown - known)}")
    try:
        members = tuple(Member(m.id, m.address, MemberState(m.state), m.lost, tuple(m.tokens)) for m in record.members)
    except ValueError as exc:
        raise CodecError(f"cluster state has a bad member state: {exc}") from None
    return ClusterState(
        record.cluster_id, record.partition_count, record.replication_factor, record.vnodes, record.epoch,
        record.next_node_id, members,
        tuple(PartitionState(tuple(p.replicas), tuple(p.learners),
                             Move(tuple(p.move_from), tuple(p.move_to), p.move_done) if p.moving else None)
              for p in record.partitions),
        frozenset(record.meta_voters),
    )
