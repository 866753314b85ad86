"""A private network for one test run: a Linux bridge plus one network namespace per node.

Every node lives in a namespace of its own (a host), joined to a bridge in the root namespace by
a veth pair, with an address the run chooses in 10.213.<subnet>.0/24 (the bridge is .254, host h
is .h). Hosts are numbered by the harness: the initial node i runs on host i, and a node that joins
later gets a host added for it while the run goes on (`add_host`), or takes over the host of the
node it replaces. The harness process stays in the root namespace and reaches the hosts through
the bridge. Partitions are iptables DROP rules inside the namespaces between host addresses only,
so the harness's own traffic (from the bridge address) is never cut and no rule ever lands in the
root namespace.

All names start with ``kvj<subnet as two hex digits>-``: short enough for interface names (at most
15 characters), unique per run, and findable by ``cleanup_leftovers`` after a crash.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

NAME_PREFIX = "kvj"
SUBNET_BASE = "10.213"
BRIDGE_HOST = 254
_COMMAND_TIMEOUT_S = 30.0


class NetworkError(RuntimeError):
    """A network command failed; the message has the command and what it printed."""


def run_command(args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        completed = subprocess.run(
            list(args), capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError as error:
        raise NetworkError(f"{args[0]} is not installed: {error}") from None
    except subprocess.TimeoutExpired:
        raise NetworkError(f"{' '.join(args)} did not finish within {_COMMAND_TIMEOUT_S:g}s") from None
    if check and completed.returncode != 0:
        raise NetworkError(f"{' '.join(args)} failed ({completed.returncode}): {completed.stderr.strip()}")
    return completed


def missing_prerequisites() -> str | None:
    """Why this machine cannot host a namespaced cluster, or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces, veths and iptables need root (run as root)"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iproute2 iptables)"
    listing = run_command(["ip", "netns", "list"], check=False)
    if listing.returncode != 0:
        return f"'ip netns' is unavailable: {listing.stderr.strip()}"
    return None


@dataclass(frozen=True, slots=True)
class Host:
    """Where one node lives: its namespace, the two ends of its veth and its address."""

    number: int
    namespace: str
    host_link: str  # the veth end plugged into the bridge, in the root namespace
    node_link: str  # the veth end inside the node's namespace
    address: str


def _existing_namespaces() -> list[str]:
    listing = run_command(["ip", "netns", "list"], check=False).stdout
    # Lines look like "kvj3f-n1 (id: 4)" or just "kvj3f-n1".
    return [line.split()[0] for line in listing.splitlines() if line.strip()]


def _existing_links() -> list[str]:
    listing = run_command(["ip", "-o", "link", "show"], check=False).stdout
    # Lines look like "12: kvj3f-h1@if11: <...>"; the name ends at '@' or ':'.
    names = []
    for line in listing.splitlines():
        parts = line.split(": ", 2)
        if len(parts) >= 2:
            names.append(parts[1].split("@")[0])
    return names


def _subnets_in_use() -> set[int]:
    """Third bytes of 10.213.x.y addresses already configured in the root namespace."""
    listing = run_command(["ip", "-4", "-o", "addr", "show"], check=False).stdout
    used = set()
    for word in listing.split():
        if word.startswith(SUBNET_BASE + "."):
            used.add(int(word.split(".")[2]))
    return used


