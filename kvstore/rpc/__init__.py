"""Thin gRPC servicers: validate, delegate to the node through `Backend`, map errors through
one table. Imports no module of `kvstore.node` (the node imports this package, not the reverse)."""

from kvstore.rpc.backend import (
           Backend,
           LeaseReader,
           Limits,
           MemoryBackend,
           PartitionStatus,
           PeerCaller,
           Reader,
)
from kvstore.rpc.cluster import ClusterService
from kvstore.rpc.kv import KVService
from kvstore.rpc.lease import LeaseService
from kvstore.rpc.lock import LockService
from kvstore.rpc.peer import PeerService
from kvstore.rpc.watch import WatchService

__all__ = ["Backend", "ClusterService", "KVService", "LeaseReader", "LeaseService", "Limits", "LockService",
           "MemoryBackend", "PartitionStatus", "PeerCaller", "PeerService", "Reader", "WatchService"]
