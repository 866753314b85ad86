"""The lease table of a partition: the replicated half of leases (see docs/locks.md).

What every replica of a partition agrees on about its leases, changed only by applying log
entries: which leases exist, each one's TTL and checkpointed remaining TTL, and which keys are
attached to each. It holds no time: deadlines are kept by the leader's lessor
(`kvstore.node.lessor`), which proposes checkpoints and expiries as entries.

A lease id encodes its partition (`kvstore.names`). Its records are the ``E``
(lease) and ``K`` (lease -> keys index) keys of `kvstore.statemachine.layout`.

Every method stages its writes through the `StagedWrites` it is given, as the rest of the
applier does, and is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kvstore.codec import decode_lease, encode_lease
from kvstore.names import LEASE_NUMBER_BITS, is_lease_id, lease_id, lease_partition
from kvstore.statemachine.layout import U64, lease_keys_prefix, lease_prefix
from kvstore.statemachine.staging import StagedWrites
from kvstore.storage.errors import CorruptionError
from kvstore.storage.keys import prefix_end

_LEASE_NUMBERS = 1 << LEASE_NUMBER_BITS
MAX_LEASE_TTL = 9_000_000_000
"""The longest TTL a lease may have, in seconds (as etcd's); any longer is surely a mistake."""


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease as replicated. `remaining_ms` is the remaining TTL a leader last checkpointed,
    measured on its clock (0: none; a new leader restarts the lease from its full TTL); it
    only ever shortens how long a new leader waits. `revision` is the revision of the grant,
    which tells two leases apart that had the same id one after the other."""

    id: int
    ttl: int
    remaining_ms: int
    revision: int


class LeaseTable:
    """The leases of partition `partition_id`, staged through `store` (see the module doc).

    The leases are also held in memory (a put naming a lease checks it exists); the attached
    keys are only on the engine, read per lease when it goes.
    """

    def __init__(self, partition_id: int, store: StagedWrites) -> None:
        self.partition_id = partition_id
        self._store = store
        self._lease_prefix = lease_prefix(partition_id)
        self._key_prefix = lease_keys_prefix(partition_id)
        prefix = self._lease_prefix
        try:
            self._leases = _load_leases(
                partition_id,
                (
                    (key[len(prefix) :], value)
                    for key, value in store.engine.iterate(prefix, prefix_end(prefix))
                ),
            )
        except ValueError as exc:
            raise CorruptionError(f"partition {partition_id}: {exc}") from None

    @property
    def prefixes(self) -> tuple[bytes, bytes]:
        """The key prefixes the table owns: its records and its key index (snapshot sections)."""
        return self._lease_prefix, self._key_prefix

    # -- reading ----------------------------------------------------------------------------

    def get(self, lease: int) -> Lease | None:
        return self._leases.get(lease)

    def __contains__(self, lease: int) -> bool:
        return lease in self._leases

    def __len__(self) -> int:
        return len(self._leases)

    def leases(self) -> list[Lease]:
        """Every lease, by id."""
        return [self._leases[lease] for lease in sorted(self._leases)]

    def keys(self, lease: int) -> list[bytes]:
        """The user keys attached to `lease`, in byte order (staged changes included)."""
        prefix = self._attachment_prefix(lease)
        return [key[len(prefix) :] for key, _ in self._store.scan(prefix)]

    # -- changes ----------------------------------------------------------------------------

    def grant_problem(self, ttl: int, requested: int) -> str | None:
        """Why granting a lease of `ttl` seconds with id `requested` (0: any) is refused here,
        None when it is fine. The applier answers such a grant without applying it."""
        if not 1 <= ttl <= MAX_LEASE_TTL:
            return f"lease TTL must be between 1 and {MAX_LEASE_TTL} seconds, got {ttl}"
        if requested:
            if not is_lease_id(requested):
                return f"{requested} is not a lease id (a positive 64-bit integer whose low 47 bits are not all 0)"
            if lease_partition(requested) != self.partition_id:
                return (
                    f"lease id {requested} belongs to partition {lease_partition(requested)}, "
                    f"not to partition {self.partition_id} where it was to be granted"
                )
            if requested in self._leases:
                return f"lease {requested} already exists"
        return None

    def grant(self, revision: int, ttl: int, requested: int = 0) -> Lease:
        """Stage a new lease of `ttl` seconds granted at `revision`, with id `requested`, or
        with 0 the first free id from the revision on. Check `grant_problem` first."""
        problem = self.grant_problem(ttl, requested)
        if problem is not None:
            raise ValueError(problem)
        if requested:
            new_id = requested
        else:
            # The revision is new to this partition, so its id is free unless a client chose
            # it; numbers wrap around below 2**47, skipping 0 and the ids in use.
            number = revision % _LEASE_NUMBERS or 1
            while lease_id(self.partition_id, number) in self._leases:
                number = number % (_LEASE_NUMBERS - 1) + 1
            new_id = lease_id(self.partition_id, number)
        lease = Lease(new_id, ttl, 0, revision)
        self._put(lease)
        return lease

    def revoke(self, lease: int, revision: int = 0) -> list[bytes] | None:
        """Stage removing `lease` (revoked by its client, or expired by the leader) with its
        key index; return the keys that were attached to it, which the caller deletes at the
        same revision. None when there is no such lease, or when `revision` (0: any) is not the
        revision of its grant — an expiry meant for an earlier lease of the same id."""
        found = self._leases.get(lease)
        if found is None or (revision and found.revision != revision):
            return None
        keys = self.keys(lease)
        prefix = self._attachment_prefix(lease)
        for key in keys:
            self._store.stage(prefix + key, None)
        del self._leases[lease]
        self._store.stage(self._record_key(lease), None)
        return keys

    def checkpoint(self, lease: int, revision: int, remaining_ms: int) -> bool:
        """Stage `remaining_ms` (0: clear) as the checkpointed remaining TTL of `lease`, if it
        still is the lease granted at `revision`; whether it was."""
        found = self._leases.get(lease)
        if found is None or found.revision != revision:
            return False
        if found.remaining_ms != remaining_ms:
            self._put(Lease(lease, found.ttl, remaining_ms, revision))
        return True

    def attach(self, lease: int, key: bytes) -> None:
        """Stage the index record of `key` attached to `lease` (which must exist)."""
        if lease not in self._leases:
            raise KeyError(f"no lease {lease} in partition {self.partition_id}")
        self._store.stage(self._attachment_prefix(lease) + key, b"")

    def detach(self, lease: int, key: bytes) -> None:
        """Stage removing the index record of `key` attached to `lease`."""
        self._store.stage(self._attachment_prefix(lease) + key, None)

    # -- snapshots --------------------------------------------------------------------------

    def replace(self, sections: Sequence[Iterable[tuple[bytes, bytes]]]) -> None:
        """Stage replacing the whole table by `sections` (the (suffix, value) pairs under each
        of `prefixes`, as a snapshot carries them). ValueError when a record does not decode;
        then nothing was staged."""
        records, attachments = sections
        records = list(records)
        leases = _load_leases(self.partition_id, records)
        self._store.replace(self._lease_prefix, records)
        self._store.replace(self._key_prefix, attachments)
        self._leases = leases

    # -- internals --------------------------------------------------------------------------

    def _record_key(self, lease: int) -> bytes:
        return self._lease_prefix + U64.pack(lease)

    def _attachment_prefix(self, lease: int) -> bytes:
        return lease_keys_prefix(self.partition_id, lease)

    def _put(self, lease: Lease) -> None:
        self._leases[lease.id] = lease
        self._store.stage(
            self._record_key(lease.id), encode_lease(lease.ttl, lease.remaining_ms, lease.revision)
        )


def _load_leases(partition: int, records: Iterable[tuple[bytes, bytes]]) -> dict[int, Lease]:
    """The leases stored as `records` (key suffix after the record prefix, value); ValueError
    (its subclass `CodecError`) when one does not decode or belongs to another partition."""
    leases: dict[int, Lease] = {}
    for suffix, value in records:
        if len(suffix) != U64.size:
            raise ValueError(f"lease record key suffix {suffix!r:.40} is not a lease id")
        lease: int = U64.unpack(suffix)[0]
        if lease_partition(lease) != partition:
            raise ValueError(
                f"lease {lease} of partition {lease_partition(lease)} is stored in partition {partition}"
            )
        ttl, remaining_ms, revision = decode_lease(value)
        leases[lease] = Lease(lease, ttl, remaining_ms, revision)
    return leases
