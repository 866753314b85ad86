"""The guard on a real gRPC server (loopback, the in-memory backend): every method has a rule; with
auth on, who may call what, a user's permissions on key prefixes for each kind of call, tokens
that expire or are voided; rate limits with their retry-after; the space quota; the peer check."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore._pb import peer_pb2, peer_pb2_grpc
from kvstore.errors import RETRY_AFTER_METADATA
from kvstore.rpc.policy import (
    RULES,
    EachOperation,
    OnKey,
    OnLeaseKeys,
    OnLock,
    OnOperation,
    OnRange,
    OnWatch,
    Who,
)
from kvstore.statemachine.control import RateLimit
from tests.fakes.guarded import TTL_S, nospace_alarm, secure, serving


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def status_of(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value.code(), raised.value.details() or ""


def put(key: bytes, value: bytes = b"v") -> pb.PutRequest:
    return pb.PutRequest(key=key, value=value)


# -- the table --------------------------------------------------------------------------------


def proto_methods() -> Iterator[tuple[str, object]]:
    for module in (pb, peer_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                yield f"/{service.full_name}/{method.name}", method


def test_every_method_of_the_protos_has_a_rule_whose_fields_exist() -> None:
    declared = dict(RULES)
    for name, method in proto_methods():
        assert name in declared, f"{name} has no rule in kvstore/rpc/policy.py"
        rule = declared.pop(name)
        fields = method.input_type.fields_by_name  # type: ignore[attr-defined]
        if isinstance(rule, OnKey | OnLock):
            assert rule.field in fields
        elif isinstance(rule, OnLeaseKeys):
            assert rule.field in fields and (not rule.only_if or rule.only_if in fields)
        elif isinstance(rule, OnRange):
            assert {rule.start, rule.end, rule.prefix} <= set(fields)
        elif isinstance(rule, EachOperation):
            assert fields[rule.items].message_type is pb.RequestOp.DESCRIPTOR
            assert method.output_type.fields_by_name[rule.results].message_type is pb.ResponseOp.DESCRIPTOR  # type: ignore[attr-defined]
        elif isinstance(rule, OnWatch):
            assert method.input_type.full_name == pb.WatchRequest.DESCRIPTOR.full_name  # type: ignore[attr-defined]
        elif isinstance(rule, OnOperation):
            assert method.input_type.name in {"GetRequest", "PutRequest", "DeleteRequest", "TxnRequest"}  # type: ignore[attr-defined]
        else:
            assert isinstance(rule, Who) and rule is not Who.NOBODY
    assert all(not name.startswith("/kvstore.") for name in declared), f"rules for no method: {declared}"


async def test_a_method_without_a_rule_is_refused_even_with_auth_off() -> None:
    async with serving() as served:
        call = served.channel.unary_unary("/kvstore.v1.Unruled/Echo", request_serializer=bytes,
                                           response_deserializer=bytes)(b"hi")
        code, details = await status_of(call)
        assert code is grpc.StatusCode.PERMISSION_DENIED and "no access rule" in details


# -- who may call what ------------------------------------------------------------------------


async def test_with_auth_off_anyone_may_do_anything() -> None:
    async with serving() as served:
        assert (await served.kv.Put(put(b"other/k"))).error.code == pb.OK
        assert (await served.auth.UserAdd(pb.UserAddRequest(name="bob", password="pw"))).error.code == pb.OK
        status = await served.auth.AuthStatus(pb.AuthStatusRequest())
        assert not status.enabled and status.user == ""


async def test_enabling_auth_needs_root_and_then_calls_need_a_user() -> None:
    async with serving() as served:
        refused = await served.auth.AuthEnable(pb.AuthEnableRequest())
        assert refused.error.code == pb.INVALID_ARGUMENT and "user add root" in refused.error.message
        tokens = await secure(served)
        code, details = await status_of(served.kv.Get(pb.GetRequest(key=b"app/k")))
        assert code is grpc.StatusCode.UNAUTHENTICATED and "sign in" in details
        code, _ = await status_of(served.kv.Batch(pb.BatchRequest(ops=[pb.RequestOp(get=pb.GetRequest(key=b"k"))])))
        assert code is grpc.StatusCode.UNAUTHENTICATED
        wrong = await served.auth.Authenticate(pb.AuthenticateRequest(name="alice", password="nope"))
        nobody = await served.auth.Authenticate(pb.AuthenticateRequest(name="mallory", password="nope"))
        assert wrong.error.code == nobody.error.code == pb.UNAUTHENTICATED
        assert wrong.error.message == nobody.error.message == "wrong user name or password"
        status = await served.auth.AuthStatus(pb.AuthStatusRequest(), metadata=bearer(tokens["alice"]))
        assert status.enabled and status.user == "alice"
        status_of_node = await pb_grpc.ClusterStub(served.channel).Status(pb.StatusRequest())
        assert status_of_node.node_id == 1, "cluster metadata stays public"


async def test_only_root_manages_users_and_roles() -> None:
    async with serving() as served:
        tokens = await secure(served)
        code, details = await status_of(served.auth.UserAdd(pb.UserAddRequest(name="eve", password="pw"),
                                                            metadata=bearer(tokens["alice"])))
        assert code is grpc.StatusCode.PERMISSION_DENIED and details == "user 'alice' lacks the root role this request needs"
        added = await served.auth.UserAdd(pb.UserAddRequest(name="eve", password="pw"), metadata=bearer(tokens["root"]))
        assert added.error.code == pb.OK
        listed = await served.auth.UserList(pb.UserListRequest(), metadata=bearer(tokens["root"]))
        assert [(u.name, tuple(u.roles)) for u in listed.users] == [("alice", ("app",)), ("eve", ()), ("root", ("root",))]


@pytest.mark.parametrize("call", ["get", "put", "delete", "scan", "txn", "lock", "unlock"])
async def test_a_user_is_refused_on_a_prefix_it_lacks_and_served_where_granted(call: str) -> None:
    async with serving() as served:
        tokens = await secure(served)
        md = bearer(tokens["alice"])
        lock = pb_grpc.LockStub(served.channel)

        def make(prefix: bytes) -> object:
            key = prefix + b"k"
            return {
                "get": lambda: served.kv.Get(pb.GetRequest(key=key), metadata=md),
                "put": lambda: served.kv.Put(put(key), metadata=md),
                "delete": lambda: served.kv.Delete(pb.DeleteRequest(key=key), metadata=md),
                "scan": lambda: served.kv.Scan(pb.ScanRequest(prefix=prefix), metadata=md),
                "txn": lambda: served.kv.Txn(pb.TxnRequest(
                    compare=[pb.Compare(key=key, target=pb.Compare.VERSION, number=0)],
                    success=[pb.RequestOp(put=put(key))]), metadata=md),
                "lock": lambda: lock.Lock(pb.LockRequest(name=prefix + b"{job}"), metadata=md),
                "unlock": lambda: lock.Unlock(pb.UnlockRequest(key=key), metadata=md),
            }[call]()

        granted = await make(b"app/")  # type: ignore[misc]
        assert granted.error.code == pb.OK, granted.error.message
        code, details = await status_of(make(b"other/"))
        assert code is grpc.StatusCode.PERMISSION_DENIED
        access = "read" if call in ("get", "scan") else "readwrite"
        place = "prefix 'other/'" if call == "scan" else "prefix 'other/{job}/'" if call == "lock" else "key 'other/k'"
        if call == "txn":
            access, place = "read", "key 'other/k'"  # its compare is checked first
        assert details == f"user 'alice' lacks {access} permission on {place}"


async def test_a_watch_is_refused_on_a_prefix_the_user_cannot_read_and_served_where_it_can() -> None:
    """Each request of a watch stream is checked on its own: a refused one is answered in its
    place, as a canceled watch with the refusal, and the stream's other watches go on."""
    async with serving() as served:
        tokens = await secure(served)
        stream = pb_grpc.WatchStub(served.channel).Watch(metadata=bearer(tokens["alice"]))

        def create(watch_id: int, prefix: bytes) -> pb.WatchRequest:
            return pb.WatchRequest(create=pb.WatchCreateRequest(watch_id=watch_id, partition=0, key=prefix, prefix=True))

        for watch_id, prefix in ((1, b"other/"), (2, b"shared/"), (3, b"app/")):  # read: shared/ and app/
            await stream.write(create(watch_id, prefix))
        refused, served_1, served_2 = await stream.read(), await stream.read(), await stream.read()
        assert (refused.watch_id, refused.canceled, refused.error.code) == (1, True, pb.PERMISSION_DENIED)
        assert refused.error.message == "user 'alice' lacks read permission on prefix 'other/'"
        assert {(r.watch_id, r.created, r.canceled) for r in (served_1, served_2)} == {(2, True, False), (3, True, False)}
        stream.cancel()


