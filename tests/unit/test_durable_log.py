"""`DurableLogStorage` behaves as `MemoryLogStorage` does, survives a restart, and reports damaged
records as corruption."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvstore.raft.errors import CompactedError, SnapshotTemporarilyUnavailableError, UnavailableError
from kvstore.raft.log_storage import LogStorage, MemoryLogStorage
from kvstore.raft.types import (
    EMPTY_HARD_STATE,
    EMPTY_SNAPSHOT,
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMeta,
)
from kvstore.storage import CorruptionError, DurableLogStorage, Engine, LevelDBEngine, MemoryEngine
from kvstore.storage.keys import hard_state_key, log_key, snapshot_meta_key
from kvstore.storage.raft_log import CACHED_ENTRY_OVERHEAD_BYTES

GROUP = 7
UNLIMITED = 1 << 62
CONF = ConfState(frozenset({1, 2, 3}), frozenset({4}))


def snapshot_data(meta: SnapshotMeta) -> bytes:
    """What the state machine would hand over for a snapshot at `meta` (both logs use it)."""
    return b"state@%d" % meta.index


def open_log(engine: Engine, group: int = GROUP, max_cached_entries: int = 1024) -> DurableLogStorage:
    """The durable log of a state machine that stays at the recorded snapshot point, so that its
    snapshots are the ones `MemoryLogStorage` hands out."""

    def recorded_snapshot() -> Snapshot:
        return Snapshot(storage.snapshot_meta, snapshot_data(storage.snapshot_meta))

    storage = DurableLogStorage.open(engine, group, recorded_snapshot, max_cached_entries=max_cached_entries)
    return storage


def entry(index: int, term: int, size: int = 8) -> Entry:
    return Entry(index, term, bytes([index % 256]) * size)


def run(first: int, last: int, term: int, size: int = 8) -> list[Entry]:
    return [entry(index, term, size) for index in range(first, last + 1)]


# -- one test surface over both implementations --------------------------------------------


class LogUnderTest(Protocol):
    @property
    def storage(self) -> LogStorage: ...

    def append(self, entries: list[Entry]) -> None: ...

    def set_hard_state(self, hard_state: HardState) -> None: ...

    def create_snapshot(self, index: int, conf_state: ConfState) -> None: ...

    def compact(self, index: int) -> None: ...

    def apply_snapshot(self, snapshot: Snapshot) -> None: ...


class MemoryLog:
    def __init__(self) -> None:
        self.storage = MemoryLogStorage()

    def append(self, entries: list[Entry]) -> None:
        self.storage.append(entries)

    def set_hard_state(self, hard_state: HardState) -> None:
        self.storage.set_hard_state(hard_state)

    def create_snapshot(self, index: int, conf_state: ConfState) -> None:
        self.storage.create_snapshot(index, conf_state, snapshot_data(SnapshotMeta(index)))

    def compact(self, index: int) -> None:
        self.storage.compact(index)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        self.storage.apply_snapshot(snapshot)


class DurableLog:
    """Stages each operation into its own batch and writes it, unless told to hold batches."""

    def __init__(self, engine: Engine, max_cached_entries: int) -> None:
        self.engine = engine
        self.max_cached_entries = max_cached_entries
        self.storage = self.reload()

    def reload(self) -> DurableLogStorage:
        self.storage = open_log(self.engine, max_cached_entries=self.max_cached_entries)
        return self.storage

    def _write(self, stage: Callable[[DurableLogStorage], Callable[..., None]], *args: object) -> None:
        batch = self.engine.new_batch()
        stage(self.storage)(batch, *args)
        self.engine.write(batch, sync=False)

    def append(self, entries: list[Entry]) -> None:
        self._write(lambda s: s.append, entries)

    def set_hard_state(self, hard_state: HardState) -> None:
        self._write(lambda s: s.set_hard_state, hard_state)

    def create_snapshot(self, index: int, conf_state: ConfState) -> None:
        in_log = self.storage.first_index() - 1 <= index <= self.storage.last_index()
        # Out of the log the term does not matter: the index alone is refused.
        term = self.storage.term(index) if in_log else 0
        self._write(lambda s: s.set_snapshot_meta, SnapshotMeta(index, term, conf_state))

    def compact(self, index: int) -> None:
        self._write(lambda s: s.compact, index)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        self._write(lambda s: s.apply_snapshot, snapshot)


@pytest.fixture(params=["memory", "durable-memory", "durable-leveldb", "durable-leveldb-big-cache"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LogUnderTest]:
    if request.param == "memory":
        yield MemoryLog()
        return
    engine: Engine = MemoryEngine() if request.param == "durable-memory" else LevelDBEngine(tmp_path / "db")
    # A tail cache of 3 entries makes most reads go to the engine.
    cached = 10_000 if request.param.endswith("big-cache") else 3
    with engine:
        yield DurableLog(engine, max_cached_entries=cached)


def all_entries(storage: LogStorage) -> list[Entry]:
    return storage.entries(storage.first_index(), storage.last_index() + 1, UNLIMITED)


def visible_state(storage: LogStorage) -> tuple[object, ...]:
    """Everything a reader of `storage` can observe."""
    first, last = storage.first_index(), storage.last_index()
    terms = [storage.term(index) for index in range(first - 1, last + 1)]
    return first, last, terms, all_entries(storage), storage.initial_state(), storage.snapshot()


# -- shared behaviour ----------------------------------------------------------------------


def test_a_fresh_log_is_empty(log: LogUnderTest) -> None:
    storage = log.storage
    assert (storage.first_index(), storage.last_index(), storage.term(0)) == (1, 0, 0)
    assert storage.initial_state() == (EMPTY_HARD_STATE, ConfState())
    assert storage.snapshot().is_empty
    assert storage.entries(1, 1, UNLIMITED) == []
    with pytest.raises(UnavailableError):
        storage.entries(1, 2, UNLIMITED)
    with pytest.raises(UnavailableError):
        storage.term(1)


def test_appended_entries_read_back_with_their_terms(log: LogUnderTest) -> None:
    log.append(run(1, 4, term=1) + run(5, 9, term=2))
    log.append(run(10, 12, term=3))
    storage = log.storage

    assert (storage.first_index(), storage.last_index()) == (1, 12)
    assert all_entries(storage) == run(1, 4, 1) + run(5, 9, 2) + run(10, 12, 3)
    assert storage.entries(4, 7, UNLIMITED) == [entry(4, 1), entry(5, 2), entry(6, 2)]
    assert [storage.term(index) for index in range(13)] == [0] + [1] * 4 + [2] * 5 + [3] * 3
    with pytest.raises(UnavailableError):
        storage.entries(5, 14, UNLIMITED)
    assert storage.entries(9, 3, UNLIMITED) == []


def test_conflicting_append_replaces_the_suffix(log: LogUnderTest) -> None:
    log.append(run(1, 8, term=1))
    log.append(run(4, 5, term=2))
    storage = log.storage

    assert storage.last_index() == 5
    assert all_entries(storage) == run(1, 3, 1) + run(4, 5, 2)
    with pytest.raises(UnavailableError):
        storage.term(6)
    log.append(run(6, 7, term=2))
    assert all_entries(storage) == run(1, 3, 1) + run(4, 7, 2)


def test_conflicting_append_can_replace_the_whole_log(log: LogUnderTest) -> None:
    log.append(run(1, 6, term=1))
    log.append(run(1, 2, term=2))
    assert all_entries(log.storage) == run(1, 2, 2)
    assert log.storage.term(0) == 0


def test_append_leaving_a_gap_is_refused_and_changes_nothing(log: LogUnderTest) -> None:
    log.append(run(1, 3, term=1))
    with pytest.raises(UnavailableError):
        log.append(run(5, 6, term=1))
    assert all_entries(log.storage) == run(1, 3, 1)


def test_entries_are_limited_by_size_but_never_empty(log: LogUnderTest) -> None:
    log.append(run(1, 10, term=1, size=100))
    storage = log.storage
    per_entry = 100 + 24  # data plus ENTRY_OVERHEAD_BYTES

    assert storage.entries(1, 11, 0) == [entry(1, 1, 100)]
    assert storage.entries(1, 11, per_entry * 3) == run(1, 3, 1, 100)
    assert storage.entries(1, 11, per_entry * 3 + per_entry - 1) == run(1, 3, 1, 100)
    assert storage.entries(1, 11, per_entry * 9) == run(1, 9, 1, 100)
    assert storage.entries(2, 11, per_entry * 8) == run(2, 9, 1, 100)
    assert storage.entries(8, 11, per_entry * 2) == run(8, 9, 1, 100)
    assert storage.entries(3, 5, per_entry * 100) == run(3, 4, 1, 100)


def test_compaction_moves_the_first_index(log: LogUnderTest) -> None:
    log.append(run(1, 5, term=1) + run(6, 10, term=2))
    log.create_snapshot(7, CONF)
    log.compact(6)
    storage = log.storage

    assert (storage.first_index(), storage.last_index()) == (7, 10)
    assert storage.term(6) == 2
    assert all_entries(storage) == run(7, 10, 2)
    with pytest.raises(CompactedError):
        storage.entries(6, 8, UNLIMITED)
    with pytest.raises(CompactedError):
        storage.term(5)

    log.compact(4)  # already compacted: nothing to do
    assert storage.first_index() == 7
    with pytest.raises(UnavailableError):
        log.compact(11)


def test_append_ignores_entries_that_are_already_compacted(log: LogUnderTest) -> None:
    log.append(run(1, 6, term=1))
    log.create_snapshot(4, CONF)
    log.compact(4)

    log.append(run(2, 3, term=5))
    assert all_entries(log.storage) == run(5, 6, 1)
    log.append(run(3, 7, term=2))
    assert all_entries(log.storage) == run(5, 7, 2)
    assert log.storage.term(4) == 1


def test_snapshots_are_recorded_with_the_log_term(log: LogUnderTest) -> None:
    log.append(run(1, 3, term=1) + run(4, 6, term=2))
    log.create_snapshot(5, CONF)

    assert log.storage.snapshot() == Snapshot(SnapshotMeta(5, 2, CONF), b"state@5")
    assert log.storage.initial_state()[1] == CONF
    with pytest.raises(SnapshotTemporarilyUnavailableError):
        log.create_snapshot(5, CONF)
    with pytest.raises(SnapshotTemporarilyUnavailableError):
        log.create_snapshot(3, CONF)
    with pytest.raises(UnavailableError):
        log.create_snapshot(7, CONF)


def test_installing_a_snapshot_drops_the_whole_log(log: LogUnderTest) -> None:
    log.append(run(1, 5, term=1))
    meta = SnapshotMeta(20, 4, CONF)
    log.apply_snapshot(Snapshot(meta, b"state@20"))
    storage = log.storage

    assert (storage.first_index(), storage.last_index(), storage.term(20)) == (21, 20, 4)
    assert storage.snapshot().meta == meta
    assert storage.initial_state()[1] == CONF
    with pytest.raises(CompactedError):
        storage.term(19)
    with pytest.raises(CompactedError):
        storage.entries(20, 21, UNLIMITED)

    log.apply_snapshot(Snapshot(SnapshotMeta(15, 3, ConfState()), b"older"))
    assert storage.snapshot().meta == meta

    log.append(run(21, 23, term=5))
    assert all_entries(storage) == run(21, 23, 5)


def test_installing_a_snapshot_inside_the_log_still_drops_it(log: LogUnderTest) -> None:
    log.append(run(1, 9, term=1))
    log.apply_snapshot(Snapshot(SnapshotMeta(4, 1, CONF), b"state@4"))

    assert (log.storage.first_index(), log.storage.last_index()) == (5, 4)


def test_hard_state_is_kept(log: LogUnderTest) -> None:
    log.set_hard_state(HardState(term=3, vote=2, commit=1))
    assert log.storage.initial_state()[0] == HardState(term=3, vote=2, commit=1)


# -- durability ----------------------------------------------------------------------------


def test_restart_restores_exactly_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with LevelDBEngine(path) as engine:
        storage = open_log(engine, max_cached_entries=4)
        batch = engine.new_batch()
        storage.append(batch, run(1, 10, term=1) + run(11, 30, term=2))
        storage.set_hard_state(batch, HardState(term=2, vote=1, commit=25))
        storage.set_snapshot_meta(batch, SnapshotMeta(20, 2, CONF))
        storage.compact(batch, 12)
        storage.append(batch, run(28, 35, term=3))
        engine.write(batch, sync=True)
        before = visible_state(storage)

    with LevelDBEngine(path) as engine:
        reloaded = open_log(engine, max_cached_entries=4)
        assert visible_state(reloaded) == before
        assert reloaded.hard_state == HardState(term=2, vote=1, commit=25)
        assert reloaded.entries(13, 15, UNLIMITED) == [entry(13, 2), entry(14, 2)]


def test_a_batch_never_written_leaves_nothing_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with LevelDBEngine(path) as engine:
        storage = open_log(engine)
        written = engine.new_batch()
        storage.append(written, run(1, 5, term=1))
        engine.write(written, sync=True)
        lost = engine.new_batch()
        storage.append(lost, run(4, 8, term=2))
        storage.set_hard_state(lost, HardState(term=2, vote=3, commit=4))
        storage.apply_snapshot(lost, Snapshot(SnapshotMeta(50, 2, CONF)))
        assert storage.last_index() == 50  # the view moved at staging

    with LevelDBEngine(path) as engine:
        reloaded = open_log(engine)
        assert all_entries(reloaded) == run(1, 5, 1)
        assert reloaded.initial_state() == (EMPTY_HARD_STATE, ConfState())
        assert reloaded.snapshot().is_empty


def test_one_batch_commits_many_groups_and_they_stay_apart() -> None:
    with MemoryEngine() as engine:
        groups = {group: open_log(engine, group) for group in (1, 2, 300)}
        batch = engine.new_batch()
        for group, storage in groups.items():
            storage.append(batch, run(1, 5, term=group))
            storage.set_hard_state(batch, HardState(term=group))
        groups[2].set_snapshot_meta(batch, SnapshotMeta(4, 2))
        groups[2].compact(batch, 4)
        groups[300].apply_snapshot(batch, Snapshot(SnapshotMeta(9, 300)))
        engine.write(batch, sync=True)

        reloaded = {group: open_log(engine, group) for group in (1, 2, 300)}
        assert all_entries(reloaded[1]) == run(1, 5, 1)
        assert all_entries(reloaded[2]) == run(5, 5, 2)
        assert (reloaded[300].first_index(), reloaded[300].last_index()) == (10, 9)
        assert [reloaded[group].hard_state.term for group in (1, 2, 300)] == [1, 2, 300]


def test_a_hole_in_the_stored_log_is_reported_as_corruption() -> None:
    with MemoryEngine() as engine:
        storage = open_log(engine, max_cached_entries=2)
        for entries in (run(1, 5, term=1), run(6, 10, term=1)):
            batch = engine.new_batch()
            storage.append(batch, entries)
            engine.write(batch, sync=True)
        damage = engine.new_batch()
        damage.delete(log_key(GROUP, 4))
        engine.write(damage, sync=True)

        with pytest.raises(CorruptionError, match="log entry 4 is missing"):
            storage.entries(2, 6, UNLIMITED)
        with pytest.raises(CorruptionError, match="4..4 are missing"):
            open_log(engine)


@pytest.mark.parametrize(
    ("key", "what"),
    [(log_key(GROUP, 3), "log entry"), (hard_state_key(GROUP), "hard state"), (snapshot_meta_key(GROUP), "snapshot")],
)
def test_a_stored_record_that_does_not_decode_is_reported_as_corruption(key: bytes, what: str) -> None:
    with MemoryEngine() as engine:
        storage = open_log(engine, max_cached_entries=2)
        batch = engine.new_batch()
        storage.append(batch, run(1, 5, term=1))
        storage.set_hard_state(batch, HardState(1, 1, 5))
        storage.set_snapshot_meta(batch, SnapshotMeta(2, 1, CONF))
        engine.write(batch, sync=True)
        damage = engine.new_batch()
        damage.put(key, b"\x93garbage")
        engine.write(damage, sync=True)

        if what == "log entry":
            with pytest.raises(CorruptionError, match="a stored log entry does not decode"):
                storage.entries(3, 5, UNLIMITED)  # older than the cached tail: read from the engine
        with pytest.raises(CorruptionError, match=f"group {GROUP}: a stored record does not decode: .*{what}"):
            open_log(engine)


# -- durable-only rules --------------------------------------------------------------------


def test_the_cached_tail_counts_what_its_entries_take_in_memory() -> None:
    """`max_cached_bytes` bounds memory: an entry counts its data and the objects holding it.
    With room for four entries of 100 bytes, the last four are served from memory (their stored
    copies are damaged here) and the fifth from the engine."""
    with MemoryEngine() as engine:
        budget = 4 * (100 + CACHED_ENTRY_OVERHEAD_BYTES)
        storage = DurableLogStorage.open(engine, GROUP, lambda: EMPTY_SNAPSHOT, max_cached_bytes=budget)
        batch = engine.new_batch()
        storage.append(batch, run(1, 20, term=1, size=100))
        engine.write(batch, sync=True)
        damage = engine.new_batch()
        for index in range(1, 21):
            damage.put(log_key(GROUP, index), b"\x93garbage")
        engine.write(damage, sync=True)

        assert storage.entries(17, 21, UNLIMITED) == run(17, 20, term=1, size=100)
        with pytest.raises(CorruptionError):
            storage.entries(16, 21, UNLIMITED)




def test_compaction_beyond_the_snapshot_is_refused() -> None:
    with MemoryEngine() as engine:
        storage = open_log(engine)
        batch = engine.new_batch()
        storage.append(batch, run(1, 10, term=1))
        storage.set_snapshot_meta(batch, SnapshotMeta(5, 1))
        with pytest.raises(ValueError, match="beyond the snapshot index 5"):
            storage.compact(batch, 6)
        assert storage.first_index() == 1


def test_snapshot_meta_must_carry_the_log_term() -> None:
    with MemoryEngine() as engine:
        storage = open_log(engine)
        batch = engine.new_batch()
        storage.append(batch, run(1, 3, term=2))
        with pytest.raises(ValueError, match="has term 1, the log has 2"):
            storage.set_snapshot_meta(batch, SnapshotMeta(3, 1))
        assert storage.snapshot().is_empty


def test_a_snapshot_is_the_state_machines_once_a_point_was_recorded() -> None:
    current = Snapshot(SnapshotMeta(5, 2, CONF), b"state now")  # ahead of the recorded point
    with MemoryEngine() as engine:
        storage = DurableLogStorage.open(engine, GROUP, lambda: current)
        assert storage.snapshot().is_empty
        batch = engine.new_batch()
        storage.append(batch, run(1, 5, term=2))
        storage.set_snapshot_meta(batch, SnapshotMeta(3, 2, CONF))
        engine.write(batch, sync=True)

        assert storage.snapshot() == current


# -- model check ---------------------------------------------------------------------------

OPERATIONS = ["append", "append", "append", "hard_state", "create_snapshot", "compact", "apply_snapshot"]


def apply_random_operation(data: st.DataObject, model: MemoryLog, durable: DurableLog) -> None:
    """One operation valid for both implementations, or invalid for both (same error)."""
    storage = model.storage
    first, last, snap = storage.first_index(), storage.last_index(), storage.snapshot().meta.index
    kind = data.draw(st.sampled_from(OPERATIONS))
    # A conflicting append may have cut the log below the snapshot index.
    near_snapshot = max(0, min(snap - 1, last))
    subject: Callable[[LogUnderTest], None]
    if kind == "append":
        start = data.draw(st.integers(max(1, first - 3), last + 2))
        count = data.draw(st.integers(0, 6))
        term = data.draw(st.integers(1, 6))
        size = data.draw(st.integers(0, 40))
        entries = run(start, start + count - 1, term, size)
        subject = lambda log: log.append(entries)  # noqa: E731
    elif kind == "hard_state":
        hard_state = HardState(*data.draw(st.tuples(*[st.integers(0, 2**40)] * 3)))
        subject = lambda log: log.set_hard_state(hard_state)  # noqa: E731
    elif kind == "create_snapshot":
        index = data.draw(st.integers(near_snapshot, last + 1))
        subject = lambda log: log.create_snapshot(index, CONF)  # noqa: E731
    elif kind == "compact":
        index = data.draw(st.integers(max(0, first - 2), min(last, snap)))
        subject = lambda log: log.compact(index)  # noqa: E731
    else:
        meta = SnapshotMeta(data.draw(st.integers(near_snapshot, last + 4)), data.draw(st.integers(1, 9)))
        subject = lambda log: log.apply_snapshot(Snapshot(meta, snapshot_data(meta)))  # noqa: E731

    outcomes: list[type[Exception] | None] = []
    for log in (model, durable):
        try:
            subject(log)
            outcomes.append(None)
        except (CompactedError, UnavailableError, SnapshotTemporarilyUnavailableError) as exc:
            outcomes.append(type(exc))
    assert outcomes[0] == outcomes[1], kind


def check_same_reads(data: st.DataObject, model: LogStorage, durable: LogStorage) -> None:
    assert visible_state(durable) == visible_state(model)
    lo = data.draw(st.integers(model.first_index(), model.last_index() + 1))
    hi = data.draw(st.integers(lo, model.last_index() + 1))
    max_bytes = data.draw(st.integers(0, 300))
    assert durable.entries(lo, hi, max_bytes) == model.entries(lo, hi, max_bytes)
    for index in (model.first_index() - 2, model.last_index() + 1):
        if index >= 0:
            with pytest.raises((CompactedError, UnavailableError)) as expected:
                model.term(index)
            with pytest.raises(expected.type):
                durable.term(index)


def run_model_check(data: st.DataObject, engine: Engine, reopen: Callable[[], Engine]) -> None:
    model = MemoryLog()
    durable = DurableLog(engine, max_cached_entries=data.draw(st.integers(1, 8)))
    for _ in range(data.draw(st.integers(1, 25))):
        apply_random_operation(data, model, durable)
        if data.draw(st.integers(0, 9)) == 0:
            durable.engine = reopen()
            durable.reload()
        check_same_reads(data, model.storage, durable.storage)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_durable_log_matches_the_memory_log_over_a_memory_engine(data: st.DataObject) -> None:
    with MemoryEngine() as engine:
        run_model_check(data, engine, reopen=lambda: engine)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_durable_log_matches_the_memory_log_over_leveldb(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as directory:
        engines = [LevelDBEngine(directory)]

        def reopen() -> Engine:
            engines[-1].close()
            engines.append(LevelDBEngine(directory))
            return engines[-1]

        try:
            run_model_check(data, engines[0], reopen)
        finally:
            engines[-1].close()
