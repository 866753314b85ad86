"""Errors the node returns to clients. `code` is a name of the API's ErrorCode enum; the RPC
layer maps it through one table (kvstore.rpc.errors)."""

from __future__ import annotations


class RequestError(Exception):
    def __init__(self, code: str, message: str, leader_hint: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.leader_hint = leader_hint


def not_leader(partition: int, leader: int) -> RequestError:
    known = f"; the leader is node {leader}" if leader else "; no leader is known yet"
    return RequestError("NOT_LEADER", f"this node does not lead partition {partition}{known}", leader)


def wrong_node(partition: int, node_id: int) -> RequestError:
    return RequestError("WRONG_NODE", f"node {node_id} holds no replica of partition {partition}")


def timeout(what: str, seconds: float) -> RequestError:
    return RequestError("TIMEOUT", f"{what} did not complete within {seconds:g}s")


def invalid(message: str) -> RequestError:
    return RequestError("INVALID_ARGUMENT", message)
