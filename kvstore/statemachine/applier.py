"""The applier of one partition: executes committed commands against the node's engine.

Everything here is deterministic (no clock, no randomness, no I/O beyond the engine): replicas
fed the same entries stage the same data, so they end byte-identical.

Per partition ``p`` the applier owns these keys (see `kvstore.statemachine.layout`):
``A p`` apply state, ``D p key`` user data, ``F p key`` fences, ``C p client seq`` dedup table.

Client dedup keeps, per client, a window of the results of its most recent seqs rather than only
the last one: one client pipelines many requests, which may commit out of seq order, and
retries one after later ones were applied. A seq in the window is answered from it; one above
the window's lower edge that is not in it was never applied and is applied now; one at or
below the edge cannot be told apart and is refused.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from heapq import heappop, heappush
from typing import Any

import msgpack

from kvstore.raft.types import Entry, EntryType
from kvstore.statemachine.commands import (
    MAX_UINT64,
    CodecError,
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
    check_command_parts,
    decode_command_parts,
    decode_result,
    encode_result,
)
from kvstore.statemachine.layout import (
    CLIENT_STATE,
    CLIENT_STATE_SEQ,
    STORED_KV_HEADER,
    U64,
    client_prefix,
    decode_stored_kv,
    encode_stored_kv,
    fence_prefix,
    split_client_suffix,
)
from kvstore.storage.engine import Engine, WriteBatch
from kvstore.storage.errors import CorruptionError
from kvstore.storage.keys import apply_state_key, data_prefix, prefix_end

DEFAULT_MAX_DEDUP_CLIENTS = 4096
"""How many clients a partition remembers (least recently applied forgotten first).

