"""The replicated KV state machine the simulator runs on Raft, and the check of what clients saw.

Operations are JSON-encoded log entries `{"id": op_id, "f": "put"|"cas", "k": key, ...}`. The
committed log, replayed through a plain dict (the sequential model), is the linearization
order of the writes; client results and reads must agree with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kvstore.raft import ConfChange, Entry, EntryType


def encode_op(op_id: int, f: str, key: str, value: int | None = None, expected: int | None = None) -> bytes:
    return json.dumps({"id": op_id, "f": f, "k": key, "v": value, "e": expected}, sort_keys=True).encode()


@dataclass(frozen=True, slots=True)
class AppliedOp:
    op_id: int
    index: int
    result: object


class KVStateMachine:
    """Applies committed entries deterministically; remembers each write's result by op id."""

    def __init__(self) -> None:
        self.kv: dict[str, int] = {}
        self.applied_index = 0

    def apply(self, entry: Entry) -> AppliedOp | ConfChange | None:
        self.applied_index = entry.index
        if entry.type is EntryType.CONF_CHANGE:
            return ConfChange.decode(entry.data)
        if not entry.data:
            return None
        op = json.loads(entry.data)
        return AppliedOp(op["id"], entry.index, apply_op(self.kv, op))

    def snapshot_data(self) -> bytes:
        return json.dumps({"kv": self.kv, "applied": self.applied_index}, sort_keys=True).encode()

    def restore(self, data: bytes, index: int) -> None:
        state = json.loads(data) if data else {"kv": {}}
        self.kv = dict(state["kv"])
        self.applied_index = index


def apply_op(kv: dict[str, int], op: dict[str, Any]) -> object:
    key = str(op["k"])
    if op["f"] == "put":
        kv[key] = op["v"]
        return None
    if op["f"] == "cas":
        if kv.get(key) == op["e"]:
            kv[key] = op["v"]
            return True
        return False
    raise ValueError(f"unknown op {op['f']}")


@dataclass(slots=True)
class ClientOp:
    """One client operation as the client saw it. Times are global event sequence numbers."""

    op_id: int
    process: int
    f: str
    key: str
    value: int | None
    expected: int | None
    invoke_time: int
    complete_time: int | None = None
    outcome: str = "pending"  # ok | fail | info
    result: object = None
    served_index: int = 0  # reads: the applied index the read was served at
    deadline_step: int = 0  # the simulated client gives up (outcome unknown) after this step
    invoke_round: int = 0  # real time, in network rounds
    complete_round: int | None = None
    bound_rounds: float = 0.0  # STALE reads: the staleness bound the node reported, in rounds


