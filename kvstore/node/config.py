"""Node configuration: flags, environment variables (KVSTORE_NODE_*) and an optional TOML file.

Precedence: command-line flag > environment variable > TOML file > default.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """Bad configuration; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: int
    listen: str
    data_dir: Path
    peers: dict[int, str] = field(default_factory=dict)  # every member, this node included
    partitions: int = 64
    replication_factor: int = 3
    vnodes: int = 64
    tick_ms: int = 100
    election_ticks: int = 6
    heartbeat_ticks: int = 1
    max_key_bytes: int = 4096
    max_value_bytes: int = 1 << 20
    request_timeout_s: float = 5.0
    snapshot_entries: int = 10_000  # compact a group's log once this many entries are applied
    initial_cluster_token: str = "kvstore"  # with the initial --peers, makes the cluster id (bootstrap only)
    log_level: str = "info"

    def validate(self) -> None:
        if self.node_id <= 0:
            raise ConfigError("--id must be a positive integer")
        if self.node_id not in self.peers:
            raise ConfigError(f"node {self.node_id} is not in --peers ({format_peers(self.peers)})")
        if self.partitions <= 0 or self.partitions & (self.partitions - 1):
            raise ConfigError(f"--partitions must be a power of two, got {self.partitions}")
        if self.replication_factor < 1:
            raise ConfigError("--replication-factor must be at least 1")
        if self.tick_ms <= 0 or self.election_ticks <= self.heartbeat_ticks:
            raise ConfigError("need tick_ms > 0 and election_ticks > heartbeat_ticks")
        for key in ("max_key_bytes", "max_value_bytes", "snapshot_entries"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be positive")


def parse_peers(text: str) -> dict[int, str]:
    """`1=127.0.0.1:2379,2=127.0.0.1:2380` -> {1: "127.0.0.1:2379", 2: ...}."""
    peers: dict[int, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        node_id, sep, address = item.partition("=")
        if not sep or not node_id.strip().isdigit() or ":" not in address:
            raise ConfigError(f"bad peer {item!r}: expected ID=HOST:PORT")
        peers[int(node_id)] = address.strip()
    return peers


def format_peers(peers: dict[int, str]) -> str:
    return ",".join(f"{node_id}={address}" for node_id, address in sorted(peers.items()))


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: {e}") from None
    known = {f.name for f in fields(NodeConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"config file {path}: unknown settings {', '.join(unknown)}")
    if isinstance(data.get("peers"), dict):
        data["peers"] = {int(k): v for k, v in data["peers"].items()}
    return data
