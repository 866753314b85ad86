from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReadConsistency(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LINEARIZABLE: _ClassVar[ReadConsistency]
    LEASE: _ClassVar[ReadConsistency]
    SESSION: _ClassVar[ReadConsistency]
    STALE: _ClassVar[ReadConsistency]

class WriteConcern(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MAJORITY: _ClassVar[WriteConcern]
    ALL: _ClassVar[WriteConcern]
    LEADER: _ClassVar[WriteConcern]

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OK: _ClassVar[ErrorCode]
    NOT_FOUND: _ClassVar[ErrorCode]
    NOT_LEADER: _ClassVar[ErrorCode]
    WRONG_NODE: _ClassVar[ErrorCode]
    INVALID_ARGUMENT: _ClassVar[ErrorCode]
    UNAVAILABLE: _ClassVar[ErrorCode]
    TIMEOUT: _ClassVar[ErrorCode]
    CROSS_PARTITION: _ClassVar[ErrorCode]
    STALE_FENCING_TOKEN: _ClassVar[ErrorCode]
    COMPACTED: _ClassVar[ErrorCode]
    LEASE_NOT_FOUND: _ClassVar[ErrorCode]
    LOCK_NOT_HELD: _ClassVar[ErrorCode]
    INTERNAL: _ClassVar[ErrorCode]
    PERMISSION_DENIED: _ClassVar[ErrorCode]
    UNAUTHENTICATED: _ClassVar[ErrorCode]
    RESOURCE_EXHAUSTED: _ClassVar[ErrorCode]
    NO_SPACE: _ClassVar[ErrorCode]

class MemberState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTIVE: _ClassVar[MemberState]
    JOINING: _ClassVar[MemberState]
    LEAVING: _ClassVar[MemberState]
    REMOVED: _ClassVar[MemberState]

class AlarmType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NO_ALARM: _ClassVar[AlarmType]
    NOSPACE: _ClassVar[AlarmType]

class Permission(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    READ: _ClassVar[Permission]
    READWRITE: _ClassVar[Permission]
LINEARIZABLE: ReadConsistency
LEASE: ReadConsistency
SESSION: ReadConsistency
STALE: ReadConsistency
MAJORITY: WriteConcern
ALL: WriteConcern
LEADER: WriteConcern
OK: ErrorCode
NOT_FOUND: ErrorCode
NOT_LEADER: ErrorCode
WRONG_NODE: ErrorCode
INVALID_ARGUMENT: ErrorCode
UNAVAILABLE: ErrorCode
TIMEOUT: ErrorCode
CROSS_PARTITION: ErrorCode
STALE_FENCING_TOKEN: ErrorCode
COMPACTED: ErrorCode
LEASE_NOT_FOUND: ErrorCode
LOCK_NOT_HELD: ErrorCode
INTERNAL: ErrorCode
PERMISSION_DENIED: ErrorCode
UNAUTHENTICATED: ErrorCode
RESOURCE_EXHAUSTED: ErrorCode
NO_SPACE: ErrorCode
ACTIVE: MemberState
JOINING: MemberState
LEAVING: MemberState
REMOVED: MemberState
NO_ALARM: AlarmType
NOSPACE: AlarmType
READ: Permission
READWRITE: Permission

class Error(_message.Message):
    __slots__ = ("code", "message", "leader_hint", "leader_address", "epoch")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LEADER_HINT_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    code: ErrorCode
    message: str
    leader_hint: int
    leader_address: str
    epoch: int
    def __init__(self, code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ..., leader_hint: _Optional[int] = ..., leader_address: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class RequestHeader(_message.Message):
    __slots__ = ("client_id", "request_seq", "epoch", "timeout_ms", "lowest_pending_seq")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_SEQ_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    LOWEST_PENDING_SEQ_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    request_seq: int
    epoch: int
    timeout_ms: int
    lowest_pending_seq: int
    def __init__(self, client_id: _Optional[str] = ..., request_seq: _Optional[int] = ..., epoch: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., lowest_pending_seq: _Optional[int] = ...) -> None: ...

class ResponseHeader(_message.Message):
    __slots__ = ("partition", "revision", "served", "node_id", "epoch", "staleness_ms")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SERVED_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    STALENESS_MS_FIELD_NUMBER: _ClassVar[int]
    partition: int
    revision: int
    served: ReadConsistency
    node_id: int
    epoch: int
    staleness_ms: int
    def __init__(self, partition: _Optional[int] = ..., revision: _Optional[int] = ..., served: _Optional[_Union[ReadConsistency, str]] = ..., node_id: _Optional[int] = ..., epoch: _Optional[int] = ..., staleness_ms: _Optional[int] = ...) -> None: ...

class KeyValue(_message.Message):
    __slots__ = ("key", "value", "create_revision", "mod_revision", "version", "lease")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CREATE_REVISION_FIELD_NUMBER: _ClassVar[int]
    MOD_REVISION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., create_revision: _Optional[int] = ..., mod_revision: _Optional[int] = ..., version: _Optional[int] = ..., lease: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("header", "key", "consistency", "min_revision", "max_staleness_ms")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    MIN_REVISION_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_MS_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    key: bytes
    consistency: ReadConsistency
    min_revision: int
    max_staleness_ms: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., key: _Optional[bytes] = ..., consistency: _Optional[_Union[ReadConsistency, str]] = ..., min_revision: _Optional[int] = ..., max_staleness_ms: _Optional[int] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("header", "error", "found", "kv")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    KV_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    error: Error
    found: bool
    kv: KeyValue
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., found: _Optional[bool] = ..., kv: _Optional[_Union[KeyValue, _Mapping]] = ...) -> None: ...

class PutRequest(_message.Message):
    __slots__ = ("header", "key", "value", "lease", "prev_kv", "fencing_token", "concern")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    PREV_KV_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CONCERN_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    key: bytes
    value: bytes
    lease: int
    prev_kv: bool
    fencing_token: int
    concern: WriteConcern
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., lease: _Optional[int] = ..., prev_kv: _Optional[bool] = ..., fencing_token: _Optional[int] = ..., concern: _Optional[_Union[WriteConcern, str]] = ...) -> None: ...

class PutResponse(_message.Message):
    __slots__ = ("header", "error", "had_prev", "prev_kv")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    HAD_PREV_FIELD_NUMBER: _ClassVar[int]
    PREV_KV_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    error: Error
    had_prev: bool
    prev_kv: KeyValue
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., had_prev: _Optional[bool] = ..., prev_kv: _Optional[_Union[KeyValue, _Mapping]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("header", "key", "prev_kv", "fencing_token", "concern")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    PREV_KV_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CONCERN_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    key: bytes
    prev_kv: bool
    fencing_token: int
    concern: WriteConcern
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., key: _Optional[bytes] = ..., prev_kv: _Optional[bool] = ..., fencing_token: _Optional[int] = ..., concern: _Optional[_Union[WriteConcern, str]] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("header", "error", "deleted", "prev_kv")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    PREV_KV_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    error: Error
    deleted: bool
    prev_kv: KeyValue
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., deleted: _Optional[bool] = ..., prev_kv: _Optional[_Union[KeyValue, _Mapping]] = ...) -> None: ...

class ScanRequest(_message.Message):
    __slots__ = ("header", "start", "end", "prefix", "limit", "consistency", "keys_only", "partition")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    KEYS_ONLY_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    start: bytes
    end: bytes
    prefix: bytes
    limit: int
    consistency: ReadConsistency
    keys_only: bool
    partition: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., start: _Optional[bytes] = ..., end: _Optional[bytes] = ..., prefix: _Optional[bytes] = ..., limit: _Optional[int] = ..., consistency: _Optional[_Union[ReadConsistency, str]] = ..., keys_only: _Optional[bool] = ..., partition: _Optional[int] = ...) -> None: ...

class ScanResponse(_message.Message):
    __slots__ = ("header", "error", "kvs", "more")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    KVS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    error: Error
    kvs: _containers.RepeatedCompositeFieldContainer[KeyValue]
    more: bool
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., kvs: _Optional[_Iterable[_Union[KeyValue, _Mapping]]] = ..., more: _Optional[bool] = ...) -> None: ...

