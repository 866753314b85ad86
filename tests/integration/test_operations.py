"""Operating a real 3-node cluster: Prometheus metrics, gRPC health and reflection, the node logs
after failures, and the live status page in a headless browser.

The cluster tests share one cluster and run in file order: the later ones stop, pause and kill
nodes, and each brings the cluster back to three balanced nodes before it ends. The last test
starts a cluster of its own through `kvctl cluster up`.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc
from kvstore.client import ReadConsistency, SyncClient
from kvstore.node.local import free_ports, leaders
from kvstore.ring import partition_for_key
from tests.integration.harness import LocalCluster, wait_for

pytestmark = pytest.mark.slow

PARTITIONS = 8
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
# Lines asyncio writes when a future's or task's outcome is dropped: a bug in the node.
ASYNCIO_LEAKS = ("Future exception was never retrieved", "Task exception was never retrieved", "Task was destroyed")

# The families the issue asks for, each with what it stands for there.
FAMILIES = {
    "kvstore_request_duration_seconds": "request rate and latency per operation and consistency level",
    "kvstore_proposals": "proposals",
    "kvstore_partition_commit_index": "commits",
    "kvstore_entries_applied": "applies",
    "kvstore_disk_fsync_duration_seconds": "fsync latency",
    "kvstore_ready_cycle_duration_seconds": "Ready-cycle duration",
    "kvstore_ready_groups": "Ready batch sizes (groups)",
    "kvstore_ready_entries": "Ready batch sizes (entries)",
    "kvstore_peer_sent_bytes": "peer stream bytes",
    "kvstore_peer_connects": "peer reconnects",
    "kvstore_partition_term": "per-partition term",
    "kvstore_partition_leader": "per-partition leader",
    "kvstore_partition_applied_index": "per-partition apply index",
    "kvstore_leader_changes": "leader changes",
    "kvstore_snapshots_sent": "snapshot sends",
    "kvstore_db_size_bytes": "LevelDB size",
}

Samples = dict[str, list[tuple[dict[str, str], float]]]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("ops"), size=3, partitions=PARTITIONS, metrics=True)
    with local.running():
        local.start_all()
        yield local
    chatter = [line for n in local.node_ids for line in local.log_tail(n, 100_000).splitlines() if "logger=grpc" in line]
    assert not chatter, "gRPC's own lines belong to --log-level debug:\n" + "\n".join(chatter)


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(cluster: LocalCluster, node_id: int) -> tuple[set[str], Samples]:
    """(family names, sample name -> [(labels, value)]) of one node's /metrics."""
    status, text = http_get(cluster.metrics_url(node_id) + "/metrics")
    assert status == 200
    families: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return families, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of a sample's values over the series whose labels include `labels`."""
    return sum(v for got, v in samples.get(name, []) if labels.items() <= got.items())


def total(scrapes: list[Samples], name: str, **labels: str) -> float:
    return sum(value(samples, name, **labels) for samples in scrapes)


def test_a_scrape_returns_every_family_and_the_figures_follow_the_writes(cluster: LocalCluster) -> None:
    before = [scrape(cluster, n)[1] for n in cluster.node_ids]
    with SyncClient(cluster.endpoints, timeout=20) as client:
        for i in range(30):
            client.put(f"metrics/{i}", f"v{i}")
        client.get("metrics/1")
        client.get("metrics/1", consistency=ReadConsistency.STALE)
    after = [scrape(cluster, n)[1] for n in cluster.node_ids]

    for node_id in cluster.node_ids:
        families, samples = scrape(cluster, node_id)
        missing = sorted(set(FAMILIES) - families)
        assert not missing, f"node {node_id} lacks {missing}"
        status = cluster.status(node_id)
        assert status is not None
        leaders = {str(p.id): float(p.leader) for p in status.partitions}
        assert {labels["partition"]: v for labels, v in samples["kvstore_partition_leader"]} == leaders
        commits = dict((labels["partition"], v) for labels, v in samples["kvstore_partition_commit_index"])
        applied = dict((labels["partition"], v) for labels, v in samples["kvstore_partition_applied_index"])
        assert len(commits) == PARTITIONS and all(applied[p] <= commits[p] for p in commits)
        assert value(samples, "kvstore_db_size_bytes") > 0
        peers = {labels["peer"]: v for labels, v in samples["kvstore_peer_connected"]}
        assert peers == {str(n): 1.0 for n in cluster.node_ids if n != node_id}
        assert all(value(samples, "kvstore_peer_sent_bytes_total", peer=p) > 0 for p in peers)

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    # Every put is one operation, proposed once, and applied on its three replicas.
    assert grew("kvstore_request_duration_seconds_count", op="put", consistency="majority") >= 30
    assert grew("kvstore_request_duration_seconds_count", op="get", consistency="linearizable") >= 1
    assert grew("kvstore_request_duration_seconds_count", op="get", consistency="stale") >= 1
    assert grew("kvstore_proposals_total") >= 30
    # Followers learn of the last commits with the next heartbeat.
    applied_before = total(before, "kvstore_entries_applied_total")
    wait_for(lambda: total([scrape(cluster, n)[1] for n in cluster.node_ids], "kvstore_entries_applied_total")
             >= applied_before + 90, "every replica to apply the writes")
    assert all(value(a, "kvstore_disk_fsync_duration_seconds_count") > value(b, "kvstore_disk_fsync_duration_seconds_count")
               for a, b in zip(after, before, strict=True))
    assert grew("kvstore_ready_entries_sum") >= 90
    assert total(after, "kvstore_partitions_led") == PARTITIONS
    assert total(after, "kvstore_elections_won_total") >= PARTITIONS


