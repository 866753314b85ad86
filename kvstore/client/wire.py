"""Conversions between the client's records and the protobuf messages of the API."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from kvstore._pb import kvstore_pb2 as pb
from kvstore.client.ops import Compare, GetOp, Op, PutOp
from kvstore.client.types import (
    Alarm,
    ClusterLayout,
    DeleteResult,
    EventType,
    GetResult,
    Grant,
    KeyValue,
    Member,
    MemberState,
    NodeStatus,
    OpResult,
    PartitionInfo,
    Permission,
    PutResult,
    RateLimit,
    ReadConsistency,
    ResponseHeader,
    Role,
    TxnResult,
    User,
    WatchEvent,
    WriteConcern,
)
from kvstore.errors import ErrorCode, KvError

# A response message of one key operation: the three share header, error and nothing else.
OpResponse = pb.GetResponse | pb.PutResponse | pb.DeleteResponse

# Every response is decoded through this: a dict lookup costs a fraction of an Enum call.
_CONSISTENCIES: Mapping[int, ReadConsistency] = MappingProxyType({level.value: level for level in ReadConsistency})


def kv_from_pb(kv: pb.KeyValue) -> KeyValue:
    return KeyValue(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)


def event_from_pb(event: pb.WatchEvent, partition: int) -> WatchEvent:
    kv = event.kv
    prev_kv = kv_from_pb(event.prev_kv) if event.HasField("prev_kv") else None
    return WatchEvent(
        EventType(event.type), kv.key, kv.value, kv.mod_revision, partition, kv.create_revision, kv.version, kv.lease,
        prev_kv,
    )


def header_from_pb(header: pb.ResponseHeader) -> ResponseHeader:
    served = _CONSISTENCIES.get(header.served)
    # Positional: a dataclass called with keywords costs ~1 us more, on every response.
    return ResponseHeader(
        header.partition,
        header.revision,
        ReadConsistency(header.served) if served is None else served,  # the Enum call raises
        header.node_id,
        header.epoch,
        header.staleness_ms,
    )


def op_to_pb(op: Op, concern: WriteConcern, min_revision: int) -> pb.RequestOp:
    """The operation as a `RequestOp` whose header is left for the caller to fill in.

    Fields are set one by one on the message they belong to: building nested messages and
    passing them to constructors copies each of them, which costs several times more.
    """
    request = pb.RequestOp()
    if isinstance(op, GetOp):
        get = request.get
        get.key = op.key
        get.consistency = op.consistency.value
        if op.consistency is ReadConsistency.SESSION:
            get.min_revision = min_revision
    elif isinstance(op, PutOp):
        put = request.put
        put.key = op.key
        put.value = op.value
        put.lease = op.lease
        put.prev_kv = op.prev_kv
        put.fencing_token = op.fencing_token
        put.concern = concern.value
    else:
        delete = request.delete
        delete.key = op.key
        delete.prev_kv = op.prev_kv
        delete.fencing_token = op.fencing_token
        delete.concern = concern.value
    return request


def inner_response(response: pb.ResponseOp) -> OpResponse:
    """The answer to a key operation inside `response`."""
    if response.HasField("get"):
        return response.get
    if response.HasField("put"):
        return response.put
    if response.HasField("delete"):
        return response.delete
    raise KvError("the node sent no key operation result", code=ErrorCode.INTERNAL)


def txn_response(response: pb.ResponseOp) -> pb.TxnResponse:
    """The answer to a transaction inside `response`."""
    if not response.HasField("txn"):
        raise KvError("the node sent no transaction result", code=ErrorCode.INTERNAL)
    return response.txn


def result_from_response(inner: OpResponse, header: ResponseHeader | None = None) -> OpResult:
    """The result of one key operation; `header`: the transaction's, for an operation inside
    one (those carry no header of their own)."""
    if header is None:
        header = header_from_pb(inner.header)
    if isinstance(inner, pb.GetResponse):
        return GetResult(header, kv_from_pb(inner.kv) if inner.found else None)
    if isinstance(inner, pb.PutResponse):
        return PutResult(header, kv_from_pb(inner.prev_kv) if inner.had_prev else None)
    return DeleteResult(
        header, inner.deleted, kv_from_pb(inner.prev_kv) if inner.HasField("prev_kv") else None
    )


def txn_from_pb(response: pb.TxnResponse) -> TxnResult:
    header = header_from_pb(response.header)
    return TxnResult(
        header=header,
        succeeded=response.succeeded,
        responses=tuple(result_from_response(inner_response(op), header) for op in response.responses),
    )


def compare_to_pb(compare: Compare) -> pb.Compare:
    return pb.Compare(
        key=compare.key,
        target=compare.target.value,
        result=compare.result.value,
        value=compare.value,
        number=compare.number,
    )


def member_from_pb(member: pb.Member) -> Member:
    return Member(member.id, member.name, member.address, member.learner, MemberState(member.state), member.lost)


def partition_from_pb(info: pb.PartitionInfo) -> PartitionInfo:
    return PartitionInfo(
        id=info.id,
        replicas=tuple(info.replicas),
        leader=info.leader,
        term=info.term,
        commit_index=info.commit_index,
        applied_index=info.applied_index,
        learners=tuple(info.learners),
        moving_to=tuple(info.moving_to),
        move_step=info.move_step,
        move_steps=info.move_steps,
    )


def layout_from_pb(response: pb.PartitionsResponse) -> ClusterLayout:
    return ClusterLayout(
        epoch=response.epoch,
        partition_count=response.partition_count,
        replication_factor=response.replication_factor,
        partitions=tuple(sorted(map(partition_from_pb, response.partitions), key=lambda info: info.id)),
        members=tuple(sorted(map(member_from_pb, response.members), key=lambda member: member.id)),
    )


def status_from_pb(response: pb.StatusResponse) -> NodeStatus:
    return NodeStatus(
        node_id=response.node_id,
        address=response.address,
        version=response.version,
        epoch=response.epoch,
        partitions_hosted=response.partitions_hosted,
        partitions_led=response.partitions_led,
        partitions=tuple(map(partition_from_pb, response.partitions)),
        db_size_bytes=response.db_size_bytes,
        stored_bytes=response.stored_bytes,
        quota_backend_bytes=response.quota_backend_bytes,
        alarms=tuple(Alarm(alarm.node_id, pb.AlarmType.Name(alarm.type)) for alarm in response.alarms),
    )


def rate_limit_from_pb(limit: pb.RateLimit) -> RateLimit:
    return RateLimit(limit.requests_per_second, limit.bytes_per_second)


def rate_limit_to_pb(limit: RateLimit) -> pb.RateLimit:
    return pb.RateLimit(requests_per_second=limit.requests_per_second, bytes_per_second=limit.bytes_per_second)


def user_from_pb(user: pb.User) -> User:
    return User(user.name, tuple(user.roles), rate_limit_from_pb(user.rate_limit), user.has_password)


def role_from_pb(role: pb.Role) -> Role:
    return Role(role.name, tuple(Grant(grant.prefix, Permission(grant.permission)) for grant in role.permissions),
                rate_limit_from_pb(role.rate_limit))
