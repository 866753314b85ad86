"""Keys the applier stores besides those of `kvstore.storage.keys`, with the encodings of its
stored values.

More tag bytes, unused by `kvstore.storage.keys` (which has A D H L M S):

=====  =================================  ===============================================
tag    rest of the key                    value
=====  =================================  ===============================================
``B``  partition ``p`` (u32)              the bytes of the partition's user keys and
                                          stored values (u64), what the space quota
                                          counts; staged with the apply state
``C``  partition ``p`` (u32), client id   the client's dedup record (`kvstore.codec`): its
       (UTF-8)                            highest applied seq, the lowest seq still told
                                          apart, the revision of its last applied request
                                          and its remembered results, each with its
                                          revision and `LogResponse`
``E``  partition ``p`` (u32), lease id    a lease (`kvstore.codec`): TTL in seconds,
       (u64)                              checkpointed remaining TTL in milliseconds (0:
                                          none), revision of its grant
``F``  partition ``p`` (u32), user key    fence: the highest fencing token (u64) the key
                                          has accepted; kept when the key is deleted
``K``  partition ``p`` (u32), lease id    empty: the user key is attached to the lease
       (u64), user key                    (the index lease -> keys that expiry reads; the
                                          key's own record holds its lease too)
=====  =================================  ===============================================

The applier also owns ``A p`` (apply state: applied index, its term and the applied
configuration, encoded as a snapshot's metadata by `kvstore.codec`) and ``D p key`` (user data:
create revision, mod revision, version, lease as u64s, then the value: a compact struct, as it
is read on every access). All numbers are big-endian.
"""

from __future__ import annotations

import struct

from kvstore._pb import kvstore_pb2 as pb

CLIENT_TAG = b"C"
LEASE_TAG = b"E"
FENCE_TAG = b"F"
LEASE_KEY_TAG = b"K"
STORED_BYTES_TAG = b"B"

_U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")
STORED_KV_HEADER = struct.Struct(">QQQQ")  # create revision, mod revision, version, lease


def client_prefix(partition: int) -> bytes:
    """Prefix of every client-dedup key of `partition`."""
    return CLIENT_TAG + _U32.pack(partition)


def fence_prefix(partition: int) -> bytes:
    """Prefix of every fence key of `partition`."""
    return FENCE_TAG + _U32.pack(partition)


def lease_prefix(partition: int) -> bytes:
    """Prefix of every lease record of `partition`; a record's key adds the lease id (u64)."""
    return LEASE_TAG + _U32.pack(partition)


def lease_keys_prefix(partition: int, lease: int | None = None) -> bytes:
    """Prefix of the index records of `partition` (of one lease's keys, given `lease`)."""
    prefix = LEASE_KEY_TAG + _U32.pack(partition)
    return prefix if lease is None else prefix + U64.pack(lease)


def encode_stored_kv(value: bytes, create_revision: int, mod_revision: int, version: int, lease: int) -> bytes:
    return STORED_KV_HEADER.pack(create_revision, mod_revision, version, lease) + value


def fill_kv(kv: pb.KeyValue, user_key: bytes, raw: bytes) -> pb.KeyValue:
    """`kv` (a new message, or a field of a response being built) set to the stored `raw`."""
    kv.create_revision, kv.mod_revision, kv.version, kv.lease = STORED_KV_HEADER.unpack_from(raw)
    kv.key = user_key
    kv.value = raw[STORED_KV_HEADER.size :]
    return kv


def stored_bytes_key(partition: int) -> bytes:
    return STORED_BYTES_TAG + _U32.pack(partition)