def test_health_is_serving_through_grpc_and_http(cluster: LocalCluster) -> None:
    for node_id in cluster.node_ids:
        with grpc.insecure_channel(cluster.address(node_id)) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "kvstore.v1.KV", "kvstore.v1.Cluster", "kvstore.v1.Auth"):
                answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
            with pytest.raises(grpc.RpcError) as unknown:
                health.Check(health_pb2.HealthCheckRequest(service="kvstore.v1.Nothing"), timeout=5)
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert http_get(cluster.metrics_url(node_id) + "/readyz") == (200, "serving\n")
        assert http_get(cluster.metrics_url(node_id) + "/healthz") == (200, "ok\n")


def test_reflection_lists_the_services_served(cluster: LocalCluster) -> None:
    with grpc.insecure_channel(cluster.address(1)) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="kvstore.v1.KV"),
        ]
        listed, described = list(stub.ServerReflectionInfo(iter(requests), timeout=5))
    names = {service.name for service in listed.list_services_response.service}
    assert names == {"kvstore.v1.KV", "kvstore.v1.Cluster", "kvstore.v1.Lease", "kvstore.v1.Lock", "kvstore.v1.Watch",
                     "kvstore.v1.Auth", "kvstore.v1.Peer", "grpc.health.v1.Health",
                     "grpc.reflection.v1alpha.ServerReflection"}
    assert described.file_descriptor_response.file_descriptor_proto  # the KV service's .proto, for grpcurl


def test_health_turns_not_serving_when_a_node_begins_to_stop_and_serving_after_restart(cluster: LocalCluster) -> None:
    node_id = 3
    with grpc.insecure_channel(cluster.address(node_id)) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service="kvstore.v1.KV"),
                                                           timeout=60)
        first = next(watch)
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        cluster.processes[node_id].send_signal(signal.SIGTERM)
        seen: list[int] = []
        try:
            seen.extend(answer.status for answer in watch)
        except grpc.RpcError:
            pass  # the server closed the stream when it stopped
    assert health_pb2.HealthCheckResponse.NOT_SERVING in seen
    cluster.processes.pop(node_id).wait(timeout=60)
    cluster.start(node_id)
    wait_for(lambda: ready(cluster, node_id), "the restarted node to report ready")
    cluster.wait_leaders_balanced()


def ready(cluster: LocalCluster, node_id: int) -> bool:
    try:
        return http_get(cluster.metrics_url(node_id) + "/readyz")[0] == 200
    except OSError:  # not listening yet
        return False


