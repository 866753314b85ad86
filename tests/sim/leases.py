"""Deterministic simulation of leases: the real lease table and the real lessor on a Raft group
under faults, with a clock per node (see docs/locks.md).

`LeaseSimulation` reuses `Simulation`'s nodes, network, crashes and nemesis; what it adds:

* **Time.** Real (simulated) time advances one round at a time (`ROUND_SECONDS`). Every node has
  its own monotonic clock, redrawn at each start: an arbitrary offset and a rate within
  ``1 ± DRIFT`` of real time, which is the lessor's clock assumption.
* **The state machine** applies lease commands (grant, revoke, put a key with a lease,
  checkpoint, expire) to the real `LeaseTable` over a `MemoryEngine`.
* **The lessor** runs on whichever node leads: promoted once the node applied its own term's
  first entry, fed the applied changes, polled every round; its checkpoints and expiries are
  proposed as entries and its keepalive confirmations are ReadIndex rounds.
* **Clients** grant leases through the leader, keep them alive every third of their TTL,
  attach keys, revoke, or abandon them (stop keeping them alive).

Checked as it runs:

* **safety** — no lease is expired (its expire entry applied on any replica) before ``ttl``
  has passed, in real time, since the receipt of the last keepalive acknowledged to its client
  (a grant counts as a keepalive received when it was proposed);
* **liveness under churn** (with `churn_every`, leadership moves every so many steps and
  nothing heals) — an abandoned lease is expired within `CHURN_EXPIRY_BOUND` seconds.

At the end, after every fault heals and every client stops: every lease is expired within
`liveness_steps`, and every live replica's table and keys equal the committed log replayed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from kvstore.node.lessor import Checkpoint, Expiry, Lessor, LessorConfig
from kvstore.raft import ConfChange, Entry, EntryType, NotLeaderError, ProposalDroppedError, RawNode, Role
from kvstore.statemachine import LeaseCheckpointed, LeaseEvent, LeaseGranted, LeaseRemoved
from kvstore.statemachine.leases import Lease, LeaseTable
from kvstore.statemachine.staging import StagedWrites, read_sections
from kvstore.storage import MemoryEngine
from tests.sim.kv import AppliedOp, ClientOp, KVStateMachine
from tests.sim.simulation import (
    CLIENT_TIMEOUT_STEPS,
    ROUNDS_PER_STEP,
    WORKER_CONTEXT,
    InvariantViolation,
    SimConfig,
    SimNode,
    Simulation,
    run_simulation,
)

PARTITION = 3
TICK_SECONDS = 0.1  # a Raft tick, as on a real node: elections take about 1-2 s
ROUND_SECONDS = TICK_SECONDS / ROUNDS_PER_STEP
DRIFT = 0.2  # clock rates differ from real time by up to 20 % (far more than real clocks)
LESSOR_CONFIG = LessorConfig(max_drift=DRIFT, checkpoint_interval=0.5, expire_retry=1.0)
TTLS = (1, 2, 3)
CHURN_EXPIRY_BOUND = 15.0
"""Seconds within which an abandoned lease must expire under continuous leader churn: its TTL
(at most 3 s, stretched by slow clocks) carried across reigns by checkpoints, plus the time
each reign spends electing, promoting and reaching its first checkpoint."""


@dataclass(frozen=True, slots=True)
class LeaseSimConfig(SimConfig):
    churn_every: int = 0
    """When set, the nemesis does nothing but move leadership every `churn_every` steps."""

    @classmethod
    def churn(cls, seed: int, steps: int, every: int = 15) -> LeaseSimConfig:
        return cls(seed=seed, steps=steps, membership_changes=False, churn_every=every)


# -- the state machine -----------------------------------------------------------------------


def encode(command: dict[str, object]) -> bytes:
    return json.dumps(command, sort_keys=True).encode()


class LeaseStateMachine:
    """The lease table of one partition plus which key is attached to which lease, applying
    JSON commands. It records the lease changes it applied (`changes`) for the node to feed
    its lessor, as the real applier reports its outcomes to the node."""

    def __init__(self) -> None:
        self._empty(0)

    def _empty(self, applied_index: int) -> None:
        self.engine = MemoryEngine()
        self.store = StagedWrites(self.engine)
        self.table = LeaseTable(PARTITION, self.store)
        self.keys: dict[str, int] = {}  # attached key -> lease
        self.applied_index = applied_index
        self.changes: list[LeaseEvent] = []

    def apply(self, entry: Entry) -> AppliedOp | ConfChange | None:
        self.applied_index = entry.index
        if entry.type is EntryType.CONF_CHANGE:
            return ConfChange.decode(entry.data)
        if not entry.data:
            return None
        command = json.loads(entry.data)
        batch = self.engine.new_batch()
        self.store.use(batch)
        result = self._execute(command, entry.index)
        self.engine.write(batch, sync=False)
        return AppliedOp(command.get("id", 0), entry.index, result)

    def _execute(self, command: dict[str, Any], index: int) -> object:
        kind = command["f"]
        table = self.table
        if kind == "grant":
            ttl = int(command["ttl"])
            lease = table.grant(index, ttl)
            self.changes.append(LeaseGranted(lease))
            return lease.id
        if kind == "revoke":
            return self._remove(int(command["lease"]), 0, expired=False)
        if kind == "put":
            key, lease_id = str(command["k"]), int(command["lease"])
            if lease_id not in table:
                return "LEASE_NOT_FOUND"
            old = self.keys.get(key)
            if old is not None:
                table.detach(old, key.encode())
            table.attach(lease_id, key.encode())
            self.keys[key] = lease_id
            return "ok"
        if kind == "checkpoint":
            for lease_id, revision, remaining_ms in command["checkpoints"]:
                if table.checkpoint(lease_id, revision, remaining_ms):
                    self.changes.append(LeaseCheckpointed(lease_id, remaining_ms))
            return None
        if kind == "expire":
            for lease_id, revision in command["leases"]:
                self._remove(lease_id, revision, expired=True)
            return None
        raise ValueError(f"unknown command {kind!r}")

    def _remove(self, lease_id: int, revision: int, *, expired: bool) -> str:
        keys = self.table.revoke(lease_id, revision)
        if keys is None:
            return "LEASE_NOT_FOUND"
        for key in keys:
            del self.keys[key.decode()]
        self.changes.append(LeaseRemoved(lease_id, expired))
        return "ok"

    def snapshot_data(self) -> bytes:
        with self.engine.read_view() as view:
            sections = read_sections(view, self.table.prefixes)
        hexed = [[(suffix.hex(), value.hex()) for suffix, value in pairs] for pairs in sections]
        return encode({"applied": self.applied_index, "keys": self.keys, "sections": hexed})

    def restore(self, data: bytes, index: int) -> None:
        self._empty(index)
        if not data:
            return
        state = json.loads(data)
        batch = self.engine.new_batch()
        self.store.use(batch)
        self.table.replace(
            [[(bytes.fromhex(s), bytes.fromhex(v)) for s, v in pairs] for pairs in state["sections"]]
        )
        self.engine.write(batch, sync=False)
        self.keys = dict(state["keys"])

    def state(self) -> tuple[list[Lease], dict[str, int], list[tuple[bytes, bytes]]]:
        """Everything a replica holds, to compare replicas."""
        return self.table.leases(), dict(sorted(self.keys.items())), list(self.engine.iterate(b"", None))


# -- time ----------------------------------------------------------------------------------


class NodeClock:
    """A node's monotonic clock: `offset + rate * real time`."""

    def __init__(self, sim: LeaseSimulation, rate: float, offset: float) -> None:
        self._sim = sim
        self.rate = rate
        self.offset = offset

    def now(self) -> float:
        return self.offset + self.rate * self._sim.real_time()