class Compare(_message.Message):
    __slots__ = ("key", "target", "result", "value", "number")
    class Target(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        VALUE: _ClassVar[Compare.Target]
        VERSION: _ClassVar[Compare.Target]
        MOD_REVISION: _ClassVar[Compare.Target]
        CREATE_REVISION: _ClassVar[Compare.Target]
    VALUE: Compare.Target
    VERSION: Compare.Target
    MOD_REVISION: Compare.Target
    CREATE_REVISION: Compare.Target
    class Result(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        EQUAL: _ClassVar[Compare.Result]
        NOT_EQUAL: _ClassVar[Compare.Result]
        GREATER: _ClassVar[Compare.Result]
        LESS: _ClassVar[Compare.Result]
    EQUAL: Compare.Result
    NOT_EQUAL: Compare.Result
    GREATER: Compare.Result
    LESS: Compare.Result
    KEY_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    target: Compare.Target
    result: Compare.Result
    value: bytes
    number: int
    def __init__(self, key: _Optional[bytes] = ..., target: _Optional[_Union[Compare.Target, str]] = ..., result: _Optional[_Union[Compare.Result, str]] = ..., value: _Optional[bytes] = ..., number: _Optional[int] = ...) -> None: ...

class RequestOp(_message.Message):
    __slots__ = ("get", "put", "delete", "txn")
    GET_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    TXN_FIELD_NUMBER: _ClassVar[int]
    get: GetRequest
    put: PutRequest
    delete: DeleteRequest
    txn: TxnRequest
    def __init__(self, get: _Optional[_Union[GetRequest, _Mapping]] = ..., put: _Optional[_Union[PutRequest, _Mapping]] = ..., delete: _Optional[_Union[DeleteRequest, _Mapping]] = ..., txn: _Optional[_Union[TxnRequest, _Mapping]] = ...) -> None: ...

class ResponseOp(_message.Message):
    __slots__ = ("get", "put", "delete", "txn")
    GET_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    TXN_FIELD_NUMBER: _ClassVar[int]
    get: GetResponse
    put: PutResponse
    delete: DeleteResponse
    txn: TxnResponse
    def __init__(self, get: _Optional[_Union[GetResponse, _Mapping]] = ..., put: _Optional[_Union[PutResponse, _Mapping]] = ..., delete: _Optional[_Union[DeleteResponse, _Mapping]] = ..., txn: _Optional[_Union[TxnResponse, _Mapping]] = ...) -> None: ...

class TxnRequest(_message.Message):
    __slots__ = ("header", "compare", "success", "failure", "concern", "fencing_token")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    COMPARE_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    CONCERN_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    compare: _containers.RepeatedCompositeFieldContainer[Compare]
    success: _containers.RepeatedCompositeFieldContainer[RequestOp]
    failure: _containers.RepeatedCompositeFieldContainer[RequestOp]
    concern: WriteConcern
    fencing_token: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., compare: _Optional[_Iterable[_Union[Compare, _Mapping]]] = ..., success: _Optional[_Iterable[_Union[RequestOp, _Mapping]]] = ..., failure: _Optional[_Iterable[_Union[RequestOp, _Mapping]]] = ..., concern: _Optional[_Union[WriteConcern, str]] = ..., fencing_token: _Optional[int] = ...) -> None: ...

class TxnResponse(_message.Message):
    __slots__ = ("header", "error", "succeeded", "responses")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    error: Error
    succeeded: bool
    responses: _containers.RepeatedCompositeFieldContainer[ResponseOp]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., succeeded: _Optional[bool] = ..., responses: _Optional[_Iterable[_Union[ResponseOp, _Mapping]]] = ...) -> None: ...

