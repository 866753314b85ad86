"""The one error table: node/applier error codes -> API `Error` messages.

Every failure a client can see goes through `to_error`; servicers never build `Error` by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kvstore._pb import kvstore_pb2 as pb
from kvstore.node.errors import RequestError
from kvstore.statemachine import ErrorResult
from kvstore.storage import StorageError

log = logging.getLogger("kvstore.rpc")


def to_error(error: BaseException | ErrorResult, epoch: int, address_of: Callable[[int], str]) -> pb.Error:
    if isinstance(error, ErrorResult):
        return pb.Error(code=pb.ErrorCode.Value(str(error.code)), message=error.message, epoch=epoch)
    if isinstance(error, RequestError):
        return pb.Error(
            code=pb.ErrorCode.Value(error.code),
            message=error.message,
            leader_hint=error.leader_hint,
            leader_address=address_of(error.leader_hint) if error.leader_hint else "",
            epoch=epoch,
        )
    if isinstance(error, StorageError):
        return pb.Error(code=pb.UNAVAILABLE, message=f"storage failure: {error}", epoch=epoch)
    log.error("internal error serving a request", exc_info=error)
    return pb.Error(code=pb.INTERNAL, message=f"internal error: {type(error).__name__}: {error}", epoch=epoch)
