"""An interaction environment for the Raft core: nodes, explicit message queues, a tiny state machine.

Nothing happens on its own. Each node has a `MemoryLogStorage` (its "disk"), an inbox that only
`deliver` empties, and a state machine that records the entries it applies. A test (or a
scenario file, through `handle`) decides when each node ticks, handles a Ready or receives its
messages, so every interleaving is reproducible. Everything the environment does is written to an
output buffer in a stable, human-readable form; the scenario files compare against it.

Persistence model: whatever a handled Ready wrote into the storage survives `restart`; the rest of
the node (the Raft state in memory, its state machine, its inbox) is lost and rebuilt from the
storage, as after a crash.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random
from collections.abc import Callable, Iterable
from typing import Any

from kvstore.raft import (
    NONE,
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryType,
    MemoryLogStorage,
    Message,
    MessageType,
    NotLeaderError,
    ProposalDroppedError,
    RawNode,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)
from tests.unit.raft_scenarios.format import Command

MAX_STABILIZE_ROUNDS = 10_000
"""A stabilize that has not gone quiet after this many rounds is a livelock in the core."""


# -- describing records -----------------------------------------------------------------------


def describe_ids(ids: Iterable[int]) -> str:
    return "(" + ",".join(str(i) for i in sorted(ids)) + ")"


def describe_conf_state(conf_state: ConfState) -> str:
    return f"voters={describe_ids(conf_state.voters)} learners={describe_ids(conf_state.learners)}"


def describe_conf_change(change: ConfChange) -> str:
    keyword = {
        ConfChangeType.ADD_VOTER: "add",
        ConfChangeType.ADD_LEARNER: "add-learner",
        ConfChangeType.REMOVE: "remove",
    }[change.type]
    return f"{keyword}={change.node_id}"


def describe_entry(entry: Entry) -> str:
    """`term/index kind payload`, e.g. `2/5 EntryNormal "foo"`."""
    if entry.type is EntryType.CONF_CHANGE:
        return f"{entry.term}/{entry.index} EntryConfChange {describe_conf_change(ConfChange.decode(entry.data))}"
    return f'{entry.term}/{entry.index} EntryNormal "{entry.data.decode()}"'


def describe_snapshot_meta(meta: SnapshotMeta) -> str:
    return f"index={meta.index} term={meta.term} {describe_conf_state(meta.conf_state)}"


def describe_message(m: Message) -> str:
    """One line per message; only the fields that mean something for its type."""
    head = f"{m.src}->{m.to} {m.type.name} term={m.term}"
    t = m.type
    if t is MessageType.APPEND:
        entries = ", ".join(describe_entry(e) for e in m.entries)
        return f"{head} log={m.log_term}/{m.index} commit={m.commit} entries=[{entries}]"
    if t is MessageType.APPEND_RESP:
        if m.reject:
            return f"{head} index={m.index} rejected hint={m.log_term}/{m.reject_hint} applied={m.applied}"
        return f"{head} index={m.index} applied={m.applied}"
    if t in (MessageType.VOTE, MessageType.PRE_VOTE):
        return f"{head} log={m.log_term}/{m.index}" + (" transfer" if m.transfer else "")
    if t in (MessageType.VOTE_RESP, MessageType.PRE_VOTE_RESP):
        return f"{head} " + ("rejected" if m.reject else "granted")
    if t is MessageType.HEARTBEAT:
        return f"{head} commit={m.commit} round={m.context}"
    if t is MessageType.HEARTBEAT_RESP:
        return f"{head} round={m.context} applied={m.applied}"
    if t is MessageType.SNAPSHOT:
        assert m.snapshot is not None
        return f"{head} snapshot=[{describe_snapshot_meta(m.snapshot.meta)}]"
    if t is MessageType.READ_INDEX:
        return f"{head} ctx={m.context}"
    if t is MessageType.READ_INDEX_RESP:
        return f"{head} index={m.index} ctx={m.context}"
    return head


# -- the replicated state machine -------------------------------------------------------------


class AppliedLog:
    """The state machine: the payloads of applied normal entries, and the configuration history
    (needed to stamp a snapshot taken at an index with the configuration as of that index)."""

    __slots__ = ("entries", "conf_history")

    def __init__(self, snapshot: Snapshot) -> None:
        payloads: list[str] = json.loads(snapshot.data or b"[]")
        self.entries: list[tuple[int, str]] = [(snapshot.meta.index, p) for p in payloads]
        self.conf_history: list[tuple[int, ConfState]] = [(snapshot.meta.index, snapshot.meta.conf_state)]

    def conf_state_at(self, index: int) -> ConfState:
        return [conf for at, conf in self.conf_history if at <= index][-1]

    def snapshot_data(self, index: int) -> bytes:
        return json.dumps([payload for at, payload in self.entries if at <= index]).encode()

    @property
    def payloads(self) -> list[str]:
        return [payload for _, payload in self.entries]


class ScenarioNode:
    """One Raft peer: its durable storage, the core driving it, and what it has applied."""

    __slots__ = ("id", "config", "storage", "raw", "applied", "read_states")

    def __init__(self, config: Config, storage: MemoryLogStorage, rng_seed: int) -> None:
        self.id = config.id
        self.config = config
        self.storage = storage
        self.raw = RawNode(config, storage, random.Random(rng_seed))
        self.applied = AppliedLog(storage.snapshot())
        # Every read point this node was handed in a Ready, in order.
        self.read_states: list[ReadState] = []

    @property
    def role(self) -> Role:
        return self.raw.raft.role

    @property
    def term(self) -> int:
        return self.raw.raft.term


def parse_ids(text: str) -> list[int]:
    return [int(part) for part in text.strip("()").split(",") if part]


_CONFIG_FIELDS = {f.name for f in dataclasses.fields(Config)} - {"id"}


def _parse_config_value(text: str) -> int | bool:
    if text in ("true", "false"):
        return text == "true"
    return int(text)


# -- the environment --------------------------------------------------------------------------


class InteractionEnv:
    """Nodes, inboxes and a partition table, driven one explicit step at a time."""

    def __init__(self, seed: int = 0, trace: bool = True) -> None:
        """Node n draws its election timeouts from `random.Random(seed * 1000 + n)`; `trace=False`
        skips building the output text (for tests that run many steps and only assert state)."""
        self.seed = seed
        self.trace = trace
        self.nodes: dict[int, ScenarioNode] = {}
        self.inboxes: dict[int, list[Message]] = {}
        self.isolated: set[int] = set()
        # Every message stepped into a node, in delivery order.
        self.delivered: list[Message] = []
        self._output: list[str] = []
        self._indent = ""

    # -- output ---------------------------------------------------------------------------

    def write(self, line: str) -> None:
        if self.trace:
            self._output.append(self._indent + line)

    def take_output(self) -> str:
        text = "\n".join(self._output) if self._output else "ok"
        self._output = []
        return text

    def _section(self, header: str) -> None:
        self._indent = ""
        self.write(header)
        self._indent = "  "

    def _end_section(self) -> None:
        self._indent = ""

    # -- setup ----------------------------------------------------------------------------

    def add_nodes(
        self,
        count: int,
        voters: Iterable[int] | None = None,
        learners: Iterable[int] = (),
        **config_fields: Any,
    ) -> list[int]:
        """Add `count` nodes with the next free ids. With `voters` (or for the very first nodes,
        which form the group) they are bootstrapped with a snapshot at 1/1 holding that
        configuration; otherwise they start empty, as a node that is about to be added."""
        unknown = set(config_fields) - _CONFIG_FIELDS
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)}")
        first = max(self.nodes, default=0) + 1
        new_ids = list(range(first, first + count))
        if voters is None and not self.nodes:
            voters = new_ids
        for node_id in new_ids:
            storage = MemoryLogStorage()
            if voters is not None:
                conf_state = ConfState(frozenset(voters), frozenset(learners))
                storage.apply_snapshot(Snapshot(SnapshotMeta(1, 1, conf_state), b"[]"))
            config = dataclasses.replace(Config(node_id), **config_fields)
            self.nodes[node_id] = ScenarioNode(config, storage, self._rng_seed(node_id))
            self.inboxes[node_id] = []
            snapshot = storage.snapshot()
            if snapshot.is_empty:
                self.write(f"{node_id}: empty log")
            else:
                self.write(f"{node_id}: snapshot {describe_snapshot_meta(snapshot.meta)}")
        return new_ids

    def _rng_seed(self, node_id: int) -> int:
        return self.seed * 1000 + node_id

    def restart(self, node_id: int) -> None:
        """Crash and restart: keep only the storage; state in memory and the inbox are lost."""
        old = self.nodes[node_id]
        node = ScenarioNode(old.config, old.storage, self._rng_seed(node_id))
        self.nodes[node_id] = node
        self.inboxes[node_id] = []
        hard_state = old.storage.hard_state
        self.write(
            f"{node_id} restarted: term={hard_state.term} vote={hard_state.vote} commit={hard_state.commit} "
            f"last={old.storage.last_index()} snapshot={old.storage.snapshot().meta.index}"
        )

    # -- inputs, with role/term changes reported --------------------------------------------

    def _observe(self, node_id: int, action: Callable[[], object]) -> object:
        node = self.nodes[node_id]
        before = (node.role, node.term)
        result = action()
        node = self.nodes[node_id]
        if (node.role, node.term) != before:
            self.write(f"{node_id} became {node.role.name} at term {node.term}")
        return result

    def tick(self, node_id: int, count: int = 1) -> None:
        raw = self.nodes[node_id].raw
        for _ in range(count):
            self._observe(node_id, raw.tick)

    def ticks_to_election_timeout(self, node_id: int) -> int:
        """Ticks until this node's election timer fires (a follower campaigns, a leader runs its
        CheckQuorum check)."""
        raft = self.nodes[node_id].raw.raft
        timeout = raft.election_timeout if raft.role is Role.LEADER else raft.randomized_election_timeout
        return max(timeout - raft.election_elapsed, 1)

    def tick_election(self, node_id: int) -> None:
        self.tick(node_id, self.ticks_to_election_timeout(node_id))

    def tick_heartbeat(self, node_id: int) -> None:
        self.tick(node_id, self.nodes[node_id].config.heartbeat_tick)

    def campaign(self, node_id: int) -> None:
        self._observe(node_id, self.nodes[node_id].raw.campaign)

    def propose(self, node_id: int, payload: str) -> int | None:
        """Propose one entry; a refusal is reported, and None returned."""
        raw = self.nodes[node_id].raw
        try:
            index = self._observe(node_id, lambda: raw.propose([payload.encode()]))
        except NotLeaderError as err:
            self.write(f"NotLeaderError leader_hint={err.leader_hint}")
            return None
        except ProposalDroppedError as err:
            self.write(f"ProposalDroppedError: {err}")
            return None
        assert isinstance(index, int)
        self.write(f"index={index}")
        return index

    def propose_conf_change(self, node_id: int, change: ConfChange) -> int | None:
        raw = self.nodes[node_id].raw
        try:
            index = self._observe(node_id, lambda: raw.propose_conf_change(change))
        except NotLeaderError as err:
            self.write(f"NotLeaderError leader_hint={err.leader_hint}")
            return None
        except (ProposalDroppedError, ValueError) as err:
            self.write(f"{type(err).__name__}: {err}")
            return None
        assert isinstance(index, int)
        self.write(f"index={index}")
        return index

    def transfer_leader(self, from_id: int, to_id: int) -> None:
        self._observe(from_id, lambda: self.nodes[from_id].raw.transfer_leader(to_id))

    def read_index(self, node_id: int, request_id: int, lease: bool = False) -> None:
        try:
            self.nodes[node_id].raw.read_index(request_id, lease)
        except NotLeaderError as err:
            self.write(f"NotLeaderError leader_hint={err.leader_hint}")

    # -- Ready handling ---------------------------------------------------------------------

    def process_ready(self, node_id: int) -> bool:
        """Handle one Ready in the documented order: persist, send, apply, advance."""
        node = self.nodes[node_id]
        raw = node.raw
        if not raw.has_ready():
            return False
        self._section(f"> {node_id} handling Ready")
        rd = raw.ready()
        self._persist(node, rd)
        for message in rd.messages:
            self.write("send " + describe_message(message))
            if message.to in self.inboxes:
                self.inboxes[message.to].append(message)
        self._apply(node, rd)
        for read_state in rd.read_states:
            self.write(f"read index={read_state.index} ctx={read_state.request_id}" + (" lease" if read_state.lease else ""))
            node.read_states.append(read_state)
        raw.advance(rd)
        self._end_section()
        return True

    def _persist(self, node: ScenarioNode, rd: Ready) -> None:
        if rd.soft_state is not None:
            leader = rd.soft_state.leader
            self.write(f"state {rd.soft_state.role.name} leader={leader if leader != NONE else 'none'}")
        if rd.snapshot is not None:
            self.write(f"persist snapshot {describe_snapshot_meta(rd.snapshot.meta)}")
            node.storage.apply_snapshot(rd.snapshot)
        if rd.hard_state is not None:
            hs = rd.hard_state
            self.write(f"persist hard_state term={hs.term} vote={hs.vote} commit={hs.commit}")
            node.storage.set_hard_state(hs)
        if rd.entries:
            node.storage.append(rd.entries)
            for entry in rd.entries:
                self.write("persist " + describe_entry(entry))

    def _apply(self, node: ScenarioNode, rd: Ready) -> None:
        if rd.snapshot is not None:
            node.applied = AppliedLog(rd.snapshot)
            self.write(f"apply snapshot index={rd.snapshot.meta.index} entries={node.applied.payloads}")
        for entry in rd.committed_entries:
            self.write("apply " + describe_entry(entry))
            if entry.type is EntryType.CONF_CHANGE:
                change = ConfChange.decode(entry.data)
                conf_state = self._observe(node.id, functools.partial(node.raw.apply_conf_change, change))
                assert isinstance(conf_state, ConfState)
                node.applied.conf_history.append((entry.index, conf_state))
                self.write(f"conf {describe_conf_state(conf_state)}")
            elif entry.data:
                node.applied.entries.append((entry.index, entry.data.decode()))

    # -- the network ------------------------------------------------------------------------

    def is_cut(self, message: Message) -> bool:
        return message.src != message.to and (message.src in self.isolated or message.to in self.isolated)

    def deliver(
        self,
        node_ids: Iterable[int] | None = None,
        drop_to: Iterable[int] = (),
        message_type: MessageType | None = None,
    ) -> bool:
        """Deliver the queued messages of `node_ids` (all nodes by default); those addressed to
        `drop_to`, and those crossing an isolation, are lost. With `message_type`, only
        messages of that type move. Returns whether any message moved."""
        drop = set(drop_to)
        targets = sorted(self.nodes if node_ids is None else set(node_ids) | drop)
        moved = False
        for node_id in targets:
            inbox = self.inboxes[node_id]
            chosen = [m for m in inbox if message_type is None or m.type is message_type]
            if not chosen:
                continue
            self.inboxes[node_id] = [m for m in inbox if not (message_type is None or m.type is message_type)]
            moved = True
            self._section(f"> {node_id} receiving messages")
            for message in chosen:
                if node_id in drop or self.is_cut(message):
                    self.write(describe_message(message) + " (dropped)")
                    continue
                self.write(describe_message(message))
                self.delivered.append(message)
                self._observe(node_id, functools.partial(self.nodes[node_id].raw.step, message))
            self._end_section()
        return moved

    def stabilize(self, node_ids: Iterable[int] | None = None) -> None:
        """Handle Readies and deliver messages among `node_ids` (default: all) until quiet."""
        ids = sorted(self.nodes if node_ids is None else node_ids)
        for _ in range(MAX_STABILIZE_ROUNDS):
            handled = [node_id for node_id in ids if self.process_ready(node_id)]
            delivered = self.deliver(ids)
            if not handled and not delivered:
                return
        raise AssertionError(f"no quiescence after {MAX_STABILIZE_ROUNDS} rounds")

    # -- log compaction ---------------------------------------------------------------------

    def compact(self, node_id: int, index: int) -> None:
        """Snapshot the state machine at applied `index` and drop the log up to it."""
        node = self.nodes[node_id]
        if index > node.raw.raft.log.applied:
            raise ValueError(f"node {node_id} has applied only {node.raw.raft.log.applied}, cannot compact {index}")
        snapshot = node.storage.create_snapshot(
            index, node.applied.conf_state_at(index), node.applied.snapshot_data(index)
        )
        node.storage.compact(index)
        self.write(f"{node_id} snapshot {describe_snapshot_meta(snapshot.meta)}; log starts at {index + 1}")

    # -- observation ------------------------------------------------------------------------

    def leader_ids(self) -> list[int]:
        return [node_id for node_id, node in self.nodes.items() if node.role is Role.LEADER]

    def describe_raft_state(self) -> None:
        for node_id in sorted(self.nodes):
            raft = self.nodes[node_id].raw.raft
            kind = "voter" if node_id in raft.voters else "learner" if node_id in raft.learners else "non-member"
            lead = raft.lead if raft.lead != NONE else "none"
            cut = " isolated" if node_id in self.isolated else ""
            self.write(f"{node_id}: {raft.role.name} {kind} term={raft.term} lead={lead}{cut}")

    def describe_log(self, node_id: int) -> None:
        storage = self.nodes[node_id].storage
        self.write(f"snapshot {describe_snapshot_meta(storage.snapshot().meta)}")
        first, last = storage.first_index(), storage.last_index()
        if last < first:
            self.write("no entries")
            return
        for entry in storage.entries(first, last + 1, 1 << 62):
            self.write(describe_entry(entry))

    def describe_status(self, node_id: int) -> None:
        raft = self.nodes[node_id].raw.raft
        status = self.nodes[node_id].raw.status()
        lead = status.leader if status.leader != NONE else "none"
        self.write(
            f"{node_id}: {status.role.name} term={status.term} vote={status.vote} lead={lead} "
            f"commit={status.commit} applied={status.applied} last={status.last_index} "
            f"{describe_conf_state(status.conf_state)}"
        )
        if status.role is Role.LEADER:
            transferee = status.lead_transferee if status.lead_transferee != NONE else "none"
            self.write(
                f"lease={'valid' if status.lease_valid else 'invalid'} transferee={transferee} "
                f"applied-by-all={self.nodes[node_id].raw.applied_by_all()}"
            )
            for peer_id in sorted(status.progress):
                peer = status.progress[peer_id]
                learner = " learner" if peer.is_learner else ""
                inflight = len(raft.prs[peer_id].inflights)
                applied = "" if peer_id == node_id else f" applied={peer.applied}"
                self.write(
                    f"{peer_id}: {peer.state.name} match={peer.match} next={peer.next}{applied} "
                    f"inflight={inflight}{learner}"
                )

    def describe_state_machine(self, node_id: int) -> None:
        self.write(f"{node_id}: applied={self.nodes[node_id].applied.payloads}")

    # -- scenario commands ------------------------------------------------------------------

    def handle(self, command: Command) -> str:
        """Run one scenario command and return what it printed."""
        handler = self._handlers().get(command.name)
        if handler is None:
            raise ValueError(f"unknown command {command.name!r}")
        handler(command)
        return self.take_output()

    def _handlers(self) -> dict[str, Callable[[Command], None]]:
        return {
            "add-nodes": self._cmd_add_nodes,
            "campaign": lambda c: self.campaign(c.int_arg(0)),
            "tick": lambda c: self.tick(c.int_arg(0), c.int_arg(1) if len(c.args) > 1 else 1),
            "tick-election": lambda c: self._for_each_id(c, self.tick_election),
            "tick-heartbeat": lambda c: self._for_each_id(c, self.tick_heartbeat),
            "propose": lambda c: self._cmd_propose(c),
            "propose-conf-change": self._cmd_propose_conf_change,
            "transfer-leader": lambda c: self.transfer_leader(int(c.option("from")), int(c.option("to"))),
            "read-index": lambda c: self.read_index(c.int_arg(0), int(c.option("ctx")), "lease" in c.args[1:]),
            "process-ready": lambda c: self._for_each_id(c, self.process_ready),
            "deliver-msgs": self._cmd_deliver,
            "stabilize": lambda c: self.stabilize([int(a) for a in c.args] or None),
            "isolate": lambda c: self._for_each_id(c, self.isolated.add),
            "heal": lambda c: self.isolated.clear(),
            "compact": lambda c: self.compact(c.int_arg(0), c.int_arg(1)),
            "restart": lambda c: self.restart(c.int_arg(0)),
            "raft-state": lambda c: self.describe_raft_state(),
            "raft-log": lambda c: self.describe_log(c.int_arg(0)),
            "status": lambda c: self._for_each_id(c, self.describe_status),
            "state-machine": lambda c: self._for_each_id(c, self.describe_state_machine),
        }

    @staticmethod
    def _for_each_id(command: Command, action: Callable[[int], object]) -> None:
        for arg in command.args:
            action(int(arg))

    def _cmd_add_nodes(self, command: Command) -> None:
        voters = command.option("voters")
        learners = command.option("learners")
        config_fields = {
            key.replace("-", "_"): _parse_config_value(value)
            for key, value in command.options
            if key not in ("voters", "learners")
        }
        self.add_nodes(
            command.int_arg(0),
            voters=parse_ids(voters) if voters is not None else None,
            learners=parse_ids(learners) if learners is not None else (),
            **config_fields,
        )

    def _cmd_propose(self, command: Command) -> None:
        self.propose(command.int_arg(0), command.args[1])

    def _cmd_propose_conf_change(self, command: Command) -> None:
        kinds = {"add": ConfChangeType.ADD_VOTER, "add-learner": ConfChangeType.ADD_LEARNER, "remove": ConfChangeType.REMOVE}
        ((key, value),) = command.options
        self.propose_conf_change(command.int_arg(0), ConfChange(kinds[key], int(value)))

    def _cmd_deliver(self, command: Command) -> None:
        drop = command.option("drop")
        kind = command.option("type")
        self.deliver(
            [int(a) for a in command.args] if command.args else (None if drop is None else []),
            drop_to=parse_ids(drop) if drop is not None else (),
            message_type=MessageType[kind] if kind is not None else None,
        )