async def test_revoking_a_lease_needs_readwrite_on_every_key_attached_to_it() -> None:
    async with serving() as served:
        tokens = await secure(served)
        root, alice = bearer(tokens["root"]), bearer(tokens["alice"])
        lease_stub = pb_grpc.LeaseStub(served.channel)
        partition = served.backend.cluster_state.partition_for_key(b"other/k")
        granted = await lease_stub.Grant(pb.LeaseGrantRequest(ttl_seconds=60, partition=partition), metadata=root)
        assert granted.error.code == pb.OK, granted.error.message
        attached = await served.kv.Put(pb.PutRequest(key=b"other/k", value=b"v", lease=granted.id), metadata=root)
        assert attached.error.code == pb.OK, attached.error.message
        assert (await lease_stub.TimeToLive(pb.LeaseTimeToLiveRequest(id=granted.id), metadata=alice)).error.code == pb.OK
        code, details = await status_of(lease_stub.TimeToLive(pb.LeaseTimeToLiveRequest(id=granted.id, keys=True),
                                                              metadata=alice))
        assert code is grpc.StatusCode.PERMISSION_DENIED and details == "user 'alice' lacks read permission on key 'other/k'"
        code, details = await status_of(lease_stub.Revoke(pb.LeaseRevokeRequest(id=granted.id), metadata=alice))
        assert code is grpc.StatusCode.PERMISSION_DENIED and details == "user 'alice' lacks readwrite permission on key 'other/k'"
        assert (await lease_stub.Revoke(pb.LeaseRevokeRequest(id=granted.id), metadata=root)).error.code == pb.OK
        assert not (await served.kv.Get(pb.GetRequest(key=b"other/k"), metadata=root)).found


