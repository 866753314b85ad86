"""Short Jepsen-style runs on a real cluster in network namespaces (needs root and `ip netns`).

Each run injects real faults while clients work, then checks the history: every run under the
default (linearizable) consistency must be valid. The negative controls prove that the harness
and checkers bite: STALE reads from an isolated former leader must be found not linearizable,
and a lock holder stopped past its lease's TTL must lose updates when it writes without its
fencing token (and lose none with it).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path

import pytest

from kvstore.client import Client, ReadConsistency
from kvstore.jepsen.checker import Validity
from kvstore.jepsen.cluster import Cluster, ClusterSpec
from kvstore.jepsen.history import EventType, read_jsonl
from kvstore.jepsen.nemesis import EventPhase, Intervals, NemesisKind, read_nemesis_log
from kvstore.jepsen.netns import missing_prerequisites
from kvstore.jepsen.runner import (
    ExitStatus,
    HistoryRecorder,
    RunClock,
    RunConfig,
    apply_recorded,
    namespaced_cluster,
    run,
)
from kvstore.jepsen.workloads import Invocation, RegisterWorkload, partitions_of
from kvstore.progress import SILENT

_WHY_NOT = missing_prerequisites()
pytestmark = pytest.mark.skipif(_WHY_NOT is not None, reason=f"Jepsen tests skipped: {_WHY_NOT}")

LOAD_S = 15.0
# Short healthy stretches and faults long enough to force elections, so ~2 faults fit in a run.
INTERVALS = Intervals(healthy=(1.5, 3.0), faulty=(3.0, 5.0))
WAIT_S = 60.0


@pytest.mark.slow
@pytest.mark.parametrize("workload", ["register", "set"])
@pytest.mark.parametrize("nemesis", [NemesisKind.KILL, NemesisKind.PAUSE, NemesisKind.PARTITION])
def test_short_run_is_valid(tmp_path: Path, workload: str, nemesis: NemesisKind) -> None:
    config = RunConfig(
        workload=workload,
        nemeses=(nemesis,),
        time_s=LOAD_S,
        out_dir=tmp_path / "run",
        seed=7,
        intervals=INTERVALS,
    )

    result = run(config)

    details = [f"{o.checker}: {o.validity} {o.summary}" for o in result.outcomes]
    assert result.status is ExitStatus.VALID, f"{result.error}; {details}; see {config.out_dir}"
    assert all(outcome.validity is Validity.VALID for outcome in result.outcomes)
    # The nemesis really struck, and healed everything it broke.
    events = read_nemesis_log(config.out_dir / "nemesis.jsonl")
    phases = [event.phase for event in events]
    assert EventPhase.FAULT in phases
    assert phases.count(EventPhase.FAULT) == phases.count(EventPhase.HEAL)
    assert {event.nemesis for event in events} == {nemesis}
    # Clients got work done, and everything the report promises is there.
    history = read_jsonl(config.out_dir / "history.jsonl")
    assert any(event.type is EventType.OK for event in history)
    assert all(event.time is not None for event in history)
    for name in ("index.html", "results.json", "latency.png", "nodes/node-1.log"):
        assert (config.out_dir / name).is_file(), name
    assert json.loads((config.out_dir / "results.json").read_text())["status"] == "valid"


@pytest.mark.slow
def test_a_register_run_with_tls_and_auth_on_is_valid(tmp_path: Path) -> None:
    """Security does not cost correctness: every channel TLS, auth enabled, the clients signed in
    as a user whose role grants readwrite on the workload's keys only, under partitions and kills."""
    config = RunConfig(workload="register", nemeses=(NemesisKind.PARTITION, NemesisKind.KILL), time_s=LOAD_S,
                       out_dir=tmp_path / "run", seed=11, intervals=INTERVALS, secure=True)

    result = run(config)

    details = [f"{o.checker}: {o.validity} {o.summary}" for o in result.outcomes]
    assert result.status is ExitStatus.VALID, f"{result.error}; {details}; see {config.out_dir}"
    assert all(outcome.validity is Validity.VALID for outcome in result.outcomes)
    assert result.faults > 0
    history = read_jsonl(config.out_dir / "history.jsonl")
    assert any(event.type is EventType.OK and event.f == "write" for event in history)


