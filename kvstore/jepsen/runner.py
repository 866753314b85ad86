"""One Jepsen-style run: build the namespaced cluster, run the workload's clients and the nemesis
schedule for a fixed time, heal, do the final reads, tear everything down, check, and report.

Phases are bounded: clients stop invoking at the deadline (an operation in flight ends within the
client timeout), the nemesis heals what it broke when told to stop, the cluster gets a bounded
time to recover, and final reads are retried a bounded number of times. Each phase (setup, run,
heal, final reads, one per checker, report) is reported to a ``Progress``, and so, every second of
the run phase, are the time so far, the operations so far and the faults so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import random
import signal
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import IO

from kvstore.client import Client, KvError, ReadConsistency
from kvstore.jepsen.checker import Validity
from kvstore.jepsen.cluster import Cluster, ClusterError, ClusterSpec, running_cluster
from kvstore.jepsen.history import Event, EventType, Value, event_to_json, write_jsonl
from kvstore.jepsen.locks import CLIENT_PAUSE_S, LockWorkload
from kvstore.jepsen.nemesis import (
    EventPhase,
    Intervals,
    NemesisKind,
    NemesisLog,
    NemesisSchedule,
    build_nemeses,
    fault_intervals,
)
from kvstore.jepsen.netns import Network, NetworkError, missing_prerequisites
from kvstore.jepsen.report import write_report
from kvstore.jepsen.workers import WorkerProcesses
from kvstore.jepsen.workloads import (
    KEY_PREFIX,
    CheckOutcome,
    Completion,
    CounterWorkload,
    GeneratedWorkload,
    Invocation,
    RegisterWorkload,
    SetWorkload,
    Workload,
    connect_client,
)
from kvstore.progress import SILENT, Progress

_FINAL_READ_ATTEMPTS = 5
_PROGRESS_EVERY_S = 1.0
_OUTCOMES = (EventType.OK, EventType.FAIL, EventType.INFO)


class ExitStatus(IntEnum):
    """What ``kvctl jepsen run`` exits with."""

    VALID = 0
    INVALID = 1
    UNKNOWN = 2  # a checker could not decide, or the run hit an error
    COULD_NOT_RUN = 3  # e.g. not root, no `ip netns`


@dataclass(frozen=True, slots=True)
class RunConfig:
    workload: str
    nemeses: tuple[NemesisKind, ...]
    time_s: float
    out_dir: Path
    concurrency: int = 5
    read_consistency: ReadConsistency = ReadConsistency.LINEARIZABLE
    seed: int = 0
    nodes: int = 3
    keys: int = 4
    partitions: int = 4
    op_timeout_s: float = 5.0
    intervals: Intervals = Intervals()
    check_timeout_s: float = 120.0
    ready_timeout_s: float = 60.0
    fencing: bool = True  # the lock workload reads and writes with the lock's token (off: the negative control)
    secure: bool = False  # TLS everywhere, auth on, clients signed in with rights on the workload's keys only


@dataclass(frozen=True, slots=True)
class RunResult:
    config: RunConfig
    status: ExitStatus
    outcomes: tuple[CheckOutcome, ...]
    error: str | None
    operation_counts: dict[str, dict[str, int]]  # f -> outcome -> count
    faults: int
    duration_s: float


def status_of(outcomes: Sequence[CheckOutcome], error: str | None) -> ExitStatus:
    if any(outcome.validity is Validity.INVALID for outcome in outcomes):
        return ExitStatus.INVALID
    if error is not None or not outcomes or any(outcome.validity is Validity.UNKNOWN for outcome in outcomes):
        return ExitStatus.UNKNOWN
    return ExitStatus.VALID


class RunClock:
    """Nanoseconds since the run started, on the monotonic clock (history and nemesis log share it;
    so do the lock workload's worker processes: every process of the machine reads the same one)."""

    def __init__(self) -> None:
        self.origin_ns = time.monotonic_ns()

    def now_ns(self) -> int:
        return time.monotonic_ns() - self.origin_ns


class HistoryRecorder:
    """Appends events to history.jsonl as they happen and keeps them for the checkers. Completions
    that failed carry the client's error."""

    def __init__(self, stream: IO[str], clock: RunClock) -> None:
        self._stream = stream
        self.clock = clock
        self.events: list[Event] = []
        self.completions: Counter[EventType] = Counter()  # ok / fail / info so far

    def invoke(self, process: int, invocation: Invocation) -> None:
        self.append(Event(process, EventType.INVOKE, invocation.f, invocation.key, invocation.value,
                          self.clock.now_ns()))  # fmt: skip

    def complete(self, process: int, invocation: Invocation, completion: Completion) -> None:
        # A write's completion echoes what was written; a read's carries what it read.
        value: Value = completion.value if completion.type is EventType.OK else invocation.value
        self.append(Event(process, completion.type, invocation.f, invocation.key, value, self.clock.now_ns(),
                          revision=completion.revision, staleness_ms=completion.staleness_ms,
                          error=completion.error))  # fmt: skip

    def append(self, event: Event) -> None:
        """Record an event taken elsewhere (its ``time`` on this run's clock)."""
        self.events.append(event)
        if event.type is not EventType.INVOKE:
            self.completions[event.type] += 1
        self._stream.write(event_to_json(event) + "\n")
        self._stream.flush()


async def apply_recorded(
    recorder: HistoryRecorder, workload: Workload, client: Client, process: int, invocation: Invocation
) -> Completion:
    """Run one operation and record its invoke and completion. An exception the workload did not
    classify (a client bug, say) leaves the outcome unknown: it is recorded as ``info`` with the
    error, rather than ending the run without a history to check."""
    recorder.invoke(process, invocation)
    try:
        completion = await workload.apply(client, invocation)
    except Exception as error:
        completion = Completion(EventType.INFO, error=f"unexpected {type(error).__name__}: {error}")
    recorder.complete(process, invocation, completion)
    return completion


@contextlib.asynccontextmanager
async def namespaced_cluster(
    spec: ClusterSpec, log_dir: Path, ready_timeout_s: float, preferred_subnet: int | None = None
) -> AsyncIterator[Cluster]:
    """A running cluster on a network of its own; nodes, data and network are gone on exit."""
    subnet = os.getpid() % 256 if preferred_subnet is None else preferred_subnet
    network = await asyncio.to_thread(Network.create, spec.node_ids, subnet)
    try:
        with tempfile.TemporaryDirectory(prefix="kvstore-jepsen-") as data_root:
            async with running_cluster(spec, network, Path(data_root), log_dir, ready_timeout_s) as cluster:
                yield cluster
    finally:
        await asyncio.shield(asyncio.to_thread(network.destroy))


class _TaskLoad:
    """The clients of the load phase as tasks of the harness, ``concurrency`` of them. A process
    has one client and one operation at a time; after an outcome-unknown (info) operation it is
    retired and a fresh process takes its place."""

    def __init__(
        self, config: RunConfig, workload: GeneratedWorkload, cluster: Cluster, recorder: HistoryRecorder
    ) -> None:
        self._config = config
        self._workload = workload
        self._cluster = cluster
        self._recorder = recorder
        self._process_ids = itertools.count()

    async def run(self, deadline: float) -> None:
        async with asyncio.TaskGroup() as tasks:
            for index in range(self._config.concurrency):
                tasks.create_task(self._worker(index, deadline), name=f"worker-{index}")

    async def _worker(self, index: int, deadline: float) -> None:
        rng = random.Random(f"{self._config.seed}/worker/{index}")
        # Each worker starts with a different seed node, so one paused node does not stall every connect.
        endpoints = rng.sample(self._cluster.endpoints, len(self._cluster.endpoints))
        client: Client | None = None
        process = next(self._process_ids)
        try:
            while time.monotonic() < deadline:
                if client is None:
                    client = await connect_client(endpoints, self._config.op_timeout_s, deadline, self._cluster.client)
                    if client is None:
                        return
                invocation = self._workload.next_invocation(rng)
                completion = await apply_recorded(self._recorder, self._workload, client, process, invocation)
                if completion.type is EventType.INFO:
                    await client.close()
                    client = None
                    process = next(self._process_ids)
        finally:
            if client is not None:
                await client.close()


async def _final_reads(config: RunConfig, workload: Workload, cluster: Cluster, recorder: HistoryRecorder) -> None:
    deadline = time.monotonic() + _FINAL_READ_ATTEMPTS * config.op_timeout_s
    client = await connect_client(cluster.endpoints, config.op_timeout_s, deadline, cluster.client)
    if client is None:
        return
    try:
        process = 1 + max((event.process for event in recorder.events), default=-1)  # a process of its own
        for invocation in workload.final_invocations():
            for _ in range(_FINAL_READ_ATTEMPTS):
                completion = await apply_recorded(recorder, workload, client, process, invocation)
                if completion.type is EventType.OK:
                    break
    finally:
        await client.close()


async def _setup_workload(workload: Workload, cluster: Cluster, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        client = await connect_client(cluster.endpoints, timeout_s, deadline, cluster.client)
        if client is None:
            break
        try:
            await workload.setup(client)
            return
        except KvError as error:
            last_error = error
        finally:
            await client.close()
    raise ClusterError(f"the workload's setup did not succeed within {timeout_s:g}s: {last_error}")


async def _execute(
    config: RunConfig,
    recorder: HistoryRecorder,
    nemesis_log: NemesisLog,
    workload: GeneratedWorkload | LockWorkload,
    progress: Progress,
) -> list[str]:
    """The cluster's whole life; returns what made the run incomplete, if anything."""
    spec = ClusterSpec(node_ids=tuple(range(1, config.nodes + 1)), partitions=config.partitions,
                       secure=config.secure, key_prefix=KEY_PREFIX + "/")
    errors: list[str] = []
    progress.phase("setup")
    progress.update(0, detail=f"{config.nodes} nodes in network namespaces, {config.partitions} partitions")
    async with namespaced_cluster(spec, config.out_dir / "nodes", config.ready_timeout_s) as cluster:
        await _setup_workload(workload, cluster, config.ready_timeout_s)
        stop = asyncio.Event()
        progress.phase("run", total=config.time_s, unit="s")
        started = time.monotonic()
        deadline = started + config.time_s
        workers: WorkerProcesses | None = None
        if isinstance(workload, LockWorkload):
            configs = workload.worker_configs(cluster.endpoints, config.seed, recorder.clock.origin_ns,
                                              round(deadline * 1e9), config.op_timeout_s)  # fmt: skip
            workers = WorkerProcesses(configs, recorder, config.out_dir / "workers")
            # A worker's last section may wait for the lock, then read, write, release and revoke.
            load = workers.run(grace_s=5 * config.op_timeout_s + CLIENT_PAUSE_S)
        else:
            load = _TaskLoad(config, workload, cluster, recorder).run(deadline)
        nemeses = build_nemeses(config.nemeses, cluster, workload.target_partitions(config.partitions),
                                workers, CLIENT_PAUSE_S, config.ready_timeout_s)  # fmt: skip
        schedule = NemesisSchedule(nemeses, random.Random(f"{config.seed}/nemesis"), nemesis_log, config.intervals)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(schedule.run(stop), name="nemesis")
            tasks.create_task(_report_load(progress, recorder, nemesis_log, started, config.time_s, stop),
                              name="progress")  # fmt: skip
            clients = tasks.create_task(load, name="load")
            # Faults stop at the deadline too; operations still in flight end within the client timeout.
            await asyncio.wait([clients], timeout=max(0.0, deadline - time.monotonic()))
            stop.set()
            _report_load_once(progress, recorder, nemesis_log, started, config.time_s)
            progress.phase("heal")
            progress.update(0, detail=load_status(recorder, nemesis_log))
        if workers is not None:
            errors.extend(workers.problems)
        try:
            await cluster.wait_ready(config.ready_timeout_s)
        except ClusterError as not_ready:
            errors.append(f"after healing: {not_ready}")  # final reads are still tried: they may succeed
        progress.phase("final reads")
        await _final_reads(config, workload, cluster, recorder)
    return errors


def _messages(group: BaseExceptionGroup[BaseException]) -> list[str]:
    """The messages of the exceptions in ``group``, nested groups included."""
    return [message for error in group.exceptions
            for message in (_messages(error) if isinstance(error, BaseExceptionGroup) else [str(error)])]


def load_status(recorder: HistoryRecorder, nemesis_log: NemesisLog) -> str:
    """``812 ok, 3 fail, 1 info · faults: kill 2, partition 1``: the run so far, for progress."""
    operations = ", ".join(f"{recorder.completions[kind]:,} {kind.value}" for kind in _OUTCOMES)
    faults = Counter(event.nemesis.value for event in nemesis_log.events if event.phase is EventPhase.FAULT)
    return f"{operations} · faults: {', '.join(f'{kind} {count}' for kind, count in faults.items()) or 'none yet'}"


async def _report_load(
    progress: Progress,
    recorder: HistoryRecorder,
    nemesis_log: NemesisLog,
    started: float,
    time_s: float,
    stop: asyncio.Event,
) -> None:
    """Every second until ``stop``: seconds of load so far, operations and faults so far."""
    while not stop.is_set():
        _report_load_once(progress, recorder, nemesis_log, started, time_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), _PROGRESS_EVERY_S)


def _report_load_once(
    progress: Progress, recorder: HistoryRecorder, nemesis_log: NemesisLog, started: float, time_s: float
) -> None:
    progress.update(min(time.monotonic() - started, time_s), detail=load_status(recorder, nemesis_log))


def _operation_counts(events: Sequence[Event]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for event in events:
        if event.type is not EventType.INVOKE:
            per_f = counts.setdefault(event.f, {})
            per_f[event.type.value] = per_f.get(event.type.value, 0) + 1
    return counts


async def run_async(config: RunConfig, progress: Progress = SILENT) -> RunResult:
    started = time.monotonic()
    problem = missing_prerequisites()
    if problem is not None:
        return RunResult(config, ExitStatus.COULD_NOT_RUN, (), problem, {}, 0, 0.0)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    workload = build_workload(config)
    clock = RunClock()
    errors: list[str] = []
    history_path = config.out_dir / "history.jsonl"
    with (
        history_path.open("w", encoding="utf-8") as history_stream,
        (config.out_dir / "nemesis.jsonl").open("w", encoding="utf-8") as nemesis_stream,
    ):
        recorder = HistoryRecorder(history_stream, clock)
        nemesis_log = NemesisLog(nemesis_stream, clock.now_ns)
        try:
            errors = await _execute(config, recorder, nemesis_log, workload, progress)
        except* (ClusterError, NetworkError) as failures:  # also from a nemesis, through the run's task group
            errors = _messages(failures)
    events = in_time_order(recorder.events, history_path)
    # Checking is CPU-bound and runs after the cluster is gone, so it cannot slow the nodes.
    faults = fault_intervals(nemesis_log.events)
    outcomes = tuple(await asyncio.to_thread(workload.check, events, config.check_timeout_s, progress, faults))
    error = "; ".join(errors) or None
    result = RunResult(
        config=config,
        status=status_of(outcomes, error),
        outcomes=outcomes,
        error=error,
        operation_counts=_operation_counts(events),
        faults=sum(1 for event in nemesis_log.events if event.phase is EventPhase.FAULT),
        duration_s=time.monotonic() - started,
    )
    progress.phase("report")
    write_report(result, events, nemesis_log.events)
    return result


def in_time_order(events: list[Event], history_path: Path) -> list[Event]:
    """The history sorted by time (stable), each event numbered with its line in history.jsonl,
    which is rewritten if it was not in time order: events of worker processes reach the harness
    through pipes, not quite in the order they happened, and a keepalive is recorded once
    acknowledged, with the time it was sent."""
    ordered = sorted(events, key=lambda event: event.time or 0)
    if ordered != events:
        with history_path.open("w", encoding="utf-8") as stream:
            write_jsonl(ordered, stream)
    return [dataclasses.replace(event, line=number) for number, event in enumerate(ordered, start=1)]


WORKLOAD_NAMES: tuple[str, ...] = (RegisterWorkload.name, SetWorkload.name, CounterWorkload.name, LockWorkload.name)


def build_workload(config: RunConfig) -> GeneratedWorkload | LockWorkload:
    """The workload ``config`` names; ValueError when the settings do not fit it."""
    lock = config.workload == LockWorkload.name
    if NemesisKind.CLIENT_PAUSE in config.nemeses and not lock:
        raise ValueError("the client-pause nemesis stops workers of the lock workload: use --workload lock")
    if not config.fencing and not lock:
        raise ValueError("--fencing off applies to the lock workload only")
    if config.secure and lock:
        raise ValueError("--secure runs the register, set and counter workloads: the lock workload's worker "
                         "processes do not sign in")
    if config.secure and NemesisKind.MEMBERSHIP in config.nemeses:
        raise ValueError("--secure with the membership nemesis: a node added during the run would need a "
                         "certificate of its own, which the harness does not make")
    if config.workload == RegisterWorkload.name:
        return RegisterWorkload(config.keys, config.read_consistency)
    if config.workload == SetWorkload.name:
        return SetWorkload(config.read_consistency)
    if config.workload == CounterWorkload.name:
        return CounterWorkload(config.read_consistency)
    if lock:
        return LockWorkload(config.keys, config.concurrency, config.fencing)
    raise ValueError(f"unknown workload {config.workload!r} (expected one of {', '.join(WORKLOAD_NAMES)})")


def run(config: RunConfig, progress: Progress = SILENT) -> RunResult:
    """Run to completion, reporting each phase to ``progress``. SIGINT/SIGTERM cancel the run;
    its cleanup still runs, then KeyboardInterrupt is raised."""

    async def main() -> RunResult:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signal_number, task.cancel)
        try:
            return await run_async(config, progress)
        finally:
            for signal_number in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signal_number)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
