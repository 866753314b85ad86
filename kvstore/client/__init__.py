"""The kvstore client: `Client` (asyncio) and `SyncClient` (blocking), typed errors, records and ops.

The errors are `kvstore.errors`' (one hierarchy for server and client), re-exported here.

Must not import `kvstore.node`: the client only speaks the public gRPC API.
"""

from kvstore.client import ops
from kvstore.client.client import DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_VALUE_BYTES, Client
from kvstore.client.leases import Acknowledgement, KeptLease, Lock, LockContext, Session
from kvstore.client.ops import Compare, DeleteOp, GetOp, Op, PutOp
from kvstore.client.sync import SyncClient, SyncLock, SyncLockContext, SyncSession, SyncWatch
from kvstore.client.types import (
    ClusterLayout,
    DeleteResult,
    EventType,
    GetResult,
    KeyValue,
    Lease,
    LeaseStatus,
    Member,
    MemberState,
    NodeStatus,
    OpResult,
    PartitionInfo,
    PutResult,
    ReadConsistency,
    ResponseHeader,
    TxnResult,
    WatchEvent,
    WriteConcern,
)
from kvstore.client.watch import Watch
from kvstore.errors import (
    BatchError,
    CrossPartitionError,
    ErrorCode,
    InvalidArgumentError,
    KvError,
    KvTimeoutError,
    LeaseNotFoundError,
    LockNotHeldError,
    NotFoundError,
    NotLeaderError,
    StaleFencingTokenError,
    TransportSecurityError,
    UnavailableError,
    WatchCompactedError,
    WrongNodeError,
)
from kvstore.tls import TlsConfig

__all__ = [
    "DEFAULT_MAX_KEY_BYTES",
    "DEFAULT_MAX_VALUE_BYTES",
    "Acknowledgement",
    "BatchError",
    "Client",
    "ClusterLayout",
    "Compare",
    "CrossPartitionError",
    "DeleteOp",
    "DeleteResult",
    "ErrorCode",
    "EventType",
    "GetOp",
    "GetResult",
    "InvalidArgumentError",
    "KeptLease",
    "KeyValue",
    "KvError",
    "KvTimeoutError",
    "Lease",
    "LeaseNotFoundError",
    "LeaseStatus",
    "Lock",
    "LockContext",
    "LockNotHeldError",
    "Member",
    "MemberState",
    "NodeStatus",
    "NotFoundError",
    "NotLeaderError",
    "Op",
    "OpResult",
    "PartitionInfo",
    "PutOp",
    "PutResult",
    "ReadConsistency",
    "ResponseHeader",
    "StaleFencingTokenError",
    "Session",
    "SyncClient",
    "SyncLock",
    "SyncLockContext",
    "SyncSession",
    "SyncWatch",
    "TlsConfig",
    "TransportSecurityError",
    "TxnResult",
    "UnavailableError",
    "Watch",
    "WatchCompactedError",
    "WatchEvent",
    "WriteConcern",
    "WrongNodeError",
    "ops",
]