@dataclass(frozen=True, slots=True)
class KeepaliveTicket:
    process: int
    lease: int
    received_round: int


@dataclass(slots=True)
class LeaseClient:
    process: int
    lease: int = 0
    ttl: int = 0
    next_keepalive_round: int = 0
    node: int = 0  # the node its keepalive stream goes to (0: none yet)
    outstanding_since: int | None = None  # round of the keepalive awaiting an answer


@dataclass(slots=True)
class NodeLessor:
    lessor: Lessor[KeepaliveTicket]
    term: int = 0  # the term it was promoted in (0: not promoted)
    term_start: int = 0  # first index of the term the node leads (0: not leading)


# -- the simulation --------------------------------------------------------------------------


class LeaseSimulation(Simulation):
    config: LeaseSimConfig

    def __init__(self, config: LeaseSimConfig) -> None:
        self.lessors: dict[int, NodeLessor] = {}
        self.paused: dict[int, tuple[RawNode, int]] = {}  # node id -> its Raft node, step to resume
        self.lease_clients = [LeaseClient(process) for process in range(config.clients)]
        self.ttl_of: dict[int, int] = {}
        self.acked_round: dict[int, int] = {}  # lease -> receipt round of its last acknowledged keepalive
        self.expired_round: dict[int, int] = {}  # lease -> round its expire entry was first applied
        self.revoked: set[int] = set()
        self.abandoned_round: dict[int, int] = {}  # lease -> round its client stopped
        self.grant_rounds: dict[int, int] = {}  # grant op id -> round it was proposed
        self.lease_stats = {
            "grants": 0,
            "keepalives_acked": 0,
            "expiries": 0,
            "checkpoints": 0,
            "promotions": 0,
            "pauses": 0,
        }
        # Seconds between the earliest allowed expiry and the real one, the smallest seen.
        self.smallest_margin: float | None = None
        super().__init__(config)

    def real_time(self) -> float:
        return self.round * ROUND_SECONDS

    # -- nodes ------------------------------------------------------------------------------

    def _new_state_machine(self) -> KVStateMachine:
        return LeaseStateMachine()  # type: ignore[return-value]

    def _start(self, node: SimNode) -> None:
        super()._start(node)
        clock = NodeClock(self, self.rng.uniform(1 - DRIFT, 1 + DRIFT), self.rng.uniform(-1e6, 1e6))
        self.lessors[node.id] = NodeLessor(Lessor(clock, LESSOR_CONFIG))

    def _crash(self, node: SimNode) -> None:
        lessor = self.lessors.pop(node.id, None)
        if lessor is not None:
            self._unanswered(lessor.lessor.demote())
        super()._crash(node)

    def _check_new_leader(self, node: SimNode) -> None:
        super()._check_new_leader(node)
        raft = _raw(node).raft
        first = raft.log.last_index()
        while first > 1 and raft.log.term_or_zero(first - 1) == raft.term:
            first -= 1
        self.lessors[node.id].term_start = first

    def _sm(self, node: SimNode) -> LeaseStateMachine:
        return node.sm  # type: ignore[return-value]

    # -- the lessor, every round ------------------------------------------------------------

    def _deliver(self) -> None:
        """Deliver the round's messages, then run every live node's lessor: applied changes
        are checked and fed to it, it is promoted or demoted, and its work is done, all at the
        round's time (entries were applied earlier in the same round)."""
        super()._deliver()
        for node_id in sorted(self.nodes):
            node = self.nodes[node_id]
            if node.raw is not None:
                self._drive_lessor(node, self.lessors[node_id])

    def _drive_lessor(self, node: SimNode, held: NodeLessor) -> None:
        raft = _raw(node).raft
        lessor = held.lessor
        sm = self._sm(node)
        changes, sm.changes = sm.changes, []
        for change in changes:
            if isinstance(change, LeaseRemoved) and change.expired:
                self._expired(node, change.lease)
            elif isinstance(change, LeaseRemoved):
                self.revoked.add(change.lease)
        leading = raft.role is Role.LEADER
        if lessor.primary and (not leading or raft.term != held.term):
            self._event(f"{node.id} lessor demoted")
            self._unanswered(lessor.demote())
            held.term = 0
        if lessor.primary:
            for change in changes:
                if isinstance(change, LeaseGranted):
                    lessor.granted(change.lease)
                elif isinstance(change, LeaseRemoved):
                    self._refused(lessor.removed(change.lease))
                else:
                    lessor.checkpointed(change.lease, change.remaining_ms)
        elif (
            leading
            and held.term_start
            and raft.log.term_or_zero(held.term_start) == raft.term
            and sm.applied_index >= held.term_start
        ):
            lessor.promote(sm.table.leases())
            held.term = raft.term
            self.lease_stats["promotions"] += 1
            self._event(f"{node.id} lessor promoted in term {raft.term} with {len(sm.table)} leases")
        if not lessor.primary:
            return
        work = lessor.poll()
        for ticket, ttl in work.acknowledged:
            self._acknowledged(ticket, ttl)
        self._refused(list(work.refused))
        if work.checkpoints:
            checkpoints = [[c.lease, c.revision, c.remaining_ms] for c in work.checkpoints]
            if not self._propose_internal(node, {"f": "checkpoint", "checkpoints": checkpoints}):
                lessor.checkpoints_dropped(work.checkpoints)
            self.lease_stats["checkpoints"] += len(work.checkpoints)
            self._event(f"{node.id} proposes checkpoints {_describe(work.checkpoints)}")
        if work.expiries:
            self._propose_internal(
                node, {"f": "expire", "leases": [[e.lease, e.revision] for e in work.expiries]}
            )
            self._event(f"{node.id} proposes expiry of {_describe(work.expiries)}")
        if work.confirm is not None:
            try:
                _raw(node).read_index(-work.confirm)
            except (NotLeaderError, ProposalDroppedError):
                lessor.confirmation_failed(work.confirm)

    def _propose_internal(self, node: SimNode, command: dict[str, object]) -> bool:
        try:
            _raw(node).propose([encode(command)])
        except (NotLeaderError, ProposalDroppedError):
            return False
        return True

    def _serve_reads(self, node: SimNode) -> None:
        """Read states answer the lessor's confirmation rounds (negative request ids); the
        lease simulation has no reads of its own."""
        held = self.lessors[node.id]
        for _, request_id in node.ready_reads:
            if held.lessor.primary:
                held.lessor.confirmed(-request_id)
        node.ready_reads = []

    # -- the checks -------------------------------------------------------------------------

    def _expired(self, node: SimNode, lease: int) -> None:
        if lease in self.expired_round:
            return
        self.expired_round[lease] = self.round
        self.lease_stats["expiries"] += 1
        self._event(f"{node.id} applied expiry of lease {lease}")
        received = self.acked_round.get(lease)
        if received is not None:
            self._check_margin(lease, received, self.round)

    def _check_margin(self, lease: int, received_round: int, expired_round: int) -> None:
        margin = (expired_round - received_round) * ROUND_SECONDS - self.ttl_of[lease]
        if self.smallest_margin is None or margin < self.smallest_margin:
            self.smallest_margin = margin
        if margin < -1e-9:
            raise InvariantViolation(
                f"lease {lease} (ttl {self.ttl_of[lease]} s) expired at {expired_round * ROUND_SECONDS:.3f} s, "
                f"{-margin:.3f} s early: a keepalive received at {received_round * ROUND_SECONDS:.3f} s "
                "was acknowledged"
            )

    def _acknowledged(self, ticket: KeepaliveTicket, ttl: int) -> None:
        lease = ticket.lease
        self.lease_stats["keepalives_acked"] += 1
        self.acked_round[lease] = max(self.acked_round.get(lease, 0), ticket.received_round)
        if lease in self.expired_round:
            self._check_margin(lease, ticket.received_round, self.expired_round[lease])
        self._event(
            f"client {ticket.process} keepalive of {lease} received at round {ticket.received_round} acked"
        )
        client = self.lease_clients[ticket.process]
        if client.lease == lease:
            client.outstanding_since = None
            client.next_keepalive_round = ticket.received_round + round(ttl / 3 / ROUND_SECONDS)
            # The hardest case for safety: the keepalive just acknowledged is the client's last.
            if self.rng.random() < 0.2:
                self._abandon(client)

    def _refused(self, tickets: list[KeepaliveTicket]) -> None:
        for ticket in tickets:
            client = self.lease_clients[ticket.process]
            if client.lease == ticket.lease:
                self._event(f"client {ticket.process} lost lease {ticket.lease}")
                client.lease = 0
                client.outstanding_since = None

    def _unanswered(self, tickets: list[KeepaliveTicket]) -> None:
        for ticket in tickets:
            client = self.lease_clients[ticket.process]
            if client.lease == ticket.lease:
                client.outstanding_since = None

    def _check_step(self) -> None:
        super()._check_step()
        if not self.config.churn_every:
            return
        bound = round(CHURN_EXPIRY_BOUND / ROUND_SECONDS)
        for lease, since in sorted(self.abandoned_round.items()):
            if lease not in self.expired_round and lease not in self.revoked and self.round - since > bound:
                raise InvariantViolation(
                    f"lease {lease} (ttl {self.ttl_of[lease]} s) abandoned at {since * ROUND_SECONDS:.1f} s "
                    f"is not expired {CHURN_EXPIRY_BOUND} s later under leader churn"
                )

    # -- the nemesis ------------------------------------------------------------------------

    def _nemesis(self) -> None:
        if self.config.churn_every:
            if self.step_no % self.config.churn_every == 0:
                self._transfer()
                self._event("nemesis transfer")
            return
        super()._nemesis()
        for node_id, (_, until) in sorted(self.paused.items()):
            if until <= self.step_no:
                self.resume(node_id)
        leader = self._leader()
        if leader is not None and self.rng.random() < 1 / 150:
            self.pause(leader, self.step_no + self.rng.randint(10, 40))

    def pause(self, node: SimNode, until: int) -> None:
        """Stop `node` as a long GC pause or SIGSTOP would: it neither ticks, nor processes,
        nor receives (messages sent to it are lost) until `until`; its memory, its clock (which
        keeps running) and its idea that it leads stay. A paused leader wakes up deposed without
        knowing it, which is what a keepalive's leadership confirmation is for."""
        self._event(f"pause {node.id} until step {until}")
        self.lease_stats["pauses"] += 1
        assert node.raw is not None
        self.paused[node.id] = (node.raw, until)
        node.raw = None

    def resume(self, node_id: int) -> None:
        raw, _ = self.paused.pop(node_id)
        self.nodes[node_id].raw = raw
        self._event(f"resume {node_id}")

    # -- clients ----------------------------------------------------------------------------

    def _clients(self) -> None:
        for client in self.lease_clients:
            if client.process not in self.busy_processes:
                self._act(client)

    def _act(self, client: LeaseClient) -> None:
        rng = self.rng
        if not client.lease:
            if rng.random() < 0.3:
                self._invoke_command(client.process, "grant", {"ttl": rng.choice(TTLS)})
            return
        draw = rng.random()
        if draw < 0.004:
            self._abandon(client)
        elif draw < 0.008:
            self._invoke_command(client.process, "revoke", {"lease": client.lease})
        elif draw < 0.03:
            self._invoke_command(client.process, "put", {"lease": client.lease, "k": rng.choice("abcdef")})
        elif client.outstanding_since is not None:
            if self.round - client.outstanding_since > round(client.ttl / 2 / ROUND_SECONDS):
                client.outstanding_since = None  # no answer: send another, on a new stream
                client.node = 0
        elif self.round >= client.next_keepalive_round:
            self._keep_alive(client)

    def _abandon(self, client: LeaseClient) -> None:
        self._event(f"client {client.process} abandons lease {client.lease}")
        self.abandoned_round[client.lease] = self.round
        client.lease = 0
        client.outstanding_since = None

    def _target(self) -> SimNode | None:
        alive = [n for n in sorted(self.nodes) if self.nodes[n].alive]
        if not alive:
            return None
        chosen = (
            self.known_leader
            if self.known_leader in alive and self.rng.random() < 0.8
            else self.rng.choice(alive)
        )
        return self.nodes[chosen]

    def _keep_alive(self, client: LeaseClient) -> None:
        """Send a keepalive on the client's stream: to the node that answered the last one
        (lost if that node is paused), else to the node the client believes leads."""
        if client.node in self.paused:
            client.outstanding_since = self.round
            return
        node = self.nodes[client.node] if client.node and self.nodes[client.node].alive else self._target()
        if node is None:
            return
        lessor = self.lessors[node.id].lessor
        if not lessor.primary:
            client.node = 0
            client.next_keepalive_round = self.round + ROUNDS_PER_STEP  # try another node soon
            return
        client.node = node.id
        if lessor.keep_alive(client.lease, KeepaliveTicket(client.process, client.lease, self.round)):
            client.outstanding_since = self.round
        else:
            self._refused([KeepaliveTicket(client.process, client.lease, self.round)])

    def _invoke_command(self, process: int, f: str, fields: dict[str, Any]) -> None:
        node = self._target()
        if node is None:
            return
        op = ClientOp(self.next_op_id, process, f, str(fields.get("lease", "")), None, None, self._now())
        op.deadline_step = self.step_no + CLIENT_TIMEOUT_STEPS
        self.next_op_id += 1
        self.ops.append(op)
        self.pending_ops[op.op_id] = op
        self.busy_processes.add(process)
        if f == "grant":
            self.grant_rounds[op.op_id] = self.round
            op.value = int(fields["ttl"])
        try:
            _raw(node).propose([encode({"id": op.op_id, "f": f, **fields})])
        except (NotLeaderError, ProposalDroppedError):
            self._complete(op, "fail")
            return
        node.waiters[op.op_id] = op

    def _complete(self, op: ClientOp, outcome: str) -> None:
        if op.outcome != "pending":
            return
        super()._complete(op, outcome)
        if op.process < 0 or outcome != "ok":
            return
        client = self.lease_clients[op.process]
        if op.f == "grant":
            assert isinstance(op.result, int)
            lease = op.result
            ttl = int(op.value or 0)
            self.ttl_of[lease] = ttl
            self.lease_stats["grants"] += 1
            received = self.grant_rounds[op.op_id]
            self.acked_round[lease] = received
            if lease in self.expired_round:
                self._check_margin(lease, received, self.expired_round[lease])
            client.lease, client.ttl, client.outstanding_since = lease, ttl, None
            client.next_keepalive_round = received + round(ttl / 3 / ROUND_SECONDS)
        elif op.f == "revoke" or op.result == "LEASE_NOT_FOUND":
            client.lease = 0
            client.outstanding_since = None

    # -- scripting, for directed scenarios --------------------------------------------------

    def step_until(self, condition: Callable[[], bool], what: str, limit: int = 400) -> None:
        """Run steps (without the nemesis or the random clients) until `condition` holds."""
        for _ in range(limit):
            if condition():
                return
            self._step()
        raise AssertionError(f"not within {limit} steps: {what}")

    def advance(self, steps: int) -> None:
        for _ in range(steps):
            self._step()

    def crash(self, node: SimNode) -> None:
        """Crash `node` for good (it is not restarted)."""
        self._crash(node)

    def lease(self, node: SimNode, lease: int) -> Lease:
        """Lease `lease` as `node` has applied it."""
        found = self._sm(node).table.get(lease)
        assert found is not None, f"node {node.id} has no lease {lease}"
        return found

    def promoted_leader(self) -> SimNode | None:
        """The leader whose lessor is promoted, if any."""
        leader = self._leader()
        return leader if leader is not None and self.lessors[leader.id].lessor.primary else None

    def grant_through(self, node: SimNode, process: int, ttl: int) -> int:
        """Client `process` grants a lease of `ttl` seconds through `node`; its id."""
        client = self.lease_clients[process]
        self.known_leader = node.id
        self.step_until(lambda: process not in self.busy_processes, "the client is idle")
        while not client.lease:
            self._invoke_command(process, "grant", {"ttl": ttl})
            self.step_until(lambda: process not in self.busy_processes, "the grant is answered")
        return client.lease

    def keep_alive_through(self, node: SimNode, process: int, lease: int) -> bool:
        """Client `process` sends one keepalive of `lease` to `node`; whether it was taken."""
        return self.lessors[node.id].lessor.keep_alive(lease, KeepaliveTicket(process, lease, self.round))

    # -- the end ----------------------------------------------------------------------------

    def _finish(self) -> list[str]:
        """Heal everything, stop every client, and require every lease expired in time and
        every live replica equal to the committed log replayed."""
        for node_id in sorted(self.paused):
            self.resume(node_id)
        self._heal()
        for client in self.lease_clients:
            if client.lease:
                self._abandon(client)
        healed = self.round
        for _ in range(self.config.liveness_steps):
            self._step()
            if not self.pending_ops and self._all_expired():
                break
        problems: list[str] = []
        if not self._all_expired() or self.pending_ops:
            leader = self._leader()
            left = [] if leader is None else [lease.id for lease in self._sm(leader).table.leases()]
            problems.append(
                f"liveness: leases {left} still exist {(self.round - healed) * ROUND_SECONDS:.1f} s after "
                f"the faults healed and every client stopped"
            )
        problems.extend(self._check_replicas())
        return problems

    def _all_expired(self) -> bool:
        """Whether the leader applied everything committed and holds no lease."""
        leader = self._leader()
        if leader is None:
            return False
        sm = self._sm(leader)
        return sm.applied_index >= _raw(leader).raft.log.committed and len(sm.table) == 0

    def _check_replicas(self) -> list[str]:
        """Every live replica holds what the committed log replayed holds at its applied index."""
        live = {node.id: self._sm(node) for node in self.nodes.values() if node.raw is not None}
        wanted = {sm.applied_index for sm in live.values()}
        indexes = sorted(self.committed)
        if indexes != list(range(1, len(indexes) + 1)):
            return ["the committed log has gaps: no replica applied some index"]
        model = LeaseStateMachine()
        expected = {}
        for index in indexes:
            if index > 1:  # 1 is the bootstrap snapshot's
                model.apply(self.committed[index])
            if index in wanted:
                expected[index] = model.state()
        return [
            f"node {node_id}: lease table at {sm.applied_index} differs from the log replayed"
            for node_id, sm in sorted(live.items())
            if sm.applied_index in expected and sm.state() != expected[sm.applied_index]
        ]


