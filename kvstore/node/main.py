"""`kvstore-node`: run one node of a kvstore cluster.

Settings come from flags, then KVSTORE_NODE_* environment variables, then a TOML file
(`--config`), then defaults. SIGTERM or SIGINT stops the node cleanly: in-flight requests
finish (briefly), Raft stops, LevelDB is closed. SIGHUP re-reads the TLS certificate files.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping


def _wants_debug(argv: list[str], environ: Mapping[str, str]) -> bool:
    """Whether the flag or the environment asks for debug logging (a --config file cannot be
    read this early)."""
    flag = next((value for name, value in zip(argv, argv[1:], strict=False) if name == "--log-level"), None)
    flag = next((a.split("=", 1)[1] for a in argv if a.startswith("--log-level=")), flag)
    return (flag or environ.get("KVSTORE_NODE_LOG_LEVEL")) == "debug"


# Before grpc is imported, which is when its C core reads its log level: its chatter (and its own
# copy of errors this program reports in one line, a port in use for one) only with debug logging.
os.environ.setdefault("GRPC_VERBOSITY", "DEBUG" if _wants_debug(sys.argv, os.environ) else "NONE")

import asyncio
import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

import click
import uvloop

from kvstore._pb import kvstore_pb2, peer_pb2
from kvstore.errors import KvError, UnavailableError
from kvstore.node.cluster_view import ClusterStatusSource
from kvstore.node.config import PATH_SETTINGS, ConfigError, NodeConfig, load_toml, parse_peers
from kvstore.node.health import NodeHealth, add_reflection
from kvstore.node.http import OpsServer
from kvstore.node.identity import IdentityError
from kvstore.node.metrics import RequestMetricsInterceptor, metrics_registry
from kvstore.node.server import AddressInUseError, Node
from kvstore.ratelimit import RateLimiter
from kvstore.rpc import (
    AuthService,
    ClusterService,
    Guard,
    KVService,
    LeaseService,
    LockService,
    PeerService,
    WatchService,
)
from kvstore.statemachine.control import RateLimit
from kvstore.storage import CorruptionError, DataDirLockedError, StorageError
from kvstore.tls import TlsError

EXIT_CONFIG = 2
EXIT_RUNTIME = 3

# What clients use, reported by the health service; reflection lists these and the Peer service.
PUBLIC_SERVICES = tuple(
    kvstore_pb2.DESCRIPTOR.services_by_name[name].full_name
    for name in ("KV", "Cluster", "Lease", "Lock", "Watch", "Auth")
)
SERVED_SERVICES = (*PUBLIC_SERVICES, peer_pb2.DESCRIPTOR.services_by_name["Peer"].full_name)


class _LogFormatter(logging.Formatter):
    """One line per event, `key=value` (or JSON with --log-format json), easy to grep and parse."""

    def __init__(self, node_id: int, as_json: bool) -> None:
        super().__init__()
        self.node_id = node_id
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "node": self.node_id,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info)
        if self.as_json:
            return json.dumps(fields)
        return " ".join(f"{k}={json.dumps(v) if isinstance(v, str) and (' ' in v or not v) else v}"
                        for k, v in fields.items())


def build_config(options: dict[str, Any]) -> NodeConfig:
    settings: dict[str, Any] = {}
    config_file = options.pop("config")
    if config_file is not None:
        settings.update(load_toml(Path(config_file)))
    for key, value in options.items():
        if value is not None:
            settings[key] = value
    if isinstance(settings.get("peers"), str):
        settings["peers"] = parse_peers(settings["peers"])
    if isinstance(settings.get("join"), str):
        settings["join"] = tuple(seed.strip() for seed in settings["join"].split(",") if seed.strip())
    for required in ("node_id", "listen", "data_dir") if not settings.get("join") else ("listen", "data_dir"):
        if required not in settings:
            flag = {"node_id": "--id"}.get(required, "--" + required.replace("_", "-"))
            env = "KVSTORE_NODE_" + ("ID" if required == "node_id" else required.upper())
            raise ConfigError(f"missing {flag} (or {env}, or {required} in --config)")
    for name in PATH_SETTINGS:
        if settings.get(name) is not None:
            settings[name] = Path(settings[name])
    if settings.get("join"):
        settings.setdefault("node_id", 0)
    elif settings.get("single_node") and not settings.get("peers"):
        settings["peers"] = {int(settings["node_id"]): settings["listen"]}
    config = NodeConfig(**settings)
    config.validate()
    return config


async def serve(config: NodeConfig, log_format: _LogFormatter) -> None:
    """Run the node until SIGTERM or SIGINT (or a fatal error closes it, which it then raises);
    SIGHUP re-reads its certificates."""
    node = Node(config)
    health = NodeHealth(PUBLIC_SERVICES)
    await health.set_serving(False)
    ops = None
    if config.metrics_address:
        # The page asks the members for their status as the node dials its peers (its certificate, if any).
        cluster = ClusterStatusSource(lambda: node.cluster_state, lambda address: node.security.peer_channel(address, ()))
        ops = OpsServer(config.metrics_address, node.node_id, metrics_registry(node, node.metrics), health, cluster)
        await ops.start()
    try:
        # The composition root: the node is the backend the RPC layer's services delegate to, and
        # the guard checks every call to any of them first.
        guard = Guard(node, RateLimiter(RateLimit(config.rate_limit_requests, config.rate_limit_bytes)))
        services = [
            KVService(node).add_to,
            ClusterService(node).add_to,
            PeerService(node).add_to,
            LeaseService(node).add_to,
            LockService(node).add_to,
            WatchService(node).add_to,
            AuthService(node, guard, config.auth_token_ttl_s).add_to,
        ]
        await node.start([*services, health.add_to,
                          lambda server: add_reflection(server, SERVED_SERVICES)],
                         [RequestMetricsInterceptor(node.metrics), guard])
        log_format.node_id = node.node_id  # with --join, known once the node has joined
        await health.set_serving(True)  # the log is replayed and the Ready loop runs
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, node.reload_certificates)
        stopping, closed = asyncio.create_task(stop.wait()), asyncio.create_task(node.wait_closed())
        await asyncio.wait((stopping, closed), return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        # NOT_SERVING first, so health watchers and probes see it before the port closes.
        await health.shut_down()
        node.close()
        await closed
    finally:
        if ops is not None:
            await ops.close()
    if node.fatal is not None:
        raise node.fatal


@click.command(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "KVSTORE_NODE",
                                 "max_content_width": 100})
@click.option("--id", "node_id", type=int, envvar="KVSTORE_NODE_ID", help="This node's id (a positive integer, unique in the cluster).")
@click.option("--listen", help="HOST:PORT to serve clients and peers on.")
@click.option("--peers", help="Every member of a new cluster, this node included: ID=HOST:PORT,ID=HOST:PORT,... "
              "This node's entry is the address its peers dial: --listen's, or --listen is 0.0.0.0 or [::] on "
              "its port. Read once, when the data dir is created.")
@click.option("--join",
              help="Join a running cluster instead: HOST:PORT of one or more of its nodes, comma-separated. "
                   "Add the node first (`kvctl member add --address` this node's --listen); --id is then "
                   "the cluster's choice.")
@click.option("--single-node", is_flag=True, default=None,
              help="Run a cluster of this node alone (instead of --peers).")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Directory for this node's LevelDB.")
@click.option("--partitions", type=int, help="Partitions in the key space (power of two; default 64).")
@click.option("--replication-factor", type=int, help="Replicas per partition (default 3).")
@click.option("--vnodes", type=int, help="Ring tokens per node (default 64).")
@click.option("--tick-ms", type=int, help="Raft tick in milliseconds (default 100).")
@click.option("--election-ticks", type=int, help="Election timeout in ticks, randomized up to twice that (default 6: 0.6-1.2 s).")
@click.option("--max-key-bytes", type=int, help="Largest key accepted (default 4096).")
@click.option("--max-value-bytes", type=int, help="Largest value accepted (default 1 MiB).")
@click.option("--snapshot-entries", type=int, help="Compact a partition's log after this many entries.")
@click.option("--initial-cluster-token",
              help="Used once, when the data dir is created: the cluster id is derived from it and --peers, "
                   "and nodes only talk to peers of the same cluster. Give each new cluster its own "
                   "(kvctl cluster up does). Default: kvstore.")
@click.option("--cert", type=click.Path(dir_okay=False), help="Serve TLS with this certificate (PEM); needs --key and --ca.")
@click.option("--key", type=click.Path(dir_okay=False), help="The private key of --cert (PEM, unencrypted).")
@click.option("--ca", type=click.Path(dir_okay=False),
              help="CA certificate(s) (PEM): callers must present a certificate signed by one, and peers check "
                   "this node's --cert against them.")
@click.option("--peer-cert", type=click.Path(dir_okay=False),
              help="Certificate this node presents to its peers (default --cert); needs --peer-key and --peer-ca.")
@click.option("--peer-key", type=click.Path(dir_okay=False), help="The private key of --peer-cert (default --key).")
@click.option("--peer-ca", type=click.Path(dir_okay=False),
              help="CA certificate(s) that must have issued a peer's certificate (default --ca).")
@click.option("--max-request-bytes", type=int,
              help="Largest request (gRPC message) accepted, from clients and peers (default 8 MiB).")
@click.option("--max-concurrent-streams", type=int,
              help="Calls in progress per client connection; more wait their turn (default 256).")
@click.option("--auth-token-ttl", "auth_token_ttl_s", type=float,
              help="Seconds a sign-in token is good for (default 300); clients sign in again after it.")
@click.option("--rate-limit-requests", type=float,
              help="Operations per second each client may send this node, unless its user or roles set "
                   "their own (default 0: no limit).")
@click.option("--rate-limit-bytes", type=float,
              help="Request bytes per second each client may send this node, likewise (default 0: no limit).")
@click.option("--quota-backend-bytes", type=int,
              help="Space quota: once any member's storage passes it, the cluster refuses writes that add "
                   "data until deletes free space (default 0: no quota).")
@click.option("--config", type=click.Path(dir_okay=False), help="TOML file with any of these settings.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="Default info.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--metrics-address", metavar="HOST:PORT",
              help="Serve Prometheus /metrics, /healthz, /readyz and the status page (/) over HTTP here. Default off.")
def cli(log_format: str, **options: Any) -> None:
    """Run one kvstore node.

    \b
    Example, a 3-node cluster on one machine:
      kvstore-node --id 1 --listen 127.0.0.1:2379 --data-dir data/1 \\
          --peers 1=127.0.0.1:2379,2=127.0.0.1:2380,3=127.0.0.1:2381
    (and the same with --id 2 / --id 3 and their own --listen and --data-dir), or simply
    `kvctl cluster up --nodes 3`. With TLS, add --cert data/certs/node-1.crt --key
    data/certs/node-1.key --ca data/certs/ca.crt (`kvctl cert init data/certs` makes them);
    `kill -HUP` the node after replacing them, and it serves the new ones. A cluster of one
    node, for trying things out:
      kvstore-node --id 1 --listen 127.0.0.1:2379 --data-dir data/1 --single-node

    \b
    A 4th node for the 3-node cluster:
      kvctl member add --address 127.0.0.1:2382      # says the new member's id
      kvstore-node --join 127.0.0.1:2379 --listen 127.0.0.1:2382 --data-dir data/4
    """
    try:
        config = build_config(options)
    except (ConfigError, TypeError, ValueError) as e:
        click.echo(f"kvstore-node: {e}", err=True)
        sys.exit(EXIT_CONFIG)
    handler = logging.StreamHandler()
    formatter = _LogFormatter(config.node_id, log_format == "json")
    handler.setFormatter(formatter)
    logging.basicConfig(level=config.log_level.upper(), handlers=[handler], force=True)
    if config.log_level != "debug":
        # gRPC's Python layer logs routine events as warnings (a stream aborted by a stopping server).
        logging.getLogger("grpc").setLevel(logging.ERROR)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        uvloop.run(serve(config, formatter))
    except (DataDirLockedError, AddressInUseError, IdentityError, TlsError) as e:
        click.echo(f"kvstore-node: {e}", err=True)
        sys.exit(EXIT_CONFIG)
    except UnavailableError as e:
        click.echo(f"kvstore-node: cannot join the cluster: {e}", err=True)
        sys.exit(EXIT_RUNTIME)
    except KvError as e:
        click.echo(f"kvstore-node: cannot join the cluster: {e}", err=True)
        sys.exit(EXIT_CONFIG)
    except CorruptionError as e:
        click.echo(f"kvstore-node: {e}; this node's copy cannot be trusted: move {config.data_dir} aside "
                   "and replace the node (docs/membership.md)", err=True)
        sys.exit(EXIT_RUNTIME)
    except StorageError as e:
        click.echo(f"kvstore-node: storage error: {e}", err=True)
        sys.exit(EXIT_RUNTIME)


# --help names each option's environment variable (the deploy files set them).
for _option in cli.params:
    _option.show_envvar = True  # type: ignore[attr-defined]


def main() -> None:
    cli(prog_name="kvstore-node")
