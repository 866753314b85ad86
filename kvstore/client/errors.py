"""Typed client errors. Every one carries the API's `ErrorCode` and a message meant for users.

The hierarchy is what callers branch on: `UnavailableError` (and its `KvTimeoutError` and
`NotLeaderError`) means "the cluster could not serve this now, retrying later may work";
`InvalidArgumentError` (and `CrossPartitionError`) means "this request will never work".
"""

from __future__ import annotations

from kvstore.client.types import ErrorCode


class KvError(Exception):
    """Base of every error the client raises."""

    default_code = ErrorCode.INTERNAL

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
    vouch for, or an unusable TLS file. Retrying cannot help; the message says which."""


class StaleFencingTokenError(KvError):
    """The key already accepted a write with a larger fencing token: this writer lost its lock."""

    default_code = ErrorCode.STALE_FENCING_TOKEN


class UnavailableError(KvError):
    default_code = ErrorCode.UNAVAILABLE


class KvTimeoutError(UnavailableError):
    """The call's deadline passed before any node served it."""

    default_code = ErrorCode.TIMEOUT


class NotLeaderError(UnavailableError):
    """The deadline passed while the partition's replicas kept answering that they do not lead it."""

    default_code = ErrorCode.NOT_LEADER


_ERROR_BY_CODE: dict[ErrorCode, type[KvError]] = {
    ErrorCode.NOT_FOUND: NotFoundError,
    ErrorCode.LEASE_NOT_FOUND: NotFoundError,
    ErrorCode.INVALID_ARGUMENT: InvalidArgumentError,
    ErrorCode.CROSS_PARTITION: CrossPartitionError,
    ErrorCode.STALE_FENCING_TOKEN: StaleFencingTokenError,
    ErrorCode.UNAVAILABLE: UnavailableError,
    ErrorCode.TIMEOUT: KvTimeoutError,
    ErrorCode.NOT_LEADER: NotLeaderError,
}


def error_for_code(code: int, message: str) -> KvError:
    """The typed error for a server-reported `code` (unknown codes become a plain `KvError`)."""
    try:
        known_code = ErrorCode(code)
    except ValueError:
        return KvError(f"{message} (unknown error code {code})", code=ErrorCode.INTERNAL)
    return _ERROR_BY_CODE.get(known_code, KvError)(message, code=known_code)
