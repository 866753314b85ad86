"""The kvstore client: `Client` (asyncio) and `SyncClient` (blocking), typed errors, records and ops.

The errors are `kvstore.errors`' (one hierarchy for server and client), re-exported here.

Must not import `kvstore.node`: the client only speaks the public gRPC API.
"""

from kvstore.client import ops
from kvstore.client.client import DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_VALUE_BYTES, Client
from kvstore.client.ops import Compare, DeleteOp, GetOp, Op, PutOp
from kvstore.client.sync import SyncClient
from kvstore.client.types import (
    ClusterLayout,
    DeleteResult,
    GetResult,
    KeyValue,
    Member,
    NodeStatus,
    OpResult,
    PartitionInfo,
    PutResult,
    ReadConsistency,
    ResponseHeader,
    TxnResult,
    WriteConcern,
)
from kvstore.errors import (
    BatchError,
    CrossPartitionError,
    ErrorCode,
    InvalidArgumentError,
    KvError,
    KvTimeoutError,
    NotFoundError,
    NotLeaderError,
    StaleFencingTokenError,
    TransportSecurityError,
    UnavailableError,
    WrongNodeError,
)
from kvstore.tls import TlsConfig

__all__ = [
    "DEFAULT_MAX_KEY_BYTES",
    "DEFAULT_MAX_VALUE_BYTES",
    "BatchError",
    "Client",
    "ClusterLayout",
    "Compare",
    "CrossPartitionError",
    "DeleteOp",
    "DeleteResult",
    "ErrorCode",
    "GetOp",
    "GetResult",
    "InvalidArgumentError",
    "KeyValue",
    "KvError",
    "KvTimeoutError",
    "Member",
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
    "SyncClient",
    "TlsConfig",
    "TransportSecurityError",
    "TxnResult",
    "UnavailableError",
    "WriteConcern",
    "WrongNodeError",
    "ops",
]
