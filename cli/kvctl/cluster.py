"""`kvctl cluster up|down|status`: a local cluster of node processes on this machine.

Node i (1-based) serves on `base-port + i - 1`, serves its metrics and the status page on
`metrics-base-port + i - 1`, and keeps its data in `DATA_DIR/node-i`; the launcher records
what it started in `DATA_DIR/cluster.json`, so `down` (or a later `up` with
the same data dir, which brings the same data back) knows the cluster. With `--tls` the
certificates live in `DATA_DIR/tls` (made by `kvstore.certs` when missing), and the state
file names the client certificate kvctl connects with.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NoReturn

import click
import grpc
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from kvctl.exitcodes import ExitCode
from kvstore.certs import CertificateError, ClusterCertificates, files_in, init_certificates
from kvstore.client import Client, KvError
from kvstore.errors import ERRORS
from kvstore.node.cluster_view import build_cluster_view, reported_replicas
from kvstore.node.local import leaders, node_command, node_status, tls_arguments
from kvstore.tls import TlsConfig, TlsError, client_credentials

STATE_FILE = "cluster.json"
ROOT_PASSWORD_ENV = "KVSTORE_ROOT_PASSWORD"
TLS_DIR = "tls"
DEFAULT_DATA_DIR = "kvstore-data"
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class LocalNode:
    id: int
    address: str
    data_dir: str
    log_file: str
    pid: int
    metrics_address: str = ""


def _fail(message: str, code: ExitCode) -> NoReturn:
    click.echo(f"kvctl: {message}", err=True)
    sys.exit(code)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    try:
        # Reap it if it is our child: an exited but unreaped child still answers kill(pid, 0).
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True, slots=True)
class ClusterState:
    nodes: list[LocalNode]
    tls: TlsConfig | None  # the client certificate to connect with, when the cluster serves TLS

    def credentials(self) -> grpc.ChannelCredentials | None:
        try:
            return client_credentials(self.tls)
        except TlsError as e:
            _fail(f"the cluster's client certificate is unusable: {e}", ExitCode.USAGE)

    def save(self, data_dir: Path) -> None:
        tls = None if self.tls is None else {"ca": str(self.tls.ca), "cert": str(self.tls.cert),
                                             "key": str(self.tls.key)}
        document = {"nodes": [asdict(n) for n in self.nodes], "tls": tls}
        (data_dir / STATE_FILE).write_text(json.dumps(document, indent=2))


def _load_state(data_dir: Path) -> ClusterState:
    path = data_dir / STATE_FILE
    if not path.exists():
        return ClusterState([], None)
    try:
        document = json.loads(path.read_text())
        tls = document.get("tls")
        return ClusterState([LocalNode(**item) for item in document["nodes"]],
                            None if tls is None else TlsConfig(Path(tls["ca"]), Path(tls["cert"]), Path(tls["key"])))
    except (ValueError, KeyError, TypeError):
        _fail(f"{path} is not a cluster state file; remove it or use another --data-dir", ExitCode.USAGE)


def _certificates(root: Path, nodes: int, host: str, console: Console) -> ClusterCertificates:
    """The cluster's certificates in `root/tls`, made (a new CA too) unless all are there."""
    directory = root / TLS_DIR
    layout = files_in(directory, nodes)
    files = [layout.ca, layout.client, *layout.nodes.values()]
    if all(f.cert.exists() and f.key.exists() for f in files):
        return layout
    try:
        made = init_certificates(directory, nodes, hosts=[host], force=True)
    except CertificateError as e:
        _fail(str(e), ExitCode.USAGE)
    console.print(f"created a development CA and certificates in {directory}")
    return made


def _wait_ready(nodes: list[LocalNode], partitions: int, console: Console,
                credentials: grpc.ChannelCredentials | None) -> None:
    """Wait until every node answers and every partition has a leader, showing progress."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    with console.status("starting nodes...") as status:
        while time.monotonic() < deadline:
            for node in nodes:
                if not _alive(node.pid):
                    log_tail = Path(node.log_file).read_text(errors="replace").strip().splitlines()[-3:]
                    _fail(f"node {node.id} exited during start-up:\n  " + "\n  ".join(log_tail), ExitCode.UNAVAILABLE)
            statuses = [node_status(n.address, credentials=credentials) for n in nodes]
            led = leaders(statuses)
            answering = sum(s is not None for s in statuses)
            status.update(f"{answering}/{len(nodes)} nodes answering, {len(led)}/{partitions} partitions have a leader")
            if answering == len(nodes) and len(led) == partitions:
                return
            time.sleep(0.2)
    _fail(f"the cluster did not become ready within {READY_TIMEOUT_S:.0f}s; see the logs in the data dir",
          ExitCode.UNAVAILABLE)


def status_table(nodes: list[LocalNode], credentials: grpc.ChannelCredentials | None,
                 title: str = "kvstore local cluster") -> Table:
    """Nodes, partitions led, and lag (summed over each node's replicas; see
    `kvstore.node.cluster_view`)."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    widest_address = max((len(n.address) for n in nodes), default=0)
    for column in ("node", "address", "pid", "state", "hosted", "led", "commit lag", "apply lag", "db MB"):
        left = column in ("address", "state")
        # Addresses are never cut; headers may take two lines on a narrow terminal.
        table.add_column(column, justify="left" if left else "right",
                         min_width=widest_address if column == "address" else None)
    answers = {node.id: node_status(node.address, timeout=0.5, credentials=credentials) or "no answer"
               for node in nodes}
    view = build_cluster_view({node.id: node.address for node in nodes}, reported_replicas(answers), answers)
    seen_by_id = {seen.id: seen for seen in view.nodes}
    for node in nodes:
        seen = seen_by_id[node.id]
        if not seen.up:
            state = "[red]down[/]" if not _alive(node.pid) else "[yellow]not answering[/]"
            table.add_row(str(node.id), node.address, str(node.pid), state, "", "", "", "", "")
            continue
        table.add_row(str(node.id), node.address, str(node.pid), "[green]up[/]", str(seen.partitions_hosted),
                      str(seen.partitions_led), str(seen.commit_lag), str(seen.apply_lag),
                      f"{seen.db_size_bytes / 1e6:.1f}")
    return table


