"""Deterministic simulation of a whole cluster's membership changes, driven by one seed.

Where `simulation.py` puts one Raft group under faults, this puts many: every node hosts a
replica of the meta group (`kvstore.statemachine.cluster_state` applied from its log) and of the
partitions the cluster state gives it, and every node follows that state through
`kvstore.node.reconcile` — creating and deleting replicas, proposing the conf changes of the
moves it leads, handing leadership over and reporting the steps it took — exactly the calls a
real node makes. The nemesis adds, removes and replaces members (a replaced node is dead for
good, its replacement starts with an empty disk under a new id) while it crashes nodes, cuts
links and loses messages; clients write and read every partition throughout.

Checked: per group, one leader per term and committed entries never change (after every step);
at the end, after the faults heal, every move finishes, each partition's Raft configuration
equals the cluster state's replica set on every replica, each replica's data equals the
sequential model at its applied index, and the client history is linearizable per partition.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from kvstore._pb import meta_pb2
from kvstore.node.membership import replica_view
from kvstore.node.reconcile import (
    CreateReplica,
    DeleteReplica,
    ProposeConfChange,
    ReportStep,
    TransferLeader,
    initial_meta_conf,
    reconcile,
)
from kvstore.raft import (
    ConfChange,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MemoryLogStorage,
    Message,
    NotLeaderError,
    ProposalDroppedError,
    RawNode,
    Role,
    Snapshot,
    SnapshotMeta,
    Tombstone,
)
from kvstore.statemachine.cluster_state import (
    ClusterState,
    MemberState,
    apply_command,
    decode_state,
    encode_state,
    with_meta_voters,
)
from kvstore.statemachine.meta import META_GROUP
from tests.sim.kv import AppliedOp, ClientOp, KVStateMachine, check_history, encode_op, model_state

PARTITIONS = 4
REPLICATION_FACTOR = 3
INITIAL_NODES = 4
MAX_NODES = 6
MOVES_AT_ONCE = 2
ROUNDS_PER_STEP = 4
RECONCILE_EVERY = 3
CLIENT_TIMEOUT_STEPS = 60
KEYS = ("a", "b", "c", "d", "e", "f")


class InvariantViolation(AssertionError):
    pass


class MetaMachine:
    """The meta group's state machine on one node: the cluster state, applied from the log."""

    def __init__(self, state: ClusterState | None) -> None:
        self.state = state
        self.applied_index = 0

    def apply(self, entry: Entry, voters: frozenset[int]) -> ConfChange | None:
        """`voters`: the meta group's, as of this entry (a CONF_CHANGE changes them)."""
        self.applied_index = entry.index
        if entry.type is EntryType.CONF_CHANGE:
            change = ConfChange.decode(entry.data)
            if self.state is not None:
                self.state = with_meta_voters(self.state, ConfState(voters).apply(change).voters)
            return change
        if entry.data and self.state is not None:
            self.state, _ = apply_command(self.state, meta_pb2.MetaCommand.FromString(entry.data))
        return None

    def snapshot_data(self) -> bytes:
        return encode_state(self.state) if self.state is not None else b""

    def restore(self, data: bytes, index: int) -> None:
        self.state = decode_state(data) if data else None
        self.applied_index = index


@dataclass(slots=True)
class Replica:
    raw: RawNode
    machine: KVStateMachine | MetaMachine
    waiters: dict[int, ClientOp] = field(default_factory=dict)
    read_waiters: dict[int, ClientOp] = field(default_factory=dict)
    ready_reads: list[tuple[int, int]] = field(default_factory=list)
    next_snapshot_at: int = 0


@dataclass(slots=True)
class SimNode:
    id: int
    disks: dict[int, MemoryLogStorage] = field(default_factory=dict)  # survive crashes
    tombstones: dict[int, Tombstone] = field(default_factory=dict)  # of replicas deleted, kept for good
    fresh_read: int = 0  # request id of the meta read a reconcile waits for (0: none)
    fresh_read_at: int = 0  # the step it was asked at: a read lost on the way is asked again
    replicas: dict[int, Replica] = field(default_factory=dict)  # lost on a crash
    alive: bool = False
    gone: bool = False  # replaced or removed: never runs again

    @property
    def meta(self) -> ClusterState | None:
        replica = self.replicas.get(META_GROUP)
        return replica.machine.state if replica is not None else None  # type: ignore[union-attr]


