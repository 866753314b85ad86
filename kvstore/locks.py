"""Lock keys: how a lock's queue is named, in one place for the client and the server.

A lock named ``N`` is the queue of its lock keys, one per lease that asked for it:
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

LEASE_HEX_DIGITS = 16
_LEASE_SUFFIX = re.compile(rb"/([0-9a-f]{16})\Z")


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
