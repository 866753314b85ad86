"""The partition applier over the in-memory and the LevelDB engine: KV semantics, transactions,
fencing, client dedup windows, atomic apply state (with the configuration), scans, snapshots,
determinism, and a model check. Commands and answers are the API's protobuf messages; the
helpers below build them as briefly as the old records did."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb.internal_pb2 import LeaseCheckpoints, LeaseExpiries, LogCommand
from kvstore.codec import CodecError, decode_client_dedup
from kvstore.names import lease_id, lease_partition, lock_key
from kvstore.raft.types import ConfChange, ConfChangeType, ConfState, Entry, EntryType, Snapshot, SnapshotMeta
from kvstore.statemachine import (
    COMMAND_FIELDS,
    ChangeKind,
    Lease,
    LeaseCheckpointed,
    LeaseGranted,
    LeaseRemoved,
    PartitionStateMachine,
    WriteRequest,
    WriteResponse,
)
from kvstore.statemachine.layout import stored_bytes_key
from kvstore.storage import CorruptionError, Engine, LevelDBEngine, MemoryEngine
from kvstore.storage.keys import data_prefix, hard_state_key, prefix_end

VALUE, VERSION, MOD, CREATE = pb.Compare.VALUE, pb.Compare.VERSION, pb.Compare.MOD_REVISION, pb.Compare.CREATE_REVISION
EQ, NE, GT, LT = pb.Compare.EQUAL, pb.Compare.NOT_EQUAL, pb.Compare.GREATER, pb.Compare.LESS

# -- building commands and expected answers --------------------------------------------------

Op = pb.PutRequest | pb.DeleteRequest | pb.GetRequest | pb.TxnRequest
TxnOp = pb.PutRequest | pb.DeleteRequest | pb.GetRequest
Answer = WriteResponse | None
Item = WriteRequest | LeaseCheckpoints | LeaseExpiries | None  # what an entry carries (None: a no-op)


def put(key: bytes, value: bytes, lease: int = 0, prev_kv: bool = False, fencing_token: int = 0) -> pb.PutRequest:
    return pb.PutRequest(key=key, value=value, lease=lease, prev_kv=prev_kv, fencing_token=fencing_token)


def delete(key: bytes, prev_kv: bool = False, fencing_token: int = 0) -> pb.DeleteRequest:
    return pb.DeleteRequest(key=key, prev_kv=prev_kv, fencing_token=fencing_token)


def get(key: bytes) -> pb.GetRequest:
    """A read inside a transaction (plain reads are served from the engine, not through the log)."""
    return pb.GetRequest(key=key)


def request_op(op: Op) -> pb.RequestOp:
    if isinstance(op, pb.PutRequest):
        return pb.RequestOp(put=op)
    if isinstance(op, pb.DeleteRequest):
        return pb.RequestOp(delete=op)
    if isinstance(op, pb.GetRequest):
        return pb.RequestOp(get=op)
    return pb.RequestOp(txn=op)


def txn(
    compares: Sequence[pb.Compare], success: Sequence[TxnOp], failure: Sequence[TxnOp], fencing_token: int = 0
) -> pb.TxnRequest:
    return pb.TxnRequest(
        compare=compares,
        success=[request_op(op) for op in success],
        failure=[request_op(op) for op in failure],
        fencing_token=fencing_token,
    )


def grant(ttl: int = 10, lease: int = 0) -> pb.LeaseGrantRequest:
    return pb.LeaseGrantRequest(ttl_seconds=ttl, id=lease)


def revoke(lease: int) -> pb.LeaseRevokeRequest:
    return pb.LeaseRevokeRequest(id=lease)


def expire(*leases: tuple[int, int]) -> LeaseExpiries:
    """The lessor's expiry of each (lease id, revision of its grant)."""
    expiries = LeaseExpiries()
    for lease, revision in leases:
        expiries.expiries.add(id=lease, revision=revision)
    return expiries


def checkpoint(lease: int, revision: int, remaining_ms: int) -> LeaseCheckpoints:
    checkpoints = LeaseCheckpoints()
    checkpoints.checkpoints.add(id=lease, revision=revision, remaining_ms=remaining_ms)
    return checkpoints


def lock(name: bytes, lease: int) -> pb.LockRequest:
    return pb.LockRequest(name=name, lease=lease)


def unlock(key: bytes) -> pb.UnlockRequest:
    return pb.UnlockRequest(key=key)


def compare(key: bytes, target: int, result: int, value: bytes = b"", number: int = 0) -> pb.Compare:
    return pb.Compare(key=key, target=target, result=result, value=value, number=number)  # type: ignore[arg-type]


def command(client_id: str, seq: int, request: WriteRequest, lowest_pending: int = 0) -> WriteRequest:
    """`request` sent by client `client_id` as its request number `seq` (0: no dedup), saying
    it awaits no answer below `lowest_pending` (0: not said)."""
    sent = copy.deepcopy(request)
    sent.header.client_id = client_id
    sent.header.request_seq = seq
    sent.header.lowest_pending_seq = lowest_pending
    return sent


def kv(key: bytes, value: bytes, create_revision: int, mod_revision: int, version: int, lease: int) -> pb.KeyValue:
    return pb.KeyValue(
        key=key, value=value, create_revision=create_revision, mod_revision=mod_revision, version=version, lease=lease
    )


def _header(revision: int | None) -> pb.ResponseHeader | None:
    return None if revision is None else pb.ResponseHeader(revision=revision)


def put_result(revision: int | None, prev: pb.KeyValue | None = None) -> pb.PutResponse:
    return pb.PutResponse(header=_header(revision), had_prev=prev is not None, prev_kv=prev)


def delete_result(revision: int | None, deleted: bool, prev: pb.KeyValue | None = None) -> pb.DeleteResponse:
    return pb.DeleteResponse(header=_header(revision), deleted=deleted, prev_kv=prev)


def get_result(found: pb.KeyValue | None) -> pb.GetResponse:
    return pb.GetResponse(found=found is not None, kv=found)


def txn_result(
    revision: int, succeeded: bool, results: Sequence[pb.PutResponse | pb.DeleteResponse | pb.GetResponse]
) -> pb.TxnResponse:
    """The operations' answers carry no header: the transaction's applies to them all."""
    responses = []
    for result in results:
        inner = copy.deepcopy(result)
        inner.ClearField("header")
        responses.append(request_op_response(inner))
    return pb.TxnResponse(header=_header(revision), succeeded=succeeded, responses=responses)


def request_op_response(result: pb.PutResponse | pb.DeleteResponse | pb.GetResponse) -> pb.ResponseOp:
    if isinstance(result, pb.PutResponse):
        return pb.ResponseOp(put=result)
    if isinstance(result, pb.DeleteResponse):
        return pb.ResponseOp(delete=result)
    return pb.ResponseOp(get=result)


def refused(request: WriteRequest, code: int) -> Any:
    """The answer refusing `request` with `code` (message left empty: compare with `comparable`):
    the response of the request's kind."""
    return COMMAND_FIELDS[type(request)][1](error=pb.Error(code=code))  # type: ignore[arg-type]


def comparable(result: Answer) -> Answer:
    """Refusals compared by code only: the model does not word messages."""
    if result is None or not result.error.code:
        return result
    refusal = copy.deepcopy(result)
    refusal.error.message = ""
    return refusal


PARTITION = 7
OTHER_PARTITION = 8


class Store:
    """An engine that can be 'restarted': LevelDB is closed and reopened on the same directory;
    the in-memory engine is kept (it stands for a disk that survives the process)."""

    def __init__(self, kind: str, path: Path) -> None:
        self.kind = kind
        self.path = path
        self.engine: Engine = self._open()

    def _open(self) -> Engine:
        return MemoryEngine() if self.kind == "memory" else LevelDBEngine(self.path)

    def restart(self) -> None:
        if self.kind == "leveldb":
            self.engine.close()
            self.engine = self._open()


