"""The `Engine` contract, run against the in-memory and the LevelDB engine; the key layout."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kvstore.storage import (
    CorruptionError,
    DataDirLockedError,
    Engine,
    EngineClosedError,
    LevelDBEngine,
    MemoryEngine,
    StorageError,
)
from kvstore.storage.keys import (
    apply_state_key,
    data_key,
    data_prefix,
    hard_state_key,
    log_key,
    log_prefix,
    meta_key,
    parse_data_key,
    parse_log_key,
    parse_meta_key,
    prefix_end,
    snapshot_meta_key,
)


@pytest.fixture(params=["memory", "leveldb"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    opened: Engine = MemoryEngine() if request.param == "memory" else LevelDBEngine(tmp_path / "db")
    with opened:
        yield opened


def put_all(engine: Engine, items: dict[bytes, bytes], *, sync: bool = False) -> None:
    batch = engine.new_batch()
    for key, value in items.items():
        batch.put(key, value)
    engine.write(batch, sync=sync)


def keys_of(pairs: Iterator[tuple[bytes, bytes]]) -> list[bytes]:
    return [key for key, _ in pairs]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


# -- reads and writes ------------------------------------------------------------------------


def test_get_put_delete_overwrite(engine: Engine) -> None:
    assert engine.get(b"k") is None
    put_all(engine, {b"k": b"v1", b"other": b"x"})
    assert engine.get(b"k") == b"v1"

    batch = engine.new_batch()
    batch.put(b"k", b"v2")
    batch.delete(b"other")
    batch.delete(b"never-existed")
    engine.write(batch, sync=True)

    assert engine.get(b"k") == b"v2"
    assert engine.get(b"other") is None
    assert engine.get(b"never-existed") is None


def test_iteration_is_in_unsigned_byte_order_with_exclusive_end(engine: Engine) -> None:
    keys = [b"b", b"\x00", b"a\xff", b"a", b"\xff\xff", b"ab", b"\x7f", b"\x80"]
    put_all(engine, {key: key * 2 for key in keys})

    everything = list(engine.iterate(b"", None))
    assert keys_of(iter(everything)) == sorted(keys)
    assert all(value == key * 2 for key, value in everything)
    assert keys_of(engine.iterate(b"a", b"b")) == [b"a", b"ab", b"a\xff"]
    assert keys_of(engine.iterate(b"a\x00", b"a\xff")) == [b"ab"]
    assert keys_of(engine.iterate(b"\x80", None)) == [b"\x80", b"\xff\xff"]
    assert keys_of(engine.iterate(b"b", b"b")) == []
    assert keys_of(engine.iterate(b"c", b"a")) == []


def test_reverse_iteration_keeps_the_same_bounds(engine: Engine) -> None:
    put_all(engine, {bytes([n]): b"" for n in range(10)})

    assert keys_of(engine.iterate(b"\x02", b"\x06", reverse=True)) == [bytes([n]) for n in (5, 4, 3, 2)]
    assert keys_of(engine.iterate(b"\x07", None, reverse=True)) == [b"\x09", b"\x08", b"\x07"]
    assert keys_of(engine.iterate(b"", None, reverse=True)) == [bytes([n]) for n in reversed(range(10))]


def test_batch_is_invisible_until_written_then_visible_at_once(engine: Engine) -> None:
    put_all(engine, {b"old": b"1"})
    batch = engine.new_batch()
    for n in range(50):
        batch.put(b"new%02d" % n, b"v")
    batch.delete(b"old")
    assert len(batch) == 51
    assert engine.get(b"new00") is None
    assert engine.get(b"old") == b"1"

    before = engine.iterate(b"", None)
    engine.write(batch, sync=True)

    assert keys_of(before) == [b"old"]
    assert keys_of(engine.iterate(b"", None)) == [b"new%02d" % n for n in range(50)]


def test_batch_operations_apply_in_the_order_staged(engine: Engine) -> None:
    batch = engine.new_batch()
    batch.put(b"put-then-delete", b"x")
    batch.delete(b"put-then-delete")
    batch.delete(b"delete-then-put")
    batch.put(b"delete-then-put", b"y")
    batch.put(b"twice", b"first")
    batch.put(b"twice", b"second")
    engine.write(batch, sync=False)

    assert engine.get(b"put-then-delete") is None
    assert engine.get(b"delete-then-put") == b"y"
    assert engine.get(b"twice") == b"second"


def test_batch_is_written_at_most_once_and_only_to_its_engine(engine: Engine) -> None:
    batch = engine.new_batch()
    batch.put(b"k", b"v")
    engine.write(batch, sync=False)
    with pytest.raises(ValueError, match="already been written"):
        engine.write(batch, sync=False)

    with MemoryEngine() as other:
        with pytest.raises(ValueError, match="not made by this engine"):
            engine.write(other.new_batch(), sync=False)


def test_non_bytes_are_refused_when_staged(engine: Engine) -> None:
    batch = engine.new_batch()
    with pytest.raises(TypeError):
        batch.put("text", b"v")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        batch.put(b"k", "text")  # type: ignore[arg-type]


def test_an_iterator_sees_the_state_when_it_was_created(engine: Engine) -> None:
    put_all(engine, {b"a": b"1", b"b": b"2"})
    iterator = engine.iterate(b"", None)

    batch = engine.new_batch()
    batch.put(b"a", b"changed")
    batch.delete(b"b")
    batch.put(b"c", b"3")
    engine.write(batch, sync=False)

    assert list(iterator) == [(b"a", b"1"), (b"b", b"2")]


def test_read_view_is_isolated_from_later_writes(engine: Engine) -> None:
    put_all(engine, {b"a": b"1", b"b": b"2"})
    with engine.read_view() as view:
        batch = engine.new_batch()
        batch.put(b"a", b"changed")
        batch.delete(b"b")
        batch.put(b"c", b"3")
        engine.write(batch, sync=False)

        assert view.get(b"a") == b"1"
        assert view.get(b"b") == b"2"
        assert view.get(b"c") is None
        assert list(view.iterate(b"", None)) == [(b"a", b"1"), (b"b", b"2")]
        assert list(view.iterate(b"", None, reverse=True)) == [(b"b", b"2"), (b"a", b"1")]
        assert list(engine.iterate(b"", None)) == [(b"a", b"changed"), (b"c", b"3")]
    with pytest.raises(EngineClosedError):
        view.get(b"a")


def test_readers_in_another_thread_never_see_part_of_a_batch(engine: Engine) -> None:
    keys = [b"k%d" % n for n in range(50)]
    put_all(engine, dict.fromkeys(keys, b"0"))

    def write_generations() -> None:
        for generation in range(1, 1000):
            put_all(engine, dict.fromkeys(keys, b"%d" % generation))

    writer = threading.Thread(target=write_generations)
    writer.start()
    while writer.is_alive():
        values = {value for _, value in engine.iterate(b"", None)}
        assert len(values) == 1, values
        with engine.read_view() as view:
            assert len({view.get(key) for key in keys}) == 1
    writer.join()
    assert {value for _, value in engine.iterate(b"", None)} == {b"999"}


def test_approximate_size_counts_written_data(engine: Engine) -> None:
    value = b"x" * 1000
    put_all(engine, {b"key%03d" % n: value for n in range(100)})
    assert engine.approximate_size() >= 100 * len(value)


def test_closed_engine_refuses_every_operation(engine: Engine) -> None:
    view = engine.read_view()
    engine.close()
    engine.close()
    for operation in (
        lambda: engine.get(b"k"),
        lambda: engine.iterate(b"", None),
        engine.new_batch,
        engine.read_view,
        engine.approximate_size,
        lambda: view.get(b"k"),
    ):
        with pytest.raises(EngineClosedError):
            operation()


# -- LevelDB on disk -----------------------------------------------------------------------


def test_leveldb_keeps_data_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with LevelDBEngine(path) as engine:
        put_all(engine, {b"synced": b"1"}, sync=True)
        put_all(engine, {b"unsynced": b"2"}, sync=False)
    with LevelDBEngine(path) as engine:
        assert engine.get(b"synced") == b"1"
        assert engine.get(b"unsynced") == b"2"


def test_leveldb_keeps_a_batch_written_by_a_process_that_then_dies(tmp_path: Path) -> None:
    path = tmp_path / "db"
    child = run_python(
        "import os\n"
        "from kvstore.storage import LevelDBEngine\n"
        f"engine = LevelDBEngine({str(path)!r})\n"
        "batch = engine.new_batch()\n"
        "for n in range(1000):\n"
        "    batch.put(b'%04d' % n, b'v' * 100)\n"
        "engine.write(batch, sync=True)\n"
        "os._exit(0)\n"  # no close(): a crash right after the write returned
    )
    assert child.returncode == 0, child.stderr
    with LevelDBEngine(path) as engine:
        assert len(list(engine.iterate(b"", None))) == 1000


def test_second_process_gets_a_one_line_locked_error(tmp_path: Path) -> None:
    path = tmp_path / "db"
    probe = (
        "from kvstore.storage import LevelDBEngine, DataDirLockedError\n"
        "try:\n"
        f"    LevelDBEngine({str(path)!r}).close()\n"
        "except DataDirLockedError as exc:\n"
        "    print('locked:' + str(exc))\n"
        "else:\n"
        "    print('opened')\n"
    )
    with LevelDBEngine(path):
        child = run_python(probe)
        assert child.returncode == 0, child.stderr
        assert child.stdout.splitlines() == [f"locked:data directory {path} is in use by another process"]

    released = run_python(probe)
    assert released.stdout.splitlines() == ["opened"], released.stderr


def test_second_open_in_the_same_process_is_refused(tmp_path: Path) -> None:
    with LevelDBEngine(tmp_path / "db"):
        with pytest.raises(DataDirLockedError) as caught:
            LevelDBEngine(tmp_path / "db")
    assert "\n" not in str(caught.value)
    assert str(tmp_path / "db") in str(caught.value)


def test_unusable_path_gives_a_one_line_storage_error(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_bytes(b"")
    with pytest.raises(StorageError) as caught:
        LevelDBEngine(not_a_directory)
    assert not isinstance(caught.value, DataDirLockedError)
    assert "\n" not in str(caught.value)
    assert str(not_a_directory) in str(caught.value)


def test_missing_directory_is_an_error_unless_created(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot open data directory"):
        LevelDBEngine(tmp_path / "absent", create_if_missing=False)
    with LevelDBEngine(tmp_path / "nested" / "db") as engine:
        assert engine.get(b"k") is None


def _table_dir(path: Path) -> Path:
    """A closed LevelDB dir whose data sits in table (.ldb) files, with its MANIFEST."""
    with LevelDBEngine(path) as engine:
        put_all(engine, {b"k%06d" % i: b"v" * 100 for i in range(5000)}, sync=True)
    with LevelDBEngine(path) as engine:  # reopening flushes the write-ahead log into a table
        assert engine.get(b"k000001") == b"v" * 100
    return path


def test_a_truncated_manifest_is_a_one_line_corruption_error_naming_it(tmp_path: Path) -> None:
    path = _table_dir(tmp_path / "db")
    (manifest,) = path.glob("MANIFEST-*")
    with manifest.open("r+b") as f:
        f.truncate(10)
    with pytest.raises(CorruptionError) as caught:
        LevelDBEngine(path)
    assert str(manifest) in str(caught.value) and "\n" not in str(caught.value)


def test_a_garbled_table_is_a_corruption_error_when_read(tmp_path: Path) -> None:
    path = _table_dir(tmp_path / "db")
    for table in path.glob("*.ldb"):
        with table.open("r+b") as f:
            f.seek(1000)
            f.write(b"\xff" * 200)
    with LevelDBEngine(path) as engine:
        with pytest.raises(CorruptionError, match=f"data directory {path} is corrupt"):
            list(engine.iterate(b"", None))
        with pytest.raises(CorruptionError), engine.read_view() as view:
            list(view.iterate(b"", None))


# -- key layout ----------------------------------------------------------------------------


KeyBuilder = Callable[[int], bytes]


def test_log_keys_iterate_in_group_then_numeric_index_order(engine: Engine) -> None:
    written = [
        (group, index) for group in (0, 1, 256, 2**32 - 1) for index in (0, 1, 255, 256, 2**16, 2**64 - 1)
    ]
    put_all(engine, {log_key(group, index): b"" for group, index in reversed(written)})

    assert [parse_log_key(key) for key, _ in engine.iterate(b"", None)] == sorted(written)
    in_group_256 = engine.iterate(log_prefix(256), prefix_end(log_prefix(256)))
    assert [parse_log_key(key)[1] for key, _ in in_group_256] == [0, 1, 255, 256, 2**16, 2**64 - 1]
    from_index_256 = engine.iterate(log_key(1, 256), log_key(1, 2**16 + 1))
    assert [parse_log_key(key) for key, _ in from_index_256] == [(1, 256), (1, 2**16)]


def test_data_keys_of_a_partition_form_one_range(engine: Engine) -> None:
    put_all(
        engine,
        {
            data_key(1, b"\xff\xff"): b"",
            data_key(1, b""): b"",
            data_key(1, b"a"): b"",
            data_key(2, b""): b"",
            data_key(0, b"\xff"): b"",
            hard_state_key(1): b"",
        },
    )
    found = [parse_data_key(key) for key, _ in engine.iterate(data_prefix(1), prefix_end(data_prefix(1)))]
    assert found == [(1, b""), (1, b"a"), (1, b"\xff\xff")]


@pytest.mark.parametrize("per_group", [hard_state_key, snapshot_meta_key, apply_state_key, log_prefix])
def test_per_group_keys_are_distinct_and_fixed_width(per_group: KeyBuilder) -> None:
    keys = {per_group(group) for group in (0, 1, 2**32 - 1)}
    assert len(keys) == 3
    assert {len(key) for key in keys} == {5}
    with pytest.raises(ValueError):
        per_group(2**32)
    with pytest.raises(ValueError):
        per_group(-1)


def test_key_kinds_never_collide() -> None:
    kinds = {
        hard_state_key(7)[:1],
        snapshot_meta_key(7)[:1],
        apply_state_key(7)[:1],
        log_key(7, 1)[:1],
        data_key(7, b"k")[:1],
        meta_key("node_id")[:1],
    }
    assert len(kinds) == 6


def test_keys_parse_back_and_reject_other_kinds() -> None:
    assert parse_log_key(log_key(3, 2**40)) == (3, 2**40)
    assert parse_data_key(data_key(9, b"{user}:cart")) == (9, b"{user}:cart")
    assert parse_meta_key(meta_key("cluster_id")) == "cluster_id"
    with pytest.raises(ValueError):
        log_key(1, 2**64)
    with pytest.raises(ValueError):
        parse_log_key(data_key(1, b"12345678"))
    with pytest.raises(ValueError):
        parse_data_key(log_key(1, 1))
    with pytest.raises(ValueError):
        meta_key("")


def test_prefix_end_bounds_exactly_the_keys_with_the_prefix() -> None:
    assert prefix_end(b"L\x00\x00\x00\x01") == b"L\x00\x00\x00\x02"
    assert prefix_end(b"a\xff\xff") == b"b"
    assert prefix_end(b"\xff\xff") is None
    assert prefix_end(b"") is None
    end = prefix_end(data_prefix(255))
    assert end is not None
    assert data_key(255, b"\xff" * 8) < end <= data_prefix(256)