def _raw(node: SimNode) -> RawNode:
    assert node.raw is not None, f"node {node.id} is down"
    return node.raw


def _describe(items: tuple[Checkpoint, ...] | tuple[Expiry, ...]) -> str:
    return " ".join(
        f"{item.lease}:{item.remaining_ms}ms" if isinstance(item, Checkpoint) else str(item.lease)
        for item in items
    )


def run_lease_seed(config: LeaseSimConfig, keep_trace: bool = False) -> tuple[list[str], LeaseSimulation]:
    return run_simulation(LeaseSimulation(config), keep_trace)


def _run(config: LeaseSimConfig) -> tuple[int, list[str], dict[str, int]]:
    problems, sim = run_lease_seed(config)
    return config.seed, problems, {**sim.stats, **sim.lease_stats}


def run_many(configs: list[LeaseSimConfig], jobs: int) -> tuple[Counter[str], list[str]]:
    """Run every config on `jobs` processes; (totals of what happened, one line per failing
    seed with the command that replays it)."""
    totals: Counter[str] = Counter()
    failures = []
    with ProcessPoolExecutor(max_workers=jobs, mp_context=WORKER_CONTEXT) as pool:
        for config, (seed, problems, stats) in zip(configs, pool.map(_run, configs), strict=True):
            totals.update(stats)
            if problems:
                replay = replay_command(seed, config.steps, config.churn_every)
                failures.append(f"seed {seed}: {problems[0]}\n  replay: {replay}")
    return totals, failures


