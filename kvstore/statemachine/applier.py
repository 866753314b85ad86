"""The applier of one partition: executes committed commands against the node's engine.

Everything here is deterministic (no clock, no randomness, no I/O beyond the engine): replicas
fed the same entries stage the same data, so they end byte-identical.

Per partition ``p`` the applier owns these keys (see `kvstore.statemachine.layout`):
``A p`` apply state, ``D p key`` user data, ``F p key`` fences, ``C p client`` the dedup table
(`kvstore.statemachine.dedup`: a retried request is applied once and answered the same),
``E p lease`` and ``K p lease key`` the lease table (`kvstore.statemachine.leases`), ``B p``
the bytes its user data takes (what the space quota counts), staged with the apply state.

Leases and locks (docs/locks.md): a put naming a lease attaches the key to it (the lease must
exist, in this partition); a lease's revocation or expiry deletes every key attached to it at
its entry's revision. A lock is a key in its name's queue (`kvstore.locks`), attached to the
caller's lease; its create revision is the fencing token. Fencing is per key: a write with a
token older than one the key accepted is refused; in a transaction every write of the chosen
branch is checked before any is applied, and a transaction's own token fences every key it
touches, reads and compares included (a fenced read); a write without a token is always accepted.

After each `apply`, `take_events` hands the node what changed: the key changes (for its
notification hub) and the lease table's changes (for the leader's lessor).
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.message import DecodeError

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb.internal_pb2 import LeaseCheckpoints, LeaseExpiries, LogCommand, LogResponse
from kvstore.codec import CodecError, Encoder, decode_partition_snapshot, decode_snapshot_meta
from kvstore.errors import ErrorCode
from kvstore.names import lease_partition, lock_key, lock_prefix, split_lock_key
from kvstore.raft.types import ConfChange, Entry, EntryType, Snapshot, SnapshotMeta
from kvstore.statemachine.commands import COMMAND_FIELDS, WriteRequest, WriteResponse, check_command, op_key
from kvstore.statemachine.dedup import DedupTable, Seen
from kvstore.statemachine.events import (
    Change,
    ChangeKind,
    LeaseCheckpointed,
    LeaseEvent,
    LeaseGranted,
    LeaseRemoved,
)
from kvstore.statemachine.layout import (
    STORED_KV_HEADER,
    U64,
    client_prefix,
    encode_stored_kv,
    fence_prefix,
    fill_kv,
    stored_bytes_key,
)
from kvstore.statemachine.leases import LeaseTable
from kvstore.statemachine.staging import StagedWrites, read_sections
from kvstore.storage.engine import Engine, WriteBatch
from kvstore.storage.errors import CorruptionError
from kvstore.storage.keys import apply_state_key, data_prefix, prefix_end

DEFAULT_MAX_DEDUP_CLIENTS = 4096
"""How many clients a partition remembers (least recently applied forgotten first).

This and the two bounds below are the safety nets of client dedup (`kvstore.statemachine.dedup`)
for clients that do not say which requests they still await. They are part of the replicated
behaviour: every replica of a partition must use the same values, or their tables diverge."""

DEFAULT_DEDUP_WINDOW = 1024
"""How far below its highest applied seq a client's request may be and still be told apart:
about the most requests one client keeps in flight to one partition."""

DEFAULT_MAX_DEDUP_RESULTS = 65536
"""How many results a partition remembers over all its clients (oldest applied forgotten
first), so that memory and disk stay bounded however many clients fill their windows."""

_KV_HEADER_SIZE = STORED_KV_HEADER.size
_VALUE, _VERSION, _MOD = pb.Compare.VALUE, pb.Compare.VERSION, pb.Compare.MOD_REVISION
_EQUAL, _NOT_EQUAL, _GREATER = pb.Compare.EQUAL, pb.Compare.NOT_EQUAL, pb.Compare.GREATER


def _error_response(request: WriteRequest, code: ErrorCode, message: str) -> WriteResponse:
    """The answer of `request`'s kind that refuses it with `code`."""
    return COMMAND_FIELDS[type(request)][1](error=pb.Error(code=code.value, message=message))


