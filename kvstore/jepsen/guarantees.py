"""Checkers of guarantees weaker than linearizability, decided on revisions: the session guarantees
a client process is promised, and the staleness bound of bounded-staleness (STALE) reads.

Both need what the linearizability checker does without: an order on the versions of a key. kvstore
has one: a write is applied at a revision (the Raft log index of its partition), a later write to
the key at a larger one, and a read returns the version it saw with that version's revision (its
``mod_revision``). Histories carry these in the optional ``revision`` field (see ``history.py``);
without them the checkers say they cannot check (UNKNOWN) rather than guess from values, which
repeat.

The operations are those of the register models: ``read``, ``write`` and ``cas``. Keys are never
deleted, so revision 0 (a read of an absent key) is older than every write. ``fail`` operations
had no effect and are ignored; so are ``info`` ones, which say nothing about revisions (and are the
last operation of their process).
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from kvstore.jepsen.checker import Validity, report_keys_checked
from kvstore.jepsen.history import EventType, HistoryError, Operation, Value, render_key
from kvstore.progress import SILENT, Progress

SESSION = "session"
STALENESS = "staleness"
GUARANTEE_NAMES: tuple[str, ...] = (SESSION, STALENESS)

_FUNCTIONS = ("read", "write", "cas")
_NS_PER_MS = 1_000_000
_NS_PER_S = 1e9


class AnomalyKind(StrEnum):
    READ_YOUR_WRITES = "read-your-writes"
    MONOTONIC_READS = "monotonic-reads"
    MONOTONIC_WRITES = "monotonic-writes"
    STALE_READ = "stale-read"  # older than its bound allows
    FUTURE_READ = "future-read"  # a version written only after the read completed
    BOUND_ABOVE_REQUEST = "bound-above-request"  # the server reported more staleness than was asked for


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One broken guarantee: the operation that broke it and the operations that show it."""

    kind: AnomalyKind
    key: Value
    culprit: Operation
    window: tuple[Operation, ...]  # the culprit and the operations it contradicts, in invoke order
    explanation: str
    excess_ms: float = 0.0  # staleness anomalies: how far beyond the bound


@dataclass(frozen=True, slots=True)
class GuaranteeResult:
    checker: str
    validity: Validity
    elapsed: float
    keys_total: int
    keys_checked: int
    operations_checked: int
    # Most telling first: for the session checker in history order, for the staleness checker the
    # largest excess first (the worst one is anomalies[0]).
    anomalies: tuple[Anomaly, ...] = ()
    reason: str = ""  # why the validity is UNKNOWN


def count_anomalies(anomalies: Sequence[Anomaly]) -> str:
    """``3 anomalies: read-your-writes 2, monotonic-reads 1``"""
    counts = Counter(anomaly.kind.value for anomaly in anomalies)
    noun = "anomaly" if len(anomalies) == 1 else "anomalies"
    return f"{len(anomalies)} {noun}: {', '.join(f'{kind} {count}' for kind, count in counts.items())}"


@dataclass(slots=True)
class _Run:
    """What both checkers do around their per-key rule: the clock, progress, the result."""

    checker: str
    by_key: dict[Value, list[Operation]]
    timeout: float | None
    clock: Callable[[], float]
    progress: Progress
    started: float = 0.0
    keys_checked: int = 0
    operations_checked: int = 0

    def begin(self) -> None:
        self.started = self.clock()
        report_keys_checked(self.progress, 0, len(self.by_key), 0)

    def check_keys(
        self, rule: Callable[[Value, list[Operation]], list[Anomaly]], telling: Callable[[Anomaly], float]
    ) -> GuaranteeResult:
        """Apply ``rule`` to each key's operations until the time runs out; the anomalies found,
        sorted by ``telling`` (smallest first), decide the verdict."""
        anomalies: list[Anomaly] = []
        for key, key_operations in self.by_key.items():
            if self.timeout is not None and self.clock() - self.started >= self.timeout:
                return self.result(Validity.UNKNOWN, reason=f"timed out after {self.timeout:g}s")
            anomalies += rule(key, key_operations)
            self.keys_checked += 1
            self.operations_checked += len(key_operations)
            report_keys_checked(self.progress, self.keys_checked, len(self.by_key), self.operations_checked)
        anomalies.sort(key=telling)
        return self.result(Validity.INVALID if anomalies else Validity.VALID, anomalies)

    def result(self, validity: Validity, anomalies: Iterable[Anomaly] = (), reason: str = "") -> GuaranteeResult:
        return GuaranteeResult(
            checker=self.checker,
            validity=validity,
            elapsed=self.clock() - self.started,
            keys_total=len(self.by_key),
            keys_checked=self.keys_checked,
            operations_checked=self.operations_checked,
            anomalies=tuple(anomalies),
            reason=reason,
        )