async def test_read_permission_does_not_let_a_user_write() -> None:
    async with serving() as served:
        md = bearer((await secure(served))["alice"])
        assert (await served.kv.Get(pb.GetRequest(key=b"shared/x"), metadata=md)).error.code == pb.OK
        code, details = await status_of(served.kv.Put(put(b"shared/x"), metadata=md))
        assert code is grpc.StatusCode.PERMISSION_DENIED and "readwrite permission on key 'shared/x'" in details
        code, _ = await status_of(served.kv.Scan(pb.ScanRequest(start=b"shared/", end=b""), metadata=md))
        assert code is grpc.StatusCode.PERMISSION_DENIED, "a range past the prefix is not granted"


async def test_a_batch_refuses_only_the_operations_the_user_lacks() -> None:
    async with serving() as served:
        md = bearer((await secure(served))["alice"])
        ops = [pb.RequestOp(put=put(b"app/1")), pb.RequestOp(put=put(b"other/1")),
               pb.RequestOp(get=pb.GetRequest(key=b"shared/1")), pb.RequestOp(delete=pb.DeleteRequest(key=b"other/2"))]
        results = (await served.kv.Batch(pb.BatchRequest(ops=ops), metadata=md)).results
        assert [r.WhichOneof("op") for r in results] == ["put", "put", "get", "delete"]
        assert [getattr(r, r.WhichOneof("op")).error.code for r in results] == [
            pb.OK, pb.PERMISSION_DENIED, pb.OK, pb.PERMISSION_DENIED]
        assert results[1].put.error.message == "user 'alice' lacks readwrite permission on key 'other/1'"
        assert (await served.kv.Get(pb.GetRequest(key=b"app/1"), metadata=md)).found


