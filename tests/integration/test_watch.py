"""Watches on a real 3-node cluster on loopback (one cluster for the module; each test watches
keys of its own). docs/watch.md describes what is checked: a watch delivers exactly the
acknowledged writes of its keys, per partition in revision order, none missing and none twice,
also while the node serving it and partition leaders die; a start revision no replica holds
any more ends the watch with COMPACTED and the revision to re-list from; kvctl watch prints
the events and stops on --count or Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import grpc
import pytest

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc
from kvstore.client import Client, EventType, KvError, SyncClient, Watch, WatchCompactedError, WatchEvent
from kvstore.hub import DEFAULT_HISTORY_BYTES
from kvstore.ring import partition_for_key
from tests.integration.harness import LocalCluster, wait_for
from tests.integration.test_leases_locks import KVCTL, kvctl
from tests.integration.test_operations import scrape, value

pytestmark = pytest.mark.slow

PARTITIONS = 8
WAIT_S = 60.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("watch"), size=3, partitions=PARTITIONS, metrics=True)
    with local.running():
        local.start_all()
        yield local


@pytest.fixture
async def client(cluster: LocalCluster) -> AsyncIterator[Client]:
    async with Client(cluster.endpoints, timeout=20.0) as opened:
        yield opened


@dataclass
class Ledger:
    """The writes made under a prefix: acknowledged ones by (partition, revision, key), and the
    keys of writes whose outcome is unknown (they failed, but may have been applied)."""

    acknowledged: dict[tuple[int, int, bytes], EventType] = field(default_factory=dict)
    uncertain: set[bytes] = field(default_factory=set)

    async def put(self, client: Client, key: bytes, value: bytes) -> None:
        try:
            header = (await client.put(key, value)).header
        except KvError:
            self.uncertain.add(key)
        else:
            self.acknowledged[header.partition, header.revision, key] = EventType.PUT

    async def delete(self, client: Client, key: bytes) -> None:
        try:
            header = (await client.delete(key)).header
        except KvError:
            self.uncertain.add(key)
        else:
            self.acknowledged[header.partition, header.revision, key] = EventType.DELETE


class Collector:
    """Takes a watch's events in a task of its own until stopped."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self.events: list[WatchEvent] = []
        self._task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        async for event in self.watch:
            self.events.append(event)

    def seen(self) -> set[tuple[int, int, bytes]]:
        return {(event.partition, event.revision, event.key) for event in self.events}

    async def until(self, wanted: set[tuple[int, int, bytes]], what: str) -> None:
        async with asyncio.timeout(WAIT_S):
            while not wanted <= self.seen():
                if self._task.done():
                    self._task.result()
                    pytest.fail(f"the watch ended before {what}")
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        await self.watch.close()
        await self._task


def keys_in_every_partition(prefix: bytes) -> list[bytes]:
    """One key under `prefix` in each partition."""
    found: dict[int, bytes] = {}
    number = 0
    while len(found) < PARTITIONS:
        key = prefix + b"end-%d" % number
        found.setdefault(partition_for_key(key, PARTITIONS), key)
        number += 1
    return list(found.values())


async def finish_and_compare(client: Client, collector: Collector, ledger: Ledger, prefix: bytes) -> None:
    """Write an end marker in every partition, wait until the watch saw them all (a partition's
    events come in order: nothing of it is still on its way), then compare what it saw with what
    was written."""
    for key in keys_in_every_partition(prefix):
        await ledger.put(client, key, b"end")
    assert not ledger.uncertain & set(keys_in_every_partition(prefix)), "an end marker was not acknowledged"
    await collector.until(set(ledger.acknowledged), "every acknowledged write was seen")
    await collector.stop()
    events = collector.events
    seen = [(event.partition, event.revision, event.key) for event in events]
    assert len(seen) == len(set(seen)), "an event was delivered twice"
    for partition in range(PARTITIONS):
        revisions = [event.revision for event in events if event.partition == partition]
        assert revisions == sorted(revisions), f"partition {partition}'s events came out of order"
    extra = [event for event in events if (event.partition, event.revision, event.key) not in ledger.acknowledged]
    assert all(event.key in ledger.uncertain for event in extra), f"events of writes never made: {extra[:3]}"
    for event in events:
        assert event.key.startswith(prefix)
        kind = ledger.acknowledged.get((event.partition, event.revision, event.key))
        assert kind is None or kind is event.type


async def test_a_prefix_watch_sees_exactly_the_acknowledged_writes_of_every_partition(client: Client) -> None:
    prefix = b"exact/"
    ledger = Ledger()
    async with client.watch(prefix, prefix=True, prev_kv=True) as watch:
        collector = Collector(watch)
        await client.put(b"other/not-watched", b"x")
        for round_ in range(4):
            await asyncio.gather(*(
                ledger.put(client, prefix + b"k%d" % number, b"v%d" % round_) for number in range(40)
            ))
        await asyncio.gather(*(ledger.delete(client, prefix + b"k%d" % number) for number in range(0, 40, 3)))
        await finish_and_compare(client, collector, ledger, prefix)
    assert not ledger.uncertain
    assert len({event.partition for event in collector.events}) == PARTITIONS
    # prev_kv: every overwrite and delete carries the value written before it.
    last: dict[bytes, bytes] = {}
    for event in sorted(collector.events, key=lambda event: (event.partition, event.revision)):
        previous = event.prev_kv.value if event.prev_kv is not None else None
        assert previous == last.get(event.key), event
        if event.type is EventType.PUT:
            last[event.key] = event.value
        else:
            last.pop(event.key, None)


