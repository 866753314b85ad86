"""The commands the applier executes and the results it returns, with their msgpack codec.

A client request becomes a `Command` on the partition leader; the node proposes
`encode_command(command)` as the data of a Raft entry and the applier decodes it when the entry
commits. Results are encoded for the client-dedup table (a retried request gets the stored
result back) and may be shipped as they are.

Every record encodes as a msgpack array of its fields in a fixed order, operations and results
led by a small integer tag (no field names: this is on the hot path, and an entry is stored
once per replica):

================  ===============================================================
record            array
================  ===============================================================
Command           ``[client_id, seq, op]``
Put               ``[1, key, value, lease, prev_kv, fencing_token]``
Delete            ``[2, key, prev_kv, fencing_token]``
Get               ``[3, key]``
Txn               ``[4, [compare, ...], [op, ...], [op, ...]]``
Compare           ``[key, target, result, value, number]``
KeyValue          ``[key, value, create_revision, mod_revision, version, lease]``
PutResult         ``[1, revision, kv | nil]``
DeleteResult      ``[2, revision, deleted, kv | nil]``
GetResult         ``[3, kv | nil]``
TxnResult         ``[4, revision, succeeded, [result, ...]]``
ErrorResult       ``[5, code, message]``
================  ===============================================================

Decoding checks every field's type and raises `CodecError` on anything else. It does not check
meaning (empty keys, a Get outside a Txn, ...): `check_command` does, so that the applier can
answer a malformed but decodable command with an `INVALID_ARGUMENT` result.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

import msgpack

MAX_UINT64 = 2**64 - 1


class ErrorCode(StrEnum):
    """The error codes the applier answers with; each is the name of a proto `ErrorCode`."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    STALE_FENCING_TOKEN = "STALE_FENCING_TOKEN"


class CompareTarget(IntEnum):
    """What a `Compare` looks at (numbered as the proto's `Compare.Target`)."""

    VALUE = 0
    VERSION = 1
    MOD_REVISION = 2
    CREATE_REVISION = 3


class CompareResult(IntEnum):
    """How a `Compare` relates the key's actual field to the given one (proto `Compare.Result`)."""

    EQUAL = 0
    NOT_EQUAL = 1
    GREATER = 2
    LESS = 3


class CodecError(ValueError):
    """Bytes that are not an encoded command, result or snapshot."""