def _effective_by_key(operations: Sequence[Operation]) -> dict[Value, list[Operation]]:
    """The operations that may have had an effect, per key in invoke order; HistoryError for an
    operation outside the register models."""
    by_key: dict[Value, list[Operation]] = {}
    for op in operations:
        if op.f not in _FUNCTIONS:
            raise HistoryError(
                op.invoke_line,
                f"operation {op.f!r} cannot be checked on revisions (expected {', '.join(_FUNCTIONS)})",
            )
        if op.outcome is not EventType.FAIL:
            by_key.setdefault(op.key, []).append(op)
    return by_key


def _without_revision(operations: Iterable[Operation]) -> Operation | None:
    return next((op for op in operations if op.outcome is EventType.OK and op.revision is None), None)


def _lines(op: Operation) -> str:
    return f"lines {op.invoke_line}-{op.complete_line if op.complete_line is not None else '?'}"


def _in_invoke_order(*operations: Operation) -> tuple[Operation, ...]:
    return tuple(sorted({op.id: op for op in operations}.values(), key=lambda op: op.invoke_index))


# ---- session guarantees ---------------------------------------------------------------------------


def check_session(
    operations: Sequence[Operation],
    *,
    timeout: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    progress: Progress = SILENT,
) -> GuaranteeResult:
    """Check the session guarantees of every process, key by key, on revisions.

    For each process p and key k, over p's ``ok`` operations on k in the order p ran them (a
    process runs one operation at a time, so its invoke order is its real-time order):

    * read-your-writes: a read returns a revision at least that of every write (or cas) p made to
      k before it;
    * monotonic reads: a read returns a revision at least that of every read p made of k before it;
    * monotonic writes: each write of p to k has a larger revision than p's earlier writes to k,
      i.e. they took effect in the order p issued them.

    VALID proves, given that revisions order the versions of a key, that no process ever saw a
    version of a key older than one it had already written or read, and that each process's writes
    to a key took effect in its own order. It proves nothing across processes (that is what
    linearizability adds) and nothing about operations of unknown outcome. INVALID lists every
    anomaly, first in history order first, each with the earlier operation of the same process it
    contradicts. UNKNOWN: an ``ok`` operation carries no revision, or ``timeout`` (seconds of
    ``clock``) ran out. Progress: keys checked of the total, via ``progress.update``.
    """
    run = _Run(SESSION, _effective_by_key(operations), timeout, clock, progress)
    run.begin()
    missing = _without_revision(op for ops in run.by_key.values() for op in ops)
    if missing is not None:
        return run.result(Validity.UNKNOWN, reason=_no_revision(missing))
    return run.check_keys(_session_anomalies, telling=lambda anomaly: anomaly.culprit.complete_index or 0)


def _no_revision(op: Operation) -> str:
    return (
        f"cannot check: the {op.f} of process {op.process} ({_lines(op)}) has no revision "
        "(the history does not record revisions)"
    )


@dataclass(slots=True)
class _SessionFloor:
    """What one process has seen of one key so far: its latest write and its newest read."""

    write: Operation | None = None
    read: Operation | None = None