class BatchRequest(_message.Message):
    __slots__ = ("ops",)
    OPS_FIELD_NUMBER: _ClassVar[int]
    ops: _containers.RepeatedCompositeFieldContainer[RequestOp]
    def __init__(self, ops: _Optional[_Iterable[_Union[RequestOp, _Mapping]]] = ...) -> None: ...

class BatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ResponseOp]
    def __init__(self, results: _Optional[_Iterable[_Union[ResponseOp, _Mapping]]] = ...) -> None: ...

class LeaseGrantRequest(_message.Message):
    __slots__ = ("header", "ttl_seconds", "partition", "id")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    ttl_seconds: int
    partition: int
    id: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., ttl_seconds: _Optional[int] = ..., partition: _Optional[int] = ..., id: _Optional[int] = ...) -> None: ...

class LeaseGrantResponse(_message.Message):
    __slots__ = ("header", "error", "id", "ttl_seconds")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    error: Error
    id: int
    ttl_seconds: int
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., id: _Optional[int] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class LeaseRevokeRequest(_message.Message):
    __slots__ = ("header", "id")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    id: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., id: _Optional[int] = ...) -> None: ...

class LeaseRevokeResponse(_message.Message):
    __slots__ = ("header", "error")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    error: Error
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class LeaseKeepAliveRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class LeaseKeepAliveResponse(_message.Message):
    __slots__ = ("header", "error", "id", "ttl_seconds")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    error: Error
    id: int
    ttl_seconds: int
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., id: _Optional[int] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class LeaseTimeToLiveRequest(_message.Message):
    __slots__ = ("header", "id", "keys")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    id: int
    keys: bool
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., id: _Optional[int] = ..., keys: _Optional[bool] = ...) -> None: ...

