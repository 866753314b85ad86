"""Leases and locks, client side: keepalive streams, kept leases, `Session` and `Lock`
(docs/locks.md).

* One `KeepAlive` stream per node carries the keepalives of every lease this client keeps alive
  on that node (the leader of the lease's partition).
* A kept lease is renewed every third of its TTL. Its `lost` event is set once the client can no
  longer be sure the lease is alive: `ttl` after the SEND time of the last keepalive that was
  acknowledged (the server counts from the receipt, which is later), shortened by the clock
  drift bound. It is never cleared, and the lease is not renewed any more: a lock held through
  a lost lease may have passed on.
* A `Session` holds one lease per partition it touches, granted on first use, kept alive until
  the session ends, then revoked (deleting the keys attached to it).
* A `Lock` is held through a session's lease; its `token` is the fencing token to send with
  every write the lock protects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.client.batching import TransportError, transport_failure
from kvstore.client.ops import Data, to_bytes
from kvstore.errors import KvError, LeaseNotFoundError, LockNotHeldError
from kvstore.names import lock_key

CLIENT_MAX_DRIFT = 0.01
"""How far this client's clock rate may be off: `lost` fires that much before the TTL is up."""
_RETRY_S = 0.2  # pause after a keepalive that failed before trying again
_MIN_ATTEMPT_S = 1.0  # a keepalive is given at least this long, even past the lease's expiry

KeepAliveSend = Callable[[str, float], Awaitable[pb.LeaseKeepAliveResponse]]
CallPartition = Callable[[int, float, KeepAliveSend], Awaitable[pb.LeaseKeepAliveResponse]]


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """A keepalive (or the grant) the cluster acknowledged: the loop times it was sent and its
    answer arrived, and the TTL granted. The cluster counts the TTL from its receipt, in between."""

    sent_at: float
    received_at: float
    ttl: int


