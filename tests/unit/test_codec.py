"""`kvstore.codec`: every record round-trips, encodes compactly and deterministically, and bytes
that are not the record asked for raise `CodecError`."""

from __future__ import annotations

from collections.abc import Callable

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore.codec import (
    PARTITION_SNAPSHOT_FORMAT,
    CodecError,
    Encoder,
    decode_client_dedup,
    decode_entry,
    decode_hard_state,
    decode_lease,
    decode_partition_snapshot,
    decode_peer_frame,
    decode_snapshot_meta,
    encode_lease,
)
from kvstore.raft import ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot, SnapshotMeta

u64 = st.integers(0, 2**64 - 1)
node_ids = st.frozensets(st.integers(1, 2**64 - 1), max_size=7)
entries = st.builds(Entry, u64, u64, st.binary(max_size=200), st.sampled_from(EntryType))
conf_states = st.builds(ConfState, node_ids, node_ids)
metas = st.builds(SnapshotMeta, u64, u64, conf_states)
messages = st.builds(
    Message,
    st.sampled_from(MessageType),
    u64,
    u64,
    u64,
    u64,
    u64,
    st.lists(entries, max_size=3).map(tuple),
    u64,
    st.booleans(),
    u64,
    st.none() | st.builds(Snapshot, metas, st.binary(max_size=64)),
    u64,
    st.booleans(),
    u64,
)


@given(entries)
def test_entries_round_trip(entry: Entry) -> None:
    decoded = decode_entry(Encoder().entry(entry))
    assert decoded == entry
    assert type(decoded.type) is EntryType


@given(u64, u64, u64)
def test_hard_states_round_trip(term: int, vote: int, commit: int) -> None:
    assert decode_hard_state(Encoder().hard_state(HardState(term, vote, commit))) == HardState(term, vote, commit)


@given(metas)
def test_snapshot_metas_round_trip(meta: SnapshotMeta) -> None:
    assert decode_snapshot_meta(Encoder().snapshot_meta(meta)) == meta


@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), messages), max_size=4))
def test_peer_frames_round_trip_every_message_field(items: list[tuple[int, Message]]) -> None:
    assert decode_peer_frame(Encoder().peer_frame(items)) == items


def test_peer_frames_stay_within_their_size_unless_one_message_alone_is_larger() -> None:
    def append(index: int, size: int) -> Message:
        return Message(MessageType.APPEND, 2, 1, 5, 5, index, (Entry(index + 1, 5, bytes(size)),), commit=index)

    items = [(i % 4, append(i, 300)) for i in range(40)] + [(1, append(99, 5000))] + [(2, append(100, 10))]

    frames = list(Encoder().peer_frames(items, max_frame_bytes=2000))

    assert [item for frame in frames for item in decode_peer_frame(frame)] == items  # all of them, in order
    assert all(len(frame) <= 2000 for frame in frames if len(decode_peer_frame(frame)) > 1)
    assert [len(decode_peer_frame(frame)) for frame in frames if len(frame) > 2000] == [1]  # the 5000-byte one, alone
    assert len(frames) < len(items) / 2  # frames are filled, not one message each
    assert list(Encoder().peer_frames([], max_frame_bytes=2000)) == []
    assert decode_peer_frame(Encoder().peer_frame([])) == []


def test_an_entry_is_one_record_on_disk_and_on_the_wire() -> None:
    entry = Entry(11, 5, b"x", EntryType.CONF_CHANGE)
    encoder = Encoder()
    frame = msgpack.unpackb(encoder.peer_frame([(7, Message(MessageType.APPEND, 2, 1, entries=(entry,)))]))
    assert msgpack.packb(frame[0][1][6][0]) == encoder.entry(entry) == msgpack.packb([11, 5, 1, b"x"])


@given(u64, st.lists(st.lists(st.tuples(st.binary(max_size=8), st.binary(max_size=8)), max_size=3), min_size=5, max_size=5))
def test_partition_snapshots_round_trip(applied: int, sections: list[list[tuple[bytes, bytes]]]) -> None:
    assert decode_partition_snapshot(Encoder().partition_snapshot(applied, sections)) == (applied, tuple(sections))


