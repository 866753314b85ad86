"""Node configuration: flags, environment variables (KVSTORE_NODE_*) and an optional TOML file.

Precedence: command-line flag > environment variable > TOML file > default.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from kvstore.address import WILDCARD_HOSTS, parse_address
from kvstore.tls import TlsConfig

# Settings naming files, converted to Path when they come from flags, environment or TOML.
PATH_SETTINGS = ("data_dir", "cert", "key", "ca", "peer_cert", "peer_key", "peer_ca")
MIN_REQUEST_BYTES = 1 << 20  # peers send Raft messages and snapshot chunks of up to 1 MiB


class ConfigError(ValueError):
    """Bad configuration; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: int  # 0 with `join`: the cluster gives the id
    listen: str
    data_dir: Path
    peers: dict[int, str] = field(default_factory=dict)  # every initial member, this node included
    single_node: bool = False  # no --peers: a cluster of this node alone, said explicitly
    join: tuple[str, ...] = ()  # seeds (HOST:PORT) of a running cluster to join instead of `peers`
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
    # Transport security (docs/security.md): the port serves TLS with cert/key and requires a
    # certificate signed by ca (or peer_ca) from every caller; peer_* default to these.
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    peer_cert: Path | None = None
    peer_key: Path | None = None
    peer_ca: Path | None = None
    max_request_bytes: int = 8 << 20  # largest request accepted from a client (or frame from a peer)
    max_concurrent_streams: int = 256  # per connection: calls beyond it wait for a free stream
    metrics_address: str = ""  # HOST:PORT for /metrics, the probes and the status page; "" = off
    # Authentication, rate limits, space quota (docs/security.md).
    auth_token_ttl_s: float = 300.0  # how long a token from Auth.Authenticate is good for
    rate_limit_requests: float = 0.0  # operations per second per client, unless its user or roles set one; 0: none
    rate_limit_bytes: float = 0.0  # request bytes per second per client, likewise; 0: none
    quota_backend_bytes: int = 0  # past this much storage on any member, writes that add data are refused; 0: none

    def validate(self) -> None:
        if self.join:
            if self.peers or self.single_node:
                raise ConfigError("--join does not go with --peers or --single-node: those make a new cluster, "
                                  "--join enters a running one")
            if self.node_id < 0:
                raise ConfigError("--id must be a positive integer")
        else:
            if self.node_id <= 0:
                raise ConfigError("--id must be a positive integer")
            if not self.peers:
                raise ConfigError("no --peers: list every member with --peers ID=HOST:PORT,... (this node "
                                  "included), or pass --single-node to run a cluster of this node alone")
            if self.single_node and len(self.peers) > 1:
                raise ConfigError(f"--single-node, but --peers names {len(self.peers)} members "
                                  f"({format_peers(self.peers)})")
            if self.node_id not in self.peers:
                raise ConfigError(f"node {self.node_id} is not in --peers ({format_peers(self.peers)})")
        self._check_addresses()
        if self.partitions <= 0 or self.partitions & (self.partitions - 1):
            raise ConfigError(f"--partitions must be a power of two, got {self.partitions}")
        if self.replication_factor < 1:
            raise ConfigError("--replication-factor must be at least 1")
        if self.tick_ms <= 0 or self.election_ticks <= self.heartbeat_ticks:
            raise ConfigError("need tick_ms > 0 and election_ticks > heartbeat_ticks")
        for key in ("max_key_bytes", "max_value_bytes", "snapshot_entries", "max_concurrent_streams"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be positive")
        if self.auth_token_ttl_s <= 0:
            raise ConfigError(f"--auth-token-ttl must be positive, got {self.auth_token_ttl_s}")
        for key in ("rate_limit_requests", "rate_limit_bytes", "quota_backend_bytes"):
            if getattr(self, key) < 0:
                raise ConfigError(f"--{key.replace('_', '-')} must be 0 (none) or positive, got {getattr(self, key)}")
        smallest = max(MIN_REQUEST_BYTES, self.max_key_bytes + self.max_value_bytes + 1)
        if self.max_request_bytes < smallest:
            raise ConfigError(f"--max-request-bytes must be at least {smallest} (1 MiB, and more than "
                              f"--max-key-bytes plus --max-value-bytes), got {self.max_request_bytes}")
        self._check_file_set("", ("cert", "key", "ca"))
        self._check_file_set("peer-", ("peer_cert", "peer_key", "peer_ca"))
        if self.peer_cert is not None and self.cert is None:
            raise ConfigError("--peer-cert, --peer-key and --peer-ca need --cert, --key and --ca too: "
                              "the port serves TLS with --cert to clients and peers alike")
        if self.metrics_address:
            try:
                parse_address(self.metrics_address)
            except ValueError as e:
                raise ConfigError(f"--metrics-address {e}") from None

    def _check_file_set(self, prefix: str, names: tuple[str, ...]) -> None:
        given = [name for name in names if getattr(self, name) is not None]
        if given and len(given) < len(names):
            missing = ", ".join("--" + n.replace("_", "-") for n in names if n not in given)
            listed = ", ".join("--" + n.replace("_", "-") for n in names)
            raise ConfigError(f"{listed} go together: missing {missing}")

    def tls(self) -> TlsConfig | None:
        """The files the node serves TLS with, or None for plaintext."""
        if self.cert is None or self.key is None or self.ca is None:
            return None
        return TlsConfig(ca=self.ca, cert=self.cert, key=self.key)

    def peer_tls(self) -> TlsConfig | None:
        """The files for peer traffic: the node's client certificate towards its peers and the
        CA their certificates must come from; the client-facing files unless --peer-* are given."""
        if self.peer_cert is None or self.peer_key is None or self.peer_ca is None:
            return self.tls()
        return TlsConfig(ca=self.peer_ca, cert=self.peer_cert, key=self.peer_key)

    def _check_addresses(self) -> None:
        """Every address parses, and peers dial the address this node serves: its own --peers
        entry is its --listen, or --listen binds every interface (0.0.0.0 or ::) on that port."""
        try:
            listen_host, listen_port = parse_address(self.listen)
        except ValueError as e:
            raise ConfigError(f"--listen {e}") from None
        for node_id, address in sorted(self.peers.items()):
            try:
                parse_address(address)
            except ValueError as e:
                raise ConfigError(f"--peers entry {node_id}={address}: {e}") from None
        if self.join:
            return  # the address it was added with is --listen itself
        advertised = self.peers[self.node_id]
        host, port = parse_address(advertised)
        if port != listen_port or (listen_host != host and listen_host not in WILDCARD_HOSTS):
            raise ConfigError(
                f"--listen {self.listen} is not node {self.node_id}'s address in --peers ({advertised}): "
                f"its peers would dial an address it does not serve; make them the same, or listen on "
                f"0.0.0.0:{port} to serve every interface"
            )


def parse_peers(text: str) -> dict[int, str]:
    """`1=127.0.0.1:2379,2=127.0.0.1:2380` -> {1: "127.0.0.1:2379", 2: ...}."""
    peers: dict[int, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        node_id, sep, address = item.partition("=")
        if not sep or not node_id.strip().isdigit():
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