class Network:
    """The bridge, namespaces and veths of one run. ``create`` builds it; ``destroy`` removes it all."""

    def __init__(self, subnet: int, hosts: Sequence[int]) -> None:
        self.subnet = subnet
        self.tag = f"{NAME_PREFIX}{subnet:02x}"
        self.bridge = f"{self.tag}-br"
        self.bridge_address = f"{SUBNET_BASE}.{subnet}.{BRIDGE_HOST}"
        self.hosts = {number: self._host(number) for number in hosts}
        self._cut: set[frozenset[int]] = set()

    def _host(self, number: int) -> Host:
        return Host(
            number=number,
            namespace=f"{self.tag}-n{number}",
            host_link=f"{self.tag}-h{number}",
            node_link=f"{self.tag}-p{number}",
            address=f"{SUBNET_BASE}.{self.subnet}.{number}",
        )

    @classmethod
    def create(cls, hosts: Sequence[int], preferred_subnet: int) -> Network:
        """Claim a free subnet (trying ``preferred_subnet`` first) and build the network on it.

        The bridge is created first and doubles as the claim: creating a link whose name exists
        fails, so two runs starting at once never share names or addresses.
        """
        taken = _subnets_in_use()
        existing = set(_existing_links()) | {name.split("-")[0] for name in _existing_namespaces()}
        for offset in range(256):
            subnet = (preferred_subnet + offset) % 256
            tag = f"{NAME_PREFIX}{subnet:02x}"
            if subnet in taken or tag in existing or f"{tag}-br" in existing:
                continue
            claim = run_command(["ip", "link", "add", f"{tag}-br", "type", "bridge"], check=False)
            if claim.returncode != 0:
                continue  # another run claimed it between our listing and now
            network = cls(subnet, hosts)
            try:
                network._build()
            except BaseException:
                network.destroy()
                raise
            return network
        raise NetworkError(f"no free subnet left in {SUBNET_BASE}.0.0/16")

    def _build(self) -> None:
        run_command(["ip", "addr", "add", f"{self.bridge_address}/24", "dev", self.bridge])
        run_command(["ip", "link", "set", self.bridge, "up"])
        for host in self.hosts.values():
            self._plug(host)

    def _plug(self, host: Host) -> None:
        run_command(["ip", "netns", "add", host.namespace])
        run_command(["ip", "link", "add", host.host_link, "type", "veth", "peer", "name", host.node_link])
        run_command(["ip", "link", "set", host.node_link, "netns", host.namespace])
        run_command(["ip", "link", "set", host.host_link, "master", self.bridge])
        run_command(["ip", "link", "set", host.host_link, "up"])
        inside = ["ip", "-n", host.namespace]
        run_command([*inside, "addr", "add", f"{host.address}/24", "dev", host.node_link])
        run_command([*inside, "link", "set", host.node_link, "up"])
        run_command([*inside, "link", "set", "lo", "up"])

    def add_host(self, number: int) -> None:
        """Plug in one more host while the run goes on (for a node joining the cluster); it is
        not cut off from anyone, and ``destroy`` removes it with the others."""
        if not 0 < number < BRIDGE_HOST or number in self.hosts:
            raise NetworkError(f"host {number} exists or is not a free address in {SUBNET_BASE}.{self.subnet}.0/24")
        host = self._host(number)
        self.hosts[number] = host  # before building: destroy then removes a half-built host too
        self._plug(host)

    def address_of(self, host: int) -> str:
        return self.hosts[host].address

    def exec_prefix(self, host: int) -> list[str]:
        """The command prefix that runs a program inside the host's namespace."""
        return ["ip", "netns", "exec", self.hosts[host].namespace]

    # ---- partitions -------------------------------------------------------------------------

    def cut(self, links: Iterable[tuple[int, int]]) -> None:
        """Drop all traffic between each pair of hosts, in both directions."""
        for a, b in links:
            pair = frozenset((a, b))
            if a == b or pair in self._cut:
                continue
            self._drop_from(a, b)
            self._drop_from(b, a)
            self._cut.add(pair)

    def _drop_from(self, host: int, peer_host: int) -> None:
        inside = self.exec_prefix(host)
        peer = self.address_of(peer_host)
        run_command([*inside, "iptables", "-w", "-A", "INPUT", "-s", peer, "-j", "DROP"])
        run_command([*inside, "iptables", "-w", "-A", "OUTPUT", "-d", peer, "-j", "DROP"])

    def heal(self) -> None:
        """Remove every partition rule. The node namespaces are ours alone, so their chains are
        flushed whole."""
        for number in self.hosts:
            inside = self.exec_prefix(number)
            for chain in ("INPUT", "OUTPUT"):
                run_command([*inside, "iptables", "-w", "-F", chain])
        self._cut.clear()

    # ---- teardown ---------------------------------------------------------------------------

    def destroy(self) -> None:
        """Remove the namespaces (their iptables rules go with them), veths and bridge; never raises
        for parts already gone, so it is safe on a half-built network."""
        names = _existing_namespaces()
        for host in self.hosts.values():
            if host.namespace in names:
                _kill_namespace_processes(host.namespace)
                run_command(["ip", "netns", "del", host.namespace], check=False)
        links = set(_existing_links())
        for host in self.hosts.values():
            if host.host_link in links:
                run_command(["ip", "link", "del", host.host_link], check=False)
        if self.bridge in links:
            run_command(["ip", "link", "del", self.bridge], check=False)


def _kill_namespace_processes(namespace: str) -> None:
    pids = run_command(["ip", "netns", "pids", namespace], check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            continue


def cleanup_leftovers() -> list[str]:
    """Remove every namespace and link a crashed run left behind (found by the name prefix).

    Returns what was removed. Processes still running in those namespaces are killed first.
    """
    removed: list[str] = []
    for namespace in _existing_namespaces():
        if namespace.startswith(NAME_PREFIX) and _is_run_name(namespace):
            _kill_namespace_processes(namespace)
            run_command(["ip", "netns", "del", namespace], check=False)
            removed.append(f"namespace {namespace}")
    # Veth host ends first: deleting one end removes its peer too.
    links = [name for name in _existing_links() if _is_run_name(name)]
    for link in sorted(links, key=lambda name: name.endswith("-br")):
        if run_command(["ip", "link", "del", link], check=False).returncode == 0:
            removed.append(f"link {link}")
    return removed


def _is_run_name(name: str) -> bool:
    """``kvj3f-n1``, ``kvj3f-h2``, ``kvj3f-br``...: a name this module makes."""
    tag, _, rest = name.partition("-")
    if len(tag) != len(NAME_PREFIX) + 2 or not tag.startswith(NAME_PREFIX) or not rest:
        return False
    try:
        int(tag[len(NAME_PREFIX) :], 16)
    except ValueError:
        return False
    return rest == "br" or (rest[0] in "nhp" and rest[1:].isdigit())
