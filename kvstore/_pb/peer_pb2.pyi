from kvstore._pb import kvstore_pb2 as _kvstore_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PeerHello(_message.Message):
    __slots__ = ("node_id", "cluster_id", "epoch")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    cluster_id: str
    epoch: int
    def __init__(self, node_id: _Optional[int] = ..., cluster_id: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

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

class ProposeControlRequest(_message.Message):
    __slots__ = ("command",)
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    command: bytes
    def __init__(self, command: _Optional[bytes] = ...) -> None: ...
