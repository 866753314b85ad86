"""The one error enum, the one exception hierarchy and the one table that relates them.

`ErrorCode` is the API's `ErrorCode` (its values come from the generated proto module, so the
two cannot drift apart). Every layer speaks it: the applier answers with it, the node raises the
`KvError` subclasses below, the RPC layer turns them into the `Error` of a response, the client
turns that back into the same exception, and kvctl turns the exception into its exit code.

`ERRORS` has one `ErrorKind` row per code and is the only place that says what a code means to
each layer; `exception_for`, `code_for_status` and `ERRORS[code].exit_code` are lookups in it.
`TransportSecurityError` and `BatchError` are raised by the client alone (no node sends them):
the first carries its parent's code, INVALID_ARGUMENT, the second the code of the first operation
that failed; that code's row gives the exit code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType
from typing import ClassVar

import grpc

from kvstore._pb import kvstore_pb2 as pb


class ErrorCode(IntEnum):
    OK = pb.OK
    NOT_FOUND = pb.NOT_FOUND
    NOT_LEADER = pb.NOT_LEADER
    WRONG_NODE = pb.WRONG_NODE
    INVALID_ARGUMENT = pb.INVALID_ARGUMENT
    UNAVAILABLE = pb.UNAVAILABLE
    TIMEOUT = pb.TIMEOUT
    CROSS_PARTITION = pb.CROSS_PARTITION
    STALE_FENCING_TOKEN = pb.STALE_FENCING_TOKEN
    COMPACTED = pb.COMPACTED
    LEASE_NOT_FOUND = pb.LEASE_NOT_FOUND
    LOCK_NOT_HELD = pb.LOCK_NOT_HELD
    INTERNAL = pb.INTERNAL
    PERMISSION_DENIED = pb.PERMISSION_DENIED
    UNAUTHENTICATED = pb.UNAUTHENTICATED
    RESOURCE_EXHAUSTED = pb.RESOURCE_EXHAUSTED
    NO_SPACE = pb.NO_SPACE


class ExitCode(IntEnum):
    """kvctl's fixed exit codes. Scripts depend on these; never renumber them."""

    OK = 0
    NOT_FOUND = 1
    USAGE = 2
    UNAVAILABLE = 3

    # `kvctl check` verdicts: aliases of the numbers above, with names that say what they mean there.
    VIOLATION = 1  # not linearizable, or a session/staleness anomaly
    UNKNOWN = 2  # timed out, or unusable input (bad usage, unreadable or malformed file)


# -- the exceptions ------------------------------------------------------------------------
#
# The hierarchy is what callers branch on: `UnavailableError` and its subclasses mean "the
# cluster could not serve this now, retrying later may work"; `InvalidArgumentError` (and
# `CrossPartitionError`) mean "this request will never work".


class KvError(Exception):
    """Base of every error kvstore raises to a caller; `code` is its `ErrorCode`, `message` one
    line meant for users."""

    default_code: ClassVar[ErrorCode] = ErrorCode.INTERNAL

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.code = self.default_code if code is None else code
        self.message = message


class NotFoundError(KvError):
    """Something the request names does not exist (e.g. a lease); a missing key is `None`, not this."""

    default_code = ErrorCode.NOT_FOUND


class InvalidArgumentError(KvError):
    default_code = ErrorCode.INVALID_ARGUMENT


class CrossPartitionError(InvalidArgumentError):
    """A transaction's keys live in more than one partition; co-locate them with a {hash tag}."""

    default_code = ErrorCode.CROSS_PARTITION


class TransportSecurityError(InvalidArgumentError):
    """The client's TLS settings do not fit the node: plaintext against a TLS node (or the other
    way round), a certificate the node refuses, a node certificate the client's CA does not
    vouch for, or an unusable TLS file. Raised by the client itself (TLS fails before any
    request reaches a node); retrying cannot help, so it is an INVALID_ARGUMENT (kvctl exit
    code 2). The message says which."""


class StaleFencingTokenError(KvError):
    """The key already accepted a write with a larger fencing token: this writer lost its lock."""

    default_code = ErrorCode.STALE_FENCING_TOKEN


class LeaseNotFoundError(KvError):
    """The lease a request names does not exist (it expired, was revoked, or never was)."""

    default_code = ErrorCode.LEASE_NOT_FOUND


