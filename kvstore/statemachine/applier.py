"""The applier of one partition: executes committed commands against the node's engine.

Everything here is deterministic (no clock, no randomness, no I/O beyond the engine): replicas
fed the same entries stage the same data, so they end byte-identical.

Per partition ``p`` the applier owns these keys (see `kvstore.statemachine.layout`):
``A p`` apply state, ``D p key`` user data, ``F p key`` fences, ``C p client seq`` dedup table,
``B p`` the bytes its user data takes (what the space quota counts), staged with the apply state.

Client dedup keeps, per client, a window of the results of its most recent seqs rather than only
the last one: one client pipelines many requests, which may commit out of seq order, and
retries one after later ones were applied. A seq in the window is answered from it; one above
the window's lower edge that is not in it was never applied and is applied now; one at or
below the edge cannot be told apart and is refused.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from heapq import heappop, heappush

from google.protobuf.message import DecodeError

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb.internal_pb2 import LogCommand, LogResponse
from kvstore.codec import (
    CodecError,
    Encoder,
    decode_client_state,
    decode_dedup_result,
    decode_partition_snapshot,
    decode_snapshot_meta,
    encode_client_state,
    encode_dedup_result,
)
from kvstore.errors import ErrorCode
from kvstore.raft.types import ConfChange, Entry, EntryType, Snapshot, SnapshotMeta
from kvstore.statemachine.commands import WriteRequest, WriteResponse, check_command
from kvstore.statemachine.layout import (
    CLIENT_STATE_SEQ,
    STORED_KV_HEADER,
    U64,
    client_prefix,
    encode_stored_kv,
    fence_prefix,
    fill_kv,
    split_client_suffix,
    stored_bytes_key,
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

_KV_HEADER_SIZE = STORED_KV_HEADER.size
_STATE_SEQ_SUFFIX = U64.pack(CLIENT_STATE_SEQ)
_VALUE, _VERSION, _MOD = pb.Compare.VALUE, pb.Compare.VERSION, pb.Compare.MOD_REVISION
_EQUAL, _NOT_EQUAL, _GREATER = pb.Compare.EQUAL, pb.Compare.NOT_EQUAL, pb.Compare.GREATER


def _error_response(request: WriteRequest, code: ErrorCode, message: str) -> WriteResponse:
    """The answer of `request`'s kind that refuses it with `code`."""
    error = pb.Error(code=code.value, message=message)
    if isinstance(request, pb.PutRequest):
        return pb.PutResponse(error=error)
    if isinstance(request, pb.DeleteRequest):
        return pb.DeleteResponse(error=error)
    return pb.TxnResponse(error=error)


def _log_response(response: WriteResponse) -> LogResponse:
    if isinstance(response, pb.PutResponse):
        return LogResponse(put=response)
    if isinstance(response, pb.DeleteResponse):
        return LogResponse(delete=response)
    return LogResponse(txn=response)


def _answer_in(stored: LogResponse, request: WriteRequest) -> WriteResponse | None:
    """The response `stored` holds if it answers a request of `request`'s kind, else None."""
    if isinstance(request, pb.PutRequest):
        return stored.put if stored.HasField("put") else None
    if isinstance(request, pb.DeleteRequest):
        return stored.delete if stored.HasField("delete") else None
    return stored.txn if stored.HasField("txn") else None


def _command(partition: int, index: int, data: bytes) -> WriteRequest:
    """The request carried by the entry at `index`; `CodecError` if its data is not one."""
    try:
        command = LogCommand.FromString(data)
    except DecodeError as exc:
        raise CodecError(f"partition {partition}: entry {index} is not a LogCommand: {exc}") from None
    kind = command.WhichOneof("command")
    if kind == "put":
        return command.put
    if kind == "delete":
        return command.delete
    if kind == "txn":
        return command.txn
    raise CodecError(f"partition {partition}: entry {index} holds no command this node knows")


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
        return encode_client_state(self.highest, self.floor, self.revision)

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


