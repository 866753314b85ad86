"""The applier of one partition: executes committed commands against the node's engine.

Everything here is deterministic (no clock, no randomness, no I/O beyond the engine): replicas
fed the same entries stage the same data, so they end byte-identical.

Per partition ``p`` the applier owns these keys (see `kvstore.statemachine.layout`):
``A p`` apply state, ``D p key`` user data, ``F p key`` fences, ``C p client`` dedup table.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import msgpack

from kvstore.raft.types import Entry, EntryType
from kvstore.statemachine.commands import (
    MAX_UINT64,
    CodecError,
    Command,
    Compare,
    CompareResult,
    CompareTarget,
    Delete,
    DeleteResult,
    ErrorCode,
    ErrorResult,
    Get,
    GetResult,
    KeyValue,
    Op,
    Put,
    PutResult,
    Result,
    Txn,
    TxnOp,
    TxnOpResult,
    TxnResult,
    check_command,
    decode_command,
    decode_result,
    encode_result,
)
from kvstore.statemachine.layout import (
    CLIENT_RECORD_HEADER,
    STORED_KV_HEADER,
    U64,
    client_prefix,
    decode_stored_kv,
    encode_stored_kv,
    fence_prefix,
)
from kvstore.storage.engine import Engine, WriteBatch
from kvstore.storage.errors import CorruptionError
from kvstore.storage.keys import apply_state_key, data_prefix, prefix_end

DEFAULT_MAX_DEDUP_CLIENTS = 4096
"""How many clients' last results a partition remembers. Part of the replicated behaviour:
every replica of a partition must use the same bound, or their dedup tables diverge."""

SNAPSHOT_FORMAT = 1

_KV_HEADER_SIZE = STORED_KV_HEADER.size
_CLIENT_HEADER_SIZE = CLIENT_RECORD_HEADER.size


def _encode_apply_state(applied_index: int) -> bytes:
    return msgpack.packb((applied_index,))


def _decode_apply_state(raw: bytes) -> int:
    try:
        (applied_index,) = msgpack.unpackb(raw, use_list=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise CorruptionError(f"stored apply state does not decode: {raw!r:.80}") from None
    if type(applied_index) is not int or applied_index < 0:
        raise CorruptionError(f"stored apply state has a bad applied index: {applied_index!r:.80}")
    return applied_index


def _clients_by_revision(records: Iterable[tuple[str, bytes]]) -> OrderedDict[str, int]:
    """client id -> last seq, least recently applied first (ties are impossible: one command
    per revision)."""
    loaded = []
    for client_id, record in records:
        seq, revision = CLIENT_RECORD_HEADER.unpack_from(record)
        loaded.append((revision, client_id, seq))
    loaded.sort()
    return OrderedDict((client_id, seq) for _, client_id, seq in loaded)


def _order(actual: bytes | int, expected: bytes | int) -> int:
    """-1, 0 or 1 as `actual` is less than, equal to or greater than `expected` (same type)."""
    return (actual > expected) - (actual < expected)  # type: ignore[operator]


class PartitionStateMachine:
    """The state machine of partition `partition_id` (the Raft group of the same id).

    Rules that bind the caller (the node):

    * `apply` and `restore` only STAGE writes into the batch they are given; the node writes
      that batch (synced) before it serves any read, acknowledges any result, or takes a
      snapshot that depends on them. `applied_index` and the dedup table in memory move as
      soon as writes are staged; if writing the batch fails, drop this object (and the
      engine's other in-memory views) and construct a new one over the engine.
    * Batches are written in the order they were handed to `apply`/`restore`. Writes staged
      in a batch stay visible to later `apply`/`restore` calls with the SAME batch (several
      calls per Ready cycle are fine); passing a different batch means the previous one was
      written.
    * `get`, `scan` and `snapshot_data` read the engine, i.e. what has been written.
    """

    def __init__(
        self, engine: Engine, partition_id: int, *, max_dedup_clients: int = DEFAULT_MAX_DEDUP_CLIENTS
    ) -> None:
        if max_dedup_clients < 1:
            raise ValueError(f"max_dedup_clients must be at least 1, got {max_dedup_clients}")
        self.partition_id = partition_id
        self._engine = engine
        self._max_dedup_clients = max_dedup_clients
        self._data_prefix = data_prefix(partition_id)
        self._fence_prefix = fence_prefix(partition_id)
        self._client_prefix = client_prefix(partition_id)
        self._apply_state_key = apply_state_key(partition_id)
        # Writes staged into `_staged_batch` and not yet on the engine: key -> value, None
        # for a delete.
        self._staged: dict[bytes, bytes | None] = {}
        self._staged_batch: WriteBatch | None = None

        raw_apply_state = engine.get(self._apply_state_key)
        self._applied_index = 0 if raw_apply_state is None else _decode_apply_state(raw_apply_state)
        prefix_length = len(self._client_prefix)
        self._clients = _clients_by_revision(
            (key[prefix_length:].decode(), record)
            for key, record in engine.iterate(self._client_prefix, prefix_end(self._client_prefix))
        )

    @property
    def applied_index(self) -> int:
        """The index of the last entry applied (staged), 0 before any."""
        return self._applied_index

    # -- applying ---------------------------------------------------------------------------

    def apply(self, batch: WriteBatch, entries: Iterable[Entry]) -> list[tuple[Entry, Result | None]]:
        """Apply committed `entries` of this partition's group, in order, staging into `batch`
        every change and the new apply state, so that the applied index reaches the disk
        atomically with the data it covers.

        Returns each applied entry with its command's result; None for an empty (no-op) entry
        or a non-NORMAL one, which only advance the applied index. Entries at or below the
        applied index are skipped (not returned); a gap raises ValueError. An entry whose data
        is not a command raises `CodecError`: skipping it would let replicas diverge, so the
        node must stop applying (and drop this object and the batch).
        """
        self._use_batch(batch)
        outcomes: list[tuple[Entry, Result | None]] = []
        applied = self._applied_index
        for entry in entries:
            index = entry.index
            if index <= applied:
                continue
            if index != applied + 1:
                raise ValueError(
                    f"partition {self.partition_id}: entry {index} follows applied index {applied}"
                )
            applied = index
            if entry.type != EntryType.NORMAL or not entry.data:
                outcomes.append((entry, None))
            else:
                outcomes.append((entry, self._apply_command(batch, index, decode_command(entry.data))))
        if applied != self._applied_index:
            self._applied_index = applied
            self._stage(batch, self._apply_state_key, _encode_apply_state(applied))
        return outcomes

    def _apply_command(self, batch: WriteBatch, revision: int, command: Command) -> Result:
        problem = check_command(command)
        client_id, seq = command.client_id, command.seq
        # A command with a malformed seq or without a client id is answered, not remembered.
        deduplicated = 0 < seq <= MAX_UINT64 and bool(client_id)
        if deduplicated:
            last_seq = self._clients.get(client_id)
            if last_seq is not None:
                if seq == last_seq:
                    return self._stored_result(client_id)
                if seq < last_seq:
                    return ErrorResult(
                        ErrorCode.INVALID_ARGUMENT,
                        f"request {seq} of client {client_id!r} is older than one already applied ({last_seq})",
                    )
        result = problem if problem is not None else self._execute(batch, revision, command.op)
        if deduplicated:
            self._remember(batch, client_id, seq, revision, result)
        return result

    def _execute(self, batch: WriteBatch, revision: int, op: Op) -> Result:
        if type(op) is Put:
            stale = self._stale_fence(op.key, op.fencing_token, {})
            return stale if stale is not None else self._put(batch, revision, op)
        if type(op) is Delete:
            stale = self._stale_fence(op.key, op.fencing_token, {})
            return stale if stale is not None else self._delete(batch, revision, op)
        if type(op) is Txn:
            return self._txn(batch, revision, op)
        raise TypeError(f"cannot execute {op!r:.80}")  # check_command refuses a top-level Get

    def _put(self, batch: WriteBatch, revision: int, op: Put) -> PutResult:
        key = self._data_prefix + op.key
        old = self._read(key)
        if old is None:
            create_revision, version = revision, 1
        else:
            create_revision, _, old_version, _ = STORED_KV_HEADER.unpack_from(old)
            version = old_version + 1
        self._stage(batch, key, encode_stored_kv(op.value, create_revision, revision, version, op.lease))
        if op.fencing_token:
            self._accept_fence(batch, op.key, op.fencing_token)
        prev = decode_stored_kv(op.key, old) if op.prev_kv and old is not None else None
        return PutResult(revision, prev)

    def _delete(self, batch: WriteBatch, revision: int, op: Delete) -> DeleteResult:
        key = self._data_prefix + op.key
        old = self._read(key)
        if op.fencing_token:
            self._accept_fence(batch, op.key, op.fencing_token)
        if old is None:
            return DeleteResult(revision, False, None)
        self._stage(batch, key, None)
        return DeleteResult(revision, True, decode_stored_kv(op.key, old) if op.prev_kv else None)

    def _txn(self, batch: WriteBatch, revision: int, txn: Txn) -> TxnResult | ErrorResult:
        succeeded = all(self._holds(compare) for compare in txn.compares)
        branch = txn.success if succeeded else txn.failure
        # Check every fence of the branch before writing anything, so that a stale token
        # rejects the whole transaction. Ops of the branch see each other's tokens.
        accepted: dict[bytes, int] = {}
        for op in branch:
            if type(op) is not Get and op.fencing_token:
                stale = self._stale_fence(op.key, op.fencing_token, accepted)
                if stale is not None:
                    return stale
        results: list[TxnOpResult] = []
        for op in branch:
            results.append(self._txn_op(batch, revision, op))
        return TxnResult(revision, succeeded, tuple(results))

    def _txn_op(self, batch: WriteBatch, revision: int, op: TxnOp) -> TxnOpResult:
        if type(op) is Put:
            return self._put(batch, revision, op)
        if type(op) is Delete:
            return self._delete(batch, revision, op)
        raw = self._read(self._data_prefix + op.key)
        return GetResult(None if raw is None else decode_stored_kv(op.key, raw))

    def _holds(self, compare: Compare) -> bool:
        raw = self._read(self._data_prefix + compare.key)
        if compare.target == CompareTarget.VALUE:
            if raw is None:
                return False
            order = _order(raw[_KV_HEADER_SIZE:], compare.value)
        else:
            if raw is None:
                actual = 0
            else:
                create_revision, mod_revision, version, _ = STORED_KV_HEADER.unpack_from(raw)
                if compare.target == CompareTarget.VERSION:
                    actual = version
                elif compare.target == CompareTarget.MOD_REVISION:
                    actual = mod_revision
                else:
                    actual = create_revision
            order = _order(actual, compare.number)
        relation = compare.result
        if relation == CompareResult.EQUAL:
            return order == 0
        if relation == CompareResult.NOT_EQUAL:
            return order != 0
        if relation == CompareResult.GREATER:
            return order > 0
        return order < 0

    # -- fences -----------------------------------------------------------------------------

    def _fence(self, user_key: bytes) -> int:
        raw = self._read(self._fence_prefix + user_key)
        return 0 if raw is None else U64.unpack(raw)[0]

    def _stale_fence(self, user_key: bytes, token: int, accepted: dict[bytes, int]) -> ErrorResult | None:
        """The rejection of a write of `user_key` with `token` (0: unfenced, never rejected),
        given the tokens `accepted` by earlier ops of the same transaction, which this records
        the token into. A token equal to the highest accepted one is accepted: the same lock
        holder may write many times."""
        if not token:
            return None
        highest = accepted.get(user_key)
        if highest is None:
            highest = self._fence(user_key)
        if token < highest:
            return ErrorResult(
                ErrorCode.STALE_FENCING_TOKEN,
                f"fencing token {token} is older than token {highest} already accepted for key {user_key!r}",
            )
        accepted[user_key] = token
        return None

    def _accept_fence(self, batch: WriteBatch, user_key: bytes, token: int) -> None:
        if token > self._fence(user_key):
            self._stage(batch, self._fence_prefix + user_key, U64.pack(token))

    # -- client dedup -----------------------------------------------------------------------

    def _client_key(self, client_id: str) -> bytes:
        return self._client_prefix + client_id.encode()

    def _stored_result(self, client_id: str) -> Result:
        record = self._read(self._client_key(client_id))
        if record is None:
            raise CorruptionError(f"partition {self.partition_id}: dedup record of {client_id!r} is missing")
        return decode_result(record[_CLIENT_HEADER_SIZE:])

    def _remember(self, batch: WriteBatch, client_id: str, seq: int, revision: int, result: Result) -> None:
        """Record `result` as client `client_id`'s last, evicting the least recently applied
        clients beyond the bound (an evicted client's retry is applied again)."""
        clients = self._clients
        if client_id in clients:
            clients.move_to_end(client_id)
        clients[client_id] = seq
        record = CLIENT_RECORD_HEADER.pack(seq, revision) + encode_result(result)
        self._stage(batch, self._client_key(client_id), record)
        while len(clients) > self._max_dedup_clients:
            evicted, _ = clients.popitem(last=False)
            self._stage(batch, self._client_key(evicted), None)

    # -- staging ----------------------------------------------------------------------------

    def _use_batch(self, batch: WriteBatch) -> None:
        if batch is not self._staged_batch:
            # A new batch: the previous one has been written, the engine shows its writes.
            self._staged = {}
            self._staged_batch = batch

    def _read(self, key: bytes) -> bytes | None:
        staged = self._staged
        if key in staged:
            return staged[key]
        return self._engine.get(key)

    def _stage(self, batch: WriteBatch, key: bytes, value: bytes | None) -> None:
        self._staged[key] = value
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)

    # -- reads ------------------------------------------------------------------------------

    def get(self, key: bytes) -> KeyValue | None:
        """The key as last written to the engine, None if absent."""
        raw = self._engine.get(self._data_prefix + key)
        return None if raw is None else decode_stored_kv(key, raw)

    def scan(self, start: bytes, end: bytes | None = None, limit: int = 0) -> tuple[list[KeyValue], bool]:
        """Keys `start` <= key < `end` in byte order, at most `limit` (0: no limit), and whether
        more keys follow in the range. `end` None or b"" (which no key is below) scans to the
        end of the partition."""
        prefix = self._data_prefix
        range_end = prefix_end(prefix) if not end else prefix + end
        prefix_length = len(prefix)
        found: list[KeyValue] = []
        for key, raw in self._engine.iterate(prefix + start, range_end):
            if limit and len(found) == limit:
                return found, True
            found.append(decode_stored_kv(key[prefix_length:], raw))
        return found, False

    # -- snapshots --------------------------------------------------------------------------

    def _owned_prefixes(self) -> tuple[bytes, bytes, bytes]:
        return self._data_prefix, self._fence_prefix, self._client_prefix

    def snapshot_data(self) -> bytes:
        """Everything of this partition as of one consistent read view: applied index, user
        data, fences and dedup table. Reads the engine, so call it after the batch covering
        the wanted index was written; the data records the index it is at."""
        with self._engine.read_view() as view:
            raw_apply_state = view.get(self._apply_state_key)
            applied_index = 0 if raw_apply_state is None else _decode_apply_state(raw_apply_state)
            sections = [
                [(key[len(prefix) :], value) for key, value in view.iterate(prefix, prefix_end(prefix))]
                for prefix in self._owned_prefixes()
            ]
        return msgpack.packb((SNAPSHOT_FORMAT, applied_index, *sections))

    def restore(self, batch: WriteBatch, data: bytes, index: int) -> None:
        """Stage replacing everything of this partition by the snapshot `data`, which must be
        at `index` (ValueError otherwise, or when `index` is below the applied index)."""
        applied_index, sections = _decode_snapshot(data)
        if applied_index != index:
            raise ValueError(f"snapshot data is at index {applied_index}, not {index}")
        if index < self._applied_index:
            raise ValueError(f"snapshot at {index} is older than the applied index {self._applied_index}")
        self._use_batch(batch)
        for prefix, pairs in zip(self._owned_prefixes(), sections, strict=True):
            replacement = {prefix + suffix: value for suffix, value in pairs}
            for old_key in sorted(self._keys_with(prefix) - replacement.keys()):
                self._stage(batch, old_key, None)
            for key, value in replacement.items():
                self._stage(batch, key, value)
        self._stage(batch, self._apply_state_key, _encode_apply_state(index))
        self._applied_index = index
        self._clients = _clients_by_revision((suffix.decode(), record) for suffix, record in sections[2])

    def bootstrap(self, batch: WriteBatch, index: int) -> None:
        """Stage the state of a brand-new, empty partition whose history starts after `index`
        (the cluster's bootstrap snapshot point). Only valid before anything was applied."""
        if self._applied_index != 0:
            raise ValueError(f"partition {self.partition_id} already applied up to {self._applied_index}")
        self._use_batch(batch)
        self._stage(batch, self._apply_state_key, _encode_apply_state(index))
        self._applied_index = index

    def _keys_with(self, prefix: bytes) -> set[bytes]:
        """Keys starting with `prefix` on the engine or staged (deleted ones included)."""
        keys = {key for key, _ in self._engine.iterate(prefix, prefix_end(prefix))}
        keys.update(key for key in self._staged if key.startswith(prefix))
        return keys


def _decode_snapshot(data: bytes) -> tuple[int, tuple[list[tuple[bytes, bytes]], ...]]:
    try:
        fields: tuple[Any, ...] = msgpack.unpackb(data, use_list=False)
        snapshot_format, applied_index, *sections = fields
        if snapshot_format != SNAPSHOT_FORMAT or len(sections) != 3 or type(applied_index) is not int:
            raise CodecError(f"not partition snapshot data (format {snapshot_format!r:.20})")
        checked = tuple([(suffix, value) for suffix, value in pairs] for pairs in sections)
    except CodecError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CodecError(f"not partition snapshot data: {exc}") from None
    if not all(
        type(suffix) is bytes and type(value) is bytes for pairs in checked for suffix, value in pairs
    ):
        raise CodecError("partition snapshot data has a key or value that is not bytes")
    return applied_index, checked