def replay_command(seed: int, steps: int, churn_every: int) -> str:
    churn = f" --churn-every {churn_every}" if churn_every else ""
    return f"python -m tests.sim.leases --seed {seed} --steps {steps}{churn} --trace"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.sim.leases",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seeds", type=int, default=20, help="how many seeds to run")
    parser.add_argument("--first", type=int, default=0, help="first seed")
    parser.add_argument("--steps", type=int, default=1500, help="simulated ticks per seed before healing")
    parser.add_argument("--churn-every", type=int, default=0, help="only move leadership, every N steps")
    parser.add_argument("--seed", type=int, help="run this one seed only")
    parser.add_argument("--trace", action="store_true", help="with --seed: print every event")
    args = parser.parse_args()
    seeds = [args.seed] if args.seed is not None else list(range(args.first, args.first + args.seeds))
    failures = 0
    for seed in seeds:
        config = (
            LeaseSimConfig.churn(seed, args.steps, args.churn_every)
            if args.churn_every
            else LeaseSimConfig.for_seed(seed, args.steps)
        )
        problems, sim = run_lease_seed(config, keep_trace=args.trace and args.seed is not None)
        for line in sim.trace_lines or []:
            print(line)
        if problems:
            failures += 1
            print(
                f"FAIL seed {seed}: {problems[0]}\n  replay: {replay_command(seed, args.steps, args.churn_every)}"
            )
        elif args.seed is not None:
            print(
                f"trace digest {sim.digest()}  stats {sim.stats} {sim.lease_stats}  "
                f"smallest margin {sim.smallest_margin}"
            )
    print(f"{len(seeds)} seeds, {failures} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
