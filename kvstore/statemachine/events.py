"""What applying entries changed, as the applier reports it to the node after each `apply`.

* `Change`: a user key was put or deleted (a delete may come from the key's lease expiring or
  being revoked). The node publishes them, once the batch holding them is written, to its
  change-notification hub (`kvstore.hub`): lock waiters and watches.
* `LeaseGranted`, `LeaseRemoved`, `LeaseCheckpointed`: the lease table changed; the node tells
  the partition's lessor (`kvstore.node.lessor`) when it leads the partition.

Records only; the stored values stay raw until a consumer asks for a `pb.KeyValue` (most
changes have nobody waiting for them).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from kvstore._pb import kvstore_pb2 as pb
from kvstore.statemachine.layout import fill_kv
from kvstore.statemachine.leases import Lease


class ChangeKind(IntEnum):
    PUT = 0
    DELETE = 1


@dataclass(frozen=True, slots=True)
class Change:
    """One applied change of user key `key` of `partition`, at `revision`. `stored` is the key's
    stored record after a put (None after a delete), `prev_stored` the one before (None if the
    key did not exist)."""

    partition: int
    kind: ChangeKind
    key: bytes
    revision: int
    stored: bytes | None
    prev_stored: bytes | None

    def __init__(
        self, partition: int, kind: ChangeKind, key: bytes, revision: int, stored: bytes | None, prev_stored: bytes | None
    ) -> None:
        # Written out so that mypyc compiles it (one Change per applied write; see kvstore.raft.types).
        object.__setattr__(self, "partition", partition)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "revision", revision)
        object.__setattr__(self, "stored", stored)
        object.__setattr__(self, "prev_stored", prev_stored)

    def kv(self) -> pb.KeyValue | None:
        """The key after the change (None after a delete)."""
        return None if self.stored is None else fill_kv(pb.KeyValue(), self.key, self.stored)

    def prev_kv(self) -> pb.KeyValue | None:
        """The key before the change (None if it did not exist)."""
        return None if self.prev_stored is None else fill_kv(pb.KeyValue(), self.key, self.prev_stored)


@dataclass(frozen=True, slots=True)
class LeaseGranted:
    lease: Lease


@dataclass(frozen=True, slots=True)
class LeaseRemoved:
    """Revoked by its client, or expired (`expired`) by the leader."""

    lease: int
    expired: bool


@dataclass(frozen=True, slots=True)
class LeaseCheckpointed:
    lease: int
    remaining_ms: int


LeaseEvent = LeaseGranted | LeaseRemoved | LeaseCheckpointed
