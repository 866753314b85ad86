"""msgpack encoding of the Raft records that the storage layer persists.

Each record is a msgpack array of its fields in a fixed order (no field names), so an entry
costs a few bytes beyond its data. Member sets are written sorted so that equal records always
encode to equal bytes. Decoding checks the shape and raises `CorruptionError` on anything else:
a record that does not decode means the data directory is damaged.

=============  ==========================================
record         array
=============  ==========================================
Entry          ``[index, term, data, type]``
HardState      ``[term, vote, commit]``
ConfState      ``[[voter, ...], [learner, ...]]``
SnapshotMeta   ``[index, term, ConfState]``
=============  ==========================================
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import msgpack

from kvstore.raft.types import ConfState, Entry, EntryType, HardState, SnapshotMeta
from kvstore.storage.errors import CorruptionError

_ENTRY_TYPES = MappingProxyType({int(kind): kind for kind in EntryType})


def _unpack(record: str, raw: bytes) -> tuple[Any, ...]:
    try:
        value = msgpack.unpackb(raw, use_list=False, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CorruptionError(f"stored {record} does not decode: {exc}") from None
    if not isinstance(value, tuple):
        raise CorruptionError(f"stored {record} is not an array: {value!r:.80}")
    return value


def _uint(record: str, value: object) -> int:
    # bool is an int subclass, but never a valid index, term or node id.
    if type(value) is not int or value < 0:
        raise CorruptionError(f"stored {record} has a bad number: {value!r:.80}")
    return value


def _entry_fields(entry: Entry) -> tuple[int, int, bytes, EntryType]:
    # An IntEnum packs as the plain int it is: no int() call needed.
    return (entry.index, entry.term, entry.data, entry.type)


def encode_entry(entry: Entry) -> bytes:
    return msgpack.packb(_entry_fields(entry))


def decode_entry(raw: bytes) -> Entry:
    # The hot path of log reads: checks are inlined, and the type is looked up rather than
    # built by calling the enum (which costs more than the rest of the decoding).
    fields = _unpack("log entry", raw)
    if len(fields) != 4:
        raise CorruptionError(f"stored log entry has a bad shape: {fields!r:.80}")
    index, term, data, kind = fields
    if type(index) is not int or type(term) is not int or index < 0 or term < 0 or type(data) is not bytes:
        raise CorruptionError(f"stored log entry has bad fields: {fields!r:.80}")
    entry_type = _ENTRY_TYPES.get(kind) if type(kind) is int else None
    if entry_type is None:
        raise CorruptionError(f"stored log entry has an unknown type {kind!r:.80}")
    return Entry(index, term, data, entry_type)


def _hard_state_fields(hard_state: HardState) -> tuple[int, int, int]:
    return (hard_state.term, hard_state.vote, hard_state.commit)


def encode_hard_state(hard_state: HardState) -> bytes:
    return msgpack.packb(_hard_state_fields(hard_state))


class RecordEncoder:
    """Encodes the records written on every Ready (entries, hard states) to the same bytes as
    `encode_entry` / `encode_hard_state`, reusing one msgpack packer: `msgpack.packb` builds a
    packer, with a fresh buffer, per call, which costs more than the packing. Not thread-safe:
    one per user."""

    __slots__ = ("_pack",)

    def __init__(self) -> None:
        self._pack = msgpack.Packer().pack

    def entry(self, entry: Entry) -> bytes:
        return self._pack(_entry_fields(entry))

    def hard_state(self, hard_state: HardState) -> bytes:
        return self._pack(_hard_state_fields(hard_state))


def decode_hard_state(raw: bytes) -> HardState:
    fields = _unpack("hard state", raw)
    if len(fields) != 3:
        raise CorruptionError(f"stored hard state has a bad shape: {fields!r:.80}")
    term, vote, commit = (_uint("hard state", f) for f in fields)
    return HardState(term, vote, commit)


def _conf_state_fields(conf_state: ConfState) -> tuple[list[int], list[int]]:
    return sorted(conf_state.voters), sorted(conf_state.learners)


def _conf_state_from(fields: object) -> ConfState:
    if not isinstance(fields, tuple) or len(fields) != 2 or not all(isinstance(f, tuple) for f in fields):
        raise CorruptionError(f"stored conf state has a bad shape: {fields!r:.80}")
    voters, learners = fields
    return ConfState(
        frozenset(_uint("conf state", v) for v in voters),
        frozenset(_uint("conf state", v) for v in learners),
    )


def encode_conf_state(conf_state: ConfState) -> bytes:
    return msgpack.packb(_conf_state_fields(conf_state))


def decode_conf_state(raw: bytes) -> ConfState:
    return _conf_state_from(_unpack("conf state", raw))


def encode_snapshot_meta(meta: SnapshotMeta) -> bytes:
    return msgpack.packb((meta.index, meta.term, _conf_state_fields(meta.conf_state)))


def decode_snapshot_meta(raw: bytes) -> SnapshotMeta:
    fields = _unpack("snapshot metadata", raw)
    if len(fields) != 3:
        raise CorruptionError(f"stored snapshot metadata has a bad shape: {fields!r:.80}")
    index, term, conf_state = fields
    return SnapshotMeta(
        _uint("snapshot metadata", index), _uint("snapshot metadata", term), _conf_state_from(conf_state)
    )
