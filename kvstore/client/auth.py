"""Signing in to a cluster that has auth enabled, and managing its users and roles.

A `Client` made with `user=` and `password=` signs in (`Auth.Authenticate`) on its first call and
puts the token it gets on every call after (`token_interceptors`, metadata `authorization: Bearer
TOKEN`). It signs in again before the token expires, and once more when a call is refused as
UNAUTHENTICATED (the token expired meanwhile, or the user's password changed), then repeats
that call. A client made with a user but no password relies on its TLS client certificate, whose
common name is the user; it carries no token.

`AuthAdmin` (`client.auth`) is the Auth service for `root`: users, roles, grants, rate limits,
auth on and off.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from kvstore._pb import kvstore_pb2 as pb
from kvstore.client import wire
from kvstore.client.types import AuthStatus, Permission, RateLimit, Role, User
from kvstore.credentials import TOKEN_METADATA, TOKEN_SCHEME

AUTHENTICATE_METHOD = "/kvstore.v1.Auth/Authenticate"
RENEW_BEFORE = 0.2
"""Sign in again once less than this share of a token's lifetime is left."""

Authenticate = Callable[[str, str], Awaitable[tuple[str, float] | None]]
"""(user, password) -> (token, expiry in seconds since the epoch), None when auth is off."""

class SignIn:
    """A user's sign-in: the password, and the token the cluster issued for it."""

    def __init__(self, user: str, password: str, authenticate: Authenticate,
                 clock: Callable[[], float] = time.time) -> None:
        self.user = user
        self._password = password
        self._authenticate = authenticate
        self._clock = clock
        self._token: str | None = None
        self._renew_at = 0.0
        self._signed_in = False  # auth may be off: then there is no token, and none is needed
        self._lock = asyncio.Lock()

    async def token(self) -> str | None:
        """The token to send now, signing in first when there is none or it is about to expire."""
        if self._signed_in and self._clock() < self._renew_at:
            return self._token
        return await self.renew(self._token)

    async def renew(self, stale: str | None) -> str | None:
        """Sign in again, unless another call did since it was handed `stale`."""
        async with self._lock:
            if self._signed_in and self._token != stale and self._clock() < self._renew_at:
                return self._token
            now = self._clock()
            issued = await self._authenticate(self.user, self._password)
            self._signed_in = True
            if issued is None:
                self._token, self._renew_at = None, float("inf")
            else:
                self._token, expires_at = issued
                self._renew_at = now + (expires_at - now) * (1 - RENEW_BEFORE)
            return self._token


class _TokenInterceptor:
    """Puts the sign-in's token on every call but signing in itself. gRPC's asyncio channel
    files an interceptor under the first kind of call it handles, so there is one per kind
    (`token_interceptors`), all sharing the one sign-in."""

    def __init__(self, sign_in: SignIn) -> None:
        self._sign_in = sign_in

    async def _details(self, details: grpc.aio.ClientCallDetails) -> tuple[grpc.aio.ClientCallDetails, str | None]:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        if method == AUTHENTICATE_METHOD:
            return details, None
        token = await self._sign_in.token()
        return _with_token(details, token), token


class _UnaryUnaryToken(_TokenInterceptor, grpc.aio.UnaryUnaryClientInterceptor):
    """A unary call refused as UNAUTHENTICATED is made once more after signing in again."""

    async def intercept_unary_unary(self, continuation: Any, details: grpc.aio.ClientCallDetails,
                                    request: Any) -> Any:
        signed, token = await self._details(details)
        call = await continuation(signed, request)
        if token is None:
            return call
        try:
            await call
        except grpc.aio.AioRpcError as error:
            if error.code() is not grpc.StatusCode.UNAUTHENTICATED:
                return call
            fresh = await self._sign_in.renew(token)
            return await continuation(_with_token(details, fresh), request)
        return call


class _UnaryStreamToken(_TokenInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: grpc.aio.ClientCallDetails,
                                     request: Any) -> Any:
        return await continuation((await self._details(details))[0], request)


class _StreamUnaryToken(_TokenInterceptor, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: grpc.aio.ClientCallDetails,
                                     request_iterator: Any) -> Any:
        return await continuation((await self._details(details))[0], request_iterator)


class _StreamStreamToken(_TokenInterceptor, grpc.aio.StreamStreamClientInterceptor):
    """Streams (lease keepalives, watches) carry the token they start with."""

    async def intercept_stream_stream(self, continuation: Any, details: grpc.aio.ClientCallDetails,
                                      request_iterator: Any) -> Any:
        return await continuation((await self._details(details))[0], request_iterator)


