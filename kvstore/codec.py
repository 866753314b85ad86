"""The encoding of every msgpack or struct record kvstore writes to disk or sends between nodes.

Each record has ONE field order, on disk and on the wire alike, written as a msgpack array (no
field names: an entry is stored once per replica and sent once per follower). Member sets are
written sorted, so equal records encode to equal bytes. Field order is part of the format: add
fields at the end only.

=========================  ===================================================================
record                     encoding
=========================  ===================================================================
Entry                      ``[index, term, type, data]``
HardState                  ``[term, vote, commit]``
ConfState                  ``[[voter, ...], [learner, ...]]`` (only inside the records below)
SnapshotMeta               ``[index, term, ConfState]``
Snapshot                   ``[SnapshotMeta, data]`` (only inside a Message)
Message                    ``[type, to, src, term, log_term, index, [Entry, ...], commit,
                           reject, reject_hint, Snapshot | nil, context, transfer, applied]``
peer frame                 ``[[group, Message], ...]``: the Raft messages of many groups for
                           one peer (`PeerFrame.raft_batch`, cut to a size limit by
                           `Encoder.peer_frames`; and a snapshot's chunks joined)
apply state                a SnapshotMeta: the applied index, its term and the applied
                           ConfState, which is exactly the snapshot the state machine can give
partition snapshot data    ``[format, applied_index, data, fences, dedup, leases, lease keys]``,
                           each of the last five a list of ``[key suffix, value]`` pairs of the
                           partition
client dedup record        ``[highest, floor, revision, [[seq, revision, response], ...]]``: a
                           client's highest applied seq, the lowest seq still told apart, the
                           revision of its last applied request, and its remembered results
                           by seq (each applied at `revision`; `response` a serialized
                           `LogResponse`)
lease                      struct ``>QQQ``: TTL in seconds, checkpointed remaining TTL in
                           milliseconds (0: none), revision of its grant
Tombstone                  ``[term, vote, last_index, last_term]``: what a deleted replica
                           keeps (`kvstore.raft.Tombstone`)
=========================  ===================================================================

Pure: msgpack, struct and the record types only. Decoding checks every field's type and shape
and raises `CodecError` on anything else; the storage layer reports that as corruption for the
records it reads back.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterable, Iterator, Sequence
from types import MappingProxyType
from typing import Any

import msgpack

from kvstore.raft.tombstone import Tombstone
from kvstore.raft.types import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)

PARTITION_SNAPSHOT_FORMAT = 5
"""Format 5: one dedup record per client (format 4 had a state record and one record per
result; format 3 had no leases; format 2 held msgpack dedup results)."""
_PARTITION_SNAPSHOT_SECTIONS = 5

_LEASE = struct.Struct(">QQQ")

# Decoding looks the enum members up: calling an IntEnum costs more than the rest of an entry.
_ENTRY_TYPES = MappingProxyType({int(kind): kind for kind in EntryType})
_MESSAGE_TYPES = MappingProxyType({int(kind): kind for kind in MessageType})

KeyValuePairs = list[tuple[bytes, bytes]]
ClientDedupResult = tuple[int, int, bytes]
"""A remembered result: (seq, revision it was applied at, serialized `LogResponse`)."""

_EMPTY_PEER_FRAME = msgpack.packb([])


class CodecError(ValueError):
    """Bytes that are not an encoding of the record asked for."""


class Encoder:
    """Encodes records, reusing one msgpack packer (`msgpack.packb` builds a packer and its buffer
    per call, which costs more than the packing). Not thread-safe: one per user."""

    __slots__ = ("_pack", "_pack_array_header")

    def __init__(self) -> None:
        packer = msgpack.Packer()
        self._pack = packer.pack
        self._pack_array_header = packer.pack_array_header

    def entry(self, entry: Entry) -> bytes:
        return self._pack(_entry_fields(entry))

    def hard_state(self, hard_state: HardState) -> bytes:
        return self._pack((hard_state.term, hard_state.vote, hard_state.commit))

    def snapshot_meta(self, meta: SnapshotMeta) -> bytes:
        """A snapshot's metadata; also the state machine's apply state."""
        return self._pack(_meta_fields(meta))

    def peer_frame(self, items: Iterable[tuple[int, Message]]) -> bytes:
        """All of `items` in one frame."""
        return next(self.peer_frames(items, max_frame_bytes=sys.maxsize), _EMPTY_PEER_FRAME)

    def peer_frames(self, items: Iterable[tuple[int, Message]], max_frame_bytes: int) -> Iterator[bytes]:
        """`items` in order as peer frames, each at most `max_frame_bytes` long unless one message
        alone is longer (it then travels alone); none when there are no items.

        Each pair is packed on its own, so a frame's size is known exactly before it is cut: a
        peer refuses any gRPC message over its request limit (--max-request-bytes).
        """
        parts: list[bytes] = []
        size = 0
        for group, message in items:
            part = self._pack((group, _message_fields(message)))
            if parts and size + len(part) > max_frame_bytes:
                yield self._pack_array_header(len(parts)) + b"".join(parts)
                parts, size = [], 0
            parts.append(part)
            size += len(part)
        if parts:
            yield self._pack_array_header(len(parts)) + b"".join(parts)

    def partition_snapshot(self, applied_index: int, sections: Sequence[KeyValuePairs]) -> bytes:
        return self._pack((PARTITION_SNAPSHOT_FORMAT, applied_index, *sections))

    def client_dedup(self, highest: int, floor: int, revision: int, results: Sequence[ClientDedupResult]) -> bytes:
        return self._pack((highest, floor, revision, results))


def encode_tombstone(tombstone: Tombstone) -> bytes:
    return msgpack.packb((tombstone.term, tombstone.vote, tombstone.last_index, tombstone.last_term))


def decode_tombstone(raw: bytes) -> Tombstone:
    fields = _fields("tombstone", _unpack("tombstone", raw), 4)
    if not all(_is_uint(field) for field in fields):
        raise _bad("tombstone", fields)
    return Tombstone(*fields)


def encode_lease(ttl: int, remaining_ms: int, revision: int) -> bytes:
    return _LEASE.pack(ttl, remaining_ms, revision)


def decode_lease(raw: bytes) -> tuple[int, int, int]:
    """(TTL in seconds, checkpointed remaining TTL in milliseconds, revision of the grant)."""
    try:
        ttl, remaining_ms, revision = _LEASE.unpack(raw)
    except struct.error:
        raise CodecError(f"not a lease record: {raw!r:.80}") from None
    return ttl, remaining_ms, revision


def decode_client_dedup(raw: bytes) -> tuple[int, int, int, list[ClientDedupResult]]:
    """(highest applied seq, floor, revision of the last request applied, results by seq)."""
    fields = _fields("client dedup record", _unpack("client dedup record", raw), 4)
    highest, floor, revision, stored = fields
    if not (_is_uint(highest) and _is_uint(floor) and _is_uint(revision)) or type(stored) is not tuple:
        raise _bad("client dedup record", fields)
    results: list[ClientDedupResult] = []
    for result in stored:
        seq, applied_at, response = _fields("client dedup result", result, 3)
        if not (_is_uint(seq) and _is_uint(applied_at)) or type(response) is not bytes:
            raise _bad("client dedup result", result)
        results.append((seq, applied_at, response))
    return highest, floor, revision, results


# -- encoding ------------------------------------------------------------------------------


def _entry_fields(entry: Entry) -> tuple[int, int, int, bytes]:
    # An IntEnum packs as the plain int it is.
    return (entry.index, entry.term, entry.type, entry.data)


def _conf_state_fields(conf_state: ConfState) -> tuple[list[int], list[int]]:
    return sorted(conf_state.voters), sorted(conf_state.learners)


def _meta_fields(meta: SnapshotMeta) -> tuple[int, int, tuple[list[int], list[int]]]:
    return (meta.index, meta.term, _conf_state_fields(meta.conf_state))


def _message_fields(m: Message) -> tuple[object, ...]:
    snapshot = None if m.snapshot is None else (_meta_fields(m.snapshot.meta), m.snapshot.data)
    return (
        m.type,
        m.to,
        m.src,
        m.term,
        m.log_term,
        m.index,
        [_entry_fields(e) for e in m.entries] if m.entries else (),
        m.commit,
        m.reject,
        m.reject_hint,
        snapshot,
        m.context,
        m.transfer,
        m.applied,
    )


# -- decoding ------------------------------------------------------------------------------


def _unpack(what: str, raw: bytes) -> Any:
    try:
        return msgpack.unpackb(raw, use_list=False, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CodecError(f"not an encoded {what}: {exc}") from None


def _bad(what: str, fields: object) -> CodecError:
    return CodecError(f"not an encoded {what}: {fields!r:.80}")


def _is_uint(value: object) -> bool:
    # bool is an int subclass, but never a valid index, term or node id.
    return type(value) is int and value >= 0


def _fields(what: str, value: object, count: int) -> tuple[Any, ...]:
    if type(value) is not tuple or len(value) != count:
        raise _bad(what, value)
    return value


def _entry(fields: object) -> Entry:
    index, term, kind, data = _fields("log entry", fields, 4)
    entry_type = _ENTRY_TYPES.get(kind) if type(kind) is int else None
    if entry_type is None or not _is_uint(index) or not _is_uint(term) or type(data) is not bytes:
        raise _bad("log entry", fields)
    return Entry(index, term, data, entry_type)


def _conf_state(fields: object) -> ConfState:
    voters, learners = _fields("conf state", fields, 2)
    if type(voters) is not tuple or type(learners) is not tuple:
        raise _bad("conf state", fields)
    if not all(_is_uint(node) for node in voters) or not all(_is_uint(node) for node in learners):
        raise _bad("conf state", fields)
    return ConfState(frozenset(voters), frozenset(learners))


def _meta(fields: object) -> SnapshotMeta:
    index, term, conf_state = _fields("snapshot metadata", fields, 3)
    if not _is_uint(index) or not _is_uint(term):
        raise _bad("snapshot metadata", fields)
    return SnapshotMeta(index, term, _conf_state(conf_state))


def _message(fields: object) -> Message:
    (kind, to, src, term, log_term, index, entries, commit, reject, reject_hint, snapshot, context, transfer,
     applied) = _fields("message", fields, 14)
    message_type = _MESSAGE_TYPES.get(kind) if type(kind) is int else None
    if (
        message_type is None
        or not (_is_uint(to) and _is_uint(src) and _is_uint(term) and _is_uint(log_term) and _is_uint(index))
        or not (_is_uint(commit) and _is_uint(reject_hint) and _is_uint(context) and _is_uint(applied))
        or type(reject) is not bool
        or type(transfer) is not bool
        or type(entries) is not tuple
    ):
        raise _bad("message", fields)
    decoded_snapshot = None
    if snapshot is not None:
        meta, data = _fields("snapshot", snapshot, 2)
        if type(data) is not bytes:
            raise _bad("snapshot", snapshot)
        decoded_snapshot = Snapshot(_meta(meta), data)
    return Message(
        message_type,
        to,
        src,
        term,
        log_term,
        index,
        tuple([_entry(e) for e in entries]),
        commit,
        reject,
        reject_hint,
        decoded_snapshot,
        context,
        transfer,
        applied,
    )


def decode_entry(raw: bytes) -> Entry:
    return _entry(_unpack("log entry", raw))


def decode_hard_state(raw: bytes) -> HardState:
    fields = _fields("hard state", _unpack("hard state", raw), 3)
    term, vote, commit = fields
    if not (_is_uint(term) and _is_uint(vote) and _is_uint(commit)):
        raise _bad("hard state", fields)
    return HardState(term, vote, commit)


def decode_snapshot_meta(raw: bytes) -> SnapshotMeta:
    return _meta(_unpack("snapshot metadata", raw))


def decode_peer_frame(raw: bytes) -> list[tuple[int, Message]]:
    items = _unpack("peer frame", raw)
    if type(items) is not tuple:
        raise _bad("peer frame", items)
    decoded = []
    for item in items:
        group, message = _fields("peer frame item", item, 2)
        if not _is_uint(group):
            raise _bad("peer frame item", item)
        decoded.append((group, _message(message)))
    return decoded


def decode_partition_snapshot(raw: bytes) -> tuple[int, tuple[KeyValuePairs, ...]]:
    """(applied index, (data, fences, dedup, leases, lease keys)) of partition snapshot data."""
    fields = _unpack("partition snapshot", raw)
    snapshot_format, applied_index, *sections = _fields("partition snapshot", fields, 2 + _PARTITION_SNAPSHOT_SECTIONS)
    if snapshot_format != PARTITION_SNAPSHOT_FORMAT or not _is_uint(applied_index):
        raise CodecError(f"not partition snapshot data of format {PARTITION_SNAPSHOT_FORMAT}: {fields!r:.80}")
    checked: list[KeyValuePairs] = []
    for pairs in sections:
        if type(pairs) is not tuple:
            raise _bad("partition snapshot section", pairs)
        section: KeyValuePairs = []
        for pair in pairs:
            suffix, value = _fields("partition snapshot pair", pair, 2)
            if type(suffix) is not bytes or type(value) is not bytes:
                raise _bad("partition snapshot pair", pair)
            section.append((suffix, value))
        checked.append(section)
    return applied_index, tuple(checked)
