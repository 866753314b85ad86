"""How lease ids and lock keys are made, in one place for the client and the server.

**Lease ids.** A lease lives in one partition, which its id encodes:
``id = partition << 47 | n`` with ``1 <= n < 2**47``, so every id is a positive signed 64-bit
integer, 0 means "no lease", and anyone can route a lease's requests without a lookup.

**Lock keys.** A lock named ``N`` is the queue of its lock keys, one per lease that asked for it:
``lock_prefix(N)`` followed by the lease id in 16 hex digits. The holder is the key with the
smallest create revision; that revision is its fencing token (docs/locks.md).

Every key of one queue must live in one partition, so the prefix carries a ``{hash tag}``:
``N + "/"`` when ``N`` has one (``{user42}:cart-lock`` queues with the keys of ``user42``),
else ``"{" + N + "}/"``. So ``orders`` and ``{orders}`` name the same lock, whose keys look
like ``{orders}/00000d0000000002``, and the lock lives in the partition of ``orders``.
"""

from __future__ import annotations

import re

from kvstore.ring import routing_key

LEASE_NUMBER_BITS = 47
_LEASE_NUMBERS = 1 << LEASE_NUMBER_BITS
_LEASE_SUFFIX = re.compile(rb"/([0-9a-f]{16})\Z")


def lease_id(partition: int, number: int) -> int:
    """The id of lease `number` (``1 <= number < 2**47``) of `partition`."""
    if not 1 <= number < _LEASE_NUMBERS:
        raise ValueError(f"lease number {number} is outside [1, 2**{LEASE_NUMBER_BITS})")
    return partition << LEASE_NUMBER_BITS | number


def lease_partition(lease: int) -> int:
    """The partition lease id `lease` belongs to."""
    return lease >> LEASE_NUMBER_BITS


def is_lease_id(lease: int) -> bool:
    """Whether `lease` is shaped as a lease id: positive, below 2**63, its number not 0."""
    return 0 < lease < 1 << 63 and bool(lease & (_LEASE_NUMBERS - 1))


def lock_prefix(name: bytes) -> bytes:
    """The prefix of every lock key of the lock named `name` (ValueError if `name` is empty)."""
    if not name:
        raise ValueError("a lock name must not be empty")
    if routing_key(name) != name:
        return name + b"/"
    return b"{" + name + b"}/"


def lock_key(name: bytes, lease: int) -> bytes:
    """The lock key of lease `lease` in the queue of the lock named `name`."""
    return lock_prefix(name) + b"%016x" % lease


def split_lock_key(key: bytes) -> tuple[bytes, int] | None:
    """(the lock prefix, the lease id) of a key shaped as a lock key, else None."""
    match = _LEASE_SUFFIX.search(key)
    if match is None:
        return None
    return key[: match.start() + 1], int(match.group(1), 16)
