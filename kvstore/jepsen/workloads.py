"""Workloads: what the clients do during a run, how each operation's outcome is classified, and how
the recorded history is checked afterwards.

Outcomes follow the history format: ``ok``; ``fail`` only when the operation certainly had no
effect (a read that errored, a cas whose compare did not hold, a request refused as invalid before
anything was proposed); ``info`` when a write may or may not have happened (timeouts, unavailable
nodes: the client retries internally, so any error on a write leaves its fate unknown).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, cast

from kvstore.client import Client, KvError, ReadConsistency, ops
from kvstore.errors import ERRORS
from kvstore.jepsen import checker
from kvstore.jepsen.checker import Validity
from kvstore.jepsen.guarantees import SESSION, STALENESS, check_guarantee, count_anomalies
from kvstore.jepsen.history import Event, EventType, Operation, Value, pair_operations, render_key
from kvstore.jepsen.models import CasRegisterModel, Model, SetModel
from kvstore.jepsen.nemesis import FaultInterval
from kvstore.jepsen.timeline import render_anomaly_timeline, render_timeline
from kvstore.progress import Progress
from kvstore.ring import partition_for_key

KEY_PREFIX = "jepsen"
_COUNTER_CAS_ATTEMPTS = 20
_ANOMALIES_KEPT = 20  # in results.json; the count of each kind covers them all
_CONNECT_RETRY_S = 0.2


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """One checker's verdict on a run. ``details`` is JSON-ready; ``timeline_html`` draws a violation."""

    checker: str
    validity: Validity
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    timeline_html: str | None = None


@dataclass(frozen=True, slots=True)
class Invocation:
    f: str
    key: str | None
    value: Value


@dataclass(frozen=True, slots=True)
class Completion:
    """How an operation ended; ``revision`` and ``staleness_ms`` as the history format defines them."""

    type: EventType
    value: Value = None
    error: str | None = None
    revision: int | None = None
    staleness_ms: int | None = None


class Workload(Protocol):
    name: ClassVar[str]

    def target_partitions(self, partition_count: int) -> list[int]:
        """The partitions holding the workload's keys: those whose leaders are worth hitting."""
        ...

    async def setup(self, client: Client) -> None: ...

    async def apply(self, client: Client, invocation: Invocation) -> Completion: ...

    def final_invocations(self) -> list[Invocation]:
        """Reads to run once the faults are healed (through `apply`)."""
        ...

    def check(
        self,
        events: Sequence[Event],
        check_timeout_s: float,
        progress: Progress,
        faults: Sequence[FaultInterval] = (),
    ) -> list[CheckOutcome]:
        """The verdict of every checker of the workload on the history ``events`` (in time order),
        knowing when the nemeses' ``faults`` struck; each checker is a phase of ``progress``."""
        ...


class GeneratedWorkload(Workload, Protocol):
    """A workload whose clients are tasks of the harness, each applying one invocation after another."""

    def next_invocation(self, rng: random.Random) -> Invocation: ...


def write_outcome_of(error: KvError) -> Completion:
    """A write that raised: refused (`kvstore.errors.ERRORS` says it was not applied) means it
    did not happen; anything else (timeouts, unavailable, not leader after retries) may have."""
    outcome = EventType.INFO if ERRORS[error.code].may_be_applied else EventType.FAIL
    return Completion(outcome, error=describe_error(error))


def describe_error(error: Exception) -> str:
    """``StaleFencingTokenError: fencing token 3 is older than ...``: an error as histories record it."""
    return f"{type(error).__name__}: {error}"


async def _read_int(client: Client, key: str, consistency: ReadConsistency) -> int | None:
    kv = await client.get(key, consistency=consistency)
    return None if kv is None else int(kv.value)