def _session_anomalies(key: Value, key_operations: list[Operation]) -> list[Anomaly]:
    floors: dict[int, _SessionFloor] = {}
    anomalies: list[Anomaly] = []
    for op in key_operations:
        if op.outcome is not EventType.OK:
            continue
        floor = floors.setdefault(op.process, _SessionFloor())
        revision = op.revision or 0
        if op.f != "read":
            if floor.write is not None and revision <= (floor.write.revision or 0):
                what = (
                    f"{op.describe()} took effect at revision {revision}, not after its earlier "
                    f"{floor.write.describe()} at revision {floor.write.revision}"
                )
                anomalies.append(_session_anomaly(AnomalyKind.MONOTONIC_WRITES, key, op, floor.write, what))
            floor.write = op
            continue
        if floor.write is not None and revision < (floor.write.revision or 0):
            what = (
                f"read revision {revision} after its own {floor.write.describe()} was applied at "
                f"revision {floor.write.revision}"
            )
            anomalies.append(_session_anomaly(AnomalyKind.READ_YOUR_WRITES, key, op, floor.write, what))
        elif floor.read is not None and revision < (floor.read.revision or 0):
            what = f"read revision {revision} after it had read revision {floor.read.revision}"
            anomalies.append(_session_anomaly(AnomalyKind.MONOTONIC_READS, key, op, floor.read, what))
        if floor.read is None or revision > (floor.read.revision or 0):
            floor.read = op
    return anomalies


def _session_anomaly(kind: AnomalyKind, key: Value, culprit: Operation, earlier: Operation, what: str) -> Anomaly:
    return Anomaly(
        kind=kind,
        key=key,
        culprit=culprit,
        window=_in_invoke_order(earlier, culprit),
        explanation=f"{kind}: process {culprit.process} {what} (key {render_key(key)}, {_lines(culprit)})",
    )


# ---- bounded staleness ----------------------------------------------------------------------------


def _staleness_bound_ms(op: Operation) -> int | None:
    """The bound a read is held to: the staleness the server reported, or the one asked for when
    that is smaller (or the server reported none); None for a read without a bound."""
    bounds = [bound for bound in (op.staleness_ms, op.max_staleness_ms) if bound is not None]
    return min(bounds) if bounds else None


def _is_bounded_read(op: Operation) -> bool:
    return op.f == "read" and op.outcome is EventType.OK and _staleness_bound_ms(op) is not None


def check_staleness(
    operations: Sequence[Operation],
    *,
    timeout: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    progress: Progress = SILENT,
) -> GuaranteeResult:
    """Check that every read carrying a staleness bound returned a value no older than it allows.

    A read's bound B (ms) is the smaller of the staleness its server reported (``staleness_ms``)
    and the staleness its client asked for (``max_staleness_ms``), whichever it carries; reads
    with neither are not checked. The version a read returned (revision r) is *overwritten* at the
    earliest completion time of an ``ok`` write or cas to the key with a revision above r: from
    then on a newer version certainly existed. A read invoked at t_i and completed at t_c is within
    its bound when its version could have been current at some instant of [t_i - B, t_c]:

    * stale-read: violated when the version was overwritten at or before t_i - B; the excess is
      (t_i - B) - overwritten;
    * future-read: violated when the ``ok`` write of revision r (if the history has it) was invoked
      after t_c; the excess is that gap;
    * bound-above-request: violated when the server reported a staleness above the one asked for
      (it should have redirected or refused the read); the excess is the difference.

    Times are the history's ``time`` fields and must come from one clock. VALID proves, given that
    revisions order versions, that no bounded read saw a version older than its bound by any
    amount. INVALID lists every anomaly, the largest excess first. UNKNOWN: no read carries a
    bound, a bounded read or an ``ok`` write of its key lacks a revision or a time, or ``timeout``
    ran out. Progress: keys checked of the total, via ``progress.update``.
    """
    # Only keys with a bounded read have anything to check.
    by_key = {
        key: key_operations
        for key, key_operations in _effective_by_key(operations).items()
        if any(_is_bounded_read(op) for op in key_operations)
    }
    run = _Run(STALENESS, by_key, timeout, clock, progress)
    run.begin()
    if not run.by_key:
        return run.result(
            Validity.UNKNOWN, reason="cannot check: no read carries a staleness bound (staleness_ms or max_staleness_ms)"
        )
    needed = [op for ops in run.by_key.values() for op in ops if _is_bounded_read(op) or op.f != "read"]
    missing = _without_revision(needed)
    if missing is not None:
        return run.result(Validity.UNKNOWN, reason=_no_revision(missing))
    untimed = next(
        (op for op in needed if op.outcome is EventType.OK and (op.invoke_time is None or op.complete_time is None)),
        None,
    )
    if untimed is not None:
        return run.result(
            Validity.UNKNOWN,
            reason=f"cannot check: the {untimed.f} of process {untimed.process} ({_lines(untimed)}) has no time",
        )
    return run.check_keys(_staleness_anomalies, telling=lambda anomaly: -anomaly.excess_ms)


