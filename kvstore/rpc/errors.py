"""Failures met serving a request -> the API's `Error` message. A `KvError` carries its
`ErrorCode` (kvstore.errors has the one table of codes); a storage failure is UNAVAILABLE, any
other exception a bug, reported as INTERNAL and logged.

Every failure a client can see goes through `to_error`; servicers never build `Error` by hand
(the applier's own refusals arrive already in its responses).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kvstore._pb import kvstore_pb2 as pb
from kvstore.errors import ErrorCode, InvalidArgumentError, KvError, NotFoundError, NotLeaderError
from kvstore.statemachine.cluster_state import CommandResult, Refusal
from kvstore.storage import StorageError

log = logging.getLogger("kvstore.rpc")


def to_error(error: BaseException, epoch: int, address_of: Callable[[int], str]) -> pb.Error:
    if isinstance(error, KvError):
        message = pb.Error(code=error.code.value, message=error.message, epoch=epoch)
        if isinstance(error, NotLeaderError) and error.leader_hint:
            message.leader_hint = error.leader_hint
            message.leader_address = address_of(error.leader_hint)
        return message
    if isinstance(error, StorageError):
        return pb.Error(code=ErrorCode.UNAVAILABLE.value, message=f"storage failure: {error}", epoch=epoch)
    log.error("internal error serving a request", exc_info=error)
    return pb.Error(
        code=ErrorCode.INTERNAL.value, message=f"internal error: {type(error).__name__}: {error}", epoch=epoch
    )


def raise_refusal(result: CommandResult) -> None:
    """Raise the error a meta command's refusal stands for (nothing when it was applied)."""
    if result.refusal is Refusal.NOT_FOUND:
        raise NotFoundError(result.message)
    if result.refusal is not None:
        raise InvalidArgumentError(result.message)
