"""The lock workload (``--workload lock``): why fencing matters, shown (docs/locks.md).

Workers, each an OS process of its own (``lockworker.py``), take one lock in turn with a lease of
a short TTL and, holding it, increment one of a few protected registers: a read, some work, a
write of the value read plus one, then the release. With fencing (the default) the read is a
transaction carrying the lock's fencing token and the write carries it too; with ``--fencing off``
neither does, the negative control. The client-pause nemesis stops a worker while it holds the
lock for longer than the TTL: the lock passes to the next worker, and when the stopped one wakes
up it finishes its critical section regardless.

The checkers (``check``):

* ``linearizable``: each register, read and written, is a linearizable register. It holds with
  fencing off too: the store does every read and write as asked; losing updates is the
  application's mistake, which the next two checkers catch.
* ``lost-updates``: each register's final value (read after healing) counts its increments: at
  least those acknowledged, at most those plus the ones of unknown outcome.
* ``overlapping-holders``: two critical sections overlap when, on one register, the store accepted
  an operation of the older holder (smaller token) after it had accepted one of the newer
  holder's: the old holder still acted on the register after the new one had started on it.
  Accepted operations are ordered by revision: a write at the revision it was applied at, a read
  just after the write it returned (``revision``, the version read; reads of one version are put
  in token order, which never makes an overlap up). Only operations with a known outcome count.
  The verdict also counts the reads and writes refused as stale: fencing at work.
* ``lease``: no lease expired before its TTL had passed since its last acknowledged keepalive
  (docs/locks.md's safety claim). For each section whose release found the lock already gone,
  the history bounds when the lease's expiry deleted the lock key from above: before the next
  holder (any later token) completed its acquire, since a waiter holds only once every key ahead
  of it is gone. The TTL ran from the keepalive's receipt, after its send. So ``next acquire -
  (last acknowledged send + TTL)`` must not be negative: it is the *margin*, at least the real one
  (by the time a wakeup and a keepalive take to travel, milliseconds), and the smallest is
  reported. A lease over which a clock fault struck is not judged: the claim assumes clocks that
  run within 1 % of real time, which the clock nemesis breaks on purpose.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, cast

from kvstore.client import Client, ReadConsistency
from kvstore.jepsen.checker import Validity
from kvstore.jepsen.history import Event, EventType, Operation, pair_operations
from kvstore.jepsen.models import RegisterModel
from kvstore.jepsen.nemesis import FaultInterval, NemesisKind
from kvstore.jepsen.sections import Ending, Section, critical_sections, is_refused_stale, render_sections
from kvstore.jepsen.workloads import (
    KEY_PREFIX,
    CheckOutcome,
    Completion,
    Invocation,
    linearizability_outcome,
    partitions_of,
    read_register,
)
from kvstore.names import lock_prefix
from kvstore.progress import Progress
from kvstore.ring import partition_for_key

LOCK_NAME = "jepsen-lock"
LOCK_TTL_S = 2
"""The TTL of the workers' leases: short, so that a paused holder loses the lock within a run."""
CLIENT_PAUSE_S = 1.5 * LOCK_TTL_S
"""The shortest a client pause lasts: long enough for the lease to expire and the lock to pass on."""
THINK_S = (0.1, 0.3)
"""The work a holder does between its read and its write: most of a critical section."""
_SHOWN = 20  # violations listed in results.json; the counts cover them all


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What a worker process (``lockworker.py``) is told, as JSON on its command line."""

    index: int
    workers: int
    endpoints: tuple[str, ...]
    lock: str
    registers: tuple[str, ...]
    fencing: bool
    ttl_s: int
    think_s: tuple[float, float]
    op_timeout_s: float
    seed: int
    origin_ns: int  # time.monotonic_ns() when the run started: the history's time 0
    deadline_ns: int  # time.monotonic_ns() after which no section starts

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerConfig:
        fields = json.loads(text)
        fields["endpoints"] = tuple(fields["endpoints"])
        fields["registers"] = tuple(fields["registers"])
        fields["think_s"] = tuple(fields["think_s"])
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class _Accepted:
    """An operation a register accepted, where it falls in the register's order, and its section."""

    position: tuple[int, int, int]  # (revision, 0 for a write / 1 for a read, token)
    op: Operation
    section: Section


