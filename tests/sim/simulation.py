"""Deterministic simulation of a Raft group under faults, driven by one seed.

One `Simulation` owns everything: nodes (RawNode + MemoryLogStorage as the disk + the KV state
machine), a simulated network, a nemesis and clients, all drawing from `random.Random(seed)`.
Time is a step counter: every step each live node ticks once and the network runs a few
delivery rounds, so a message takes a fraction of a tick to arrive (delays reorder them).

Crashes lose everything not persisted: the Raft node's memory, the state machine, queued
messages, and — when the crash hits between persisting a Ready and sending it — the messages
of that Ready. The disk (MemoryLogStorage) survives, as a synced LevelDB batch would.

Invariants are checked after every step (see `_check_step`); the client history is checked
against a sequential model at the end, after a liveness phase in which all faults heal.

STALE reads are served by any node at once, with the staleness bound of
`kvstore.node.reads.Freshness`: each node probes its leader with ReadIndex requests and measures
on its own clock, which runs at a rate of its own (drawn from `SimConfig.clock_rates`, real time
being the delivery round). `check_stale_reads` then holds every such read to its bound.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Self, TypeVar

from kvstore.node.reads import Freshness
from kvstore.raft import (
    NONE,
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    HardState,
    MemoryLogStorage,
    Message,
    NotLeaderError,
    ProposalDroppedError,
    RawNode,
    Role,
    Snapshot,
    SnapshotMeta,
)
from tests.sim.kv import (
    AppliedOp,
    ClientOp,
    KVStateMachine,
    check_history,
    check_stale_reads,
    encode_op,
    model_state,
)

ROUNDS_PER_STEP = 4
CLIENT_TIMEOUT_STEPS = 60
KEYS = ("a", "b", "c")
ELECTION_TICK = 10
LEASE_DRIFT_TICKS = 2  # Config's default
# The lease's drift margin, which STALE bounds assume too: a clock may run this much slower.
CLOCK_FACTOR = ELECTION_TICK / (ELECTION_TICK - LEASE_DRIFT_TICKS)
FIRST_PROBE_ID = 1 << 40  # probes' ReadIndex request ids, apart from client op ids


class InvariantViolation(AssertionError):
    pass


@dataclass(frozen=True, slots=True)
class SimConfig:
    seed: int
    steps: int = 2000
    initial_voters: int = 3
    max_nodes: int = 5
    membership_changes: bool = True
    compaction: bool = True
    lease_reads: bool = True
    stale_reads: bool = True
    # Each node's clock runs at a rate drawn from this range (local seconds per real second);
    # within the margin the bound allows for, down to 1 / CLOCK_FACTOR.
    clock_rates: tuple[float, float] = (0.82, 1.3)
    clients: int = 3
    faults: bool = True
    liveness_steps: int = 400

    @classmethod
    def for_seed(cls, seed: int, steps: int) -> Self:
        """The standard mix: odd seeds run 5-node groups, even seeds 3-node groups."""
        voters = 5 if seed % 2 else 3
        return cls(seed=seed, steps=steps, initial_voters=voters, max_nodes=voters + 2)


@dataclass(slots=True)
class SimNode:
    id: int
    storage: MemoryLogStorage
    raw: RawNode | None = None
    sm: KVStateMachine = field(default_factory=KVStateMachine)
    waiters: dict[int, ClientOp] = field(default_factory=dict)
    read_waiters: dict[int, ClientOp] = field(default_factory=dict)
    ready_reads: list[tuple[int, int]] = field(default_factory=list)
    crash_after_persist: bool = False
    next_snapshot_at: int = 0
    clock_rate: float = 1.0
    freshness: Freshness | None = None

    @property
    def alive(self) -> bool:
        return self.raw is not None


class Simulation:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.step_no = 0
        self.clock = 0  # global event counter: real-time order of client events
        self.trace = hashlib.sha256()
        self.trace_lines: list[str] | None = None
        self.nodes: dict[int, SimNode] = {}
        self.members: set[int] = set(range(1, config.initial_voters + 1))
        self.ever_members: set[int] = set(self.members)  # ids that were ever in the group
        # Network: (due round, sequence, message) in flight, plus fault settings.
        self.in_flight: list[tuple[int, int, Message]] = []
        self.round = 0
        self.msg_seq = 0
        self.blocked: set[tuple[int, int]] = set()
        self.drop_rate = 0.0
        self.dup_rate = 0.0
        # Invariant state.
        self.leader_of_term: dict[int, int] = {}
        self.committed: dict[int, Entry] = {}
        self.last_commit: dict[int, int] = {}
        self.ops: list[ClientOp] = []
        self.next_op_id = 1
        self.busy_processes: set[int] = set()
        self.pending_ops: dict[int, ClientOp] = {}
        self.known_leader = NONE
        self.restart_at: dict[int, int] = {}
        self.next_probe_id = FIRST_PROBE_ID
        self.stats = {"crashes": 0, "conf_changes": 0, "snapshots_sent": 0, "transfers": 0, "partitions": 0,
                      "stale_reads": 0}  # fmt: skip

        voters = frozenset(self.members)
        for node_id in range(1, config.max_nodes + 1):
            storage = MemoryLogStorage()
            if node_id in voters:
                # Bootstrap: every initial member starts from the same snapshot at index 1.
                storage.apply_snapshot(Snapshot(SnapshotMeta(1, 1, ConfState(voters))))
                # Term 1 is the bootstrap's: the first leader is elected in term 2 and must
                # commit its own no-op before it serves reads.
                storage.set_hard_state(HardState(term=1, commit=1))
            self.nodes[node_id] = SimNode(node_id, storage, clock_rate=self.rng.uniform(*config.clock_rates))
            if node_id in voters:
                self._start(self.nodes[node_id])
        self.committed[1] = Entry(1, 1)

    # -- tracing ----------------------------------------------------------------------------

    def _event(self, text: str) -> None:
        self.trace.update(text.encode())
        self.trace.update(b"\n")
        if self.trace_lines is not None:
            self.trace_lines.append(f"[{self.step_no}] {text}")

    def _now(self) -> int:
        self.clock += 1
        return self.clock

    # -- node lifecycle ---------------------------------------------------------------------

    def _start(self, node: SimNode) -> None:
        snapshot = node.storage.snapshot()
        node.sm = self._new_state_machine()
        node.sm.restore(snapshot.data, snapshot.meta.index)
        # Small messages make entries trickle to followers one by one, as in Figure 8.
        config = Config(node.id, election_tick=ELECTION_TICK, heartbeat_tick=1, max_inflight_msgs=32,
                        max_msg_bytes=self.rng.choice((64, 4096)), applied=snapshot.meta.index,
                        skip_bcast_commit=self.rng.random() < 0.5)
        node.raw = RawNode(config, node.storage, random.Random(self.rng.getrandbits(32)))
        # Time is in rounds: a probe each step while STALE reads come, given up after 10 steps.
        node.freshness = Freshness(CLOCK_FACTOR, probe_interval_s=ROUNDS_PER_STEP,
                                   probe_timeout_s=10 * ROUNDS_PER_STEP, active_for_s=50 * ROUNDS_PER_STEP)  # fmt: skip
        node.next_snapshot_at = snapshot.meta.index + self.rng.randint(20, 80)
        self.last_commit[node.id] = max(self.last_commit.get(node.id, 0), node.storage.hard_state.commit)
        self._event(f"start {node.id} applied={snapshot.meta.index}")

    def _local_time(self, node: SimNode) -> float:
        """The node's clock: real time (rounds) at the node's own rate."""
        return self.round * node.clock_rate

    def _new_state_machine(self) -> KVStateMachine:
        """The empty state machine a (re)started node restores its snapshot into; a subclass
        simulating another state machine returns one with the same methods."""
        return KVStateMachine()

    def _crash(self, node: SimNode) -> None:
        self._event(f"crash {node.id}")
        self.stats["crashes"] += 1
        node.raw = None
        node.freshness = None
        node.crash_after_persist = False
        for op in [*node.waiters.values(), *node.read_waiters.values()]:
            self._complete(op, "info")
        node.waiters.clear()
        node.read_waiters.clear()
        node.ready_reads.clear()
        self.in_flight = [item for item in self.in_flight if item[2].to != node.id]
        self._report_unreachable((peer, node.id) for peer in self.nodes if peer != node.id)

    def _report_unreachable(self, links: Iterable[tuple[int, int]]) -> None:
        """Tell each live `a` that `b` is unreachable, as the node's transport does when a peer
        stream breaks (true after a crash; after a partition maybe a false alarm for a while)."""
        for a, b in links:
            raw = self.nodes[a].raw
            if raw is not None:
                raw.report_unreachable(b)

    # -- the main loop ----------------------------------------------------------------------

    def run(self) -> list[str]:
        """Run the fault phase, then the liveness phase; return the problems found."""
        for _ in range(self.config.steps):
            if self.config.faults:
                self._nemesis()
            self._clients()
            self._step()
        return self._finish()

    def _step(self) -> None:
        self.step_no += 1
        for node_id in sorted(self.nodes):
            node = self.nodes[node_id]
            if node.alive and self.rng.random() > 0.02:  # an occasional missed tick: scheduling jitter
                node.raw.tick()  # type: ignore[union-attr]
            self._maybe_probe(node)
        for _ in range(ROUNDS_PER_STEP):
            self.round += 1
            for node_id in sorted(self.nodes):
                self._process_ready(self.nodes[node_id])
            self._deliver()
        for node_id, due in sorted(self.restart_at.items()):
            if due <= self.step_no and not self.nodes[node_id].alive:
                del self.restart_at[node_id]
                self._start(self.nodes[node_id])
        self._expire_client_ops()
        self._check_step()

    def _process_ready(self, node: SimNode) -> None:
        raw = node.raw
        if raw is None or not raw.has_ready():
            return
        rd = raw.ready()
        if rd.soft_state is not None:
            self._event(f"{node.id} is {rd.soft_state.role.name} term={raw.raft.term} lead={rd.soft_state.leader}")
            if rd.soft_state.role is Role.LEADER:
                self._check_new_leader(node)
        # 1. persist
        storage = node.storage
        if rd.snapshot is not None:
            storage.apply_snapshot(rd.snapshot)
        storage.append(rd.entries)
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
        if node.crash_after_persist:
            self._crash(node)  # persisted, but nothing was sent
            return
        # 2. send
        for message in rd.messages:
            self._send(message)
        # 3. apply
        if rd.snapshot is not None:
            node.sm.restore(rd.snapshot.data, rd.snapshot.meta.index)
            self._event(f"{node.id} installed snapshot {rd.snapshot.meta.index}")
        for entry in rd.committed_entries:
            self._record_committed(node, entry)
            outcome = node.sm.apply(entry)
            if isinstance(outcome, ConfChange):
                raw.apply_conf_change(outcome)
                self._event(f"{node.id} applied conf change {outcome.type.name} {outcome.node_id} at {entry.index}")
            elif isinstance(outcome, AppliedOp):
                waiter = node.waiters.pop(outcome.op_id, None)
                if waiter is not None:
                    waiter.result = outcome.result
                    self._complete(waiter, "ok")
        assert node.freshness is not None
        node.ready_reads.extend(
            (rs.index, rs.request_id) for rs in rd.read_states if not node.freshness.take_answer(rs)
        )
        self._serve_reads(node)
        raw.advance(rd)
        self._maybe_snapshot(node)

    def _record_committed(self, node: SimNode, entry: Entry) -> None:
        seen = self.committed.get(entry.index)
        if seen is None:
            self.committed[entry.index] = entry
        elif seen != entry:
            raise InvariantViolation(
                f"node {node.id} applied {entry.index}/{entry.term} but {seen.index}/{seen.term} was committed there"
            )

    def _serve_reads(self, node: SimNode) -> None:
        remaining = []
        for index, request_id in node.ready_reads:
            if node.sm.applied_index >= index:
                op = node.read_waiters.pop(request_id, None)
                if op is not None:
                    op.result = node.sm.kv.get(op.key)
                    op.served_index = node.sm.applied_index
                    self._complete(op, "ok")
            else:
                remaining.append((index, request_id))
        node.ready_reads = remaining

    def _maybe_probe(self, node: SimNode) -> None:
        if node.raw is None or node.freshness is None or not node.freshness.wants_probe(self._local_time(node)):
            return
        probe_id = self.next_probe_id
        self.next_probe_id += 1
        try:
            node.raw.read_index(probe_id, lease=True)
        except NotLeaderError:
            return  # no leader known: no probe
        node.freshness.probe_sent(probe_id, self._local_time(node))

    def _maybe_snapshot(self, node: SimNode) -> None:
        raw = node.raw
        if not self.config.compaction or raw is None:
            return
        applied = raw.raft.log.applied
        if applied < node.next_snapshot_at or applied <= node.storage.snapshot().meta.index:
            return
        node.next_snapshot_at = applied + self.rng.randint(20, 80)
        node.storage.create_snapshot(applied, raw.raft.conf_state(), node.sm.snapshot_data())
        keep = self.rng.randint(0, 10)
        node.storage.compact(max(node.storage.first_index(), applied - keep))
        self._event(f"{node.id} compacted to {applied - keep}")

    # -- network ----------------------------------------------------------------------------

    def _send(self, message: Message) -> None:
        if message.snapshot is not None:
            self.stats["snapshots_sent"] += 1
        if self.rng.random() < self.drop_rate:
            return
        copies = 2 if self.rng.random() < self.dup_rate else 1
        for _ in range(copies):
            self.msg_seq += 1
            delay = self.rng.choice((1, 1, 1, 1, 2, 2, 3, 5))
            self.in_flight.append((self.round + delay, self.msg_seq, message))

    def _deliver(self) -> None:
        due = [item for item in self.in_flight if item[0] <= self.round]
        if not due:
            return
        self.in_flight = [item for item in self.in_flight if item[0] > self.round]
        due.sort(key=lambda item: (item[0], item[1]))
        for _, _, message in due:
            target = self.nodes.get(message.to)
            if target is None or target.raw is None or (message.src, message.to) in self.blocked:
                continue
            self._event(f"{message.src}->{message.to} {message.type.name} t={message.term} i={message.index} "
                        f"n={len(message.entries)} c={message.commit} r={int(message.reject)}")
            target.raw.step(message)

    # -- nemesis ----------------------------------------------------------------------------

    def _nemesis(self) -> None:
        rng = self.rng
        if rng.random() > 1 / 25:
            return
        action = rng.choice(
            ("heal", "heal", "isolate", "isolate_leader", "split", "one_way", "bridge", "crash", "crash_leader",
             "crash_leader", "lossy", "transfer", "conf_change", "conf_change", "crash_mid_ready")
        )
        alive = [n for n in sorted(self.nodes) if self.nodes[n].alive]
        if action == "heal":
            self.blocked.clear()
            self.drop_rate = self.dup_rate = 0.0
        elif action == "isolate" and alive:
            self._partition([[rng.choice(alive)]])
        elif action == "isolate_leader" and (leader := self._leader()) is not None:
            self._partition([[leader.id]])
        elif action == "split":
            group = sorted(self.members)
            rng.shuffle(group)
            self._partition([group[: len(group) // 2]])
        elif action == "one_way" and len(alive) >= 2:
            a, b = rng.sample(alive, 2)
            self.blocked.add((a, b))
            self._report_unreachable([(a, b)])
            self.stats["partitions"] += 1
        elif action == "bridge":
            self._bridge()
        elif action == "crash_leader" and (leader := self._leader()) is not None:
            self._crash(leader)
            self.restart_at[leader.id] = self.step_no + rng.randint(5, 60)
        elif action in ("crash", "crash_mid_ready") and alive:
            victim = self.nodes[rng.choice(alive)]
            if action == "crash":
                self._crash(victim)
            else:
                victim.crash_after_persist = True
            self.restart_at[victim.id] = self.step_no + rng.randint(5, 60)
        elif action == "lossy":
            self.drop_rate = rng.choice((0.0, 0.05, 0.2))
            self.dup_rate = rng.choice((0.0, 0.05, 0.1))
        elif action == "transfer":
            self._transfer()
        elif action == "conf_change" and self.config.membership_changes:
            self._conf_change()
        self._event(f"nemesis {action}")

    def _partition(self, groups: list[list[int]]) -> None:
        """Cut every link between `groups[0]` and the rest (both directions)."""
        inside = set(groups[0])
        self.blocked = {
            (a, b) for a in self.nodes for b in self.nodes if a != b and ((a in inside) != (b in inside))
        }
        self._report_unreachable(sorted(self.blocked))
        self.stats["partitions"] += 1

    def _bridge(self) -> None:
        """Two halves that can only talk through one node in the middle."""
        group = sorted(self.members)
        if len(group) < 3:
            return
        self.rng.shuffle(group)
        bridge, rest = group[0], group[1:]
        left, right = set(rest[: len(rest) // 2]), set(rest[len(rest) // 2 :])
        self.blocked = {(a, b) for a in left for b in right} | {(b, a) for a in left for b in right}
        self._report_unreachable(sorted(self.blocked))
        self.stats["partitions"] += 1
        self._event(f"bridge via {bridge}")

    def _leader(self) -> SimNode | None:
        leaders = [n for n in self.nodes.values() if n.raw is not None and n.raw.raft.role is Role.LEADER]
        return max(leaders, key=lambda n: n.raw.raft.term) if leaders else None  # type: ignore[union-attr]

    def _transfer(self) -> None:
        leader = self._leader()
        if leader is None or leader.raw is None:
            return
        others = sorted(v for v in leader.raw.raft.voters if v != leader.id)
        if others:
            leader.raw.transfer_leader(self.rng.choice(others))
            self.stats["transfers"] += 1

    def _conf_change(self) -> None:
        leader = self._leader()
        if leader is None or leader.raw is None:
            return
        raft = leader.raw.raft
        voters, learners = set(raft.voters), set(raft.learners)
        choices: list[ConfChange] = []
        if learners:
            choices.append(ConfChange(ConfChangeType.ADD_VOTER, min(learners)))
        # Ids are never reused, as in etcd: a node that left and came back with an empty disk
        # under its old id could vote, with nothing, for a lagging node that still counts it.
        unused = min(set(self.nodes) - self.ever_members, default=max(self.nodes) + 1)
        if len(voters) + len(learners) < self.config.max_nodes:
            choices.append(ConfChange(ConfChangeType.ADD_LEARNER, unused))
        if len(voters) > 3 or (len(voters) == 3 and learners):
            choices.append(ConfChange(ConfChangeType.REMOVE, self.rng.choice(sorted(voters))))
        if not choices:
            return
        change = self.rng.choice(choices)
        if change.type is ConfChangeType.ADD_LEARNER:
            # A node joins with an empty disk; the leader catches it up by snapshot.
            node = self.nodes.setdefault(change.node_id, SimNode(change.node_id, MemoryLogStorage()))
            if node.alive:
                self._crash(node)
            self.restart_at.pop(node.id, None)
            node.storage = MemoryLogStorage()
            self.last_commit.pop(node.id, None)
            self._start(node)
        try:
            leader.raw.propose_conf_change(change)
        except (ProposalDroppedError, NotLeaderError, ValueError):
            return
        self.stats["conf_changes"] += 1
        self._event(f"propose conf change {change.type.name} {change.node_id}")
        if change.type is ConfChangeType.REMOVE:
            self.members.discard(change.node_id)
        else:
            self.members.add(change.node_id)
            self.ever_members.add(change.node_id)

    # -- clients ----------------------------------------------------------------------------

    def _clients(self) -> None:
        for process in range(self.config.clients):
            if process in self.busy_processes or self.rng.random() > 0.3:
                continue
            self._invoke(process)

    def _invoke(self, process: int) -> None:
        rng = self.rng
        alive = [n for n in sorted(self.nodes) if self.nodes[n].alive]
        if not alive:
            return
        target_id = self.known_leader if self.known_leader in alive and rng.random() < 0.8 else rng.choice(alive)
        node = self.nodes[target_id]
        assert node.raw is not None
        f = rng.choice(("put", "put", "cas", "read", "read", *(("stale",) if self.config.stale_reads else ())))
        key = rng.choice(KEYS)
        op = ClientOp(self.next_op_id, process, f, key, None, None, self._now(), invoke_round=self.round)
        op.deadline_step = self.step_no + CLIENT_TIMEOUT_STEPS
        self.pending_ops[op.op_id] = op
        self.next_op_id += 1
        self.ops.append(op)
        self.busy_processes.add(process)
        if f == "stale":
            self._serve_stale(node, op)
            return
        try:
            if f == "read":
                node.read_waiters[op.op_id] = op
                node.raw.read_index(op.op_id, lease=self.config.lease_reads and rng.random() < 0.5)
            else:
                op.value = rng.randint(1, 5)
                if f == "cas":
                    op.expected = rng.choice((None, 1, 2, 3, 4, 5))
                node.waiters[op.op_id] = op
                node.raw.propose([encode_op(op.op_id, f, key, op.value, op.expected)])
        except (NotLeaderError, ProposalDroppedError) as e:
            node.waiters.pop(op.op_id, None)
            node.read_waiters.pop(op.op_id, None)
            if isinstance(e, NotLeaderError) and e.leader_hint != NONE:
                self.known_leader = e.leader_hint
            self._complete(op, "fail")

    def _serve_stale(self, node: SimNode, op: ClientOp) -> None:
        """A STALE read: this node's state now, with its bound, or refused when it has none."""
        assert node.freshness is not None
        now = self._local_time(node)
        node.freshness.touch(now)
        bound_ms = node.freshness.bound_ms(node.sm.applied_index, now)
        if bound_ms is None:
            self._complete(op, "fail")
            return
        op.result = node.sm.kv.get(op.key)
        op.served_index = node.sm.applied_index
        op.bound_rounds = bound_ms / 1000
        self.stats["stale_reads"] += 1
        self._complete(op, "ok")

    def _complete(self, op: ClientOp, outcome: str) -> None:
        if op.outcome != "pending":
            return
        op.outcome = outcome
        op.complete_round = self.round
        op.complete_time = self._now()
        self.pending_ops.pop(op.op_id, None)
        self.busy_processes.discard(op.process)
        self._event(f"client {op.process} op {op.op_id} {op.f} {op.key} -> {outcome} {op.result!r}")

    def _expire_client_ops(self) -> None:
        if self.step_no % 10:
            return
        leader = self._leader()
        if leader is not None:
            self.known_leader = leader.id
        for op in list(self.pending_ops.values()):
            if op.deadline_step < self.step_no:
                for node in self.nodes.values():
                    node.waiters.pop(op.op_id, None)
                    node.read_waiters.pop(op.op_id, None)
                self._complete(op, "info")

    # -- invariants -------------------------------------------------------------------------

    def _check_new_leader(self, node: SimNode) -> None:
        raft = node.raw.raft  # type: ignore[union-attr]
        term = raft.term
        previous = self.leader_of_term.setdefault(term, node.id)
        if previous != node.id:
            raise InvariantViolation(f"two leaders in term {term}: {previous} and {node.id}")
        # Leader completeness: the new leader's log holds every entry committed so far.
        log = raft.log
        first = log.first_index()
        for index, entry in self.committed.items():
            if index < first - 1:
                continue
            if log.term_or_zero(index) != entry.term:
                raise InvariantViolation(
                    f"leader {node.id} of term {term} lacks committed entry {index}/{entry.term}"
                )

    def _check_step(self) -> None:
        for node in self.nodes.values():
            raw = node.raw
            if raw is None:
                continue
            raft = raw.raft
            if raft.role is Role.LEADER:
                previous = self.leader_of_term.setdefault(raft.term, node.id)
                if previous != node.id:
                    raise InvariantViolation(f"two leaders in term {raft.term}: {previous} and {node.id}")
            persisted = node.storage.hard_state.commit
            if persisted < self.last_commit.get(node.id, 0):
                raise InvariantViolation(
                    f"node {node.id} commit went back from {self.last_commit[node.id]} to {persisted}"
                )
            self.last_commit[node.id] = persisted
            # Committed entries never lost: what this node has durably committed matches the record.
            log = raft.log
            for index in range(max(log.first_index(), persisted - 5), persisted + 1):
                entry = self.committed.get(index)
                if entry is not None and log.term_or_zero(index) not in (entry.term, 0):
                    raise InvariantViolation(f"node {node.id} committed {index} with another term than {entry.term}")
        if self.step_no % 50 == 0:
            self._check_log_matching()

    def _check_log_matching(self) -> None:
        """If two logs hold an entry with the same index and term, they are equal up to it."""
        logs: dict[int, dict[int, Entry]] = {}
        for node in self.nodes.values():
            if node.raw is None:
                continue
            log = node.raw.raft.log
            first, last = log.first_index(), log.last_index()
            logs[node.id] = {e.index: e for e in log.slice(first, last + 1, 1 << 40)} if last >= first else {}
        ids = sorted(logs)
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                la, lb = logs[a], logs[b]
                common = sorted(set(la) & set(lb), reverse=True)
                matched = False
                for index in common:
                    if matched and la[index] != lb[index]:
                        raise InvariantViolation(f"log matching: nodes {a} and {b} differ at {index}")
                    if not matched and la[index].term == lb[index].term:
                        matched = True
                        if la[index] != lb[index]:
                            raise InvariantViolation(f"log matching: nodes {a},{b} same term different entry {index}")

    # -- the end ----------------------------------------------------------------------------

    def _finish(self) -> list[str]:
        """Liveness: heal everything, restart every member, and require a leader and a commit."""
        self._heal()
        problems: list[str] = []
        marker: ClientOp | None = None
        for _ in range(self.config.liveness_steps):
            self._step()
            leader = self._leader()
            if leader is None or leader.raw is None:
                continue
            if marker is None:
                marker = ClientOp(self.next_op_id, -1, "put", "liveness", 1, None, self._now())
                marker.deadline_step = self.step_no + CLIENT_TIMEOUT_STEPS
                self.pending_ops[marker.op_id] = marker
                self.next_op_id += 1
                try:
                    leader.raw.propose([encode_op(marker.op_id, "put", "liveness", 1)])
                except (NotLeaderError, ProposalDroppedError):
                    marker = None
                    continue
                leader.waiters[marker.op_id] = marker
                self.ops.append(marker)
            elif marker.outcome == "ok":
                break
            elif marker.outcome != "pending":
                marker = None
        if marker is None or marker.outcome != "ok":
            problems.append(f"liveness: no proposal committed within {self.config.liveness_steps} steps after healing")
        problems.extend(check_history(self.ops, self.committed))
        problems.extend(check_stale_reads(self.ops, self.committed))
        problems.extend(self._check_final_states())
        return problems

    def _heal(self) -> None:
        """End every fault: no partition, no loss, every crashed member restarted."""
        self.blocked.clear()
        self.drop_rate = self.dup_rate = 0.0
        for node_id in sorted(self.nodes):
            node = self.nodes[node_id]
            node.crash_after_persist = False
            if not node.alive and node_id in self.restart_at:
                self.restart_at.pop(node_id, None)
                self._start(node)

    def _check_final_states(self) -> list[str]:
        problems = []
        for node in self.nodes.values():
            if node.raw is None:
                continue
            expected = model_state(self.committed, node.sm.applied_index)
            if node.sm.kv != expected:
                problems.append(f"node {node.id} state at {node.sm.applied_index} differs from the model")
        return problems

    def digest(self) -> str:
        return self.trace.hexdigest()


def run_seed(config: SimConfig, keep_trace: bool = False) -> tuple[list[str], Simulation]:
    return run_simulation(Simulation(config), keep_trace)


SimulationT = TypeVar("SimulationT", bound=Simulation)

# Seeds run in fresh worker processes, not forks: a fork of a process that used gRPC (pytest
# after the integration tests) can spin forever freeing the gRPC objects it inherited.
WORKER_CONTEXT = multiprocessing.get_context("spawn")


def run_simulation(sim: SimulationT, keep_trace: bool = False) -> tuple[list[str], SimulationT]:
    """Run `sim` to the end; the problems found (an invariant violation ends the run)."""
    if keep_trace:
        sim.trace_lines = []
    try:
        problems = sim.run()
    except InvariantViolation as violation:
        problems = [f"invariant violated at step {sim.step_no}: {violation}"]
    return problems, sim
