"""The client's public records and enums; plain Python, independent of protobuf classes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from kvstore._pb import kvstore_pb2 as pb


# Values come from the generated module so the two can never drift apart.
class ReadConsistency(IntEnum):
    """How fresh a read must be (the `ReadConsistency` of the API, docs/architecture.md)."""

    LINEARIZABLE = pb.LINEARIZABLE
    LEASE = pb.LEASE
    SESSION = pb.SESSION
    STALE = pb.STALE


class WriteConcern(IntEnum):
    """When a write is acknowledged (the `WriteConcern` of the API, docs/architecture.md)."""

    MAJORITY = pb.MAJORITY
    ALL = pb.ALL
    LEADER = pb.LEADER


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True, slots=True)
class ResponseHeader:
    """Where and how a request was served."""

    partition: int
    revision: int
    served: ReadConsistency
    node_id: int
    epoch: int
    staleness_ms: int


@dataclass(frozen=True, slots=True)
class GetResult:
    header: ResponseHeader
    kv: KeyValue | None  # None: the key does not exist

    @property
    def found(self) -> bool:
        return self.kv is not None


@dataclass(frozen=True, slots=True)
class PutResult:
    header: ResponseHeader
    prev_kv: KeyValue | None  # only filled when asked for with prev_kv=True and the key existed


@dataclass(frozen=True, slots=True)
class DeleteResult:
    header: ResponseHeader
    deleted: bool
    prev_kv: KeyValue | None


OpResult = GetResult | PutResult | DeleteResult


@dataclass(frozen=True, slots=True)
class TxnResult:
    header: ResponseHeader
    succeeded: bool  # True: the compares held and the success ops ran; else the failure ops ran
    responses: tuple[OpResult, ...]


class MemberState(IntEnum):
    """Where a member is in its life (docs/membership.md)."""

    JOINING = pb.JOINING  # added; partitions are moving to it
    ACTIVE = pb.ACTIVE
    LEAVING = pb.LEAVING  # being removed or replaced; its partitions are moving away
    REMOVED = pb.REMOVED  # gone for good; its id is never given out again


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    name: str
    address: str
    learner: bool
    state: MemberState = MemberState.ACTIVE
    lost: bool = False  # replaced: its data is gone or untrusted


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    id: int
    replicas: tuple[int, ...]  # voters, preferred leader first
    leader: int  # 0 = unknown
    term: int
    commit_index: int
    applied_index: int
    learners: tuple[int, ...] = ()
    moving_to: tuple[int, ...] = ()  # the replicas a move under way ends with (empty: not moving)
    move_step: int = 0  # steps of that move done, of `move_steps`
    move_steps: int = 0


@dataclass(frozen=True, slots=True)
class ClusterLayout:
    """The cluster map as a node reported it: members and where each partition lives."""

    epoch: int
    partition_count: int
    replication_factor: int
    partitions: tuple[PartitionInfo, ...]
    members: tuple[Member, ...]


@dataclass(frozen=True, slots=True)
class NodeStatus:
    node_id: int
    address: str
    version: str
    epoch: int
    partitions_hosted: int
    partitions_led: int
    partitions: tuple[PartitionInfo, ...]
    db_size_bytes: int
    stored_bytes: int = 0  # the keys and values of its replicas: what the space quota counts
    quota_backend_bytes: int = 0  # 0: no quota
    alarms: tuple[Alarm, ...] = ()  # the cluster's raised alarms, as the node has applied them


@dataclass(frozen=True, slots=True)
class Alarm:
    node_id: int  # the member that raised it
    type: str  # "NOSPACE": the member passed the space quota


class Permission(IntEnum):
    READ = pb.READ
    READWRITE = pb.READWRITE


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Operations and request bytes per second per node; 0: not set here."""

    requests_per_second: float = 0.0
    bytes_per_second: float = 0.0


@dataclass(frozen=True, slots=True)
class User:
    name: str
    roles: tuple[str, ...]
    rate_limit: RateLimit
    has_password: bool  # False: signs in with a client certificate only


@dataclass(frozen=True, slots=True)
class Grant:
    prefix: bytes  # b"": every key
    permission: Permission


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    grants: tuple[Grant, ...]
    rate_limit: RateLimit


@dataclass(frozen=True, slots=True)
class AuthStatus:
    enabled: bool
    revision: int  # the auth revision the node answering has applied
    user: str  # who the node takes the caller for ("" when anonymous)


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease granted: its id (which encodes its partition) and TTL in seconds."""

    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseStatus:
    """A lease as the leader of its partition sees it: at least `ttl` seconds before it can
    expire, of the `granted_ttl` it was granted; `keys` attached when asked for."""

    id: int
    ttl: int
    granted_ttl: int
    keys: tuple[bytes, ...] = ()


class EventType(IntEnum):
    """What a watch event is: a key written or deleted."""

    PUT = pb.WatchEvent.PUT
    DELETE = pb.WatchEvent.DELETE


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change a watch saw (docs/watch.md): `key` put (with its new `value`, `create_revision`,
    `version` and `lease`) or deleted (those four empty) at `revision` of `partition`;
    `prev_kv`, when asked for, is the key as it was before (None if it did not exist)."""

    type: EventType
    key: bytes
    value: bytes
    revision: int
    partition: int
    create_revision: int
    version: int
    lease: int
    prev_kv: KeyValue | None = None
