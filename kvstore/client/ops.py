"""Operations and comparisons for `Client.txn` and `Client.batch`.

    from kvstore.client import ops
    await client.txn(
        compares=[ops.value("{acct}:a") == "10", ops.version("{acct}:b") > 0],
        success=[ops.put("{acct}:a", "0"), ops.put("{acct}:b", "10")],
        failure=[ops.get("{acct}:a")],
    )

Keys and values may be `str` (encoded as UTF-8) or `bytes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from kvstore._pb import kvstore_pb2 as pb
from kvstore.client.types import ReadConsistency
from kvstore.errors import InvalidArgumentError

Data = str | bytes


def to_bytes(data: Data, what: str) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        try:
            return data.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates: typically bytes that were not UTF-8, decoded with surrogateescape
            # (as Python does for command-line arguments); the caller should pass the bytes.
            raise InvalidArgumentError(f"{what} {data!r} is not valid Unicode text; pass it as bytes") from None
    raise TypeError(f"{what} must be str or bytes, got {type(data).__name__}")


class CompareTarget(IntEnum):
    VALUE = pb.Compare.VALUE
    VERSION = pb.Compare.VERSION
    MOD_REVISION = pb.Compare.MOD_REVISION
    CREATE_REVISION = pb.Compare.CREATE_REVISION


class CompareResult(IntEnum):
    EQUAL = pb.Compare.EQUAL
    NOT_EQUAL = pb.Compare.NOT_EQUAL
    GREATER = pb.Compare.GREATER
    LESS = pb.Compare.LESS


@dataclass(frozen=True, slots=True)
class Compare:
    """One guard of a transaction: ``target(key) <result> operand``."""

    key: bytes
    target: CompareTarget
    result: CompareResult
    value: bytes = b""  # operand when target is VALUE
    number: int = 0  # operand for the other targets


@dataclass(frozen=True, slots=True)
class GetOp:
    """A read of one key. `min_revision`: served only by a replica that applied at least this
    revision (any level). `max_staleness_ms` (STALE only, 0 = any): served only by a replica
    that can bound its staleness under it."""

    key: bytes
    consistency: ReadConsistency = ReadConsistency.LINEARIZABLE
    min_revision: int = 0
    max_staleness_ms: int = 0


@dataclass(frozen=True, slots=True)
class PutOp:
    key: bytes
    value: bytes
    lease: int = 0
    prev_kv: bool = False
    fencing_token: int = 0


@dataclass(frozen=True, slots=True)
class DeleteOp:
    key: bytes
    prev_kv: bool = False
    fencing_token: int = 0


Op = GetOp | PutOp | DeleteOp


def get(
    key: Data,
    *,
    consistency: ReadConsistency = ReadConsistency.LINEARIZABLE,
    min_revision: int = 0,
    max_staleness_ms: int = 0,
) -> GetOp:
    return GetOp(to_bytes(key, "key"), consistency, min_revision, max_staleness_ms)


def put(key: Data, value: Data, *, lease: int = 0, prev_kv: bool = False, fencing_token: int = 0) -> PutOp:
    return PutOp(to_bytes(key, "key"), to_bytes(value, "value"), lease, prev_kv, fencing_token)


def delete(key: Data, *, prev_kv: bool = False, fencing_token: int = 0) -> DeleteOp:
    return DeleteOp(to_bytes(key, "key"), prev_kv, fencing_token)


class CompareOperand:
    """``target(key)``, waiting for a comparison operator to become a `Compare`."""

    __slots__ = ("key", "target")
    __hash__ = None  # type: ignore[assignment]  # == builds a Compare, so instances are not hashable

    def __init__(self, key: Data, target: CompareTarget) -> None:
        self.key = to_bytes(key, "key")
        self.target = target

    def _compare(self, result: CompareResult, operand: object) -> Compare:
        if self.target is CompareTarget.VALUE:
            if not isinstance(operand, str | bytes):
                raise TypeError(f"value() compares with str or bytes, got {type(operand).__name__}")
            return Compare(self.key, self.target, result, value=to_bytes(operand, "value"))
        if isinstance(operand, bool) or not isinstance(operand, int) or operand < 0:
            raise TypeError(f"{self.target.name.lower()}() compares with an int >= 0, got {operand!r}")
        return Compare(self.key, self.target, result, number=operand)

    def __eq__(self, operand: object) -> Compare:  # type: ignore[override]
        return self._compare(CompareResult.EQUAL, operand)

    def __ne__(self, operand: object) -> Compare:  # type: ignore[override]
        return self._compare(CompareResult.NOT_EQUAL, operand)

    def __gt__(self, operand: object) -> Compare:
        return self._compare(CompareResult.GREATER, operand)

    def __lt__(self, operand: object) -> Compare:
        return self._compare(CompareResult.LESS, operand)


def value(key: Data) -> CompareOperand:
    return CompareOperand(key, CompareTarget.VALUE)


def version(key: Data) -> CompareOperand:
    """The key's version: 0 when absent, 1 on creation, +1 on every put."""
    return CompareOperand(key, CompareTarget.VERSION)


def mod_revision(key: Data) -> CompareOperand:
    return CompareOperand(key, CompareTarget.MOD_REVISION)


def create_revision(key: Data) -> CompareOperand:
    return CompareOperand(key, CompareTarget.CREATE_REVISION)