async def read_register(client: Client, key: str, consistency: ReadConsistency) -> Completion:
    """A read of a register of small integers: its value (None: absent) and the revision of the
    version read (0: absent), with the staleness bound the server reported for a STALE read."""
    try:
        read = await client.get_result(key, consistency=consistency)
    except KvError as error:
        return Completion(EventType.FAIL, error=describe_error(error))
    return Completion(
        EventType.OK,
        None if read.kv is None else int(read.kv.value),
        revision=0 if read.kv is None else read.kv.mod_revision,
        staleness_ms=read.header.staleness_ms if consistency is ReadConsistency.STALE else None,
    )


def plain_client(endpoints: Sequence[str], timeout_s: float) -> Client:
    return Client(endpoints, timeout=timeout_s)


async def connect_client(endpoints: Sequence[str], timeout_s: float, deadline: float,
                         client_of: Callable[[Sequence[str], float], Client] = plain_client) -> Client | None:
    """A connected client (made by ``client_of``: in a secure cluster, signed in), retrying until
    ``deadline`` (monotonic seconds); None if none connected."""
    while time.monotonic() < deadline:
        client = client_of(endpoints, timeout_s)
        try:
            await client.connect()
            return client
        except KvError:
            await client.close()
            await asyncio.sleep(_CONNECT_RETRY_S)
    return None


def partitions_of(keys: Sequence[str], partition_count: int) -> list[int]:
    return sorted({partition_for_key(key.encode(), partition_count) for key in keys})


def linearizability_outcome(
    name: str, operations: Sequence[Operation], model: Model, timeout_s: float, progress: Progress
) -> CheckOutcome:
    """The linearizability checker's verdict on ``operations`` (per key) against ``model``, as
    the phase ``check NAME`` of ``progress``; a violation's timeline drawn."""
    progress.phase(f"check {name}", unit="keys")
    result = checker.check(operations, model, None, timeout=timeout_s, progress=progress)
    details: dict[str, Any] = {
        "model": model.name,
        "keys": result.keys_total,
        "keys_checked": result.keys_checked,
        "operations_checked": result.operations_checked,
        "elapsed_s": round(result.elapsed, 3),
    }
    if result.verdict is checker.Verdict.LINEARIZABLE:
        return CheckOutcome(name, Validity.VALID, "linearizable", details)
    if result.verdict is checker.Verdict.UNKNOWN:
        return CheckOutcome(name, Validity.UNKNOWN, f"checker timed out after {timeout_s:g}s", details)
    if result.key is not None:
        details["key"] = render_key(result.key)
    culprit = result.culprit
    if culprit is not None:
        details["culprit"] = {
            "process": culprit.process,
            "operation": culprit.describe(),
            "history_lines": [culprit.invoke_line, culprit.complete_line],
        }
        details["window"] = [f"process {op.process}: {op.describe()} ({op.outcome.value})" for op in result.window]
    where = "" if result.key is None else f" on key {render_key(result.key)}"
    return CheckOutcome(
        name,
        Validity.INVALID,
        f"NOT linearizable{where}" + ("" if culprit is None else f": {culprit.describe()} by process {culprit.process}"),
        details,
        render_timeline(result, operations, model),
    )


