"""One worker of the lock workload, run as an OS process of its own so that the client-pause
nemesis can stop it (SIGSTOP) while it holds the lock.

``python -m kvstore.jepsen.lockworker CONFIG`` (CONFIG: a `WorkerConfig` as JSON) loops until the
deadline over critical sections:

1. ``acquire``: take the lock (FIFO, through a `Session` of the worker's whose lease has a short
   TTL; a session whose lease was lost is replaced);
2. ``read`` one protected register, chosen at random: with fencing, a transaction carrying the
   lock's token, so that the register refuses older holders from this read on; without, a plain
   linearizable read;
3. think a little (the work a holder does; when the nemesis stops the worker, it is most likely
   here, after the read and before the write);
4. ``write`` the value read plus one, with the token (or without, when fencing is off);
5. ``release``: unlock, which fails with ``LockNotHeldError`` when the lease expired meanwhile
   (the worker was stopped, or cut off, for longer than its TTL).

The worker does not look at ``lock.lost`` before writing: a pause can fall between such a check
and the write, so it only narrows the window, and the point of the workload is what the store
does with a late write.

Every operation goes to stdout as a history event (``history.py``'s JSON lines) timed on the
run's clock: nanoseconds since the run's start, on CLOCK_MONOTONIC, which every process of the
machine shares. Worker ``w`` of ``n`` records its sections as processes ``n + w``, ``2n + w``...
(a new one after each operation whose outcome is unknown: that ends the section, and the worker
drops its session, whose revocation frees the lock), so process mod ``n`` is the worker, as in
Jepsen. Process ``w`` itself records the keepalives of the worker's leases (the grant counts as
the first): ``keepalive`` operations from the send of each acknowledged one to its answer, whose
key is the lease and whose value is its TTL, recorded when the worker next looks (after every
operation); the lease check (``locks.py``) counts a lease's TTL from the last one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import sys
import time
from typing import IO

from kvstore.client import (
    Client,
    GetResult,
    KeptLease,
    KvError,
    Lock,
    LockContext,
    LockNotHeldError,
    ReadConsistency,
    Session,
    ops,
)
from kvstore.jepsen.history import Event, EventType, Value, event_to_json
from kvstore.jepsen.locks import WorkerConfig
from kvstore.jepsen.workloads import (
    Completion,
    connect_client,
    describe_error,
    read_register,
    write_outcome_of,
)

_NS_PER_S = 1_000_000_000


class _Recorder:
    """Writes this worker's events to ``stream``: one process at a time for its sections, and its
    keepalive lane."""

    def __init__(self, config: WorkerConfig, stream: IO[str]) -> None:
        self._config = config
        self._stream = stream
        self._generations = itertools.count(1)
        self.process = self._next_process()
        self._acknowledged: dict[int, float] = {}  # lease -> send time of the last keepalive recorded

    def _next_process(self) -> int:
        return next(self._generations) * self._config.workers + self._config.index

    def retire(self) -> None:
        """The current process had an operation of unknown outcome: later ones go on a new one."""
        self.process = self._next_process()

    def now_ns(self) -> int:
        return time.monotonic_ns() - self._config.origin_ns

    def _at(self, loop_time: float) -> int:
        # The event loop's clock is time.monotonic().
        return round(loop_time * _NS_PER_S) - self._config.origin_ns

    def _write(self, event: Event) -> None:
        self._stream.write(event_to_json(event) + "\n")
        self._stream.flush()

    def invoke(self, f: str, key: str, value: Value) -> None:
        self._write(Event(self.process, EventType.INVOKE, f, key, value, self.now_ns()))

    def complete(self, f: str, key: str, value: Value, completion: Completion) -> None:
        """Complete the current process's operation; an ``ok`` one carries the completion's value."""
        result = completion.value if completion.type is EventType.OK else value
        self._write(Event(self.process, completion.type, f, key, result, self.now_ns(),
                          revision=completion.revision, error=completion.error))  # fmt: skip

    def keepalives(self, lease: KeptLease) -> None:
        """Record the lease's last acknowledged keepalive, if it is new."""
        ack = lease.last_ack
        if ack is None or self._acknowledged.get(lease.id, -1.0) >= ack.sent_at:
            return
        self._acknowledged[lease.id] = ack.sent_at
        lane = self._config.index
        self._write(Event(lane, EventType.INVOKE, "keepalive", lease.id, ack.ttl, self._at(ack.sent_at)))
        self._write(Event(lane, EventType.OK, "keepalive", lease.id, ack.ttl, self._at(ack.received_at)))