def _log_response(request: WriteRequest, response: WriteResponse) -> LogResponse:
    stored = LogResponse()
    getattr(stored, COMMAND_FIELDS[type(request)][0]).CopyFrom(response)
    return stored


def _answer_in(stored: LogResponse, request: WriteRequest) -> WriteResponse | None:
    """The response `stored` holds if it answers a request of `request`'s kind, else None."""
    field = COMMAND_FIELDS[type(request)][0]
    answer: WriteResponse | None = getattr(stored, field) if stored.HasField(field) else None
    return answer


_LessorCommand = LeaseCheckpoints | LeaseExpiries


def _command(partition: int, index: int, data: bytes) -> WriteRequest | _LessorCommand:
    """The command carried by the entry at `index`; `CodecError` if its data is not one."""
    try:
        command = LogCommand.FromString(data)
    except DecodeError as exc:
        raise CodecError(f"partition {partition}: entry {index} is not a LogCommand: {exc}") from None
    kind = command.WhichOneof("command")
    if kind is None:
        raise CodecError(f"partition {partition}: entry {index} holds no command this node knows")
    carried: WriteRequest | _LessorCommand = getattr(command, kind)
    return carried


def _data_bytes(pairs: Iterable[tuple[bytes, bytes]], key_prefix_length: int) -> int:
    """The bytes of user data (key, stored value) pairs whose keys carry `key_prefix_length`
    bytes of prefix."""
    return sum(len(key) - key_prefix_length + len(value) for key, value in pairs)


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
        self._store = StagedWrites(engine)
        self.leases = LeaseTable(partition_id, self._store)
        """The partition's leases (read it between Ready cycles, when its batch is written)."""
        # What the applied entries changed, until `take_events`.
        self._changes: list[Change] = []
        self._lease_events: list[LeaseEvent] = []

        raw_apply_state = engine.get(self._apply_state_key)
        prefix_length = len(self._client_prefix)
        try:
            applied = SnapshotMeta() if raw_apply_state is None else decode_snapshot_meta(raw_apply_state)
            self._dedup = self._dedup_table(
                (key[prefix_length:], record)
                for key, record in engine.iterate(self._client_prefix, prefix_end(self._client_prefix))
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

    def _dedup_table(self, records: Iterable[tuple[bytes, bytes]]) -> DedupTable:
        """The dedup table stored as `records` (client id, record); ValueError if one is bad."""
        return DedupTable(
            self._client_prefix,
            records,
            max_clients=self._max_dedup_clients,
            window=self._dedup_window,
            max_results=self._max_dedup_results,
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
        filled; the caller fills the rest of the header); None for an empty (no-op) entry, a
        CONF_CHANGE one (whose change is applied to the configuration kept in the apply state)
        and the lessor's checkpoints and expiries.
        Entries at or below the applied index are skipped (not returned); a gap raises
        ValueError. An entry whose data is not a command raises `CodecError`: skipping it would
        let replicas diverge, so the node must stop applying (and drop this object and the
        batch).
        """
        self._store.use(batch)
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
                command = _command(self.partition_id, index, entry.data)
                if isinstance(command, LeaseCheckpoints):
                    self._checkpoint(command)
                    outcomes.append((entry, None))
                elif isinstance(command, LeaseExpiries):
                    self._expire(index, command)
                    outcomes.append((entry, None))
                else:
                    outcomes.append((entry, self._apply_command(index, command)))
            else:
                if entry.type is EntryType.CONF_CHANGE:
                    self._conf_state = self._conf_state.apply(ConfChange.decode(entry.data))
                outcomes.append((entry, None))
        self._dedup.flush(self._store.read, self._store.stage)
        if applied != self._applied_index:
            self._set_applied(SnapshotMeta(applied, term, self._conf_state))
        return outcomes

    def take_events(self) -> tuple[list[Change], list[LeaseEvent]]:
        """What the entries applied since the last call changed: the user keys, in revision
        order, and the lease table. Publish them only once the batch holding them is written."""
        changes, self._changes = self._changes, []
        events, self._lease_events = self._lease_events, []
        return changes, events

    def _apply_command(self, revision: int, request: WriteRequest) -> WriteResponse:
        header = request.header
        client_id, seq, lowest_pending = header.client_id, header.request_seq, header.lowest_pending_seq
        # A command without a client id is answered, not remembered (seq 0 turns dedup off).
        deduplicated = seq > 0 and bool(client_id)
        if deduplicated:
            seen = self._dedup.seen(client_id, seq, lowest_pending)
            if seen is Seen.REMEMBERED:
                return self._stored_response(client_id, seq, request)
            if seen is Seen.TOO_OLD:
                # Not remembered, yet it may have been applied and forgotten: applying it again
                # could apply it twice. The refusal itself is not remembered.
                return _error_response(request, ErrorCode.INVALID_ARGUMENT, self._dedup.too_old(client_id, seq))
        problem = check_command(request)
        response = (
            self._execute(revision, request)
            if problem is None
            else _error_response(request, ErrorCode.INVALID_ARGUMENT, problem)
        )
        if deduplicated:
            stored = _log_response(request, response).SerializeToString()
            self._dedup.remember(client_id, seq, lowest_pending, revision, stored)
        return response

    def _execute(self, revision: int, request: WriteRequest) -> WriteResponse:
        if isinstance(request, (pb.PutRequest, pb.DeleteRequest)):
            refusal = self._refusal(request, {})
            if refusal is not None:
                return refusal
            response: pb.PutResponse | pb.DeleteResponse
            if isinstance(request, pb.PutRequest):
                response = pb.PutResponse()
                self._put(revision, request, response)
            else:
                response = pb.DeleteResponse()
                self._delete(revision, request, response)
            response.header.revision = revision
            return response
        if isinstance(request, pb.TxnRequest):
            return self._txn(revision, request)
        if isinstance(request, pb.LeaseGrantRequest):
            return self._grant(revision, request)
        if isinstance(request, pb.LeaseRevokeRequest):
            return self._revoke(revision, request)
        if isinstance(request, pb.LockRequest):
            return self._lock(revision, request)
        return self._unlock(revision, request)

    def _refusal(self, write: pb.PutRequest | pb.DeleteRequest, accepted: dict[bytes, int]) -> WriteResponse | None:
        """The refusal of `write` (or of the transaction it is part of): a stale fencing token
        (given the tokens `accepted` by earlier writes of the same transaction, which this
        records its token into), or a lease that does not exist here; None to go ahead."""
        if write.fencing_token:
            stale = self._stale_fence(write.key, write.fencing_token, accepted)
            if stale is not None:
                return _error_response(write, ErrorCode.STALE_FENCING_TOKEN, stale)
        if isinstance(write, pb.PutRequest) and write.lease:
            return self._lease_refusal(write, write.key, write.lease)
        return None

    def _lease_refusal(self, request: WriteRequest, key: bytes, lease: int) -> WriteResponse | None:
        """Why `key` cannot be attached to `lease`: CROSS_PARTITION when the lease lives in
        another partition, LEASE_NOT_FOUND when it does not exist; None when it can."""
        if lease_partition(lease) != self.partition_id:
            return _error_response(
                request,
                ErrorCode.CROSS_PARTITION,
                f"key {key!r:.80} is in partition {self.partition_id} but lease {lease} lives in partition "
                f"{lease_partition(lease)}: a lease's keys share its partition. Put the keys under one "
                "{hash tag}, or use a client Session, which holds one lease per partition it touches",
            )
        if lease not in self.leases:
            return _error_response(
                request, ErrorCode.LEASE_NOT_FOUND, f"lease {lease} does not exist (expired, revoked or never granted)"
            )
        return None

    def _put(self, revision: int, op: pb.PutRequest, response: pb.PutResponse) -> None:
        user_key = op.key
        key = self._data_prefix + user_key
        old = self._store.read(key)
        old_lease = 0
        if old is None:
            create_revision, version = revision, 1
        else:
            create_revision, _, old_version, old_lease = STORED_KV_HEADER.unpack_from(old)
            version = old_version + 1
        stored = encode_stored_kv(op.value, create_revision, revision, version, op.lease)
        self._stored_bytes += len(stored) - (len(old) if old is not None else -len(user_key))
        self._store.stage(key, stored)
        if old_lease != op.lease:
            if old_lease:
                self.leases.detach(old_lease, user_key)
            if op.lease:
                self.leases.attach(op.lease, user_key)
        self._changes.append(Change(self.partition_id, ChangeKind.PUT, user_key, revision, stored, old))
        if op.fencing_token:
            self._accept_fence(user_key, op.fencing_token)
        if op.prev_kv and old is not None:
            response.had_prev = True
            fill_kv(response.prev_kv, user_key, old)

    def _delete(self, revision: int, op: pb.DeleteRequest, response: pb.DeleteResponse) -> None:
        if op.fencing_token:
            self._accept_fence(op.key, op.fencing_token)
        old = self._delete_key(revision, op.key)
        if old is None:
            return
        response.deleted = True
        if op.prev_kv:
            fill_kv(response.prev_kv, op.key, old)

    def _delete_key(self, revision: int, user_key: bytes) -> bytes | None:
        """Stage deleting `user_key` (detached from its lease); its stored record, None if it
        did not exist."""
        key = self._data_prefix + user_key
        old = self._store.read(key)
        if old is None:
            return None
        self._stored_bytes -= len(user_key) + len(old)
        self._store.stage(key, None)
        lease: int = STORED_KV_HEADER.unpack_from(old)[3]
        if lease:
            self.leases.detach(lease, user_key)
        self._changes.append(Change(self.partition_id, ChangeKind.DELETE, user_key, revision, None, old))
        return old

    def _txn(self, revision: int, txn: pb.TxnRequest) -> WriteResponse:
        succeeded = all(self._holds(compare) for compare in txn.compare)
        branch = txn.success if succeeded else txn.failure
        # Check every fence and lease of the branch before writing anything, so that a stale
        # token or a missing lease refuses the whole transaction. Writes of the branch see each
        # other's tokens.
        accepted: dict[bytes, int] = {}
        fenced_keys = self._fenced_keys(txn, branch)
        for key in fenced_keys:
            stale = self._stale_fence(key, txn.fencing_token, accepted)
            if stale is not None:
                return _error_response(txn, ErrorCode.STALE_FENCING_TOKEN, stale)
        for op in branch:
            kind = op.WhichOneof("op")
            if kind == "put" or kind == "delete":
                refusal = self._refusal(op.put if kind == "put" else op.delete, accepted)
                if refusal is not None:
                    return _error_response(txn, ErrorCode(refusal.error.code), refusal.error.message)
        for key in fenced_keys:
            self._accept_fence(key, txn.fencing_token)
        # The operations' responses carry no header: the transaction's applies to all of them.
        response = pb.TxnResponse(succeeded=succeeded)
        response.header.revision = revision
        for op in branch:
            result = response.responses.add()
            kind = op.WhichOneof("op")
            if kind == "put":
                result.put.SetInParent()
                self._put(revision, op.put, result.put)
            elif kind == "delete":
                result.delete.SetInParent()
                self._delete(revision, op.delete, result.delete)
            else:
                get = result.get
                get.SetInParent()
                raw = self._store.read(self._data_prefix + op.get.key)
                if raw is not None:
                    get.found = True
                    fill_kv(get.kv, op.get.key, raw)
        return response

    @staticmethod
    def _fenced_keys(txn: pb.TxnRequest, branch: Iterable[pb.RequestOp]) -> list[bytes]:
        """The keys a fenced transaction's token fences: those of its compares and of every
        operation of the branch that runs, reads included (none when it carries no token)."""
        if not txn.fencing_token:
            return []
        keys = dict.fromkeys(compare.key for compare in txn.compare)
        keys.update(dict.fromkeys(key for key in map(op_key, branch) if key is not None))
        return list(keys)

    # -- leases and locks -------------------------------------------------------------------

    def _grant(self, revision: int, request: pb.LeaseGrantRequest) -> WriteResponse:
        problem = self.leases.grant_problem(request.ttl_seconds, request.id)
        if problem is not None:
            return _error_response(request, ErrorCode.INVALID_ARGUMENT, problem)
        lease = self.leases.grant(revision, request.ttl_seconds, request.id)
        self._lease_events.append(LeaseGranted(lease))
        response = pb.LeaseGrantResponse(id=lease.id, ttl_seconds=lease.ttl)
        response.header.revision = revision
        return response

    def _revoke(self, revision: int, request: pb.LeaseRevokeRequest) -> WriteResponse:
        if not self._remove_lease(revision, request.id, 0, expired=False):
            return _error_response(
                request, ErrorCode.LEASE_NOT_FOUND, f"lease {request.id} does not exist (expired, revoked or never granted)"
            )
        response = pb.LeaseRevokeResponse()
        response.header.revision = revision
        return response

    def _checkpoint(self, command: LeaseCheckpoints) -> None:
        for checkpoint in command.checkpoints:
            if self.leases.checkpoint(checkpoint.id, checkpoint.revision, checkpoint.remaining_ms):
                self._lease_events.append(LeaseCheckpointed(checkpoint.id, checkpoint.remaining_ms))

    def _expire(self, revision: int, command: LeaseExpiries) -> None:
        for expiry in command.expiries:
            self._remove_lease(revision, expiry.id, expiry.revision, expired=True)

    def _remove_lease(self, revision: int, lease: int, granted_at: int, *, expired: bool) -> bool:
        """Stage removing `lease` (if it is the one granted at `granted_at`; 0: any) and deleting
        every key attached to it, at `revision`; whether it existed."""
        keys = self.leases.revoke(lease, granted_at)
        if keys is None:
            return False
        for user_key in keys:
            self._delete_key(revision, user_key)
        self._lease_events.append(LeaseRemoved(lease, expired))
        return True

    def _lock(self, revision: int, request: pb.LockRequest) -> WriteResponse:
        """Join the lock's queue: create the caller's lock key, attached to its lease (or find
        it, locked before by the same lease). Whether it is held is the node's to tell
        (`lock_queue`); the token is the key's create revision either way."""
        user_key = lock_key(request.name, request.lease)
        refusal = self._lease_refusal(request, user_key, request.lease)
        if refusal is not None:
            return refusal
        old = self._store.read(self._data_prefix + user_key)
        if old is None:
            self._put(revision, pb.PutRequest(key=user_key, lease=request.lease), pb.PutResponse())
            token = revision
        else:
            token = STORED_KV_HEADER.unpack_from(old)[0]
        response = pb.LockResponse(key=user_key, fencing_token=token)
        response.header.revision = revision
        return response

    def _unlock(self, revision: int, request: pb.UnlockRequest) -> WriteResponse:
        if self._delete_key(revision, request.key) is None:
            return _error_response(
                request,
                ErrorCode.LOCK_NOT_HELD,
                f"lock key {request.key!r:.80} does not exist: unlocked already, or its lease expired",
            )
        response = pb.UnlockResponse()
        response.header.revision = revision
        return response

    def _holds(self, compare: pb.Compare) -> bool:
        raw = self._store.read(self._data_prefix + compare.key)
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
        raw = self._store.read(self._fence_prefix + user_key)
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

    def _accept_fence(self, user_key: bytes, token: int) -> None:
        if token > self._fence(user_key):
            self._store.stage(self._fence_prefix + user_key, U64.pack(token))

    # -- client dedup -----------------------------------------------------------------------

    def _stored_response(self, client_id: str, seq: int, request: WriteRequest) -> WriteResponse:
        what = f"partition {self.partition_id}: dedup record of {client_id!r} seq {seq}"
        try:
            stored = LogResponse.FromString(self._dedup.response(self._store.read, client_id, seq))
        except (ValueError, DecodeError) as exc:
            raise CorruptionError(f"{what} does not decode: {exc}") from None
        answer = _answer_in(stored, request)
        if answer is None:
            return _error_response(
                request,
                ErrorCode.INVALID_ARGUMENT,
                f"request seq {seq} of client {client_id!r} was first used for another kind of request",
            )
        return answer

    def _set_applied(self, applied: SnapshotMeta) -> None:
        self._applied_index, self._applied_term, self._conf_state = applied.index, applied.term, applied.conf_state
        self._store.stage(self._apply_state_key, self._encoder.snapshot_meta(applied))
        self._store.stage(self._stored_bytes_key, U64.pack(self._stored_bytes))

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

    def lock_queue(self, name: bytes) -> list[tuple[int, bytes]]:
        """The lock keys of the lock named `name` as last written, as (create revision, key) in
        queue order: the first holds the lock."""
        prefix = lock_prefix(name)
        start = self._data_prefix + prefix
        queue = []
        for key, raw in self._engine.iterate(start, prefix_end(start)):
            user_key = key[len(self._data_prefix) :]
            split = split_lock_key(user_key)
            if split is not None and split[0] == prefix:  # not a key of a longer name under it
                queue.append((STORED_KV_HEADER.unpack_from(raw)[0], user_key))
        queue.sort()
        return queue

    # -- snapshots --------------------------------------------------------------------------

    def _owned_prefixes(self) -> tuple[bytes, ...]:
        return self._data_prefix, self._fence_prefix, self._client_prefix, *self.leases.prefixes

    def snapshot(self) -> Snapshot:
        """Everything of this partition as of one consistent read view of the engine: the apply
        state as the snapshot's metadata, and user data, fences, dedup table and leases as its
        data. Call it after the batch covering the wanted index was written."""
        with self._engine.read_view() as view:
            raw_apply_state = view.get(self._apply_state_key)
            sections = read_sections(view, self._owned_prefixes())
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
            dedup = self._dedup_table(sections[2])
        except ValueError as exc:
            raise CodecError(f"partition snapshot data has a bad dedup table: {exc}") from None
        if applied_index != meta.index:
            raise ValueError(f"snapshot data is at index {applied_index}, not {meta.index}")
        if meta.index < self._applied_index:
            raise ValueError(f"snapshot at {meta.index} is older than the applied index {self._applied_index}")
        self._store.use(batch)
        try:
            self.leases.replace(sections[3:])  # checks its records before staging anything
        except ValueError as exc:
            raise CodecError(f"partition snapshot data has a bad lease table: {exc}") from None
        for prefix, pairs in zip(self._owned_prefixes()[:3], sections[:3], strict=True):
            self._store.replace(prefix, pairs)
        self._stored_bytes = _data_bytes(sections[0], 0)
        self._set_applied(meta)
        self._dedup = dedup

    def bootstrap(self, batch: WriteBatch, start: SnapshotMeta) -> None:
        """Stage the state of a brand-new, empty partition whose history starts after
        `start` (the cluster's bootstrap snapshot point and configuration). Only valid before
        anything was applied."""
        if self._applied_index != 0:
            raise ValueError(f"partition {self.partition_id} already applied up to {self._applied_index}")
        self._store.use(batch)
        self._set_applied(start)

    def destroy(self, batch: WriteBatch) -> None:
        """Stage deleting everything of this partition on this node: data, fences, dedup table,
        leases, the stored-bytes count and apply state (the replica left the group; drop this
        object once the batch is written)."""
        self._store.use(batch)
        for prefix in self._owned_prefixes():
            self._store.replace(prefix, ())
        self._store.stage(self._apply_state_key, None)
        self._store.stage(self._stored_bytes_key, None)