def _guarantee_outcome(
    name: str, operations: Sequence[Operation], timeout_s: float, progress: Progress
) -> CheckOutcome:
    progress.phase(f"check {name}", unit="keys")
    result = check_guarantee(name, operations, timeout=timeout_s, progress=progress)
    details: dict[str, Any] = {
        "keys": result.keys_total,
        "keys_checked": result.keys_checked,
        "operations_checked": result.operations_checked,
        "elapsed_s": round(result.elapsed, 3),
    }
    if result.validity is Validity.UNKNOWN:
        return CheckOutcome(name, Validity.UNKNOWN, result.reason, details)
    if result.validity is Validity.VALID:
        summary = (
            "read-your-writes, monotonic reads and monotonic writes hold for every process"
            if name == SESSION
            else "every bounded read within its bound"
        )
        return CheckOutcome(name, Validity.VALID, summary, details)
    details["anomalies"] = dict(Counter(anomaly.kind.value for anomaly in result.anomalies))
    details["first_anomalies"] = [
        {
            "kind": anomaly.kind.value,
            "key": render_key(anomaly.key),
            "explanation": anomaly.explanation,
            "excess_ms": round(anomaly.excess_ms, 3),
            "history_lines": [anomaly.culprit.invoke_line, anomaly.culprit.complete_line],
        }
        for anomaly in result.anomalies[:_ANOMALIES_KEPT]
    ]
    first = result.anomalies[0]
    if name == STALENESS:
        details["worst_excess_ms"] = round(first.excess_ms, 3)
        headline = f"worst {first.kind} by {first.excess_ms:,.1f} ms"
    else:
        headline = f"first {first.kind}"
    summary = f"{count_anomalies(result.anomalies)}; {headline} on key {render_key(first.key)}"
    return CheckOutcome(name, Validity.INVALID, summary, details, render_anomaly_timeline(first, operations, name))


class RegisterWorkload:
    """Reads, writes and compare-and-sets of small integers over a few keys; each key must be a
    linearizable cas-register. Every ok operation records its revision, so the session guarantees
    are checked too, and reads at STALE consistency record the staleness the server reported, so
    their bound is checked."""

    name: ClassVar[str] = "register"

    def __init__(self, key_count: int, read_consistency: ReadConsistency) -> None:
        self._keys = [f"{KEY_PREFIX}/register/{index}" for index in range(key_count)]
        self._consistency = read_consistency

    def target_partitions(self, partition_count: int) -> list[int]:
        return partitions_of(self._keys, partition_count)

    async def setup(self, client: Client) -> None:
        return None  # every key starts absent, which the model reads as null

    def next_invocation(self, rng: random.Random) -> Invocation:
        key = rng.choice(self._keys)
        f = rng.choices(("read", "write", "cas"), weights=(2, 1, 1))[0]
        if f == "read":
            return Invocation(f, key, None)
        if f == "write":
            return Invocation(f, key, rng.randrange(5))
        return Invocation(f, key, (rng.randrange(5), rng.randrange(5)))

    async def apply(self, client: Client, invocation: Invocation) -> Completion:
        key = invocation.key
        assert key is not None
        if invocation.f == "read":
            return await read_register(client, key, self._consistency)
        try:
            if invocation.f == "write":
                written = await client.put(key, str(invocation.value))
                return Completion(EventType.OK, invocation.value, revision=written.header.revision)
            expected, new = cast(tuple[Value, Value], invocation.value)
            result = await client.txn([ops.value(key) == str(expected)], [ops.put(key, str(new))])
        except KvError as error:
            return write_outcome_of(error)
        if result.succeeded:
            return Completion(EventType.OK, invocation.value, revision=result.header.revision)
        return Completion(EventType.FAIL, invocation.value, error="compare failed")

    def final_invocations(self) -> list[Invocation]:
        return [Invocation("read", key, None) for key in self._keys]

    def check(
        self,
        events: Sequence[Event],
        check_timeout_s: float,
        progress: Progress,
        faults: Sequence[FaultInterval] = (),  # these checkers do not depend on when faults struck
    ) -> list[CheckOutcome]:
        operations = pair_operations(events)
        outcomes = [
            linearizability_outcome("linearizable", operations, CasRegisterModel(), check_timeout_s, progress),
            _guarantee_outcome(SESSION, operations, check_timeout_s, progress),
        ]
        if self._consistency is ReadConsistency.STALE:
            outcomes.append(_guarantee_outcome(STALENESS, operations, check_timeout_s, progress))
        return outcomes