def _stop(nodes: list[LocalNode], console: Console, timeout: float = 15.0) -> None:
    for node in nodes:
        if _alive(node.pid):
            os.kill(node.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(n.pid) for n in nodes):
        time.sleep(0.1)
    for node in nodes:
        if _alive(node.pid):
            console.print(f"node {node.id} did not stop in {timeout:.0f}s; killing it")
            os.kill(node.pid, signal.SIGKILL)


@click.group()
def cluster() -> None:
    """Run a local multi-node cluster on this machine."""


@cluster.command()
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 16), help="Number of node processes.")
@click.option("--partitions", default=64, show_default=True, type=int, help="Partitions (a power of two).")
@click.option("--replication-factor", default=3, show_default=True, type=click.IntRange(1, 7),
              help="Replicas per partition (capped by --nodes).")
@click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True, type=click.Path(file_okay=False),
              help="Where the nodes keep their data (and the launcher its state).")
@click.option("--base-port", default=2379, show_default=True, type=click.IntRange(1024, 65000),
              help="Node i serves on base-port + i - 1.")
@click.option("--metrics-base-port", default=9379, show_default=True, type=click.IntRange(1024, 65000),
              help="Node i serves /metrics and the status page on metrics-base-port + i - 1.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--detach", is_flag=True, help="Start the nodes and return; stop them with `kvctl cluster down`.")
@click.option("--demo", is_flag=True, help="Run a short demo against the cluster once it is up.")
@click.option("--tls", is_flag=True,
              help="Serve TLS, clients and peers alike, with certificates in DATA_DIR/tls (a development CA, "
                   "made when missing, as `kvctl cert init` does).")
@click.option("--auth", is_flag=True,
              help=f"Enable authentication (needs --tls): creates the user root, with the password in "
                   f"${ROOT_PASSWORD_ENV} or a new one, printed. The launcher acts as root through the client "
                   "certificate, whose common name is root.")
