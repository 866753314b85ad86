from kvstore._pb import meta_pb2 as _meta_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PeerRefusal(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCEPTED: _ClassVar[PeerRefusal]
    OTHER_CLUSTER: _ClassVar[PeerRefusal]
    NOT_A_MEMBER: _ClassVar[PeerRefusal]
    REUSED_NODE_ID: _ClassVar[PeerRefusal]
ACCEPTED: PeerRefusal
OTHER_CLUSTER: PeerRefusal
NOT_A_MEMBER: PeerRefusal
REUSED_NODE_ID: PeerRefusal

class PeerHello(_message.Message):
    __slots__ = ("node_id", "cluster_id", "epoch", "incarnation", "refusal")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    cluster_id: str
    epoch: int
    incarnation: str
    refusal: PeerRefusal
    def __init__(self, node_id: _Optional[int] = ..., cluster_id: _Optional[str] = ..., epoch: _Optional[int] = ..., incarnation: _Optional[str] = ..., refusal: _Optional[_Union[PeerRefusal, str]] = ...) -> None: ...

class PeerFrame(_message.Message):
    __slots__ = ("hello", "raft_batch")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    RAFT_BATCH_FIELD_NUMBER: _ClassVar[int]
    hello: PeerHello
    raft_batch: bytes
    def __init__(self, hello: _Optional[_Union[PeerHello, _Mapping]] = ..., raft_batch: _Optional[bytes] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("group_id", "from_node", "to_node", "index", "term", "offset", "data", "last", "meta")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    group_id: int
    from_node: int
    to_node: int
    index: int
    term: int
    offset: int
    data: bytes
    last: bool
    meta: bytes
    def __init__(self, group_id: _Optional[int] = ..., from_node: _Optional[int] = ..., to_node: _Optional[int] = ..., index: _Optional[int] = ..., term: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., last: _Optional[bool] = ..., meta: _Optional[bytes] = ...) -> None: ...

class SnapshotAck(_message.Message):
    __slots__ = ("ok", "error")
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    error: str
    def __init__(self, ok: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...