def check_history(ops: list[ClientOp], committed: dict[int, Entry]) -> list[str]:
    """Check client results against the committed log replayed sequentially.

    * every acknowledged write is in the committed log (no lost acknowledged write);
    * an acknowledged write's result equals the model's result at its index;
    * real-time order: an operation invoked after write w completed is ordered after w
      (a later write has a larger index; a read is served at an index >= w's index);
    * a read returns the model's value at the index it was served at.
    """
    errors: list[str] = []
    index_of: dict[int, int] = {}
    model_results: dict[int, object] = {}
    kv: dict[str, int] = {}
    # Values of each key as of every index, to check reads served at any index.
    history_of_key: dict[str, list[tuple[int, int | None]]] = {}
    for index in sorted(committed):
        write = _decode_write(committed[index])
        if write is None:
            continue
        if write["id"] in index_of:
            errors.append(f"op {write['id']} applied twice (indexes {index_of[write['id']]} and {index})")
            continue
        index_of[write["id"]] = index
        model_results[write["id"]] = apply_op(kv, write)
        history_of_key.setdefault(str(write["k"]), []).append((index, kv.get(str(write["k"]))))

    def value_at(key: str, index: int) -> int | None:
        value = None
        for at, v in history_of_key.get(key, []):
            if at > index:
                break
            value = v
        return value

    writes = [op for op in ops if op.f in ("put", "cas")]
    for op in writes:
        if op.outcome == "ok":
            if op.op_id not in index_of:
                errors.append(f"acknowledged write {op.op_id} ({op.f} {op.key}) is not in the committed log")
            elif op.result != model_results[op.op_id]:
                errors.append(f"write {op.op_id}: client saw {op.result!r}, model says {model_results[op.op_id]!r}")
        elif op.outcome == "fail" and op.op_id in index_of:
            errors.append(f"write {op.op_id} reported failed but is in the committed log")

    # Sweep in invocation order, tracking the largest index among writes completed so far.
    completed = sorted(
        (op for op in writes if op.outcome == "ok" and op.op_id in index_of), key=lambda o: o.complete_time or 0
    )
    by_invoke = sorted((op for op in ops if op.outcome != "fail" and op.f != "stale"), key=lambda o: o.invoke_time)
    max_index, max_op, c = 0, 0, 0
    for op in by_invoke:
        while c < len(completed) and (completed[c].complete_time or 0) < op.invoke_time:
            if index_of[completed[c].op_id] > max_index:
                max_index, max_op = index_of[completed[c].op_id], completed[c].op_id
            c += 1
        if op.f == "read":
            if op.outcome != "ok":
                continue
            if op.served_index < max_index:
                errors.append(
                    f"stale read {op.op_id}: served at index {op.served_index}, but write {max_op} "
                    f"at index {max_index} completed before the read began"
                )
            expected = value_at(op.key, op.served_index)
            if op.result != expected:
                errors.append(f"read {op.op_id} of {op.key} at {op.served_index}: got {op.result}, model {expected}")
        elif op.op_id in index_of and index_of[op.op_id] < max_index:
            errors.append(
                f"write {op.op_id} at index {index_of[op.op_id]} ordered before write {max_op} "
                f"(index {max_index}) that completed before it began"
            )
    return errors


def check_stale_reads(ops: list[ClientOp], committed: dict[int, Entry]) -> list[str]:
    """Hold every STALE read to its bound: a read invoked at round t with bound B, served from a
    state that applied index a, must not miss a write acknowledged before t - B, i.e. no write
    acknowledged before then may be at an index above a (`kvstore.node.reads.Freshness`). Its
    value must be the model's at index a."""
    index_of: dict[int, int] = {}
    kv: dict[str, int] = {}
    versions: dict[str, list[tuple[int, int | None]]] = {}  # key -> (index, value from then on)
    for index in sorted(committed):
        op = _decode_write(committed[index])
        if op is None or op["id"] in index_of:
            continue
        index_of[op["id"]] = index
        apply_op(kv, op)
        versions.setdefault(str(op["k"]), []).append((index, kv.get(str(op["k"]))))
    acknowledged = sorted(
        (op.complete_round, index_of[op.op_id], op.op_id)
        for op in ops
        if op.f in ("put", "cas") and op.outcome == "ok" and op.op_id in index_of and op.complete_round is not None
    )
    errors = []
    for read in (op for op in ops if op.f == "stale" and op.outcome == "ok"):
        oldest_allowed = read.invoke_round - read.bound_rounds
        for at, index, op_id in acknowledged:
            if at >= oldest_allowed:
                break
            if index > read.served_index:
                errors.append(
                    f"stale read {read.op_id} at round {read.invoke_round} with bound {read.bound_rounds:g} rounds "
                    f"was served at index {read.served_index}, missing write {op_id} (index {index}) "
                    f"acknowledged at round {at}"
                )
                break
        at_index = [value for index, value in versions.get(read.key, []) if index <= read.served_index]
        expected = at_index[-1] if at_index else None
        if read.result != expected:
            errors.append(f"stale read {read.op_id} of {read.key} at {read.served_index}: got {read.result}, "
                          f"model {expected}")  # fmt: skip
    return errors


def model_state(committed: dict[int, Entry], upto: int) -> dict[str, int]:
    kv: dict[str, int] = {}
    for index in sorted(committed):
        if index > upto:
            break
        op = _decode_write(committed[index])
        if op is not None:
            apply_op(kv, op)
    return kv


def _decode_write(entry: Entry) -> dict[str, Any] | None:
    """The JSON object of a write entry (see `encode_op`), None for any other entry."""
    if entry.type is not EntryType.NORMAL or not entry.data:
        return None
    return json.loads(entry.data)