This and the two bounds below are part of the replicated behaviour: every replica of a partition
must use the same values, or their dedup tables diverge."""

DEFAULT_DEDUP_WINDOW = 1024
"""How far below its highest applied seq a client's request may be and still be told apart:
about the most requests one client keeps in flight to one partition."""

DEFAULT_MAX_DEDUP_RESULTS = 65536
"""How many results a partition remembers over all its clients (oldest applied forgotten
first), so that memory and disk stay bounded however many clients fill their windows."""

# Format 2: the dedup table is a window per client (format 1 held one result per client).
SNAPSHOT_FORMAT = 2

_KV_HEADER_SIZE = STORED_KV_HEADER.size
_RESULT_HEADER_SIZE = U64.size
_STATE_SEQ_SUFFIX = U64.pack(CLIENT_STATE_SEQ)


def _encode_apply_state(applied_index: int, packer: msgpack.Packer) -> bytes:
    return packer.pack((applied_index,))


def _decode_apply_state(raw: bytes) -> int:
    try:
        (applied_index,) = msgpack.unpackb(raw, use_list=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise CorruptionError(f"stored apply state does not decode: {raw!r:.80}") from None
    if type(applied_index) is not int or applied_index < 0:
        raise CorruptionError(f"stored apply state has a bad applied index: {applied_index!r:.80}")
    return applied_index


@dataclass(slots=True)
class _ClientWindow:
    """What a partition remembers of one client. Mutable, unlike the records: it changes with
    every request of the client; it is stored as the client's state record plus one record per
    remembered seq, and `_load_dedup` rebuilds it from them."""

    client_id: str
    key_base: bytes  # the client's key prefix: key_base + U64 seq is one of its keys
    highest: int  # highest seq applied
    floor: int  # highest seq forgotten by the partition-wide bound (0: none)
    revision: int  # revision of the last request applied, which orders clients for eviction
    seqs: dict[int, int]  # remembered seq -> revision it was applied at
    # Heap of the remembered seqs, to evict the lowest in O(log n). It may still hold seqs the
    # partition-wide bound forgot (skipped when popped): no seq is remembered twice, as a
    # forgotten one is at or below `floor` or the window's edge and so is refused from then on.
    lowest: list[int]

    def edge(self, window: int) -> int:
        """The highest seq refused unless remembered."""
        return max(self.floor, self.highest - window)

    def state_record(self) -> bytes:
        return CLIENT_STATE.pack(self.highest, self.floor, self.revision)

    def pop_lowest(self) -> tuple[int, int]:
        """(seq, revision) of the lowest remembered seq, forgotten here."""
        while True:
            seq = heappop(self.lowest)
            revision = self.seqs.pop(seq, None)
            if revision is not None:
                return seq, revision

    def forget(self, seq: int) -> None:
        """Forget `seq` out of order (the partition-wide bound): seqs up to it are refused."""
        del self.seqs[seq]
        self.floor = max(self.floor, seq)
        # Bounds the seqs left in the heap after being forgotten here; amortised O(log n).
        if len(self.lowest) > 2 * len(self.seqs):
            self.lowest = sorted(self.seqs)


_Dedup = tuple[OrderedDict[str, _ClientWindow], OrderedDict[int, tuple[_ClientWindow, int]]]


def _load_dedup(prefix: bytes, records: Iterable[tuple[bytes, bytes]]) -> _Dedup:
    """The dedup table stored as `records` (key suffix after `prefix`, value): the clients,
    least recently applied first, and revision -> (client, seq) of every remembered result,
    oldest first. Both orders are by revision, as the applier builds them (ties are impossible:
    one command per revision), so a loaded table decides exactly as the one that was stored.
    ValueError when a record does not decode."""
    states: list[tuple[int, int, int, str]] = []
    results: list[tuple[int, str, int]] = []
    for suffix, value in records:
        client_id, seq = split_client_suffix(suffix)
        try:
            if seq == CLIENT_STATE_SEQ:
                highest, floor, revision = CLIENT_STATE.unpack(value)
                states.append((revision, highest, floor, client_id))
            else:
                results.append((U64.unpack_from(value)[0], client_id, seq))
        except struct.error:
            raise ValueError(f"dedup record of client {client_id!r:.80} seq {seq} is truncated") from None
    states.sort()
    clients: OrderedDict[str, _ClientWindow] = OrderedDict(
        (client_id, _ClientWindow(client_id, prefix + client_id.encode(), highest, floor, revision, {}, []))
        for revision, highest, floor, client_id in states
    )
    results.sort()
    remembered: OrderedDict[int, tuple[_ClientWindow, int]] = OrderedDict()
    for revision, client_id, seq in results:
        window = clients.get(client_id)
        if window is None:
            raise ValueError(f"dedup result of client {client_id!r:.80} seq {seq} has no client state")
        window.seqs[seq] = revision
        remembered[revision] = (window, seq)
    for window in clients.values():
        window.lowest = sorted(window.seqs)  # a sorted list is a heap
    return clients, remembered


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
        self,
        engine: Engine,
        partition_id: int,
        *,
        max_dedup_clients: int = DEFAULT_MAX_DEDUP_CLIENTS,
        dedup_window: int = DEFAULT_DEDUP_WINDOW,
        max_dedup_results: int = DEFAULT_MAX_DEDUP_RESULTS,
    ) -> None:
        for name, bound in (
            ("max_dedup_clients", max_dedup_clients),
            ("dedup_window", dedup_window),
            ("max_dedup_results", max_dedup_results),
        ):
            if bound < 1:
                raise ValueError(f"{name} must be at least 1, got {bound}")
        self.partition_id = partition_id
        self._engine = engine
        self._max_dedup_clients = max_dedup_clients
        self._dedup_window = dedup_window
        self._max_dedup_results = max_dedup_results
        self._data_prefix = data_prefix(partition_id)
        self._fence_prefix = fence_prefix(partition_id)
        self._client_prefix = client_prefix(partition_id)
        self._apply_state_key = apply_state_key(partition_id)
        self._packer = msgpack.Packer()  # reused: `msgpack.packb` builds one per call
        # Writes staged into `_staged_batch` and not yet on the engine: key -> value, None
        # for a delete.
        self._staged: dict[bytes, bytes | None] = {}
        self._staged_batch: WriteBatch | None = None
        # Clients whose state changed during the current `apply`, by client id: their state
        # records are staged once, at its end, rather than once per command (the batch is
        # written atomically, so the stored state is the same).
        self._unstaged_states: dict[str, _ClientWindow] = {}

        raw_apply_state = engine.get(self._apply_state_key)
        self._applied_index = 0 if raw_apply_state is None else _decode_apply_state(raw_apply_state)
        prefix_length = len(self._client_prefix)
        try:
            self._clients, self._remembered = _load_dedup(
                self._client_prefix,
                (
                    (key[prefix_length:], record)
                    for key, record in engine.iterate(self._client_prefix, prefix_end(self._client_prefix))
                ),
            )
        except ValueError as exc:
            raise CorruptionError(f"partition {partition_id}: {exc}") from None

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
                client_id, seq, op = decode_command_parts(entry.data)
                outcomes.append((entry, self._apply_command(batch, index, client_id, seq, op)))
        self._stage_client_states(batch)
        if applied != self._applied_index:
            self._applied_index = applied
            self._stage(batch, self._apply_state_key, _encode_apply_state(applied, self._packer))
        return outcomes

    def _apply_command(self, batch: WriteBatch, revision: int, client_id: str, seq: int, op: Op) -> Result:
        problem = check_command_parts(client_id, seq, op)
        # A command with a malformed seq or without a client id is answered, not remembered.
        deduplicated = 0 < seq <= MAX_UINT64 and bool(client_id)
        window = None
        if deduplicated:
            window = self._clients.get(client_id)
            # A seq above the client's highest applied one is new: the common case, which needs
            # no look into the window (every remembered seq and the edge are at most `highest`).
            if window is not None and seq <= window.highest:
                if seq in window.seqs:
                    return self._stored_result(window, seq)
                edge = window.edge(self._dedup_window)
                if seq <= edge:
                    # Not remembered, yet it may have been applied and forgotten: applying it
                    # again could apply it twice. The refusal itself is not remembered.
                    return ErrorResult(
                        ErrorCode.INVALID_ARGUMENT,
                        f"request seq {seq} of client {client_id!r} is too old to tell whether it "
                        f"was applied; this partition remembers only seqs above {edge} for that "
                        f"client (highest applied {window.highest}); retry it as a new request",
                    )
        result = problem if problem is not None else self._execute(batch, revision, op)
        if deduplicated:
            self._remember(batch, client_id, window, seq, revision, result)
        return result

    def _execute(self, batch: WriteBatch, revision: int, op: Op) -> Result:
        if type(op) is Put:
            stale = self._stale_fence(op.key, op.fencing_token, {}) if op.fencing_token else None
            return stale if stale is not None else self._put(batch, revision, op)
        if type(op) is Delete:
            stale = self._stale_fence(op.key, op.fencing_token, {}) if op.fencing_token else None
            return stale if stale is not None else self._delete(batch, revision, op)
        if type(op) is Txn:
            return self._txn(batch, revision, op)
        raise TypeError(f"cannot execute {op!r:.80}")  # check_command_parts refuses a top-level Get

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

    def _stored_result(self, window: _ClientWindow, seq: int) -> Result:
        record = self._read(window.key_base + U64.pack(seq))
        if record is None:
            raise CorruptionError(
                f"partition {self.partition_id}: dedup record of {window.client_id!r} seq {seq} is missing"
            )
        return decode_result(record[_RESULT_HEADER_SIZE:])

    def _remember(
        self,
        batch: WriteBatch,
        client_id: str,
        window: _ClientWindow | None,
        seq: int,
        revision: int,
        result: Result,
    ) -> None:
        """Record `result` of client `client_id`'s `seq` (not remembered, above the window's
        edge), applied at `revision`, then enforce the bounds: the client's window (its lowest
        seq goes), the number of clients (the least recently applied go; an evicted client's
        retry is applied again) and the results of the partition (the oldest applied go; their
        seqs become the floor of their client's window)."""
        clients = self._clients
        remembered = self._remembered
        if window is None:
            window = _ClientWindow(
                client_id, self._client_prefix + client_id.encode(), seq, 0, revision, {}, []
            )
            clients[client_id] = window
        else:
            clients.move_to_end(client_id)
            window.revision = revision
            if seq > window.highest:
                window.highest = seq
        window.seqs[seq] = revision
        heappush(window.lowest, seq)
        remembered[revision] = (window, seq)
        record = U64.pack(revision) + encode_result(result, self._packer)
        self._stage(batch, window.key_base + U64.pack(seq), record)

        # The remembered seqs are distinct and at most `highest`: with more than `window` of
        # them the lowest is at or below highest - window, the edge, which refuses it from now
        # on without raising the floor. `seq` was above the edge, so it is never the one to go.
        while len(window.seqs) > self._dedup_window:
            lowest, lowest_revision = window.pop_lowest()
            del remembered[lowest_revision]
            self._stage(batch, window.key_base + U64.pack(lowest), None)

        unstaged_states = self._unstaged_states
        unstaged_states[client_id] = window
        while len(clients) > self._max_dedup_clients:
            evicted_id, evicted = clients.popitem(last=False)
            for evicted_seq, evicted_revision in sorted(evicted.seqs.items()):
                del remembered[evicted_revision]
                self._stage(batch, evicted.key_base + U64.pack(evicted_seq), None)
            unstaged_states.pop(evicted_id, None)
            self._stage(batch, evicted.key_base + _STATE_SEQ_SUFFIX, None)

        while len(remembered) > self._max_dedup_results:
            _, (owner, forgotten) = remembered.popitem(last=False)
            owner.forget(forgotten)
            self._stage(batch, owner.key_base + U64.pack(forgotten), None)
            unstaged_states[owner.client_id] = owner

    def _stage_client_states(self, batch: WriteBatch) -> None:
        """Stage the state record of every client whose state changed since the last call."""
        for window in self._unstaged_states.values():
            self._stage(batch, window.key_base + _STATE_SEQ_SUFFIX, window.state_record())
        self._unstaged_states.clear()

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
        try:
            clients, remembered = _load_dedup(self._client_prefix, sections[2])
        except ValueError as exc:
            raise CodecError(f"partition snapshot data has a bad dedup table: {exc}") from None
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
        self._stage(batch, self._apply_state_key, _encode_apply_state(index, self._packer))
        self._applied_index = index
        self._clients, self._remembered = clients, remembered

    def bootstrap(self, batch: WriteBatch, index: int) -> None:
        """Stage the state of a brand-new, empty partition whose history starts after `index`
        (the cluster's bootstrap snapshot point). Only valid before anything was applied."""
        if self._applied_index != 0:
            raise ValueError(f"partition {self.partition_id} already applied up to {self._applied_index}")
        self._use_batch(batch)
        self._stage(batch, self._apply_state_key, _encode_apply_state(index, self._packer))
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