class LockWorker:
    def __init__(self, config: WorkerConfig, client: Client, stream: IO[str]) -> None:
        self._config = config
        self._client = client
        self._rng = random.Random(f"{config.seed}/worker/{config.index}")
        self._recorder = _Recorder(config, stream)

    async def run(self) -> None:
        session: Session | None = None
        try:
            while time.monotonic_ns() < self._config.deadline_ns:
                if session is None or session.lost.is_set():
                    await _close(session)
                    session = self._client.session(ttl=self._config.ttl_s)
                if not await self._section(session, self._rng.choice(self._config.registers)):
                    # An operation of unknown outcome: the lock may still be held through this
                    # session's lease, whose revocation frees it.
                    await _close(session)
                    session = None
        finally:
            await _close(session)

    async def _section(self, session: Session, register: str) -> bool:
        """One critical section; False when the session should not be used again (the lock was
        not taken, or an operation's outcome was unknown: that ends the section)."""
        config = self._config
        # Never queued for long past the deadline: a lock given up leaves no key behind.
        wait_s = max(config.op_timeout_s, (config.deadline_ns - time.monotonic_ns()) / _NS_PER_S)
        context = self._client.lock(config.lock, session=session, timeout=wait_s)
        self._recorder.invoke("acquire", config.lock, None)
        try:
            lock = await context.__aenter__()
        except KvError as error:
            self._outcome("acquire", config.lock, None, write_outcome_of(error))
            return False
        try:
            # The acquire's value: the fencing token and the lease holding the lock.
            self._outcome("acquire", config.lock, None, Completion(EventType.OK, (lock.token, lock.lease.id)))
            return await self._hold(context, lock, register)
        finally:
            with contextlib.suppress(KvError):
                await context.__aexit__(None, None, None)  # nothing left to do once released

    async def _hold(self, context: LockContext, lock: Lock, register: str) -> bool:
        """Read, think, write and release, as the module doc says."""
        config, recorder = self._config, self._recorder
        token = lock.token if config.fencing else 0
        recorder.keepalives(lock.lease)
        read = await self._read(register, token)
        recorder.keepalives(lock.lease)
        if read.type is EventType.INFO:
            return False
        if read.type is EventType.OK:
            await asyncio.sleep(self._rng.uniform(*config.think_s))
            written = (read.value if isinstance(read.value, int) else 0) + 1
            if not self._outcome("write", register, written, await self._write(register, written, token)):
                return False
            recorder.keepalives(lock.lease)
        recorder.invoke("release", config.lock, lock.token)
        try:
            await context.release()
            released = Completion(EventType.OK, lock.token)
        except LockNotHeldError as error:  # the lease expired: the lock may have passed on
            released = Completion(EventType.FAIL, error=describe_error(error))
        except KvError as error:
            released = write_outcome_of(error)
        recorder.keepalives(lock.lease)
        return self._outcome("release", config.lock, lock.token, released)

    async def _read(self, register: str, token: int) -> Completion:
        """The register's value (None: absent), with the revision of the version read."""
        self._recorder.invoke("read", register, None)
        if not token:
            completion = await read_register(self._client, register, ReadConsistency.LINEARIZABLE)
        else:
            try:
                # A fenced read goes through the log and records the token: a write of its own.
                (got,) = (await self._client.txn([], [ops.get(register)], fencing_token=token)).responses
            except KvError as error:
                completion = write_outcome_of(error)
            else:
                assert isinstance(got, GetResult)
                kv = got.kv
                completion = Completion(
                    EventType.OK, None if kv is None else int(kv.value), revision=0 if kv is None else kv.mod_revision
                )
        self._outcome("read", register, None, completion)
        return completion

    async def _write(self, register: str, value: int, token: int) -> Completion:
        self._recorder.invoke("write", register, value)
        try:
            written = await self._client.put(register, str(value), fencing_token=token)
        except KvError as error:
            return write_outcome_of(error)
        return Completion(EventType.OK, value, revision=written.header.revision)

    def _outcome(self, f: str, key: str, value: Value, completion: Completion) -> bool:
        """Record how the operation ended; False when its outcome is unknown."""
        self._recorder.complete(f, key, value, completion)
        if completion.type is EventType.INFO:
            self._recorder.retire()
            return False
        return True


async def _close(session: Session | None) -> None:
    if session is not None:
        with contextlib.suppress(KvError):
            await session.close()


async def _main(config: WorkerConfig) -> int:
    deadline_s = config.deadline_ns / _NS_PER_S
    client = await connect_client(config.endpoints, config.op_timeout_s, deadline_s)
    if client is None:
        print(f"worker {config.index}: no node answered before the deadline", file=sys.stderr)
        return 1
    try:
        await LockWorker(config, client, sys.stdout).run()
    finally:
        await client.close()
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m kvstore.jepsen.lockworker CONFIG_JSON (started by kvctl jepsen run)", file=sys.stderr)
        return 2
    return asyncio.run(_main(WorkerConfig.from_json(argv[0])))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