LOCK_LOAD_S = 20.0


@pytest.mark.slow
@pytest.mark.parametrize("fencing", [True, False], ids=["fencing-on", "fencing-off"])
def test_a_paused_lock_holder_is_harmless_with_fencing_and_loses_updates_without(tmp_path: Path, fencing: bool) -> None:
    """docs/locks.md, "Seeing it: Jepsen": the same seed, with and without fencing tokens, under
    client-pause (a worker holding the lock stopped for longer than its lease's TTL)."""
    config = RunConfig(
        workload="lock",
        nemeses=(NemesisKind.CLIENT_PAUSE,),
        time_s=LOCK_LOAD_S,
        out_dir=tmp_path / "run",
        seed=7,
        keys=1,  # every critical section increments the same register: each pause can lose an update
        intervals=INTERVALS,
        fencing=fencing,
    )

    result = run(config)

    verdicts = {outcome.checker: outcome for outcome in result.outcomes}
    seen = f"{result.error}; {[(o.checker, o.validity.value, o.summary) for o in result.outcomes]}; see {config.out_dir}"
    assert result.error is None, seen
    pauses = [e for e in read_nemesis_log(config.out_dir / "nemesis.jsonl") if e.phase is EventPhase.FAULT]
    assert any("holding the lock" in pause.description for pause in pauses), pauses
    # The lock service and the store did their part either way: a lock passed on only after its
    # lease's TTL, and every register read and write was linearizable.
    assert verdicts["lease"].validity is Validity.VALID and verdicts["lease"].details["leases_judged"] >= 1, seen
    assert verdicts["linearizable"].validity is Validity.VALID, seen
    if fencing:
        assert result.status is ExitStatus.VALID, seen
        assert verdicts["overlapping-holders"].details["refused_as_stale"]["write"] >= 1, seen  # fences bit
    else:
        assert result.status is ExitStatus.INVALID, seen
        assert verdicts["lost-updates"].validity is Validity.INVALID, seen
        assert verdicts["overlapping-holders"].validity is Validity.INVALID, seen
    for name in ("index.html", "timeline-overlapping-holders.html", "latency.png", "workers/worker-0.log"):
        assert (config.out_dir / name).is_file(), name


