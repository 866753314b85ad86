"""Thin gRPC servicers: validate, delegate to the node through `Backend`, map errors through
one table. Imports no module of `kvstore.node` (the node imports this package, not the reverse)."""

from kvstore.rpc.backend import Backend, Limits, MemoryBackend, PartitionStatus, PeerCaller, Reader
from kvstore.rpc.cluster import ClusterService
from kvstore.rpc.kv import KVService
from kvstore.rpc.peer import PeerService

__all__ = ["Backend", "ClusterService", "KVService", "Limits", "MemoryBackend", "PartitionStatus", "PeerCaller",
           "PeerService", "Reader"]
