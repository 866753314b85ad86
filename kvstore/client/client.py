"""The asyncio client: routes each request to its partition's leader, batches, retries."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.message import Message

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.address import parse_address
from kvstore.client import wire
from kvstore.client.attempts import Attempts
from kvstore.client.auth import AuthAdmin, SignIn, token_interceptors
from kvstore.client.backoff import Backoff
from kvstore.client.batching import NodeBatcher, TransportError, transport_failure
from kvstore.client.leases import KeepAlives, KeptLease, LockContext, Session
from kvstore.client.ops import Compare, Data, DeleteOp, GetOp, Op, PutOp, to_bytes
from kvstore.client.pending import PendingSeqs
from kvstore.client.routing import Router
from kvstore.client.types import (
    ClusterLayout,
    DeleteResult,
    GetResult,
    KeyValue,
    Lease,
    LeaseStatus,
    Member,
    NodeStatus,
    OpResult,
    PutResult,
    ReadConsistency,
    TxnResult,
    WriteConcern,
)
from kvstore.client.watch import Watch
from kvstore.errors import (
    ERRORS,
    BatchError,
    CrossPartitionError,
    ErrorCode,
    InvalidArgumentError,
    KvError,
    KvTimeoutError,
    ResourceExhaustedError,
    TransportSecurityError,
    UnavailableError,
    error_code,
    exception_for,
)
from kvstore.names import lease_partition, lock_prefix
from kvstore.tls import TlsConfig, TlsError, aio_channel, client_credentials, diagnose

DEFAULT_MAX_KEY_BYTES = 4 * 1024
DEFAULT_MAX_VALUE_BYTES = 1024 * 1024

# One attempt on one node gets at most max(_MIN_ATTEMPT_S, timeout / 4): a paused or cut-off
# leader must not use up the whole deadline before the call tries the node elected after it.
_MIN_ATTEMPT_S = 1.0
# Auth RPCs that change nothing: the others are not sent again once their outcome is unknown.
_AUTH_READS = frozenset({"Authenticate", "AuthStatus", "UserList", "RoleList"})
# The server remembers the last 1024 request ids per client for dedup; with at most this many
# writes in flight, every retried id is still inside that window.
MAX_OUTSTANDING_MUTATIONS = 512


class _Response(Protocol):
    @property
    def header(self) -> pb.ResponseHeader: ...

    @property
    def error(self) -> pb.Error: ...


ResponseT = TypeVar("ResponseT", bound=_Response)
_UnaryRequest = (
    pb.LeaseGrantRequest | pb.LeaseRevokeRequest | pb.LeaseTimeToLiveRequest | pb.LeaseLeasesRequest | pb.UnlockRequest
)
CallResultT = TypeVar("CallResultT")


def _prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with `prefix` (b"" = end of key space)."""
    trimmed = prefix.rstrip(b"\xff")
    return trimmed[:-1] + bytes([trimmed[-1] + 1]) if trimmed else b""


def _check_endpoint(endpoint: str) -> None:
    """A malformed endpoint is bad usage, refused at once rather than retried until the timeout."""
    try:
        parse_address(endpoint)
    except ValueError as error:
        raise InvalidArgumentError(f"endpoint {error}") from None


