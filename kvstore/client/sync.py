"""A blocking client: the asyncio `Client` running on a private event loop in a background thread."""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar, cast

from kvstore.client.auth import AuthAdmin
from kvstore.client.client import DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_VALUE_BYTES, Client
from kvstore.client.leases import LockContext, Session
from kvstore.client.ops import Compare, Data, Op
from kvstore.client.types import (
    AuthStatus,
    ClusterLayout,
    DeleteResult,
    GetResult,
    KeyValue,
    Lease,
    LeaseStatus,
    Member,
    NodeStatus,
    OpResult,
    Permission,
    PutResult,
    RateLimit,
    ReadConsistency,
    Role,
    TxnResult,
    User,
    WatchEvent,
    WriteConcern,
)
from kvstore.client.watch import Watch
from kvstore.errors import UnavailableError
from kvstore.tls import TlsConfig

ResultT = TypeVar("ResultT")


def _shut_down(client: Client, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    """Close `client` on its loop, then stop the loop and its thread.

    A module function holding no reference to the `SyncClient`, so that it can be its finalizer:
    it runs on `close()`, or when the `SyncClient` is garbage-collected, or at interpreter exit for
    one never closed. Without it the loop's tasks (a batcher per node) would be destroyed pending
    at exit, and Python would say so on stderr ("Task was destroyed but it is pending!").
    """
    try:
        asyncio.run_coroutine_threadsafe(client.close(), loop).result()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


class SyncClient:
    """The same API as `Client`, blocking; safe to call from many threads at once.

    with SyncClient(["127.0.0.1:2379"]) as client:
        client.put("greeting", "hello")
        print(client.get("greeting"))

    Each method is its `Client` namesake run to completion on the client's own event loop, in a
    background thread; the arguments, results and exceptions are the same. Close the client
    (`with`, or `close()`) when done; one left open is closed at interpreter exit.
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
        self._client = Client(
            endpoints,
            timeout=timeout,
            client_id=client_id,
            max_batch=max_batch,
            max_key_bytes=max_key_bytes,
            max_value_bytes=max_value_bytes,
            tls=tls,
            user=user,
            password=password,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._shutdown: weakref.finalize[..., SyncClient] | None = None
        self.auth = SyncAuthAdmin(self._client.auth, self._run)

    @property
    def client_id(self) -> str:
        """The id the nodes know this client by (its writes are deduplicated under it)."""
        return self._client.client_id

    def connect(self) -> None:
        """Start the background loop and connect; on failure the loop is stopped again."""
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="kvstore-sync-client", daemon=True)
        thread.start()
        self._loop = loop
        self._shutdown = weakref.finalize(self, _shut_down, self._client, loop, thread)
        try:
            self._run(self._client.connect())
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the client and stop its background thread; later calls are refused."""
        if self._shutdown is not None:
            self._loop = None
            self._shutdown()  # runs once: a finalizer that has run is dead

    def __enter__(self) -> SyncClient:
        self.connect()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _run(self, call: Coroutine[Any, Any, ResultT]) -> ResultT:
        """Run `call` on the client's loop and wait for it. Interrupted (Ctrl-C), the call is
        cancelled and given up to the client's timeout to clean up (a queued lock key is removed)."""
        if self._loop is None:
            call.close()
            raise UnavailableError("the client is not connected: call connect() or use 'with'")
        finished = threading.Event()

        async def tracked() -> ResultT:
            try:
                return await call
            finally:
                finished.set()

        future = asyncio.run_coroutine_threadsafe(tracked(), self._loop)
        try:
            return future.result()
        except BaseException:
            if future.cancel():
                finished.wait(self._client.timeout)
            raise

    def get(
        self, key: Data, *, consistency: ReadConsistency = ReadConsistency.LINEARIZABLE
    ) -> KeyValue | None:
        """The key's current entry, or None when it does not exist (`Client.get`)."""
        return self._run(self._client.get(key, consistency=consistency))

    def get_result(
        self, key: Data, *, consistency: ReadConsistency = ReadConsistency.LINEARIZABLE
    ) -> GetResult:
        """Like `get`, with the response header (`Client.get_result`)."""
        return self._run(self._client.get_result(key, consistency=consistency))

    def put(
        self,
        key: Data,
        value: Data,
        *,
        prev_kv: bool = False,
        lease: int = 0,
        fencing_token: int = 0,
        concern: WriteConcern = WriteConcern.MAJORITY,
    ) -> PutResult:
        """Set `key` to `value` (`Client.put`: prev_kv, lease, fencing token, write concern)."""
        return self._run(
            self._client.put(
                key, value, prev_kv=prev_kv, lease=lease, fencing_token=fencing_token, concern=concern
            )
        )

    def delete(
        self,
        key: Data,
        *,
        prev_kv: bool = False,
        fencing_token: int = 0,
        concern: WriteConcern = WriteConcern.MAJORITY,
    ) -> DeleteResult:
        """Delete `key`; a missing key is not an error (`Client.delete`)."""
        return self._run(
            self._client.delete(key, prev_kv=prev_kv, fencing_token=fencing_token, concern=concern)
        )

    def batch(self, ops: Sequence[Op], *, concern: WriteConcern = WriteConcern.MAJORITY) -> list[OpResult]:
        """Independent operations, results in order; `BatchError` carries every outcome when
        any failed (`Client.batch`)."""
        return self._run(self._client.batch(ops, concern=concern))

    def scan(
        self,
        *,
        prefix: Data | None = None,
        start: Data | None = None,
        end: Data | None = None,
        limit: int = 0,
        keys_only: bool = False,
        consistency: ReadConsistency = ReadConsistency.LINEARIZABLE,
    ) -> list[KeyValue]:
        """Keys in ``[start, end)`` or under `prefix`, across partitions, in key order (`Client.scan`)."""
        return self._run(
            self._client.scan(
                prefix=prefix, start=start, end=end, limit=limit, keys_only=keys_only, consistency=consistency
            )
        )

    def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op] = (),
        *,
        fencing_token: int = 0,
        concern: WriteConcern = WriteConcern.MAJORITY,
    ) -> TxnResult:
        """If every compare holds run `success`, else `failure`, atomically (`Client.txn`: a
        `fencing_token` fences every key it touches)."""
        return self._run(self._client.txn(compares, success, failure, fencing_token=fencing_token, concern=concern))

    def status(self, endpoint: str | None = None, *, timeout: float | None = None) -> NodeStatus:
        """One node's status, asked once (`Client.status`)."""
        return self._run(self._client.status(endpoint, timeout=timeout))

    def members(self) -> list[Member]:
        """The cluster's members, by id (`Client.members`)."""
        return self._run(self._client.members())

    def partitions(self) -> ClusterLayout:
        """The cluster map, freshly fetched (`Client.partitions`)."""
        return self._run(self._client.partitions())

    # ---- watches (docs/watch.md) -------------------------------------------------------------

    def watch(
        self,
        key: Data,
        *,
        prefix: bool = False,
        start_revision: int | Mapping[int, int] | None = None,
        prev_kv: bool = False,
    ) -> SyncWatch:
        """`Client.watch`, as a blocking iterator of `WatchEvent`s:

            with client.watch("jobs/", prefix=True) as watch:   # established on entry
                for event in watch:
                    print(event.type.name, event.key, event.value)
        """
        return SyncWatch(self, self._client.watch(key, prefix=prefix, start_revision=start_revision, prev_kv=prev_kv))

    # ---- leases and locks (docs/locks.md) ---------------------------------------------------

    def grant(self, ttl: int, *, key: Data | None = None, partition: int | None = None, lease: int = 0) -> Lease:
        """A new lease of `ttl` seconds (`Client.grant`)."""
        return self._run(self._client.grant(ttl, key=key, partition=partition, lease=lease))

    def revoke(self, lease: int) -> None:
        """Revoke `lease`, deleting its keys (`Client.revoke`)."""
        self._run(self._client.revoke(lease))

    def keep_alive_once(self, lease: int) -> int:
        """Renew `lease` once; its TTL (`Client.keep_alive_once`)."""
        return self._run(self._client.keep_alive_once(lease))

    def time_to_live(self, lease: int, *, keys: bool = False) -> LeaseStatus:
        """`lease` as its leader sees it (`Client.time_to_live`)."""
        return self._run(self._client.time_to_live(lease, keys=keys))

    def leases(self) -> list[LeaseStatus]:
        """Every lease of every partition (`Client.leases`)."""
        return self._run(self._client.leases())

    def unlock(self, key: Data) -> None:
        """Release the lock whose key is `key` (`Client.unlock`)."""
        self._run(self._client.unlock(key))

    def session(self, ttl: int = 60) -> SyncSession:
        """A `Session` (see `Client.session`): `with client.session(ttl=10) as session:`."""
        return SyncSession(self, self._client.session(ttl))

    def lock(
        self, name: Data, *, ttl: int = 60, session: SyncSession | None = None, timeout: float | None = None
    ) -> SyncLockContext:
        """`with client.lock("orders") as lock:` (see `Client.lock`); `lock.lost` is a
        `threading.Event`."""
        inner = None if session is None else session.session
        return SyncLockContext(self, self._client.lock(name, ttl=ttl, session=inner, timeout=timeout))


