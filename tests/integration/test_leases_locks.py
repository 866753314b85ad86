"""Leases, locks and fencing on a real 3-node cluster on loopback (one cluster for the module;
each test uses keys and lock names of its own). docs/locks.md describes what is checked."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import grpc
import pytest

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc
from kvstore.client import (
    Client,
    GetResult,
    LeaseNotFoundError,
    ReadConsistency,
    StaleFencingTokenError,
    SyncClient,
    ops,
)
from kvstore.jepsen.checker import Validity
from kvstore.jepsen.history import Event, EventType, pair_operations, parse_jsonl
from kvstore.jepsen.locks import LockWorkload
from kvstore.jepsen.lockworker import LockWorker
from kvstore.jepsen.sections import Ending, critical_sections
from kvstore.jepsen.workloads import read_register
from kvstore.names import lease_partition, lock_key, lock_prefix
from kvstore.progress import SILENT
from kvstore.ring import partition_for_key
from tests.integration.harness import LocalCluster, wait_for

pytestmark = pytest.mark.slow

PARTITIONS = 8
KVCTL = str(Path(sys.executable).with_name("kvctl"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("leases"), size=3, partitions=PARTITIONS)
    local.start_all()
    try:
        yield local
    finally:
        local.stop_all()
        assert not local.any_fatal(), local.any_fatal()


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[SyncClient]:
    with SyncClient(cluster.endpoints, timeout=20.0) as opened:
        yield opened


def kvctl(cluster: LocalCluster, *arguments: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "KVSTORE_ENDPOINTS": ",".join(cluster.endpoints)}
    return subprocess.run(
        [KVCTL, *arguments], env=environment, capture_output=True, text=True, timeout=timeout
    )


def stale_keys(cluster: LocalCluster, node_id: int, prefix: bytes) -> set[bytes] | None:
    """The keys starting with `prefix` (a hash-tagged one: one partition) as node `node_id`'s
    own replica holds them; None if it does not answer."""
    partition = partition_for_key(prefix, PARTITIONS)
    request = pb.ScanRequest(prefix=prefix, partition=partition, consistency=pb.STALE)
    try:
        with grpc.insecure_channel(cluster.address(node_id)) as channel:
            response = kvstore_pb2_grpc.KVStub(channel).Scan(request, timeout=5)
    except grpc.RpcError:
        return None
    return {kv.key for kv in response.kvs} if not response.error.code else None


def test_every_lease_and_lock_rpc_is_served(cluster: LocalCluster, client: SyncClient) -> None:
    """No RPC of the Lease and Lock services answers UNIMPLEMENTED; each does its job."""
    partition = partition_for_key(lock_prefix(b"rpc-check"), PARTITIONS)
    leader = cluster.leaders()[partition]
    with grpc.insecure_channel(cluster.address(leader)) as channel:
        leases, locks = kvstore_pb2_grpc.LeaseStub(channel), kvstore_pb2_grpc.LockStub(channel)
        granted = leases.Grant(pb.LeaseGrantRequest(ttl_seconds=30, partition=partition), timeout=10)
        assert granted.error.code == pb.OK and lease_partition(granted.id) == partition
        kept = list(leases.KeepAlive(iter([pb.LeaseKeepAliveRequest(id=granted.id)]), timeout=10))
        assert [(answer.id, answer.ttl_seconds, answer.error.code) for answer in kept] == [
            (granted.id, 30, pb.OK)
        ]
        status = leases.TimeToLive(pb.LeaseTimeToLiveRequest(id=granted.id, keys=True), timeout=10)
        assert status.error.code == pb.OK and status.granted_ttl_seconds == 30
        listed = leases.Leases(pb.LeaseLeasesRequest(partition=partition), timeout=10)
        assert granted.id in [entry.id for entry in listed.leases]
        held = locks.Lock(pb.LockRequest(name=b"rpc-check", lease=granted.id), timeout=10)
        assert held.error.code == pb.OK and held.fencing_token > 0
        assert locks.Unlock(pb.UnlockRequest(key=held.key), timeout=10).error.code == pb.OK
        assert leases.Revoke(pb.LeaseRevokeRequest(id=granted.id), timeout=10).error.code == pb.OK


def test_an_expired_lease_takes_its_keys_from_every_replica_at_once(
    cluster: LocalCluster, client: SyncClient
) -> None:
    lease = client.grant(2, key="{expiry}:a").id
    client.put("{expiry}:a", "1", lease=lease)
    client.put("{expiry}:b", "2", lease=lease)
    client.put("{expiry}:stays", "3")
    seen: dict[int, list[set[bytes]]] = {node_id: [] for node_id in cluster.node_ids}

    def expired_everywhere() -> bool:
        for node_id in cluster.node_ids:
            keys = stale_keys(cluster, node_id, b"{expiry}:")
            if keys is not None:
                seen[node_id].append(keys)
        return all(states and states[-1] == {b"{expiry}:stays"} for states in seen.values())

    wait_for(expired_everywhere, "the lease's keys to go from every replica", timeout=30)
    leased = {b"{expiry}:a", b"{expiry}:b"}
    for node_id, states in seen.items():
        # Once a replica had all three keys, it lost the two leased ones together, never one
        # without the other: both went in the one expiry entry.
        after_both = [state for state in states if b"{expiry}:stays" in state]
        assert all(leased <= state or not leased & state for state in after_both), (node_id, states)
    with pytest.raises(LeaseNotFoundError):
        client.time_to_live(lease)


def test_a_kept_alive_lease_outlives_its_ttl_and_expires_once_abandoned(client: SyncClient) -> None:
    with client.session(ttl=2) as session:
        lease = session.lease_for("{kept}:k")
        client.put("{kept}:k", "v", lease=lease)
        deadline = time.monotonic() + 6  # three TTLs
        while time.monotonic() < deadline:
            assert client.get("{kept}:k") is not None
            time.sleep(0.2)
        assert not session.lost.is_set()
        assert client.time_to_live(lease).granted_ttl == 2
    # Closing the session revoked the lease.
    assert client.get("{kept}:k") is None
    lease = client.grant(2, key="{abandoned}:k").id
    client.put("{abandoned}:k", "v", lease=lease)
    client.keep_alive_once(lease)
    wait_for(lambda: client.get("{abandoned}:k") is None, "an abandoned lease to expire", timeout=30)


def test_revoke_deletes_the_attached_keys(client: SyncClient) -> None:
    lease = client.grant(60, key="{revoked}:a").id
    client.put("{revoked}:a", "1", lease=lease)
    assert client.time_to_live(lease, keys=True).keys == (b"{revoked}:a",)
    client.revoke(lease)
    assert client.get("{revoked}:a") is None
    assert lease not in [status.id for status in client.leases()]


def test_lock_waiters_are_served_in_fifo_order_one_at_a_time(
    cluster: LocalCluster, client: SyncClient
) -> None:
    order: list[int] = []
    tokens: list[int] = []
    leases = [0] * 4
    released = [threading.Event() for _ in range(4)]

    def contender(number: int) -> None:
        with SyncClient(cluster.endpoints, timeout=20.0) as mine, mine.session(ttl=10) as session:
            leases[number] = session.lease_for(lock_prefix(b"fifo"))
            with mine.lock("fifo", session=session) as held:
                order.append(number)
                tokens.append(held.token)
                released[number].wait(30)

    threads = []
    for number in range(4):
        thread = threading.Thread(target=contender, args=(number,))
        thread.start()
        threads.append(thread)
        # The next contender joins the queue once this one's lock key exists.
        wait_for(partial(queued, leases, number, client), f"contender {number} to queue for the lock")
    for number in range(4):
        wait_for(partial(holding, order, number), f"contender {number} to hold the lock")
        assert order == list(range(number + 1)), "the lock went to a waiter out of turn"
        released[number].set()
    for thread in threads:
        thread.join(30)
    assert tokens == sorted(tokens) and len(set(tokens)) == 4


def queued(leases: list[int], number: int, client: SyncClient) -> bool:
    return leases[number] != 0 and client.get(lock_key(b"fifo", leases[number])) is not None


def holding(order: list[int], number: int) -> bool:
    return len(order) == number + 1


def value_of(client: SyncClient, key: str) -> bytes | None:
    found = client.get(key)
    return None if found is None else found.value


def test_a_fenced_read_makes_the_old_holders_late_write_stale(client: SyncClient) -> None:
    """docs/locks.md, "A fenced read": the new holder's read carries its token, so the old
    holder's write that lands after it is refused although the new holder has not written yet."""
    key = "{fenced-read}:count"
    with client.lock("fenced-read", ttl=10) as old:
        client.put(key, "1", fencing_token=old.token)
    with client.lock("fenced-read", ttl=10) as new:
        read = client.txn([], [ops.get(key)], fencing_token=new.token)
        (got,) = read.responses
        assert isinstance(got, GetResult) and got.kv is not None and got.kv.value == b"1"
        with pytest.raises(StaleFencingTokenError):
            client.put(key, "2", fencing_token=old.token)  # the old holder, late
        with pytest.raises(StaleFencingTokenError):
            client.txn([], [ops.get(key)], fencing_token=old.token)
        client.put(key, "2", fencing_token=new.token)
    assert value_of(client, key) == b"2"


