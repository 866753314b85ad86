"""Nemeses: faults injected into a running cluster (or, for client-pause, into the lock
workload's worker processes) on a schedule, each logged when it starts and when it heals.

A nemesis picks a fault (``inject``) and returns it; the fault knows how to undo itself
(``heal``). ``NemesisSchedule`` alternates healthy and faulty intervals, picking one of the
configured nemeses at random for each fault, until told to stop; it always heals what it broke.
Every choice comes from one seeded ``random.Random``, so a seed names a fault schedule (the
cluster's own timing still varies from run to run).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Protocol

from kvstore.jepsen.cluster import Cluster

# How fast the clock nemesis runs one node's clocks: far slower than the x0.8 the lease allows for
# (a lease is election_tick - lease_drift_ticks = 8 of the 10 ticks followers wait), so that the
# node, leading, counts its lease five times as long as the others count their election timeout.
SLOW_CLOCK_RATE = 0.2
_LEADERSHIP_WAIT_S = 10.0  # the slowed node takes over partitions from the others' leader balancing
_POLL_S = 0.2
# How long the client-pause nemesis waits for a worker to hold the lock, and how often it looks.
_HOLDER_WAIT_S = 5.0
_HOLDER_POLL_S = 0.005


class NemesisKind(StrEnum):
    KILL = "kill"
    PAUSE = "pause"
    PARTITION = "partition"
    CLOCK = "clock"
    CLIENT_PAUSE = "client-pause"  # a worker of the lock workload, not a node
    MEMBERSHIP = "membership"


class EventPhase(StrEnum):
    FAULT = "fault"
    HEAL = "heal"


@dataclass(frozen=True, slots=True)
class NemesisEvent:
    """One line of nemesis.jsonl. ``time`` is nanoseconds since the run started, like the history's;
    ``workers`` are the lock workload's workers a client pause stopped (none for other faults)."""

    time: int
    phase: EventPhase
    nemesis: NemesisKind
    description: str
    nodes: tuple[int, ...]
    workers: tuple[int, ...] = ()

    def to_json(self) -> str:
        fields = {
            "time": self.time,
            "type": self.phase.value,
            "nemesis": self.nemesis.value,
            "description": self.description,
            "nodes": list(self.nodes),
        }
        if self.workers:
            fields["workers"] = list(self.workers)
        return json.dumps(fields)


@dataclass(frozen=True, slots=True)
class FaultInterval:
    """A fault from its start to its heal (None: never healed, e.g. the run was interrupted)."""

    nemesis: NemesisKind
    description: str
    start: int
    end: int | None
    workers: tuple[int, ...] = ()


def fault_intervals(events: Sequence[NemesisEvent]) -> list[FaultInterval]:
    """Pair each fault with the heal that follows it (one fault is active at a time)."""
    intervals: list[FaultInterval] = []
    open_fault: NemesisEvent | None = None
    for event in events:
        if event.phase is EventPhase.FAULT:
            open_fault = event
        elif open_fault is not None:
            intervals.append(FaultInterval(open_fault.nemesis, open_fault.description, open_fault.time, event.time,
                                           open_fault.workers))  # fmt: skip
            open_fault = None
    if open_fault is not None:
        intervals.append(FaultInterval(open_fault.nemesis, open_fault.description, open_fault.time, None,
                                       open_fault.workers))  # fmt: skip
    return intervals


class NemesisLog:
    """Appends events to nemesis.jsonl as they happen (so a crashed run keeps them) and in memory."""

    def __init__(self, stream: IO[str], clock_ns: Callable[[], int]) -> None:
        self._stream = stream
        self._clock_ns = clock_ns
        self.events: list[NemesisEvent] = []

    def record(
        self,
        phase: EventPhase,
        nemesis: NemesisKind,
        description: str,
        nodes: Sequence[int],
        workers: Sequence[int] = (),
    ) -> None:
        event = NemesisEvent(self._clock_ns(), phase, nemesis, description, tuple(sorted(nodes)), tuple(workers))
        self.events.append(event)
        self._stream.write(event.to_json() + "\n")
        self._stream.flush()