# -- records -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyValue:
    """A key as stored: `version` counts the modifications since its creation (1 when created);
    revisions are Raft log indexes of the partition's group; `lease` 0 means none."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True, slots=True)
class Put:
    key: bytes
    value: bytes
    lease: int = 0
    prev_kv: bool = False
    fencing_token: int = 0  # 0: unfenced


@dataclass(frozen=True, slots=True)
class Delete:
    key: bytes
    prev_kv: bool = False
    fencing_token: int = 0  # 0: unfenced


@dataclass(frozen=True, slots=True)
class Get:
    """A read inside a `Txn` (plain reads are served from the engine, not through the log)."""

    key: bytes


@dataclass(frozen=True, slots=True)
class Compare:
    """True when the key's `target` field relates to `value` (VALUE) or `number` (the others)
    as `result` says. A missing key has version and revisions 0 and no value: every VALUE
    compare on it is false."""

    key: bytes
    target: CompareTarget
    result: CompareResult
    value: bytes = b""
    number: int = 0


TxnOp = Put | Delete | Get


@dataclass(frozen=True, slots=True)
class Txn:
    """If every compare holds, apply `success` in order, else `failure`; atomically."""

    compares: tuple[Compare, ...]
    success: tuple[TxnOp, ...]
    failure: tuple[TxnOp, ...]


Op = Put | Delete | Get | Txn


@dataclass(frozen=True, slots=True)
class Command:
    """One client request for one partition. `seq` > 0 is the client's request number for
    dedup (increasing per client); 0 turns dedup off for this command."""

    client_id: str
    seq: int
    op: Op


@dataclass(frozen=True, slots=True)
class PutResult:
    revision: int
    prev: KeyValue | None  # only when the Put asked for prev_kv and the key existed


@dataclass(frozen=True, slots=True)
class DeleteResult:
    revision: int
    deleted: bool
    prev: KeyValue | None  # only when the Delete asked for prev_kv and the key existed


@dataclass(frozen=True, slots=True)
class GetResult:
    kv: KeyValue | None


TxnOpResult = PutResult | DeleteResult | GetResult


@dataclass(frozen=True, slots=True)
class TxnResult:
    revision: int
    succeeded: bool
    results: tuple[TxnOpResult, ...]


@dataclass(frozen=True, slots=True)
class ErrorResult:
    code: str  # an `ErrorCode`
    message: str


Result = PutResult | DeleteResult | GetResult | TxnResult | ErrorResult


# -- validation ----------------------------------------------------------------------------


def _invalid(message: str) -> ErrorResult:
    return ErrorResult(ErrorCode.INVALID_ARGUMENT, message)


def _is_uint64(number: int) -> bool:
    return 0 <= number <= MAX_UINT64


def _check_put(put: Put) -> ErrorResult | None:
    # Comparisons rather than `_is_uint64`: a Put is checked once per write (hot path).
    if not put.key:
        return _invalid("keys must not be empty")
    if not 0 <= put.lease <= MAX_UINT64:
        return _invalid("lease must be an unsigned 64-bit integer")
    if not 0 <= put.fencing_token <= MAX_UINT64:
        return _invalid("fencing token must be an unsigned 64-bit integer")
    return None


def _check_txn_op(op: Op) -> ErrorResult | None:
    # isinstance with tuples, not `X | Y`: a union would be rebuilt on every call (hot path).
    if isinstance(op, Put):
        return _check_put(op)
    if not isinstance(op, (Delete, Get)):
        return _invalid(f"a transaction cannot contain a {type(op).__name__}")
    if not op.key:
        return _invalid("keys must not be empty")
    if isinstance(op, Delete) and not _is_uint64(op.fencing_token):
        return _invalid("fencing token must be an unsigned 64-bit integer")
    return None


def check_command(command: Command) -> ErrorResult | None:
    """The `INVALID_ARGUMENT` answer for a command whose shape is wrong, None when it is fine.
    The node may call it before proposing; the applier calls it again, since the log is what
    every replica agrees on."""
    return check_command_parts(command.client_id, command.seq, command.op)


def check_command_parts(client_id: str, seq: int, op: Op) -> ErrorResult | None:
    """`check_command` of the command with these fields, without building it."""
    if not 0 <= seq <= MAX_UINT64:
        return _invalid("request seq must be an unsigned 64-bit integer")
    if seq and not client_id:
        return _invalid("a request with a seq needs a client id")
    if type(op) is Put:  # the most common command, checked without the general dispatch
        return _check_put(op)
    if isinstance(op, Get):
        return _invalid("a plain Get is a read, not a command; only a transaction may contain one")
    if not isinstance(op, Txn):
        return _check_txn_op(op)
    for compare in op.compares:
        if not compare.key:
            return _invalid("keys must not be empty")
        if not _is_uint64(compare.number):
            return _invalid("compare number must be an unsigned 64-bit integer")
    for branch_op in (*op.success, *op.failure):
        problem = _check_txn_op(branch_op)
        if problem is not None:
            return problem
    return None


# -- encoding ------------------------------------------------------------------------------

_PUT = 1
_DELETE = 2
_GET = 3
_TXN = 4

_PUT_RESULT = 1
_DELETE_RESULT = 2
_GET_RESULT = 3
_TXN_RESULT = 4
_ERROR_RESULT = 5


def _op_fields(op: Op) -> tuple[Any, ...]:
    if type(op) is Put:
        return (_PUT, op.key, op.value, op.lease, op.prev_kv, op.fencing_token)
    if type(op) is Delete:
        return (_DELETE, op.key, op.prev_kv, op.fencing_token)
    if type(op) is Get:
        return (_GET, op.key)
    if type(op) is Txn:
        return (
            _TXN,
            [(c.key, int(c.target), int(c.result), c.value, c.number) for c in op.compares],
            [_op_fields(o) for o in op.success],
            [_op_fields(o) for o in op.failure],
        )
    raise TypeError(f"not an operation: {op!r:.80}")


def encode_command(command: Command) -> bytes:
    return msgpack.packb((command.client_id, command.seq, _op_fields(command.op)))


def _bad(what: str, fields: object) -> CodecError:
    return CodecError(f"not an encoded {what}: {fields!r:.80}")


def _op_from(fields: tuple[Any, ...]) -> Op:
    tag = fields[0]
    if tag == _PUT:
        _, key, value, lease, prev_kv, token = fields
        if (
            type(key) is not bytes
            or type(value) is not bytes
            or type(lease) is not int
            or type(prev_kv) is not bool
            or type(token) is not int
        ):
            raise _bad("Put", fields)
        return Put(key, value, lease, prev_kv, token)
    if tag == _DELETE:
        _, key, prev_kv, token = fields
        if type(key) is not bytes or type(prev_kv) is not bool or type(token) is not int:
            raise _bad("Delete", fields)
        return Delete(key, prev_kv, token)
    if tag == _GET:
        _, key = fields
        if type(key) is not bytes:
            raise _bad("Get", fields)
        return Get(key)
    if tag == _TXN:
        _, compares, success, failure = fields
        return Txn(
            tuple(_compare_from(c) for c in compares),
            tuple(_op_from(o) for o in success),
            tuple(_op_from(o) for o in failure),
        )
    raise _bad("operation", fields)


def _compare_from(fields: tuple[Any, ...]) -> Compare:
    key, target, result, value, number = fields
    if type(key) is not bytes or type(value) is not bytes or type(number) is not int:
        raise _bad("Compare", fields)
    return Compare(key, CompareTarget(target), CompareResult(result), value, number)


def decode_command(raw: bytes) -> Command:
    """The command `encode_command` made `raw` from; `CodecError` if it is not one."""
    return Command(*decode_command_parts(raw))


def decode_command_parts(raw: bytes) -> tuple[str, int, Op]:
    """(client id, seq, op) of `decode_command(raw)`, without building the `Command` (the
    applier needs only its fields, and building a frozen record costs more than decoding it)."""
    try:
        client_id, seq, op_fields = msgpack.unpackb(raw, use_list=False)
        if type(client_id) is not str or type(seq) is not int:
            raise _bad("Command", (client_id, seq))
        return client_id, seq, _op_from(op_fields)
    except CodecError:
        raise
    except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
        raise CodecError(f"not an encoded command: {exc}") from None


def _kv_fields(kv: KeyValue | None) -> tuple[Any, ...] | None:
    if kv is None:
        return None
    return (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)


def _kv_from(fields: tuple[Any, ...] | None) -> KeyValue | None:
    if fields is None:
        return None
    key, value, create_revision, mod_revision, version, lease = fields
    if type(key) is not bytes or type(value) is not bytes:
        raise _bad("KeyValue", fields)
    return KeyValue(key, value, create_revision, mod_revision, version, lease)


def _result_fields(result: Result) -> tuple[Any, ...]:
    if type(result) is PutResult:
        return (_PUT_RESULT, result.revision, _kv_fields(result.prev))
    if type(result) is DeleteResult:
        return (_DELETE_RESULT, result.revision, result.deleted, _kv_fields(result.prev))
    if type(result) is GetResult:
        return (_GET_RESULT, _kv_fields(result.kv))
    if type(result) is TxnResult:
        return (
            _TXN_RESULT,
            result.revision,
            result.succeeded,
            [_result_fields(r) for r in result.results],
        )
    if type(result) is ErrorResult:
        return (_ERROR_RESULT, str(result.code), result.message)
    raise TypeError(f"not a result: {result!r:.80}")


def encode_result(result: Result, packer: msgpack.Packer | None = None) -> bytes:
    """`packer`: a Packer to reuse, for callers on a hot path (`msgpack.packb` builds one, with
    its buffer, per call)."""
    fields = _result_fields(result)
    return msgpack.packb(fields) if packer is None else packer.pack(fields)


def _result_from(fields: tuple[Any, ...]) -> Result:
    tag = fields[0]
    if tag == _PUT_RESULT:
        _, revision, prev = fields
        return PutResult(revision, _kv_from(prev))
    if tag == _DELETE_RESULT:
        _, revision, deleted, prev = fields
        return DeleteResult(revision, deleted, _kv_from(prev))
    if tag == _GET_RESULT:
        _, kv = fields
        return GetResult(_kv_from(kv))
    if tag == _TXN_RESULT:
        _, revision, succeeded, results = fields
        op_results: list[TxnOpResult] = []
        for op_fields in results:
            op_result = _result_from(op_fields)
            if not isinstance(op_result, (PutResult, DeleteResult, GetResult)):
                raise _bad("TxnResult", fields)
            op_results.append(op_result)
        return TxnResult(revision, succeeded, tuple(op_results))
    if tag == _ERROR_RESULT:
        _, code, message = fields
        if type(code) is not str or type(message) is not str:
            raise _bad("ErrorResult", fields)
        return ErrorResult(code, message)
    raise _bad("result", fields)


def decode_result(raw: bytes) -> Result:
    """The result `encode_result` made `raw` from; `CodecError` if it is not one."""
    try:
        return _result_from(msgpack.unpackb(raw, use_list=False))
    except CodecError:
        raise
    except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
        raise CodecError(f"not an encoded result: {exc}") from None