async def test_a_watch_goes_on_without_gaps_or_repeats_while_nodes_die(
    cluster: LocalCluster, client: Client
) -> None:
    """Each node killed serves some of the watch's partitions and leads some partition (checked
    before the kill); writes go on meanwhile."""
    prefix = b"deaths/"
    ledger = Ledger()
    number = 0

    async def write(count: int) -> None:
        nonlocal number
        await asyncio.gather(*(ledger.put(client, prefix + b"k%d" % (number + i), b"v") for i in range(count)))
        number += count

    async with client.watch(prefix, prefix=True) as watch:
        collector = Collector(watch)
        await write(40)
        for victim in (1, 2):
            watches = value(scrape(cluster, victim)[1], "kvstore_watches")
            assert watches > 0 and victim in cluster.leaders().values(), (victim, watches, cluster.leaders())
            cluster.kill(victim)
            await write(60)
            await collector.until(set(ledger.acknowledged), f"the writes made while node {victim} was down")
            cluster.start(victim)
            await asyncio.to_thread(cluster.wait_all_partitions_led)
            await write(20)
        await finish_and_compare(client, collector, ledger, prefix)
    await asyncio.to_thread(cluster.wait_leaders_balanced)


async def test_a_start_revision_no_replica_holds_is_compacted_with_the_revision_to_relist_from(
    client: Client,
) -> None:
    # One partition (a hash tag); values large enough that a few of them overflow its history.
    prefix = b"{compacted}/"
    value = b"x" * (DEFAULT_HISTORY_BYTES // 3)
    first = (await client.put(prefix + b"0", value)).header.revision
    for number in range(1, 6):
        await client.put(prefix + b"%d" % number, value)
    watch = client.watch(prefix, prefix=True, start_revision=first)
    with pytest.raises(WatchCompactedError) as refused:
        await watch.start()
    error = refused.value
    assert error.partition == partition_for_key(prefix, PARTITIONS)
    assert error.revision == first and error.compact_revision > first
    assert str(error.compact_revision) in error.message and "list the keys again" in error.message
    # Every replica holds the changes from compact_revision on: a watch from there starts.
    async with client.watch(prefix, prefix=True, start_revision={error.partition: error.compact_revision}) as resumed:
        event = await anext(resumed)
    assert event.revision >= error.compact_revision and event.value == value
    # Re-listing: a new watch from now, then the listing; the watch has every change after it.
    async with client.watch(prefix, prefix=True) as relisted:
        listed = await client.scan(prefix=prefix, keys_only=True)
        assert [kv.key for kv in listed] == [prefix + b"%d" % number for number in range(6)]
        written = (await client.delete(prefix + b"0")).header.revision
        event = await anext(relisted)
    assert (event.type, event.key, event.revision) == (EventType.DELETE, prefix + b"0", written)


def test_the_sync_client_watches_with_a_blocking_iterator(cluster: LocalCluster) -> None:
    with SyncClient(cluster.endpoints, timeout=20.0) as client:
        written = client.put("{sync}/a", "1").header
        client.delete("{sync}/a")
        with client.watch("{sync}/a", start_revision=written.revision) as watch:
            events = [next(watch), next(watch)]
            assert watch.position == {written.partition: events[1].revision + 1}
    assert [(event.type, event.key, event.value) for event in events] == [
        (EventType.PUT, b"{sync}/a", b"1"), (EventType.DELETE, b"{sync}/a", b"")
    ]


def test_every_watch_request_kind_is_served(cluster: LocalCluster) -> None:
    """The Watch service's one RPC, with each kind of request: create (a key and a prefix),
    progress, cancel; and the call ends once the client closed its side and no watch is left.
    Each request is sent once the answers to the one before it arrived."""
    assert [method.name for method in pb.DESCRIPTOR.services_by_name["Watch"].methods] == ["Watch"]
    partition = partition_for_key(b"{raw}", PARTITIONS)
    requests: queue.Queue[pb.WatchRequest | None] = queue.Queue()
    with grpc.insecure_channel(cluster.address(1)) as channel:
        responses = kvstore_pb2_grpc.WatchStub(channel).Watch(iter(requests.get, None), timeout=WAIT_S)
        requests.put(pb.WatchRequest(create=pb.WatchCreateRequest(watch_id=1, partition=partition, key=b"{raw}k")))
        requests.put(pb.WatchRequest(
            create=pb.WatchCreateRequest(watch_id=2, partition=partition, key=b"{raw}", prefix=True)
        ))
        created = [next(responses), next(responses)]
        requests.put(pb.WatchRequest(progress=pb.WatchProgressRequest()))
        progress = [next(responses), next(responses)]
        requests.put(pb.WatchRequest(cancel=pb.WatchCancelRequest(watch_id=1)))
        requests.put(pb.WatchRequest(cancel=pb.WatchCancelRequest(watch_id=2)))
        requests.put(None)
        canceled = list(responses)  # to the end of the call
    for answers, flag in ((created, "created"), (progress, None), (canceled, "canceled")):
        assert sorted(answer.watch_id for answer in answers) == [1, 2], answers
        for answer in answers:
            assert not answer.events and not answer.error.code and answer.header.partition == partition
            assert answer.created == (flag == "created") and answer.canceled == (flag == "canceled")
    # A progress response says how far the watch has seen: at least where it was created.
    assert min(answer.header.revision for answer in progress) >= max(answer.header.revision for answer in created)


def test_kvctl_watch_prints_json_lines_and_stops_after_count(cluster: LocalCluster) -> None:
    with SyncClient(cluster.endpoints, timeout=20.0) as client:
        first = client.put("{cli}/a", "1").header
        client.put("{cli}/b", "2")
        client.delete("{cli}/a")
    done = kvctl(cluster, "watch", "{cli}/", "--prefix", "--rev", str(first.revision), "--count", "3", "-o", "json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(line["type"], line["key"], line["value"], line["partition"]) for line in lines] == [
        ("put", "{cli}/a", "1", first.partition), ("put", "{cli}/b", "2", first.partition),
        ("delete", "{cli}/a", "", first.partition),
    ]
    assert [line["revision"] for line in lines] == sorted(line["revision"] for line in lines)
    assert lines[0]["revision"] == first.revision
    table = kvctl(cluster, "watch", "{cli}/b", "--rev", str(first.revision), "--count", "1", "--prev-kv")
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith("PUT {cli}/b = 2 (was absent)  [partition")


def test_kvctl_watch_reports_a_compacted_start_revision(cluster: LocalCluster) -> None:
    with SyncClient(cluster.endpoints, timeout=20.0) as client:
        value = "x" * (DEFAULT_HISTORY_BYTES // 3)
        first = client.put("{cli-compacted}/0", value).header
        for number in range(1, 6):
            client.put(f"{{cli-compacted}}/{number}", value)
    done = kvctl(cluster, "watch", "{cli-compacted}/", "--prefix", "--rev", str(first.revision))
    assert done.returncode == 2 and not done.stdout
    assert done.stderr.count("\n") == 1 and "list the keys again" in done.stderr, done.stderr


def kvctl_watching(cluster: LocalCluster, key: str) -> subprocess.Popen[bytes]:
    """`kvctl watch KEY -o simple` running, its output and errors piped (stdout non-blocking)."""
    environment = {**os.environ, "KVSTORE_ENDPOINTS": ",".join(cluster.endpoints)}
    watcher = subprocess.Popen([KVCTL, "watch", key, "-o", "simple"], env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert watcher.stdout is not None
    os.set_blocking(watcher.stdout.fileno(), False)
    return watcher


def test_kvctl_watch_follows_live_writes_and_exits_0_on_ctrl_c(cluster: LocalCluster) -> None:
    watcher = kvctl_watching(cluster, "{live}/k")
    try:
        with SyncClient(cluster.endpoints, timeout=20.0) as client:
            # The watch starts "now" once established; write until it shows a change (bounded).
            lines: list[bytes] = []

            def printed() -> bool:
                client.put("{live}/k", "hello")
                lines.extend((watcher.stdout.read() or b"").splitlines())  # type: ignore[union-attr]
                return bool(lines)

            wait_for(printed, "kvctl watch to print a change", timeout=WAIT_S)
        assert lines[0] == b"PUT\t{live}/k\thello"
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(timeout=WAIT_S) == 0
        assert watcher.stderr is not None and watcher.stderr.read() == b""
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()


def test_kvctl_watch_ends_quietly_when_its_reader_goes_away(cluster: LocalCluster) -> None:
    """`kvctl watch ... | head -1`: once the reader is gone, the next event ends kvctl, exit 0."""
    watcher = kvctl_watching(cluster, "{pipe}/k")
    try:
        assert watcher.stdout is not None and watcher.stderr is not None
        with SyncClient(cluster.endpoints, timeout=20.0) as client:

            def printed() -> bool:
                client.put("{pipe}/k", "v")
                return bool(watcher.stdout.read())  # type: ignore[union-attr]

            wait_for(printed, "kvctl watch to print a change", timeout=WAIT_S)
            watcher.stdout.close()  # the reader goes away

            def ended() -> bool:
                client.put("{pipe}/k", "v")
                return watcher.poll() is not None

            wait_for(ended, "kvctl watch to end once its output is gone", timeout=WAIT_S)
        assert watcher.returncode == 0
        assert watcher.stderr.read() == b""
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