@pytest.fixture(params=["memory", "leveldb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened = Store(request.param, tmp_path / "db")
    yield opened
    opened.engine.close()


def entry_for(index: int, item: Item) -> Entry:
    """The entry the node proposes for `item`: the bytes of the client's RequestOp for a put,
    delete or transaction, else the command wrapped in a LogCommand."""
    if item is None:
        return Entry(index, 1)  # a Raft no-op
    if isinstance(item, (pb.PutRequest, pb.DeleteRequest, pb.TxnRequest)):
        return Entry(index, 1, request_op(item).SerializeToString())
    if isinstance(item, LeaseCheckpoints):
        return Entry(index, 1, LogCommand(lease_checkpoints=item).SerializeToString())
    if isinstance(item, LeaseExpiries):
        return Entry(index, 1, LogCommand(lease_expiries=item).SerializeToString())
    command = LogCommand()
    getattr(command, COMMAND_FIELDS[type(item)][0]).CopyFrom(item)
    return Entry(index, 1, command.SerializeToString())


class Node:
    """Drives one partition's applier the way the node does: one batch per apply, written synced."""

    def __init__(
        self,
        store: Store,
        partition: int = PARTITION,
        max_dedup_clients: int = 4096,
        dedup_window: int = 1024,
        max_dedup_results: int = 65536,
    ) -> None:
        self.store = store
        self.partition = partition
        self.max_dedup_clients = max_dedup_clients
        self.dedup_window = dedup_window
        self.max_dedup_results = max_dedup_results
        self.machine = self._machine()

    def _machine(self) -> PartitionStateMachine:
        return PartitionStateMachine(
            self.store.engine,
            self.partition,
            max_dedup_clients=self.max_dedup_clients,
            dedup_window=self.dedup_window,
            max_dedup_results=self.max_dedup_results,
        )

    def restart(self) -> None:
        self.store.restart()
        self.machine = self._machine()

    def apply(self, *items: Item, write: bool = True) -> list[Answer]:
        first = self.machine.applied_index + 1
        entries = [entry_for(first + offset, item) for offset, item in enumerate(items)]
        batch = self.store.engine.new_batch()
        outcomes = self.machine.apply(batch, entries)
        if write:
            self.store.engine.write(batch, sync=True)
        assert [entry for entry, _ in outcomes] == entries
        return [result for _, result in outcomes]

    def one(self, item: WriteRequest) -> WriteResponse:
        (result,) = self.apply(item)
        assert result is not None
        return result


def everything(engine: Engine) -> list[tuple[bytes, bytes]]:
    return list(engine.iterate(b"", None))


# -- put, get, delete ----------------------------------------------------------------------


def test_put_get_delete_track_revisions_and_versions(store: Store) -> None:
    node = Node(store)
    assert node.one(put(b"k", b"v1")) == put_result(1, None)
    assert node.machine.get(b"k") == kv(b"k", b"v1", 1, 1, 1, 0)
    lease = node.one(grant()).id  # type: ignore[union-attr]
    assert node.one(put(b"k", b"v2", lease=lease)) == put_result(3, None)
    assert node.machine.get(b"k") == kv(b"k", b"v2", 1, 3, 2, lease)
    assert node.one(delete(b"k")) == delete_result(4, True, None)
    assert node.machine.get(b"k") is None
    assert node.one(delete(b"k")) == delete_result(5, False, None)
    # Recreated: a new life, with its own create revision and version.
    assert node.one(put(b"k", b"v3")) == put_result(6, None)
    assert node.machine.get(b"k") == kv(b"k", b"v3", 6, 6, 1, 0)
    assert node.machine.applied_index == 6


def test_prev_kv_is_returned_only_when_asked_and_present(store: Store) -> None:
    node = Node(store)
    assert node.one(put(b"k", b"a", prev_kv=True)) == put_result(1, None)
    assert node.one(put(b"k", b"b", prev_kv=True)) == put_result(2, kv(b"k", b"a", 1, 1, 1, 0))
    assert node.one(put(b"k", b"c")) == put_result(3, None)
    assert node.one(delete(b"k", prev_kv=True)) == delete_result(4, True, kv(b"k", b"c", 1, 3, 3, 0))
    assert node.one(delete(b"k", prev_kv=True)) == delete_result(5, False, None)


def test_empty_and_conf_change_entries_only_advance_the_apply_state(store: Store) -> None:
    node = Node(store)
    batch = store.engine.new_batch()
    node.machine.bootstrap(batch, SnapshotMeta(1, 1, ConfState(frozenset({1, 2, 3}))))
    noop = Entry(2, 2)
    add = Entry(3, 2, ConfChange(ConfChangeType.ADD_LEARNER, 4).encode(), EntryType.CONF_CHANGE)
    remove = Entry(4, 3, ConfChange(ConfChangeType.REMOVE, 2).encode(), EntryType.CONF_CHANGE)
    outcomes = node.machine.apply(batch, [noop, add, remove])
    store.engine.write(batch, sync=True)
    assert outcomes == [(noop, None), (add, None), (remove, None)]
    applied = SnapshotMeta(4, 3, ConfState(frozenset({1, 3}), frozenset({4})))
    assert node.machine.applied == applied
    node.restart()
    assert node.machine.applied == applied  # the apply state keeps the configuration
    assert node.machine.snapshot().meta == applied
    assert node.machine.scan(b"") == ([], False)


def test_entries_already_applied_are_skipped_and_gaps_refused(store: Store) -> None:
    node = Node(store)
    node.apply(put(b"k", b"v"))
    batch = store.engine.new_batch()
    assert node.machine.apply(batch, [entry_for(1, put(b"k", b"again"))]) == []
    with pytest.raises(ValueError):
        node.machine.apply(batch, [entry_for(3, put(b"k", b"gap"))])
    assert node.machine.get(b"k") == kv(b"k", b"v", 1, 1, 1, 0)


@pytest.mark.parametrize(
    "data",
    [
        b"\x93garbage",
        pb.RequestOp(get=pb.GetRequest(key=b"k")).SerializeToString(),  # a plain read never enters the log
        b"\xf2\x01\x00",  # field 30, which no command has
    ],
)
def test_an_entry_that_is_not_a_command_stops_the_applier(store: Store, data: bytes) -> None:
    node = Node(store)
    with pytest.raises(CodecError, match=f"partition {PARTITION}: entry 1"):
        node.machine.apply(store.engine.new_batch(), [Entry(1, 1, data)])


@pytest.mark.parametrize(
    "request_",
    [
        command("c", 1, put(b"", b"v")),
        command("c", 1, txn((), (txn((), (), ()),), ())),  # type: ignore[arg-type]
        command("c", 1, txn((compare(b"k", 9, EQ),), (), ())),
        command("", 1, put(b"k", b"v")),
    ],
)
def test_malformed_commands_are_answered_invalid_argument_and_change_nothing(
    store: Store, request_: WriteRequest
) -> None:
    node = Node(store)
    result = node.one(request_)
    assert result.error.code == pb.INVALID_ARGUMENT and result.error.message
    assert node.machine.applied_index == 1
    assert node.machine.scan(b"") == ([], False)


def test_partitions_sharing_an_engine_do_not_see_each_other(store: Store) -> None:
    mine, other = Node(store, PARTITION), Node(store, OTHER_PARTITION)
    mine.apply(put(b"k", b"mine"))
    other.apply(put(b"k", b"other"), put(b"j", b"other"))
    assert mine.machine.get(b"k") == kv(b"k", b"mine", 1, 1, 1, 0)
    assert [kv.key for kv in mine.machine.scan(b"")[0]] == [b"k"]
    assert mine.machine.applied_index == 1
    assert other.machine.applied_index == 2


# -- transactions --------------------------------------------------------------------------


def make_k(node: Node) -> None:
    """k: created at 1, modified at 2 (version 2), value b"m"."""
    node.apply(put(b"k", b"b"), put(b"k", b"m"))


@pytest.mark.parametrize(
    ("compare", "holds"),
    [
        (compare(b"k", VALUE, EQ, value=b"m"), True),
        (compare(b"k", VALUE, EQ, value=b"b"), False),
        (compare(b"k", VALUE, NE, value=b"b"), True),
        (compare(b"k", VALUE, NE, value=b"m"), False),
        (compare(b"k", VALUE, GT, value=b"a"), True),
        (compare(b"k", VALUE, GT, value=b"m"), False),
        (compare(b"k", VALUE, LT, value=b"ma"), True),  # byte order: a prefix sorts first
        (compare(b"k", VALUE, LT, value=b"m"), False),
        (compare(b"k", VERSION, EQ, number=2), True),
        (compare(b"k", VERSION, NE, number=2), False),
        (compare(b"k", VERSION, GT, number=1), True),
        (compare(b"k", VERSION, LT, number=2), False),
        (compare(b"k", MOD, EQ, number=2), True),
        (compare(b"k", MOD, NE, number=1), True),
        (compare(b"k", MOD, GT, number=2), False),
        (compare(b"k", MOD, LT, number=3), True),
        (compare(b"k", CREATE, EQ, number=1), True),
        (compare(b"k", CREATE, NE, number=1), False),
        (compare(b"k", CREATE, GT, number=0), True),
        (compare(b"k", CREATE, LT, number=1), False),
        # A missing key: version and revisions 0, and no value to compare at all.
        (compare(b"absent", VERSION, EQ, number=0), True),
        (compare(b"absent", CREATE, LT, number=1), True),
        (compare(b"absent", MOD, GT, number=0), False),
        (compare(b"absent", VALUE, EQ, value=b""), False),
        (compare(b"absent", VALUE, NE, value=b"x"), False),
    ],
)
def test_txn_compare_targets_and_results(store: Store, compare: pb.Compare, holds: bool) -> None:
    node = Node(store)
    make_k(node)
    result = node.one(txn((compare,), (put(b"then", b"1"),), (put(b"else", b"1"),)))
    assert result == txn_result(3, holds, (put_result(3, None),))
    assert (node.machine.get(b"then") is not None) is holds
    assert (node.machine.get(b"else") is not None) is not holds


def test_txn_applies_its_ops_in_order_and_they_see_each_other(store: Store) -> None:
    node = Node(store)
    make_k(node)
    result = node.one(
        txn(
            (compare(b"k", VALUE, EQ, value=b"m"), compare(b"k", VERSION, EQ, number=2)),
            (get(b"n"), put(b"n", b"1"), get(b"n"), delete(b"k", prev_kv=True), get(b"k")),
            (),
        )
    )
    assert result == txn_result(
        3,
        True,
        (
            get_result(None),
            put_result(3, None),
            get_result(kv(b"n", b"1", 3, 3, 1, 0)),
            delete_result(3, True, kv(b"k", b"m", 1, 2, 2, 0)),
            get_result(None),
        ),
    )
    assert node.machine.get(b"k") is None


def test_txn_with_no_compares_succeeds(store: Store) -> None:
    node = Node(store)
    assert node.one(txn((), (put(b"a", b"1"),), (put(b"b", b"1"),))) == txn_result(
        1, True, (put_result(1, None),)
    )


# -- fencing -------------------------------------------------------------------------------


def is_stale(result: Answer) -> bool:
    return result is not None and result.error.code == pb.STALE_FENCING_TOKEN


def test_fenced_writes_accept_equal_or_higher_tokens_and_refuse_lower(store: Store) -> None:
    node = Node(store)
    assert node.one(put(b"k", b"a", fencing_token=5)) == put_result(1, None)
    assert node.one(put(b"k", b"b", fencing_token=5)) == put_result(2, None)  # same holder again
    assert is_stale(node.one(put(b"k", b"stale", fencing_token=4)))
    assert is_stale(node.one(delete(b"k", fencing_token=4)))
    assert node.machine.get(b"k") == kv(b"k", b"b", 1, 2, 2, 0)
    assert node.one(put(b"k", b"c", fencing_token=6)) == put_result(5, None)
    assert is_stale(node.one(put(b"k", b"stale", fencing_token=5)))
    # Unfenced writes are not checked: fencing is opt-in per write.
    assert node.one(put(b"k", b"d")) == put_result(7, None)
    # Tokens are per key.
    assert node.one(put(b"other", b"x", fencing_token=1)) == put_result(8, None)


def test_a_fence_survives_the_deletion_of_its_key_and_a_restart(store: Store) -> None:
    node = Node(store)
    node.apply(put(b"k", b"a", fencing_token=3), delete(b"k", fencing_token=9))
    node.restart()
    assert is_stale(node.one(put(b"k", b"stale", fencing_token=8)))
    assert node.machine.get(b"k") is None
    assert node.one(put(b"k", b"ok", fencing_token=9)) == put_result(4, None)


def test_deleting_an_absent_key_with_a_token_records_the_token(store: Store) -> None:
    node = Node(store)
    assert node.one(delete(b"k", fencing_token=7)) == delete_result(1, False, None)
    assert is_stale(node.one(put(b"k", b"v", fencing_token=6)))


def test_a_stale_token_rejects_the_whole_txn(store: Store) -> None:
    node = Node(store)
    node.apply(put(b"locked", b"a", fencing_token=10))
    result = node.one(txn((), (put(b"free", b"x"), put(b"locked", b"y", fencing_token=9)), ()))
    assert is_stale(result)
    assert node.machine.get(b"free") is None
    assert node.machine.get(b"locked") == kv(b"locked", b"a", 1, 1, 1, 0)


def test_ops_of_one_txn_see_each_others_tokens(store: Store) -> None:
    node = Node(store)
    assert is_stale(
        node.one(txn((), (put(b"k", b"1", fencing_token=5), put(b"k", b"2", fencing_token=4)), ()))
    )
    assert node.machine.get(b"k") is None
    result = node.one(txn((), (put(b"k", b"1", fencing_token=4), put(b"k", b"2", fencing_token=5)), ()))
    assert result == txn_result(2, True, (put_result(2, None), put_result(2, None)))
    assert node.machine.get(b"k") == kv(b"k", b"2", 2, 2, 2, 0)
    assert is_stale(node.one(put(b"k", b"stale", fencing_token=4)))


def test_a_fenced_read_makes_the_key_refuse_older_tokens(store: Store) -> None:
    """The case fencing only writes gets wrong: the new holder reads, the old holder's stale write
    lands, the new holder writes what it read plus one, and an update is lost. A transaction
    carrying the token fences the keys it reads, so the stale write is refused."""
    node = Node(store)
    node.apply(put(b"k", b"1", fencing_token=4))  # the old holder (token 4) wrote before pausing
    read = node.one(txn((), (get(b"k"),), (), fencing_token=5))  # the new holder reads, fenced
    assert read == txn_result(2, True, (get_result(kv(b"k", b"1", 1, 1, 1, 0)),))
    assert is_stale(node.one(put(b"k", b"2", fencing_token=4)))  # the old holder wakes up: refused
    assert is_stale(node.one(txn((), (get(b"k"),), (), fencing_token=4)))  # its fenced reads too
    assert node.one(put(b"k", b"2", fencing_token=5)) == put_result(5, None)
    assert node.machine.get(b"k") == kv(b"k", b"2", 1, 5, 2, 0)
    assert node.one(put(b"k", b"3")) == put_result(6, None)  # unfenced writes are still not checked


def test_a_fenced_txn_fences_its_compares_and_the_branch_that_runs(store: Store) -> None:
    node = Node(store)
    fenced = txn((compare(b"c", VERSION, EQ, number=1),), (put(b"s", b"1"),), (get(b"f"), delete(b"d")), 7)
    assert node.one(fenced) == txn_result(1, False, (get_result(None), delete_result(1, False, None)))
    for key in (b"c", b"f", b"d"):
        assert is_stale(node.one(put(key, b"x", fencing_token=6))), key
    assert node.one(put(b"s", b"x", fencing_token=6)) == put_result(5, None)  # the branch that did not run


def test_a_stale_fenced_txn_applies_nothing_and_records_no_token(store: Store) -> None:
    node = Node(store)
    node.apply(put(b"locked", b"a", fencing_token=10))
    assert is_stale(node.one(txn((), (put(b"free", b"x"), get(b"locked")), (), fencing_token=9)))
    assert node.machine.get(b"free") is None
    assert node.one(put(b"free", b"y", fencing_token=1)) == put_result(3, None)  # 9 was never recorded


def test_a_fenced_txn_takes_its_token_once(store: Store) -> None:
    node = Node(store)
    both = node.one(txn((), (put(b"k", b"1", fencing_token=5),), (), fencing_token=5))
    assert both is not None and both.error.code == pb.INVALID_ARGUMENT
    assert "give it once" in both.error.message
    assert node.machine.get(b"k") is None


# -- client dedup --------------------------------------------------------------------------


def test_a_retried_request_is_applied_once_and_answered_the_same(store: Store) -> None:
    node = Node(store)
    request = command("alice", 1, put(b"k", b"v", prev_kv=True))
    first = node.one(request)
    assert node.one(command("bob", 1, put(b"k", b"w"))) == put_result(2, None)
    assert node.one(request) == first == put_result(1, None)
    assert node.machine.get(b"k") == kv(b"k", b"w", 1, 2, 2, 0)
    node.restart()
    assert node.one(request) == first
    assert node.machine.get(b"k") == kv(b"k", b"w", 1, 2, 2, 0)


def test_a_retry_in_the_same_batch_sees_the_first_application(store: Store) -> None:
    node = Node(store)
    request = command("alice", 1, put(b"k", b"v"))
    assert node.apply(request, request) == [put_result(1, None), put_result(1, None)]
    assert node.machine.get(b"k") == kv(b"k", b"v", 1, 1, 1, 0)


def test_a_request_committed_after_a_later_one_is_applied(store: Store) -> None:
    """Pipelined requests of one client may commit out of seq order: the lower one never ran."""
    node = Node(store)
    node.apply(command("alice", 5, put(b"k", b"v5")))
    assert node.one(command("alice", 4, put(b"k", b"v4"))) == put_result(2, None)
    assert node.machine.get(b"k") == kv(b"k", b"v4", 1, 2, 2, 0)
    assert node.one(command("alice", 6, put(b"k", b"v6"))) == put_result(3, None)


def test_out_of_order_seqs_within_the_window_each_apply_once(store: Store) -> None:
    node = Node(store, dedup_window=8)
    seqs = (3, 1, 8, 2, 5)  # in commit order: seq 3 is applied at revision 1, seq 1 at 2, ...
    requests = [command("alice", seq, put(f"k{seq}".encode(), b"v")) for seq in seqs]
    first = node.apply(*requests[:3])
    second = node.apply(*requests[3:], *requests)  # the later ones, then a retry of each
    applied = [put_result(revision, None) for revision in range(1, 6)]
    assert first + second[:2] == applied
    assert second[2:] == applied
    node.restart()
    assert node.apply(*requests) == applied
    # Each key was written once, at the revision its request was first applied.
    written = [kv(f"k{seq}".encode(), b"v", rev, rev, 1, 0) for rev, seq in enumerate(seqs, start=1)]
    assert node.machine.scan(b"") == (sorted(written, key=lambda kv: kv.key), False)


@pytest.mark.parametrize("restart", [False, True])
def test_a_retry_after_later_requests_returns_the_original_result(store: Store, restart: bool) -> None:
    node = Node(store)
    request = command("alice", 1, put(b"k", b"v1", prev_kv=True))
    node.apply(put(b"k", b"v0"))
    first = node.one(request)
    assert first == put_result(2, kv(b"k", b"v0", 1, 1, 1, 0))
    node.apply(*(command("alice", seq, put(b"k", f"v{seq}".encode())) for seq in range(2, 6)))
    if restart:
        node.restart()
    before = everything(store.engine)
    assert node.one(request) == first
    assert node.machine.get(b"k") == kv(b"k", b"v5", 1, 6, 6, 0)
    # Nothing but the applied index moved: no data, fence or dedup record was written.
    changed = set(everything(store.engine)) ^ set(before)
    assert {key[:1] for key, _ in changed} == {b"A"}


def is_too_old(result: Answer, seq: int, client: str) -> bool:
    return (
        result is not None
        and result.error.code == pb.INVALID_ARGUMENT
        and result.error.message.startswith(
            f"request seq {seq} of client {client!r} is too old to tell whether it was applied; "
        )
    )


@pytest.mark.parametrize("restart", [False, True])
def test_a_seq_at_or_below_the_window_edge_is_refused(store: Store, restart: bool) -> None:
    node = Node(store, dedup_window=4)
    node.apply(*(command("alice", seq, put(b"k", f"v{seq}".encode())) for seq in (1, 2, 3, 4, 5, 6)))
    node.apply(command("alice", 20, put(b"j", b"v20")))  # the edge is now 16
    if restart:
        node.restart()
    before = everything(store.engine)
    # Seqs 1 and 2 were pushed out of the window; 7 never ran, but below the edge it is
    # indistinguishable from a forgotten one.
    for seq in (1, 2, 7, 16):
        assert is_too_old(node.one(command("alice", seq, put(b"k", b"again"))), seq, "alice")
    assert {key[:1] for key, _ in set(everything(store.engine)) ^ set(before)} == {b"A"}
    assert node.machine.get(b"k") == kv(b"k", b"v6", 1, 6, 6, 0)
    # Remembered ones are still answered; one above the edge is new; other clients are not affected.
    assert node.one(command("alice", 5, put(b"k", b"again"))) == put_result(5, None)
    assert node.one(command("alice", 17, put(b"k", b"v17"))) == put_result(13, None)
    assert node.one(command("bob", 1, put(b"k", b"bob"))) == put_result(14, None)
    # Only the window's seqs (6, 17, 20 and 5 — 3 and 4 went when 17 and 20 came) are kept.
    assert node.one(command("alice", 6, put(b"k", b"again"))) == put_result(6, None)
    assert is_too_old(node.one(command("alice", 4, put(b"k", b"again"))), 4, "alice")


def test_a_seq_reused_for_another_kind_of_request_is_refused(store: Store) -> None:
    node = Node(store)
    assert node.one(command("alice", 1, put(b"k", b"v"))) == put_result(1)
    reused = node.one(command("alice", 1, delete(b"k")))
    assert reused.error.code == pb.INVALID_ARGUMENT and "another kind of request" in reused.error.message
    assert node.machine.get(b"k") == kv(b"k", b"v", 1, 1, 1, 0)


def test_seq_zero_turns_dedup_off(store: Store) -> None:
    node = Node(store)
    request = command("alice", 0, put(b"k", b"v"))
    node.apply(request, request)
    kv = node.machine.get(b"k")
    assert kv is not None and kv.version == 2


def test_an_error_result_is_remembered_too(store: Store) -> None:
    node = Node(store)
    node.apply(put(b"k", b"a", fencing_token=5))
    stale = command("alice", 1, put(b"k", b"b", fencing_token=4))
    first = node.one(stale)
    assert is_stale(first)
    node.restart()
    assert node.one(stale) == first


@pytest.mark.parametrize("restart", [False, True])
def test_dedup_table_evicts_the_least_recently_applied_client(store: Store, restart: bool) -> None:
    node = Node(store, max_dedup_clients=2)
    requests = {name: command(name, 1, put(name.encode(), b"v")) for name in ("a", "b", "c")}
    node.apply(requests["a"], requests["b"])
    node.apply(command("a", 2, put(b"a", b"v2")))  # a is now more recent than b
    if restart:
        node.restart()  # the order must survive a restart
    node.apply(requests["c"])  # evicts b, the least recently applied
    assert node.one(command("a", 2, put(b"a", b"ignored"))) == put_result(3, None)  # still known
    assert node.one(requests["b"]) == put_result(6, None)  # forgotten: applied again
    kv = node.machine.get(b"b")
    assert kv is not None and kv.version == 2


def dedup_records(engine: Engine, partition: int = PARTITION) -> list[tuple[bytes, bytes]]:
    """The partition's dedup records: one per client it remembers."""
    return [(key, value) for key, value in partition_keys(engine, partition) if key[:1] == b"C"]


def remembered_seqs(engine: Engine, partition: int = PARTITION) -> dict[bytes, list[int]]:
    """Client id -> the seqs whose results its stored record holds."""
    return {
        key[5:]: [seq for seq, _, _ in decode_client_dedup(value)[3]] for key, value in dedup_records(engine, partition)
    }


@pytest.mark.parametrize("restart", [False, True])
def test_the_partition_bound_forgets_the_oldest_results_and_refuses_their_seqs(
    store: Store, restart: bool
) -> None:
    node = Node(store, max_dedup_results=3)
    node.apply(
        command("a", 1, put(b"a", b"1")),
        command("a", 2, put(b"a", b"2")),
        command("b", 1, put(b"b", b"1")),
    )
    if restart:
        node.restart()
    node.apply(command("c", 1, put(b"c", b"1")))  # forgets a's seq 1, the oldest result
    if restart:
        node.restart()
    # Seq 1 is well inside a's window, but it was forgotten: applying it again could apply it twice.
    assert is_too_old(node.one(command("a", 1, put(b"a", b"again"))), 1, "a")
    assert node.one(command("a", 2, put(b"a", b"again"))) == put_result(2, None)
    assert node.one(command("b", 1, put(b"b", b"again"))) == put_result(3, None)
    # Three results are stored, in one record per client.
    assert remembered_seqs(store.engine) == {b"a": [2], b"b": [1], b"c": [1]}
    # Each new request forgets the oldest result left: a's seq 2, then b's seq 1.
    assert node.one(command("a", 3, put(b"a", b"3"))) == put_result(8, None)
    assert is_too_old(node.one(command("a", 2, put(b"a", b"again"))), 2, "a")
    assert node.one(command("c", 2, put(b"c", b"2"))) == put_result(10, None)
    assert is_too_old(node.one(command("b", 1, put(b"b", b"again"))), 1, "b")
    assert node.one(command("a", 3, put(b"a", b"again"))) == put_result(8, None)
    kv = node.machine.get(b"b")
    assert kv is not None and kv.version == 1


def test_the_client_bound_forgets_a_whole_window(store: Store) -> None:
    node = Node(store, max_dedup_clients=1)
    node.apply(command("a", 1, put(b"k", b"1")), command("a", 2, put(b"k", b"2")))
    node.apply(command("b", 1, put(b"k", b"3")))
    assert [key for key, _ in dedup_records(store.engine)] == [b"C" + PARTITION.to_bytes(4, "big") + b"b"]
    # A forgotten client is a new one: its retry is applied again (the bound's documented cost).
    assert node.one(command("a", 1, put(b"k", b"again"))) == put_result(4, None)


def dedup_workload(seed: int, count: int = 400) -> list[WriteRequest | None]:
    """Several clients pipelining: each client's seqs arrive shuffled within a span, with
    retries of earlier seqs (some long after) and the occasional command without dedup."""
    rng = random.Random(seed)
    next_seq = {f"client{n}": 1 for n in range(6)}
    sent: dict[str, list[int]] = {client: [] for client in next_seq}
    items: list[WriteRequest | None] = []
    for n in range(count):
        client = rng.choice(sorted(next_seq))
        roll = rng.random()
        if roll < 0.05:
            items.append(None if roll < 0.02 else put(b"plain", bytes([n % 251])))
            continue
        if roll < 0.35 and sent[client]:
            seq = rng.choice(sent[client])  # a retry
        else:
            seq = next_seq[client] + rng.randrange(6)  # may overtake seqs still in flight
            next_seq[client] = max(next_seq[client], seq - 4)
            sent[client].append(seq)
        items.append(command(client, seq, put(f"{client}/{seq % 9}".encode(), f"{n}".encode())))
    return items


def test_replicas_with_tight_dedup_bounds_decide_and_store_identically(tmp_path: Path) -> None:
    memory, leveldb = Store("memory", tmp_path / "m"), Store("leveldb", tmp_path / "l")
    bounds = {"max_dedup_clients": 4, "dedup_window": 5, "max_dedup_results": 12}
    try:
        replicas = [Node(memory, **bounds), Node(leveldb, **bounds)]
        items = dedup_workload(seed=3)
        answers = []
        for node, step in zip(replicas, (7, 50), strict=True):
            node_answers: list[Answer] = []
            for start in range(0, len(items), step):
                node_answers.extend(node.apply(*items[start : start + step]))
                if node.store is leveldb and start % 150 == 0:
                    node.restart()  # a reloaded table must decide as the one that was stored
            answers.append(node_answers)
        assert answers[0] == answers[1]
        # The workload exercised every branch: applied, answered from the window, refused.
        assert any(
            is_too_old(answer, item.header.request_seq, item.header.client_id)
            for answer, item in zip(answers[0], items, strict=True)
            if item is not None
        )
        assert everything(memory.engine) == everything(leveldb.engine)
        seqs = remembered_seqs(memory.engine)
        assert len(seqs) <= 4 and sum(map(len, seqs.values())) <= 12
    finally:
        memory.engine.close()
        leveldb.engine.close()


@pytest.mark.parametrize(
    "record",
    [
        b"garbage",
        msgpack.packb([1, 0, 1, [[1, 1]]]),  # a result without its response
        msgpack.packb([1, 0, 1, [[2, 1, b""]]]),  # a result above the highest seq applied
        msgpack.packb([2, 0, 2, [[1, 1, b""], [1, 2, b""]]]),  # one seq remembered twice
    ],
)
def test_a_dedup_record_that_does_not_decode_is_corruption(store: Store, record: bytes) -> None:
    node = Node(store)
    node.apply(command("alice", 1, put(b"k", b"v")))
    batch = store.engine.new_batch()
    batch.put(b"C" + PARTITION.to_bytes(4, "big") + b"alice", record)
    store.engine.write(batch, sync=True)
    with pytest.raises(CorruptionError):
        node.restart()


@pytest.mark.parametrize("restart", [False, True])
def test_a_client_s_lowest_pending_seq_forgets_its_answers_below_it(store: Store, restart: bool) -> None:
    node = Node(store)
    pipelined = [command("alice", seq, put(f"k{seq}".encode(), b"v"), lowest_pending=1) for seq in range(1, 6)]
    node.apply(*pipelined)
    assert remembered_seqs(store.engine) == {b"alice": [1, 2, 3, 4, 5]}
    # Answers to 1-3 arrived: the client now awaits 4 and up, and says so with its next write.
    assert node.one(command("alice", 6, put(b"k6", b"v"), lowest_pending=4)) == put_result(6, None)
    assert remembered_seqs(store.engine) == {b"alice": [4, 5, 6]}
    if restart:
        node.restart()
    before = everything(store.engine)
    # A late copy of seq 3 (sent before its answer arrived) is refused, not applied twice...
    late = node.one(command("alice", 3, put(b"k3", b"v"), lowest_pending=1))
    assert is_too_old(late, 3, "alice") and "remembers only seqs above 3" in late.error.message
    assert {key[:1] for key, _ in set(everything(store.engine)) ^ set(before)} == {b"A"}
    # ... while the ones still awaited are answered as the first time.
    assert node.one(pipelined[3]) == put_result(4, None)
    assert node.one(command("alice", 5, put(b"k5", b"v"), lowest_pending=5)) == put_result(5, None)
    assert remembered_seqs(store.engine) == {b"alice": [5, 6]}
    kv3 = node.machine.get(b"k3")
    assert kv3 is not None and kv3.version == 1


def test_a_request_below_the_highest_floor_seen_is_refused(store: Store) -> None:
    """Requests commit out of order: once a write said the client awaits nothing below 8, a
    request below 8 reaching the log later is a stale copy, whatever floor it carried itself."""
    node = Node(store)
    node.apply(command("alice", 8, put(b"k", b"v8"), lowest_pending=8))
    assert is_too_old(node.one(command("alice", 7, put(b"k", b"v7"), lowest_pending=5)), 7, "alice")
    # A later seq that was sent before the floor rose is still new; the floor does not go down.
    assert node.one(command("alice", 9, put(b"k", b"v9"), lowest_pending=6)) == put_result(3, None)
    assert is_too_old(node.one(command("alice", 6, put(b"k", b"v6"), lowest_pending=6)), 6, "alice")
    assert node.machine.get(b"k") == kv(b"k", b"v9", 1, 3, 2, 0)
    # Other clients have floors of their own.
    assert node.one(command("bob", 7, put(b"j", b"bob"), lowest_pending=7)) == put_result(5, None)


def test_dedup_state_is_bounded_by_the_requests_in_flight(store: Store) -> None:
    """A client with 8 writes in flight whose answers arrive in order: each write says the
    oldest one it awaits, and the partition keeps no more than those 8 answers however many
    writes there were, in one record (the window would keep 1024 and the state of each)."""
    node = Node(store)
    in_flight = 8
    for seq in range(1, 501):
        oldest_awaited = max(1, seq - in_flight + 1)
        node.apply(command("alice", seq, put(b"k", b"v"), lowest_pending=oldest_awaited))
        seqs = remembered_seqs(store.engine)[b"alice"]
        assert seqs == list(range(oldest_awaited, seq + 1))
    assert len(dedup_records(store.engine)) == 1


@st.composite
def pipelining_client(draw: st.DrawFn) -> list[tuple[str, int]]:
    """What a client and the log do, step by step: issue a write (at most 4 in flight), resend
    one in flight, receive the answer to one (or give up on it), let an old copy of any earlier
    write reach the log late, commit what was sent (one apply batch), restart, or move to a
    replica restored from a snapshot."""
    kinds = st.sampled_from(["issue", "issue", "resend", "answer", "give up", "late", "commit", "restart", "snapshot"])
    return draw(st.lists(st.tuples(kinds, st.integers(0, 63)), max_size=60))


@settings(max_examples=150, deadline=None)
@given(pipelining_client())
def test_retries_apply_once_across_restarts_and_snapshots(steps: list[tuple[str, int]]) -> None:
    """The dedup protocol from the client's side: every write is applied at most once, a write
    still awaited is never refused and is answered as it was first, and the partition keeps
    no answer below the lowest seq the client said it awaits."""
    stores = [Store("memory", Path("unused"))]
    node = Node(stores[0])
    pending: list[int] = []  # seqs in flight, ascending
    sent: dict[int, WriteRequest] = {}  # every copy sent, by seq: the last one (with the floor it carried)
    first_answer: dict[int, WriteResponse] = {}
    queued: list[WriteRequest] = []  # sent, not committed yet
    floor = 0  # the highest lowest_pending_seq the partition has seen
    next_seq = 1

    def send(seq: int) -> None:
        request = command("c", seq, put(f"k{seq}".encode(), b"v"), lowest_pending=pending[0] if pending else next_seq)
        sent[seq] = request
        queued.append(request)

    for kind, choice in steps:
        if kind == "issue" and len(pending) < 4:
            pending.append(next_seq)
            next_seq += 1
            send(pending[-1])
        elif kind == "resend" and pending:
            send(pending[choice % len(pending)])
        elif kind in ("answer", "give up") and pending:
            seq = pending[choice % len(pending)]
            if kind == "give up" or seq in first_answer:
                pending.remove(seq)
        elif kind == "late" and sent:
            queued.append(sent[sorted(sent)[choice % len(sent)]])
        elif kind == "commit" and queued:
            answers = node.apply(*queued)
            for request, answer in zip(queued, answers, strict=True):
                seq = request.header.request_seq
                floor = max(floor, min(seq, request.header.lowest_pending_seq))
                assert answer is not None
                if answer.error.code:
                    assert is_too_old(answer, seq, "c") and seq not in pending
                elif seq in first_answer:
                    assert answer == first_answer[seq]
                else:
                    first_answer[seq] = answer
            queued = []
            held = remembered_seqs(node.store.engine).get(b"c", [])
            assert all(seq >= floor for seq in held)
        elif kind == "restart":
            node.restart()
        elif kind == "snapshot":
            snapshot = node.machine.snapshot()
            stores.append(Store("memory", Path("unused")))
            node = Node(stores[-1])
            batch = stores[-1].engine.new_batch()
            node.machine.restore(batch, snapshot)
            stores[-1].engine.write(batch, sync=True)
    for seq in sent:
        written = node.machine.get(f"k{seq}".encode())
        assert written is None or written.version == 1  # applied at most once


# -- apply state ---------------------------------------------------------------------------


def test_apply_state_is_written_atomically_with_the_data_it_covers(store: Store) -> None:
    node = Node(store)
    node.apply(put(b"k", b"old"), command("alice", 1, put(b"j", b"old")))
    node.apply(put(b"k", b"new"), command("alice", 2, put(b"j", b"new")), write=False)  # lost in a crash
    assert node.machine.applied_index == 4
    node.restart()
    assert node.machine.applied_index == 2
    assert node.machine.get(b"k") == kv(b"k", b"old", 1, 1, 1, 0)
    # The dedup table went back with the data: seq 2 is new again.
    assert node.apply(put(b"k", b"new"), command("alice", 2, put(b"j", b"new"))) == [
        put_result(3, None),
        put_result(4, None),
    ]


def test_several_applies_into_one_batch_see_each_others_writes(store: Store) -> None:
    node = Node(store)
    batch = store.engine.new_batch()
    node.machine.apply(batch, [entry_for(1, put(b"k", b"v", fencing_token=3))])
    outcomes = node.machine.apply(
        batch,
        [
            entry_for(2, txn((compare(b"k", VALUE, EQ, value=b"v"),), (put(b"k", b"w"),), ())),
            entry_for(3, put(b"k", b"stale", fencing_token=2)),
        ],
    )
    assert outcomes[0][1] == txn_result(2, True, (put_result(2, None),))
    assert is_stale(outcomes[1][1])
    store.engine.write(batch, sync=True)
    assert node.machine.get(b"k") == kv(b"k", b"w", 1, 2, 2, 0)


# -- scans ---------------------------------------------------------------------------------


def test_scan_pages_through_many_keys_in_order(store: Store) -> None:
    node = Node(store)
    keys = [f"key{n:04d}".encode() for n in range(250)]
    node.apply(*(put(key, key.upper()) for key in reversed(keys)))
    Node(store, OTHER_PARTITION).apply(put(b"key0100x", b"other partition"))

    pages: list[list[pb.KeyValue]] = []
    start, more = b"", True
    while more:
        page, more = node.machine.scan(start, None, 100)
        pages.append(page)
        start = page[-1].key + b"\x00"
    assert [len(page) for page in pages] == [100, 100, 50]
    assert [kv.key for page in pages for kv in page] == keys
    assert all(kv.value == kv.key.upper() for page in pages for kv in page)

    assert node.machine.scan(b"key0010", b"key0013", 0) == (
        [node.machine.get(k) for k in (b"key0010", b"key0011", b"key0012")],
        False,
    )
    assert node.machine.scan(b"key0010", b"key0013", 3)[1] is False  # exactly the limit: no more
    assert node.machine.scan(b"key0010", b"key0013", 2)[1] is True
    assert len(node.machine.scan(b"key0200", b"")[0]) == 50
    assert node.machine.scan(b"zzz") == ([], False)


# -- leases and locks ----------------------------------------------------------------------


def granted(node: Node, ttl: int = 10, lease: int = 0) -> int:
    response = node.one(grant(ttl, lease))
    assert isinstance(response, pb.LeaseGrantResponse) and not response.error.code, response
    return response.id


def test_a_grant_answers_an_id_of_this_partition_and_the_ttl(store: Store) -> None:
    node = Node(store)
    assert node.one(grant(30)) == pb.LeaseGrantResponse(header=_header(1), id=lease_id(PARTITION, 1), ttl_seconds=30)
    chosen = lease_id(PARTITION, 77)
    assert granted(node, 5, chosen) == chosen
    assert node.machine.leases.get(chosen) == Lease(chosen, 5, 0, 2)
    for bad in (grant(0), grant(5, chosen), grant(5, lease_id(OTHER_PARTITION, 3))):
        assert comparable(node.one(bad)) == refused(bad, pb.INVALID_ARGUMENT)
    node.restart()
    assert [lease.id for lease in node.machine.leases.leases()] == [lease_id(PARTITION, 1), chosen]


def test_a_retried_grant_is_answered_with_the_same_lease(store: Store) -> None:
    node = Node(store)
    first = node.one(command("alice", 1, grant(10)))
    assert node.one(command("alice", 1, grant(10))) == first
    assert len(node.machine.leases) == 1


def test_a_put_naming_a_missing_lease_or_one_of_another_partition_is_refused(store: Store) -> None:
    node = Node(store)
    missing = lease_id(PARTITION, 9)
    refusal = node.one(put(b"k", b"v", lease=missing))
    assert refusal.error.code == pb.LEASE_NOT_FOUND and str(missing) in refusal.error.message
    foreign = lease_id(OTHER_PARTITION, 1)
    refusal = node.one(put(b"k", b"v", lease=foreign))
    assert refusal.error.code == pb.CROSS_PARTITION
    for needed in (f"partition {PARTITION}", f"partition {OTHER_PARTITION}", "{hash tag}", "Session"):
        assert needed in refusal.error.message
    assert node.machine.get(b"k") is None


def test_a_txn_with_a_put_naming_a_missing_lease_changes_nothing(store: Store) -> None:
    node = Node(store)
    lease = granted(node)
    node.apply(put(b"a", b"1"))
    answer = node.one(txn((), (put(b"a", b"2"), put(b"b", b"1", lease=lease + 1), put(b"c", b"1", lease=lease)), ()))
    assert answer.error.code == pb.LEASE_NOT_FOUND
    assert node.machine.get(b"a").value == b"1" and node.machine.get(b"c") is None  # type: ignore[union-attr]
    assert node.machine.leases.keys(lease) == []


def test_expiry_deletes_every_attached_key_at_its_revision(store: Store) -> None:
    node = Node(store)
    lease = granted(node)  # revision 1
    other = granted(node)  # revision 2
    node.apply(put(b"a", b"1", lease=lease), put(b"b", b"1", lease=lease), put(b"c", b"1", lease=other), put(b"d", b"1"))
    node.machine.take_events()
    assert node.apply(expire((lease, 1))) == [None]
    assert node.machine.get(b"a") is None and node.machine.get(b"b") is None
    assert node.machine.get(b"c") is not None and node.machine.get(b"d") is not None
    assert lease not in node.machine.leases and node.machine.leases.keys(lease) == []
    changes, events = node.machine.take_events()
    assert [(c.kind, c.key, c.revision) for c in changes] == [(ChangeKind.DELETE, b"a", 7), (ChangeKind.DELETE, b"b", 7)]
    assert changes[0].prev_kv() == kv(b"a", b"1", 3, 3, 1, lease) and changes[0].kv() is None
    assert events == [LeaseRemoved(lease, expired=True)]


def test_an_expiry_or_checkpoint_meant_for_an_earlier_lease_of_the_same_id_does_nothing(store: Store) -> None:
    node = Node(store)
    lease = lease_id(PARTITION, 5)
    granted(node, 10, lease)  # revision 1
    node.apply(revoke(lease))  # revision 2
    granted(node, 10, lease)  # revision 3: the same id again
    node.apply(put(b"k", b"v", lease=lease), checkpoint(lease, 1, 500), expire((lease, 1)))
    assert node.machine.leases.get(lease) == Lease(lease, 10, 0, 3) and node.machine.get(b"k") is not None
    node.apply(checkpoint(lease, 3, 500))
    assert node.machine.leases.get(lease) == Lease(lease, 10, 500, 3)
    assert node.machine.take_events()[1][-1] == LeaseCheckpointed(lease, 500)


def test_revoke_deletes_the_keys_and_a_second_revoke_finds_no_lease(store: Store) -> None:
    node = Node(store)
    lease = granted(node)
    node.apply(put(b"a", b"1", lease=lease))
    assert node.one(revoke(lease)) == pb.LeaseRevokeResponse(header=_header(3))
    assert node.machine.get(b"a") is None
    assert node.one(revoke(lease)).error.code == pb.LEASE_NOT_FOUND
    assert node.one(put(b"a", b"2", lease=lease)).error.code == pb.LEASE_NOT_FOUND


def test_a_key_moved_to_another_lease_or_deleted_leaves_its_old_lease(store: Store) -> None:
    node = Node(store)
    first, second = granted(node), granted(node)
    node.apply(put(b"moved", b"1", lease=first), put(b"freed", b"1", lease=first), put(b"gone", b"1", lease=first))
    node.apply(put(b"moved", b"2", lease=second), put(b"freed", b"2"), delete(b"gone"))
    assert node.machine.leases.keys(first) == [] and node.machine.leases.keys(second) == [b"moved"]
    node.apply(revoke(first))
    assert [kv.key for kv in node.machine.scan(b"")[0]] == [b"freed", b"moved"]


def test_a_lock_key_is_created_on_the_lease_and_its_create_revision_is_the_token(store: Store) -> None:
    node = Node(store)
    holder, waiter = granted(node), granted(node)  # revisions 1 and 2
    first = node.one(lock(b"orders", holder))
    assert first == pb.LockResponse(header=_header(3), key=lock_key(b"orders", holder), fencing_token=3)
    assert node.machine.get(first.key) == kv(first.key, b"", 3, 3, 1, holder)  # type: ignore[union-attr]
    second = node.one(lock(b"orders", waiter))
    assert second.fencing_token == 4  # type: ignore[union-attr]
    again = node.one(lock(b"orders", holder))  # the same lease asks again: same key, same token
    assert (again.key, again.fencing_token) == (first.key, 3)  # type: ignore[union-attr]
    node.apply(lock(b"{orders}/x", waiter))  # another lock, whose keys sort among these
    assert node.machine.lock_queue(b"orders") == [(3, first.key), (4, second.key)]  # type: ignore[union-attr]
    assert node.one(unlock(first.key)) == pb.UnlockResponse(header=_header(7))  # type: ignore[union-attr]
    assert node.one(unlock(first.key)).error.code == pb.LOCK_NOT_HELD  # type: ignore[union-attr]
    node.apply(expire((waiter, 2)))
    assert node.machine.lock_queue(b"orders") == []
    relocked = node.one(lock(b"orders", holder))
    assert relocked.fencing_token == 10  # type: ignore[union-attr]  # a later holder: a larger token


def test_a_lock_needs_an_existing_lease_of_its_partition_and_unlock_a_lock_key(store: Store) -> None:
    node = Node(store)
    assert node.one(lock(b"orders", lease_id(PARTITION, 4))).error.code == pb.LEASE_NOT_FOUND
    assert node.one(lock(b"orders", lease_id(OTHER_PARTITION, 4))).error.code == pb.CROSS_PARTITION
    assert node.one(unlock(b"orders")).error.code == pb.INVALID_ARGUMENT
    assert node.machine.scan(b"") == ([], False)


def test_applied_changes_are_reported_in_order_with_their_values(store: Store) -> None:
    node = Node(store)
    lease = granted(node)
    node.apply(put(b"a", b"1"), txn((), (put(b"a", b"2", lease=lease), delete(b"b"), put(b"b", b"3")), ()))
    changes, events = node.machine.take_events()
    assert [(c.kind, c.key, c.revision) for c in changes] == [
        (ChangeKind.PUT, b"a", 2),
        (ChangeKind.PUT, b"a", 3),
        (ChangeKind.PUT, b"b", 3),
    ]
    assert changes[1].kv() == kv(b"a", b"2", 2, 3, 2, lease)
    assert changes[1].prev_kv() == kv(b"a", b"1", 2, 2, 1, 0)
    assert events == [LeaseGranted(Lease(lease, 10, 0, 1))]
    assert node.machine.take_events() == ([], [])


# -- snapshots -----------------------------------------------------------------------------


SNAPSHOT_LEASE = lease_id(PARTITION, 50)


def build_state(node: Node) -> None:
    node.apply(
        put(b"a", b"1"),
        grant(lease=SNAPSHOT_LEASE),
        put(b"b", b"2", lease=SNAPSHOT_LEASE),
        command("alice", 3, put(b"c", b"3", fencing_token=4)),
        delete(b"b", fencing_token=2),
        put(b"e", b"5", lease=SNAPSHOT_LEASE),
        command("bob", 1, txn((), (put(b"d", b"4"),), ())),
    )


def partition_keys(engine: Engine, partition: int) -> list[tuple[bytes, bytes]]:
    own = (b"A", b"C", b"D", b"E", b"F", b"K")
    return [
        (key, value)
        for key, value in everything(engine)
        if key[:1] in own and int.from_bytes(key[1:5], "big") == partition
    ]


def test_snapshot_restores_an_equal_partition(store: Store, tmp_path: Path) -> None:
    source = Node(store)
    build_state(source)
    snapshot = source.machine.snapshot()
    assert snapshot.meta == source.machine.applied == SnapshotMeta(7, 1)

    target_store = Store("memory" if store.kind == "leveldb" else "leveldb", tmp_path / "target")
    try:
        target = Node(target_store)
        target.apply(put(b"a", b"stale"), put(b"zz", b"gone"), command("carol", 1, put(b"x", b"gone")))
        Node(target_store, OTHER_PARTITION).apply(put(b"a", b"untouched"))
        unrelated = (hard_state_key(PARTITION), b"raft state")
        batch = target_store.engine.new_batch()
        batch.put(*unrelated)
        target.machine.restore(batch, snapshot)
        target_store.engine.write(batch, sync=True)

        assert target.machine.applied == source.machine.applied
        assert partition_keys(target_store.engine, PARTITION) == partition_keys(store.engine, PARTITION)
        assert target_store.engine.get(unrelated[0]) == unrelated[1]
        assert Node(target_store, OTHER_PARTITION).machine.get(b"a") is not None
        # Dedup, fences and leases came along: the restored replica behaves as the source would.
        assert target.machine.leases.leases() == source.machine.leases.leases()
        for node in (source, target):
            assert node.apply(
                command("alice", 3, put(b"c", b"again")),
                put(b"c", b"stale", fencing_token=3),
                put(b"b", b"stale", fencing_token=1),
                revoke(SNAPSHOT_LEASE),
            )[0] == put_result(4, None)
            assert node.machine.get(b"e") is None  # it went with its lease
        assert partition_keys(target_store.engine, PARTITION) == partition_keys(store.engine, PARTITION)
        target.restart()
        assert target.machine.applied_index == 11
    finally:
        target_store.engine.close()


def test_snapshot_round_trips_the_dedup_windows(store: Store, tmp_path: Path) -> None:
    bounds = {"max_dedup_clients": 3, "dedup_window": 4, "max_dedup_results": 9}
    items = dedup_workload(seed=11, count=200)
    source = Node(store, **bounds)
    source.apply(*items[:120])
    snapshot = source.machine.snapshot()

    target_store = Store("memory" if store.kind == "leveldb" else "leveldb", tmp_path / "target")
    try:
        target = Node(target_store, **bounds)
        target.apply(command("client1", 1, put(b"x", b"gone")), command("zed", 7, put(b"x", b"gone")))
        batch = target_store.engine.new_batch()
        target.machine.restore(batch, snapshot)
        target_store.engine.write(batch, sync=True)
        assert dedup_records(target_store.engine) == dedup_records(store.engine)
        assert target.machine.snapshot() == snapshot
        # The restored windows decide as the source's: same answers, same records after.
        assert target.apply(*items[120:]) == source.apply(*items[120:])
        assert partition_keys(target_store.engine, PARTITION) == partition_keys(store.engine, PARTITION)
    finally:
        target_store.engine.close()


def test_restore_refuses_a_snapshot_with_a_bad_dedup_table(store: Store) -> None:
    node = Node(store)
    node.apply(command("alice", 1, put(b"k", b"v")))
    good = node.machine.snapshot()
    fields = list(msgpack.unpackb(good.data, use_list=True))
    fields[4] = [(suffix, b"garbage") for suffix, _ in fields[4]]
    with pytest.raises(CodecError):
        node.machine.restore(store.engine.new_batch(), Snapshot(good.meta, msgpack.packb(fields)))
    assert node.machine.snapshot() == good


def test_restore_then_apply_in_the_same_batch(store: Store) -> None:
    source = Node(store, OTHER_PARTITION)
    source.apply(put(b"k", b"snap"), command("alice", 1, put(b"j", b"1")))
    snapshot = source.machine.snapshot()

    node = Node(store)
    node.apply(put(b"k", b"old"), put(b"gone", b"x"))
    batch = store.engine.new_batch()
    node.machine.restore(batch, snapshot)
    outcomes = node.machine.apply(
        batch,
        [
            entry_for(3, command("alice", 1, put(b"j", b"retry"))),
            entry_for(4, txn((compare(b"gone", VERSION, EQ, number=0),), (put(b"k", b"after"),), ())),
        ],
    )
    store.engine.write(batch, sync=True)
    assert [result for _, result in outcomes] == [
        put_result(2, None),
        txn_result(4, True, (put_result(4, None),)),
    ]
    assert node.machine.get(b"k") == kv(b"k", b"after", 1, 4, 2, 0)
    assert node.machine.get(b"gone") is None


def test_restore_refuses_mismatched_or_older_snapshots(store: Store) -> None:
    node = Node(store)
    node.apply(put(b"a", b"1"), put(b"a", b"2"))
    at_2 = node.machine.snapshot()
    with pytest.raises(ValueError):
        node.machine.restore(store.engine.new_batch(), Snapshot(SnapshotMeta(3, 1), at_2.data))
    node.apply(put(b"a", b"3"))
    with pytest.raises(ValueError):
        node.machine.restore(store.engine.new_batch(), at_2)
    with pytest.raises(CodecError):
        node.machine.restore(store.engine.new_batch(), Snapshot(SnapshotMeta(3, 1), b"\x01"))


# -- determinism ---------------------------------------------------------------------------


def mixed_workload() -> list[Item]:
    items: list[Item] = []
    leases = [lease_id(PARTITION, number) for number in (1, 2, 3)]
    for n in range(300):
        key = f"k{n % 37}".encode()
        lease = leases[n % 3]
        match n % 6:
            case 0:
                items.append(command(f"client{n % 5}", n // 5 + 1, put(key, bytes([n % 251]) * (n % 17))))
            case 1:
                items.append(delete(key, prev_kv=True, fencing_token=n % 4))
            case 2:
                items.append(put(key, b"v", lease=lease, fencing_token=n % 7))
            case 3:
                items.append(
                    txn(
                        (compare(key, VERSION, GT, number=1),),
                        (put(key, b"t"), delete(f"k{(n + 1) % 37}".encode())),
                        (get(key),),
                    )
                )
            case 4:
                kinds: list[Item] = [None, grant(5, lease), revoke(lease), expire((lease, 0)), lock(b"job", lease),
                                     unlock(lock_key(b"job", lease)), checkpoint(lease, 0, n)]
                items.append(kinds[n % 7])
            case _:
                items.append(command(f"client{n % 5}", n // 5, put(key, b"dup")))
    return items


def test_replicas_fed_the_same_entries_end_byte_identical(tmp_path: Path) -> None:
    memory, leveldb = Store("memory", tmp_path / "m"), Store("leveldb", tmp_path / "l")
    try:
        replicas = [Node(memory, max_dedup_clients=3), Node(leveldb, max_dedup_clients=3)]
        items = mixed_workload()
        answers = []
        for node in replicas:
            # Different batching on each replica must not matter.
            step = 7 if node.store is memory else 50
            node_answers: list[Answer] = []
            for start in range(0, len(items), step):
                node_answers.extend(node.apply(*items[start : start + step]))
            answers.append(node_answers)
        assert answers[0] == answers[1]
        assert everything(memory.engine) == everything(leveldb.engine)
        assert replicas[0].machine.snapshot() == replicas[1].machine.snapshot()
    finally:
        memory.engine.close()
        leveldb.engine.close()


# -- model check ---------------------------------------------------------------------------


@dataclass
class DictModel:
    """What the applier should do, stated as simply as possible: copy, change, roll back. A
    lease's keys are found by looking at every key's lease."""

    data: dict[bytes, pb.KeyValue] = field(default_factory=dict)
    fences: dict[bytes, int] = field(default_factory=dict)
    leases: set[int] = field(default_factory=set)

    def execute(self, revision: int, request: Item) -> Answer:
        if isinstance(request, LeaseExpiries):
            for expiry in request.expiries:
                self._remove(expiry.id)
            return None
        if isinstance(request, pb.LeaseGrantRequest):
            if request.id in self.leases:
                return refused(request, pb.INVALID_ARGUMENT)
            self.leases.add(request.id)
            return pb.LeaseGrantResponse(header=_header(revision), id=request.id, ttl_seconds=request.ttl_seconds)
        if isinstance(request, pb.LeaseRevokeRequest):
            if not self._remove(request.id):
                return refused(request, pb.LEASE_NOT_FOUND)
            return pb.LeaseRevokeResponse(header=_header(revision))
        if isinstance(request, pb.LockRequest):
            key = lock_key(request.name, request.lease)
            if request.lease not in self.leases:
                return refused(request, pb.LEASE_NOT_FOUND)
            if key not in self.data:
                self.data[key] = kv(key, b"", revision, revision, 1, request.lease)
            return pb.LockResponse(header=_header(revision), key=key, fencing_token=self.data[key].create_revision)
        if isinstance(request, pb.UnlockRequest):
            if self.data.pop(request.key, None) is None:
                return refused(request, pb.LOCK_NOT_HELD)
            return pb.UnlockResponse(header=_header(revision))
        assert request is not None and not isinstance(request, LeaseCheckpoints)
        if not isinstance(request, pb.TxnRequest):
            response = self._op(revision, request)
            assert not isinstance(response, pb.GetResponse), "a put or a delete answers as one"
            return response
        saved = (dict(self.data), dict(self.fences))
        succeeded = all(self._holds(c) for c in request.compare)
        success, failure = ([getattr(o, o.WhichOneof("op")) for o in ops] for ops in (request.success, request.failure))
        branch = success if succeeded else failure
        token = request.fencing_token
        if token:
            if any(not isinstance(op, pb.GetRequest) and op.fencing_token for op in success + failure):
                return refused(request, pb.INVALID_ARGUMENT)
            keys = [c.key for c in request.compare] + [op.key for op in branch]
            if any(token < self.fences.get(key, 0) for key in keys):
                return refused(request, pb.STALE_FENCING_TOKEN)
            self.fences.update((key, token) for key in keys)
        results: list[pb.PutResponse | pb.DeleteResponse | pb.GetResponse] = []
        for op in branch:
            result = self._op(revision, op)
            if isinstance(result, pb.TxnResponse) or result.error.code:
                self.data, self.fences = saved
                return refused(request, result.error.code)
            results.append(result)
        return txn_result(revision, succeeded, results)

    def _op(self, revision: int, op: TxnOp) -> pb.PutResponse | pb.DeleteResponse | pb.GetResponse | pb.TxnResponse:
        old = self.data.get(op.key)
        if isinstance(op, pb.GetRequest):
            return get_result(old)
        token = op.fencing_token
        if token and token < self.fences.get(op.key, 0):
            return refused(op, pb.STALE_FENCING_TOKEN)
        if isinstance(op, pb.PutRequest) and op.lease:
            if lease_partition(op.lease) != PARTITION:
                return refused(op, pb.CROSS_PARTITION)
            if op.lease not in self.leases:
                return refused(op, pb.LEASE_NOT_FOUND)
        if token:
            self.fences[op.key] = token
        if isinstance(op, pb.PutRequest):
            if old is None:
                self.data[op.key] = kv(op.key, op.value, revision, revision, 1, op.lease)
            else:
                self.data[op.key] = kv(op.key, op.value, old.create_revision, revision, old.version + 1, op.lease)
            return put_result(revision, old if op.prev_kv else None)
        if old is not None:
            del self.data[op.key]
        return delete_result(revision, old is not None, old if op.prev_kv else None)

    def _remove(self, lease: int) -> bool:
        if lease not in self.leases:
            return False
        self.leases.discard(lease)
        for key in [key for key, found in self.data.items() if found.lease == lease]:
            del self.data[key]
        return True

    def _holds(self, guard: pb.Compare) -> bool:
        found = self.data.get(guard.key)
        if guard.target == VALUE:
            if found is None:
                return False
            return {
                EQ: found.value == guard.value,
                NE: found.value != guard.value,
                GT: found.value > guard.value,
                LT: found.value < guard.value,
            }[guard.result]
        actual = 0
        if found is not None:
            actual = {VERSION: found.version, MOD: found.mod_revision, CREATE: found.create_revision}[guard.target]
        return {
            EQ: actual == guard.number,
            NE: actual != guard.number,
            GT: actual > guard.number,
            LT: actual < guard.number,
        }[guard.result]


model_keys = st.sampled_from([b"a", b"b", b"c"])
model_values = st.sampled_from([b"", b"x", b"y"])
model_tokens = st.integers(0, 3)
MODEL_LEASES = (lease_id(PARTITION, 1), lease_id(PARTITION, 2))
model_leases = st.sampled_from(MODEL_LEASES)
# No lease, one of the partition's (granted or not), or one of another partition's.
model_put_leases = st.sampled_from((0, *MODEL_LEASES, lease_id(OTHER_PARTITION, 1)))
model_puts = st.builds(put, model_keys, model_values, model_put_leases, st.booleans(), model_tokens)
model_deletes = st.builds(delete, model_keys, st.booleans(), model_tokens)
model_compares = st.builds(
    compare,
    model_keys,
    st.sampled_from(pb.Compare.Target.values()),
    st.sampled_from(pb.Compare.Result.values()),
    model_values,
    st.integers(0, 4),
)
model_txn_ops = st.one_of(model_puts, model_deletes, st.builds(get, model_keys))
model_txns = st.builds(
    txn,
    st.lists(model_compares, max_size=2),
    st.lists(model_txn_ops, max_size=3),
    st.lists(model_txn_ops, max_size=3),
    model_tokens,
)
model_lease_ops = st.one_of(
    st.builds(grant, st.just(10), model_leases),
    st.builds(revoke, model_leases),
    st.builds(lambda lease: expire((lease, 0)), model_leases),
    st.builds(lock, st.sampled_from([b"j", b"{a}q"]), model_leases),
    st.builds(lambda name, lease: unlock(lock_key(name, lease)), st.sampled_from([b"j", b"{a}q"]), model_leases),
)
model_ops: st.SearchStrategy[Item] = st.one_of(model_puts, model_deletes, model_txns, model_lease_ops, st.none())
# Each step is one apply call (one batch), then optionally a restart.
model_steps = st.lists(st.tuples(st.lists(model_ops, max_size=6), st.booleans()), max_size=8)


@settings(max_examples=200, deadline=None)
@given(model_steps)
def test_applier_matches_a_dict_model(steps: Sequence[tuple[list[Item], bool]]) -> None:
    store = Store("memory", Path("unused"))
    node = Node(store)
    model = DictModel()
    for ops, restart in steps:
        first = node.machine.applied_index + 1
        expected = [None if op is None else model.execute(first + n, op) for n, op in enumerate(ops)]
        assert [comparable(result) for result in node.apply(*ops)] == expected
        if restart:
            node.restart()
    assert node.machine.scan(b"") == ([model.data[key] for key in sorted(model.data)], False)
    for key in (b"a", b"b", b"c"):
        assert node.machine.get(key) == model.data.get(key)
    assert {lease.id for lease in node.machine.leases.leases()} == model.leases
    for lease in model.leases:
        assert node.machine.leases.keys(lease) == sorted(key for key, found in model.data.items() if found.lease == lease)


def data_bytes(engine: Engine, partition: int) -> int:
    """The bytes of the partition's user keys and stored values, counted from the engine."""
    prefix = data_prefix(partition)
    return sum(len(key) - len(prefix) + len(value) for key, value in engine.iterate(prefix, prefix_end(prefix)))


def test_the_stored_bytes_follow_puts_overwrites_deletes_and_transactions(store: Store) -> None:
    node = Node(store)
    assert node.machine.stored_bytes == 0
    node.apply(put(b"a", b"12345"), put(b"bb", b"x" * 100), put(b"a", b"1"), delete(b"bb"), delete(b"missing"),
               txn((), (put(b"c", b"333"), delete(b"a")), ()))
    assert node.machine.stored_bytes == data_bytes(store.engine, PARTITION) == 1 + 32 + 3  # key, header, value
    node.restart()
    assert node.machine.stored_bytes == data_bytes(store.engine, PARTITION), "the count is stored with the apply state"


def test_a_restored_replica_has_its_sources_count_and_an_uncounted_data_dir_is_counted_once(
        store: Store, tmp_path: Path) -> None:
    source = Node(store)
    build_state(source)
    target = Node(Store("memory", tmp_path / "target"))
    target.apply(put(b"zz", b"gone" * 10))
    batch = target.store.engine.new_batch()
    target.machine.restore(batch, source.machine.snapshot())
    target.store.engine.write(batch, sync=True)
    assert target.machine.stored_bytes == source.machine.stored_bytes == data_bytes(store.engine, PARTITION)
    batch = store.engine.new_batch()
    batch.delete(stored_bytes_key(PARTITION))  # as a data dir written before the count existed
    store.engine.write(batch, sync=True)
    source.restart()
    assert source.machine.stored_bytes == data_bytes(store.engine, PARTITION)