def _data_bytes(pairs: Iterable[tuple[bytes, bytes]], key_prefix_length: int) -> int:
    """The bytes of user data (key, stored value) pairs whose keys carry `key_prefix_length`
    bytes of prefix."""
    return sum(len(key) - key_prefix_length + len(value) for key, value in pairs)


_Dedup = tuple[OrderedDict[str, _ClientWindow], OrderedDict[int, tuple[_ClientWindow, int]]]


def _load_dedup(prefix: bytes, records: Iterable[tuple[bytes, bytes]]) -> _Dedup:
    """The dedup table stored as `records` (key suffix after `prefix`, value): the clients,
    least recently applied first, and revision -> (client, seq) of every remembered result,
    oldest first. Both orders are by revision, as the applier builds them (ties are impossible:
    one command per revision), so a loaded table decides exactly as the one that was stored.
    ValueError (or its subclass `CodecError`) when a record does not decode."""
    states: list[tuple[int, int, int, str]] = []
    results: list[tuple[int, str, int]] = []
    for suffix, value in records:
        client_id, seq = split_client_suffix(suffix)
        if seq == CLIENT_STATE_SEQ:
            highest, floor, revision = decode_client_state(value)
            states.append((revision, highest, floor, client_id))
        else:
            results.append((decode_dedup_result(value)[0], client_id, seq))
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


