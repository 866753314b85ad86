from kvstore._pb import kvstore_pb2 as _kvstore_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LogCommand(_message.Message):
    __slots__ = ("put", "delete", "txn", "lease_grant", "lease_revoke", "lease_checkpoints", "lease_expiries", "lock", "unlock")
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    TXN_FIELD_NUMBER: _ClassVar[int]
    LEASE_GRANT_FIELD_NUMBER: _ClassVar[int]
    LEASE_REVOKE_FIELD_NUMBER: _ClassVar[int]
    LEASE_CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRIES_FIELD_NUMBER: _ClassVar[int]
    LOCK_FIELD_NUMBER: _ClassVar[int]
    UNLOCK_FIELD_NUMBER: _ClassVar[int]
    put: _kvstore_pb2.PutRequest
    delete: _kvstore_pb2.DeleteRequest
    txn: _kvstore_pb2.TxnRequest
    lease_grant: _kvstore_pb2.LeaseGrantRequest
    lease_revoke: _kvstore_pb2.LeaseRevokeRequest
    lease_checkpoints: LeaseCheckpoints
    lease_expiries: LeaseExpiries
    lock: _kvstore_pb2.LockRequest
    unlock: _kvstore_pb2.UnlockRequest
    def __init__(self, put: _Optional[_Union[_kvstore_pb2.PutRequest, _Mapping]] = ..., delete: _Optional[_Union[_kvstore_pb2.DeleteRequest, _Mapping]] = ..., txn: _Optional[_Union[_kvstore_pb2.TxnRequest, _Mapping]] = ..., lease_grant: _Optional[_Union[_kvstore_pb2.LeaseGrantRequest, _Mapping]] = ..., lease_revoke: _Optional[_Union[_kvstore_pb2.LeaseRevokeRequest, _Mapping]] = ..., lease_checkpoints: _Optional[_Union[LeaseCheckpoints, _Mapping]] = ..., lease_expiries: _Optional[_Union[LeaseExpiries, _Mapping]] = ..., lock: _Optional[_Union[_kvstore_pb2.LockRequest, _Mapping]] = ..., unlock: _Optional[_Union[_kvstore_pb2.UnlockRequest, _Mapping]] = ...) -> None: ...

class LeaseCheckpoint(_message.Message):
    __slots__ = ("id", "revision", "remaining_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    REMAINING_MS_FIELD_NUMBER: _ClassVar[int]
    id: int
    revision: int
    remaining_ms: int
    def __init__(self, id: _Optional[int] = ..., revision: _Optional[int] = ..., remaining_ms: _Optional[int] = ...) -> None: ...

class LeaseCheckpoints(_message.Message):
    __slots__ = ("checkpoints",)
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    checkpoints: _containers.RepeatedCompositeFieldContainer[LeaseCheckpoint]
    def __init__(self, checkpoints: _Optional[_Iterable[_Union[LeaseCheckpoint, _Mapping]]] = ...) -> None: ...

class LeaseExpiry(_message.Message):
    __slots__ = ("id", "revision")
    ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    id: int
    revision: int
    def __init__(self, id: _Optional[int] = ..., revision: _Optional[int] = ...) -> None: ...

class LeaseExpiries(_message.Message):
    __slots__ = ("expiries",)
    EXPIRIES_FIELD_NUMBER: _ClassVar[int]
    expiries: _containers.RepeatedCompositeFieldContainer[LeaseExpiry]
    def __init__(self, expiries: _Optional[_Iterable[_Union[LeaseExpiry, _Mapping]]] = ...) -> None: ...

class LogResponse(_message.Message):
    __slots__ = ("put", "delete", "txn", "lease_grant", "lease_revoke", "lock", "unlock")
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    TXN_FIELD_NUMBER: _ClassVar[int]
    LEASE_GRANT_FIELD_NUMBER: _ClassVar[int]
    LEASE_REVOKE_FIELD_NUMBER: _ClassVar[int]
    LOCK_FIELD_NUMBER: _ClassVar[int]
    UNLOCK_FIELD_NUMBER: _ClassVar[int]
    put: _kvstore_pb2.PutResponse
    delete: _kvstore_pb2.DeleteResponse
    txn: _kvstore_pb2.TxnResponse
    lease_grant: _kvstore_pb2.LeaseGrantResponse
    lease_revoke: _kvstore_pb2.LeaseRevokeResponse
    lock: _kvstore_pb2.LockResponse
    unlock: _kvstore_pb2.UnlockResponse
    def __init__(self, put: _Optional[_Union[_kvstore_pb2.PutResponse, _Mapping]] = ..., delete: _Optional[_Union[_kvstore_pb2.DeleteResponse, _Mapping]] = ..., txn: _Optional[_Union[_kvstore_pb2.TxnResponse, _Mapping]] = ..., lease_grant: _Optional[_Union[_kvstore_pb2.LeaseGrantResponse, _Mapping]] = ..., lease_revoke: _Optional[_Union[_kvstore_pb2.LeaseRevokeResponse, _Mapping]] = ..., lock: _Optional[_Union[_kvstore_pb2.LockResponse, _Mapping]] = ..., unlock: _Optional[_Union[_kvstore_pb2.UnlockResponse, _Mapping]] = ...) -> None: ...