def test_an_isolated_then_killed_leader_leaves_election_lines_and_no_asyncio_leaks(cluster: LocalCluster) -> None:
    """Writes to a leader whose followers are paused time out (their calls are cancelled), the
    leader steps down and fails what it still waited for; then it is killed and the others elect."""
    key = b"isolated-leader"
    partition = partition_for_key(key, PARTITIONS)
    victim = cluster.leaders()[partition]
    others = [n for n in cluster.node_ids if n != victim]
    for node_id in others:
        cluster.processes[node_id].send_signal(signal.SIGSTOP)
    try:
        with grpc.insecure_channel(cluster.address(victim)) as channel:
            kv = kvstore_pb2_grpc.KVStub(channel)
            # Sent at once, before the leader can notice (its quorum check runs once per election
            # timeout, 0.6 s at least), so each waits for a commit that cannot come.
            calls = [kv.Put.future(pb.PutRequest(header=pb.RequestHeader(client_id="isolated", request_seq=seq),
                                                 key=key, value=b"v"), timeout=0.2) for seq in range(1, 6)]
            assert [call.code() for call in calls] == [grpc.StatusCode.DEADLINE_EXCEEDED] * len(calls)
        wait_for(lambda: partition not in leaders([cluster.status(victim)]), "the isolated leader to step down")
    finally:
        for node_id in others:
            cluster.processes[node_id].send_signal(signal.SIGCONT)
    wait_for(lambda: partition in cluster.leaders(), "a leader for the partition again")
    victim = cluster.leaders()[partition]
    old_term = partition_term(cluster, victim, partition)
    cluster.kill(victim, signal.SIGKILL)
    survivors = [n for n in cluster.node_ids if n != victim]
    wait_for(lambda: partition in cluster.leaders(), "a new leader after the kill")

    def elected() -> tuple[int, int] | None:
        """(winner, term) of an election for the partition after the kill, from the logs."""
        for node_id in survivors:
            for term in map(int, re.findall(rf"partition {partition}: won the election in term (\d+);",
                                            cluster.log_tail(node_id, 100_000))):
                if term > old_term:
                    return node_id, term
        return None

    wait_for(lambda: elected() is not None, "the winner's election line")
    winner, term = elected()  # type: ignore[misc]
    follower = next(n for n in survivors if n != winner)
    wait_for(lambda: f"partition {partition}: node {winner} leads it in term {term}" in cluster.log_tail(follower, 100_000),
             "the other survivor's line naming its new leader")
    for node_id in cluster.node_ids:
        log = cluster.log_tail(node_id, 100_000)
        leaks = [line for line in log.splitlines() if any(leak in line for leak in ASYNCIO_LEAKS)]
        assert not leaks, f"node {node_id}:\n" + "\n".join(leaks)
    cluster.start(victim)
    cluster.wait_leaders_balanced()


def partition_term(cluster: LocalCluster, node_id: int, partition: int) -> int:
    status = cluster.status(node_id)
    assert status is not None
    return next(p.term for p in status.partitions if p.id == partition)


def test_the_status_page_shows_the_cluster_live_and_a_killed_node_as_down(cluster: LocalCluster, tmp_path: Path) -> None:
    assert CHROMIUM.exists(), "Debian's chromium is missing: run `make test` or deploy/install-system-deps.sh"
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1366, "height": 768},
        )
        try:
            page = browser.new_page()
            page.goto(cluster.metrics_url(1) + "/")
            up = page.locator("tr[data-state=up]")
            expect(up).to_have_count(3, timeout=30_000)
            expect(page.locator("[data-partition-id]")).to_have_count(PARTITIONS)
            for node_id in cluster.node_ids:
                expect(page.locator(f"tr[data-node-id='{node_id}']")).to_contain_text(cluster.address(node_id))
            leaders = cluster.leaders()
            for partition, leader in leaders.items():
                expect(page.locator(f"[data-partition-id='{partition}']")).to_have_attribute("data-leader", str(leader))
            page.screenshot(path=str(cluster.root / "status-page.png"))

            cluster.kill(3, signal.SIGKILL)
            down = page.locator("tr[data-node-id='3'][data-state=down]")
            expect(down).to_be_visible(timeout=30_000)
            expect(down).to_contain_text("unreachable")
            expect(page.locator("tr[data-state=up]")).to_have_count(2)
            expect(page.locator(".chip.down[data-node='3']")).to_have_count(PARTITIONS)  # every replica on it
            # The partitions it led get new leaders, and the page follows without a reload.
            expect(page.locator("[data-partition-id][data-leader='0']")).to_have_count(0, timeout=30_000)
        finally:
            browser.close()


def test_kvctl_cluster_up_serves_each_nodes_status_page_and_prints_its_url(tmp_path: Path) -> None:
    port, metrics_port = free_ports(2)
    data_dir = tmp_path / "kv"

    def kvctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kvctl.main", "cluster", *args, "--data-dir", str(data_dir)],
                              capture_output=True, text=True, timeout=120)

    up = kvctl("up", "--nodes", "1", "--partitions", "2", "--detach", "--base-port", str(port),
               "--metrics-base-port", str(metrics_port))
    try:
        assert up.returncode == 0, up.stderr
        url = f"http://127.0.0.1:{metrics_port}/"
        assert f"status page: {url}" in up.stdout
        status, page = http_get(url)
        assert status == 200 and "kvstore cluster" in page
        assert http_get(url + "readyz") == (200, "serving\n")
        table = kvctl("status")
        assert table.returncode == 0 and f"127.0.0.1:{port}" in table.stdout and "up" in table.stdout
    finally:
        assert kvctl("down").returncode == 0