class ClusterSimulation:
    def __init__(self, seed: int, steps: int) -> None:
        self.seed = seed
        self.steps = steps
        self.rng = random.Random(seed)
        self.step_no = 0
        self.round = 0
        self.clock = 0
        self.trace = hashlib.sha256()
        self.nodes: dict[int, SimNode] = {}
        self.in_flight: list[tuple[int, int, int, Message]] = []  # due round, seq, group, message
        self.msg_seq = 0
        self.blocked: set[tuple[int, int]] = set()
        self.drop_rate = 0.0
        self.restart_at: dict[int, int] = {}
        self.replaced: dict[int, str] = {}  # dead node -> its replacement's address ("" for none)
        self.leader_of_term: dict[tuple[int, int], int] = {}
        self.committed: dict[int, dict[int, Entry]] = {}
        self.ops: dict[int, list[ClientOp]] = {p: [] for p in range(PARTITIONS)}
        self.pending: dict[int, ClientOp] = {}
        self.busy: set[int] = set()
        self.next_op_id = 1
        self.stats = {"crashes": 0, "adds": 0, "removes": 0, "replaces": 0, "steps_reported": 0,
                      "replicas_created": 0, "replicas_deleted": 0, "partitions": 0}

        members = {n: f"10.0.0.{n}:2379" for n in range(1, INITIAL_NODES + 1)}
        initial = self.newest = ClusterState.bootstrap("sim", members, PARTITIONS, REPLICATION_FACTOR, 16)
        meta_conf = initial_meta_conf(initial)
        for node_id in members:
            node = self.nodes[node_id] = SimNode(node_id)
            node.disks[META_GROUP] = self._bootstrap_disk(meta_conf, encode_state(initial))
            for partition, current in enumerate(initial.partitions):
                if node_id in current.replicas:
                    node.disks[partition] = self._bootstrap_disk(ConfState(frozenset(current.replicas)), b"")
            self._start(node)

    @staticmethod
    def _bootstrap_disk(conf: ConfState, data: bytes) -> MemoryLogStorage:
        # Every initial replica starts from the same snapshot at index 1, as a node's do.
        disk = MemoryLogStorage()
        disk.apply_snapshot(Snapshot(SnapshotMeta(1, 1, conf), data))
        disk.set_hard_state(HardState(term=1, commit=1))
        return disk

    def _event(self, text: str) -> None:
        self.trace.update(f"{self.step_no} {text}\n".encode())

    def _now(self) -> int:
        self.clock += 1
        return self.clock

    # -- node lifecycle ---------------------------------------------------------------------

    def _open(self, node: SimNode, group: int) -> None:
        disk = node.disks[group]
        snapshot = disk.snapshot()
        machine: KVStateMachine | MetaMachine = MetaMachine(None) if group == META_GROUP else KVStateMachine()
        machine.restore(snapshot.data, snapshot.meta.index)
        config = Config(node.id, election_tick=10, heartbeat_tick=1, max_inflight_msgs=32,
                        applied=snapshot.meta.index)
        raw = RawNode(config, disk, random.Random(self.rng.getrandbits(32)))
        node.replicas[group] = Replica(raw, machine, next_snapshot_at=snapshot.meta.index + self.rng.randint(20, 60))

    def _start(self, node: SimNode) -> None:
        node.alive = True
        for group in sorted(node.disks):
            self._open(node, group)
        self._event(f"start {node.id} groups={sorted(node.disks)}")

    def _crash(self, node: SimNode) -> None:
        self._event(f"crash {node.id}")
        self.stats["crashes"] += 1
        node.alive = False
        node.fresh_read = 0
        for replica in node.replicas.values():
            for op in [*replica.waiters.values(), *replica.read_waiters.values()]:
                self._complete(op, "info")
        node.replicas.clear()
        self.in_flight = [item for item in self.in_flight if item[3].to != node.id]
        for other in self.nodes.values():
            for replica in other.replicas.values():
                replica.raw.report_unreachable(node.id)

    # -- the main loop ----------------------------------------------------------------------

    def run(self) -> list[str]:
        for _ in range(self.steps):
            self._nemesis()
            self._clients()
            self._step()
        return self._finish()

    def _step(self) -> None:
        self.step_no += 1
        live = [self.nodes[n] for n in sorted(self.nodes) if self.nodes[n].alive]
        for node in live:
            for group in sorted(node.replicas):
                node.replicas[group].raw.tick()
        for _ in range(ROUNDS_PER_STEP):
            self.round += 1
            for node in live:
                for group in sorted(node.replicas):
                    if node.alive and group in node.replicas:
                        self._process_ready(node, group)
            self._deliver()
        if self.step_no % RECONCILE_EVERY == 0:
            for node in live:
                stale_read = node.fresh_read and self.step_no - node.fresh_read_at > 10 * RECONCILE_EVERY
                if node.alive and (not node.fresh_read or stale_read) and META_GROUP in node.replicas:
                    self._ask_fresh_state(node)
        for node_id, due in sorted(self.restart_at.items()):
            node = self.nodes[node_id]
            if due <= self.step_no and not node.alive and not node.gone:
                del self.restart_at[node_id]
                self._start(node)
        self._follow_membership()
        self._expire_client_ops()
        self._check_step()

    def _process_ready(self, node: SimNode, group: int) -> None:
        replica = node.replicas[group]
        raw = replica.raw
        if not raw.has_ready():
            return
        rd = raw.ready()
        if rd.soft_state is not None and rd.soft_state.role is Role.LEADER:
            self._check_leader(node, group)
        disk = node.disks[group]
        if rd.snapshot is not None:
            disk.apply_snapshot(rd.snapshot)
        disk.append(rd.entries)
        if rd.hard_state is not None:
            disk.set_hard_state(rd.hard_state)
        for message in rd.messages:
            self._send(group, message)
        if rd.snapshot is not None:
            replica.machine.restore(rd.snapshot.data, rd.snapshot.meta.index)
        for entry in rd.committed_entries:
            self._record_committed(node, group, entry)
            outcome = (replica.machine.apply(entry, frozenset(raw.raft.voters)) if isinstance(replica.machine, MetaMachine)
                       else replica.machine.apply(entry))
            if isinstance(outcome, ConfChange):
                raw.apply_conf_change(outcome)
                self._event(f"{node.id} g{group} applied {outcome.type.name} {outcome.node_id}")
            elif isinstance(outcome, AppliedOp):
                waiter = replica.waiters.pop(outcome.op_id, None)
                if waiter is not None:
                    waiter.result = outcome.result
                    self._complete(waiter, "ok")
        replica.ready_reads.extend((rs.index, rs.request_id) for rs in rd.read_states)
        self._serve_reads(node, replica)
        raw.advance(rd)
        applied = raw.raft.log.applied
        if applied >= replica.next_snapshot_at and applied > disk.snapshot().meta.index:
            replica.next_snapshot_at = applied + self.rng.randint(20, 60)
            disk.create_snapshot(applied, raw.raft.conf_state(), replica.machine.snapshot_data())
            disk.compact(max(disk.first_index(), applied - self.rng.randint(0, 10)))

    def _serve_reads(self, node: SimNode, replica: Replica) -> None:
        remaining = []
        for index, request_id in replica.ready_reads:
            if replica.machine.applied_index < index:
                remaining.append((index, request_id))
                continue
            if request_id == node.fresh_read:
                node.fresh_read = 0
                self._reconcile(node)
                continue
            op = replica.read_waiters.pop(request_id, None)
            if op is not None:
                op.result = replica.machine.kv.get(op.key)  # type: ignore[union-attr]
                op.served_index = replica.machine.applied_index
                self._complete(op, "ok")
        replica.ready_reads = remaining

    # -- following the cluster state --------------------------------------------------------

    def _ask_fresh_state(self, node: SimNode) -> None:
        """A linearizable read of the meta group: reconcile runs once it is served."""
        request = self.next_op_id
        self.next_op_id += 1
        try:
            node.replicas[META_GROUP].raw.read_index(request, lease=True)
        except NotLeaderError:
            return
        node.fresh_read, node.fresh_read_at = request, self.step_no

    def _reconcile(self, node: SimNode) -> None:
        state = node.meta
        if state is None:
            return
        views = {g: replica_view(g, r.raw) for g, r in node.replicas.items() if g != META_GROUP}
        meta = replica_view(META_GROUP, node.replicas[META_GROUP].raw)
        for action in reconcile(node.id, state, views, meta, MOVES_AT_ONCE):
            self._event(f"{node.id} does {action}")
            if isinstance(action, CreateReplica):
                disk = node.disks[action.group] = MemoryLogStorage()
                tombstone = node.tombstones.get(action.group)
                if tombstone is not None:
                    disk.set_hard_state(HardState(tombstone.term, tombstone.vote, 0))
                self._open(node, action.group)
                self.stats["replicas_created"] += 1
            elif isinstance(action, DeleteReplica):
                disk = node.disks.pop(action.group)
                last = disk.last_index()
                deleted = Tombstone(disk.hard_state.term, disk.hard_state.vote, last, disk.term(last))
                previous = node.tombstones.get(action.group)
                node.tombstones[action.group] = deleted if previous is None else previous.merged(deleted)
                node.replicas.pop(action.group)
                self.stats["replicas_deleted"] += 1
            elif isinstance(action, ProposeConfChange):
                try:
                    node.replicas[action.group].raw.propose_conf_change(action.change)
                except (NotLeaderError, ProposalDroppedError, ValueError):
                    continue
            elif isinstance(action, TransferLeader):
                node.replicas[action.group].raw.transfer_leader(action.to)
            elif isinstance(action, ReportStep):
                command = meta_pb2.MetaCommand(move_step_done=meta_pb2.MoveStepDone(
                    partition=action.partition, step=action.step))
                if self._propose_meta(node, command):
                    self.stats["steps_reported"] += 1

    def _meta_leader(self, via: SimNode | None = None) -> SimNode | None:
        """The meta group's leader, as reached from `via` (None: from anywhere)."""
        for node in self.nodes.values():
            replica = node.replicas.get(META_GROUP)
            if node.alive and replica is not None and replica.raw.raft.role is Role.LEADER:
                if via is None or via is node or (via.id, node.id) not in self.blocked:
                    return node
        return None

    def _propose_meta(self, via: SimNode | None, command: meta_pb2.MetaCommand) -> bool:
        """Propose on the meta leader (forwarded there, as a node forwards to it)."""
        leader = self._meta_leader(via)
        if leader is None:
            return False
        try:
            leader.replicas[META_GROUP].raw.propose([command.SerializeToString()])
        except (NotLeaderError, ProposalDroppedError):
            return False
        return True

    # -- network ----------------------------------------------------------------------------

    def _send(self, group: int, message: Message) -> None:
        if self.rng.random() < self.drop_rate:
            return
        self.msg_seq += 1
        self.in_flight.append((self.round + self.rng.choice((1, 1, 1, 2, 3)), self.msg_seq, group, message))

    def _deliver(self) -> None:
        due = sorted(item for item in self.in_flight if item[0] <= self.round)
        if not due:
            return
        self.in_flight = [item for item in self.in_flight if item[0] > self.round]
        for _, _, group, message in due:
            target = self.nodes.get(message.to)
            if target is None or not target.alive or (message.src, message.to) in self.blocked:
                continue
            replica = target.replicas.get(group)
            tombstone = target.tombstones.get(group)
            if replica is not None and not (tombstone is not None and tombstone.refuses(message)):
                replica.raw.step(message)

    # -- nemesis ----------------------------------------------------------------------------

    def _nemesis(self) -> None:
        rng = self.rng
        if rng.random() > 1 / 20:
            return
        action = rng.choice(("heal", "heal", "isolate", "crash", "crash", "lossy", "add", "remove", "replace",
                             "replace_fresh"))
        live = [n for n in sorted(self.nodes) if self.nodes[n].alive]
        self._event(f"nemesis {action}")
        if action == "heal":
            self.blocked.clear()
            self.drop_rate = 0.0
        elif action == "isolate" and live:
            victim = rng.choice(live)
            self.blocked = {(a, b) for a in self.nodes for b in self.nodes if a != b and victim in (a, b)}
            for a, b in sorted(self.blocked):
                for replica in self.nodes[a].replicas.values():
                    replica.raw.report_unreachable(b)
            self.stats["partitions"] += 1
        elif action == "crash" and live:
            victim = self.nodes[rng.choice(live)]
            self._crash(victim)
            self.restart_at[victim.id] = self.step_no + rng.randint(5, 40)
        elif action == "lossy":
            self.drop_rate = rng.choice((0.0, 0.05, 0.15))
        else:
            self._membership(action)

    def _membership(self, action: str) -> None:
        state = self._newest_state()
        placed = [m for m in state.members if m.placed and not m.lost and not self.nodes[m.id].gone]
        if action == "add" and len(placed) < MAX_NODES:
            command = meta_pb2.MetaCommand(add_member=meta_pb2.AddMember(address=f"10.0.1.{state.next_node_id}:2379"))
            if self._propose_meta(None, command):
                self.stats["adds"] += 1
        elif action == "remove" and len(placed) > REPLICATION_FACTOR:
            victim = self.rng.choice(placed)
            if self._propose_meta(None, meta_pb2.MetaCommand(remove_member=meta_pb2.RemoveMember(node_id=victim.id))):
                self.stats["removes"] += 1
        elif action.startswith("replace") and len(placed) > REPLICATION_FACTOR and all(
            state.member(node_id).state is MemberState.REMOVED for node_id in self.replaced  # type: ignore[union-attr]
        ):
            # Only a dead node is replaced: a replaced node never runs again. One at a time, and
            # never the one whose loss leaves a partition without a majority of its replicas
            # (it may have only two while the cluster shrinks): no protocol can repair that.
            lost = {m.id for m in state.members if m.lost}
            groups = [p.replicas for p in state.partitions] + [p.move.target for p in state.partitions if p.move]
            meta = [n.replicas[META_GROUP].raw.raft for n in self.nodes.values()
                    if n.alive and META_GROUP in n.replicas]
            if meta:
                groups.append(tuple(max(meta, key=lambda raft: raft.term).voters))
            lost |= {node_id for node_id, node in self.nodes.items() if node.gone}
            safe = [m for m in placed if all(len(set(g) - lost - {m.id}) > len(g) // 2 for g in groups)]
            if not safe:
                return
            victim = self.rng.choice(safe)
            node = self.nodes[victim.id]
            if node.alive:
                self._crash(node)
            node.gone = True
            self.restart_at.pop(victim.id, None)
            self.replaced[victim.id] = victim.address if action == "replace_fresh" else ""
            self.stats["replaces"] += 1

    def _replace_dead(self, state: ClusterState) -> None:
        """(Re)propose the replacement of every dead node the cluster does not count as lost yet,
        as an operator retries `kvctl member replace` until it is done (a second commit of the
        same replacement changes nothing: the address is then the newcomer's)."""
        for node_id, address in sorted(self.replaced.items()):
            member = state.member(node_id)
            if member is not None and not member.lost:
                self._propose_meta(None, meta_pb2.MetaCommand(
                    replace_member=meta_pb2.ReplaceMember(node_id=node_id, address=address)))

    def _follow_membership(self) -> None:
        """Start a node for each member added (with the id the cluster gave it), and stop the
        nodes the cluster removed, as `kvctl cluster add-node` / `remove-node` do: a removed node
        may not even learn that it was (the meta group lets it go at the same time)."""
        state = self._newest_state()
        if self.step_no % RECONCILE_EVERY == 0:
            self._replace_dead(state)
        for member in state.members:
            node = self.nodes.get(member.id)
            if node is None and member.placed:
                self._join(member.id)
            elif node is not None and member.state is MemberState.REMOVED and not node.gone:
                if node.alive:
                    self._crash(node)
                node.gone = True
                self.restart_at.pop(member.id, None)

    def _join(self, node_id: int) -> None:
        """Start a node with an empty disk: an empty meta replica, which the meta leader will add
        as a learner and catch up by snapshot (the proposal may also be lost: then it idles)."""
        node = self.nodes[node_id] = SimNode(node_id)
        node.disks[META_GROUP] = MemoryLogStorage()
        self._start(node)

    def _newest_state(self) -> ClusterState:
        """The newest cluster state any node has applied (what an operator watching sees)."""
        for node in self.nodes.values():
            state = node.meta
            if node.alive and state is not None and state.epoch > self.newest.epoch:
                self.newest = state
        return self.newest

    # -- clients ----------------------------------------------------------------------------

    def _clients(self) -> None:
        for process in range(3):
            if process not in self.busy and self.rng.random() < 0.3:
                self._invoke(process)

    def _invoke(self, process: int) -> None:
        rng = self.rng
        key = rng.choice(KEYS)
        partition = KEYS.index(key) % PARTITIONS
        leaders = [n for n in self.nodes.values() if n.alive and partition in n.replicas
                   and n.replicas[partition].raw.raft.role is Role.LEADER]
        if not leaders:
            return
        replica = leaders[0].replicas[partition]
        f = rng.choice(("put", "put", "cas", "read"))
        op = ClientOp(self.next_op_id, process, f, key, None, None, self._now())
        op.deadline_step = self.step_no + CLIENT_TIMEOUT_STEPS
        self.next_op_id += 1
        self.pending[op.op_id] = op
        self.ops[partition].append(op)
        self.busy.add(process)
        try:
            if f == "read":
                replica.read_waiters[op.op_id] = op
                replica.raw.read_index(op.op_id, lease=rng.random() < 0.5)
            else:
                op.value = rng.randint(1, 5)
                op.expected = rng.choice((None, 1, 2, 3)) if f == "cas" else None
                replica.waiters[op.op_id] = op
                replica.raw.propose([encode_op(op.op_id, f, key, op.value, op.expected)])
        except (NotLeaderError, ProposalDroppedError):
            replica.waiters.pop(op.op_id, None)
            replica.read_waiters.pop(op.op_id, None)
            self._complete(op, "fail")

    def _complete(self, op: ClientOp, outcome: str) -> None:
        if op.outcome != "pending":
            return
        op.outcome = outcome
        op.complete_time = self._now()
        self.pending.pop(op.op_id, None)
        self.busy.discard(op.process)

    def _expire_client_ops(self) -> None:
        for op in list(self.pending.values()):
            if op.deadline_step < self.step_no:
                for node in self.nodes.values():
                    for replica in node.replicas.values():
                        replica.waiters.pop(op.op_id, None)
                        replica.read_waiters.pop(op.op_id, None)
                self._complete(op, "info")

    # -- invariants -------------------------------------------------------------------------

    def _check_leader(self, node: SimNode, group: int) -> None:
        term = node.replicas[group].raw.raft.term
        previous = self.leader_of_term.setdefault((group, term), node.id)
        if previous != node.id:
            raise InvariantViolation(f"group {group}: two leaders in term {term}: {previous} and {node.id}")

    def _record_committed(self, node: SimNode, group: int, entry: Entry) -> None:
        seen = self.committed.setdefault(group, {}).setdefault(entry.index, entry)
        if seen != entry:
            raise InvariantViolation(f"group {group}: node {node.id} applied {entry.index}/{entry.term} but "
                                     f"{seen.index}/{seen.term} was committed there")

    def _check_step(self) -> None:
        for node in self.nodes.values():
            for group, replica in node.replicas.items():
                if replica.raw.raft.role is Role.LEADER:
                    self._check_leader(node, group)

    # -- the end ----------------------------------------------------------------------------

    def _finish(self) -> list[str]:
        """Heal, restart every node that is still a member, and wait for every move to end."""
        self.blocked.clear()
        self.drop_rate = 0.0
        for node in self.nodes.values():
            if not node.alive and not node.gone:
                self.restart_at.pop(node.id, None)
                self._start(node)
        settled = False
        for _ in range(1500):
            self._step()
            if self._settled():
                settled = True
                break
        if not settled:
            state = self._newest_state()
            return [f"the cluster did not settle: epoch {state.epoch}, moves {[m.move for m in state.moves()][:3]}"]
        problems: list[str] = []
        for partition, ops in self.ops.items():
            problems += [f"partition {partition}: {p}" for p in check_history(ops, self.committed.get(partition, {}))]
        for node in self.nodes.values():
            for group, replica in node.replicas.items():
                if group == META_GROUP:
                    continue
                expected = model_state(self.committed.get(group, {}), replica.machine.applied_index)
                if replica.machine.kv != expected:  # type: ignore[union-attr]
                    problems.append(f"node {node.id} partition {group} differs from the model")
        return problems

    def _settled(self) -> bool:
        live = [n for n in self.nodes.values() if n.alive]
        states = [n.meta for n in live]
        if any(s is None for s in states) or len({s.epoch for s in states}) != 1:  # type: ignore[union-attr]
            return False
        state = states[0]
        assert state is not None
        if state.moves() or any(m.state not in (MemberState.ACTIVE, MemberState.REMOVED) for m in state.members):
            return False
        for partition, current in enumerate(state.partitions):
            hosts = {n.id for n in live if partition in n.replicas}
            if hosts != set(current.replicas):
                return False
            for node_id in hosts:
                raft = self.nodes[node_id].replicas[partition].raw.raft
                if raft.voters != set(current.replicas) or raft.learners:
                    return False
        return True

    def digest(self) -> str:
        return self.trace.hexdigest()


def run_cluster_seed(seed: int, steps: int) -> tuple[list[str], ClusterSimulation]:
    sim = ClusterSimulation(seed, steps)
    try:
        problems = sim.run()
    except InvariantViolation as violation:
        problems = [f"invariant violated at step {sim.step_no}: {violation}"]
    return problems, sim


def run_cluster_seeds(seeds: Iterable[int], steps: int) -> list[tuple[int, list[str]]]:
    return [(seed, problems) for seed in seeds if (problems := run_cluster_seed(seed, steps)[0])]
