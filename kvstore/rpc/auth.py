"""The Auth service: signing in, and the users, roles and auth switch, which the meta group's
control section holds (`kvstore.statemachine.control`).

Who may call what is the guard's business (`kvstore.rpc.policy`: signing in and the status are
public, the rest needs the root role once auth is enabled). Here: validate, hash passwords (off
the event loop: argon2 takes tens of milliseconds on purpose), propose the change to the meta
group (a node that does not lead it passes it to the leader) and answer with the revision it
applied at, or with its refusal.

Signing in and the listings read the control section through the meta group's leader (a
ReadIndex round), so a user added or a role granted a moment ago, through any node, is seen.
Errors travel in each response's `error`, as in the KV service; a NOT_LEADER answer names the
meta group's leader, which the client asks next.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from kvstore._pb import control_pb2, kvstore_pb2_grpc, meta_pb2
from kvstore._pb import kvstore_pb2 as pb
from kvstore.credentials import hash_password, issue_token, password_matches
from kvstore.errors import InvalidArgumentError, KvTimeoutError, UnauthenticatedError
from kvstore.rpc.backend import Backend, MetaReader
from kvstore.rpc.errors import raise_refusal, to_error
from kvstore.rpc.guard import Guard
from kvstore.statemachine.control import (
    ControlState,
    name_problem,
    rate_limit_problem,
    rate_limit_to_pb,
)

DEFAULT_TOKEN_TTL_S = 300.0
TOKEN_SECRET_BYTES = 32

C = control_pb2.ControlCommand
T = TypeVar("T")


class AuthService(kvstore_pb2_grpc.AuthServicer):
    def __init__(self, backend: Backend, guard: Guard, token_ttl_s: float = DEFAULT_TOKEN_TTL_S, *,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._backend = backend
        self._guard = guard
        self._token_ttl_s = token_ttl_s
        self._wall_clock = wall_clock
        # Checked against when the user does not exist, so that signing in as nobody takes as long.
        self._decoy_hash = hash_password(secrets.token_hex(16))

    def add_to(self, server: Any) -> None:
        kvstore_pb2_grpc.add_AuthServicer_to_server(self, server)

    # -- signing in and status --------------------------------------------------------------

    async def Authenticate(self, request: pb.AuthenticateRequest, context: Any) -> pb.AuthenticateResponse:
        response = pb.AuthenticateResponse()
        try:
            reader = await self._read()
            state = reader.control
            if not state.auth_enabled:
                raise InvalidArgumentError("auth is not enabled on this cluster: calls need no token")
            user = state.users.get(request.name)
            # A missing user is checked against a hash too, so the time taken tells nothing.
            stored = user.password_hash if user is not None and user.password_hash else self._decoy_hash
            matches = await asyncio.to_thread(password_matches, stored, request.password)
            if user is None or not user.password_hash or not matches:
                raise UnauthenticatedError("wrong user name or password")
            response.token, expires_at = issue_token(state.token_secret, user.name, reader.applied_index,
                                                     self._wall_clock(), self._token_ttl_s)
            response.expires_at_unix_ms = int(expires_at * 1000)
            self._fill_header(response.header, reader.applied_index)
        except Exception as error:
            response.error.CopyFrom(self._error(error))
        return response

    async def AuthStatus(self, request: pb.AuthStatusRequest, context: Any) -> pb.AuthStatusResponse:
        response = pb.AuthStatusResponse()
        try:
            state, caller = await self._guard.identify(context, quiet=True)
            response.enabled, response.revision, response.user = state.auth_enabled, self._backend.meta_applied, caller.user
        except Exception as error:  # a joining node does not know the users yet: UNAVAILABLE
            response.error.CopyFrom(self._error(error))
        self._fill_header(response.header, self._backend.meta_applied)
        return response

    # -- changes ----------------------------------------------------------------------------

    async def AuthEnable(self, request: pb.AuthEnableRequest, context: Any) -> pb.AuthChangeResponse:
        secret = secrets.token_bytes(TOKEN_SECRET_BYTES)
        return await self._change(lambda: C(enable_auth=control_pb2.EnableAuth(token_secret=secret)))

    async def AuthDisable(self, request: pb.AuthDisableRequest, context: Any) -> pb.AuthChangeResponse:
        return await self._change(lambda: C(disable_auth=request))

    async def UserAdd(self, request: pb.UserAddRequest, context: Any) -> pb.AuthChangeResponse:
        async def command() -> C:
            _check_name(request.name, "user")
            if request.no_password:
                if request.password:
                    raise InvalidArgumentError("a user without a password was given a password")
                return C(add_user=control_pb2.AddUser(name=request.name))
            password_hash = await _hashed(request.password)
            return C(add_user=control_pb2.AddUser(name=request.name, password_hash=password_hash))
        return await self._change_async(command)

    async def UserDelete(self, request: pb.UserDeleteRequest, context: Any) -> pb.AuthChangeResponse:
        return await self._change(lambda: C(delete_user=request))

    async def UserChangePassword(self, request: pb.UserChangePasswordRequest, context: Any) -> pb.AuthChangeResponse:
        async def command() -> C:
            password_hash = await _hashed(request.password)
            return C(change_password=control_pb2.ChangePassword(name=request.name, password_hash=password_hash))
        return await self._change_async(command)

    async def UserGrantRole(self, request: pb.UserGrantRoleRequest, context: Any) -> pb.AuthChangeResponse:
        return await self._change(lambda: C(grant_role=request))

    async def UserRevokeRole(self, request: pb.UserRevokeRoleRequest, context: Any) -> pb.AuthChangeResponse:
        return await self._change(lambda: C(revoke_role=request))

    async def UserSetRateLimit(self, request: pb.UserSetRateLimitRequest, context: Any) -> pb.AuthChangeResponse:
        return await self._change(lambda: C(set_user_rate_limit=_checked_limit(request)))

    async def RoleAdd(self, request: pb.RoleAddRequest, context: Any) -> pb.AuthChangeResponse:
        def command() -> C:
            _check_name(request.name, "role")
            return C(add_role=request)
        return await self._change(command)

    async def RoleDelete(self, request: pb.RoleDeleteRequest, context: Any) -> pb.AuthChangeResponse:
        return await self._change(lambda: C(delete_role=request))

    async def RoleGrantPermission(self, request: pb.RoleGrantPermissionRequest,
                                  context: Any) -> pb.AuthChangeResponse:
        return await self._change(lambda: C(grant_permission=request))

    async def RoleRevokePermission(self, request: pb.RoleRevokePermissionRequest,
                                   context: Any) -> pb.AuthChangeResponse:
        return await self._change(lambda: C(revoke_permission=request))

    async def RoleSetRateLimit(self, request: pb.RoleSetRateLimitRequest, context: Any) -> pb.AuthChangeResponse:
        return await self._change(lambda: C(set_role_rate_limit=_checked_limit(request)))

    # -- listings ---------------------------------------------------------------------------

    async def UserList(self, request: pb.UserListRequest, context: Any) -> pb.UserListResponse:
        response = pb.UserListResponse()
        try:
            reader = await self._read()
            response.users.extend(_user_to_pb(reader.control, name) for name in sorted(reader.control.users))
            self._fill_header(response.header, reader.applied_index)
        except Exception as error:
            response.error.CopyFrom(self._error(error))
        return response

    async def RoleList(self, request: pb.RoleListRequest, context: Any) -> pb.RoleListResponse:
        response = pb.RoleListResponse()
        try:
            reader = await self._read()
            for name, role in sorted(reader.control.roles.items()):
                response.roles.add(name=name, rate_limit=rate_limit_to_pb(role.rate_limit), permissions=[
                    pb.KeyPermission(prefix=grant.prefix, permission=grant.access.value) for grant in role.grants])
            self._fill_header(response.header, reader.applied_index)
        except Exception as error:
            response.error.CopyFrom(self._error(error))
        return response

    # -- helpers ----------------------------------------------------------------------------

    async def _change(self, command: Callable[[], C]) -> pb.AuthChangeResponse:
        async def made() -> C:
            return command()
        return await self._change_async(made)

    async def _change_async(self, command: Callable[[], Awaitable[C]]) -> pb.AuthChangeResponse:
        """Make the command (validate, hash), propose it to the meta group and answer with the
        revision it applied at, or with why not (NOT_LEADER names the leader; a timeout leaves
        its outcome open)."""
        backend = self._backend
        response = pb.AuthChangeResponse()
        revision = 0
        try:
            change = meta_pb2.MetaCommand(control=await command())
            result = await _within(backend, backend.propose_meta(change), "change of the meta group")
            raise_refusal(result)
            revision = result.revision
        except Exception as error:  # every failure goes to the caller through the one error table
            response.error.CopyFrom(self._error(error))
        self._fill_header(response.header, revision)
        return response

    async def _read(self) -> MetaReader:
        return await _within(self._backend, self._backend.read_meta(pb.LINEARIZABLE, 0), "read of the meta group")

    def _fill_header(self, header: pb.ResponseHeader, revision: int) -> None:
        _fill_header(self._backend, header, revision)

    def _error(self, error: BaseException) -> pb.Error:
        return to_error(error, self._backend.epoch, self._backend.address_of)


async def _within(backend: Backend, future: asyncio.Future[T], what: str) -> T:
    timeout = backend.limits.request_timeout_s
    try:
        async with asyncio.timeout(timeout):
            return await future
    except TimeoutError:
        future.cancel()
        raise KvTimeoutError(f"the {what} did not complete within {timeout:g}s") from None


def _fill_header(backend: Backend, header: pb.ResponseHeader, revision: int) -> None:
    header.revision = revision
    header.node_id = backend.node_id
    header.epoch = backend.epoch


def _check_name(name: str, what: str) -> None:
    problem = name_problem(name, what)
    if problem is not None:
        raise InvalidArgumentError(problem)


async def _hashed(password: str) -> str:
    if not password:
        raise InvalidArgumentError("the password is empty")
    return await asyncio.to_thread(hash_password, password)


RequestWithLimit = TypeVar("RequestWithLimit", pb.UserSetRateLimitRequest, pb.RoleSetRateLimitRequest)


def _checked_limit(request: RequestWithLimit) -> RequestWithLimit:
    problem = rate_limit_problem(request.rate_limit)
    if problem is not None:
        raise InvalidArgumentError(problem)
    return request


def _user_to_pb(state: ControlState, name: str) -> pb.User:
    user = state.users[name]
    return pb.User(name=name, roles=user.roles, rate_limit=rate_limit_to_pb(user.rate_limit),
                   has_password=bool(user.password_hash))
