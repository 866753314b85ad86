"""The client against a guarded node (loopback, in-memory backend): it signs in, signs in again
when its token is refused, raises the typed errors of refusals, waits out rate limits, and
manages users and roles through `client.auth`."""

from __future__ import annotations

import asyncio

import pytest

from kvstore.client import Client, SyncClient
from kvstore.client.types import Grant, Permission, RateLimit
from kvstore.errors import NoSpaceError, PermissionDeniedError, ResourceExhaustedError, UnauthenticatedError
from kvstore.ratelimit import RateLimiter
from kvstore.statemachine import control
from tests.fakes.guarded import TTL_S, nospace_alarm, secure, serving


class CountingLimiter(RateLimiter):
    """Counts the calls it refused."""

    refused = 0

    def admit(self, client: str, limit: control.RateLimit | None, ops: int, size: int, now: float) -> float:
        wait = super().admit(client, limit, ops, size, now)
        self.refused += wait > 0
        return wait


async def test_a_signed_in_client_is_served_where_granted_and_refused_elsewhere() -> None:
    async with serving() as served:
        await secure(served)
        async with Client([served.address], user="alice", password="alicepw") as client:
            await client.put("app/k", "v")
            assert (await client.get("app/k")).value == b"v"  # type: ignore[union-attr]
            assert [kv.key for kv in await client.scan(prefix="app/")] == [b"app/k"]
            with pytest.raises(PermissionDeniedError, match="user 'alice' lacks readwrite permission on key 'other/k'"):
                await client.put("other/k", "v")
            assert (await client.auth.status()).user == "alice"
        with pytest.raises(UnauthenticatedError, match="wrong user name or password"):
            async with Client([served.address], user="alice", password="wrong"):
                pass
        async with Client([served.address]) as anonymous:
            with pytest.raises(UnauthenticatedError, match="sign in"):
                await anonymous.get("app/k")


async def test_streams_carry_the_token_too_watches_and_lease_keepalives() -> None:
    """gRPC's asyncio channel files an interceptor under one kind of call: the token must reach
    streams as well as unary calls."""
    async with serving() as served:
        await secure(served)
        async with Client([served.address], user="alice", password="alicepw") as client:
            async with client.watch("app/w/", prefix=True) as watch:
                await client.put("app/w/1", "x")
                event = await anext(watch)
                assert (event.key, event.value) == (b"app/w/1", b"x")
            with pytest.raises(PermissionDeniedError, match="user 'alice' lacks read permission on prefix 'other/'"):
                async with client.watch("other/", prefix=True):
                    pass
            lease = await client.grant(60)
            assert await client.keep_alive_once(lease.id) == 60  # a KeepAlive stream


async def test_a_client_whose_token_expired_signs_in_again_and_goes_on() -> None:
    async with serving() as served:
        await secure(served)
        async with Client([served.address], user="alice", password="alicepw") as client:
            await client.put("app/k", "1")
            served.clocks.wall += TTL_S + 1  # the node now finds the client's token expired
            await client.put("app/k", "2")
            assert (await client.get("app/k")).value == b"2"  # type: ignore[union-attr]


async def test_a_client_over_its_rate_waits_as_asked_and_every_call_succeeds() -> None:
    limiter = CountingLimiter(control.RateLimit(requests_per_second=50))
    async with serving(limiter=limiter, real_monotonic=True) as served:
        async with Client([served.address], timeout=10) as client:
            # Two seconds' worth at the limit, all at once: they leave in batches past the burst.
            results = await asyncio.gather(*(client.put(f"k{i}", "v") for i in range(100)))
            assert len(results) == 100 and len(await client.scan(prefix="k")) == 100
        assert limiter.refused > 0, "the node must have refused some calls for the client to wait"


async def test_the_rate_limit_error_surfaces_once_the_deadline_passes() -> None:
    async with serving(default=control.RateLimit(requests_per_second=1)) as served:
        async with Client([served.address], timeout=0.5) as client:  # the test's clock never refills
            with pytest.raises(ResourceExhaustedError, match="over its rate limit"):
                for _ in range(3):
                    await client.get("k")


async def test_root_manages_users_and_roles_through_client_auth() -> None:
    async with serving() as served:
        async with Client([served.address]) as client:
            await client.auth.user_add("root", "rootpw")
            await client.auth.enable()
        async with Client([served.address], user="root", password="rootpw") as root:
            await root.auth.role_add("ops")
            await root.auth.role_grant("ops", "ops/", Permission.READWRITE)
            await root.auth.role_set_rate_limit("ops", RateLimit(requests_per_second=100))
            await root.auth.user_add("carol", "pw")
            await root.auth.user_add("dave")  # certificate-only
            await root.auth.user_grant_role("carol", "ops")
            (ops,) = await root.auth.role_list()
            assert ops.grants == (Grant(b"ops/", Permission.READWRITE),) and ops.rate_limit.requests_per_second == 100
            users = {user.name: user for user in await root.auth.user_list()}
            assert users["carol"].roles == ("ops",) and users["carol"].has_password
            assert not users["dave"].has_password
            await root.auth.role_revoke("ops", "ops/")
            await root.auth.user_revoke_role("carol", "ops")
            await root.auth.role_delete("ops")
            await root.auth.user_delete("dave")
            assert [user.name for user in await root.auth.user_list()] == ["carol", "root"]
            await root.auth.user_change_password("carol", "new")
            await root.auth.disable()
            assert not (await root.auth.status()).enabled


async def test_writes_that_add_data_raise_no_space_while_an_alarm_is_raised() -> None:
    async with serving() as served:
        async with Client([served.address]) as client:
            await client.put("k", "v")
            await served.backend.propose_meta(nospace_alarm(1, raised=True))
            with pytest.raises(NoSpaceError, match="over its space quota"):
                await client.put("k2", "v")
            assert (await client.delete("k")).deleted
            status = await client.status()
            assert [(alarm.node_id, alarm.type) for alarm in status.alarms] == [(1, "NOSPACE")]


def test_the_blocking_client_signs_in_too() -> None:
    import threading

    ready = threading.Event()
    stop = threading.Event()
    address: list[str] = []

    async def serve() -> None:
        async with serving() as served:
            await secure(served)
            address.append(served.address)
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    try:
        assert ready.wait(30)
        with SyncClient(address, user="alice", password="alicepw") as client:
            client.put("app/x", "1")
            assert client.auth.status().user == "alice"
            with pytest.raises(PermissionDeniedError):
                client.get("other/x")
    finally:
        stop.set()
        thread.join()
