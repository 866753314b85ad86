"""One node's services behind the guard on a real gRPC server on loopback, over the in-memory
backend, with clocks the test moves: what the guard and the client's sign-in are tested against.

    async with serving() as served:
        await served.kv.Put(pb.PutRequest(key=b"k", value=b"v"))
        served.clocks.wall += 3600  # every token issued so far has expired
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore._pb import meta_pb2
from kvstore._pb.control_pb2 import ControlCommand
from kvstore.node.local import free_ports
from kvstore.ratelimit import RateLimiter
from kvstore.rpc import (
    AuthService,
    ClusterService,
    Guard,
    KVService,
    LeaseService,
    MemoryBackend,
    PeerService,
    WatchService,
)
from kvstore.statemachine.control import RateLimit

TTL_S = 60.0


@dataclass
class Clocks:
    wall: float = 1_000_000.0
    monotonic: float = 50.0


@dataclass
class Served:
    backend: MemoryBackend
    channel: grpc.aio.Channel
    clocks: Clocks
    address: str

    @property
    def kv(self) -> pb_grpc.KVStub:
        return pb_grpc.KVStub(self.channel)

    @property
    def auth(self) -> pb_grpc.AuthStub:
        return pb_grpc.AuthStub(self.channel)


class LockStandIn(pb_grpc.LockServicer):
    """Answers every Lock call: what matters here is whether the guard lets it through."""

    async def Lock(self, request: pb.LockRequest, context: grpc.aio.ServicerContext) -> pb.LockResponse:
        return pb.LockResponse(key=request.name + b"/1", fencing_token=1)

    async def Unlock(self, request: pb.UnlockRequest, context: grpc.aio.ServicerContext) -> pb.UnlockResponse:
        return pb.UnlockResponse()


def echo_handler() -> grpc.GenericRpcHandler:
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request
    return grpc.method_handlers_generic_handler("kvstore.v1.Unruled", {"Echo": grpc.unary_unary_rpc_method_handler(
        echo, request_deserializer=bytes, response_serializer=bytes)})


@contextlib.asynccontextmanager
async def serving(default: RateLimit | None = None, *, limiter: RateLimiter | None = None, real_monotonic: bool = False,
                  **backend_options: object) -> AsyncIterator[Served]:
    """A node (id 1, the only member) serving on a free loopback port. `default` is the node's
    rate limit (or pass the `limiter`); buckets refill on `clocks.monotonic` unless
    `real_monotonic`."""
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    backend = MemoryBackend(members={1: address}, **backend_options)  # type: ignore[arg-type]
    clocks = Clocks()
    limiter = limiter if limiter is not None else RateLimiter(default or RateLimit())
    guard = Guard(backend, limiter, wall_clock=lambda: clocks.wall,
                  monotonic_clock=time.monotonic if real_monotonic else lambda: clocks.monotonic)
    server = grpc.aio.server(interceptors=[guard])
    for service in (KVService(backend), ClusterService(backend), PeerService(backend), LeaseService(backend),
                    WatchService(backend), AuthService(backend, guard, TTL_S, wall_clock=lambda: clocks.wall)):
        service.add_to(server)
    pb_grpc.add_LockServicer_to_server(LockStandIn(), server)
    server.add_generic_rpc_handlers([echo_handler()])
    server.add_insecure_port(address)
    await server.start()
    channel = grpc.aio.insecure_channel(address)
    try:
        yield Served(backend, channel, clocks, address)
    finally:
        await channel.close()
        await server.stop(None)


def perm(prefix: bytes, access: pb.Permission) -> pb.KeyPermission:
    return pb.KeyPermission(prefix=prefix, permission=access)


async def secure(served: Served) -> dict[str, str]:
    """root and alice (readwrite on app/, read on shared/), auth enabled; their tokens."""
    auth = served.auth
    changes = [
        lambda: auth.UserAdd(pb.UserAddRequest(name="root", password="rootpw")),
        lambda: auth.UserAdd(pb.UserAddRequest(name="alice", password="alicepw")),
        lambda: auth.RoleAdd(pb.RoleAddRequest(name="app")),
        lambda: auth.RoleGrantPermission(pb.RoleGrantPermissionRequest(role="app", permission=perm(b"app/", pb.READWRITE))),
        lambda: auth.RoleGrantPermission(pb.RoleGrantPermissionRequest(role="app", permission=perm(b"shared/", pb.READ))),
        lambda: auth.UserGrantRole(pb.UserGrantRoleRequest(user="alice", role="app")),
        lambda: auth.AuthEnable(pb.AuthEnableRequest()),
    ]
    for change in changes:  # one at a time: a call starts when it is made
        response = await change()
        assert response.error.code == pb.OK, response.error.message
    tokens = {}
    for name, password in (("root", "rootpw"), ("alice", "alicepw")):
        signed_in = await auth.Authenticate(pb.AuthenticateRequest(name=name, password=password))
        assert signed_in.error.code == pb.OK, signed_in.error.message
        assert signed_in.expires_at_unix_ms == int((served.clocks.wall + TTL_S) * 1000)
        tokens[name] = signed_in.token
    return tokens


def nospace_alarm(node_id: int, *, raised: bool) -> meta_pb2.MetaCommand:
    """The meta command that raises (or clears) `node_id`'s NOSPACE alarm, as its quota watcher
    proposes it."""
    alarm = pb.Alarm(node_id=node_id, type=pb.NOSPACE)
    change = ControlCommand(raise_alarm=alarm) if raised else ControlCommand(clear_alarm=alarm)
    return meta_pb2.MetaCommand(control=change)
