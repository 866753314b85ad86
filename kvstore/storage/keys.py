"""The layout of keys in a node's single LevelDB keyspace.

Every key starts with one ASCII tag byte naming its kind. Numbers that follow are unsigned,
fixed-width and big-endian, so byte order (LevelDB's order) is numeric order: a group's log is
one contiguous range in index order, and each partition's data is one contiguous range.

=====  =================================  ===============================================
tag    rest of the key                    value
=====  =================================  ===============================================
``A``  group ``g`` (u32)                  apply state of group ``g``: applied index, conf
                                          state and whatever the applier needs; written in
                                          the same batch as the data it covers
``D``  partition ``p`` (u32), user key    a user key's data in partition ``p``
``H``  group ``g`` (u32)                  Raft hard state of group ``g`` (codec)
``L``  group ``g`` (u32), index (u64)     Raft log entry of group ``g`` (codec); the lowest
                                          index of a group is the dummy entry at its
                                          compaction point
``M``  name (UTF-8)                       node metadata (node id, format version, ...)
``S``  group ``g`` (u32)                  metadata of group ``g``'s latest snapshot (codec)
``T``  group ``g`` (u32)                  tombstone of group ``g``'s deleted replica (codec):
                                          kept for good, as the group may come back
=====  =================================  ===============================================

The layer attaches no meaning to groups or partitions: they are numbers that keep keys apart.
Use `prefix_end` to turn any prefix here into the exclusive end of a range scan.
"""

from __future__ import annotations

import struct

APPLY_STATE_TAG = b"A"
DATA_TAG = b"D"
HARD_STATE_TAG = b"H"
LOG_TAG = b"L"
META_TAG = b"M"
SNAPSHOT_META_TAG = b"S"
TOMBSTONE_TAG = b"T"

_U32 = struct.Struct(">I")
_GROUP_INDEX = struct.Struct(">IQ")

_LOG_KEY_LEN = 1 + _GROUP_INDEX.size
_DATA_PREFIX_LEN = 1 + _U32.size


def _u32(value: int, what: str) -> bytes:
    try:
        return _U32.pack(value)
    except struct.error:
        raise ValueError(f"{what} {value!r} is not an unsigned 32-bit integer") from None


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key that starts with `prefix`, for an exclusive
    range end; None (scan to the end) when no such key exists (empty or all-0xff prefix)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes((trimmed[-1] + 1,))


# -- Raft groups ---------------------------------------------------------------------------


def log_key(group: int, index: int) -> bytes:
    try:
        return LOG_TAG + _GROUP_INDEX.pack(group, index)
    except struct.error:
        raise ValueError(f"log key needs a u32 group and a u64 index, got {group!r}, {index!r}") from None


def log_prefix(group: int) -> bytes:
    """Prefix of every log key of `group`."""
    return LOG_TAG + _u32(group, "group")


def parse_log_key(key: bytes) -> tuple[int, int]:
    """(group, index) of a key made by `log_key`."""
    if len(key) != _LOG_KEY_LEN or key[:1] != LOG_TAG:
        raise ValueError(f"not a log key: {key!r}")
    group, index = _GROUP_INDEX.unpack_from(key, 1)
    return group, index


def hard_state_key(group: int) -> bytes:
    return HARD_STATE_TAG + _u32(group, "group")


def snapshot_meta_key(group: int) -> bytes:
    return SNAPSHOT_META_TAG + _u32(group, "group")


def apply_state_key(group: int) -> bytes:
    return APPLY_STATE_TAG + _u32(group, "group")


def tombstone_key(group: int) -> bytes:
    return TOMBSTONE_TAG + _u32(group, "group")


def parse_group_key(key: bytes) -> int:
    """The group of a per-group key (hard state, snapshot metadata, apply state, tombstone)."""
    if len(key) != 1 + _U32.size:
        raise ValueError(f"not a per-group key: {key!r}")
    group: int = _U32.unpack_from(key, 1)[0]
    return group


# -- partitions ----------------------------------------------------------------------------


def data_prefix(partition: int) -> bytes:
    """Prefix of every data key of `partition`."""
    return DATA_TAG + _u32(partition, "partition")


def data_key(partition: int, user_key: bytes) -> bytes:
    return data_prefix(partition) + user_key


def parse_data_key(key: bytes) -> tuple[int, bytes]:
    """(partition, user key) of a key made by `data_key`."""
    if len(key) < _DATA_PREFIX_LEN or key[:1] != DATA_TAG:
        raise ValueError(f"not a data key: {key!r}")
    (partition,) = _U32.unpack_from(key, 1)
    return partition, key[_DATA_PREFIX_LEN:]


# -- node ----------------------------------------------------------------------------------


def meta_key(name: str) -> bytes:
    if not name:
        raise ValueError("node metadata needs a non-empty name")
    return META_TAG + name.encode()


def parse_meta_key(key: bytes) -> str:
    if len(key) < 2 or key[:1] != META_TAG:
        raise ValueError(f"not a node metadata key: {key!r}")
    return key[1:].decode()
