"""Stable 64-bit hashing, hash-tag routing and key -> partition mapping.

Every process (servers, clients in any language) must map a key to the same partition, so the
hash is BLAKE2b truncated to 8 bytes and read big-endian: it is in every Python's stdlib,
specified by RFC 7693, and independent of platform, byte order and `PYTHONHASHSEED`.
"""

from hashlib import blake2b

RING_BITS = 64
RING_SIZE = 1 << RING_BITS

# Placement walks every partition, and each partition is a Raft group; beyond this the
# cluster map stops being small, so a larger value is almost certainly a mistake.
MAX_PARTITIONS = 1 << 16

# BLAKE2b's personalisation separates the two uses of the hash, so a key can never be
# crafted to collide on purpose with a node's virtual-node token.
_KEY_PERSON = b"kvstore.key"
_TOKEN_PERSON = b"kvstore.vnode"


def hash64(data: bytes) -> int:
    """The stable 64-bit hash of `data`, as an integer in ``[0, 2**64)``."""
    return int.from_bytes(blake2b(data, digest_size=8, person=_KEY_PERSON).digest(), "big")


def routing_key(key: bytes) -> bytes:
    """The part of `key` that decides its partition.

    As in Redis Cluster: if the key has a ``{`` followed later by a ``}`` with at least one
    byte between them, only the bytes between the first ``{`` and the first ``}`` after it are
    hashed, so ``{user42}:cart`` and ``{user42}:profile`` share a partition. Otherwise (no
    braces, no closing brace, or an empty ``{}``) the whole key is hashed.
    """
    open_at = key.find(b"{")
    if open_at < 0:
        return key
    close_at = key.find(b"}", open_at + 1)
    if close_at <= open_at + 1:
        return key
    return key[open_at + 1 : close_at]


def partition_bits(partitions: int) -> int:
    """log2 of `partitions`, after checking it is a power of two in ``[1, MAX_PARTITIONS]``."""
    if isinstance(partitions, bool) or not isinstance(partitions, int):
        raise ValueError(f"partitions must be an int, got {type(partitions).__name__}")
    if partitions < 1 or partitions & (partitions - 1):
        raise ValueError(f"partitions must be a power of two >= 1, got {partitions}")
    if partitions > MAX_PARTITIONS:
        raise ValueError(f"partitions must be at most {MAX_PARTITIONS}, got {partitions}")
    return partitions.bit_length() - 1


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition of `key`: the top ``log2(partitions)`` bits of its routing key's hash."""
    return key_partition(key, partition_bits(partitions))


def key_partition(key: bytes, bits: int) -> int:
    """`partition_for_key` with ``2**bits`` partitions, `bits` already checked by `partition_bits`:
    for the per-key paths of callers that know their partition count in advance."""
    if not isinstance(key, bytes):
        raise ValueError(f"keys are bytes, got {type(key).__name__}")
    return hash64(routing_key(key)) >> (RING_BITS - bits)


def partition_start(partition: int, partitions: int) -> int:
    """The ring position where `partition` begins; it covers ``[start, start + 2**64 / partitions)``."""
    bits = partition_bits(partitions)
    if not 0 <= partition < partitions:
        raise ValueError(f"partition must be in [0, {partitions}), got {partition}")
    return partition << (RING_BITS - bits)


def vnode_tokens(node_id: str, vnodes: int) -> tuple[int, ...]:
    """The `vnodes` ring tokens of `node_id`, derived from the id alone.

    Token ``i`` hashes ``i`` (4 bytes, big-endian) followed by the UTF-8 id; the fixed-width
    prefix keeps every (i, id) pair's input distinct. Every process computes the same ring
    without exchanging tokens, and a node's tokens do not depend on who else is a member.
    """
    if not isinstance(node_id, str) or not node_id:
        raise ValueError(f"node id must be a non-empty str, got {node_id!r}")
    if isinstance(vnodes, bool) or not isinstance(vnodes, int) or not 1 <= vnodes < 1 << 32:
        raise ValueError(f"vnodes must be an int in [1, 2**32), got {vnodes!r}")
    encoded_id = node_id.encode()
    return tuple(
        int.from_bytes(
            blake2b(index.to_bytes(4, "big") + encoded_id, digest_size=8, person=_TOKEN_PERSON).digest(),
            "big",
        )
        for index in range(vnodes)
    )