def test_the_lock_of_a_killed_holder_passes_on_after_its_ttl(
    cluster: LocalCluster, client: SyncClient
) -> None:
    environment = {**os.environ, "KVSTORE_ENDPOINTS": ",".join(cluster.endpoints)}
    holder = subprocess.Popen(
        [KVCTL, "lock", "crash", "--ttl", "2", "-o", "simple"],
        env=environment,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        first_token = int([holder.stdout.readline(), holder.stdout.readline()][1])
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    started = time.monotonic()
    with client.lock("crash", ttl=5, timeout=60) as held:
        waited = time.monotonic() - started
        assert held.token > first_token
    assert waited > 0.5, "the lock passed on before the dead holder's lease could have expired"


def test_a_leader_killed_while_a_lease_is_kept_alive_does_not_expire_it(
    cluster: LocalCluster, client: SyncClient
) -> None:
    key = "{failover}:k"
    partition = partition_for_key(key.encode(), PARTITIONS)
    with client.session(ttl=3) as session:
        lease = session.lease_for(key)
        client.put(key, "v", lease=lease)
        leader = cluster.leaders()[partition]
        cluster.kill(leader)
        try:
            deadline = time.monotonic() + 9  # three TTLs, through the election
            while time.monotonic() < deadline:
                assert client.get(key) is not None, "the lease expired while its keepalives were acknowledged"
                time.sleep(0.2)
            assert not session.lost.is_set()
        finally:
            cluster.start(leader)
    cluster.wait_all_partitions_led()
    assert client.get(key) is None  # the session's end revoked it


def test_kvctl_lease_and_lock_commands(cluster: LocalCluster, client: SyncClient) -> None:
    granted = kvctl(cluster, "lease", "grant", "30", "--for-key", "{cli}:job", "-o", "simple")
    assert granted.returncode == 0, granted.stderr
    lease = granted.stdout.strip()
    assert kvctl(cluster, "put", "{cli}:job", "running", "--lease", lease).returncode == 0
    ttl = kvctl(cluster, "lease", "ttl", lease, "--keys", "-o", "json")
    assert ttl.returncode == 0 and '"key": "{cli}:job"' in ttl.stdout and '"granted_ttl": 30' in ttl.stdout
    assert kvctl(cluster, "lease", "keep-alive", lease, "--once", "-o", "simple").stdout.strip() == "30"
    assert kvctl(cluster, "lease", "revoke", lease).returncode == 0
    assert client.get("{cli}:job") is None
    for unknown in (["lease", "revoke", lease], ["put", "{cli}:x", "v", "--lease", lease]):
        refused = kvctl(cluster, *unknown)
        assert refused.returncode == 2 and "does not exist" in refused.stderr, (unknown, refused.stderr)

    script = f'echo "$KVSTORE_LOCK_KEY $KVSTORE_FENCING_TOKEN"; {KVCTL} put stock 5 --fencing-token "$KVSTORE_FENCING_TOKEN"; exit 7'
    ran = kvctl(cluster, "lock", "cli-lock", "--ttl", "5", "--", "sh", "-c", script)
    assert ran.returncode == 7, ran.stderr
    key, token = ran.stdout.splitlines()[1].split()
    assert key.startswith("{cli-lock}/") and int(token) > 0
    assert value_of(client, "stock") == b"5"
    stale = kvctl(cluster, "put", "stock", "4", "--fencing-token", str(int(token) - 1))
    assert stale.returncode == 2
    assert (
        f"fencing token {int(token) - 1}" in stale.stderr
        and f"token {token} already accepted" in stale.stderr
    )
    with pytest.raises(StaleFencingTokenError):
        client.put("stock", "4", fencing_token=int(token) - 1)
    assert value_of(client, "stock") == b"5"


def test_lock_workers_take_turns_and_count_every_increment(cluster: LocalCluster) -> None:
    """Two lock-workload workers (docs/locks.md, "Seeing it: Jepsen"), in this process and without
    faults: sections one at a time in token order, each a fenced read and write, keepalives
    recorded, and every checker of the workload satisfied."""
    workload = LockWorkload(1, 2, fencing=True)
    events = asyncio.run(run_lock_workers(workload, cluster.endpoints, seconds=3.0))
    outcomes = {outcome.checker: outcome for outcome in workload.check(events, 30.0, SILENT)}
    assert all(outcome.validity is Validity.VALID for outcome in outcomes.values()), outcomes
    sections = critical_sections(pair_operations(events), 2)
    assert {section.worker for section in sections} == {0, 1}
    assert all(section.ending is Ending.RELEASED for section in sections)
    assert [section.token for section in sections] == sorted(section.token for section in sections)
    assert all([op.f for op in section.operations] == ["read", "write"] for section in sections)
    assert any(event.f == "keepalive" for event in events)
    assert outcomes["lost-updates"].details["registers"][workload.registers[0]]["final"] == len(sections)


async def run_lock_workers(workload: LockWorkload, endpoints: list[str], seconds: float) -> list[Event]:
    origin = time.monotonic_ns()
    configs = workload.worker_configs(endpoints, 1, origin, origin + round(seconds * 1e9), 10.0)
    streams = [io.StringIO() for _ in configs]
    clients = [Client(endpoints, timeout=10.0) for _ in configs]
    try:
        await asyncio.gather(*(LockWorker(config, client, stream).run()
                               for config, client, stream in zip(configs, clients, streams, strict=True)))  # fmt: skip
        async with Client(endpoints, timeout=10.0) as reader:
            final = await read_register(reader, workload.registers[0], ReadConsistency.LINEARIZABLE)
    finally:
        await asyncio.gather(*(client.close() for client in clients))
    events = [event for stream in streams for event in parse_jsonl(stream.getvalue().splitlines())]
    now = time.monotonic_ns() - origin
    events += [Event(99, EventType.INVOKE, "read", workload.registers[0], None, now),
               Event(99, EventType.OK, "read", workload.registers[0], final.value, now + 1, final.revision)]  # fmt: skip
    return sorted(events, key=lambda event: event.time or 0)