class SetWorkload:
    """Adds of unique integers, each as its own key under a prefix (so they spread over all
    partitions), then one linearizable read of the whole set once faults are healed. Reports
    acknowledged adds that were lost and elements that were never added."""

    name: ClassVar[str] = "set"

    def __init__(self, read_consistency: ReadConsistency) -> None:
        self._prefix = f"{KEY_PREFIX}/set/"
        self._consistency = read_consistency
        self._elements = itertools.count()

    def target_partitions(self, partition_count: int) -> list[int]:
        return list(range(partition_count))  # elements spread over every partition

    def _element_key(self, element: int) -> str:
        return f"{self._prefix}{element:08d}"

    async def setup(self, client: Client) -> None:
        return None

    def next_invocation(self, rng: random.Random) -> Invocation:
        return Invocation("add", None, next(self._elements))

    async def apply(self, client: Client, invocation: Invocation) -> Completion:
        if invocation.f == "read":
            try:
                found = await client.scan(prefix=self._prefix, keys_only=True, consistency=self._consistency)
            except KvError as error:
                return Completion(EventType.FAIL, error=describe_error(error))
            return Completion(EventType.OK, tuple(sorted(int(kv.key[len(self._prefix) :]) for kv in found)))
        element = invocation.value
        assert isinstance(element, int)
        try:
            await client.put(self._element_key(element), "1")
        except KvError as error:
            return write_outcome_of(error)
        return Completion(EventType.OK, element)

    def final_invocations(self) -> list[Invocation]:
        # A scan reads partition by partition, so only a read with no add running is a snapshot
        # of the set: it runs after the load has stopped.
        return [Invocation("read", None, None)]

    def check(
        self,
        events: Sequence[Event],
        check_timeout_s: float,
        progress: Progress,
        faults: Sequence[FaultInterval] = (),  # these checkers do not depend on when faults struck
    ) -> list[CheckOutcome]:
        progress.phase("check set")
        operations = pair_operations(events)
        final_reads = [op for op in operations if op.f == "read" and op.outcome is EventType.OK]
        if not final_reads:
            return [CheckOutcome("set", Validity.UNKNOWN, "the final read never succeeded")]
        read = set(cast(Iterable[Value], final_reads[-1].result or ()))
        adds = [op for op in operations if op.f == "add"]
        acknowledged = {op.argument for op in adds if op.outcome is EventType.OK}
        attempted = {op.argument for op in adds if op.outcome is not EventType.FAIL}
        indeterminate = {op.argument for op in adds if op.outcome is EventType.INFO}
        # Elements are ints (`next_invocation`), so they sort.
        lost = sorted(cast(set[int], acknowledged - read))
        unexpected = sorted(cast(set[int], read - attempted))
        details: dict[str, Any] = {
            "acknowledged": len(acknowledged),
            "indeterminate": len(indeterminate),
            "read": len(read),
            "recovered_indeterminate": len(indeterminate & read),
            "lost": lost,
            "unexpected": unexpected,
        }
        valid = not lost and not unexpected
        summary = (
            f"{len(acknowledged)} acknowledged, all present"
            if valid
            else f"{len(lost)} acknowledged adds lost, {len(unexpected)} unexpected elements"
        )
        outcomes = [CheckOutcome("set", Validity.VALID if valid else Validity.INVALID, summary, details)]
        # An add of unknown outcome whose element the final read lacks may take effect after that
        # read, which is the same as never: dropping it keeps the search from trying every subset.
        kept = [
            op
            for op in operations
            if not (op.f == "add" and op.outcome is EventType.INFO and op.argument not in read)
        ]
        outcomes.append(linearizability_outcome("set-model", kept, SetModel(), check_timeout_s, progress))
        return outcomes