def up(nodes: int, partitions: int, replication_factor: int, data_dir: str, base_port: int, metrics_base_port: int,
       host: str, detach: bool, demo: bool, tls: bool, auth: bool) -> None:
    """Start a local cluster and show its live status until Ctrl-C.

    \b
    Examples:
      kvctl cluster up --nodes 3                 # foreground, live status table
      kvctl cluster up --nodes 5 --detach        # background; stop with `kvctl cluster down`
      kvctl cluster up --data-dir /tmp/kv --base-port 3379 --metrics-base-port 10379
      kvctl cluster up --tls --detach            # TLS; prints the KVSTORE_CACERT/CERT/KEY to export
      kvctl cluster up --tls --auth --detach     # and users: prints root's password (KVSTORE_USER)
    Restarting with the same --data-dir brings the same data back. Each node's status page
    (the live cluster map) is at http://HOST:METRICS-PORT/.
    """
    console = Console()
    if auth and not tls:
        _fail("--auth needs --tls: passwords and tokens must not cross the network in the clear", ExitCode.USAGE)
    if partitions <= 0 or partitions & (partitions - 1):
        _fail(f"--partitions must be a power of two, got {partitions}", ExitCode.USAGE)
    root = Path(data_dir).resolve()
    running = [n for n in _load_state(root).nodes if _alive(n.pid)]
    if running:
        _fail(f"a cluster is already running from {root} (pids {', '.join(str(n.pid) for n in running)}); "
              f"stop it with `kvctl cluster down --data-dir {data_dir}`", ExitCode.USAGE)
    ports = [base_port + i for i in range(nodes)]
    metrics_ports = [metrics_base_port + i for i in range(nodes)]
    busy = [p for p in ports + metrics_ports if not _port_free(host, p)]
    if busy:
        _fail(f"port{'s' if len(busy) > 1 else ''} {', '.join(map(str, busy))} on {host} "
              f"{'are' if len(busy) > 1 else 'is'} in use; choose another --base-port or --metrics-base-port",
              ExitCode.USAGE)
    root.mkdir(parents=True, exist_ok=True)
    certificates = _certificates(root, nodes, host, console) if tls else None
    client_tls = None if certificates is None else TlsConfig(certificates.ca.cert, certificates.client.cert,
                                                             certificates.client.key)
    peers = {i + 1: f"{host}:{port}" for i, port in enumerate(ports)}
    started: list[LocalNode] = []
    for (node_id, address), metrics_port in zip(peers.items(), metrics_ports, strict=True):
        node_dir = root / f"node-{node_id}"
        log_file = root / f"node-{node_id}.log"
        metrics_address = f"{host}:{metrics_port}"
        command = node_command(node_id, peers, node_dir, partitions, "--replication-factor", str(replication_factor),
                               "--metrics-address", metrics_address)
        if certificates is not None:
            own = certificates.nodes[node_id]
            command += tls_arguments(own.cert, own.key, certificates.ca.cert)
        with log_file.open("ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        started.append(LocalNode(node_id, address, str(node_dir), str(log_file), process.pid, metrics_address))
    state = ClusterState(started, client_tls)
    state.save(root)
    credentials = state.credentials()
    try:
        _wait_ready(started, partitions, console, credentials)
    except SystemExit:
        _stop(started, console)
        raise
    endpoints = ",".join(n.address for n in started)
    console.print(f"[green]cluster up[/]: {nodes} nodes, {partitions} partitions, "
                  f"{'TLS' if client_tls else 'plaintext'}, data in {root}")
    console.print(f"  export KVSTORE_ENDPOINTS={endpoints}")
    console.print(f"  status page: http://{started[0].metrics_address}/  (any node's metrics port serves it)")
    if client_tls is not None:
        console.print(f"  export KVSTORE_CACERT={client_tls.ca} KVSTORE_CERT={client_tls.cert} "
                      f"KVSTORE_KEY={client_tls.key}", soft_wrap=True)
    if auth:
        assert client_tls is not None
        _enable_auth(endpoints, client_tls, console)
    if demo:
        from kvctl.demo import run_demo

        run_demo(endpoints, client_tls, console)
    if detach:
        console.print(f"  stop it with: kvctl cluster down --data-dir {data_dir}")
        return
    try:
        live_title = "kvstore local cluster (Ctrl-C stops it)"
        with Live(status_table(started, credentials, live_title), console=console, refresh_per_second=1) as live:
            while any(_alive(n.pid) for n in started):
                time.sleep(1)
                live.update(status_table(started, credentials, live_title))
        _fail("every node has exited; see the logs in " + str(root), ExitCode.UNAVAILABLE)
    except KeyboardInterrupt:
        console.print("stopping the cluster...")
    finally:
        _stop(started, console)
    console.print("cluster stopped")


def _enable_auth(endpoints: str, client_tls: TlsConfig, console: Console) -> None:
    """Create the user root and enable auth, acting as root through the client certificate (CN
    root); a cluster that has auth on already (restarted from its data dir) is left as it is."""
    password = os.environ.get(ROOT_PASSWORD_ENV) or secrets.token_urlsafe(12)

    async def enable() -> bool:
        async with Client(endpoints.split(","), tls=client_tls) as client:
            if (await client.auth.status()).enabled:
                return False
            if "root" not in {user.name for user in await client.auth.user_list()}:
                await client.auth.user_add("root", password)
            await client.auth.enable()
            return True

    try:
        enabled = asyncio.run(enable())
    except KvError as error:
        _fail(f"could not enable auth: {error.message}", ERRORS[error.code].exit_code)
    if not enabled:
        console.print("  auth is enabled (as before): sign in as root with the password it was given")
        return
    given = ROOT_PASSWORD_ENV in os.environ
    console.print("  auth enabled: every call needs a user; root's password is "
                  + (f"${ROOT_PASSWORD_ENV}'s" if given else "printed below, once"))
    console.print(f"  export KVSTORE_USER=root:{'$' + ROOT_PASSWORD_ENV if given else password}", soft_wrap=True)


@cluster.command()
@click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True, type=click.Path(file_okay=False))
def down(data_dir: str) -> None:
    """Stop a cluster started with `kvctl cluster up --detach`."""
    console = Console()
    root = Path(data_dir).resolve()
    nodes = _load_state(root).nodes
    if not nodes:
        _fail(f"no cluster was started from {root}", ExitCode.NOT_FOUND)
    alive = [n for n in nodes if _alive(n.pid)]
    _stop(alive, console)
    console.print(f"stopped {len(alive)} node(s)" if alive else "no node was running")


@cluster.command(name="status")
@click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True, type=click.Path(file_okay=False))
def cluster_status(data_dir: str) -> None:
    """Show the status table of a local cluster once."""
    state = _load_state(Path(data_dir).resolve())
    if not state.nodes:
        _fail(f"no cluster was started from {Path(data_dir).resolve()}", ExitCode.NOT_FOUND)
    Console().print(status_table(state.nodes, state.credentials()))
