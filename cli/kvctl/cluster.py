"""`kvctl cluster up|down|status`: a local cluster of node processes on this machine.

Node i (1-based) serves on `base-port + i - 1`, serves its metrics and the status page on
`metrics-base-port + i - 1`, and keeps its data in `DATA_DIR/node-i`; the launcher records the
cluster (its token, partition count, replication factor, each node's
address and process, and with `--tls` the client certificate kvctl connects with) in
`DATA_DIR/cluster.json`, so that `down` knows what to stop and a later `up` with the same data
dir brings the same cluster back, with the same addresses. With `--tls` the certificates live
in `DATA_DIR/tls` (made by `kvstore.certs` when missing).
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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NoReturn

import click
import grpc
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from kvctl.connection import KvctlError
from kvctl.exitcodes import ExitCode
from kvctl.member import DEFAULT_WAIT_S, follow
from kvstore.certs import CertificateError, ClusterCertificates, files_in, init_certificates
from kvstore.client import Client, KvError, MemberState
from kvstore.errors import ERRORS
from kvstore.node.cluster_view import build_cluster_view, reported_replicas
from kvstore.node.local import cluster_layout, join_command, leaders, node_command, node_status, tls_arguments
from kvstore.tls import TlsConfig, TlsError, client_credentials

STATE_FILE = "cluster.json"
ROOT_PASSWORD_ENV = "KVSTORE_ROOT_PASSWORD"
TLS_DIR = "tls"
DEFAULT_DATA_DIR = "kvstore-data"
READY_TIMEOUT_S = 60.0
DEFAULT_NODES = 3
DEFAULT_PARTITIONS = 64
DEFAULT_REPLICATION_FACTOR = 3


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
class LocalCluster:
    """What `cluster.json` records: the settings every node was bootstrapped with, the nodes,
    and the client certificate to connect with when the cluster serves TLS."""

    token: str
    partitions: int
    replication_factor: int
    nodes: tuple[LocalNode, ...]
    tls: TlsConfig | None

    def credentials(self) -> grpc.ChannelCredentials | None:
        try:
            return client_credentials(self.tls)
        except TlsError as e:
            _fail(f"the cluster's client certificate is unusable: {e}", ExitCode.USAGE)

    def save(self, data_dir: Path) -> None:
        tls = None if self.tls is None else {"ca": str(self.tls.ca), "cert": str(self.tls.cert),
                                             "key": str(self.tls.key)}
        document = {**asdict(self), "nodes": [asdict(n) for n in self.nodes], "tls": tls}
        (data_dir / STATE_FILE).write_text(json.dumps(document, indent=2))


def _load_state(data_dir: Path) -> LocalCluster | None:
    path = data_dir / STATE_FILE
    if not path.exists():
        return None
    try:
        document = json.loads(path.read_text())
        tls = document.pop("tls")
        return LocalCluster(**{**document, "nodes": tuple(LocalNode(**item) for item in document["nodes"])},
                            tls=None if tls is None else TlsConfig(Path(tls["ca"]), Path(tls["cert"]), Path(tls["key"])))
    except (ValueError, KeyError, TypeError):
        _fail(f"{path} is not a cluster state file of this kvctl; remove it (and the node dirs beside it) "
              "or use another --data-dir", ExitCode.USAGE)


def _exit_reason(node: LocalNode) -> str:
    """Why a node process exited: its one-line error, else the end of its log."""
    lines = [line for line in Path(node.log_file).read_text(errors="replace").splitlines() if line.strip()]
    own = [line for line in lines if line.startswith("kvstore-node: ")]
    return own[-1] if own else "\n  ".join(lines[-3:])


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


def _wait_ready(nodes: Sequence[LocalNode], partitions: int, console: Console,
                credentials: grpc.ChannelCredentials | None) -> list[LocalNode]:
    """Wait until every node still running answers and every partition has a leader, showing
    progress; returns the nodes that exited during start-up (each reported as it exits)."""
    failed: list[LocalNode] = []
    deadline = time.monotonic() + READY_TIMEOUT_S
    with console.status("starting nodes...") as status:
        while time.monotonic() < deadline:
            for node in nodes:
                if node not in failed and not _alive(node.pid):
                    failed.append(node)
                    console.print(f"[red]node {node.id} failed to start[/]: {_exit_reason(node)}", highlight=False)
            running = [node for node in nodes if node not in failed]
            if not running:
                _fail("no node started; see the logs in the data dir", ExitCode.UNAVAILABLE)
            statuses = [node_status(n.address, credentials=credentials) for n in running]
            led = leaders(statuses)
            answering = sum(s is not None for s in statuses)
            status.update(f"{answering}/{len(running)} nodes answering, {len(led)}/{partitions} partitions have a leader")
            if answering == len(running) and len(led) == partitions:
                return failed
            time.sleep(0.2)
    _fail(f"the cluster did not become ready within {READY_TIMEOUT_S:.0f}s; see the logs in the data dir",
          ExitCode.UNAVAILABLE)


def status_table(nodes: Sequence[LocalNode], credentials: grpc.ChannelCredentials | None,
                 title: str = "kvstore local cluster") -> Table:
    """Nodes, partitions led, and lag (summed over each node's replicas; see
    `kvstore.node.cluster_view`), and the moves in flight."""
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
    layouts = [cluster_layout(node.address, 0.5, credentials) for node in nodes if seen_by_id[node.id].up]
    newest = max((layout for layout in layouts if layout is not None), key=lambda layout: layout.epoch, default=None)
    if newest is not None:
        moving = [p.id for p in newest.partitions if p.moving_to]
        table.caption = (f"epoch {newest.epoch}, " + (f"{len(moving)} partitions moving ({', '.join(map(str, moving))})"
                                                      if moving else "no move in flight"))
    return table


def _stop(nodes: Sequence[LocalNode], console: Console, timeout: float = 15.0) -> None:
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


def _start_node(root: Path, node_id: int, peers: dict[int, str], metrics_address: str, state: LocalCluster,
                certificates: ClusterCertificates | None) -> LocalNode:
    node_dir = root / f"node-{node_id}"
    log_file = root / f"node-{node_id}.log"
    command = node_command(node_id, peers, node_dir, state.partitions,
                           "--replication-factor", str(state.replication_factor),
                           "--initial-cluster-token", state.token, "--metrics-address", metrics_address)
    if certificates is not None:
        own = certificates.nodes[node_id]
        command += tls_arguments(own.cert, own.key, certificates.ca.cert)
    with log_file.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    return LocalNode(node_id, peers[node_id], str(node_dir), str(log_file), process.pid, metrics_address)


def _check_unchanged(ctx: click.Context, root: Path, recorded: LocalCluster) -> None:
    """Refuse flags that would change an existing cluster: a restart brings back what was built."""
    given = {name for name in ("nodes", "partitions", "replication_factor", "base_port", "metrics_base_port", "host")
             if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT}
    params = ctx.params
    if "nodes" in given and params["nodes"] != len(recorded.nodes):
        _fail(f"the cluster in {root} has {len(recorded.nodes)} nodes, not {params['nodes']}: add one with "
              f"`kvctl cluster add-node`, remove one with `kvctl cluster remove-node ID`", ExitCode.USAGE)
    if "partitions" in given and params["partitions"] != recorded.partitions:
        _fail(f"the cluster in {root} has {recorded.partitions} partitions, not {params['partitions']}: the "
              f"partition count of a cluster never changes (start a new cluster in another --data-dir)",
              ExitCode.USAGE)
    if "replication_factor" in given and params["replication_factor"] != recorded.replication_factor:
        _fail(f"the cluster in {root} has replication factor {recorded.replication_factor}, not "
              f"{params['replication_factor']}", ExitCode.USAGE)
    if given & {"base_port", "metrics_base_port", "host"}:
        addresses = ", ".join(node.address for node in recorded.nodes)
        _fail(f"the cluster in {root} keeps its addresses ({addresses}); leave out --base-port, "
              "--metrics-base-port and --host", ExitCode.USAGE)
    if params["tls"] != (recorded.tls is not None):
        _fail(f"the cluster in {root} was built {'with' if recorded.tls else 'without'} --tls; start it the "
              "same way", ExitCode.USAGE)


@cluster.command()
@click.option("--nodes", default=DEFAULT_NODES, show_default=True, type=click.IntRange(1, 16),
              help="Number of node processes of a new cluster.")
@click.option("--partitions", default=DEFAULT_PARTITIONS, show_default=True, type=int,
              help="Partitions of a new cluster (a power of two; never changes afterwards).")
@click.option("--replication-factor", default=DEFAULT_REPLICATION_FACTOR, show_default=True,
              type=click.IntRange(1, 7), help="Replicas per partition (capped by --nodes).")
@click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True, type=click.Path(file_okay=False),
              help="Where the nodes keep their data (and the launcher its state).")
@click.option("--base-port", default=2379, show_default=True, type=click.IntRange(1024, 65000),
              help="Node i of a new cluster serves on base-port + i - 1.")
@click.option("--metrics-base-port", default=9379, show_default=True, type=click.IntRange(1024, 65000),
              help="Node i of a new cluster serves /metrics and the status page on metrics-base-port + i - 1.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address a new cluster listens on.")
@click.option("--detach", is_flag=True, help="Start the nodes and return; stop them with `kvctl cluster down`.")
@click.option("--demo", is_flag=True, help="Run a short demo against the cluster once it is up.")
@click.option("--tls", is_flag=True,
              help="Serve TLS, clients and peers alike, with certificates in DATA_DIR/tls (a development CA, "
                   "made when missing, as `kvctl cert init` does).")
@click.option("--auth", is_flag=True,
              help=f"Enable authentication (needs --tls): creates the user root, with the password in "
                   f"${ROOT_PASSWORD_ENV} or a new one, printed. The launcher acts as root through the client "
                   "certificate, whose common name is root.")
@click.pass_context
def up(ctx: click.Context, nodes: int, partitions: int, replication_factor: int, data_dir: str, base_port: int,
       metrics_base_port: int, host: str, detach: bool, demo: bool, tls: bool, auth: bool) -> None:
    """Start a local cluster and show its live status until Ctrl-C.

    \b
    Examples:
      kvctl cluster up --nodes 3                 # foreground, live status table
      kvctl cluster up --nodes 5 --detach        # background; stop with `kvctl cluster down`
      kvctl cluster up --data-dir /tmp/kv --base-port 3379 --metrics-base-port 10379
      kvctl cluster up --tls --detach            # TLS; prints the KVSTORE_CACERT/CERT/KEY to export
      kvctl cluster up --tls --auth --detach     # and users: prints root's password (KVSTORE_USER)
    Restarting with the same --data-dir brings the same cluster back: same nodes, addresses and
    data (its size changes only through `kvctl cluster add-node` / `remove-node`). A node that
    fails to start is reported and the others keep running. Each node's status page (the live
    cluster map) is at http://HOST:METRICS-PORT/.
    """
    console = Console()
    if auth and not tls:
        _fail("--auth needs --tls: passwords and tokens must not cross the network in the clear", ExitCode.USAGE)
    if partitions <= 0 or partitions & (partitions - 1):
        _fail(f"--partitions must be a power of two, got {partitions}", ExitCode.USAGE)
    root = Path(data_dir).resolve()
    recorded = _load_state(root)
    running = [n for n in recorded.nodes if _alive(n.pid)] if recorded is not None else []
    if running:
        _fail(f"a cluster is already running from {root} (pids {', '.join(str(n.pid) for n in running)}); "
              f"stop it with `kvctl cluster down --data-dir {data_dir}`", ExitCode.USAGE)
    if recorded is not None:
        _check_unchanged(ctx, root, recorded)
        peers = {node.id: node.address for node in recorded.nodes}
        metrics = {node.id: node.metrics_address for node in recorded.nodes}
    else:
        peers = {i + 1: f"{host}:{base_port + i}" for i in range(nodes)}
        metrics = {i + 1: f"{host}:{metrics_base_port + i}" for i in range(nodes)}
    busy = [address for address in [*peers.values(), *metrics.values()] if not _port_free(*_host_port(address))]
    if busy:
        _fail(f"{', '.join(busy)} {'are' if len(busy) > 1 else 'is'} in use"
              + ("; choose another --base-port or --metrics-base-port" if recorded is None else ""), ExitCode.USAGE)
    root.mkdir(parents=True, exist_ok=True)
    certificates = _certificates(root, max(peers), host, console) if tls else None
    client_tls = None if certificates is None else TlsConfig(certificates.ca.cert, certificates.client.cert,
                                                             certificates.client.key)
    # A token of its own makes this cluster's id differ from every other cluster's, even one
    # built on the same addresses: their nodes then never talk to each other.
    state = recorded or LocalCluster(secrets.token_hex(8), partitions, replication_factor, (), client_tls)
    # A supervisor's or `timeout`'s SIGTERM stops the cluster the way Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    state = replace(state, nodes=tuple(_start_node(root, node_id, peers, metrics[node_id], state, certificates)
                                       for node_id in peers))
    state.save(root)
    # From here on the nodes are ours to stop, whenever this command ends, unless it detaches.
    try:
        _serve(state, root, data_dir, client_tls, auth, demo, detach, console)
    except KeyboardInterrupt:
        console.print("stopping the cluster...")
    except BaseException:
        _stop(state.nodes, console)
        raise
    if not detach:
        _stop(state.nodes, console)
        console.print("cluster stopped")


def _serve(state: LocalCluster, root: Path, data_dir: str, client_tls: TlsConfig | None, auth: bool, demo: bool,
           detach: bool, console: Console) -> None:
    """Waits for the started nodes, prints how to reach them, enables auth (`auth`), runs the
    demo, then (unless `detach`) shows the live table until every node has exited or the user
    interrupts."""
    credentials = state.credentials()
    failed = _wait_ready(state.nodes, state.partitions, console, credentials)
    started = [node for node in state.nodes if node not in failed]
    endpoints = ",".join(n.address for n in started)
    console.print(f"[green]cluster up[/]: {len(started)} of {len(state.nodes)} nodes, {state.partitions} "
                  f"partitions, {'TLS' if client_tls else 'plaintext'}, data in {root}")
    for node in failed:
        console.print(f"  [yellow]node {node.id} is down[/]; the others serve without it. If its data dir is "
                      f"damaged, replace it: `kvctl member replace {node.id} --address {node.address}` and start a "
                      "node with `kvstore-node --join` there (docs/membership.md)")
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
    live_title = "kvstore local cluster (Ctrl-C stops it)"
    with Live(status_table(state.nodes, credentials, live_title), console=console, refresh_per_second=1) as live:
        while any(_alive(n.pid) for n in state.nodes):
            time.sleep(1)
            live.update(status_table(state.nodes, credentials, live_title))
    _fail("every node has exited; see the logs in " + str(root), ExitCode.UNAVAILABLE)


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


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _running(root: Path) -> LocalCluster:
    """The cluster started from `root`, which must be running (some node alive)."""
    recorded = _load_state(root)
    if recorded is None:
        _fail(f"no cluster was started from {root}", ExitCode.NOT_FOUND)
    if not any(_alive(node.pid) for node in recorded.nodes):
        _fail(f"the cluster in {root} is not running; start it with `kvctl cluster up --data-dir {root}`",
              ExitCode.UNAVAILABLE)
    return recorded


def _change_membership(recorded: LocalCluster, change: Callable[[Client], Awaitable[None]]) -> None:
    endpoints = [node.address for node in recorded.nodes if _alive(node.pid)]

    async def run() -> None:
        async with Client(endpoints, timeout=10.0, tls=recorded.tls) as client:
            await change(client)

    try:
        asyncio.run(run())
    except KvError as error:
        _fail(error.message, ERRORS[error.code].exit_code)
    except KvctlError as error:
        _fail(error.message, ExitCode(error.exit_code))


@cluster.command(name="add-node")
@click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True, type=click.Path(file_okay=False))
@click.option("--wait", "wait_s", default=DEFAULT_WAIT_S, show_default=True, type=click.FloatRange(0),
              help="Seconds to follow the partitions moving to it (0: return once it runs).")
def add_node(data_dir: str, wait_s: float) -> None:
    """Add a node to a running local cluster: the cluster adds a member at the next free port,
    the node starts (joining it), and partitions move to it, shown as they go.

    \b
    Examples:
      kvctl cluster add-node
      kvctl cluster add-node --data-dir /tmp/kv --wait 0
    """
    root = Path(data_dir).resolve()
    recorded = _running(root)
    if recorded.tls is not None:
        _fail("add-node does not make certificates yet: add a node to a TLS cluster with `kvctl cert` and "
              "`kvctl member add`", ExitCode.USAGE)
    host, last_port = _host_port(max(recorded.nodes, key=lambda n: _host_port(n.address)[1]).address)
    port = next(p for p in range(last_port + 1, 65536) if _port_free(host, p))
    address = f"{host}:{port}"
    _, last_metrics_port = _host_port(max(recorded.nodes, key=lambda n: _host_port(n.metrics_address)[1]).metrics_address)
    metrics_address = f"{host}:{next(p for p in range(last_metrics_port + 1, 65536) if _port_free(host, p))}"
    seeds = [node.address for node in recorded.nodes if _alive(node.pid)]

    async def change(client: Client) -> None:
        added = await client.member_add(address)
        node_dir, log_file = root / f"node-{added.id}", root / f"node-{added.id}.log"
        with log_file.open("ab") as log:
            process = subprocess.Popen(join_command(address, seeds, node_dir, "--metrics-address", metrics_address),
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        node = LocalNode(added.id, address, str(node_dir), str(log_file), process.pid, metrics_address)
        replace(recorded, nodes=(*recorded.nodes, node)).save(root)
        click.echo(f"node {added.id} joins at {address} (pid {process.pid})", err=True)
        await follow(client, added.id, MemberState.ACTIVE, wait_s)

    _change_membership(recorded, change)


@cluster.command(name="remove-node")
@click.argument("node_id", type=int)
@click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True, type=click.Path(file_okay=False))
@click.option("--wait", "wait_s", default=DEFAULT_WAIT_S, show_default=True, type=click.FloatRange(1),
              help="Seconds to wait for its partitions to move away before giving up (it keeps running).")
def remove_node(node_id: int, data_dir: str, wait_s: float) -> None:
    """Remove a node from a running local cluster: its partitions move to the others, shown as
    they go, then its process stops and its data dir is left for you to delete.

    \b
    Examples:
      kvctl cluster remove-node 4
    """
    root = Path(data_dir).resolve()
    recorded = _running(root)
    node = next((n for n in recorded.nodes if n.id == node_id), None)
    if node is None:
        _fail(f"node {node_id} is not in the cluster of {root} "
              f"(nodes {', '.join(str(n.id) for n in recorded.nodes)})", ExitCode.NOT_FOUND)

    async def change(client: Client) -> None:
        await client.member_remove(node_id)
        await follow(client, node_id, MemberState.REMOVED, wait_s, shrinking=True)

    _change_membership(recorded, change)
    _stop([node], Console())
    replace(recorded, nodes=tuple(n for n in recorded.nodes if n.id != node_id)).save(root)
    click.echo(f"node {node_id} removed and stopped; its data is in {node.data_dir}", err=True)


@cluster.command()
@click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True, type=click.Path(file_okay=False))
def down(data_dir: str) -> None:
    """Stop a cluster started with `kvctl cluster up --detach`."""
    console = Console()
    root = Path(data_dir).resolve()
    recorded = _load_state(root)
    if recorded is None:
        _fail(f"no cluster was started from {root}", ExitCode.NOT_FOUND)
    alive = [n for n in recorded.nodes if _alive(n.pid)]
    _stop(alive, console)
    console.print(f"stopped {len(alive)} node(s)" if alive else "no node was running")


@cluster.command(name="status")
@click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True, type=click.Path(file_okay=False))
def cluster_status(data_dir: str) -> None:
    """Show the status table of a local cluster once."""
    recorded = _load_state(Path(data_dir).resolve())
    if recorded is None:
        _fail(f"no cluster was started from {Path(data_dir).resolve()}", ExitCode.NOT_FOUND)
    Console().print(status_table(recorded.nodes, recorded.credentials()))
