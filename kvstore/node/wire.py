"""Wire encoding of Raft messages between nodes: msgpack of plain tuples, batched per peer.

A frame carries many (group id, message) pairs, so the per-message cost of gRPC is paid once
per batch. Field order is part of the protocol: append new fields at the end only.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from types import MappingProxyType

import msgpack

from kvstore._pb import peer_pb2
from kvstore.raft import ConfState, Entry, EntryType, Message, MessageType, Snapshot, SnapshotMeta


def _encode_message(m: Message) -> tuple[object, ...]:
    # IntEnum members pack as plain ints: no int() needed for the type fields.
    snapshot = None
    if m.snapshot is not None:
        meta = m.snapshot.meta
        snapshot = (
            meta.index,
            meta.term,
            sorted(meta.conf_state.voters),
            sorted(meta.conf_state.learners),
            m.snapshot.data,
        )
    return (
        m.type,
        m.to,
        m.src,
        m.term,
        m.log_term,
        m.index,
        [(e.index, e.term, e.type, e.data) for e in m.entries] if m.entries else (),
        m.commit,
        m.reject,
        m.reject_hint,
        snapshot,
        m.context,
        m.transfer,
    )


# Looking the types up costs a fraction of calling the enum, which shows in a node's profile.
_MESSAGE_TYPES = MappingProxyType({int(kind): kind for kind in MessageType})
_ENTRY_TYPES = MappingProxyType({int(kind): kind for kind in EntryType})


def _decode_entries(raw: list[list[object]]) -> tuple[Entry, ...]:
    entry_types = _ENTRY_TYPES
    return tuple([Entry(i, t, d, entry_types[k]) for i, t, k, d in raw])  # type: ignore[arg-type,index]


def _decode_message(raw: list[object]) -> Message:
    (kind, to, src, term, log_term, index, entries, commit, reject, reject_hint, snapshot, context, transfer) = raw
    decoded_snapshot = None
    if snapshot is not None:
        s_index, s_term, voters, learners, data = snapshot  # type: ignore[misc]
        decoded_snapshot = Snapshot(SnapshotMeta(s_index, s_term, ConfState(frozenset(voters), frozenset(learners))), data)
    return Message(
        _MESSAGE_TYPES[kind],  # type: ignore[index]
        to,  # type: ignore[arg-type]
        src,  # type: ignore[arg-type]
        term,  # type: ignore[arg-type]
        log_term,  # type: ignore[arg-type]
        index,  # type: ignore[arg-type]
        _decode_entries(entries) if entries else (),  # type: ignore[arg-type]
        commit,  # type: ignore[arg-type]
        reject,  # type: ignore[arg-type]
        reject_hint,  # type: ignore[arg-type]
        decoded_snapshot,
        context,  # type: ignore[arg-type]
        transfer,  # type: ignore[arg-type]
    )


_EMPTY_FRAME = msgpack.packb([])


def encode_frames(items: Iterable[tuple[int, Message]], max_frame_bytes: int) -> Iterator[bytes]:
    """(group, message) pairs as frames for `decode_batch`, in order, each at most
    `max_frame_bytes` long unless one message alone is longer (it then travels alone).

    Each message is packed on its own, so a frame's size is known exactly before it is cut:
    a peer refuses any gRPC message over its request limit (--max-request-bytes).
    """
    packer = msgpack.Packer(use_bin_type=True)
    parts: list[bytes] = []
    size = 0
    for group, message in items:
        part = packer.pack((group, _encode_message(message)))
        if parts and size + len(part) > max_frame_bytes:
            yield packer.pack_array_header(len(parts)) + b"".join(parts)
            parts, size = [], 0
        parts.append(part)
        size += len(part)
    if parts:
        yield packer.pack_array_header(len(parts)) + b"".join(parts)


def encode_batch(items: Iterable[tuple[int, Message]]) -> bytes:
    """All of `items` in one frame."""
    return next(encode_frames(items, max_frame_bytes=sys.maxsize), _EMPTY_FRAME)


def decode_batch(data: bytes) -> list[tuple[int, Message]]:
    return [(group, _decode_message(raw)) for group, raw in msgpack.unpackb(data, raw=False, use_list=True)]


def snapshot_chunks(group: int, from_node: int, message: Message, chunk_bytes: int) -> Iterator[peer_pb2.SnapshotChunk]:
    """A SNAPSHOT message cut into chunks for `Peer.SendSnapshot`; the receiver joins the data
    of all chunks (offsets must be contiguous) and decodes it with `decode_batch`."""
    assert message.snapshot is not None
    payload = encode_batch([(group, message)])
    meta = message.snapshot.meta
    for offset in range(0, len(payload), chunk_bytes):
        yield peer_pb2.SnapshotChunk(
            group_id=group, from_node=from_node, to_node=message.to, index=meta.index, term=meta.term,
            offset=offset, data=payload[offset : offset + chunk_bytes], last=offset + chunk_bytes >= len(payload),
        )
