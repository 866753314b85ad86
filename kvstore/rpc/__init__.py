"""Thin gRPC servicers: validate, delegate to the node through `Backend`, map errors through
one table; and the guard, which checks every call against one policy table before a servicer
runs. Imports no module of `kvstore.node` (the node imports this package, not the reverse)."""

from kvstore.rpc.auth import AuthService
from kvstore.rpc.backend import (
    Backend,
    LeaseReader,
    Limits,
    MemoryBackend,
    MetaReader,
    PartitionStatus,
    PeerCaller,
    Reader,
)
from kvstore.rpc.cluster import ClusterService
from kvstore.rpc.guard import Guard
from kvstore.rpc.kv import KVService
from kvstore.rpc.lease import LeaseService
from kvstore.rpc.lock import LockService
from kvstore.rpc.peer import PeerService
from kvstore.rpc.watch import WatchService

__all__ = ["AuthService", "Backend", "ClusterService", "Guard", "KVService", "LeaseReader", "LeaseService", "Limits",
           "LockService", "MemoryBackend", "MetaReader", "PartitionStatus", "PeerCaller", "PeerService", "Reader",
           "WatchService"]