def token_interceptors(sign_in: SignIn) -> list[grpc.aio.ClientInterceptor]:
    """The interceptors that put `sign_in`'s token on calls of every kind."""
    return [kind(sign_in) for kind in (_UnaryUnaryToken, _UnaryStreamToken, _StreamUnaryToken, _StreamStreamToken)]


def _with_token(details: grpc.aio.ClientCallDetails, token: str | None) -> grpc.aio.ClientCallDetails:
    if token is None:
        return details
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    metadata[TOKEN_METADATA] = TOKEN_SCHEME + token
    return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata, details.credentials,
                                      details.wait_for_ready)


AuthCall = Callable[[str, Message], Awaitable[Any]]
"""(Auth method name, request) -> its response, from the meta group's leader; raises the
typed error of a refusal."""


class AuthAdmin:
    """The Auth service: signing in aside, everything here needs the root role once auth is on.

        await client.auth.user_add("root", "secret")
        await client.auth.enable()
        await client.auth.role_add("app")
        await client.auth.role_grant("app", "app/", Permission.READWRITE)
        await client.auth.user_add("alice", "pw")
        await client.auth.user_grant_role("alice", "app")
    """

    def __init__(self, call: AuthCall) -> None:
        self._call = call

    async def status(self) -> AuthStatus:
        response = await self._call("AuthStatus", pb.AuthStatusRequest())
        return AuthStatus(response.enabled, response.revision, response.user)

    async def enable(self) -> int:
        """Turn auth on (the user `root` must exist); returns the auth revision it applied at."""
        return await self._change("AuthEnable", pb.AuthEnableRequest())

    async def disable(self) -> int:
        return await self._change("AuthDisable", pb.AuthDisableRequest())

    async def user_add(self, name: str, password: str | None = None) -> int:
        """Add a user; without a password it signs in with a client certificate (CN = name)."""
        request = pb.UserAddRequest(name=name, password=password or "", no_password=password is None)
        return await self._change("UserAdd", request)

    async def user_delete(self, name: str) -> int:
        return await self._change("UserDelete", pb.UserDeleteRequest(name=name))

    async def user_change_password(self, name: str, password: str) -> int:
        return await self._change("UserChangePassword", pb.UserChangePasswordRequest(name=name, password=password))

    async def user_grant_role(self, user: str, role: str) -> int:
        return await self._change("UserGrantRole", pb.UserGrantRoleRequest(user=user, role=role))

    async def user_revoke_role(self, user: str, role: str) -> int:
        return await self._change("UserRevokeRole", pb.UserRevokeRoleRequest(user=user, role=role))

    async def user_set_rate_limit(self, name: str, limit: RateLimit) -> int:
        return await self._change("UserSetRateLimit",
                                  pb.UserSetRateLimitRequest(name=name, rate_limit=wire.rate_limit_to_pb(limit)))

    async def user_list(self) -> list[User]:
        return [wire.user_from_pb(user) for user in (await self._call("UserList", pb.UserListRequest())).users]

    async def role_add(self, name: str) -> int:
        return await self._change("RoleAdd", pb.RoleAddRequest(name=name))

    async def role_delete(self, name: str) -> int:
        return await self._change("RoleDelete", pb.RoleDeleteRequest(name=name))

    async def role_grant(self, role: str, prefix: str | bytes, permission: Permission) -> int:
        """Grant `permission` on every key starting with `prefix` ("" : every key)."""
        grant = pb.KeyPermission(prefix=_bytes(prefix), permission=Permission(permission).value)
        return await self._change("RoleGrantPermission", pb.RoleGrantPermissionRequest(role=role, permission=grant))

    async def role_revoke(self, role: str, prefix: str | bytes) -> int:
        return await self._change("RoleRevokePermission",
                                  pb.RoleRevokePermissionRequest(role=role, prefix=_bytes(prefix)))

    async def role_set_rate_limit(self, name: str, limit: RateLimit) -> int:
        return await self._change("RoleSetRateLimit",
                                  pb.RoleSetRateLimitRequest(name=name, rate_limit=wire.rate_limit_to_pb(limit)))

    async def role_list(self) -> list[Role]:
        return [wire.role_from_pb(role) for role in (await self._call("RoleList", pb.RoleListRequest())).roles]

    async def _change(self, method: str, request: Message) -> int:
        response: pb.AuthChangeResponse = await self._call(method, request)
        return response.header.revision


def _bytes(prefix: str | bytes) -> bytes:
    return prefix.encode() if isinstance(prefix, str) else prefix
