"""The requests the applier executes and the check of their shape.

A command is one of the API's write requests (`PutRequest`, `DeleteRequest`, `TxnRequest`),
carried in the `LogCommand` that is the data of a Raft entry (internal.proto). The RPC layer
proposes the bytes of the client's `RequestOp` as they are; the applier parses them once and
works on the messages, answering with the API's response message of the same kind.

`check_command` refuses what the messages' types allow but the store does not: empty keys, a
seq without a client id, unknown compare targets, a transaction inside a transaction, an empty
operation. The RPC layer calls it before proposing; the applier calls it again, since the log is
what every replica agrees on. (Number ranges need no check: the fields are uint64.)
"""

from __future__ import annotations

from kvstore._pb import kvstore_pb2 as pb

WriteRequest = pb.PutRequest | pb.DeleteRequest | pb.TxnRequest
WriteResponse = pb.PutResponse | pb.DeleteResponse | pb.TxnResponse

_COMPARE_TARGETS = frozenset(pb.Compare.Target.values())
_COMPARE_RESULTS = frozenset(pb.Compare.Result.values())


def txn_keys(txn: pb.TxnRequest) -> list[bytes]:
    """Every key a transaction names, in its compares and both branches."""
    keys = [compare.key for compare in txn.compare]
    for branch in (txn.success, txn.failure):
        for op in branch:
            kind = op.WhichOneof("op")
            if kind == "put":
                keys.append(op.put.key)
            elif kind == "delete":
                keys.append(op.delete.key)
            elif kind == "get":
                keys.append(op.get.key)
    return keys


def check_command(request: WriteRequest) -> str | None:
    """Why `request` cannot be executed (the message of its INVALID_ARGUMENT answer), None when
    its shape is fine."""
    header = request.header
    if header.request_seq and not header.client_id:
        return "a request with a seq needs a client id"
    if not isinstance(request, pb.TxnRequest):
        return None if request.key else "keys must not be empty"
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
    if not all(txn_keys(request)):
        return "keys must not be empty"
    return None