@given(u64, u64, u64, st.lists(st.tuples(u64, u64, st.binary(max_size=40)), max_size=4))
def test_client_dedup_records_round_trip(
    highest: int, floor: int, revision: int, results: list[tuple[int, int, bytes]]
) -> None:
    encoded = Encoder().client_dedup(highest, floor, revision, results)
    assert decode_client_dedup(encoded) == (highest, floor, revision, results)


@given(u64, u64, u64)
def test_lease_records_round_trip(ttl: int, remaining_ms: int, revision: int) -> None:
    assert decode_lease(encode_lease(ttl, remaining_ms, revision)) == (ttl, remaining_ms, revision)


def test_encodings_are_compact_and_deterministic() -> None:
    encoder = Encoder()
    assert len(encoder.entry(Entry(1000, 5, b"x" * 100))) <= 100 + 10
    assert len(encoder.hard_state(HardState(5, 2, 1000))) <= 8
    # A client with one answer kept (a put's: its revision) takes a few bytes beside the answer.
    assert len(encoder.client_dedup(1000, 1000, 5000, [(1000, 5000, b"\x12\x04\n\x02\x10\x05")])) <= 30
    assert encoder.snapshot_meta(SnapshotMeta(1, 1, ConfState(frozenset({3, 1, 2})))) == encoder.snapshot_meta(
        SnapshotMeta(1, 1, ConfState(frozenset({2, 3, 1})))
    )


GARBAGE = [b"", b"\xc1", b"\x01", b"\x93\x01\x02", b"\x92\xa1x\xa1y", b"\x94\xc0\xc0\xc0\xc0", b"\x93\x01\x01\x01\x00"]


@pytest.mark.parametrize(
    "decode",
    [decode_entry, decode_hard_state, decode_snapshot_meta, decode_peer_frame, decode_partition_snapshot,
     decode_client_dedup, decode_lease],
    ids=lambda decode: decode.__name__,
)
@pytest.mark.parametrize("raw", GARBAGE)
def test_garbage_raises_codec_error(decode: Callable[[bytes], object], raw: bytes) -> None:
    with pytest.raises(CodecError):
        decode(raw)


@pytest.mark.parametrize(
    "fields",
    [[1, 0, 1, 5], [1, 0, 1, [[1, 1]]], [1, 0, 1, [[1, 1, "text"]]], [-1, 0, 1, []], [1, 0, True, []], [1, 0, 1]],
)
def test_a_malformed_client_dedup_record_is_refused(fields: list[object]) -> None:
    with pytest.raises(CodecError, match="client dedup"):
        decode_client_dedup(msgpack.packb(fields))


@pytest.mark.parametrize("kind", [b"\x09", b"\xff", b"\x80", b"\xc3"])  # 9, -1, {}, True
def test_an_unknown_entry_type_is_refused(kind: bytes) -> None:
    with pytest.raises(CodecError, match="log entry"):
        decode_entry(b"\x94\x01\x01" + kind + b"\xc4\x00")


@pytest.mark.parametrize(
    "raw",
    [
        msgpack.packb([[1, [99, 2, 1, 0, 0, 0, [], 0, False, 0, None, 0, False]]]),  # unknown message type
        msgpack.packb([[1, [1, -2, 1, 0, 0, 0, [], 0, False, 0, None, 0, False]]]),  # negative node id
        msgpack.packb([[1, [1, 2, 1, 0, 0, 0, [], 0, 0, 0, None, 0, False]]]),  # reject not a bool
        msgpack.packb([[1, [1, 2, 1, 0, 0, 0, [], 0, False, 0, None, 0]]]),  # a field short
        msgpack.packb([[1, [9, 2, 1, 0, 0, 0, [], 0, False, 0, [[1, 1, [[1], []]], "text"], 0, False]]]),
        msgpack.packb([["g", [1, 2, 1, 0, 0, 0, [], 0, False, 0, None, 0, False]]]),  # group not a number
    ],
)
def test_a_malformed_peer_frame_is_refused(raw: bytes) -> None:
    with pytest.raises(CodecError):
        decode_peer_frame(raw)


def test_partition_snapshot_data_of_another_format_is_refused() -> None:
    raw = msgpack.packb([PARTITION_SNAPSHOT_FORMAT - 1, 5, [], [], [], [], []])
    with pytest.raises(CodecError, match="format"):
        decode_partition_snapshot(raw)