class SyncSession:
    """A `Session` used from threads; `lost` is a `threading.Event`."""

    def __init__(self, client: SyncClient, session: Session) -> None:
        self._client = client
        self.session = session
        self.lost = threading.Event()

    def __enter__(self) -> SyncSession:
        self._client._run(self._watch())
        return self

    async def _watch(self) -> None:
        self.session.on_lost(self.lost.set)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def lease_for(self, key: Data) -> int:
        """The session's lease in `key`'s partition (granted on first use)."""
        return self._client._run(self.session.lease_for(key))

    def close(self) -> None:
        self._client._run(self.session.close())


@dataclass(frozen=True, slots=True)
class SyncLock:
    """A lock held (see `Lock`), with `lost` a `threading.Event`."""

    name: bytes
    key: bytes
    token: int
    lost: threading.Event


class SyncLockContext:
    def __init__(self, client: SyncClient, context: LockContext) -> None:
        self._client = client
        self._context = context

    def __enter__(self) -> SyncLock:
        lock = self._client._run(self._context.__aenter__())
        lost = threading.Event()
        self._client._run(self._watch(lost))
        return SyncLock(lock.name, lock.key, lock.token, lost)

    async def _watch(self, lost: threading.Event) -> None:
        self._context.on_lost(lost.set)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._client._run(self._context.__aexit__(exc_type, exc, tb))