class PartitionStateMachine:
    """The state machine of partition `partition_id` (the Raft group of the same id).

    Rules that bind the caller (the node):

    * `apply`, `restore` and `bootstrap` only STAGE writes into the batch they are given; the
      node writes that batch before it serves any read, acknowledges any response, or takes a
      snapshot that depends on them. The apply state and the dedup table in memory move as
      soon as writes are staged; if writing the batch fails, drop this object (and the
      engine's other in-memory views) and construct a new one over the engine.
    * Batches are written in the order they were handed to `apply`/`restore`. Writes staged
      in a batch stay visible to later `apply`/`restore` calls with the SAME batch (several
      calls per Ready cycle are fine); passing a different batch means the previous one was
      written.
    * `get`, `scan` and `snapshot` read the engine, i.e. what has been written.
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
        self._stored_bytes_key = stored_bytes_key(partition_id)
        self._encoder = Encoder()
        # Writes staged into `_staged_batch` and not yet on the engine: key -> value, None
        # for a delete.
        self._staged: dict[bytes, bytes | None] = {}
        self._staged_batch: WriteBatch | None = None
        # Clients whose state changed during the current `apply`, by client id: their state
        # records are staged once, at its end, rather than once per command (the batch is
        # written atomically, so the stored state is the same).
        self._unstaged_states: dict[str, _ClientWindow] = {}

        raw_apply_state = engine.get(self._apply_state_key)
        prefix_length = len(self._client_prefix)
        try:
            applied = SnapshotMeta() if raw_apply_state is None else decode_snapshot_meta(raw_apply_state)
            self._clients, self._remembered = _load_dedup(
                self._client_prefix,
                (
                    (key[prefix_length:], record)
                    for key, record in engine.iterate(self._client_prefix, prefix_end(self._client_prefix))
                ),
            )
        except ValueError as exc:
            raise CorruptionError(f"partition {partition_id}: {exc}") from None
        # The apply state: the last entry applied (staged), its term and the configuration as of
        # it, i.e. the metadata of a snapshot taken now.
        self._applied_index = applied.index
        self._applied_term = applied.term
        self._conf_state = applied.conf_state
        raw_stored_bytes = engine.get(self._stored_bytes_key)
        # Absent: a partition that never applied anything, or a data dir from before the count.
        self._stored_bytes: int = (
            _data_bytes(engine.iterate(self._data_prefix, prefix_end(self._data_prefix)), len(self._data_prefix))
            if raw_stored_bytes is None else U64.unpack(raw_stored_bytes)[0]
        )

    @property
    def applied_index(self) -> int:
        """The index of the last entry applied (staged), 0 before any."""
        return self._applied_index

    @property
    def applied(self) -> SnapshotMeta:
        """The applied index, its term and the configuration (voters, learners) as of it."""
        return SnapshotMeta(self._applied_index, self._applied_term, self._conf_state)

    @property
    def stored_bytes(self) -> int:
        """The bytes of this partition's keys and stored values, as applied (staged): what the
        space quota counts. Deleting a key takes its bytes off at once, whatever LevelDB keeps
        on disk until a compaction reaches it."""
        return self._stored_bytes

    # -- applying ---------------------------------------------------------------------------

    def apply(self, batch: WriteBatch, entries: Iterable[Entry]) -> list[tuple[Entry, WriteResponse | None]]:
        """Apply committed `entries` of this partition's group, in order, staging into `batch`
        every change and the new apply state, so that the apply state reaches the disk
        atomically with the data it covers.

        Returns each applied entry with its command's response (header.revision and error
        filled; the caller fills the rest of the header); None for an empty (no-op) entry or a
        CONF_CHANGE one, whose change is applied to the configuration kept in the apply state.
        Entries at or below the applied index are skipped (not returned); a gap raises
        ValueError. An entry whose data is not a command raises `CodecError`: skipping it would
        let replicas diverge, so the node must stop applying (and drop this object and the
        batch).
        """
        self._use_batch(batch)
        outcomes: list[tuple[Entry, WriteResponse | None]] = []
        applied, term = self._applied_index, self._applied_term
        for entry in entries:
            index = entry.index
            if index <= applied:
                continue
            if index != applied + 1:
                raise ValueError(f"partition {self.partition_id}: entry {index} follows applied index {applied}")
            applied, term = index, entry.term
            if entry.type is EntryType.NORMAL and entry.data:
                request = _command(self.partition_id, index, entry.data)
                outcomes.append((entry, self._apply_command(batch, index, request)))
            else:
                if entry.type is EntryType.CONF_CHANGE:
                    self._conf_state = self._conf_state.apply(ConfChange.decode(entry.data))
                outcomes.append((entry, None))
        self._stage_client_states(batch)
        if applied != self._applied_index:
            self._set_applied(batch, SnapshotMeta(applied, term, self._conf_state))
        return outcomes

    def _apply_command(self, batch: WriteBatch, revision: int, request: WriteRequest) -> WriteResponse:
        header = request.header
        client_id, seq = header.client_id, header.request_seq
        # A command without a client id is answered, not remembered (seq 0 turns dedup off).
        deduplicated = seq > 0 and bool(client_id)
        window = None
        if deduplicated:
            window = self._clients.get(client_id)
            # A seq above the client's highest applied one is new: the common case, which needs
            # no look into the window (every remembered seq and the edge are at most `highest`).
            if window is not None and seq <= window.highest:
                if seq in window.seqs:
                    return self._stored_response(window, seq, request)
                edge = window.edge(self._dedup_window)
                if seq <= edge:
                    # Not remembered, yet it may have been applied and forgotten: applying it
                    # again could apply it twice. The refusal itself is not remembered.
                    return _error_response(
                        request,
                        ErrorCode.INVALID_ARGUMENT,
                        f"request seq {seq} of client {client_id!r} is too old to tell whether it "
                        f"was applied; this partition remembers only seqs above {edge} for that "
                        f"client (highest applied {window.highest}); retry it as a new request",
                    )
        problem = check_command(request)
        response = (
            self._execute(batch, revision, request)
            if problem is None
            else _error_response(request, ErrorCode.INVALID_ARGUMENT, problem)
        )
        if deduplicated:
            self._remember(batch, client_id, window, seq, revision, response)
        return response

    def _execute(self, batch: WriteBatch, revision: int, request: WriteRequest) -> WriteResponse:
        if isinstance(request, pb.TxnRequest):
            return self._txn(batch, revision, request)
        if request.fencing_token:
            stale = self._stale_fence(request.key, request.fencing_token, {})
            if stale is not None:
                return _error_response(request, ErrorCode.STALE_FENCING_TOKEN, stale)
        if isinstance(request, pb.PutRequest):
            put = pb.PutResponse()
            self._put(batch, revision, request, put)
            put.header.revision = revision
            return put
        delete = pb.DeleteResponse()
        self._delete(batch, revision, request, delete)
        delete.header.revision = revision
        return delete

    def _put(self, batch: WriteBatch, revision: int, op: pb.PutRequest, response: pb.PutResponse) -> None:
        key = self._data_prefix + op.key
        old = self._read(key)
        if old is None:
            create_revision, version = revision, 1
        else:
            create_revision, _, old_version, _ = STORED_KV_HEADER.unpack_from(old)
            version = old_version + 1
        stored = encode_stored_kv(op.value, create_revision, revision, version, op.lease)
        self._stored_bytes += len(stored) - (len(old) if old is not None else -len(op.key))
        self._stage(batch, key, stored)
        if op.fencing_token:
            self._accept_fence(batch, op.key, op.fencing_token)
        if op.prev_kv and old is not None:
            response.had_prev = True
            fill_kv(response.prev_kv, op.key, old)

    def _delete(self, batch: WriteBatch, revision: int, op: pb.DeleteRequest, response: pb.DeleteResponse) -> None:
        key = self._data_prefix + op.key
        old = self._read(key)
        if op.fencing_token:
            self._accept_fence(batch, op.key, op.fencing_token)
        if old is None:
            return
        self._stored_bytes -= len(op.key) + len(old)
        self._stage(batch, key, None)
        response.deleted = True
        if op.prev_kv:
            fill_kv(response.prev_kv, op.key, old)

    def _txn(self, batch: WriteBatch, revision: int, txn: pb.TxnRequest) -> WriteResponse:
        succeeded = all(self._holds(compare) for compare in txn.compare)
        branch = txn.success if succeeded else txn.failure
        # Check every fence of the branch before writing anything, so that a stale token
        # rejects the whole transaction. Ops of the branch see each other's tokens.
        accepted: dict[bytes, int] = {}
        for op in branch:
            kind = op.WhichOneof("op")
            write = op.put if kind == "put" else op.delete if kind == "delete" else None
            if write is not None and write.fencing_token:
                stale = self._stale_fence(write.key, write.fencing_token, accepted)
                if stale is not None:
                    return _error_response(txn, ErrorCode.STALE_FENCING_TOKEN, stale)
        # The operations' responses carry no header: the transaction's applies to all of them.
        response = pb.TxnResponse(succeeded=succeeded)
        response.header.revision = revision
        for op in branch:
            result = response.responses.add()
            kind = op.WhichOneof("op")
            if kind == "put":
                result.put.SetInParent()
                self._put(batch, revision, op.put, result.put)
            elif kind == "delete":
                result.delete.SetInParent()
                self._delete(batch, revision, op.delete, result.delete)
            else:
                get = result.get
                get.SetInParent()
                raw = self._read(self._data_prefix + op.get.key)
                if raw is not None:
                    get.found = True
                    fill_kv(get.kv, op.get.key, raw)
        return response

    def _holds(self, compare: pb.Compare) -> bool:
        raw = self._read(self._data_prefix + compare.key)
        target = compare.target
        if target == _VALUE:
            if raw is None:
                return False  # a missing key has no value to compare
            value, expected = raw[_KV_HEADER_SIZE:], compare.value
            order = (value > expected) - (value < expected)
        else:
            actual = 0  # a missing key has version and revisions 0
            if raw is not None:
                create_revision, mod_revision, version, _ = STORED_KV_HEADER.unpack_from(raw)
                actual = version if target == _VERSION else mod_revision if target == _MOD else create_revision
            number = compare.number
            order = (actual > number) - (actual < number)
        relation = compare.result
        if relation == _EQUAL:
            return order == 0
        if relation == _NOT_EQUAL:
            return order != 0
        if relation == _GREATER:
            return order > 0
        return order < 0

    # -- fences -----------------------------------------------------------------------------

    def _fence(self, user_key: bytes) -> int:
        raw = self._read(self._fence_prefix + user_key)
        if raw is None:
            return 0
        token: int = U64.unpack(raw)[0]
        return token

    def _stale_fence(self, user_key: bytes, token: int, accepted: dict[bytes, int]) -> str | None:
        """Why a write of `user_key` with `token` is refused, given the tokens `accepted` by
        earlier ops of the same transaction (which this records the token into); None when it
        is not. A token equal to the highest accepted one is accepted: the same lock holder
        may write many times."""
        highest = accepted.get(user_key)
        if highest is None:
            highest = self._fence(user_key)
        if token < highest:
            return f"fencing token {token} is older than token {highest} already accepted for key {user_key!r}"
        accepted[user_key] = token
        return None

    def _accept_fence(self, batch: WriteBatch, user_key: bytes, token: int) -> None:
        if token > self._fence(user_key):
            self._stage(batch, self._fence_prefix + user_key, U64.pack(token))

    # -- client dedup -----------------------------------------------------------------------

    def _stored_response(self, window: _ClientWindow, seq: int, request: WriteRequest) -> WriteResponse:
        record = self._read(window.key_base + U64.pack(seq))
        what = f"partition {self.partition_id}: dedup record of {window.client_id!r} seq {seq}"
        if record is None:
            raise CorruptionError(f"{what} is missing")
        try:
            stored = LogResponse.FromString(decode_dedup_result(record)[1])
        except (CodecError, DecodeError) as exc:
            raise CorruptionError(f"{what} does not decode: {exc}") from None
        answer = _answer_in(stored, request)
        if answer is None:
            return _error_response(
                request,
                ErrorCode.INVALID_ARGUMENT,
                f"request seq {seq} of client {window.client_id!r} was first used for another kind of request",
            )
        return answer

    def _remember(
        self,
        batch: WriteBatch,
        client_id: str,
        window: _ClientWindow | None,
        seq: int,
        revision: int,
        response: WriteResponse,
    ) -> None:
        """Record `response` to client `client_id`'s `seq` (not remembered, above the window's
        edge), applied at `revision`, then enforce the bounds: the client's window (its lowest
        seq goes), the number of clients (the least recently applied go; an evicted client's
        retry is applied again) and the results of the partition (the oldest applied go; their
        seqs become the floor of their client's window)."""
        clients = self._clients
        remembered = self._remembered
        if window is None:
            window = _ClientWindow(client_id, self._client_prefix + client_id.encode(), seq, 0, revision, {}, [])
            clients[client_id] = window
        else:
            clients.move_to_end(client_id)
            window.revision = revision
            if seq > window.highest:
                window.highest = seq
        window.seqs[seq] = revision
        heappush(window.lowest, seq)
        remembered[revision] = (window, seq)
        record = encode_dedup_result(revision, _log_response(response).SerializeToString())
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

    def _set_applied(self, batch: WriteBatch, applied: SnapshotMeta) -> None:
        self._applied_index, self._applied_term, self._conf_state = applied.index, applied.term, applied.conf_state
        self._stage(batch, self._apply_state_key, self._encoder.snapshot_meta(applied))
        self._stage(batch, self._stored_bytes_key, U64.pack(self._stored_bytes))

    # -- reads ------------------------------------------------------------------------------

    def get(self, key: bytes) -> pb.KeyValue | None:
        """The key as last written to the engine, None if absent."""
        raw = self._engine.get(self._data_prefix + key)
        return None if raw is None else fill_kv(pb.KeyValue(), key, raw)

    def scan(self, start: bytes, end: bytes | None = None, limit: int = 0) -> tuple[list[pb.KeyValue], bool]:
        """Keys `start` <= key < `end` in byte order, at most `limit` (0: no limit), and whether
        more keys follow in the range. `end` None or b"" (which no key is below) scans to the
        end of the partition."""
        prefix = self._data_prefix
        range_end = prefix_end(prefix) if not end else prefix + end
        prefix_length = len(prefix)
        found: list[pb.KeyValue] = []
        for key, raw in self._engine.iterate(prefix + start, range_end):
            if limit and len(found) == limit:
                return found, True
            found.append(fill_kv(pb.KeyValue(), key[prefix_length:], raw))
        return found, False

    # -- snapshots --------------------------------------------------------------------------

    def _owned_prefixes(self) -> tuple[bytes, bytes, bytes]:
        return self._data_prefix, self._fence_prefix, self._client_prefix

    def snapshot(self) -> Snapshot:
        """Everything of this partition as of one consistent read view of the engine: the apply
        state as the snapshot's metadata, and user data, fences and dedup table as its data.
        Call it after the batch covering the wanted index was written."""
        with self._engine.read_view() as view:
            raw_apply_state = view.get(self._apply_state_key)
            sections = [
                [(key[len(prefix) :], value) for key, value in view.iterate(prefix, prefix_end(prefix))]
                for prefix in self._owned_prefixes()
            ]
        try:
            meta = SnapshotMeta() if raw_apply_state is None else decode_snapshot_meta(raw_apply_state)
        except CodecError as exc:
            raise CorruptionError(f"partition {self.partition_id}: {exc}") from None
        return Snapshot(meta, self._encoder.partition_snapshot(meta.index, sections))

    def restore(self, batch: WriteBatch, snapshot: Snapshot) -> None:
        """Stage replacing everything of this partition by `snapshot`, whose data must be at its
        metadata's index (ValueError otherwise, or when that is below the applied index)."""
        meta = snapshot.meta
        applied_index, sections = decode_partition_snapshot(snapshot.data)
        try:
            clients, remembered = _load_dedup(self._client_prefix, sections[2])
        except ValueError as exc:
            raise CodecError(f"partition snapshot data has a bad dedup table: {exc}") from None
        if applied_index != meta.index:
            raise ValueError(f"snapshot data is at index {applied_index}, not {meta.index}")
        if meta.index < self._applied_index:
            raise ValueError(f"snapshot at {meta.index} is older than the applied index {self._applied_index}")
        self._use_batch(batch)
        self._stored_bytes = _data_bytes(sections[0], 0)
        for prefix, pairs in zip(self._owned_prefixes(), sections, strict=True):
            replacement = {prefix + suffix: value for suffix, value in pairs}
            for old_key in sorted(self._keys_with(prefix) - replacement.keys()):
                self._stage(batch, old_key, None)
            for key, value in replacement.items():
                self._stage(batch, key, value)
        self._set_applied(batch, meta)
        self._clients, self._remembered = clients, remembered

    def bootstrap(self, batch: WriteBatch, start: SnapshotMeta) -> None:
        """Stage the state of a brand-new, empty partition whose history starts after
        `start` (the cluster's bootstrap snapshot point and configuration). Only valid before
        anything was applied."""
        if self._applied_index != 0:
            raise ValueError(f"partition {self.partition_id} already applied up to {self._applied_index}")
        self._use_batch(batch)
        self._set_applied(batch, start)

    def _keys_with(self, prefix: bytes) -> set[bytes]:
        """Keys starting with `prefix` on the engine or staged (deleted ones included)."""
        keys = {key for key, _ in self._engine.iterate(prefix, prefix_end(prefix))}
        keys.update(key for key in self._staged if key.startswith(prefix))
        return keys