async def test_tokens_expire_and_die_with_a_password_change_or_their_user() -> None:
    async with serving() as served:
        tokens = await secure(served)
        md = bearer(tokens["alice"])
        assert (await served.kv.Get(pb.GetRequest(key=b"app/k"), metadata=md)).error.code == pb.OK
        served.clocks.wall += TTL_S + 1
        code, details = await status_of(served.kv.Get(pb.GetRequest(key=b"app/k"), metadata=md))
        assert code is grpc.StatusCode.UNAUTHENTICATED and "expired" in details
        served.clocks.wall -= TTL_S + 1
        root = bearer(tokens["root"])
        changed = await served.auth.UserChangePassword(pb.UserChangePasswordRequest(name="alice", password="new"),
                                                       metadata=root)
        assert changed.error.code == pb.OK
        code, details = await status_of(served.kv.Get(pb.GetRequest(key=b"app/k"), metadata=md))
        assert code is grpc.StatusCode.UNAUTHENTICATED and "password" in details
        fresh = await served.auth.Authenticate(pb.AuthenticateRequest(name="alice", password="new"))
        assert (await served.kv.Get(pb.GetRequest(key=b"app/k"), metadata=bearer(fresh.token))).error.code == pb.OK
        assert (await served.auth.UserDelete(pb.UserDeleteRequest(name="alice"), metadata=root)).error.code == pb.OK
        code, details = await status_of(served.kv.Get(pb.GetRequest(key=b"app/k"), metadata=bearer(fresh.token)))
        assert code is grpc.StatusCode.UNAUTHENTICATED and "no longer exists" in details
        disabled = await served.auth.AuthDisable(pb.AuthDisableRequest(), metadata=root)
        assert disabled.error.code == pb.OK
        assert (await served.kv.Get(pb.GetRequest(key=b"other/k"))).error.code == pb.OK


# -- rate limits ------------------------------------------------------------------------------


async def test_a_client_over_its_rate_is_told_when_to_come_back() -> None:
    async with serving(default=RateLimit(requests_per_second=3)) as served:
        for _ in range(3):
            assert (await served.kv.Get(pb.GetRequest(key=b"k"))).error.code == pb.OK
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await served.kv.Get(pb.GetRequest(key=b"k"))
        assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        trailers = dict(raised.value.trailing_metadata() or ())
        assert trailers[RETRY_AFTER_METADATA] == "333"  # one token at 3 per second
        served.clocks.monotonic += 0.34
        assert (await served.kv.Get(pb.GetRequest(key=b"k"))).error.code == pb.OK
        # A batch costs one token per operation. Four from a full bucket of three: admitted (the
        # bucket was full), leaving a debt of one, so the next call waits two tokens' worth.
        served.clocks.monotonic += 1
        ops = [pb.RequestOp(get=pb.GetRequest(key=b"k"))] * 4
        assert len((await served.kv.Batch(pb.BatchRequest(ops=ops))).results) == 4
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await served.kv.Get(pb.GetRequest(key=b"k"))
        assert dict(raised.value.trailing_metadata() or ())[RETRY_AFTER_METADATA] == "667"