class SyncAuthAdmin:
    """`AuthAdmin`, blocking (see `Client.auth`)."""

    def __init__(self, admin: AuthAdmin, run: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
        self._admin = admin
        self._run = run

    def status(self) -> AuthStatus:
        return cast(AuthStatus, self._run(self._admin.status()))

    def enable(self) -> int:
        return cast(int, self._run(self._admin.enable()))

    def disable(self) -> int:
        return cast(int, self._run(self._admin.disable()))

    def user_add(self, name: str, password: str | None = None) -> int:
        return cast(int, self._run(self._admin.user_add(name, password)))

    def user_delete(self, name: str) -> int:
        return cast(int, self._run(self._admin.user_delete(name)))

    def user_change_password(self, name: str, password: str) -> int:
        return cast(int, self._run(self._admin.user_change_password(name, password)))

    def user_grant_role(self, user: str, role: str) -> int:
        return cast(int, self._run(self._admin.user_grant_role(user, role)))

    def user_revoke_role(self, user: str, role: str) -> int:
        return cast(int, self._run(self._admin.user_revoke_role(user, role)))

    def user_set_rate_limit(self, name: str, limit: RateLimit) -> int:
        return cast(int, self._run(self._admin.user_set_rate_limit(name, limit)))

    def user_list(self) -> list[User]:
        return cast(list[User], self._run(self._admin.user_list()))

    def role_add(self, name: str) -> int:
        return cast(int, self._run(self._admin.role_add(name)))

    def role_delete(self, name: str) -> int:
        return cast(int, self._run(self._admin.role_delete(name)))

    def role_grant(self, role: str, prefix: str | bytes, permission: Permission) -> int:
        return cast(int, self._run(self._admin.role_grant(role, prefix, permission)))

    def role_revoke(self, role: str, prefix: str | bytes) -> int:
        return cast(int, self._run(self._admin.role_revoke(role, prefix)))

    def role_set_rate_limit(self, name: str, limit: RateLimit) -> int:
        return cast(int, self._run(self._admin.role_set_rate_limit(name, limit)))

    def role_list(self) -> list[Role]:
        return cast(list[Role], self._run(self._admin.role_list()))


class SyncWatch:
    """A `Watch` used from threads: `next(watch)` blocks until the next event (Ctrl-C interrupts
    it; no event is lost by that: the next call hands it out). `position` is the watch's."""

    def __init__(self, client: SyncClient, watch: Watch) -> None:
        self._client = client
        self._watch = watch

    @property
    def position(self) -> dict[int, int]:
        """Per partition, the next revision this watch hands out (`Watch.position`)."""
        return self._watch.position

    def start(self) -> None:
        """Establish the watch on every partition it covers (`Watch.start`)."""
        self._client._run(self._watch.start())

    def close(self) -> None:
        self._client._run(self._watch.close())

    def __enter__(self) -> SyncWatch:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[WatchEvent]:
        return self

    def __next__(self) -> WatchEvent:
        event = self._client._run(self._next())
        if event is None:
            raise StopIteration
        return event

    async def _next(self) -> WatchEvent | None:
        try:
            return await anext(self._watch)
        except StopAsyncIteration:
            return None
