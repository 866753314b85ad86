"""The guard: the one place that checks every RPC against `kvstore.rpc.policy.RULES`, as a gRPC
server interceptor, before any servicer runs.

For each call, in order:

1. **Who**: a `Who.PEER` method takes only another node (with TLS, a peer certificate). Any
   other call, with auth enabled, is made by the user its token names (metadata
   `authorization: Bearer TOKEN`, from `Auth.Authenticate`) or, without a token, the user its
   client certificate's common name names; else by nobody. A token issued at a control revision
   this node has not applied yet waits until it has (so a user's first call after signing in
   is never judged by an older state than the one that signed it in).
2. **Rate**: the caller's token buckets (`kvstore.ratelimit`) take the call's operations and
   bytes: a signed-in user's buckets are the user's, on this node; anyone else's are their
   connection's. Over the limit, the call is refused with RESOURCE_EXHAUSTED and trailing
   metadata `retry-after-ms`. Peers are never limited (they carry Raft).
3. **Permission** (auth enabled): the rule's `Who`, or each key permission the request needs
   (PERMISSION_DENIED naming the permission and the key).
4. **Space**: while a NOSPACE alarm is raised, a request that adds data is refused (NO_SPACE);
   deletes and everything else go on.

A refused call ends with the code's gRPC status (`kvstore.errors.ERRORS`), except in a `Batch`,
whose operations are checked one by one: a refused one is answered in its place with its
error, and the others are served.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message

from kvstore._pb import kvstore_pb2 as pb
from kvstore.credentials import TOKEN_METADATA, TOKEN_SCHEME, TokenError, read_token
from kvstore.errors import (
    ERRORS,
    RETRY_AFTER_METADATA,
    KvError,
    KvTimeoutError,
    NoSpaceError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from kvstore.ratelimit import RateLimiter
from kvstore.rpc.backend import Backend
from kvstore.rpc.errors import to_error
from kvstore.rpc.policy import RULES, EachOperation, Need, OnLeaseKeys, OnWatch, Rule, Who, operation_needs
from kvstore.statemachine.control import AlarmType, ControlState, Permissions, permissions, rate_limit_of


@dataclass(frozen=True, slots=True)
class Caller:
    user: str  # "" for nobody
    client: str  # whose token buckets the call takes from


class Guard(grpc.aio.ServerInterceptor):
    """Enforces `RULES` for a node (`backend`). `wall_clock` checks token expiry (tokens are
    issued by one node and checked by another); `monotonic_clock` refills the buckets."""

    def __init__(self, backend: Backend, limiter: RateLimiter, *,
                 wall_clock: Callable[[], float] = time.time,
                 monotonic_clock: Callable[[], float] = time.monotonic) -> None:
        self._backend = backend
        self._limiter = limiter
        self._wall_clock = wall_clock
        self._monotonic_clock = monotonic_clock
        self._permissions_of: ControlState | None = None  # the state the cache below was built from
        self._permissions: dict[str, Permissions | None] = {}

    # -- the interceptor --------------------------------------------------------------------

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None  # gRPC answers UNIMPLEMENTED
        rule = RULES.get(details.method, Who.NOBODY)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(rule, handler.unary_unary), handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._unary_stream(rule, handler.unary_stream), handler.request_deserializer,
                handler.response_serializer)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._stream_request(rule, handler.stream_unary), handler.request_deserializer,
                handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(
            self._stream_request(rule, handler.stream_stream), handler.request_deserializer,
            handler.response_serializer)

    def _unary(self, rule: Rule, behavior: Callable[..., Awaitable[Message]]) -> Callable[..., Awaitable[Message]]:
        if isinstance(rule, EachOperation):
            async def each(request: Message, context: grpc.aio.ServicerContext) -> Message:
                return await self._each_operation(rule, behavior, request, context)
            return each

        async def unary(request: Message, context: grpc.aio.ServicerContext) -> Message:
            await self._admit_or_abort(rule, request, context)
            return await behavior(request, context)
        return unary

    def _unary_stream(self, rule: Rule, behavior: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(behavior):
            async def streaming(request: Message, context: grpc.aio.ServicerContext) -> AsyncIterator[Message]:
                await self._admit_or_abort(rule, request, context)
                async for response in behavior(request, context):
                    yield response
            return streaming

        async def writing(request: Message, context: grpc.aio.ServicerContext) -> None:
            await self._admit_or_abort(rule, request, context)
            await behavior(request, context)
        return writing

    def _stream_request(self, rule: Rule, behavior: Callable[..., Any]) -> Callable[..., Any]:
        """A call whose requests stream in: a `Who` rule is checked once, at the start; a key rule
        on every request message (a watch's: answered in place, `_each_watch`)."""
        if isinstance(rule, OnWatch):
            return self._each_watch(rule, behavior)

        def checked(requests: AsyncIterator[Message], context: grpc.aio.ServicerContext) -> AsyncIterator[Message]:
            async def each_checked() -> AsyncIterator[Message]:
                async for request in requests:
                    await self._admit_or_abort(rule, request, context)
                    yield request
            return requests if isinstance(rule, Who) else each_checked()

        if inspect.isasyncgenfunction(behavior):
            async def streaming(requests: AsyncIterator[Message], context: grpc.aio.ServicerContext) -> Any:
                if isinstance(rule, Who):
                    await self._admit_or_abort(rule, None, context)
                async for response in behavior(checked(requests, context), context):
                    yield response
            return streaming

        async def single(requests: AsyncIterator[Message], context: grpc.aio.ServicerContext) -> Any:
            if isinstance(rule, Who):
                await self._admit_or_abort(rule, None, context)
            return await behavior(checked(requests, context), context)
        return single

    def _each_watch(self, rule: OnWatch, behavior: Callable[..., Any]) -> Callable[..., Any]:
        """A watch stream: each request is checked on its own, and a refused one is answered in
        its place (a canceled watch carrying the refusal) among the servicer's responses while
        the stream and its other watches go on, as `EachOperation` answers in a batch. (Ending
        the stream instead would reach a client still sending as INTERNAL, not the refusal.)"""
        async def streaming(requests: AsyncIterator[Message], context: grpc.aio.ServicerContext) -> Any:
            answers: asyncio.Queue[Message] = asyncio.Queue()

            async def each_checked() -> AsyncIterator[Message]:
                async for request in requests:
                    try:
                        await self.admit(rule, request, context)
                    except KvError as error:
                        await answers.put(rule.refused(request, to_error(error, self._backend.epoch,
                                                                          self._backend.address_of)))
                        continue
                    yield request

            responses = behavior(each_checked(), context)
            step: asyncio.Future[Any] | None = None
            answer: asyncio.Future[Message] | None = None
            try:
                while True:
                    step = step or asyncio.ensure_future(anext(responses))
                    answer = answer or asyncio.ensure_future(answers.get())
                    await asyncio.wait((step, answer), return_when=asyncio.FIRST_COMPLETED)
                    if answer.done():
                        yield answer.result()
                        answer = None
                        continue
                    try:
                        response = step.result()
                    except StopAsyncIteration:
                        while not answers.empty():  # refusals of the last requests, then the end
                            yield answers.get_nowait()
                        return
                    step = None
                    yield response
            finally:
                for pending in (step, answer):  # the generator must rest before it closes
                    if pending is not None:
                        pending.cancel()
                        await asyncio.gather(pending, return_exceptions=True)
                await responses.aclose()
        return streaming

    # -- the checks -------------------------------------------------------------------------

    async def _admit_or_abort(self, rule: Rule, request: Message | None, context: grpc.aio.ServicerContext) -> None:
        try:
            await self.admit(rule, request, context)
        except KvError as error:
            await _abort(context, error)

    async def admit(self, rule: Rule, request: Message | None, context: grpc.aio.ServicerContext) -> Caller:
        """The caller, once the call may go on; the `KvError` that refuses it otherwise."""
        if rule is Who.NOBODY:
            raise PermissionDeniedError("this method has no access rule (kvstore/rpc/policy.py): the node refuses it")
        if rule is Who.PEER:
            refusal = self._backend.peer_refusal(context)
            if refusal is not None:
                raise PermissionDeniedError(f"node {self._backend.node_id} refuses this caller as a peer: {refusal}")
            return Caller("", "")
        try:
            state, caller = await self.identify(context, quiet=rule is Who.PUBLIC)
        except UnavailableError:
            if rule is not Who.PUBLIC:
                raise
            # A joining node knows no users yet: a public call (health, status) is anyone's.
            state, caller = ControlState(), Caller("", f"connection {context.peer()}")
        self._take(state, caller, 1, request)
        needs = self._needs(rule, request)
        if state.auth_enabled:
            if isinstance(rule, Who):
                self._require(state, caller, rule)
            else:
                self._permit(state, caller, needs)
        self._check_space(state, needs)
        return caller

    def _needs(self, rule: Rule, request: Message | None) -> list[Need]:
        if isinstance(rule, Who | EachOperation) or request is None:
            return []
        if isinstance(rule, OnLeaseKeys):
            return rule.needs(request, self._backend.lease_keys)
        return rule.needs(request)

    async def identify(self, context: grpc.aio.ServicerContext, *, quiet: bool = False) -> tuple[ControlState, Caller]:
        """The control state to judge the call by, and who makes it. A token that authenticates
        nobody raises `UnauthenticatedError`, unless `quiet` (the call is then nobody's)."""
        backend = self._backend
        state = backend.control_state
        anonymous = Caller("", f"connection {context.peer()}")
        if not state.auth_enabled:
            return state, anonymous
        token = _token(context)
        if token is None:
            user = _certificate_user(context)
            return state, Caller(user, f"user {user}") if user in state.users else anonymous
        try:
            claims = read_token(state.token_secret, token, self._wall_clock())
            if claims.revision > backend.meta_applied:
                state = await self._control_at(claims.revision, context)
            user = state.users.get(claims.user)
            if user is None:
                raise TokenError(f"the user {claims.user!r} of the token no longer exists")
            if user.revision > claims.revision:
                raise TokenError(f"the password of user {claims.user!r} changed after the token was issued; "
                                 "authenticate again")
        except TokenError as error:
            if quiet:
                return state, anonymous
            raise UnauthenticatedError(str(error)) from None
        return state, Caller(user.name, f"user {user.name}")

    async def _control_at(self, revision: int, context: grpc.aio.ServicerContext) -> ControlState:
        remaining = context.time_remaining()
        timeout = self._backend.limits.request_timeout_s if remaining is None else max(remaining, 0.0)
        future = self._backend.read_meta(pb.SESSION, revision)
        try:
            async with asyncio.timeout(timeout):
                return (await future).control
        except TimeoutError:
            future.cancel()
            raise KvTimeoutError(f"node {self._backend.node_id} has not applied the control revision {revision} "
                                 f"the token was issued at within {timeout:g}s") from None

    def _take(self, state: ControlState, caller: Caller, ops: int, request: Message | None) -> None:
        limit = (rate_limit_of(state, caller.user) if caller.user else None) or self._limiter.default
        if not limit.is_set:
            return  # the common case: no limit anywhere, and no request to measure
        size = 0 if request is None else request.ByteSize()
        wait = self._limiter.admit(caller.client, limit, ops, size, self._monotonic_clock())
        if wait:
            raise ResourceExhaustedError(f"{caller.client or 'this client'} is over its rate limit on node "
                                         f"{self._backend.node_id}; retry in {wait:.3f}s", retry_after_s=wait)

    def _require(self, state: ControlState, caller: Caller, who: Who) -> None:
        if who is Who.PUBLIC:
            return
        if not caller.user:
            raise UnauthenticatedError(_SIGN_IN)
        if who is Who.ROOT and not state.is_root(caller.user):
            raise PermissionDeniedError(f"user {caller.user!r} lacks the root role this request needs")

    def _permit(self, state: ControlState, caller: Caller, needs: list[Need]) -> None:
        if not caller.user:
            raise UnauthenticatedError(_SIGN_IN)
        granted = self._permissions_for(state, caller.user)
        for need in needs:
            if granted is None or not granted.allows(need.access, need.start, need.end):
                raise PermissionDeniedError(f"user {caller.user!r} lacks {need.describe()}")

    def _permissions_for(self, state: ControlState, user: str) -> Permissions | None:
        if self._permissions_of is not state:
            self._permissions_of, self._permissions = state, {}
        if user not in self._permissions:
            self._permissions[user] = permissions(state, user)
        return self._permissions[user]

    @staticmethod
    def _check_space(state: ControlState, needs: list[Need]) -> None:
        if not state.alarms or not any(need.adds_data for need in needs):
            return
        over = sorted(alarm.node_id for alarm in state.alarms if alarm.type is AlarmType.NOSPACE)
        if over:
            raise NoSpaceError(
                f"the cluster is over its space quota (member{'s' if len(over) > 1 else ''} "
                f"{', '.join(map(str, over))} passed --quota-backend-bytes): writes that add data are refused "
                "until deletes free space")

    # -- a batch, operation by operation ----------------------------------------------------

    async def _each_operation(self, rule: EachOperation, behavior: Callable[..., Awaitable[Message]],
                              request: Message, context: grpc.aio.ServicerContext) -> Message:
        items = getattr(request, rule.items)
        try:
            state, caller = await self.identify(context)
            self._take(state, caller, len(items), request)
            if state.auth_enabled and not caller.user:
                raise UnauthenticatedError(_SIGN_IN)
        except KvError as error:
            await _abort(context, error)
        refused: dict[int, KvError] = {}
        if state.auth_enabled or state.alarms:
            for position, item in enumerate(items):
                needs = operation_needs(item)
                try:
                    if state.auth_enabled:
                        self._permit(state, caller, needs)
                    self._check_space(state, needs)
                except KvError as error:
                    refused[position] = error
        if not refused:
            return await behavior(request, context)
        allowed = type(request)()
        getattr(allowed, rule.items).extend(item for position, item in enumerate(items) if position not in refused)
        served_response = await behavior(allowed, context)
        served = iter(getattr(served_response, rule.results))
        answer = type(served_response)()
        results = getattr(answer, rule.results)
        epoch = self._backend.epoch
        for position, item in enumerate(items):
            if position in refused:
                results.append(_refused_operation(item, to_error(refused[position], epoch, self._backend.address_of)))
            else:
                results.append(next(served))
        return answer


_SIGN_IN = ("auth is enabled and this call carries no valid token or user certificate: sign in "
            "(kvctl --user NAME, Client(user=..., password=...)) or use a user's client certificate")


def _token(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == TOKEN_METADATA and isinstance(value, str) and value.startswith(TOKEN_SCHEME):
            return value[len(TOKEN_SCHEME):]
    return None


def _certificate_user(context: grpc.aio.ServicerContext) -> str:
    """The common name of the caller's verified client certificate ("" without one)."""
    names = context.auth_context().get("x509_common_name")
    return next(iter(names)).decode("utf-8", "replace") if names else ""


async def _abort(context: grpc.aio.ServicerContext, error: KvError) -> None:
    status = ERRORS[error.code].grpc_status or grpc.StatusCode.INTERNAL
    trailing: tuple[tuple[str, str], ...] = ()
    if isinstance(error, ResourceExhaustedError):
        trailing = ((RETRY_AFTER_METADATA, str(max(1, round(error.retry_after_s * 1000)))),)
    await context.abort(status, error.message, trailing_metadata=trailing)


def _refused_operation(item: pb.RequestOp, error: pb.Error) -> pb.ResponseOp:
    result = pb.ResponseOp()
    getattr(result, item.WhichOneof("op") or "get").error.CopyFrom(error)
    return result
