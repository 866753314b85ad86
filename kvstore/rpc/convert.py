"""Conversions between API protobuf messages and the applier's command and result records."""

from __future__ import annotations

from kvstore._pb import kvstore_pb2 as pb
from kvstore.statemachine import (
    Compare,
    CompareResult,
    CompareTarget,
    Delete,
    DeleteResult,
    Get,
    GetResult,
    KeyValue,
    Put,
    PutResult,
)


def kv_to_pb(kv: KeyValue) -> pb.KeyValue:
    return pb.KeyValue(
        key=kv.key,
        value=kv.value,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        lease=kv.lease,
    )


def put_from_pb(request: pb.PutRequest) -> Put:
    return Put(request.key, request.value, request.lease, request.prev_kv, request.fencing_token)


def delete_from_pb(request: pb.DeleteRequest) -> Delete:
    return Delete(request.key, request.prev_kv, request.fencing_token)


def compare_from_pb(compare: pb.Compare) -> Compare:
    return Compare(
        compare.key, CompareTarget(compare.target), CompareResult(compare.result), compare.value, compare.number
    )


def txn_op_from_pb(op: pb.RequestOp) -> Put | Delete | Get:
    kind = op.WhichOneof("op")
    if kind == "put":
        return put_from_pb(op.put)
    if kind == "delete":
        return delete_from_pb(op.delete)
    if kind == "get":
        return Get(op.get.key)
    raise ValueError("empty operation in transaction")


def put_result_to_pb(result: PutResult, header: pb.ResponseHeader) -> pb.PutResponse:
    response = pb.PutResponse(header=header, had_prev=result.prev is not None)
    if result.prev is not None:
        response.prev_kv.CopyFrom(kv_to_pb(result.prev))
    return response


def delete_result_to_pb(result: DeleteResult, header: pb.ResponseHeader) -> pb.DeleteResponse:
    response = pb.DeleteResponse(header=header, deleted=result.deleted)
    if result.prev is not None:
        response.prev_kv.CopyFrom(kv_to_pb(result.prev))
    return response


def get_result_to_pb(result: GetResult, header: pb.ResponseHeader) -> pb.GetResponse:
    response = pb.GetResponse(header=header, found=result.kv is not None)
    if result.kv is not None:
        response.kv.CopyFrom(kv_to_pb(result.kv))
    return response


def txn_keys(request: pb.TxnRequest) -> list[bytes]:
    keys = [c.key for c in request.compare]
    for op in (*request.success, *request.failure):
        kind = op.WhichOneof("op")
        if kind is not None:
            keys.append(getattr(op, kind).key)
    return keys