class LockWorkload:
    name: ClassVar[str] = "lock"

    def __init__(self, key_count: int, workers: int, fencing: bool) -> None:
        self.registers = [f"{KEY_PREFIX}/lock/register/{index}" for index in range(key_count)]
        self.workers = workers
        self.fencing = fencing

    def target_partitions(self, partition_count: int) -> list[int]:
        lock_partition = partition_for_key(lock_prefix(LOCK_NAME.encode()), partition_count)
        return sorted({*partitions_of(self.registers, partition_count), lock_partition})

    async def setup(self, client: Client) -> None:
        return None  # every register starts absent: zero increments

    def worker_configs(
        self, endpoints: Sequence[str], seed: int, origin_ns: int, deadline_ns: int, op_timeout_s: float
    ) -> list[WorkerConfig]:
        """What each worker process is told (times on time.monotonic_ns(): ``origin_ns`` is the
        history's 0, and no section starts after ``deadline_ns``)."""
        # Each worker starts with a different seed node, so one paused node does not stall every connect.
        return [
            WorkerConfig(index, self.workers, (*endpoints[index % len(endpoints):], *endpoints[:index % len(endpoints)]),
                         LOCK_NAME, tuple(self.registers), self.fencing, LOCK_TTL_S, THINK_S, op_timeout_s, seed,
                         origin_ns, deadline_ns)  # fmt: skip
            for index in range(self.workers)
        ]

    async def apply(self, client: Client, invocation: Invocation) -> Completion:
        """The final reads (the workers do the rest)."""
        assert invocation.f == "read" and invocation.key is not None
        return await read_register(client, invocation.key, ReadConsistency.LINEARIZABLE)

    def final_invocations(self) -> list[Invocation]:
        return [Invocation("read", register, None) for register in self.registers]

    def check(
        self,
        events: Sequence[Event],
        check_timeout_s: float,
        progress: Progress,
        faults: Sequence[FaultInterval] = (),
    ) -> list[CheckOutcome]:
        operations = pair_operations(events)
        sections = critical_sections(operations, self.workers)
        register_ops = [op for op in operations if op.f in ("read", "write")]
        outcomes = [linearizability_outcome("linearizable", register_ops, RegisterModel(), check_timeout_s, progress)]
        progress.phase("check lost-updates")
        outcomes.append(self._lost_updates(register_ops, sections))
        progress.phase("check overlapping-holders")
        outcomes.append(self._overlapping_holders(sections, faults))
        progress.phase("check lease")
        outcomes.append(_lease(operations, sections, faults))
        return outcomes

    def _lost_updates(self, register_ops: Sequence[Operation], sections: Sequence[Section]) -> CheckOutcome:
        in_sections = {section.process for section in sections}
        per_register: dict[str, dict[str, Any]] = {}
        lost: list[str] = []
        for register in self.registers:
            writes = [op for op in register_ops if op.f == "write" and op.key == register]
            acknowledged = sum(1 for op in writes if op.outcome is EventType.OK)
            unknown = sum(1 for op in writes if op.outcome is EventType.INFO)
            finals = [
                op for op in register_ops
                if op.f == "read" and op.key == register and op.outcome is EventType.OK and op.process not in in_sections
            ]  # fmt: skip
            final = None if not finals else cast(int | None, finals[-1].result) or 0
            per_register[register] = {"acknowledged": acknowledged, "unknown": unknown, "final": final}
            if final is not None and not acknowledged <= final <= acknowledged + unknown:
                lost.append(register)
        details: dict[str, Any] = {"registers": per_register}
        if lost:
            parts = [
                f"{register} ends at {per_register[register]['final']} after {per_register[register]['acknowledged']} "
                "acknowledged increments" + _unknown(per_register[register]["unknown"])
                for register in lost
            ]
            return CheckOutcome("lost-updates", Validity.INVALID, f"{len(lost)} of {len(self.registers)} registers "
                                f"do not count their increments: {'; '.join(parts)}", details)  # fmt: skip
        if any(entry["final"] is None for entry in per_register.values()):
            return CheckOutcome("lost-updates", Validity.UNKNOWN, "a register's final read never succeeded", details)
        total = sum(entry["acknowledged"] for entry in per_register.values())
        unknown = sum(entry["unknown"] for entry in per_register.values())
        return CheckOutcome("lost-updates", Validity.VALID, f"every register's final value counts its {total} "
                            f"acknowledged increments{_unknown(unknown)}", details)  # fmt: skip

    def _overlapping_holders(self, sections: Sequence[Section], faults: Sequence[FaultInterval]) -> CheckOutcome:
        accepted: dict[object, list[_Accepted]] = {}
        for section in sections:
            for op in section.operations:
                if op.outcome is EventType.OK and op.revision is not None:
                    position = (op.revision, 0 if op.f == "write" else 1, section.token)
                    accepted.setdefault(op.key, []).append(_Accepted(position, op, section))
        overlaps: dict[tuple[int, int], tuple[_Accepted, _Accepted]] = {}  # (older, newer token) -> first seen
        for register_ops in accepted.values():
            newest: _Accepted | None = None
            for entry in sorted(register_ops, key=lambda entry: entry.position):
                if newest is not None and entry.section.token < newest.section.token:
                    overlaps.setdefault((entry.section.token, newest.section.token), (entry, newest))
                elif newest is None or entry.section.token > newest.section.token:
                    newest = entry
        refused = [op for section in sections for op in section.operations if is_refused_stale(op)]
        refused_counts = {f: sum(1 for op in refused if op.f == f) for f in ("read", "write")}
        lost = sum(1 for section in sections if section.ending is Ending.LOST)
        details: dict[str, Any] = {
            "sections": len(sections),
            "lost_to_lease_expiry": lost,
            "refused_as_stale": refused_counts,
            "overlaps": len(overlaps),
            "first_overlaps": [_describe_overlap(older, newer) for older, newer in list(overlaps.values())[:_SHOWN]],
        }
        refusals = (
            f"{refused_counts['write']} writes and {refused_counts['read']} reads of old holders refused as stale"
        )
        heading = f"{len(sections)} critical sections, {lost} lost to an expired lease; {refusals}"
        timeline = render_sections(
            sections, self.workers, faults,
            [(older.section, newer.section, _describe_overlap(older, newer)) for older, newer in overlaps.values()],
            f"{len(overlaps)} overlapping pairs; {heading}",
        )  # fmt: skip
        if overlaps:
            older, newer = next(iter(overlaps.values()))
            summary = f"{len(overlaps)} pairs of critical sections overlapped; first: {_describe_overlap(older, newer)}"
            return CheckOutcome("overlapping-holders", Validity.INVALID, summary, details, timeline)
        summary = f"no holder acted on a register after a newer holder had; {heading}"
        return CheckOutcome("overlapping-holders", Validity.VALID, summary, details, timeline)


