"""Runtime membership on real processes: grow 3 -> 5 and shrink 5 -> 3 under a steady write
load, and replace a node whose data dir was deleted; no acknowledged write is lost and every
node serves correct reads (docs/membership.md)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore.client import Client, ClusterLayout, KvError, Member, MemberState, SyncClient
from kvstore.node.local import free_ports, join_command
from tests.integration.harness import WAIT_S, LocalCluster, wait_for

pytestmark = pytest.mark.slow

MAX_WRITES = 3000
CHANGE_WAIT_S = 180.0


def kvctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kvctl.main", *args], capture_output=True, text=True,
                          timeout=CHANGE_WAIT_S + 60)


def cluster_view(endpoints: list[str]) -> tuple[ClusterLayout, list[Member]]:
    async def fetch() -> tuple[ClusterLayout, list[Member]]:
        async with Client(endpoints, timeout=10.0) as client:
            return await client.partitions(), await client.members()

    return asyncio.run(fetch())


def settled(endpoints: list[str], member: int, state: MemberState) -> bool:
    """Whether `member` reached `state` and no partition is moving any more."""
    try:
        layout, members = cluster_view(endpoints)
    except KvError:
        return False
    return not any(p.moving_to for p in layout.partitions) and any(
        m.id == member and m.state is state for m in members)


class Writer:
    """One client writing distinct keys in a loop (bounded in count), remembering what was
    acknowledged; errors are expected while leaders move and are retried by the client."""

    def __init__(self, endpoints: list[str]) -> None:
        self.acknowledged: dict[str, str] = {}
        self._endpoints = endpoints
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def _run(self) -> None:
        with SyncClient(self._endpoints, timeout=20.0) as client:
            for i in range(MAX_WRITES):
                if self._stop.is_set():
                    return
                key, value = f"load/{i:05d}", f"v{i}"
                try:
                    client.put(key, value)
                except KvError:
                    continue  # unknown outcome: not counted as acknowledged
                self.acknowledged[key] = value

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=WAIT_S)


class Joined:
    """Nodes started with --join, stopped at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, node_id: int, address: str, seeds: list[str], data_dir: Path) -> None:
        with (self.root / f"joined-{node_id}.log").open("ab") as log:
            self.processes[node_id] = subprocess.Popen(join_command(address, seeds, data_dir), stdout=log,
                                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def stop(self, node_id: int) -> None:
        process = self.processes.pop(node_id)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=WAIT_S)

    def stop_all(self) -> None:
        for node_id in list(self.processes):
            self.stop(node_id)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path, size=3, partitions=8)
    with local.running():
        local.start_all()
        yield local


@pytest.fixture
def joined(tmp_path: Path) -> Iterator[Joined]:
    nodes = Joined(tmp_path)
    try:
        yield nodes
    finally:
        nodes.stop_all()


def add_node(cluster: LocalCluster, joined: Joined, seeds: list[str]) -> tuple[int, str]:
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    added = kvctl("--endpoints", ",".join(seeds), "member", "add", "--address", address, "--wait", "0")
    assert added.returncode == 0, added.stderr
    node_id = int(added.stderr.split()[2])  # "added node N at ..."
    joined.start(node_id, address, seeds, cluster.root / f"node-{node_id}")
    wait_for(lambda: settled(seeds, node_id, MemberState.ACTIVE), f"node {node_id} to join", CHANGE_WAIT_S)
    return node_id, address


def test_grow_3_to_5_and_shrink_to_3_under_writes(cluster: LocalCluster, joined: Joined) -> None:
    seeds = cluster.endpoints
    with Writer(seeds) as writer:
        wait_for(lambda: len(writer.acknowledged) >= 20, "writes to start")
        new = [add_node(cluster, joined, seeds) for _ in range(2)]
        addresses = [*seeds, *(address for _, address in new)]
        # Every node reports the same members at the same epoch.
        views = {address: cluster_view([address]) for address in addresses}
        assert len({(layout.epoch, tuple(members)) for layout, members in views.values()}) == 1
        layout = views[addresses[0]][0]
        assert all(len(p.replicas) == 3 for p in layout.partitions)
        assert any(4 in p.replicas or 5 in p.replicas for p in layout.partitions)
        for node_id in (1, 2):
            removed = kvctl("--endpoints", ",".join(addresses), "member", "remove", str(node_id),
                            "--wait", str(CHANGE_WAIT_S))
            assert removed.returncode == 0, removed.stderr
            assert "moved" in removed.stdout and "of 8 partitions" in removed.stdout
            cluster.kill(node_id, signal.SIGTERM)
        wait_for(lambda: len(writer.acknowledged) >= 40, "writes after the changes")
    remaining = [cluster.address(3), *(address for _, address in new)]
    layout, members = cluster_view(remaining)
    assert {m.id for m in members if m.state is MemberState.ACTIVE} == {3, 4, 5}
    assert all(set(p.replicas) == {3, 4, 5} for p in layout.partitions)
    for address in remaining:
        with SyncClient([address], timeout=20.0) as reader:
            found = {kv.key.decode(): kv.value.decode() for kv in reader.scan(prefix="load/")}
        assert {key: found.get(key) for key in writer.acknowledged} == writer.acknowledged
    assert not cluster.any_fatal(), cluster.any_fatal()


def test_a_node_whose_data_dir_was_deleted_is_replaced_and_the_data_rebuilt(
    cluster: LocalCluster, joined: Joined
) -> None:
    seeds = cluster.endpoints
    with SyncClient(seeds, timeout=20.0) as client:
        for i in range(60):
            client.put(f"kept/{i:03d}", f"v{i}")
    cluster.kill(3, signal.SIGKILL)
    shutil.rmtree(cluster.root / "node-3")
    live = seeds[:2]
    replaced = kvctl("--endpoints", ",".join(live), "member", "replace", "3", "--address", cluster.address(3),
                     "--wait", "0")
    assert replaced.returncode == 0, replaced.stderr
    fresh = int(replaced.stderr.split()[1])  # "node N at ... replaces node 3"
    joined.start(fresh, cluster.address(3), live, cluster.root / "node-3-new")
    wait_for(lambda: settled(live, 3, MemberState.REMOVED), "node 3's replicas to be rebuilt", CHANGE_WAIT_S)
    layout, _ = cluster_view(live)
    assert all(fresh in p.replicas and 3 not in p.replicas for p in layout.partitions)
    # The fresh node holds real copies: with node 1 gone too, nodes 2 and the fresh one serve.
    cluster.kill(1, signal.SIGKILL)
    with SyncClient([cluster.address(2), cluster.address(3)], timeout=30.0) as client:
        assert [kv.value for kv in client.scan(prefix="kept/")] == [f"v{i}".encode() for i in range(60)]