class LeaseTimeToLiveResponse(_message.Message):
    __slots__ = ("header", "error", "id", "ttl_seconds", "granted_ttl_seconds", "keys")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GRANTED_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    error: Error
    id: int
    ttl_seconds: int
    granted_ttl_seconds: int
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., id: _Optional[int] = ..., ttl_seconds: _Optional[int] = ..., granted_ttl_seconds: _Optional[int] = ..., keys: _Optional[_Iterable[bytes]] = ...) -> None: ...

class LeaseLeasesRequest(_message.Message):
    __slots__ = ("header", "partition")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    partition: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., partition: _Optional[int] = ...) -> None: ...

class LeaseStatus(_message.Message):
    __slots__ = ("id", "ttl_seconds", "granted_ttl_seconds")
    ID_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GRANTED_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    id: int
    ttl_seconds: int
    granted_ttl_seconds: int
    def __init__(self, id: _Optional[int] = ..., ttl_seconds: _Optional[int] = ..., granted_ttl_seconds: _Optional[int] = ...) -> None: ...

class LeaseLeasesResponse(_message.Message):
    __slots__ = ("header", "error", "leases")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    error: Error
    leases: _containers.RepeatedCompositeFieldContainer[LeaseStatus]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., leases: _Optional[_Iterable[_Union[LeaseStatus, _Mapping]]] = ...) -> None: ...

class LockRequest(_message.Message):
    __slots__ = ("header", "name", "lease")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    name: bytes
    lease: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., name: _Optional[bytes] = ..., lease: _Optional[int] = ...) -> None: ...

class LockResponse(_message.Message):
    __slots__ = ("header", "error", "key", "fencing_token")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    error: Error
    key: bytes
    fencing_token: int
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., key: _Optional[bytes] = ..., fencing_token: _Optional[int] = ...) -> None: ...

class UnlockRequest(_message.Message):
    __slots__ = ("header", "key")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    key: bytes
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., key: _Optional[bytes] = ...) -> None: ...

class UnlockResponse(_message.Message):
    __slots__ = ("header", "error")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    error: Error
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class WatchCreateRequest(_message.Message):
    __slots__ = ("watch_id", "partition", "key", "prefix", "start_revision", "prev_kv", "progress_notify")
    WATCH_ID_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    START_REVISION_FIELD_NUMBER: _ClassVar[int]
    PREV_KV_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_NOTIFY_FIELD_NUMBER: _ClassVar[int]
    watch_id: int
    partition: int
    key: bytes
    prefix: bool
    start_revision: int
    prev_kv: bool
    progress_notify: bool
    def __init__(self, watch_id: _Optional[int] = ..., partition: _Optional[int] = ..., key: _Optional[bytes] = ..., prefix: _Optional[bool] = ..., start_revision: _Optional[int] = ..., prev_kv: _Optional[bool] = ..., progress_notify: _Optional[bool] = ...) -> None: ...

class WatchCancelRequest(_message.Message):
    __slots__ = ("watch_id",)
    WATCH_ID_FIELD_NUMBER: _ClassVar[int]
    watch_id: int
    def __init__(self, watch_id: _Optional[int] = ...) -> None: ...

class WatchProgressRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("create", "cancel", "progress")
    CREATE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    create: WatchCreateRequest
    cancel: WatchCancelRequest
    progress: WatchProgressRequest
    def __init__(self, create: _Optional[_Union[WatchCreateRequest, _Mapping]] = ..., cancel: _Optional[_Union[WatchCancelRequest, _Mapping]] = ..., progress: _Optional[_Union[WatchProgressRequest, _Mapping]] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("type", "kv", "prev_kv")
    class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PUT: _ClassVar[WatchEvent.EventType]
        DELETE: _ClassVar[WatchEvent.EventType]
    PUT: WatchEvent.EventType
    DELETE: WatchEvent.EventType
    TYPE_FIELD_NUMBER: _ClassVar[int]
    KV_FIELD_NUMBER: _ClassVar[int]
    PREV_KV_FIELD_NUMBER: _ClassVar[int]
    type: WatchEvent.EventType
    kv: KeyValue
    prev_kv: KeyValue
    def __init__(self, type: _Optional[_Union[WatchEvent.EventType, str]] = ..., kv: _Optional[_Union[KeyValue, _Mapping]] = ..., prev_kv: _Optional[_Union[KeyValue, _Mapping]] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("header", "error", "watch_id", "created", "canceled", "compact_revision", "fragment", "events")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WATCH_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    CANCELED_FIELD_NUMBER: _ClassVar[int]
    COMPACT_REVISION_FIELD_NUMBER: _ClassVar[int]
    FRAGMENT_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    error: Error
    watch_id: int
    created: bool
    canceled: bool
    compact_revision: int
    fragment: bool
    events: _containers.RepeatedCompositeFieldContainer[WatchEvent]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., watch_id: _Optional[int] = ..., created: _Optional[bool] = ..., canceled: _Optional[bool] = ..., compact_revision: _Optional[int] = ..., fragment: _Optional[bool] = ..., events: _Optional[_Iterable[_Union[WatchEvent, _Mapping]]] = ...) -> None: ...

class Member(_message.Message):
    __slots__ = ("id", "name", "address", "learner", "state", "lost")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LEARNER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    address: str
    learner: bool
    state: MemberState
    lost: bool
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., address: _Optional[str] = ..., learner: _Optional[bool] = ..., state: _Optional[_Union[MemberState, str]] = ..., lost: _Optional[bool] = ...) -> None: ...