class CounterWorkload:
    """Increments of one counter by read + compare-and-set retry loops, and reads. A lost update
    shows as a final value below the acknowledged increments; a duplicated one as a value above
    acknowledged + indeterminate. Every read must also lie between the increments acknowledged
    before it started and those invoked before it ended."""

    name: ClassVar[str] = "counter"

    def __init__(self, read_consistency: ReadConsistency) -> None:
        self._key = f"{KEY_PREFIX}/counter"
        self._consistency = read_consistency

    def target_partitions(self, partition_count: int) -> list[int]:
        return partitions_of([self._key], partition_count)

    async def setup(self, client: Client) -> None:
        await client.put(self._key, "0")

    def next_invocation(self, rng: random.Random) -> Invocation:
        if rng.random() < 0.3:
            return Invocation("read", self._key, None)
        return Invocation("add", self._key, 1)

    async def apply(self, client: Client, invocation: Invocation) -> Completion:
        if invocation.f == "read":
            try:
                return Completion(EventType.OK, await _read_int(client, self._key, self._consistency))
            except KvError as error:
                return Completion(EventType.FAIL, error=describe_error(error))
        for _ in range(_COUNTER_CAS_ATTEMPTS):
            try:
                # The read that the cas compares against must be current, whatever reads use.
                current = await _read_int(client, self._key, ReadConsistency.LINEARIZABLE)
            except KvError as error:
                # Every earlier cas attempt of this operation was refused: nothing happened.
                return Completion(EventType.FAIL, error=describe_error(error))
            current = current or 0
            try:
                result = await client.txn(
                    [ops.value(self._key) == str(current)], [ops.put(self._key, str(current + 1))]
                )
            except KvError as error:
                return write_outcome_of(error)
            if result.succeeded:
                return Completion(EventType.OK, 1)
        return Completion(EventType.FAIL, error=f"compare failed {_COUNTER_CAS_ATTEMPTS} times")

    def final_invocations(self) -> list[Invocation]:
        return [Invocation("read", self._key, None)]

    def check(
        self,
        events: Sequence[Event],
        check_timeout_s: float,
        progress: Progress,
        faults: Sequence[FaultInterval] = (),  # these checkers do not depend on when faults struck
    ) -> list[CheckOutcome]:
        progress.phase("check counter")
        operations = pair_operations(events)
        adds = [op for op in operations if op.f == "add"]
        reads = [op for op in operations if op.f == "read" and op.outcome is EventType.OK]
        if not reads:
            return [CheckOutcome("counter", Validity.UNKNOWN, "no read ever succeeded")]
        bad_reads = []
        for read in reads:
            assert read.complete_index is not None
            floor = sum(
                1
                for op in adds
                if op.outcome is EventType.OK and op.complete_index is not None and op.complete_index < read.invoke_index
            )
            ceiling = sum(
                1 for op in adds if op.outcome is not EventType.FAIL and op.invoke_index < read.complete_index
            )
            value = read.result if isinstance(read.result, int) else 0
            if not floor <= value <= ceiling:
                bad_reads.append(
                    {"process": read.process, "value": value, "at_least": floor, "at_most": ceiling,
                     "history_lines": [read.invoke_line, read.complete_line]}
                )  # fmt: skip
        acknowledged = sum(1 for op in adds if op.outcome is EventType.OK)
        indeterminate = sum(1 for op in adds if op.outcome is EventType.INFO)
        final = reads[-1].result if isinstance(reads[-1].result, int) else 0
        details: dict[str, Any] = {
            "final_value": final,
            "acknowledged": acknowledged,
            "indeterminate": indeterminate,
            "reads": len(reads),
            "reads_out_of_bounds": bad_reads[:20],
            "reads_out_of_bounds_count": len(bad_reads),
        }
        if bad_reads:
            worst = bad_reads[0]
            summary = (
                f"{len(bad_reads)} reads out of bounds, first read {worst['value']} "
                f"outside [{worst['at_least']}, {worst['at_most']}]"
            )
            return [CheckOutcome("counter", Validity.INVALID, summary, details)]
        return [
            CheckOutcome(
                "counter",
                Validity.VALID,
                f"final {final} within [{acknowledged}, {acknowledged + indeterminate}]",
                details,
            )
        ]
