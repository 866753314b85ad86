"""Node and applier failures -> the API's `Error` message, through `kvstore.errors`' table.

Every failure a client can see goes through `to_error`; servicers never build `Error` by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kvstore._pb import kvstore_pb2 as pb
from kvstore.errors import ErrorCode, KvError, NotLeaderError
from kvstore.statemachine import ErrorResult
from kvstore.storage import StorageError

log = logging.getLogger("kvstore.rpc")


def to_error(error: BaseException | ErrorResult, epoch: int, address_of: Callable[[int], str]) -> pb.Error:
    if isinstance(error, ErrorResult):
        return pb.Error(code=ErrorCode[error.code], message=error.message, epoch=epoch)
    if isinstance(error, KvError):
        message = pb.Error(code=error.code, message=error.message, epoch=epoch)
        if isinstance(error, NotLeaderError) and error.leader_hint:
            message.leader_hint = error.leader_hint
            message.leader_address = address_of(error.leader_hint)
        return message
    if isinstance(error, StorageError):
        return pb.Error(code=ErrorCode.UNAVAILABLE, message=f"storage failure: {error}", epoch=epoch)
    log.error("internal error serving a request", exc_info=error)
    return pb.Error(code=ErrorCode.INTERNAL, message=f"internal error: {type(error).__name__}: {error}", epoch=epoch)