async def test_a_roles_limit_applies_to_its_users_in_buckets_of_their_own() -> None:
    async with serving() as served:  # no node default
        tokens = await secure(served)
        root = bearer(tokens["root"])
        limited = await served.auth.RoleSetRateLimit(pb.RoleSetRateLimitRequest(
            name="app", rate_limit=pb.RateLimit(requests_per_second=5)), metadata=root)
        assert limited.error.code == pb.OK
        alice = bearer(tokens["alice"])
        for _ in range(5):
            assert (await served.kv.Get(pb.GetRequest(key=b"app/k"), metadata=alice)).error.code == pb.OK
        code, details = await status_of(served.kv.Get(pb.GetRequest(key=b"app/k"), metadata=alice))
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and details.startswith("user alice is over its rate limit")
        for _ in range(6):  # root has no role with a limit, and the node sets none
            assert (await served.kv.Get(pb.GetRequest(key=b"app/k"), metadata=root)).error.code == pb.OK


# -- the space quota --------------------------------------------------------------------------


async def test_over_the_quota_writes_that_add_data_are_refused_and_deletes_served() -> None:
    async with serving() as served:
        assert (await served.kv.Put(put(b"k1"))).error.code == pb.OK
        await served.backend.propose_meta(nospace_alarm(2, raised=True))
        code, details = await status_of(served.kv.Put(put(b"k2")))
        assert code is grpc.StatusCode.FAILED_PRECONDITION and "member 2 passed --quota-backend-bytes" in details
        results = (await served.kv.Batch(pb.BatchRequest(ops=[
            pb.RequestOp(put=put(b"k3")), pb.RequestOp(delete=pb.DeleteRequest(key=b"k1"))]))).results
        assert results[0].put.error.code == pb.NO_SPACE and results[1].delete.deleted
        code, _ = await status_of(served.kv.Txn(pb.TxnRequest(success=[pb.RequestOp(put=put(b"k4"))])))
        assert code is grpc.StatusCode.FAILED_PRECONDITION
        await served.backend.propose_meta(nospace_alarm(2, raised=False))
        assert (await served.kv.Put(put(b"k2"))).error.code == pb.OK


async def test_a_joining_node_that_knows_no_users_yet_serves_public_calls_and_refuses_the_rest() -> None:
    async with serving(joining=True) as served:
        status = await pb_grpc.ClusterStub(served.channel).Status(pb.StatusRequest())
        assert status.node_id == 1 and list(status.alarms) == []
        code, details = await status_of(served.kv.Put(put(b"k")))
        assert code is grpc.StatusCode.UNAVAILABLE and "joining" in details  # the client asks another node
        auth_status = await served.auth.AuthStatus(pb.AuthStatusRequest())
        assert auth_status.error.code == pb.UNAVAILABLE and not auth_status.enabled


# -- peers ------------------------------------------------------------------------------------


async def test_a_caller_the_node_refuses_as_a_peer_is_turned_away_before_anything_is_delivered_or_proposed() -> None:
    hello = peer_pb2.PeerFrame(hello=peer_pb2.PeerHello(node_id=2, cluster_id="kvstore"))
    async with serving(refuse_peers="the certificate of CN=root is not a peer certificate") as served:
        stream = peer_pb2_grpc.PeerStub(served.channel).Stream()
        with pytest.raises(grpc.aio.AioRpcError) as raised:  # the node may hang up before the write
            await stream.write(hello)
            await stream.read()
        assert raised.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert raised.value.details() == ("node 1 refuses this caller as a peer: "
                                          "the certificate of CN=root is not a peer certificate")
        snapshot = peer_pb2_grpc.PeerStub(served.channel).SendSnapshot(iter([peer_pb2.SnapshotChunk(last=True)]))
        assert (await status_of(snapshot))[0] is grpc.StatusCode.PERMISSION_DENIED
        assert served.backend.delivered == []
        # A meta command passed "as a peer" could add a user or lift an alarm: peers only.
        proposed = peer_pb2_grpc.PeerStub(served.channel).ProposeMeta(nospace_alarm(1, raised=True))
        assert (await status_of(proposed))[0] is grpc.StatusCode.PERMISSION_DENIED
        assert served.backend.control_state.alarms == frozenset()
