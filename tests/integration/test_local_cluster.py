"""`kvctl cluster up` on an existing data dir: the same cluster comes back, changes of its shape
are refused with the command that makes them, and a node that cannot start does not take the
healthy ones down."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore.client import SyncClient
from kvstore.node.local import free_ports
from tests.integration.test_bad_input import assert_one_line_error

pytestmark = pytest.mark.slow


def consecutive_free_ports(count: int) -> int:
    """The first of `count` consecutive ports that are free now (`cluster up` takes base-port + i)."""
    for _ in range(100):
        (first,) = free_ports(1)
        probes = [socket.socket() for _ in range(count)]
        try:
            for offset, probe in enumerate(probes):
                probe.bind(("127.0.0.1", first + offset))
            return first
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise RuntimeError(f"found no {count} consecutive free ports")


def port_flags(nodes: int) -> list[str]:
    """`cluster up` flags putting the nodes and their metrics on ports free now (the defaults
    may be taken by another cluster on the machine)."""
    first = consecutive_free_ports(2 * nodes)
    return ["--base-port", str(first), "--metrics-base-port", str(first + nodes)]


def kvctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kvctl.main", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 3-node cluster of 4 partitions built with one key, then stopped."""
    root = tmp_path_factory.mktemp("local") / "cluster"
    flags = port_flags(3)
    base_port = int(flags[1])
    up = kvctl("cluster", "up", "--nodes", "3", "--partitions", "4", "--data-dir", str(root), *flags, "--detach")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        with SyncClient([f"127.0.0.1:{base_port}"], timeout=20.0) as client:
            client.put("kept", "across restarts")
    finally:
        assert kvctl("cluster", "down", "--data-dir", str(root)).returncode == 0
    yield root
    kvctl("cluster", "down", "--data-dir", str(root))


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--nodes", "4"], "has 3 nodes, not 4: add one with `kvctl cluster add-node`"),
        (["--nodes", "2"], "has 3 nodes, not 2: add one with `kvctl cluster add-node`, remove one with "
                           "`kvctl cluster remove-node ID`"),
        (["--partitions", "8"], "has 4 partitions, not 8: the partition count of a cluster never changes"),
    ],
)
def test_changing_the_shape_of_an_existing_cluster_is_refused(data_dir: Path, flags: list[str], fragment: str) -> None:
    assert_one_line_error(kvctl("cluster", "up", *flags, "--data-dir", str(data_dir), "--detach"), 2, fragment)


def test_a_corrupt_node_is_reported_and_the_healthy_ones_keep_serving(data_dir: Path) -> None:
    (manifest,) = (data_dir / "node-3" / "db").glob("MANIFEST-*")
    with manifest.open("r+b") as f:
        f.truncate(10)
    up = kvctl("cluster", "up", "--data-dir", str(data_dir), "--detach")
    output = " ".join(up.stdout.split())  # rich wraps long lines
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"node 3 failed to start: kvstore-node: data directory {manifest.parent} is corrupt ({manifest})" in output
    assert "cluster up: 2 of 3 nodes" in output
    endpoints = [line.split("=", 1)[1] for line in output.split() if line.startswith("KVSTORE_ENDPOINTS=")]
    with SyncClient(endpoints[0].split(","), timeout=20.0) as client:
        stored = client.get("kept")
        assert stored is not None and stored.value == b"across restarts"
        client.put("written", "with two of three")
    assert "stopped 2 node(s)" in kvctl("cluster", "down", "--data-dir", str(data_dir)).stdout


def test_add_node_and_remove_node_change_a_running_local_cluster(tmp_path: Path) -> None:
    root = tmp_path / "growing"
    up = kvctl("cluster", "up", "--nodes", "3", "--partitions", "4", "--data-dir", str(root), *port_flags(4),
               "--detach")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        added = kvctl("cluster", "add-node", "--data-dir", str(root), "--wait", "120")
        assert added.returncode == 0, added.stderr
        assert "node 4 joins at" in added.stderr and "of 4 partitions (the ideal is" in added.stdout
        removed = kvctl("cluster", "remove-node", "1", "--data-dir", str(root), "--wait", "120")
        assert removed.returncode == 0, removed.stderr
        assert "node 1 removed and stopped" in removed.stderr
        status = kvctl("cluster", "status", "--data-dir", str(root))
        assert "no move in flight" in " ".join(status.stdout.split())
        address = next(line.split()[1] for line in status.stdout.splitlines() if line.split()[:1] == ["2"])
        members = kvctl("--endpoints", address, "member", "list", "-o", "simple")
        assert [line.split("\t")[::3] for line in members.stdout.splitlines()] == [
            ["1", "removed"], ["2", "active"], ["3", "active"], ["4", "active"]]
    finally:
        assert kvctl("cluster", "down", "--data-dir", str(root)).returncode == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_foreground_cluster_stops_its_nodes_when_it_is_interrupted(tmp_path: Path, stop_signal: int) -> None:
    root = tmp_path / "foreground"
    up = subprocess.Popen([sys.executable, "-m", "kvctl.main", "cluster", "up", "--nodes", "1", "--partitions", "2",
                           "--data-dir", str(root), *port_flags(1)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert up.stdout is not None
        started = ""
        while "cluster up" not in started:
            line = up.stdout.readline()
            assert line, f"cluster up ended before serving: {started}"
            started += line
        pids = [node["pid"] for node in json.loads((root / "cluster.json").read_text())["nodes"]]
        assert pids and all(_alive(pid) for pid in pids)
        up.send_signal(stop_signal)
        rest, _ = up.communicate(timeout=60)
        assert up.returncode == 0, started + rest
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in pids), "a node outlived its interrupted `cluster up`"
    finally:
        up.kill()
        kvctl("cluster", "down", "--data-dir", str(root))