class PartitionInfo(_message.Message):
    __slots__ = ("id", "replicas", "leader", "term", "commit_index", "applied_index", "learners", "moving_to", "move_step", "move_steps")
    ID_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    LEARNERS_FIELD_NUMBER: _ClassVar[int]
    MOVING_TO_FIELD_NUMBER: _ClassVar[int]
    MOVE_STEP_FIELD_NUMBER: _ClassVar[int]
    MOVE_STEPS_FIELD_NUMBER: _ClassVar[int]
    id: int
    replicas: _containers.RepeatedScalarFieldContainer[int]
    leader: int
    term: int
    commit_index: int
    applied_index: int
    learners: _containers.RepeatedScalarFieldContainer[int]
    moving_to: _containers.RepeatedScalarFieldContainer[int]
    move_step: int
    move_steps: int
    def __init__(self, id: _Optional[int] = ..., replicas: _Optional[_Iterable[int]] = ..., leader: _Optional[int] = ..., term: _Optional[int] = ..., commit_index: _Optional[int] = ..., applied_index: _Optional[int] = ..., learners: _Optional[_Iterable[int]] = ..., moving_to: _Optional[_Iterable[int]] = ..., move_step: _Optional[int] = ..., move_steps: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("node_id", "address", "version", "epoch", "partitions_hosted", "partitions_led", "partitions", "db_size_bytes", "quota_backend_bytes", "alarms", "stored_bytes")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_HOSTED_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_LED_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    DB_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    QUOTA_BACKEND_BYTES_FIELD_NUMBER: _ClassVar[int]
    ALARMS_FIELD_NUMBER: _ClassVar[int]
    STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    address: str
    version: str
    epoch: int
    partitions_hosted: int
    partitions_led: int
    partitions: _containers.RepeatedCompositeFieldContainer[PartitionInfo]
    db_size_bytes: int
    quota_backend_bytes: int
    alarms: _containers.RepeatedCompositeFieldContainer[Alarm]
    stored_bytes: int
    def __init__(self, node_id: _Optional[int] = ..., address: _Optional[str] = ..., version: _Optional[str] = ..., epoch: _Optional[int] = ..., partitions_hosted: _Optional[int] = ..., partitions_led: _Optional[int] = ..., partitions: _Optional[_Iterable[_Union[PartitionInfo, _Mapping]]] = ..., db_size_bytes: _Optional[int] = ..., quota_backend_bytes: _Optional[int] = ..., alarms: _Optional[_Iterable[_Union[Alarm, _Mapping]]] = ..., stored_bytes: _Optional[int] = ...) -> None: ...

class Alarm(_message.Message):
    __slots__ = ("node_id", "type")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    type: AlarmType
    def __init__(self, node_id: _Optional[int] = ..., type: _Optional[_Union[AlarmType, str]] = ...) -> None: ...

class MembersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MembersResponse(_message.Message):
    __slots__ = ("epoch", "members")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    members: _containers.RepeatedCompositeFieldContainer[Member]
    def __init__(self, epoch: _Optional[int] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ...) -> None: ...

class PartitionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PartitionsResponse(_message.Message):
    __slots__ = ("epoch", "partition_count", "replication_factor", "partitions", "members")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PARTITION_COUNT_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    partition_count: int
    replication_factor: int
    partitions: _containers.RepeatedCompositeFieldContainer[PartitionInfo]
    members: _containers.RepeatedCompositeFieldContainer[Member]
    def __init__(self, epoch: _Optional[int] = ..., partition_count: _Optional[int] = ..., replication_factor: _Optional[int] = ..., partitions: _Optional[_Iterable[_Union[PartitionInfo, _Mapping]]] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ...) -> None: ...

class MemberAddRequest(_message.Message):
    __slots__ = ("address",)
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    address: str
    def __init__(self, address: _Optional[str] = ...) -> None: ...

class MemberRemoveRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    def __init__(self, node_id: _Optional[int] = ...) -> None: ...

class MemberReplaceRequest(_message.Message):
    __slots__ = ("node_id", "address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    address: str
    def __init__(self, node_id: _Optional[int] = ..., address: _Optional[str] = ...) -> None: ...

class MemberChangeResponse(_message.Message):
    __slots__ = ("header", "error", "member", "epoch")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    error: Error
    member: Member
    epoch: int
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., member: _Optional[_Union[Member, _Mapping]] = ..., epoch: _Optional[int] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("address",)
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    address: str
    def __init__(self, address: _Optional[str] = ...) -> None: ...

class JoinResponse(_message.Message):
    __slots__ = ("error", "node_id", "cluster_id", "partition_count", "members")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    PARTITION_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    error: Error
    node_id: int
    cluster_id: str
    partition_count: int
    members: _containers.RepeatedCompositeFieldContainer[Member]
    def __init__(self, error: _Optional[_Union[Error, _Mapping]] = ..., node_id: _Optional[int] = ..., cluster_id: _Optional[str] = ..., partition_count: _Optional[int] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ...) -> None: ...

class KeyPermission(_message.Message):
    __slots__ = ("prefix", "permission")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    PERMISSION_FIELD_NUMBER: _ClassVar[int]
    prefix: bytes
    permission: Permission
    def __init__(self, prefix: _Optional[bytes] = ..., permission: _Optional[_Union[Permission, str]] = ...) -> None: ...

class RateLimit(_message.Message):
    __slots__ = ("requests_per_second", "bytes_per_second")
    REQUESTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    requests_per_second: float
    bytes_per_second: float
    def __init__(self, requests_per_second: _Optional[float] = ..., bytes_per_second: _Optional[float] = ...) -> None: ...

class User(_message.Message):
    __slots__ = ("name", "roles", "rate_limit", "has_password")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    HAS_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    name: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    rate_limit: RateLimit
    has_password: bool
    def __init__(self, name: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., rate_limit: _Optional[_Union[RateLimit, _Mapping]] = ..., has_password: _Optional[bool] = ...) -> None: ...

class Role(_message.Message):
    __slots__ = ("name", "permissions", "rate_limit")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    name: str
    permissions: _containers.RepeatedCompositeFieldContainer[KeyPermission]
    rate_limit: RateLimit
    def __init__(self, name: _Optional[str] = ..., permissions: _Optional[_Iterable[_Union[KeyPermission, _Mapping]]] = ..., rate_limit: _Optional[_Union[RateLimit, _Mapping]] = ...) -> None: ...

class AuthenticateRequest(_message.Message):
    __slots__ = ("name", "password")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    name: str
    password: str
    def __init__(self, name: _Optional[str] = ..., password: _Optional[str] = ...) -> None: ...

class AuthenticateResponse(_message.Message):
    __slots__ = ("header", "error", "token", "expires_at_unix_ms")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    error: Error
    token: str
    expires_at_unix_ms: int
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., token: _Optional[str] = ..., expires_at_unix_ms: _Optional[int] = ...) -> None: ...

class AuthChangeResponse(_message.Message):
    __slots__ = ("header", "error")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    error: Error
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class AuthEnableRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AuthDisableRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AuthStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AuthStatusResponse(_message.Message):
    __slots__ = ("header", "error", "enabled", "revision", "user")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    error: Error
    enabled: bool
    revision: int
    user: str
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., enabled: _Optional[bool] = ..., revision: _Optional[int] = ..., user: _Optional[str] = ...) -> None: ...