def _staleness_anomalies(key: Value, key_operations: list[Operation]) -> list[Anomaly]:
    writes = sorted(
        (op for op in key_operations if op.f != "read" and op.outcome is EventType.OK),
        key=lambda op: op.revision or 0,
    )
    revisions = [op.revision or 0 for op in writes]
    written_at = {op.revision: op for op in writes}
    # first_overwrite[i]: of writes[i:] (revisions from revisions[i] up), the one that completed first.
    first_overwrite = writes[:]
    for index in range(len(writes) - 2, -1, -1):
        if _completed(first_overwrite[index + 1]) < _completed(writes[index]):
            first_overwrite[index] = first_overwrite[index + 1]
    anomalies: list[Anomaly] = []
    for read in (op for op in key_operations if _is_bounded_read(op)):
        revision = read.revision or 0
        later = bisect.bisect_right(revisions, revision)
        overwrite = first_overwrite[later] if later < len(writes) else None
        anomalies += _bounded_read_anomalies(key, read, written_at.get(revision), overwrite)
    return anomalies


def _completed(op: Operation) -> int:
    assert op.complete_time is not None  # checked before the per-key rules run
    return op.complete_time


def _bounded_read_anomalies(
    key: Value, read: Operation, source: Operation | None, overwrite: Operation | None
) -> list[Anomaly]:
    """The anomalies of one bounded read, given the ok write of the version it returned (when the
    history has it) and the first-completing ok write of a newer version (when there is one)."""
    bound = _staleness_bound_ms(read)
    assert bound is not None and read.invoke_time is not None
    where = f"key {render_key(key)}, process {read.process}, {_lines(read)}"
    anomalies: list[Anomaly] = []
    if read.staleness_ms is not None and read.max_staleness_ms is not None and read.staleness_ms > read.max_staleness_ms:
        anomalies.append(Anomaly(
            AnomalyKind.BOUND_ABOVE_REQUEST, key, read, (read,),
            f"{AnomalyKind.BOUND_ABOVE_REQUEST}: the server reported {read.staleness_ms} ms of staleness for a "
            f"read that asked for at most {read.max_staleness_ms} ms ({where})",
            float(read.staleness_ms - read.max_staleness_ms),
        ))  # fmt: skip
    oldest_allowed = read.invoke_time - bound * _NS_PER_MS
    if overwrite is not None and _completed(overwrite) <= oldest_allowed:
        excess_ms = (oldest_allowed - _completed(overwrite)) / _NS_PER_MS
        anomalies.append(Anomaly(
            AnomalyKind.STALE_READ, key, read,
            _in_invoke_order(read, overwrite, *(() if source is None else (source,))),
            f"{AnomalyKind.STALE_READ}: read revision {read.revision or 0}, which {overwrite.describe()} "
            f"(revision {overwrite.revision}) had overwritten by {_completed(overwrite) / _NS_PER_S:.3f}s, "
            f"{excess_ms:,.1f} ms before the oldest time its {bound} ms bound allows ({where})",
            excess_ms,
        ))  # fmt: skip
    if source is not None and source.invoke_time is not None and source.invoke_time > _completed(read):
        excess_ms = (source.invoke_time - _completed(read)) / _NS_PER_MS
        anomalies.append(Anomaly(
            AnomalyKind.FUTURE_READ, key, read, _in_invoke_order(read, source),
            f"{AnomalyKind.FUTURE_READ}: read revision {read.revision}, written by {source.describe()} "
            f"invoked {excess_ms:,.1f} ms after the read completed ({where})",
            excess_ms,
        ))  # fmt: skip
    return anomalies


def check_guarantee(
    name: str,
    operations: Sequence[Operation],
    *,
    timeout: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    progress: Progress = SILENT,
) -> GuaranteeResult:
    """The checker called ``name`` (one of GUARANTEE_NAMES); ValueError otherwise."""
    if name == SESSION:
        return check_session(operations, timeout=timeout, clock=clock, progress=progress)
    if name == STALENESS:
        return check_staleness(operations, timeout=timeout, clock=clock, progress=progress)
    raise ValueError(f"unknown checker {name!r} (expected one of {', '.join(GUARANTEE_NAMES)})")
