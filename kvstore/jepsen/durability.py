"""A checker of lost acknowledged writes, on revisions.

kvstore applies a write at a revision that is the log index of its partition's Raft group, and a
committed entry keeps its index forever. So two acknowledged writes (or compare-and-sets) of one
partition can never share a revision: if they do, one of them is not in the log, and was lost
after being acknowledged; its index went to another entry. A write acknowledged with concern
LEADER, before replication, is lost that way when its leader fails first: the new leader's log
has other entries at those indexes. A read that returns revision r of a key whose acknowledged
write at r wrote another key or another value shows the same.

Unlike the linearizability checker, this one does not need a read to miss the lost write before
something overwrites it: the revision itself gives the loss away.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from kvstore.jepsen.checker import Validity
from kvstore.jepsen.history import EventType, Operation, Value, render_key

LOST_WRITES = "lost-writes"


@dataclass(frozen=True, slots=True)
class LostWrite:
    """An acknowledged write that cannot be in the log, and the operation that shows it."""

    lost: Operation
    evidence: Operation
    explanation: str


@dataclass(frozen=True, slots=True)
class LostWritesResult:
    validity: Validity
    writes_checked: int
    lost: tuple[LostWrite, ...] = ()
    reason: str = ""  # why the validity is UNKNOWN


def _written_value(op: Operation) -> Value:
    """What an ok write or cas left in its key."""
    if op.f == "cas":
        _, new = cast(tuple[Value, Value], op.argument)
        return new
    return op.argument


def check_lost_writes(operations: Sequence[Operation], partition_of: Callable[[Value], int]) -> LostWritesResult:
    """Every ok write and cas must hold its revision alone within its partition, and every ok
    read of a revision must agree with the write acknowledged at it (same key, same value).

    VALID proves that no two acknowledged writes claim one log position, and no read saw another
    entry where an acknowledged write claims to be. INVALID lists the writes that cannot be in
    the log, each with the operation that shows it. UNKNOWN: an ok operation has no revision.
    """
    writes: dict[tuple[int, int], Operation] = {}
    lost: list[LostWrite] = []
    checked = 0
    for op in operations:
        if op.outcome is not EventType.OK or op.f not in ("read", "write", "cas"):
            continue
        if op.revision is None:
            return LostWritesResult(Validity.UNKNOWN, checked, reason=f"cannot check: the {op.f} of process "
                                    f"{op.process} (line {op.invoke_line}) has no revision")  # fmt: skip
        if op.f == "read":
            continue
        checked += 1
        slot = (partition_of(op.key), op.revision)
        first = writes.setdefault(slot, op)
        if first is not op:
            lost.append(LostWrite(first, op, f"{first.describe()} of key {render_key(first.key)} (process "
                                  f"{first.process}) and {op.describe()} of key {render_key(op.key)} (process "
                                  f"{op.process}) were both acknowledged at revision {op.revision}: at most one "
                                  "is in the log"))  # fmt: skip
    for op in operations:
        if op.outcome is not EventType.OK or op.f != "read" or not op.revision:
            continue
        written = writes.get((partition_of(op.key), op.revision))
        if written is not None and (written.key != op.key or _written_value(written) != op.result):
            lost.append(LostWrite(written, op, f"a read of key {render_key(op.key)} (process {op.process}) "
                                  f"returned {op.result!r} at revision {op.revision}, where {written.describe()} "
                                  f"of key {render_key(written.key)} was acknowledged: it is not in the log"))  # fmt: skip
    validity = Validity.INVALID if lost else Validity.VALID
    return LostWritesResult(validity, checked, tuple(lost))