class Client:
    """An asyncio client of a kvstore cluster.

    Connect through any seed endpoint; the client learns the cluster map from it and routes
    every request to its partition's leader. Each call finishes within `timeout` seconds (one
    deadline for the whole call: connecting, every attempt, every pause between them) or raises
    `KvTimeoutError`/`NotLeaderError`, whose message says what each replica answered.

        async with Client(["127.0.0.1:2379"]) as client:
            await client.put("greeting", "hello")
            kv = await client.get("greeting")

    Against a cluster serving TLS, pass `tls=TlsConfig(ca=..., cert=..., key=...)`: the
    cluster's CA certificate, and a client certificate it signed with its key.

    Against a cluster with auth enabled, pass `user=` and `password=`: the client signs in on
    its first call and again whenever its token runs out (`kvstore.client.auth`). With `tls`
    and no password, the user is the client certificate's common name. `client.auth` manages
    users and roles (as root). A call over the user's rate limit is retried after the pause the
    node asks for, and with growing pauses while it keeps refusing, within `timeout`.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float = 5.0,
        client_id: str | None = None,
        max_batch: int = 256,
        max_key_bytes: int = DEFAULT_MAX_KEY_BYTES,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        tls: TlsConfig | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        if isinstance(endpoints, str):
            raise TypeError("endpoints must be a sequence of 'host:port' strings, not one string")
        self._seeds = [endpoint.strip() for endpoint in endpoints if endpoint.strip()]
        if not self._seeds:
            raise InvalidArgumentError("at least one endpoint ('host:port') is needed")
        for endpoint in self._seeds:
            _check_endpoint(endpoint)
        if timeout <= 0:
            raise InvalidArgumentError(f"timeout must be > 0 seconds, got {timeout}")
        if max_batch < 1:
            raise InvalidArgumentError(f"max_batch must be >= 1, got {max_batch}")
        try:
            self._credentials = client_credentials(tls)
        except TlsError as error:
            raise TransportSecurityError(str(error)) from None
        self._tls = tls
        if password is not None and not user:
            raise InvalidArgumentError("a password needs a user name")
        self._interceptors = (
            token_interceptors(SignIn(user, password, self._authenticate)) if user and password is not None else []
        )
        self.auth = AuthAdmin(self._auth_call)
        self.timeout = timeout
        self.client_id = client_id or uuid.uuid4().hex
        self.max_key_bytes = max_key_bytes
        self.max_value_bytes = max_value_bytes
        self._max_batch = max_batch
        self._request_seqs = PendingSeqs()
        self._rng = random.Random()
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._batchers: dict[str, NodeBatcher] = {}
        self._router: Router | None = None
        self._closed = False
        self._attempt_timeout = max(_MIN_ATTEMPT_S, timeout / 4)
        self._mutation_slots = asyncio.Semaphore(MAX_OUTSTANDING_MUTATIONS)
        self._refresh_lock = asyncio.Lock()
        self._layout_generation = 0
        self._epoch_refresh: asyncio.Future[None] | None = None
        # Highest revision seen per partition: the floor for SESSION reads (read-your-writes).
        self._seen_revisions: dict[int, int] = {}
        self._keep_alives = KeepAlives(self._call_partition, self._lease_stub)
        self._watches: set[Watch] = set()

    async def connect(self) -> None:
        """Fetch the cluster map through the seed endpoints; `UnavailableError` if none answers."""
        await self._refresh_layout(self._layout_generation, self._deadline())

    async def close(self) -> None:
        """Stop the per-node batchers and close every connection. Calls still waiting fail with
        `UnavailableError`; later calls are refused. Closing twice is harmless."""
        self._closed = True
        await asyncio.gather(*(watch.close() for watch in list(self._watches)))
        if self._epoch_refresh is not None:
            self._epoch_refresh.cancel()
            await asyncio.gather(self._epoch_refresh, return_exceptions=True)
        await self._keep_alives.close()
        batchers, self._batchers = self._batchers, {}
        await asyncio.gather(*(batcher.close() for batcher in batchers.values()))
        channels, self._channels = self._channels, {}
        await asyncio.gather(*(channel.close() for channel in channels.values()))
        self._router = None

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ---- key operations ---------------------------------------------------------------------

    async def get(
        self, key: Data, *, consistency: ReadConsistency = ReadConsistency.LINEARIZABLE
    ) -> KeyValue | None:
        """The key's current entry, or None when it does not exist."""
        return (await self.get_result(key, consistency=consistency)).kv

    async def get_result(
        self, key: Data, *, consistency: ReadConsistency = ReadConsistency.LINEARIZABLE
    ) -> GetResult:
        """Like `get`, with the response header (partition, revision, consistency served)."""
        result = await self._run_op(
            GetOp(to_bytes(key, "key"), ReadConsistency(consistency)), WriteConcern.MAJORITY, self._deadline()
        )
        assert isinstance(result, GetResult)
        return result

    async def put(
        self,
        key: Data,
        value: Data,
        *,
        prev_kv: bool = False,
        lease: int = 0,
        fencing_token: int = 0,
        concern: WriteConcern = WriteConcern.MAJORITY,
    ) -> PutResult:
        """Set `key` to `value`; the result's header carries the revision of the write.

        `prev_kv`: also return the entry it replaced. `lease`: the key is deleted when that lease
        expires. `fencing_token`: refused (`StaleFencingTokenError`) when the key already
        accepted a larger token. `concern`: when to acknowledge (default: once a majority of
        replicas have it). A retry after a lost answer is applied once (the request id is kept).
        On `KvTimeoutError`/`NotLeaderError` the write may or may not have been applied.
        """
        op = PutOp(to_bytes(key, "key"), to_bytes(value, "value"), lease, prev_kv, fencing_token)
        result = await self._run_op(op, WriteConcern(concern), self._deadline())
        assert isinstance(result, PutResult)
        return result

    async def delete(
        self,
        key: Data,
        *,
        prev_kv: bool = False,
        fencing_token: int = 0,
        concern: WriteConcern = WriteConcern.MAJORITY,
    ) -> DeleteResult:
        """Delete `key`; deleting a missing key is not an error (`deleted` is False).

        `prev_kv`, `fencing_token` and `concern` as for `put`, and so is the outcome of a timeout.
        """
        result = await self._run_op(
            DeleteOp(to_bytes(key, "key"), prev_kv, fencing_token), WriteConcern(concern), self._deadline()
        )
        assert isinstance(result, DeleteResult)
        return result

    async def batch(
        self, ops: Sequence[Op], *, concern: WriteConcern = WriteConcern.MAJORITY
    ) -> list[OpResult]:
        """Run independent operations (any partitions, not atomic); results in the order of `ops`.

        Each operation succeeds or fails on its own. When any fails, every operation has still
        run to its end and `BatchError` is raised: its `outcomes` holds, in the order of `ops`,
        each operation's result or the `KvError` it failed with, so the writes that were applied
        are known. An invalid operation (empty key, value over the limit) refuses the whole
        batch with `InvalidArgumentError` before anything is sent.
        """
        for op in ops:
            self._validate_op(op)
        deadline = self._deadline()
        outcomes = await asyncio.gather(
            *(self._run_op(op, concern, deadline) for op in ops), return_exceptions=True
        )
        results: list[OpResult] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, KvError):
                raise outcome  # not an operation's failure: a bug, or the call was cancelled
            if not isinstance(outcome, BaseException):
                results.append(outcome)
        if len(results) < len(outcomes):
            raise BatchError(outcomes)
        return results

    async def scan(
        self,
        *,
        prefix: Data | None = None,
        start: Data | None = None,
        end: Data | None = None,
        limit: int = 0,
        keys_only: bool = False,
        consistency: ReadConsistency = ReadConsistency.LINEARIZABLE,
    ) -> list[KeyValue]:
        """Keys in ``[start, end)`` (or starting with `prefix`) across all partitions, in key order.

        `limit` (0 = none) applies to the merged result. `end` empty or None means the end of the
        key space. With `keys_only`, values come back empty.
        """
        if prefix is not None and (start is not None or end is not None):
            raise InvalidArgumentError("scan takes either a prefix or a start/end range, not both")
        if limit < 0:
            raise InvalidArgumentError(f"limit must be >= 0, got {limit}")
        deadline = self._deadline()
        router = await self._connected_router(deadline)
        if prefix is not None:
            prefix_bytes = to_bytes(prefix, "prefix")
            range_start, range_end = prefix_bytes, _prefix_end(prefix_bytes)
            partitions = router.partitions_under(prefix_bytes)
        else:
            range_start = b"" if start is None else to_bytes(start, "start")
            range_end = b"" if end is None else to_bytes(end, "end")
            partitions = range(router.partition_count)
        per_partition = await asyncio.gather(
            *(
                self._scan_partition(
                    partition,
                    range_start,
                    range_end,
                    limit,
                    keys_only,
                    ReadConsistency(consistency),
                    deadline,
                )
                for partition in partitions
            )
        )
        merged = heapq.merge(*per_partition, key=lambda kv: kv.key)
        return list(itertools.islice(merged, limit or None))

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op] = (),
        *,
        fencing_token: int = 0,
        concern: WriteConcern = WriteConcern.MAJORITY,
    ) -> TxnResult:
        """If every compare holds, run `success`, else `failure`; atomically, in one partition.

        All keys must live in one partition (co-locate them with a ``{hash tag}``); otherwise
        `CrossPartitionError` is raised before anything is sent. `fencing_token` (a lock's
        token) fences every key the transaction touches, reads included: refused
        (`StaleFencingTokenError`) when one of them accepted a larger token, otherwise each key
        refuses smaller tokens from then on; its operations then carry no token of their own
        (docs/locks.md, "A fenced read").
        """
        deadline = self._deadline()
        router = await self._connected_router(deadline)
        keys = [compare.key for compare in compares] + [op.key for op in (*success, *failure)]
        if not keys:
            raise InvalidArgumentError("a transaction needs at least one compare or operation")
        for op in (*success, *failure):
            self._validate_op(op)
        for key in (compare.key for compare in compares):
            self._validate_key(key)
        partition = self._single_partition(router, keys)
        async with self._write_seq() as seq:
            return await self._send_txn(
                router, partition, compares, success, failure, fencing_token, concern, deadline, seq
            )

    async def _send_txn(
        self,
        router: Router,
        partition: int,
        compares: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op],
        fencing_token: int,
        concern: WriteConcern,
        deadline: float,
        seq: int,
    ) -> TxnResult:
        min_revision = self._seen_revisions.get(partition, 0)
        request = pb.RequestOp(
            txn=pb.TxnRequest(
                compare=[wire.compare_to_pb(compare) for compare in compares],
                # Sub-operations travel under the transaction's header, so theirs stay empty.
                success=[wire.op_to_pb(op, concern, min_revision) for op in success],
                failure=[wire.op_to_pb(op, concern, min_revision) for op in failure],
                concern=concern.value,
                fencing_token=fencing_token,
            )
        )
        txn = request.txn
        self._fill_request_header(txn.header, router, seq)

        async def send(address: str, timeout: float) -> pb.TxnResponse:
            txn.header.timeout_ms = int(timeout * 1000)
            return wire.txn_response(await self._batcher(address).submit(request, timeout))

        return wire.txn_from_pb(await self._call_partition(partition, deadline, send, write=True))

    # ---- leases and locks (docs/locks.md) ---------------------------------------------------

    async def grant(self, ttl: int, *, key: Data | None = None, partition: int | None = None, lease: int = 0) -> Lease:
        """A new lease of `ttl` seconds in `key`'s partition (keys attached to a lease must share
        its partition), or in `partition`, or in the partition `lease` (a chosen id) encodes;
        partition 0 when none is given. It expires unless kept alive (`keep_alive`, `session`)."""
        deadline = self._deadline()
        router = await self._connected_router(deadline)
        if key is not None:
            partition = router.partition_for(to_bytes(key, "key"))
        elif lease:
            partition = lease_partition(lease)
        granted, granted_ttl, _ = await self._grant(ttl, partition or 0, lease, deadline)
        return Lease(granted, granted_ttl)

    async def _grant(
        self, ttl: int, partition: int, lease: int = 0, deadline: float | None = None
    ) -> tuple[int, int, float]:
        """(lease id, TTL, loop time the grant was first sent: when its TTL starts at the latest)."""
        if ttl < 1:
            raise InvalidArgumentError(f"a lease's TTL must be at least 1 second, got {ttl}")
        sent_at = asyncio.get_running_loop().time()
        request = pb.LeaseGrantRequest(ttl_seconds=ttl, partition=partition, id=lease)
        response = await self._unary_call(
            partition, request, lambda address: self._lease_stub(address).Grant, deadline or self._deadline(), write=True
        )
        return response.id, response.ttl_seconds, sent_at

    async def _unary_call(
        self,
        partition: int,
        request: _UnaryRequest,
        method: Callable[[str], Callable[..., Awaitable[ResponseT]]],
        deadline: float,
        *,
        write: bool,
    ) -> ResponseT:
        """One unary RPC (`method(address)`) to `partition`'s leader by `deadline`, retried as
        every call is (a write with one request seq for all its attempts, within the dedup
        window)."""
        router = await self._connected_router(deadline)

        async def send(address: str, timeout: float) -> ResponseT:
            request.header.timeout_ms = int(timeout * 1000)
            return await method(address)(request, timeout=timeout)

        if not write:
            self._fill_request_header(request.header, router)
            return await self._call_partition(partition, deadline, send)
        async with self._write_seq() as seq:
            self._fill_request_header(request.header, router, seq)
            return await self._call_partition(partition, deadline, send, write=True)

    async def revoke(self, lease: int) -> None:
        """Revoke `lease` and delete every key attached to it (`LeaseNotFoundError` if it is gone)."""
        request = pb.LeaseRevokeRequest(id=lease)
        await self._unary_call(
            lease_partition(lease), request, lambda address: self._lease_stub(address).Revoke, self._deadline(), write=True
        )

    async def keep_alive_once(self, lease: int) -> int:
        """Renew `lease` once; its TTL (`LeaseNotFoundError` if it expired or was revoked)."""
        return await self._keep_alives.once(lease, lease_partition(lease), self.timeout)

    def keep_alive(self, lease: int) -> KeptLease:
        """Keep `lease` alive in the background (every third of its TTL) until the returned
        handle's `close()` or the client's. Its `lost` event is set once the client cannot be sure
        the lease still lives."""
        return self._keep_alives.keep(KeptLease(lease, 0, lease_partition(lease)))

    async def time_to_live(self, lease: int, *, keys: bool = False) -> LeaseStatus:
        """`lease` as its partition's leader sees it (with its attached keys if `keys`)."""
        request = pb.LeaseTimeToLiveRequest(id=lease, keys=keys)
        response = await self._unary_call(
            lease_partition(lease),
            request,
            lambda address: self._lease_stub(address).TimeToLive,
            self._deadline(),
            write=False,
        )
        return LeaseStatus(response.id, response.ttl_seconds, response.granted_ttl_seconds, tuple(response.keys))

    async def leases(self) -> list[LeaseStatus]:
        """Every lease of every partition, by id."""
        deadline = self._deadline()
        router = await self._connected_router(deadline)

        async def of(partition: int) -> list[LeaseStatus]:
            request = pb.LeaseLeasesRequest(partition=partition)
            response = await self._unary_call(
                partition, request, lambda address: self._lease_stub(address).Leases, deadline, write=False
            )
            return [LeaseStatus(entry.id, entry.ttl_seconds, entry.granted_ttl_seconds) for entry in response.leases]

        found = await asyncio.gather(*(of(partition) for partition in range(router.partition_count)))
        return sorted((status for statuses in found for status in statuses), key=lambda status: status.id)

    def session(self, ttl: int = 60) -> Session:
        """A `Session`: one lease of `ttl` seconds per partition it touches, kept alive together
        and revoked when it closes (`async with client.session(ttl=10) as session:`)."""
        if ttl < 1:
            raise InvalidArgumentError(f"a session's TTL must be at least 1 second, got {ttl}")
        return Session(ttl, self._grant, self.revoke, self._keep_alives, self._session_partition)

    def lock(
        self, name: Data, *, ttl: int = 60, session: Session | None = None, timeout: float | None = None
    ) -> LockContext:
        """`async with client.lock("orders") as lock:` waits (at most `timeout` seconds; None:
        as long as it takes) until this client holds the lock, then gives `lock.token` (pass it
        as `fencing_token` with every write the lock protects), `lock.key` and `lock.lost`. The
        lock is held through `session`'s lease, or a session of its own with `ttl`."""
        lock_name = to_bytes(name, "lock name")
        if not lock_name:
            raise InvalidArgumentError("a lock name must not be empty")

        async def acquire(lock_name: bytes, kept: KeptLease) -> tuple[bytes, int]:
            return await self._acquire(lock_name, kept.id, timeout)

        return LockContext(
            lock_name,
            session,
            lambda: self.session(ttl),
            acquire,
            self.unlock,
            lambda lock_name: self._partition_of(lock_prefix(lock_name), self._deadline()),
        )

    async def _acquire(self, name: bytes, lease: int, timeout: float | None) -> tuple[bytes, int]:
        """Queue for the lock with `lease` and wait until held: (lock key, fencing token)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout is not None else math.inf
        router = await self._connected_router(deadline)
        request = pb.LockRequest(name=name, lease=lease)

        async def send(address: str, _: float) -> pb.LockResponse:
            # The node holds the call until the lock is ours: no per-attempt limit, only the caller's.
            remaining = None if timeout is None else max(0.001, deadline - loop.time())
            response: pb.LockResponse = await self._lock_stub(address).Lock(request, timeout=remaining)
            return response

        # Pending while it waits, however long, but without a slot among the writes in flight:
        # meanwhile the nodes keep this client's answers from the request's seq up.
        async with self._pending_seq() as seq:
            self._fill_request_header(request.header, router, seq)
            if timeout is not None:
                request.header.timeout_ms = max(1, int(timeout * 1000))
            response = await self._call_partition(router.partition_for(lock_prefix(name)), deadline, send, write=True)
        return response.key, response.fencing_token

    async def unlock(self, key: Data) -> None:
        """Release the lock whose key is `key` (`LockNotHeldError` if it is not held any more)."""
        lock_key = to_bytes(key, "lock key")
        deadline = self._deadline()
        partition = await self._partition_of(lock_key, deadline)
        await self._unary_call(
            partition, pb.UnlockRequest(key=lock_key), lambda address: self._lock_stub(address).Unlock, deadline, write=True
        )

    async def _session_partition(self, key: bytes) -> int:
        return await self._partition_of(key, self._deadline())

    async def _partition_of(self, key: bytes, deadline: float) -> int:
        return (await self._connected_router(deadline)).partition_for(key)

    # ---- watches (docs/watch.md) -------------------------------------------------------------

    def watch(
        self,
        key: Data,
        *,
        prefix: bool = False,
        start_revision: int | Mapping[int, int] | None = None,
        prev_kv: bool = False,
    ) -> Watch:
        """The changes of `key` (with `prefix`: of every key starting with it, across the
        partitions that may hold them) as the cluster applies them: an async iterator of
        `WatchEvent`s, in revision order per partition.

            async with client.watch("jobs/", prefix=True) as watch:   # established on entry
                async for event in watch:
                    print(event.type.name, event.key, event.value, event.revision)

        `start_revision`: None, from now; a revision, from it in every partition (revisions are
        per partition); a mapping partition -> revision (such as a watch's `position`), from
        each one's (now for the partitions it lacks). `prev_kv`: events carry the key as it was
        before. It survives node deaths and leader changes, resuming from what it delivered,
        without duplicates or gaps; it ends with `WatchCompactedError` when no replica holds the
        changes it needs any more (a start revision too old, or a consumer too slow).
        """
        if self._closed:
            raise UnavailableError("the client is not connected: it was closed")
        watched = to_bytes(key, "prefix" if prefix else "key")
        if not prefix:
            self._validate_key(watched)
        elif len(watched) > self.max_key_bytes:
            raise InvalidArgumentError(f"prefix of {len(watched)} bytes is over the {self.max_key_bytes}-byte limit")
        starts = start_revision.values() if isinstance(start_revision, Mapping) else [start_revision or 0]
        if any(revision < 0 for revision in starts):
            raise InvalidArgumentError(f"a start revision must be >= 0, got {start_revision}")
        watch = Watch(
            watched,
            prefix,
            start_revision,
            prev_kv,
            router=self._connected_router,
            refresh=self._refresh_layout_quietly,
            stub=lambda address: pb_grpc.WatchStub(self._channel(address)),
            timeout=self.timeout,
            on_close=self._watches.discard,
        )
        self._watches.add(watch)
        return watch

    # ---- cluster information ----------------------------------------------------------------

    async def status(self, endpoint: str | None = None, *, timeout: float | None = None) -> NodeStatus:
        """The status of the node at `endpoint`, asked once: a node that refuses the connection
        or does not answer within `timeout` (default: the client's) raises `UnavailableError`
        naming the reason at once. Without `endpoint`: the first known member or seed that
        answers, retried until the timeout."""
        if timeout is not None and timeout <= 0:
            raise InvalidArgumentError(f"timeout must be > 0 seconds, got {timeout}")
        if endpoint:
            _check_endpoint(endpoint)
        response = await self._cluster_call(
            lambda stub, attempt_timeout: stub.Status(pb.StatusRequest(), timeout=attempt_timeout),
            self._deadline(timeout),
            [endpoint] if endpoint else None,
            once=bool(endpoint),
        )
        return wire.status_from_pb(response)

    async def members(self) -> list[Member]:
        """The cluster's members, by id, from the first known member or seed that answers."""
        response = await self._cluster_call(
            lambda stub, timeout: stub.Members(pb.MembersRequest(), timeout=timeout), self._deadline()
        )
        return sorted(map(wire.member_from_pb, response.members), key=lambda member: member.id)

    async def partitions(self) -> ClusterLayout:
        """The cluster map, freshly fetched (the client's cache is refreshed with it too)."""
        router = await self._refresh_layout(self._layout_generation, self._deadline())
        return router.layout

    async def member_add(self, address: str) -> Member:
        """Add a member that will listen on `address` (HOST:PORT); the cluster gives it an id.
        Start it with `kvstore-node --join` and that address; partitions then move to it."""
        return await self._member_change(lambda stub, timeout: stub.MemberAdd(
            pb.MemberAddRequest(address=address), timeout=timeout))

    async def member_remove(self, node_id: int) -> Member:
        """Remove member `node_id`: its partitions move to the others, then it is removed."""
        return await self._member_change(lambda stub, timeout: stub.MemberRemove(
            pb.MemberRemoveRequest(node_id=node_id), timeout=timeout))

    async def member_replace(self, node_id: int, address: str = "") -> Member:
        """Replace member `node_id`, dead or with a damaged disk: its partitions are rebuilt on a
        new member at `address` (usually the same), or on the others when `address` is empty.
        Returns the new member (or the replaced one, without an address)."""
        return await self._member_change(lambda stub, timeout: stub.MemberReplace(
            pb.MemberReplaceRequest(node_id=node_id, address=address), timeout=timeout))

    async def _member_change(
        self, call: Callable[[pb_grpc.ClusterStub, float], Awaitable[pb.MemberChangeResponse]]
    ) -> Member:
        deadline = self._deadline()
        backoff = Backoff(self._rng)
        response = await self._cluster_call(call, deadline)
        # NOT_LEADER: the meta group has no leader this node can reach (it is electing one after
        # its leader failed), so the change was not proposed: ask again until the deadline.
        while error_code(response.error.code) is ErrorCode.NOT_LEADER and asyncio.get_running_loop().time() < deadline:
            await backoff.pause(deadline)
            response = await self._cluster_call(call, deadline)
        if response.error.code:
            raise exception_for(response.error.code, response.error.message)
        self._note_epoch(response.header.epoch)
        return wire.member_from_pb(response.member)

    # ---- routing and retries ----------------------------------------------------------------

    def _deadline(self, timeout: float | None = None) -> float:
        """The loop time by which a call starting now must end: taken once per public call and
        handed down to everything it does (connecting included), never taken afresh."""
        return asyncio.get_running_loop().time() + (self.timeout if timeout is None else timeout)

    async def _connected_router(self, deadline: float) -> Router:
        """The routing table, connecting on first use; calls after `close()` are refused."""
        if self._router is None:
            if self._closed:
                raise UnavailableError("the client is not connected: it was closed")
            return await self._refresh_layout(self._layout_generation, deadline)
        return self._router

    @contextlib.asynccontextmanager
    async def _write_seq(self) -> AsyncIterator[int]:
        """A request seq for one write call (`_pending_seq`), with a slot among the writes in
        flight, both held until the call ends."""
        async with self._mutation_slots, self._pending_seq() as seq:
            yield seq

    @contextlib.asynccontextmanager
    async def _pending_seq(self) -> AsyncIterator[int]:
        """A request seq for one write call, pending until the call ends (answered, failed, or
        out of time). The seq is kept on every retry, so the node's (client_id, request_seq)
        dedup applies a retried write once; while it is pending, every write tells the nodes
        so (`lowest_pending_seq`), and they keep its answer."""
        seq = self._request_seqs.issue()
        try:
            yield seq
        finally:
            self._request_seqs.end(seq)

    def _fill_request_header(self, header: pb.RequestHeader, router: Router, seq: int = 0) -> None:
        """The header of a request; of a write when `seq` (from `_write_seq`) is given."""
        header.client_id = self.client_id
        if seq:
            header.request_seq = seq
            header.lowest_pending_seq = self._request_seqs.lowest
        header.epoch = router.epoch

    def _validate_key(self, key: bytes) -> None:
        if not key:
            raise InvalidArgumentError("keys must not be empty")
        if len(key) > self.max_key_bytes:
            raise InvalidArgumentError(
                f"key of {len(key)} bytes is over the {self.max_key_bytes}-byte limit: {key[:32]!r}..."
            )

    def _validate_op(self, op: Op) -> None:
        self._validate_key(op.key)
        if isinstance(op, PutOp) and len(op.value) > self.max_value_bytes:
            raise InvalidArgumentError(
                f"value of {len(op.value)} bytes for key {op.key[:64]!r} is over the {self.max_value_bytes}-byte limit"
            )
        for name in ("lease", "fencing_token"):
            if getattr(op, name, 0) < 0:
                raise InvalidArgumentError(f"{name} must be >= 0, got {getattr(op, name)}")

    @staticmethod
    def _single_partition(router: Router, keys: Sequence[bytes]) -> int:
        keys_by_partition: dict[int, list[bytes]] = {}
        for key in keys:
            keys_by_partition.setdefault(router.partition_for(key), []).append(key)
        if len(keys_by_partition) == 1:
            return next(iter(keys_by_partition))
        spread = "; ".join(
            f"partition {partition}: {', '.join(repr(key.decode('utf-8', 'replace')) for key in dict.fromkeys(keys))}"
            for partition, keys in sorted(keys_by_partition.items())
        )
        raise CrossPartitionError(
            f"a transaction must stay within one partition, but its keys span {len(keys_by_partition)} "
            f"({spread}); give them a common {{hash tag}}, e.g. '{{user42}}:a' and '{{user42}}:b'"
        )

    async def _run_op(self, op: Op, concern: WriteConcern, deadline: float) -> OpResult:
        """One key operation, batched with its neighbours on the way to the partition leader."""
        self._validate_op(op)
        if isinstance(op, GetOp):
            return await self._send_op(op, concern, deadline)
        async with self._write_seq() as seq:
            return await self._send_op(op, concern, deadline, seq)

    async def _send_op(self, op: Op, concern: WriteConcern, deadline: float, seq: int = 0) -> OpResult:
        router = await self._connected_router(deadline)
        partition = router.partition_for(op.key)
        request = wire.op_to_pb(op, concern, self._seen_revisions.get(partition, 0))
        inner = getattr(request, request.WhichOneof("op"))
        write = not isinstance(op, GetOp)
        self._fill_request_header(inner.header, router, seq)

        async def send(address: str, timeout: float) -> wire.OpResponse:
            inner.header.timeout_ms = int(timeout * 1000)
            return wire.inner_response(await self._batcher(address).submit(request, timeout))

        # A node may report a missing key as found=false or as NOT_FOUND: both mean None.
        answers = (ErrorCode.OK,) if write else (ErrorCode.OK, ErrorCode.NOT_FOUND)
        return wire.result_from_response(
            await self._call_partition(partition, deadline, send, answers, write=write)
        )

    async def _scan_partition(
        self,
        partition: int,
        start: bytes,
        end: bytes,
        limit: int,
        keys_only: bool,
        consistency: ReadConsistency,
        deadline: float,
    ) -> list[KeyValue]:
        """One partition's keys in range, following `more` page by page up to `limit`."""
        router = await self._connected_router(deadline)
        found: list[KeyValue] = []
        page_start = start
        while True:
            request = pb.ScanRequest(
                start=page_start,
                end=end,
                limit=limit - len(found) if limit else 0,
                consistency=consistency.value,
                keys_only=keys_only,
                partition=partition,
            )
            self._fill_request_header(request.header, router)

            async def send(
                address: str, timeout: float, request: pb.ScanRequest = request
            ) -> pb.ScanResponse:
                request.header.timeout_ms = int(timeout * 1000)
                response: pb.ScanResponse = await self._kv_stub(address).Scan(request, timeout=timeout)
                return response

            response = await self._call_partition(partition, deadline, send)
            found.extend(map(wire.kv_from_pb, response.kvs))
            if not response.more or not response.kvs or (limit and len(found) >= limit):
                return found
            page_start = response.kvs[-1].key + b"\x00"  # the next key after the last one seen

    async def _call_partition(
        self,
        partition: int,
        deadline: float,
        send: Callable[[str, float], Awaitable[ResponseT]],
        answers: Sequence[ErrorCode] = (ErrorCode.OK,),
        *,
        write: bool = False,
    ) -> ResponseT:
        """Send to the partition's leader until a node answers, following hints, within `deadline`.

        Returns the first response whose error code is in `answers`; raises the typed error of
        any other final code, or, at the deadline, an error saying what each replica answered
        (and for a `write`, whether it may have been applied).
        """
        loop = asyncio.get_running_loop()
        backoff = Backoff(self._rng)
        failed_nodes: set[int] = set()  # nodes that could not serve this call; skipped until all have failed
        attempts = Attempts()
        hint_hops = 0
        while True:
            router = await self._connected_router(deadline)
            remaining = deadline - loop.time()
            if remaining <= 0:
                replicas = router.replicas_of(partition)
                raise attempts.deadline_error(partition, replicas, self.timeout, write=write)
            node_id = router.choose(partition, failed_nodes)
            if node_id is None:
                # Every replica failed once: take a fresh map, pause, then try them all again.
                failed_nodes.clear()
                await self._refresh_layout_quietly(deadline)
                await backoff.pause(deadline)
                continue
            address = router.address_of(node_id) or ""
            try:
                try:
                    response = await send(address, min(remaining, self._attempt_timeout))
                except grpc.aio.AioRpcError as exc:
                    raise transport_failure(exc) from None
            except TransportError as exc:
                attempts.unreachable(node_id, address, str(exc))
                failed_nodes.add(node_id)
                router.forget_leader(partition, node_id)
                continue
            except ResourceExhaustedError as exc:
                # Over this client's rate at that node: wait as long as it asks, then ask it again.
                attempts.answered(node_id, address, exc.code, exc.message)
                await backoff.pause(deadline, at_least=exc.retry_after_s)
                continue
            error = response.error
            code = error_code(error.code)
            if code in answers:
                self._note_revision(response)
                return response
            detail = error.message or code.name.lower().replace("_", " ")
            if code is ErrorCode.NOT_LEADER:
                attempts.answered(node_id, address, code, detail)
                router.forget_leader(partition, node_id)
                hint = error.leader_hint
                if hint and hint != node_id and (error.leader_address or router.address_of(hint)):
                    router.note_leader(partition, hint, error.leader_address)
                    failed_nodes.discard(hint)  # a replica vouches for it: worth another try
                    hint_hops += 1
                    if hint_hops > 2 * max(router.layout.replication_factor, 1):
                        await backoff.pause(deadline)  # hints going round in circles: an election is on
                    continue
                failed_nodes.add(node_id)
                await self._refresh_layout_quietly(deadline)
                await backoff.pause(deadline)
            elif code is ErrorCode.WRONG_NODE:
                attempts.answered(node_id, address, code, f"does not host partition {partition}")
                failed_nodes.add(node_id)
                router.forget_leader(partition, node_id)
                await self._refresh_layout_quietly(deadline)
            elif ERRORS[code].retryable:  # another node, or this one a little later, may serve it
                attempts.answered(node_id, address, code, detail)
                failed_nodes.add(node_id)
                router.forget_leader(partition, node_id)
                await backoff.pause(deadline)
            else:
                raise exception_for(error.code, detail)

    def _note_revision(self, response: _Response) -> None:
        header = response.header
        if header.revision > self._seen_revisions.get(header.partition, 0):
            self._seen_revisions[header.partition] = header.revision
        self._note_epoch(header.epoch)

    def _note_epoch(self, epoch: int) -> None:
        """A node answered with a newer cluster map's epoch than the one routing here: fetch it
        in the background (the answer in hand stands; later calls route with the new map)."""
        router = self._router
        if router is None or epoch <= router.epoch or self._epoch_refresh is not None:
            return
        deadline = self._deadline()

        async def refresh() -> None:
            try:
                await self._refresh_layout_quietly(deadline)
            finally:
                self._epoch_refresh = None

        self._epoch_refresh = asyncio.ensure_future(refresh())

    # ---- cluster map ------------------------------------------------------------------------

    async def _refresh_layout(self, seen_generation: int, deadline: float) -> Router:
        """Fetch the cluster map by `deadline`, unless another task refreshed it since `seen_generation`."""
        async with self._refresh_lock:
            if self._router is not None and self._layout_generation != seen_generation:
                return self._router
            response = await self._cluster_call(
                lambda stub, timeout: stub.Partitions(pb.PartitionsRequest(), timeout=timeout), deadline
            )
            layout = wire.layout_from_pb(response)
            if layout.partition_count < 1 or not layout.members:
                raise UnavailableError(
                    f"the cluster map has no partitions or no members (epoch {layout.epoch})"
                )
            if self._router is not None and layout.epoch < self._router.epoch:
                return self._router  # a node that lags behind the map already known
            self._router = Router(layout)
            self._layout_generation += 1
            return self._router

    async def _refresh_layout_quietly(self, deadline: float) -> None:
        """Refresh the map within `deadline`; failing is fine, the caller keeps retrying."""
        generation = self._layout_generation
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return
        try:
            # wait_for as well: waiting for the refresh lock, held by another call, counts too.
            await asyncio.wait_for(self._refresh_layout(generation, deadline), remaining)
        except (KvError, TimeoutError):
            return

    async def _cluster_call(
        self,
        call: Callable[[pb_grpc.ClusterStub, float], Awaitable[CallResultT]],
        deadline: float,
        endpoints: Sequence[str] | None = None,
        *,
        once: bool = False,
    ) -> CallResultT:
        """A Cluster RPC to the first of `endpoints` (default: the known members, then the seeds)
        that answers, retried until `deadline`; with `once`, one attempt on each, given all the
        time left.
        """
        if endpoints is None:
            # Members in a random order: a node that lags (one just removed stops applying the
            # map) must not be the one asked every time.
            known = self._router.addresses() if self._router is not None else []
            self._rng.shuffle(known)
            endpoints = list(dict.fromkeys([*known, *self._seeds]))
        loop = asyncio.get_running_loop()
        backoff = Backoff(self._rng)
        problems: dict[str, str] = {}  # endpoint -> why its last attempt failed
        while True:
            security_problems = []
            for endpoint in endpoints:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    stub = pb_grpc.ClusterStub(self._channel(endpoint))
                    return await call(stub, remaining if once else min(remaining, self._attempt_timeout))
                except grpc.aio.AioRpcError as error:
                    failure = transport_failure(error)
                    if isinstance(failure, ResourceExhaustedError):
                        problems[endpoint] = failure.message
                        await backoff.pause(deadline, at_least=failure.retry_after_s)
                        continue
                    if isinstance(failure, KvError):
                        raise exception_for(failure.code, f"{endpoint}: {failure.message}") from None
                    problems[endpoint] = str(failure)
                    # gRPC reports a TLS mismatch as UNAVAILABLE, mostly "Socket closed": on first
                    # contact, find out whether that is it (a mismatch is for good, an outage is not).
                    if self._router is None and error.code() is grpc.StatusCode.UNAVAILABLE:
                        problem = await diagnose(endpoint, self._tls, min(deadline - loop.time(), _MIN_ATTEMPT_S))
                        if problem is not None:
                            security_problems.append(problem)
                            problems[endpoint] = problem
            if security_problems and len(security_problems) == len(endpoints):
                raise TransportSecurityError(security_problems[0])
            if once or deadline - loop.time() <= 0:
                tried = "; ".join(f"{endpoint}: {problem}" for endpoint, problem in problems.items())
                if once and len(problems) == 1:
                    raise UnavailableError(tried)
                raise UnavailableError(f"could not reach {', '.join(endpoints)} ({tried or 'no time left to try'})")
            await backoff.pause(deadline)

    async def _authenticate(self, user: str, password: str) -> tuple[str, float] | None:
        """Sign in: the token and its expiry (seconds since the epoch), None when auth is off."""
        try:
            response = await self._auth_call("Authenticate", pb.AuthenticateRequest(name=user, password=password))
        except InvalidArgumentError:
            return None  # auth is not enabled: calls need no token
        return response.token, response.expires_at_unix_ms / 1000

    async def _auth_call(self, method: str, request: Message) -> Any:
        """An Auth RPC, at the meta group's leader: asked of any member first, then of the
        leader a NOT_LEADER answer names. Raises the typed error of a refusal.

        A change is not deduplicated by the nodes, so it gets all the time left for each attempt
        and is not sent again once an attempt's outcome is unknown (no answer in time).
        """
        change = method not in _AUTH_READS
        known = self._router.addresses() if self._router is not None else []
        endpoints = list(dict.fromkeys([*known, *self._seeds]))
        loop = asyncio.get_running_loop()
        deadline = self._deadline()
        backoff = Backoff(self._rng)
        last_problem = "no endpoint was tried"
        queue = list(endpoints)
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise KvTimeoutError(f"{method} was not served within {self.timeout:g}s; last error: {last_problem}")
            if not queue:
                await backoff.pause(deadline)
                queue = list(endpoints)
                continue
            endpoint = queue.pop(0)
            stub = pb_grpc.AuthStub(self._channel(endpoint))
            try:
                response = await getattr(stub, method)(request, timeout=remaining if change else
                                                       min(remaining, self._attempt_timeout))
            except grpc.aio.AioRpcError as error:
                if change and error.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise KvTimeoutError(f"{method} got no answer from {endpoint} within {self.timeout:g}s; "
                                         "the change may or may not have been made") from None
                failure = transport_failure(error)
                if isinstance(failure, ResourceExhaustedError):
                    queue.insert(0, endpoint)
                    await backoff.pause(deadline, at_least=failure.retry_after_s)
                elif isinstance(failure, KvError):
                    raise failure from None
                last_problem = f"{endpoint} {failure}"
                continue
            code = error_code(response.error.code)
            if code is ErrorCode.OK:
                return response
            last_problem = f"{endpoint}: {response.error.message}"
            if code is ErrorCode.NOT_LEADER:
                leader = response.error.leader_address
                if leader and leader != endpoint:
                    queue.insert(0, leader)
                else:
                    await backoff.pause(deadline)  # an election is on
            elif not ERRORS[code].retryable:
                raise exception_for(response.error.code, response.error.message)

    # ---- connections ------------------------------------------------------------------------

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = aio_channel(address, self._credentials, interceptors=self._interceptors)
        return channel

    def _kv_stub(self, address: str) -> pb_grpc.KVStub:
        return pb_grpc.KVStub(self._channel(address))

    def _lease_stub(self, address: str) -> pb_grpc.LeaseStub:
        return pb_grpc.LeaseStub(self._channel(address))

    def _lock_stub(self, address: str) -> pb_grpc.LockStub:
        return pb_grpc.LockStub(self._channel(address))



    def _batcher(self, address: str) -> NodeBatcher:
        batcher = self._batchers.get(address)
        if batcher is None:
            batcher = self._batchers[address] = NodeBatcher(address, self._kv_stub(address), self._max_batch)
            batcher.start()
        return batcher