async def _wait_until_stale(client: Client, key: str, fresh: str) -> None:
    """Wait until the majority side has a value the isolated node cannot have seen."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        kv = await client.get(key)
        if kv is not None and kv.value.decode() == fresh:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{key} never read back {fresh}")


async def _stale_reads_from_isolated_leader(out_dir: Path) -> tuple[list[int], Path]:
    workload = RegisterWorkload(key_count=1, read_consistency=ReadConsistency.STALE)
    key = "jepsen/register/0"
    spec = ClusterSpec(node_ids=(1, 2, 3), partitions=4)
    (partition,) = partitions_of([key], spec.partitions)
    process_ids = itertools.count()
    history_path = out_dir / "history.jsonl"
    with history_path.open("w", encoding="utf-8") as stream:
        recorder = HistoryRecorder(stream, RunClock())
        async with namespaced_cluster(spec, out_dir / "nodes", WAIT_S) as cluster:
            served_by = await _run_control(cluster, workload, recorder, process_ids, key, partition)
    return served_by, history_path


async def _run_control(
    cluster: Cluster,
    workload: RegisterWorkload,
    recorder: HistoryRecorder,
    process_ids: itertools.count[int],
    key: str,
    partition: int,
) -> list[int]:
    old_leader = await cluster.leader_of(partition)
    assert old_leader is not None
    writer = Client(cluster.endpoints, timeout=10.0)
    # The reader learns the layout while `old_leader` leads, and keeps routing there: a STALE read
    # never errors, so nothing ever makes it look elsewhere.
    reader = Client([cluster.address(old_leader)], timeout=10.0)
    await writer.connect()
    await reader.connect()
    writer_process, reader_process = next(process_ids), next(process_ids)
    try:
        first = await apply_recorded(recorder, workload, writer, writer_process, Invocation("write", key, 0))
        assert first.type is EventType.OK
        # Wait until the old leader has applied it, so the later reads are stale, not absent.
        await _wait_for_value(reader, key, b"0")
        others = [node for node in cluster.node_ids if node != old_leader]
        await asyncio.to_thread(cluster.cut, [(old_leader, other) for other in others])
        await cluster.wait_leader_change(partition, old_leader, WAIT_S)
        for value in (1, 2, 3):
            write = await apply_recorded(recorder, workload, writer, writer_process, Invocation("write", key, value))
            if write.type is not EventType.OK:
                writer_process = next(process_ids)  # an info write retires its process
                continue
            await _wait_until_stale(writer, key, str(value))
            await apply_recorded(recorder, workload, reader, reader_process, Invocation("read", key, None))
        served = await reader.get_result(key, consistency=ReadConsistency.STALE)
        return [served.header.node_id, old_leader]
    finally:
        await writer.close()
        await reader.close()


async def _wait_for_value(client: Client, key: str, value: bytes) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        kv = await client.get(key, consistency=ReadConsistency.STALE)
        if kv is not None and kv.value == value:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{key} never reached {value!r} on the reader's node")


def test_stale_reads_from_isolated_leader_are_not_linearizable(tmp_path: Path) -> None:
    served_by, history_path = asyncio.run(_stale_reads_from_isolated_leader(tmp_path))

    node_serving, old_leader = served_by
    assert node_serving == old_leader, "the STALE reads must have come from the isolated node"
    events = read_jsonl(history_path)
    assert any(e.f == "write" and e.type is EventType.OK and e.value != 0 for e in events)
    outcomes = {o.checker: o for o in RegisterWorkload(1, ReadConsistency.STALE).check(events, 60.0, SILENT)}
    assert outcomes["linearizable"].validity is Validity.INVALID
    assert outcomes["linearizable"].timeline_html is not None
    # Weaker guarantees still hold: one reader on one node never sees a version go backwards.
    assert outcomes["session"].validity is Validity.VALID, outcomes["session"].summary


MEMBERSHIP_LOAD_S = 20.0


@pytest.mark.slow
def test_a_register_run_stays_valid_while_nodes_join_are_replaced_and_leave(tmp_path: Path) -> None:
    """docs/membership.md, "Seeing it: Jepsen": members change under the register workload
    through the membership RPCs (a node added with --join, a node replaced after losing its
    disk, a node drained and removed), with kill -9 in between; every read stays linearizable."""
    config = RunConfig(
        workload="register",
        nemeses=(NemesisKind.MEMBERSHIP, NemesisKind.KILL),
        time_s=MEMBERSHIP_LOAD_S,
        out_dir=tmp_path / "run",
        seed=3,
        intervals=Intervals(healthy=(1.0, 2.0), faulty=(2.0, 3.0)),
    )

    result = run(config)

    details = [f"{o.checker}: {o.validity} {o.summary}" for o in result.outcomes]
    assert result.status is ExitStatus.VALID, f"{result.error}; {details}; see {config.out_dir}"
    events = read_nemesis_log(config.out_dir / "nemesis.jsonl")
    changes = [e.description for e in events if e.phase is EventPhase.FAULT and e.nemesis is NemesisKind.MEMBERSHIP]
    # Changes take turns: first a node joins, then one is replaced; each settled before the next fault.
    assert len(changes) >= 2, [e.description for e in events]
    assert changes[0].startswith("add node 4 at ") and changes[1].startswith("replace node ")
    assert [e.phase for e in events].count(EventPhase.FAULT) == [e.phase for e in events].count(EventPhase.HEAL)
    history = read_jsonl(config.out_dir / "history.jsonl")
    assert sum(1 for event in history if event.type is EventType.OK and event.f == "write") >= 10
    # The joined and the replacing nodes ran, with logs of their own.
    assert (config.out_dir / "nodes" / "node-4.log").is_file()
    assert (config.out_dir / "nodes" / "node-5.log").is_file()
