"""The lock workload's checkers on hand-made histories (docs/locks.md, "Seeing it: Jepsen"): a
holder stopped past its TTL whose late write is refused (valid), the same pause without fencing
(a lost update, overlapping holders), the trap of fencing writes but not reads, a lease that
expired early, and the client-pause nemesis choosing a holder and pausing it long enough."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import pytest

from kvstore.jepsen.checker import Validity
from kvstore.jepsen.history import Event, EventType, Value, pair_operations
from kvstore.jepsen.locks import LOCK_NAME, LockWorkload, WorkerConfig
from kvstore.jepsen.nemesis import ClientPauseNemesis, FaultInterval, NemesisKind
from kvstore.jepsen.sections import Ending, critical_sections
from tests.fakes.progress import RecordingProgress

WORKERS = 2
REGISTER = "jepsen/lock/register/0"
STALE = "StaleFencingTokenError: fencing token 10 is older than token 20 already accepted for key"
LOST = "LockNotHeldError: lock key does not exist: unlocked already, or its lease expired"
MS = 1_000_000
LEASE_A, LEASE_B = 1001, 1002


@dataclass
class History:
    """Operations written at given times (ms); worker ``w``'s sections run as process ``2 + w``,
    its keepalives as process ``w`` (lockworker.py's numbering, with two workers)."""

    events: list[Event] = field(default_factory=list)

    def op(
        self,
        process: int,
        f: str,
        key: Value,
        at: float,
        value: Value = None,
        result: Value = None,
        outcome: EventType = EventType.OK,
        revision: int | None = None,
        error: str | None = None,
    ) -> History:
        completed = result if outcome is EventType.OK and result is not None else value
        self.events.append(Event(process, EventType.INVOKE, f, key, value, round(at * MS)))
        self.events.append(Event(process, outcome, f, key, completed, round((at + 1) * MS), revision=revision,
                                 error=error))  # fmt: skip
        return self

    def sorted(self) -> list[Event]:
        ordered = sorted(self.events, key=lambda event: event.time or 0)
        return [Event(e.process, e.type, e.f, e.key, e.value, e.time, e.revision, error=e.error, line=number)
                for number, e in enumerate(ordered, start=1)]  # fmt: skip


def paused_holder(fencing: bool, next_holder_at: float = 2_300) -> History:
    """Worker 0 (token 10) reads 0 and is stopped before its write; its lease (TTL 2 s, last
    keepalive sent at 100 ms) expires; worker 1 (token 20) takes the lock, reads 0 and writes 1;
    worker 0 wakes up and writes 1 too: refused with fencing, accepted without."""
    a, b = 2, 3  # worker 0's and worker 1's section processes
    history = History()
    history.op(0, "keepalive", LEASE_A, 100, 2)
    history.op(a, "acquire", LOCK_NAME, 0, result=(10, LEASE_A))
    history.op(a, "read", REGISTER, 150, result=None, revision=0)
    history.op(b, "acquire", LOCK_NAME, 50, result=(20, LEASE_B), outcome=EventType.OK)
    # worker 1's acquire really completes at `next_holder_at`: rewrite its completion time
    history.events[-1] = Event(b, EventType.OK, "acquire", LOCK_NAME, (20, LEASE_B), round(next_holder_at * MS))
    history.op(1, "keepalive", LEASE_B, next_holder_at + 10, 2)
    history.op(b, "read", REGISTER, next_holder_at + 20, result=None, revision=0)
    history.op(b, "write", REGISTER, next_holder_at + 100, value=1, revision=40)
    history.op(b, "release", LOCK_NAME, next_holder_at + 200, value=20, result=20)
    if fencing:
        history.op(a, "write", REGISTER, 4_000, value=1, outcome=EventType.FAIL, error=STALE)
    else:
        history.op(a, "write", REGISTER, 4_000, value=1, revision=45)
    history.op(a, "release", LOCK_NAME, 4_100, value=10, outcome=EventType.FAIL, error=LOST)
    history.op(9, "read", REGISTER, 5_000, result=1, revision=45 if not fencing else 40)  # the final read
    return history


def check(history: History, faults: tuple[FaultInterval, ...] = ()) -> dict[str, tuple[Validity, str]]:
    outcomes = LockWorkload(1, WORKERS, fencing=True).check(history.sorted(), 10.0, RecordingProgress(), faults)
    return {outcome.checker: (outcome.validity, outcome.summary) for outcome in outcomes}


def test_a_paused_holders_late_write_refused_by_its_fence_keeps_every_register_right() -> None:
    verdicts = check(paused_holder(fencing=True))
    assert {name: validity for name, (validity, _) in verdicts.items()} == {
        "linearizable": Validity.VALID,
        "lost-updates": Validity.VALID,
        "overlapping-holders": Validity.VALID,
        "lease": Validity.VALID,
    }
    assert "1 writes and 0 reads of old holders refused as stale" in verdicts["overlapping-holders"][1]
    assert "2 critical sections, 1 lost to an expired lease" in verdicts["overlapping-holders"][1]
    # TTL 2 s from the keepalive sent at 100 ms: the next holder took the lock at 2300 ms.
    assert "passed on at least 200.0 ms after their TTL" in verdicts["lease"][1]


def test_without_fencing_the_late_write_loses_an_update_yet_the_store_stays_linearizable() -> None:
    verdicts = check(paused_holder(fencing=False))
    assert verdicts["linearizable"][0] is Validity.VALID  # the store did what it was asked
    validity, summary = verdicts["lost-updates"]
    assert validity is Validity.INVALID and f"{REGISTER} ends at 1 after 2 acknowledged increments" in summary
    validity, summary = verdicts["overlapping-holders"]
    assert validity is Validity.INVALID
    assert f"on {REGISTER}, worker 0 (token 10): write 1 after worker 1 (token 20)" in summary


def test_fencing_the_write_alone_lets_a_stale_write_land_between_the_new_holders_read_and_write() -> None:
    """Worker 1 reads without its token; worker 0's late write (token 10) lands before worker 1's
    (token 20) is accepted: each write was fenced and accepted in token order, yet an update is
    lost. Counting increments and ordering reads with writes both see it."""
    history = History()
    history.op(0, "keepalive", LEASE_A, 0, 2)
    history.op(2, "acquire", LOCK_NAME, 0, result=(10, LEASE_A))
    history.op(2, "read", REGISTER, 10, result=None, revision=0)
    history.op(3, "acquire", LOCK_NAME, 20, result=(20, LEASE_B))
    history.events[-1] = Event(3, EventType.OK, "acquire", LOCK_NAME, (20, LEASE_B), 2_500 * MS)
    history.op(3, "read", REGISTER, 2_510, result=None, revision=0)  # unfenced: the key learns nothing
    history.op(2, "write", REGISTER, 2_520, value=1, revision=30)  # the old holder, late: accepted
    history.op(3, "write", REGISTER, 2_530, value=1, revision=31)  # token 20 > 10: accepted too
    history.op(3, "release", LOCK_NAME, 2_540, value=20, result=20)
    history.op(2, "release", LOCK_NAME, 2_550, value=10, outcome=EventType.FAIL, error=LOST)
    history.op(9, "read", REGISTER, 3_000, result=1, revision=31)
    verdicts = check(history)
    assert verdicts["lost-updates"][0] is Validity.INVALID
    assert verdicts["overlapping-holders"][0] is Validity.INVALID
    assert "worker 0 (token 10): write 1 after worker 1 (token 20): read → null" in verdicts["overlapping-holders"][1]


def test_a_lock_that_passed_on_before_the_ttl_was_up_is_an_early_expiry() -> None:
    verdicts = check(paused_holder(fencing=True, next_holder_at=1_600))
    validity, summary = verdicts["lease"]
    assert validity is Validity.INVALID
    assert f"lease {LEASE_A} of worker 0, whose lock the next holder had 500.0 ms before its 2 s TTL" in summary


def test_a_lease_a_clock_fault_struck_is_not_judged() -> None:
    skewed = FaultInterval(NemesisKind.CLOCK, "clocks of nodes [2] at x2", 50 * MS, 1_000 * MS)
    validity, summary = check(paused_holder(fencing=True, next_holder_at=1_600), (skewed,))["lease"]
    assert validity is Validity.VALID
    assert summary == "no lease judged; 1 not judged: a clock fault struck during them"


def test_a_final_read_that_never_succeeded_leaves_lost_updates_unknown() -> None:
    history = paused_holder(fencing=True)
    history.events = [event for event in history.events if event.process != 9]
    assert check(history)["lost-updates"][0] is Validity.UNKNOWN


def test_sections_end_released_lost_or_unknown_and_belong_to_process_mod_workers() -> None:
    history = paused_holder(fencing=True)
    history.op(4, "acquire", LOCK_NAME, 6_000, result=(30, LEASE_A))  # worker 0 again, as process 4
    history.op(4, "read", REGISTER, 6_010, outcome=EventType.INFO, error="KvTimeoutError: ...")
    sections = critical_sections(pair_operations(history.sorted()), WORKERS)
    assert [(s.worker, s.token, s.lease, s.ending) for s in sections] == [
        (0, 10, LEASE_A, Ending.LOST),
        (1, 20, LEASE_B, Ending.RELEASED),
        (0, 30, LEASE_A, Ending.UNKNOWN),
    ]
    assert [op.f for op in sections[0].operations] == ["read", "write"]
    assert sections[0].start == 1 * MS and sections[0].end == 4_101 * MS


def test_the_sections_timeline_draws_every_section_and_names_the_overlap() -> None:
    outcomes = LockWorkload(1, WORKERS, fencing=False).check(
        paused_holder(fencing=False).sorted(), 10.0, RecordingProgress()
    )
    html = next(outcome for outcome in outcomes if outcome.checker == "overlapping-holders").timeline_html
    assert html is not None
    assert html.count('class="released') == 1 and html.count('class="lost overlap"') == 1
    assert "worker 0 (token 10): write 1 after worker 1 (token 20)" in html


def test_worker_configs_round_trip_through_json_and_start_on_different_nodes() -> None:
    configs = LockWorkload(3, 4, fencing=False).worker_configs(["n1:7000", "n2:7000", "n3:7000"], 7, 100, 200, 5.0)
    assert [config.endpoints[0] for config in configs] == ["n1:7000", "n2:7000", "n3:7000", "n1:7000"]
    assert all(WorkerConfig.from_json(config.to_json()) == config for config in configs)
    assert configs[0].registers == tuple(f"jepsen/lock/register/{index}" for index in range(3))


class FakeWorkers:
    def __init__(self, holders: dict[int, int]) -> None:
        self.held = holders
        self.read: set[int] = set()
        self.signals: list[tuple[str, int, float]] = []

    def holders(self) -> dict[int, int]:
        return dict(self.held)

    def about_to_write(self) -> dict[int, int]:
        return {worker: token for worker, token in self.held.items() if worker in self.read}

    @property
    def count(self) -> int:
        return 3

    def pause(self, worker: int) -> None:
        self.signals.append(("stop", worker, asyncio.get_running_loop().time()))

    def resume(self, worker: int) -> None:
        self.signals.append(("cont", worker, asyncio.get_running_loop().time()))


async def test_client_pause_stops_a_holder_and_resumes_it_only_after_its_minimum_pause() -> None:
    workers = FakeWorkers({})
    nemesis = ClientPauseNemesis(workers, min_pause_s=0.3)
    injecting = asyncio.create_task(nemesis.inject(random.Random(1)))
    await asyncio.sleep(0.05)
    assert not injecting.done()  # nobody holds the lock yet: it waits for a holder
    workers.held = {2: 57}
    fault = await asyncio.wait_for(injecting, 5)
    assert fault.workers == (2,) and fault.nodes == ()
    assert fault.description == "SIGSTOP worker 2, holding the lock with token 57"
    await fault.heal()  # healed at once: the resume still waits out the minimum pause
    (stop, _, stopped_at), (cont, _, resumed_at) = workers.signals
    assert (stop, cont) == ("stop", "cont") and resumed_at - stopped_at == pytest.approx(0.3, abs=0.05)


async def test_client_pause_stops_a_holder_between_its_read_and_its_write_when_there_is_one() -> None:
    workers = FakeWorkers({0: 56, 1: 57})
    nemesis = ClientPauseNemesis(workers, min_pause_s=0.0)
    injecting = asyncio.create_task(nemesis.inject(random.Random(1)))
    await asyncio.sleep(0.05)
    assert not injecting.done()  # holders, but none has read yet: it waits for one that has
    workers.read = {1}
    fault = await asyncio.wait_for(injecting, 5)
    assert fault.workers == (1,)
    assert fault.description == "SIGSTOP worker 1, holding the lock with token 57, between its read and its write"
