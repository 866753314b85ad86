"""Keys the applier stores besides those of `kvstore.storage.keys`, with the encodings of its
stored values.

Two more tag bytes, unused by `kvstore.storage.keys` (which has A D H L M S):

=====  =================================  ===============================================
tag    rest of the key                    value
=====  =================================  ===============================================
``C``  partition ``p`` (u32), client id   client-dedup record: seq (u64), revision (u64)
       (UTF-8)                            of the command, then its encoded result
``F``  partition ``p`` (u32), user key    fence: the highest fencing token (u64) the key
                                          has accepted; kept when the key is deleted
=====  =================================  ===============================================

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
CLIENT_RECORD_HEADER = struct.Struct(">QQ")  # seq, revision


def client_prefix(partition: int) -> bytes:
    """Prefix of every client-dedup key of `partition`."""
    return CLIENT_TAG + _U32.pack(partition)


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
