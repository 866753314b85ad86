"""Thin gRPC servicers: validate, delegate to the node, map errors through one table."""

from kvstore.rpc.cluster import ClusterService
from kvstore.rpc.kv import KVService
from kvstore.rpc.peer import PeerService

__all__ = ["ClusterService", "KVService", "PeerService"]
