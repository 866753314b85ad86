"""Authentication, permissions, rate limits and the space quota on real node processes: one
3-node TLS cluster with auth enabled and a small quota, shared by the tests of this module.

Users are managed as root through the client certificate `cert init` makes (CN root); the other
users sign in with passwords.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from click.testing import CliRunner
from kvctl.main import cli

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc
from kvstore.certs import ClusterCertificates, init_certificates
from kvstore.client import PutOp, SyncClient
from kvstore.client.types import Permission, RateLimit
from kvstore.errors import RETRY_AFTER_METADATA, NoSpaceError, PermissionDeniedError, UnauthenticatedError
from kvstore.tls import sync_channel
from tests.integration.harness import LocalCluster, wait_for

pytestmark = pytest.mark.slow

QUOTA_BYTES = 64 << 10
TOKEN_TTL_S = 4


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> ClusterCertificates:
    return init_certificates(tmp_path_factory.mktemp("certs"), nodes=3)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, certs: ClusterCertificates) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("auth-cluster"), size=3, partitions=8, certificates=certs,
                         extra_args=["--quota-backend-bytes", str(QUOTA_BYTES), "--auth-token-ttl", str(TOKEN_TTL_S)])
    with local.running():
        local.start_all()
        with root_client(local) as root:
            root.auth.user_add("root", "rootpw")
            root.auth.enable()
            root.auth.role_add("app")
            root.auth.role_grant("app", "app/", Permission.READWRITE)
            root.auth.role_grant("app", "shared/", Permission.READ)
            root.auth.user_add("alice", "alicepw")
            root.auth.user_grant_role("alice", "app")
        yield local


def root_client(cluster: LocalCluster, endpoints: list[str] | None = None) -> SyncClient:
    """Root through the client certificate (its common name is root): no password."""
    return SyncClient(endpoints or cluster.endpoints, timeout=20.0, tls=cluster.client_tls)


def user_client(cluster: LocalCluster, user: str, password: str, endpoints: list[str] | None = None) -> SyncClient:
    return SyncClient(endpoints or cluster.endpoints, timeout=20.0, tls=cluster.client_tls, user=user,
                      password=password)


def kvctl(cluster: LocalCluster, *args: str) -> tuple[int, str]:
    tls = cluster.client_tls
    assert tls is not None
    result = CliRunner().invoke(cli, ["--endpoints", ",".join(cluster.endpoints), "--cacert", str(tls.ca),
                                      "--cert", str(tls.cert), "--key", str(tls.key), *args])
    return result.exit_code, result.output


def raw_token(cluster: LocalCluster, name: str, password: str) -> str:
    """A token from `Auth.Authenticate` called by hand: the meta group's leader signs in (the
    others answer NOT_LEADER), so every node is asked until one does."""
    token = ""

    def signed_in() -> bool:
        nonlocal token
        for address in cluster.endpoints:
            with sync_channel(address, cluster.credentials) as channel:
                response = kvstore_pb2_grpc.AuthStub(channel).Authenticate(
                    pb.AuthenticateRequest(name=name, password=password), timeout=10)
            if response.error.code == pb.OK:
                token = response.token
                return True
        return False

    wait_for(signed_in, f"the meta group's leader to sign {name} in")
    return token


def test_a_user_is_refused_where_its_roles_grant_nothing_and_served_where_they_do(cluster: LocalCluster) -> None:
    with user_client(cluster, "alice", "alicepw") as alice:
        alice.put("app/k", "v")
        assert alice.get("app/k").value == b"v"  # type: ignore[union-attr]
        assert [kv.key for kv in alice.scan(prefix="app/")] == [b"app/k"]
        assert alice.txn([], [PutOp(b"app/t", b"1")]).succeeded
        for denied in (lambda: alice.get("other/k"), lambda: alice.put("other/k", "v"),
                       lambda: alice.scan(prefix="other/"), lambda: alice.put("shared/k", "v")):
            with pytest.raises(PermissionDeniedError, match="user 'alice' lacks"):
                denied()
    code, output = kvctl(cluster, "--user", "alice:alicepw", "put", "other/k", "v")
    assert code == 2 and "user 'alice' lacks readwrite permission on key 'other/k'" in output
    code, output = kvctl(cluster, "--user", "alice:wrong", "get", "app/k")
    assert code == 2 and "wrong user name or password" in output
    code, output = kvctl(cluster, "--user", "alice:alicepw", "get", "app/k", "-o", "simple")
    assert code == 0 and output == "v\n"


def test_a_lock_is_taken_where_the_user_may_write_its_keys_and_refused_elsewhere(cluster: LocalCluster) -> None:
    """A lock named N is held through keys under N/ when N has a hash tag ({N}/ otherwise)."""
    with user_client(cluster, "alice", "alicepw") as alice:
        with alice.lock("app/{job}", ttl=10) as lock:
            assert lock.token > 0 and lock.key.startswith(b"app/{job}/")
        with pytest.raises(PermissionDeniedError, match="user 'alice' lacks readwrite permission on prefix 'other/{job}/'"):
            with alice.lock("other/{job}", ttl=10):
                pass


def test_a_watch_is_refused_where_the_user_cannot_read_and_delivers_where_it_can(cluster: LocalCluster) -> None:
    with user_client(cluster, "alice", "alicepw") as alice:
        with alice.watch("app/w/", prefix=True) as watch:
            written = alice.put("app/w/1", "x")
            event = next(watch)
            assert (event.key, event.value, event.revision) == (b"app/w/1", b"x", written.header.revision)
        with pytest.raises(PermissionDeniedError, match="user 'alice' lacks read permission on prefix 'other/'"):
            with alice.watch("other/", prefix=True):
                pass


def test_a_change_made_through_one_node_applies_at_the_same_revision_everywhere(cluster: LocalCluster) -> None:
    with root_client(cluster, [cluster.address(3)]) as root:
        revision = root.auth.user_add("bob", "bobpw")
    # Signing in goes through the meta group's leader: bob is known at once, from any node.
    with user_client(cluster, "bob", "bobpw", [cluster.address(1)]) as bob:
        assert bob.auth.status().user == "bob"
        with pytest.raises(PermissionDeniedError):
            bob.get("app/k")  # no role yet

    def revisions() -> set[int]:
        seen = set()
        for node_id in cluster.node_ids:
            with root_client(cluster, [cluster.address(node_id)]) as root:
                seen.add(root.auth.status().revision)
        return seen

    wait_for(lambda: min(revisions()) >= revision, "every node to apply the new user")


def test_a_token_past_its_expiry_is_refused_and_the_client_signs_in_again(cluster: LocalCluster) -> None:
    metadata = (("authorization", f"Bearer {raw_token(cluster, 'alice', 'alicepw')}"),)
    channel = sync_channel(cluster.address(1), cluster.credentials)
    try:
        stub = kvstore_pb2_grpc.KVStub(channel)

        def refused_as_expired() -> bool:
            try:
                stub.Get(pb.GetRequest(key=b"app/k"), metadata=metadata, timeout=10)
            except grpc.RpcError as error:
                return error.code() is grpc.StatusCode.UNAUTHENTICATED and "expired" in (error.details() or "")
            return False

        wait_for(refused_as_expired, f"the {TOKEN_TTL_S}s token to expire")
    finally:
        channel.close()
    with user_client(cluster, "alice", "alicepw") as alice:
        start = time.monotonic()
        puts = 0

        def across_two_token_lifetimes() -> bool:
            nonlocal puts
            alice.put("app/expiry", str(puts))  # raises if a token ran out and was not renewed
            puts += 1
            return time.monotonic() - start > 2 * TOKEN_TTL_S

        wait_for(across_two_token_lifetimes, "puts across two token lifetimes")
        assert alice.get("app/expiry").value == str(puts - 1).encode()  # type: ignore[union-attr]
    with pytest.raises(UnauthenticatedError):
        with user_client(cluster, "alice", "wrong") as nobody:
            nobody.get("app/k")


def test_a_client_over_its_rate_is_told_to_wait_and_the_library_waits(cluster: LocalCluster) -> None:
    with root_client(cluster) as root:
        root.auth.user_add("carol", "carolpw")
        root.auth.user_grant_role("carol", "app")
        root.auth.user_set_rate_limit("carol", RateLimit(requests_per_second=5))
    token = raw_token(cluster, "carol", "carolpw")
    channel = sync_channel(cluster.address(1), cluster.credentials)
    try:
        batch = pb.BatchRequest(ops=[pb.RequestOp(get=pb.GetRequest(key=b"app/k"))] * 6)
        stub = kvstore_pb2_grpc.KVStub(channel)
        metadata = (("authorization", f"Bearer {token}"),)
        with pytest.raises(grpc.RpcError) as raised:
            for _ in range(3):  # past the bucket of 5 however the first call lands
                stub.Batch(batch, metadata=metadata, timeout=10)
        assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        trailers = {item.key: item.value for item in raised.value.trailing_metadata()}
        assert int(trailers[RETRY_AFTER_METADATA]) > 0
    finally:
        channel.close()
    with user_client(cluster, "carol", "carolpw") as carol:
        for i in range(15):  # three seconds' worth at 5 per second: the client waits between them
            carol.put(f"app/carol/{i}", "v")
        assert len(carol.scan(prefix="app/carol/")) == 15


def test_past_the_quota_writes_are_refused_deletes_accepted_and_the_cluster_recovers(
        cluster: LocalCluster) -> None:
    value = b"x" * 4096
    keys = [f"quota/{i}" for i in range(QUOTA_BYTES // len(value) + 2)]
    with root_client(cluster) as root:
        for key in keys:
            root.put(key, value)

        def alarms() -> list[set[int]]:
            return [{alarm.node_id for alarm in root.status(address).alarms} for address in cluster.endpoints]

        # Every node holds every key (3 replicas on 3 nodes), so each raises its own alarm — two
        # of them through the meta group's leader — and every node applies all three.
        wait_for(lambda: alarms() == [{1, 2, 3}] * 3, "each node's NOSPACE alarm, applied on every node")
        with pytest.raises(NoSpaceError, match="over its space quota"):
            root.put("quota/more", value)
        code, output = kvctl(cluster, "status")
        assert "ALARM NOSPACE" in output
        for key in keys:
            assert root.delete(key).deleted, "deletes go on past the quota"
        wait_for(lambda: not any(alarms()), "the alarms to clear once deletes freed the space")
        root.put("quota/again", "small")
        root.delete("quota/again")
