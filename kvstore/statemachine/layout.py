"""Keys the applier stores besides those of `kvstore.storage.keys`, with the encodings of its
stored values.

Two more tag bytes, unused by `kvstore.storage.keys` (which has A D H L M S):

=====  =================================  ===============================================
tag    rest of the key                    value
=====  =================================  ===============================================
``C``  partition ``p`` (u32), client id   client-dedup record; with ``seq`` 0 the client's
       (UTF-8), ``seq`` (u64)             state: highest applied seq, floor (every seq at
                                          or below it that is not remembered is refused)
                                          and revision of its last applied request (u64s);
                                          with ``seq`` > 0 one remembered request: its
                                          revision (u64), then its encoded result
``F``  partition ``p`` (u32), user key    fence: the highest fencing token (u64) the key
                                          has accepted; kept when the key is deleted
=====  =================================  ===============================================

A client-dedup key ends with a fixed-width seq, so it splits unambiguously into client id and
seq whatever bytes the client id holds (`split_client_suffix`); request seqs start at 1, which
leaves seq 0 free for the client's state.

The applier also owns ``A p`` (apply state, a msgpack array ``[applied_index]``) and
``D p key`` (user data: create revision, mod revision, version, lease as u64s, then the value).
All numbers are big-endian.
"""

from __future__ import annotations

import struct

from kvstore.statemachine.commands import KeyValue

CLIENT_TAG = b"C"
FENCE_TAG = b"F"

_U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")
STORED_KV_HEADER = struct.Struct(">QQQQ")  # create revision, mod revision, version, lease
CLIENT_STATE = struct.Struct(">QQQ")  # highest applied seq, floor, revision of the last apply
CLIENT_STATE_SEQ = 0
"""The seq under which a client's state is stored; no request has it (seq 0 turns dedup off)."""


def client_prefix(partition: int) -> bytes:
    """Prefix of every client-dedup key of `partition`."""
    return CLIENT_TAG + _U32.pack(partition)


def split_client_suffix(suffix: bytes) -> tuple[str, int]:
    """(client id, seq) of a client-dedup key with `client_prefix` removed; ValueError when the
    suffix cannot be one (too short, or a client id that is not UTF-8)."""
    if len(suffix) < U64.size:
        raise ValueError(f"client-dedup key suffix {suffix!r:.80} is shorter than a seq")
    return suffix[: -U64.size].decode(), U64.unpack_from(suffix, len(suffix) - U64.size)[0]


def fence_prefix(partition: int) -> bytes:
    """Prefix of every fence key of `partition`."""
    return FENCE_TAG + _U32.pack(partition)


def encode_stored_kv(
    value: bytes, create_revision: int, mod_revision: int, version: int, lease: int
) -> bytes:
    return STORED_KV_HEADER.pack(create_revision, mod_revision, version, lease) + value


def decode_stored_kv(user_key: bytes, raw: bytes) -> KeyValue:
    create_revision, mod_revision, version, lease = STORED_KV_HEADER.unpack_from(raw)
    return KeyValue(user_key, raw[STORED_KV_HEADER.size :], create_revision, mod_revision, version, lease)