class UserAddRequest(_message.Message):
    __slots__ = ("name", "password", "no_password")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    NO_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    name: str
    password: str
    no_password: bool
    def __init__(self, name: _Optional[str] = ..., password: _Optional[str] = ..., no_password: _Optional[bool] = ...) -> None: ...

class UserDeleteRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UserChangePasswordRequest(_message.Message):
    __slots__ = ("name", "password")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    name: str
    password: str
    def __init__(self, name: _Optional[str] = ..., password: _Optional[str] = ...) -> None: ...

class UserGrantRoleRequest(_message.Message):
    __slots__ = ("user", "role")
    USER_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    user: str
    role: str
    def __init__(self, user: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class UserRevokeRoleRequest(_message.Message):
    __slots__ = ("user", "role")
    USER_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    user: str
    role: str
    def __init__(self, user: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class UserSetRateLimitRequest(_message.Message):
    __slots__ = ("name", "rate_limit")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    name: str
    rate_limit: RateLimit
    def __init__(self, name: _Optional[str] = ..., rate_limit: _Optional[_Union[RateLimit, _Mapping]] = ...) -> None: ...

class UserListRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UserListResponse(_message.Message):
    __slots__ = ("header", "error", "users")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    error: Error
    users: _containers.RepeatedCompositeFieldContainer[User]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., users: _Optional[_Iterable[_Union[User, _Mapping]]] = ...) -> None: ...

class RoleAddRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RoleDeleteRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RoleGrantPermissionRequest(_message.Message):
    __slots__ = ("role", "permission")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PERMISSION_FIELD_NUMBER: _ClassVar[int]
    role: str
    permission: KeyPermission
    def __init__(self, role: _Optional[str] = ..., permission: _Optional[_Union[KeyPermission, _Mapping]] = ...) -> None: ...

class RoleRevokePermissionRequest(_message.Message):
    __slots__ = ("role", "prefix")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    role: str
    prefix: bytes
    def __init__(self, role: _Optional[str] = ..., prefix: _Optional[bytes] = ...) -> None: ...

class RoleSetRateLimitRequest(_message.Message):
    __slots__ = ("name", "rate_limit")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    name: str
    rate_limit: RateLimit
    def __init__(self, name: _Optional[str] = ..., rate_limit: _Optional[_Union[RateLimit, _Mapping]] = ...) -> None: ...

class RoleListRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RoleListResponse(_message.Message):
    __slots__ = ("header", "error", "roles")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    error: Error
    roles: _containers.RepeatedCompositeFieldContainer[Role]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., roles: _Optional[_Iterable[_Union[Role, _Mapping]]] = ...) -> None: ...