class KeptLease:
    """A lease this client keeps alive (see the module doc). `close()` stops renewing it (it
    then expires on its own; `Session.close` revokes)."""

    def __init__(self, lease: int, ttl: int, partition: int) -> None:
        self.id = lease
        self.ttl = ttl
        self.partition = partition
        self.lost = asyncio.Event()
        self.lost_reason = ""
        self.expires_at = float("inf")  # loop time after which it may have expired (inf: unknown yet)
        self.last_ack: Acknowledgement | None = None  # the latest counted (none once lost)
        self.next_send = 0.0
        self.closing = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._on_lost: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call `callback` (on the event loop) when the lease is lost; at once if it is."""
        if self.lost.is_set():
            callback()
        else:
            self._on_lost.append(callback)

    def acknowledged(self, sent_at: float, ttl: int) -> None:
        """A keepalive (or the grant) sent at loop time `sent_at` was acknowledged for `ttl`."""
        if self.lost.is_set():
            return
        loop = asyncio.get_running_loop()
        self.ttl = ttl
        self.last_ack = Acknowledgement(sent_at, loop.time(), ttl)
        self.expires_at = sent_at + ttl * (1 - CLIENT_MAX_DRIFT)
        self.next_send = sent_at + ttl / 3
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog = loop.call_at(
            self.expires_at, self.lose, f"no keepalive was acknowledged within {ttl} s"
        )

    def lose(self, reason: str) -> None:
        if self.lost.is_set():
            return
        self.lost_reason = reason
        self.lost.set()
        for callback in self._on_lost:
            callback()
        self._on_lost.clear()

    async def close(self) -> None:
        self.closing = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class _Stream:
    """The KeepAlive stream to one node. Answers are matched to requests per lease, oldest
    first: an answer is never credited to a request sent after the one it answers (the node
    answers each lease's keepalives in order, and every one of them, TIMEOUT at worst)."""

    def __init__(self, stub: pb_grpc.LeaseStub, address: str) -> None:
        self.address = address
        self._call = stub.KeepAlive()
        self._waiting: dict[int, deque[asyncio.Future[pb.LeaseKeepAliveResponse]]] = {}
        self.broken: str | None = None
        self._reader = asyncio.create_task(self._read(), name=f"keepalive stream {address}")

    async def keep_alive(self, lease: int, timeout: float) -> pb.LeaseKeepAliveResponse:
        if self.broken is not None:
            raise TransportError(self.broken)
        answer: asyncio.Future[pb.LeaseKeepAliveResponse] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(lease, deque()).append(answer)
        try:
            await self._call.write(pb.LeaseKeepAliveRequest(id=lease))
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as error:
            raise TransportError(f"the keepalive stream to {self.address} broke: {error}") from None
        try:
            # Shielded: on a timeout the answer stays queued, to be matched and dropped when it comes.
            return await asyncio.wait_for(asyncio.shield(answer), timeout)
        except TimeoutError:
            raise TransportError(f"no keepalive answer from {self.address} within {timeout:g}s") from None

    async def _read(self) -> None:
        reason = f"the keepalive stream to {self.address} ended"
        try:
            while True:
                response = await self._call.read()
                if response is grpc.aio.EOF:
                    break
                waiting = self._waiting.get(response.id)
                if waiting:
                    answer = waiting.popleft()
                    if not answer.done():
                        answer.set_result(response)
        except grpc.aio.AioRpcError as error:
            reason = f"the keepalive stream to {self.address} broke: {transport_failure(error)}"
        finally:
            self.broken = reason
            for waiting in self._waiting.values():
                for answer in waiting:
                    if not answer.done():
                        answer.set_exception(TransportError(reason))
                        # Marked as seen: the request that timed out waiting for it never will.
                        answer.exception()
            self._waiting.clear()

    async def close(self) -> None:
        self._call.cancel()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class KeepAlives:
    """The leases this client keeps alive and its keepalive streams (one per node). Every task
    and stream is owned here and stopped by `close`."""

    def __init__(self, call_partition: CallPartition, lease_stub: Callable[[str], pb_grpc.LeaseStub]) -> None:
        self._call_partition = call_partition
        self._lease_stub = lease_stub
        self._streams: dict[str, _Stream] = {}
        self._kept: set[KeptLease] = set()

    def keep(self, kept: KeptLease) -> KeptLease:
        """Start renewing `kept` (a first keepalive goes at `kept.next_send`)."""
        self._kept.add(kept)
        kept._task = asyncio.create_task(self._renew(kept), name=f"keep lease {kept.id} alive")
        kept._task.add_done_callback(lambda _: self._kept.discard(kept))
        return kept

    async def once(self, lease: int, partition: int, timeout: float) -> int:
        """One keepalive of `lease`; its TTL once acknowledged."""
        loop = asyncio.get_running_loop()
        response = await self._call_partition(partition, loop.time() + timeout, self._sender(lease))
        return response.ttl_seconds

    async def close(self) -> None:
        for kept in list(self._kept):
            await kept.close()
        streams, self._streams = self._streams, {}
        await asyncio.gather(*(stream.close() for stream in streams.values()))

    def _sender(self, lease: int) -> KeepAliveSend:
        async def send(address: str, timeout: float) -> pb.LeaseKeepAliveResponse:
            stream = self._streams.get(address)
            if stream is None or stream.broken is not None:
                stream = self._streams[address] = _Stream(self._lease_stub(address), address)
            return await stream.keep_alive(lease, timeout)

        return send

    async def _renew(self, kept: KeptLease) -> None:
        loop = asyncio.get_running_loop()
        send = self._sender(kept.id)
        # A lost lease is not renewed: its owner no longer trusts it, and its lock must pass on.
        # `closing` ends the loop too when the cancellation of `close` was lost (Python 3.11's
        # asyncio.wait_for drops one that arrives as the awaited answer does).
        while not kept.lost.is_set() and not kept.closing:
            await asyncio.sleep(max(0.0, kept.next_send - loop.time()))
            sent_at = loop.time()
            deadline = max(kept.expires_at, sent_at + _MIN_ATTEMPT_S)
            try:
                response = await self._call_partition(kept.partition, deadline, send)
            except LeaseNotFoundError as error:
                kept.lose(error.message)
                return
            except KvError:
                kept.next_send = loop.time() + _RETRY_S  # unavailable for now: try again shortly
                continue
            kept.acknowledged(sent_at, response.ttl_seconds)


class Session:
    """One lease per partition touched, kept alive together, revoked at the end (see the module
    doc). Use it as an async context manager, or call `close()`."""

    def __init__(
        self,
        ttl: int,
        grant: Callable[[int, int], Awaitable[tuple[int, int, float]]],
        revoke: Callable[[int], Awaitable[None]],
        keep_alives: KeepAlives,
        partition_of: Callable[[bytes], Awaitable[int]],
    ) -> None:
        self.ttl = ttl
        self.lost = asyncio.Event()
        self._grant = grant
        self._revoke = revoke
        self._keep_alives = keep_alives
        self._partition_of = partition_of
        self._leases: dict[int, KeptLease] = {}
        self._granting = asyncio.Lock()
        self._on_lost: list[Callable[[], None]] = []
        self._closed = False

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call `callback` when any of the session's leases is lost; at once if one is."""
        if self.lost.is_set():
            callback()
        else:
            self._on_lost.append(callback)

    async def lease_for(self, key: Data) -> int:
        """The session's lease in `key`'s partition (granted now if it has none there)."""
        return (await self.lease_in(await self._partition_of(to_bytes(key, "key")))).id

    async def lease_in(self, partition: int) -> KeptLease:
        """The session's lease in `partition`, granted and kept alive on first use."""
        async with self._granting:
            if self._closed:
                raise KvError("the session is closed")
            kept = self._leases.get(partition)
            if kept is None:
                lease, ttl, sent_at = await self._grant(self.ttl, partition)
                kept = KeptLease(lease, ttl, partition)
                kept.acknowledged(sent_at, ttl)
                kept.on_lost(self._lose)
                self._leases[partition] = self._keep_alives.keep(kept)
            return kept

    def _lose(self) -> None:
        if not self.lost.is_set():
            self.lost.set()
            for callback in self._on_lost:
                callback()
            self._on_lost.clear()

    async def close(self) -> None:
        """Stop renewing and revoke every lease (their keys go with them); a lease that cannot be
        revoked now expires by itself within its TTL."""
        async with self._granting:
            self._closed = True
            leases, self._leases = self._leases, {}
        for kept in leases.values():
            await kept.close()
        for kept in leases.values():
            with contextlib.suppress(KvError):
                await self._revoke(kept.id)


@dataclass(frozen=True, slots=True)
class Lock:
    """A lock this client holds: `key` (its lock key), `token` (the fencing token to pass with
    each write it protects), `lost` (set when the lease holding it can no longer be trusted:
    stop using the lock) and `lease`, that lease (its id, TTL and last acknowledgement)."""

    name: bytes
    key: bytes
    token: int
    lost: asyncio.Event
    lease: KeptLease


class LockContext:
    """`async with client.lock(name) as lock:` — waits until held, unlocks on exit."""

    def __init__(
        self,
        name: bytes,
        session: Session | None,
        new_session: Callable[[], Session],
        acquire: Callable[[bytes, KeptLease], Awaitable[tuple[bytes, int]]],
        unlock: Callable[[bytes], Awaitable[None]],
        lock_partition: Callable[[bytes], Awaitable[int]],
    ) -> None:
        self._name = name
        self._given_session = session
        self._new_session = new_session
        self._acquire = acquire
        self._unlock = unlock
        self._lock_partition = lock_partition
        self._session: Session | None = None
        self._kept: KeptLease | None = None
        self.lock: Lock | None = None

    async def __aenter__(self) -> Lock:
        session = self._given_session or self._new_session()
        self._session = session
        kept: KeptLease | None = None
        try:
            kept = await session.lease_in(await self._lock_partition(self._name))
            key, token = await self._acquire(self._name, kept)
        except BaseException:
            # Given up while queued (cancelled, timed out): leave no key behind to become holder.
            if kept is not None:
                with contextlib.suppress(KvError):
                    await self._unlock(lock_key(self._name, kept.id))
            await self._release()
            raise
        self._kept = kept
        self.lock = Lock(self._name, key, token, kept.lost, kept)
        return self.lock

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call `callback` (on the event loop) when the held lock's lease is lost."""
        if self._kept is None:
            raise KvError("the lock is not held")
        self._kept.on_lost(callback)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(LockNotHeldError):
            await self._release()

    async def release(self) -> None:
        """Unlock now rather than on exit, and learn whether the lock was still held:
        `LockNotHeldError` when its key was already gone (its lease expired, so the lock may have
        passed to another holder meanwhile). A session of its own is closed either way, and the
        exit does nothing more."""
        await self._release()

    async def _release(self) -> None:
        """Give up the lock (or the place in its queue) and close a session of our own."""
        lock, self.lock = self.lock, None
        try:
            if lock is not None:
                await self._unlock(lock.key)
        finally:
            session, self._session = self._session, None
            if self._given_session is None and session is not None:
                await session.close()  # revokes the lease: a queued key goes with it
