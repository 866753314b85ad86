from kvstore._pb import control_pb2 as _control_pb2
from kvstore._pb import kvstore_pb2 as _kvstore_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MetaMember(_message.Message):
    __slots__ = ("id", "address", "state", "lost", "tokens")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    id: int
    address: str
    state: _kvstore_pb2.MemberState
    lost: bool
    tokens: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, id: _Optional[int] = ..., address: _Optional[str] = ..., state: _Optional[_Union[_kvstore_pb2.MemberState, str]] = ..., lost: _Optional[bool] = ..., tokens: _Optional[_Iterable[int]] = ...) -> None: ...

class MetaPartition(_message.Message):
    __slots__ = ("replicas", "learners", "moving", "move_from", "move_to", "move_done")
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    LEARNERS_FIELD_NUMBER: _ClassVar[int]
    MOVING_FIELD_NUMBER: _ClassVar[int]
    MOVE_FROM_FIELD_NUMBER: _ClassVar[int]
    MOVE_TO_FIELD_NUMBER: _ClassVar[int]
    MOVE_DONE_FIELD_NUMBER: _ClassVar[int]
    replicas: _containers.RepeatedScalarFieldContainer[int]
    learners: _containers.RepeatedScalarFieldContainer[int]
    moving: bool
    move_from: _containers.RepeatedScalarFieldContainer[int]
    move_to: _containers.RepeatedScalarFieldContainer[int]
    move_done: int
    def __init__(self, replicas: _Optional[_Iterable[int]] = ..., learners: _Optional[_Iterable[int]] = ..., moving: _Optional[bool] = ..., move_from: _Optional[_Iterable[int]] = ..., move_to: _Optional[_Iterable[int]] = ..., move_done: _Optional[int] = ...) -> None: ...

class MetaState(_message.Message):
    __slots__ = ("cluster_id", "partition_count", "replication_factor", "vnodes", "epoch", "next_node_id", "members", "partitions", "meta_voters")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    PARTITION_COUNT_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    VNODES_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    NEXT_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    META_VOTERS_FIELD_NUMBER: _ClassVar[int]
    cluster_id: str
    partition_count: int
    replication_factor: int
    vnodes: int
    epoch: int
    next_node_id: int
    members: _containers.RepeatedCompositeFieldContainer[MetaMember]
    partitions: _containers.RepeatedCompositeFieldContainer[MetaPartition]
    meta_voters: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, cluster_id: _Optional[str] = ..., partition_count: _Optional[int] = ..., replication_factor: _Optional[int] = ..., vnodes: _Optional[int] = ..., epoch: _Optional[int] = ..., next_node_id: _Optional[int] = ..., members: _Optional[_Iterable[_Union[MetaMember, _Mapping]]] = ..., partitions: _Optional[_Iterable[_Union[MetaPartition, _Mapping]]] = ..., meta_voters: _Optional[_Iterable[int]] = ...) -> None: ...

class AddMember(_message.Message):
    __slots__ = ("address",)
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    address: str
    def __init__(self, address: _Optional[str] = ...) -> None: ...

class RemoveMember(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    def __init__(self, node_id: _Optional[int] = ...) -> None: ...

class ReplaceMember(_message.Message):
    __slots__ = ("node_id", "address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    address: str
    def __init__(self, node_id: _Optional[int] = ..., address: _Optional[str] = ...) -> None: ...

class MoveStepDone(_message.Message):
    __slots__ = ("partition", "step")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    partition: int
    step: int
    def __init__(self, partition: _Optional[int] = ..., step: _Optional[int] = ...) -> None: ...

class MetaCommand(_message.Message):
    __slots__ = ("add_member", "remove_member", "replace_member", "move_step_done", "control")
    ADD_MEMBER_FIELD_NUMBER: _ClassVar[int]
    REMOVE_MEMBER_FIELD_NUMBER: _ClassVar[int]
    REPLACE_MEMBER_FIELD_NUMBER: _ClassVar[int]
    MOVE_STEP_DONE_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    add_member: AddMember
    remove_member: RemoveMember
    replace_member: ReplaceMember
    move_step_done: MoveStepDone
    control: _control_pb2.ControlCommand
    def __init__(self, add_member: _Optional[_Union[AddMember, _Mapping]] = ..., remove_member: _Optional[_Union[RemoveMember, _Mapping]] = ..., replace_member: _Optional[_Union[ReplaceMember, _Mapping]] = ..., move_step_done: _Optional[_Union[MoveStepDone, _Mapping]] = ..., control: _Optional[_Union[_control_pb2.ControlCommand, _Mapping]] = ...) -> None: ...

class MetaResult(_message.Message):
    __slots__ = ("node_id", "refusal", "message", "epoch", "revision")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    refusal: int
    message: str
    epoch: int
    revision: int
    def __init__(self, node_id: _Optional[int] = ..., refusal: _Optional[int] = ..., message: _Optional[str] = ..., epoch: _Optional[int] = ..., revision: _Optional[int] = ...) -> None: ...

class MetaSnapshot(_message.Message):
    __slots__ = ("cluster", "control")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    cluster: bytes
    control: bytes
    def __init__(self, cluster: _Optional[bytes] = ..., control: _Optional[bytes] = ...) -> None: ...