@dataclass(frozen=True, slots=True)
class Fault:
    """An injected fault: what it is, whom it hit (nodes, or the lock workload's workers), and how
    to undo it."""

    nemesis: NemesisKind
    description: str
    nodes: tuple[int, ...]
    heal: Callable[[], Awaitable[None]] = field(compare=False)
    workers: tuple[int, ...] = ()


class Nemesis(Protocol):
    kind: NemesisKind

    async def prepare(self, rng: random.Random) -> None:
        """Set the stage once, before the load starts (most nemeses need nothing)."""
        ...

    async def inject(self, rng: random.Random) -> Fault: ...


async def _targets(
    cluster: Cluster, rng: random.Random, partitions: Sequence[int], modes: Sequence[str]
) -> tuple[str, list[int]]:
    """Pick the nodes to hit: one at random, the leader of one of ``partitions``, or a majority."""
    nodes = list(cluster.node_ids)
    mode = rng.choice(modes)
    if mode == "leader" and partitions:
        partition = rng.choice(list(partitions))
        leader = await cluster.leader_of(partition)
        if leader is not None:
            return f"the leader of partition {partition} (node {leader})", [leader]
        mode = "one"  # no leader right now: an ordinary node then
    if mode == "majority":
        chosen = sorted(rng.sample(nodes, len(nodes) // 2 + 1))
        return f"a majority {chosen}", chosen
    chosen = [rng.choice(nodes)]
    return f"node {chosen[0]}", chosen


class KillNemesis:
    """kill -9 one node, a partition's leader or a majority; heal restarts them on the same data."""

    kind = NemesisKind.KILL

    def __init__(self, cluster: Cluster, partitions: Sequence[int]) -> None:
        self._cluster = cluster
        self._partitions = partitions

    async def prepare(self, rng: random.Random) -> None:
        return None

    async def inject(self, rng: random.Random) -> Fault:
        what, nodes = await _targets(self._cluster, rng, self._partitions, ("one", "leader", "majority"))
        for node_id in nodes:
            await asyncio.to_thread(self._cluster.kill, node_id)

        async def restart() -> None:
            for node_id in nodes:
                if not self._cluster.is_running(node_id):
                    self._cluster.start(node_id)

        return Fault(self.kind, f"kill -9 {what}", tuple(nodes), restart)


class PauseNemesis:
    """SIGSTOP one node, a partition's leader or a majority; heal sends SIGCONT."""

    kind = NemesisKind.PAUSE

    def __init__(self, cluster: Cluster, partitions: Sequence[int]) -> None:
        self._cluster = cluster
        self._partitions = partitions

    async def prepare(self, rng: random.Random) -> None:
        return None

    async def inject(self, rng: random.Random) -> Fault:
        what, nodes = await _targets(self._cluster, rng, self._partitions, ("one", "leader", "majority"))
        for node_id in nodes:
            self._cluster.pause(node_id)

        async def resume() -> None:
            for node_id in nodes:
                self._cluster.resume(node_id)

        return Fault(self.kind, f"pause {what}", tuple(nodes), resume)


def _links_between(groups: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """Every pair of nodes in different groups: the links a partition into ``groups`` cuts."""
    return [(a, b) for i, group in enumerate(groups) for other in groups[i + 1 :] for a in group for b in other]


def _ring_links(order: Sequence[int]) -> list[tuple[int, int]]:
    """Cut every link except between ring neighbours, so each node sees a majority (itself and two
    neighbours of five) but no two nodes see the same majority."""
    size = len(order)
    neighbours = {frozenset((order[i], order[(i + 1) % size])) for i in range(size)}
    return [
        (a, b) for i, a in enumerate(order) for b in order[i + 1 :] if frozenset((a, b)) not in neighbours
    ]


class PartitionNemesis:
    """Cut the network with iptables inside the node namespaces: isolate one node, isolate a
    partition's leader, split majority/minority, majority ring (five nodes or more), or bridge (two
    halves that cannot talk, one node talking to both)."""

    kind = NemesisKind.PARTITION

    def __init__(self, cluster: Cluster, partitions: Sequence[int]) -> None:
        self._cluster = cluster
        self._partitions = partitions

    async def prepare(self, rng: random.Random) -> None:
        return None

    async def inject(self, rng: random.Random) -> Fault:
        nodes = list(self._cluster.node_ids)
        modes = ["isolate-one", "isolate-leader", "split", "bridge"]
        if len(nodes) >= 5:
            modes.append("ring")
        mode = rng.choice(modes)
        if mode == "isolate-leader":
            what, isolated = await _targets(self._cluster, rng, self._partitions, ("leader",))
            links = _links_between([isolated, [n for n in nodes if n not in isolated]])
            description = f"isolate {what}"
        elif mode == "isolate-one":
            isolated = [rng.choice(nodes)]
            links = _links_between([isolated, [n for n in nodes if n not in isolated]])
            description = f"isolate node {isolated[0]}"
        elif mode == "split":
            shuffled = rng.sample(nodes, len(nodes))
            minority, majority = sorted(shuffled[: len(nodes) // 2]), sorted(shuffled[len(nodes) // 2 :])
            links = _links_between([minority, majority])
            description = f"split minority {minority} from majority {majority}"
        elif mode == "ring":
            order = rng.sample(nodes, len(nodes))
            links = _ring_links(order)
            description = f"majority ring {order}"
        else:
            shuffled = rng.sample(nodes, len(nodes))
            bridge, rest = shuffled[0], shuffled[1:]
            left, right = sorted(rest[: len(rest) // 2]), sorted(rest[len(rest) // 2 :])
            links = _links_between([left, right])
            description = f"bridge: {left} and {right} cut apart, node {bridge} sees both"
        await asyncio.to_thread(self._cluster.cut, links)
        touched = sorted({node for link in links for node in link})

        async def heal() -> None:
            await asyncio.to_thread(self._cluster.heal)

        return Fault(self.kind, description, tuple(touched), heal)


class ClockNemesis:
    """Clock-rate skew beyond the lease's drift margin, and the fault that makes it matter.

    Before the load starts, one node is restarted with its clocks (monotonic included, through
    libfaketime) at x`SLOW_CLOCK_RATE`, and keeps that clock for the rest of the run. Each fault
    waits until the slow node leads a partition of the workload (leader balancing hands it some)
    and cuts it off from the other nodes. A leader's lease only assumes clocks drift by less than
    the lease's margin: the slow leader still counts its lease while the others, on real time,
    have waited out their election timeout and elected a new leader, so its LEASE reads return
    values the new leader has overwritten. Heal reconnects it. (A clock's offset does not matter:
    nodes only measure durations, on the monotonic clock.)
    """

    kind = NemesisKind.CLOCK

    def __init__(self, cluster: Cluster, partitions: Sequence[int]) -> None:
        self._cluster = cluster
        self._partitions = partitions
        self._slow: int | None = None

    async def prepare(self, rng: random.Random) -> None:
        cluster = self._cluster
        self._slow = rng.choice(list(cluster.node_ids))
        await asyncio.to_thread(cluster.stop, self._slow)
        cluster.start(self._slow, clock_rate=SLOW_CLOCK_RATE)
        await self._wait_to_lead(self._slow)

    async def inject(self, rng: random.Random) -> Fault:
        cluster = self._cluster
        if self._slow is None:
            raise RuntimeError("the clock nemesis was not prepared")
        slow = self._slow
        led = await self._wait_to_lead(slow)
        others = [node for node in cluster.node_ids if node != slow]
        await asyncio.to_thread(cluster.network.cut, [(slow, other) for other in others])
        leading = f"while it leads partition {led}" if led is not None else "(it leads no partition of the workload)"
        description = f"node {slow}, its clock at x{SLOW_CLOCK_RATE:g}, cut off {leading}"

        async def heal() -> None:
            await asyncio.to_thread(cluster.network.heal)

        return Fault(self.kind, description, (slow,), heal)

    async def _wait_to_lead(self, node_id: int) -> int | None:
        """A partition of the workload `node_id` leads, waiting for one a while; None if none."""
        deadline = asyncio.get_running_loop().time() + _LEADERSHIP_WAIT_S
        while True:
            leaders = await self._cluster.leaders()
            led = [partition for partition in self._partitions if leaders.get(partition) == node_id]
            if led or asyncio.get_running_loop().time() >= deadline:
                return led[0] if led else None
            await asyncio.sleep(_POLL_S)


class Members(Protocol):
    """The cluster as the membership nemesis changes it (`kvstore.jepsen.cluster.Cluster`)."""

    @property
    def node_ids(self) -> tuple[int, ...]: ...

    def address(self, node_id: int) -> str: ...

    async def add_node(self) -> int: ...

    async def remove_node(self, node_id: int) -> None: ...

    async def replace_node(self, node_id: int) -> int: ...

    async def wait_settled(self, timeout_s: float) -> None: ...


class MembershipNemesis:
    """Change who is in the cluster while clients work, through the cluster's own membership RPCs:
    add a node (a new process started with ``--join``), replace one as if its disk died (kill -9,
    data dir deleted, a fresh member with a new id at the same address), remove one (its
    partitions drain to the others, then it stops). Changes take turns in that order, so the
    cluster keeps between its initial size and one more; the partitions' moves run while the
    fault is on. Heal waits (at most ``settle_timeout_s``) until the change has settled: no
    member joining or leaving, no partition moving, so the next fault strikes a settled cluster
    (a change that does not settle ends the run with that error)."""

    kind = NemesisKind.MEMBERSHIP
    CHANGES: tuple[str, ...] = ("add", "replace", "remove", "replace")

    def __init__(self, cluster: Members, settle_timeout_s: float) -> None:
        self._cluster = cluster
        self._settle_timeout_s = settle_timeout_s
        self._changes = 0

    async def prepare(self, rng: random.Random) -> None:
        return None

    async def inject(self, rng: random.Random) -> Fault:
        change = self.CHANGES[self._changes % len(self.CHANGES)]
        self._changes += 1
        if change == "add":
            added = await self._cluster.add_node()
            description, nodes = f"add node {added} at {self._cluster.address(added)}", (added,)
        else:
            chosen = rng.choice(self._cluster.node_ids)
            if change == "remove":
                await self._cluster.remove_node(chosen)
                description, nodes = f"remove node {chosen}", (chosen,)
            else:
                fresh = await self._cluster.replace_node(chosen)
                description = f"replace node {chosen} (killed, data dir deleted) by node {fresh} at its address"
                nodes = (chosen, fresh)

        async def settle() -> None:
            await self._cluster.wait_settled(self._settle_timeout_s)

        return Fault(self.kind, description, nodes, settle)


class Workers(Protocol):
    """The lock workload's worker processes, as the client-pause nemesis sees them."""

    def holders(self) -> dict[int, int]:
        """Worker -> the token of the lock it holds, for every running worker holding one now."""
        ...

    def about_to_write(self) -> dict[int, int]:
        """The `holders` that have read their register and not yet sent the write it decides:
        a pause there is the one that makes a write stale."""
        ...

    @property
    def count(self) -> int: ...

    def pause(self, worker: int) -> None: ...

    def resume(self, worker: int) -> None: ...


class ClientPauseNemesis:
    """SIGSTOP a worker of the lock workload while it holds the lock, for at least
    ``min_pause_s`` (longer than its lease's TTL, so that the lock passes on while it sleeps), then
    SIGCONT: the process pause of Kleppmann's "How to do distributed locking". When it wakes up it
    carries on with its critical section, unaware that its lock is gone."""

    kind = NemesisKind.CLIENT_PAUSE

    def __init__(self, workers: Workers, min_pause_s: float) -> None:
        self._workers = workers
        self._min_pause_s = min_pause_s

    async def prepare(self, rng: random.Random) -> None:
        return None

    async def inject(self, rng: random.Random) -> Fault:
        """Pause a holder between its read and its write (the window where a pause makes its
        write stale, whatever the machine's load), else any holder, else any worker."""
        loop = asyncio.get_running_loop()
        waited_until = loop.time() + _HOLDER_WAIT_S
        deciding = self._workers.about_to_write()
        while not deciding and loop.time() < waited_until:
            await asyncio.sleep(_HOLDER_POLL_S)
            deciding = self._workers.about_to_write()
        holders = self._workers.holders()
        if deciding:
            worker = rng.choice(sorted(deciding))
            what = f"worker {worker}, holding the lock with token {deciding[worker]}, between its read and its write"
        elif holders:
            worker = rng.choice(sorted(holders))
            what = f"worker {worker}, holding the lock with token {holders[worker]}"
        else:
            worker = rng.randrange(self._workers.count)
            what = f"worker {worker} (none held the lock within {_HOLDER_WAIT_S:g}s)"
        self._workers.pause(worker)
        resume_at = loop.time() + self._min_pause_s

        async def resume() -> None:
            await asyncio.sleep(max(0.0, resume_at - loop.time()))
            self._workers.resume(worker)

        return Fault(self.kind, f"SIGSTOP {what}", (), resume, (worker,))


def build_nemeses(
    kinds: Sequence[NemesisKind],
    cluster: Cluster,
    partitions: Sequence[int],
    workers: Workers | None = None,
    min_client_pause_s: float = 0.0,
    settle_timeout_s: float = 60.0,
) -> list[Nemesis]:
    """The nemeses for ``kinds``; ``partitions`` are those whose leaders are worth hitting;
    ``workers`` those a client pause stops (the lock workload's), for ``min_client_pause_s``;
    a membership change gets ``settle_timeout_s`` to finish its moves."""
    built: list[Nemesis] = []
    for kind in kinds:
        if kind is NemesisKind.KILL:
            built.append(KillNemesis(cluster, partitions))
        elif kind is NemesisKind.PAUSE:
            built.append(PauseNemesis(cluster, partitions))
        elif kind is NemesisKind.PARTITION:
            built.append(PartitionNemesis(cluster, partitions))
        elif kind is NemesisKind.CLOCK:
            built.append(ClockNemesis(cluster, partitions))
        elif kind is NemesisKind.MEMBERSHIP:
            built.append(MembershipNemesis(cluster, settle_timeout_s))
        elif workers is None:
            raise ValueError("the client-pause nemesis stops workers of the lock workload: run it with that workload")
        else:
            built.append(ClientPauseNemesis(workers, min_client_pause_s))
    return built


@dataclass(frozen=True, slots=True)
class Intervals:
    """Bounds (seconds) of the random healthy and faulty stretches."""

    healthy: tuple[float, float] = (2.0, 4.0)
    faulty: tuple[float, float] = (3.0, 6.0)

    def describe(self) -> str:
        """``healthy 2–4 s, faulty 3–6 s``"""
        return ", ".join(
            f"{name} {low:g}–{high:g} s" for name, (low, high) in (("healthy", self.healthy), ("faulty", self.faulty))
        )


class NemesisSchedule:
    """Healthy, fault, healthy, fault... until ``stop`` is set; the active fault is healed on the
    way out, whether stopped, cancelled or failed."""

    def __init__(
        self, nemeses: Sequence[Nemesis], rng: random.Random, log: NemesisLog, intervals: Intervals
    ) -> None:
        self._nemeses = list(nemeses)
        self._rng = rng
        self._log = log
        self._intervals = intervals

    async def prepare(self) -> None:
        """Let every nemesis set the stage, before the load starts."""
        for nemesis in self._nemeses:
            await nemesis.prepare(self._rng)

    async def run(self, stop: asyncio.Event) -> None:
        if not self._nemeses:
            return
        while not await _wait(stop, self._rng.uniform(*self._intervals.healthy)):
            nemesis = self._rng.choice(self._nemeses)
            fault = await nemesis.inject(self._rng)
            self._log.record(EventPhase.FAULT, fault.nemesis, fault.description, fault.nodes, fault.workers)
            try:
                await _wait(stop, self._rng.uniform(*self._intervals.faulty))
            finally:
                # Shielded: an interrupted run must not leave a node paused or the network cut.
                await asyncio.shield(fault.heal())
                self._log.record(EventPhase.HEAL, fault.nemesis, fault.description, fault.nodes, fault.workers)


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop`` is set; True when stopped."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


def read_nemesis_log(path: Path) -> list[NemesisEvent]:
    events = []
    with path.open(encoding="utf-8") as stream:
        for line in stream:
            if line.strip():
                fields = json.loads(line)
                events.append(
                    NemesisEvent(
                        time=fields["time"],
                        phase=EventPhase(fields["type"]),
                        nemesis=NemesisKind(fields["nemesis"]),
                        description=fields["description"],
                        nodes=tuple(fields["nodes"]),
                        workers=tuple(fields.get("workers", ())),
                    )
                )
    return events