def _unknown(count: int) -> str:
    return f" (+{count} of unknown outcome)" if count else ""


def _describe_overlap(older: _Accepted, newer: _Accepted) -> str:
    """``on jepsen/lock/register/0, worker 3 (token 99): write 18 after worker 1 (token 139): read → 24
    (history lines 83, 107)``"""
    return (
        f"on {older.op.key}, {older.section.label()}: {older.op.describe()} after {newer.section.label()}: "
        f"{newer.op.describe()} (history lines {older.op.invoke_line}, {newer.op.invoke_line})"
    )


def _lease(operations: Sequence[Operation], sections: Sequence[Section], faults: Sequence[FaultInterval]) -> CheckOutcome:
    keepalives: dict[object, list[Operation]] = {}
    for op in operations:
        if op.f == "keepalive" and op.outcome is EventType.OK:
            keepalives.setdefault(op.key, []).append(op)
    acquired = sorted((section.token, section.start) for section in sections)
    clock_faults = [fault for fault in faults if fault.nemesis is NemesisKind.CLOCK]
    margins: list[dict[str, Any]] = []
    excused = unjudged = 0
    for section in sections:
        if section.ending is not Ending.LOST:
            continue
        renewals = [op for op in keepalives.get(section.lease, []) if op.invoke_time is not None]
        later = [start for token, start in acquired if token > section.token]
        if not renewals or not later:
            unjudged += 1  # no keepalive recorded, or nobody took the lock after it
            continue
        last = max(renewals, key=lambda op: op.invoke_time or 0)
        sent, ttl, taken = last.invoke_time or 0, cast(int, last.argument), min(later)
        if any(fault.start < taken and (fault.end is None or fault.end > sent) for fault in clock_faults):
            excused += 1
            continue
        margins.append({
            "lease": section.lease, "worker": section.worker, "token": section.token, "ttl_s": ttl,
            "margin_ms": round((taken - sent - ttl * 1e9) / 1e6, 1),
            "last_keepalive_line": last.invoke_line,
        })  # fmt: skip
    margins.sort(key=lambda entry: entry["margin_ms"])
    details: dict[str, Any] = {
        "leases_judged": len(margins),
        "not_judged_clock_fault": excused,
        "not_judged_no_evidence": unjudged,
        "smallest_margins": margins[:_SHOWN],
    }
    early = [entry for entry in margins if entry["margin_ms"] < 0]
    if early:
        first = early[0]
        summary = (
            f"{len(early)} of {len(margins)} leases expired early; worst: lease {first['lease']} of worker "
            f"{first['worker']}, whose lock the next holder had {-first['margin_ms']:,.1f} ms before its "
            f"{first['ttl_s']} s TTL had passed since its last acknowledged keepalive"
        )
        return CheckOutcome("lease", Validity.INVALID, summary, details)
    details["smallest_margin_ms"] = margins[0]["margin_ms"] if margins else None
    skipped = "".join(
        f"; {count} not judged: {why}"
        for count, why in ((excused, "a clock fault struck during them"), (unjudged, "no later holder to judge by"))
        if count
    )
    if not margins:
        what = "no lease judged" if skipped else "no lock was lost to an expiring lease: nothing to judge"
        return CheckOutcome("lease", Validity.VALID, what + skipped, details)
    summary = (
        f"no lease expired before its TTL: {len(margins)} lost locks passed on at least "
        f"{margins[0]['margin_ms']:,.1f} ms after their TTL{skipped}"
    )
    return CheckOutcome("lease", Validity.VALID, summary, details)
