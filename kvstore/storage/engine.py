"""An ordered byte-string key-value engine: the protocol, an in-memory and a LevelDB implementation.

A node keeps everything (every group's Raft log, hard state and snapshot metadata, applied state
and user data) in ONE engine, so that one atomic write batch can cover all of them.

Rules every implementation keeps:

* keys and values are `bytes`; iteration is in unsigned byte order; `end` is exclusive;
* `write(batch, sync=...)` applies the whole batch or nothing. With `sync=True` the batch is on
  stable storage when `write` returns, which is what lets a Raft node send a message that
  depends on it. An unsynced write may be lost by a machine crash (never partially);
* an iterator and a read view see the state as of the moment they were created, whatever is
  written later;
* after `close()`, every operation raises `EngineClosedError`;
* an engine may be used from several threads (a node writes batches from a worker thread while
  its event loop reads); readers never see part of a batch.
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_left
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Protocol, Self, cast

import plyvel

from kvstore.storage.errors import CorruptionError, DataDirLockedError, EngineClosedError, StorageError


class WriteBatch(Protocol):
    """Puts and deletes staged in order; nothing is visible until `Engine.write`."""

    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...

    def __len__(self) -> int:
        """Number of staged operations."""
        ...


class ReadView(Protocol):
    """A consistent point-in-time view of an engine (a LevelDB snapshot). Close it when done:
    an open view pins old versions of the data."""

    def get(self, key: bytes) -> bytes | None: ...

    def iterate(
        self, start: bytes, end: bytes | None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class Engine(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def iterate(
        self, start: bytes, end: bytes | None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs with start <= key < end (end None: to the last key), ascending or,
        with `reverse`, descending."""
        ...

    def new_batch(self) -> WriteBatch:
        """An empty batch for this engine; write it at most once, with `write`."""
        ...

    def write(self, batch: WriteBatch, *, sync: bool) -> None:
        """Apply `batch` atomically; durable on return when `sync`. A failure raises
        `StorageError`, after which the node must stop: what reached the disk is unknown."""
        ...

    def read_view(self) -> ReadView: ...

    def approximate_size(self) -> int:
        """Roughly how many bytes the stored data takes (for metrics and placement hints)."""
        ...

    def close(self) -> None:
        """Release the engine (and, for LevelDB, the data directory's lock). Idempotent."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def _check_bytes(key: bytes, value: bytes | None = None) -> None:
    # Checked when staging, so that applying a batch later cannot fail half-way.
    if type(key) is not bytes:
        raise TypeError(f"keys must be bytes, not {type(key).__name__}")
    if value is not None and type(value) is not bytes:
        raise TypeError(f"values must be bytes, not {type(value).__name__}")


def _check_unwritten(written: bool) -> None:
    if written:
        raise ValueError("this write batch has already been written; start a new one")


# -- in memory -----------------------------------------------------------------------------


class MemoryWriteBatch:
    """A `WriteBatch` of a `MemoryEngine`: the staged operations, in order."""

    def __init__(self, owner: MemoryEngine) -> None:
        self.owner = owner
        self.operations: list[tuple[bytes, bytes | None]] = []  # value None: delete
        self.written = False

    def put(self, key: bytes, value: bytes) -> None:
        _check_bytes(key, value)
        self.operations.append((key, value))

    def delete(self, key: bytes) -> None:
        _check_bytes(key)
        self.operations.append((key, None))

    def __len__(self) -> int:
        return len(self.operations)


def _iterate_sorted(
    keys: list[bytes], values: dict[bytes, bytes], start: bytes, end: bytes | None, reverse: bool
) -> Iterator[tuple[bytes, bytes]]:
    lo = bisect_left(keys, start)
    hi = len(keys) if end is None else bisect_left(keys, end)
    positions = range(hi - 1, lo - 1, -1) if reverse else range(lo, hi)
    for position in positions:
        key = keys[position]
        yield key, values[key]


class MemoryReadView:
    """A frozen view of a `MemoryEngine`: it holds the engine's structures as they were, which the
    engine copies before its next write instead of changing them."""

    def __init__(self, owner: MemoryEngine, keys: list[bytes], values: dict[bytes, bytes]) -> None:
        self._owner = owner
        self._keys = keys
        self._values = values
        self._closed = False

    def _check_open(self) -> None:
        if self._closed or self._owner.closed:
            raise EngineClosedError("read view is closed")

    def get(self, key: bytes) -> bytes | None:
        self._check_open()
        return self._values.get(key)

    def iterate(
        self, start: bytes, end: bytes | None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        self._check_open()
        return _iterate_sorted(self._keys, self._values, start, end, reverse)

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class MemoryEngine:
    """An `Engine` in a sorted list of keys plus a dict, for tests and the simulator.

    Iterators and read views share the current list and dict; the first write after one was
    handed out copies them (copy-on-write), so what was handed out never changes. A lock makes
    each write atomic for readers in other threads. `sync` is accepted and has no effect:
    nothing here survives the process anyway.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: list[bytes] = []
        self._values: dict[bytes, bytes] = {}
        self._shared = False
        self._size = 0
        self.closed = False

    def _check_open(self) -> None:
        if self.closed:
            raise EngineClosedError("in-memory engine is closed")

    def _share(self) -> tuple[list[bytes], dict[bytes, bytes]]:
        self._shared = True
        return self._keys, self._values

    def get(self, key: bytes) -> bytes | None:
        with self._lock:
            self._check_open()
            return self._values.get(key)

    def iterate(
        self, start: bytes, end: bytes | None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        with self._lock:
            self._check_open()
            keys, values = self._share()
        return _iterate_sorted(keys, values, start, end, reverse)

    def new_batch(self) -> MemoryWriteBatch:
        self._check_open()
        return MemoryWriteBatch(self)

    def write(self, batch: WriteBatch, *, sync: bool) -> None:
        if not isinstance(batch, MemoryWriteBatch) or batch.owner is not self:
            raise ValueError("the write batch was not made by this engine")
        with self._lock:
            self._check_open()
            _check_unwritten(batch.written)
            batch.written = True
            self._apply(batch.operations)

    def _apply(self, operations: list[tuple[bytes, bytes | None]]) -> None:
        if self._shared:
            self._keys = list(self._keys)
            self._values = dict(self._values)
            self._shared = False
        keys, values = self._keys, self._values
        for key, value in operations:
            old = values.get(key)
            if value is not None:
                if old is None:
                    keys.insert(bisect_left(keys, key), key)
                    self._size += len(key) + len(value)
                else:
                    self._size += len(value) - len(old)
                values[key] = value
            elif old is not None:
                del keys[bisect_left(keys, key)]
                del values[key]
                self._size -= len(key) + len(old)

    def read_view(self) -> MemoryReadView:
        with self._lock:
            self._check_open()
            keys, values = self._share()
        return MemoryReadView(self, keys, values)

    def approximate_size(self) -> int:
        """Bytes of the live keys and values."""
        with self._lock:
            self._check_open()
            return self._size

    def close(self) -> None:
        with self._lock:
            self.closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# -- LevelDB -------------------------------------------------------------------------------

_LOCK_FAILURE_PREFIX = "IO error: lock "
_LOCK_HELD_BY_THIS_PROCESS = "already held by process"
# Files that hold data: tables (.ldb; .sst in old versions) and the write-ahead log.
_DATA_FILE_SUFFIXES = (".ldb", ".sst", ".log")


def _one_line(error: BaseException) -> str:
    text = error.args[0] if error.args else str(error)
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return " ".join(str(text).split())


def _damaged_file(path: str, message: str) -> str:
    """The file of LevelDB directory `path` that `message` (a LevelDB error) is about, as far as
    LevelDB says: its messages name a table or log file by path, the manifest as "descriptor",
    and a damaged block of a table not at all."""
    if path in message:
        return ""
    if "CURRENT" in message:
        return os.path.join(path, "CURRENT")
    if "descriptor" in message or "MANIFEST" in message:
        try:
            with open(os.path.join(path, "CURRENT")) as current:
                return os.path.join(path, current.read().strip())
        except OSError:
            return os.path.join(path, "MANIFEST-*")
    return "one of its table files"


def _storage_failure(path: str, exc: BaseException) -> StorageError:
    """A LevelDB error met while reading, as the storage error to raise."""
    message = _one_line(exc)
    if isinstance(exc, plyvel.CorruptionError):
        damaged = _damaged_file(path, message)
        return CorruptionError(f"data directory {path} is corrupt{f' ({damaged})' if damaged else ''}: {message}")
    return StorageError(f"read from data directory {path} failed: {message}")


def _checked(path: str, iterator: Iterator[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
    # LevelDB finds a damaged block only when an iterator reaches it.
    try:
        yield from iterator
    except plyvel.Error as exc:
        raise _storage_failure(path, exc) from None


class LevelDBWriteBatch:
    """A `WriteBatch` of a `LevelDBEngine`, staged in an unsynced plyvel batch."""

    # plyvel ships no type information, hence `Any` for its objects.
    def __init__(self, owner: LevelDBEngine, staged: Any) -> None:
        self.owner = owner
        self.staged = staged
        self.count = 0
        self.written = False

    def put(self, key: bytes, value: bytes) -> None:
        self.staged.put(key, value)
        self.count += 1

    def delete(self, key: bytes) -> None:
        self.staged.delete(key)
        self.count += 1

    def __len__(self) -> int:
        return self.count


class LevelDBReadView:
    """A LevelDB snapshot."""

    def __init__(self, path: str, snapshot: Any) -> None:
        self._path = path
        self._snapshot = snapshot

    def get(self, key: bytes) -> bytes | None:
        try:
            return cast(bytes | None, self._snapshot.get(key))
        except RuntimeError:
            raise EngineClosedError("read view is closed") from None
        except plyvel.Error as exc:
            raise _storage_failure(self._path, exc) from None

    def iterate(
        self, start: bytes, end: bytes | None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        try:
            return _checked(self._path, self._snapshot.iterator(start=start, stop=end, reverse=reverse))
        except RuntimeError:
            raise EngineClosedError("read view is closed") from None

    def close(self) -> None:
        self._snapshot.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class LevelDBEngine:
    """An `Engine` over one LevelDB directory (plyvel). One process at a time may open a
    directory: LevelDB's LOCK file is held while the engine is open, and a second opener gets
    `DataDirLockedError` instead of sharing (and corrupting) the files.

    The block cache keeps hot table blocks in memory; the bloom filter spares a disk read for
    most gets of absent keys. Their sizes bound most of a node's native memory: the block cache,
    and up to two write buffers (one filling, one being written to a table). A soak of puts
    (benchmarks/RESULTS.md) settled at ~165 MB per node with 64 MiB and 16 MiB, ~120 MB with
    16 MiB and 8 MiB; the OS page cache still holds the table files.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create_if_missing: bool = True,
        block_cache_bytes: int = 16 << 20,
        write_buffer_bytes: int = 8 << 20,
        bloom_filter_bits: int = 10,
    ) -> None:
        self.path = os.fspath(path)
        try:
            if create_if_missing:
                os.makedirs(self.path, exist_ok=True)
            self._db = plyvel.DB(
                self.path,
                create_if_missing=create_if_missing,
                lru_cache_size=block_cache_bytes,
                write_buffer_size=write_buffer_bytes,
                bloom_filter_bits=bloom_filter_bits,
            )
        except plyvel.IOError as exc:
            message = _one_line(exc)
            if message.startswith(_LOCK_FAILURE_PREFIX):
                same_process = message.endswith(_LOCK_HELD_BY_THIS_PROCESS)
                raise DataDirLockedError(self.path, same_process=same_process) from None
            raise StorageError(f"cannot open data directory {self.path}: {message}") from None
        except plyvel.CorruptionError as exc:
            raise _storage_failure(self.path, exc) from None
        except (plyvel.Error, OSError) as exc:
            raise StorageError(f"cannot open data directory {self.path}: {_one_line(exc)}") from None

    def _closed_error(self) -> EngineClosedError:
        return EngineClosedError(f"engine for data directory {self.path} is closed")

    def get(self, key: bytes) -> bytes | None:
        try:
            return cast(bytes | None, self._db.get(key))
        except RuntimeError:
            raise self._closed_error() from None
        except plyvel.Error as exc:
            raise _storage_failure(self.path, exc) from None

    def iterate(
        self, start: bytes, end: bytes | None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        try:
            return _checked(self.path, self._db.iterator(start=start, stop=end, reverse=reverse))
        except RuntimeError:
            raise self._closed_error() from None

    def new_batch(self) -> LevelDBWriteBatch:
        try:
            return LevelDBWriteBatch(self, self._db.write_batch())
        except RuntimeError:
            raise self._closed_error() from None

    def write(self, batch: WriteBatch, *, sync: bool) -> None:
        if not isinstance(batch, LevelDBWriteBatch) or batch.owner is not self:
            raise ValueError("the write batch was not made by this engine")
        _check_unwritten(batch.written)
        try:
            if sync:
                # plyvel fixes `sync` when a batch is made; copying the staged operations into a
                # synced batch (a memcpy in LevelDB) lets the caller decide at write time.
                synced = self._db.write_batch(sync=True)
                synced.append(batch.staged)
                synced.write()
            else:
                batch.staged.write()
        except RuntimeError:
            raise self._closed_error() from None
        except plyvel.Error as exc:
            raise StorageError(f"write to data directory {self.path} failed: {_one_line(exc)}") from None
        batch.written = True

    def read_view(self) -> LevelDBReadView:
        try:
            return LevelDBReadView(self.path, self._db.snapshot())
        except RuntimeError:
            raise self._closed_error() from None

    def approximate_size(self) -> int:
        """Bytes of the data directory's table and write-ahead log files."""
        if self._db.closed:
            raise self._closed_error()
        total = 0
        with os.scandir(self.path) as entries:
            for entry in entries:
                if not entry.name.endswith(_DATA_FILE_SUFFIXES):
                    continue
                try:
                    total += entry.stat().st_size
                except FileNotFoundError:
                    continue  # removed by a background compaction since the listing
        return total

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
