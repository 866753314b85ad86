"""The requests the applier executes and the check of their shape.

A client's command is one of the API's write requests (`PutRequest`, `DeleteRequest`,
`TxnRequest`, and `LeaseGrantRequest`, `LeaseRevokeRequest`, `LockRequest`, `UnlockRequest`),
carried in the `LogCommand` that is the data of a Raft entry (internal.proto). The RPC layer
proposes the bytes of the client's `RequestOp` as they are (or the request wrapped in a
`LogCommand`); the applier parses them once and works on the messages, answering with the API's
response message of the same kind. The leader's lessor proposes `LeaseCheckpoints` and
`LeaseExpiries`, which nobody waits for.

`check_command` refuses what the messages' types allow but the store does not: empty keys, a
seq without a client id, a lowest pending seq above the request's own, unknown compare targets,
a transaction inside a transaction, a fenced transaction whose operations carry tokens of their
own, an empty operation, a lease TTL out of range, a lock key that is not one. The RPC layer
calls it before proposing; the applier calls it again, since the log is what every replica
agrees on.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from kvstore._pb import kvstore_pb2 as pb
from kvstore.names import is_lease_id, split_lock_key
from kvstore.statemachine.leases import MAX_LEASE_TTL

KvRequest = pb.PutRequest | pb.DeleteRequest | pb.TxnRequest
"""The writes a `RequestOp` carries (a `Batch` proposes their bytes as they are)."""
WriteRequest = KvRequest | pb.LeaseGrantRequest | pb.LeaseRevokeRequest | pb.LockRequest | pb.UnlockRequest
"""Every client command the log carries."""
WriteResponse = (
    pb.PutResponse
    | pb.DeleteResponse
    | pb.TxnResponse
    | pb.LeaseGrantResponse
    | pb.LeaseRevokeResponse
    | pb.LockResponse
    | pb.UnlockResponse
)

COMMAND_FIELDS: Mapping[type[WriteRequest], tuple[str, type[WriteResponse]]] = MappingProxyType(
    {
        pb.PutRequest: ("put", pb.PutResponse),
        pb.DeleteRequest: ("delete", pb.DeleteResponse),
        pb.TxnRequest: ("txn", pb.TxnResponse),
        pb.LeaseGrantRequest: ("lease_grant", pb.LeaseGrantResponse),
        pb.LeaseRevokeRequest: ("lease_revoke", pb.LeaseRevokeResponse),
        pb.LockRequest: ("lock", pb.LockResponse),
        pb.UnlockRequest: ("unlock", pb.UnlockResponse),
    }
)
"""For each client command: its field in `LogCommand` and `LogResponse`, and its response."""

_COMPARE_TARGETS = frozenset(pb.Compare.Target.values())
_COMPARE_RESULTS = frozenset(pb.Compare.Result.values())


def op_key(op: pb.RequestOp) -> bytes | None:
    """The key of a transaction's operation (None for an empty one, or a nested transaction)."""
    kind = op.WhichOneof("op")
    if kind == "put":
        return op.put.key
    if kind == "delete":
        return op.delete.key
    if kind == "get":
        return op.get.key
    return None


def txn_keys(txn: pb.TxnRequest) -> list[bytes]:
    """Every key a transaction names, in its compares and both branches."""
    keys = [compare.key for compare in txn.compare]
    for branch in (txn.success, txn.failure):
        keys.extend(key for key in map(op_key, branch) if key is not None)
    return keys


def check_command(request: WriteRequest) -> str | None:
    """Why `request` cannot be executed (the message of its INVALID_ARGUMENT answer), None when
    its shape is fine."""
    header = request.header
    if header.request_seq and not header.client_id:
        return "a request with a seq needs a client id"
    if header.lowest_pending_seq > header.request_seq:
        return (
            f"lowest_pending_seq {header.lowest_pending_seq} is above the request's own seq {header.request_seq}: "
            "a write awaits its own answer"
        )
    if isinstance(request, (pb.PutRequest, pb.DeleteRequest)):
        return None if request.key else "keys must not be empty"
    if not isinstance(request, pb.TxnRequest):
        return _check_lease_or_lock(request)
    for compare in request.compare:
        if compare.target not in _COMPARE_TARGETS:
            return f"compare target {compare.target} is not one of {sorted(_COMPARE_TARGETS)}"
        if compare.result not in _COMPARE_RESULTS:
            return f"compare result {compare.result} is not one of {sorted(_COMPARE_RESULTS)}"
    for branch in (request.success, request.failure):
        for op in branch:
            kind = op.WhichOneof("op")
            if kind is None:
                return "a transaction operation is empty"
            if kind == "txn":
                return "a transaction cannot contain a transaction"
            if request.fencing_token and kind != "get" and getattr(op, kind).fencing_token:
                return (
                    "a fenced transaction's token fences all its keys: give it once, on the transaction, "
                    "not on its operations too"
                )
    if not all(txn_keys(request)):
        return "keys must not be empty"
    return None


def _check_lease_or_lock(
    request: pb.LeaseGrantRequest | pb.LeaseRevokeRequest | pb.LockRequest | pb.UnlockRequest,
) -> str | None:
    if isinstance(request, pb.LeaseGrantRequest):
        if not 1 <= request.ttl_seconds <= MAX_LEASE_TTL:
            return f"a lease's TTL must be between 1 and {MAX_LEASE_TTL} seconds, got {request.ttl_seconds}"
        if request.id and not is_lease_id(request.id):
            return f"{request.id} is not a lease id"
        return None
    if isinstance(request, pb.LeaseRevokeRequest):
        return None if request.id else "a lease id must not be 0"
    if isinstance(request, pb.LockRequest):
        if not request.name:
            return "a lock name must not be empty"
        return None if request.lease else "a lock needs a lease (0 is none)"
    return None if split_lock_key(request.key) else f"{request.key!r:.80} is not a lock key"