class LockNotHeldError(KvError):
    """The lock key is gone: unlocked already, or its lease expired (the lock passed on)."""

    default_code = ErrorCode.LOCK_NOT_HELD


class PermissionDeniedError(KvError):
    """The user lacks the permission the request needs; the message names it and the key."""

    default_code = ErrorCode.PERMISSION_DENIED


class UnauthenticatedError(KvError):
    """Auth is enabled and the caller is nobody: no token, an expired or revoked one, a wrong
    password. A client that knows the password signs in again."""

    default_code = ErrorCode.UNAUTHENTICATED


class NoSpaceError(KvError):
    """The cluster is over its space quota: writes that add data are refused until deletes (and
    compaction) bring every member back under it."""

    default_code = ErrorCode.NO_SPACE


class WatchCompactedError(KvError):
    """A watch asked for changes of a partition that no replica's history holds any more
    (docs/watch.md): `partition`, the `revision` it asked to start from, and `compact_revision`,
    the revision from which the replicas' histories hold every change. Start a new watch from
    now, then list the keys again (docs/watch.md, "Re-listing"); or watch from
    `compact_revision`, knowing the changes before it were missed. Never retried: a watch does
    not skip changes silently."""

    default_code = ErrorCode.COMPACTED

    def __init__(
        self,
        message: str,
        *,
        partition: int = 0,
        revision: int = 0,
        compact_revision: int = 0,
        code: ErrorCode | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.partition = partition
        self.revision = revision
        self.compact_revision = compact_revision


class UnavailableError(KvError):
    default_code = ErrorCode.UNAVAILABLE


RETRY_AFTER_METADATA = "retry-after-ms"
"""The trailing metadata of a RESOURCE_EXHAUSTED status: milliseconds to wait before retrying."""


class ResourceExhaustedError(UnavailableError):
    """The caller is over its rate limit at this node; `retry_after_s` is when its bucket has
    room again."""

    default_code = ErrorCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, retry_after_s: float = 0.0, code: ErrorCode | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class KvTimeoutError(UnavailableError):
    """The request's deadline passed before it was served."""

    default_code = ErrorCode.TIMEOUT


class NotLeaderError(UnavailableError):
    """This node does not lead the partition; `leader_hint` is the node that does (0: unknown).
    The client raises it when its deadline passed while replicas kept answering so."""

    default_code = ErrorCode.NOT_LEADER

    def __init__(self, message: str, *, leader_hint: int = 0, code: ErrorCode | None = None) -> None:
        super().__init__(message, code=code)
        self.leader_hint = leader_hint


class WrongNodeError(UnavailableError):
    """This node holds no replica of the partition (the client's cluster map is out of date)."""

    default_code = ErrorCode.WRONG_NODE


class BatchError(KvError):
    """Some operations of a `Client.batch` failed; each failed or succeeded on its own.

    `outcomes` has one entry per operation, in the order given: the operation's result, or the
    `KvError` it failed with. `code` (and so the exit code and whether a retry may help) is that
    of the first failure.
    """

    def __init__(self, outcomes: Sequence[object]) -> None:
        failures = [(index, outcome) for index, outcome in enumerate(outcomes) if isinstance(outcome, KvError)]
        if not failures:
            raise ValueError("a BatchError needs at least one failed operation")
        index, first = failures[0]
        succeeded = len(outcomes) - len(failures)
        super().__init__(
            f"{len(failures)} of {len(outcomes)} operations failed ({succeeded} succeeded); "
            f"the first, ops[{index}]: {first.message}",
            code=first.code,
        )
        self.outcomes = tuple(outcomes)


# -- the table -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorKind:
    """What one `ErrorCode` means to every layer.

    `exception`: the class raised for it. `grpc_status`: the gRPC status it travels as when it
    is raised as an RPC status instead of carried in a response's `error` field (None: always
    carried), in both directions. `exit_code`: kvctl's. `retryable`: another node, or the same
    one later, may serve the request. `may_be_applied`: a write that failed with it may still
    take effect (it was proposed, or may have been, before the failure); otherwise it was
    refused and certainly not applied.
    """

    exception: type[KvError]
    grpc_status: grpc.StatusCode | None
    exit_code: ExitCode
    retryable: bool
    may_be_applied: bool


_S = grpc.StatusCode
ERRORS: Mapping[ErrorCode, ErrorKind] = MappingProxyType(
    {
        # OK is never raised; its row gives the gRPC status and the exit code of success.
        ErrorCode.OK: ErrorKind(KvError, _S.OK, ExitCode.OK, False, False),
        ErrorCode.NOT_FOUND: ErrorKind(NotFoundError, _S.NOT_FOUND, ExitCode.NOT_FOUND, False, False),
        ErrorCode.NOT_LEADER: ErrorKind(NotLeaderError, None, ExitCode.UNAVAILABLE, True, True),
        ErrorCode.WRONG_NODE: ErrorKind(WrongNodeError, None, ExitCode.UNAVAILABLE, True, True),
        ErrorCode.INVALID_ARGUMENT: ErrorKind(
            InvalidArgumentError, _S.INVALID_ARGUMENT, ExitCode.USAGE, False, False
        ),
        ErrorCode.UNAVAILABLE: ErrorKind(UnavailableError, _S.UNAVAILABLE, ExitCode.UNAVAILABLE, True, True),
        ErrorCode.TIMEOUT: ErrorKind(KvTimeoutError, _S.DEADLINE_EXCEEDED, ExitCode.UNAVAILABLE, True, True),
        ErrorCode.CROSS_PARTITION: ErrorKind(CrossPartitionError, None, ExitCode.USAGE, False, False),
        ErrorCode.STALE_FENCING_TOKEN: ErrorKind(StaleFencingTokenError, None, ExitCode.USAGE, False, False),
        ErrorCode.COMPACTED: ErrorKind(WatchCompactedError, None, ExitCode.USAGE, False, False),
        ErrorCode.LEASE_NOT_FOUND: ErrorKind(LeaseNotFoundError, None, ExitCode.USAGE, False, False),
        ErrorCode.LOCK_NOT_HELD: ErrorKind(LockNotHeldError, None, ExitCode.USAGE, False, False),
        ErrorCode.INTERNAL: ErrorKind(KvError, _S.INTERNAL, ExitCode.UNAVAILABLE, False, True),
        # Refused before anything was proposed. The whole RPC is refused with the status (a
        # Batch's operations one by one, in their `error`), except RESOURCE_EXHAUSTED, which the
        # client waits out (trailing metadata `retry-after-ms`) and retries on the same node:
        # another node has a bucket of its own, and only the leader can serve a write anyway.
        ErrorCode.PERMISSION_DENIED: ErrorKind(PermissionDeniedError, _S.PERMISSION_DENIED, ExitCode.USAGE,
                                               False, False),
        ErrorCode.UNAUTHENTICATED: ErrorKind(UnauthenticatedError, _S.UNAUTHENTICATED, ExitCode.USAGE, False, False),
        ErrorCode.RESOURCE_EXHAUSTED: ErrorKind(ResourceExhaustedError, _S.RESOURCE_EXHAUSTED, ExitCode.UNAVAILABLE,
                                                True, False),
        ErrorCode.NO_SPACE: ErrorKind(NoSpaceError, _S.FAILED_PRECONDITION, ExitCode.USAGE, False, False),
    }
)

_CODE_BY_STATUS: Mapping[grpc.StatusCode, ErrorCode] = MappingProxyType(
    {kind.grpc_status: code for code, kind in ERRORS.items() if kind.grpc_status is not None}
)
# Every response is checked through this: a dict lookup costs a fraction of an Enum call.
_CODE_BY_NUMBER: Mapping[int, ErrorCode] = MappingProxyType({code.value: code for code in ErrorCode})


def error_code(number: int) -> ErrorCode:
    """The `ErrorCode` of a number received from a node; codes newer than this program count as
    INTERNAL."""
    return _CODE_BY_NUMBER.get(number, ErrorCode.INTERNAL)


def exception_for(number: int, message: str) -> KvError:
    """The exception a node's error code `number` becomes on the client."""
    code = error_code(number)
    if code != number:
        message = f"{message} (unknown error code {number})"
    return ERRORS[code].exception(message, code=code)


def code_for_status(status: grpc.StatusCode) -> ErrorCode:
    """The `ErrorCode` a failed RPC's gRPC status stands for (INTERNAL for any status no code
    travels as)."""
    return _CODE_BY_STATUS.get(status, ErrorCode.INTERNAL)
