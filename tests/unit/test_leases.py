"""The lease table of a partition on the in-memory engine: ids that encode the partition,
grant/revoke/checkpoint, the lease -> keys index, staging before the batch is written, loading
from the engine, snapshot replacement and determinism."""

from __future__ import annotations

import random

import pytest

from kvstore.names import lease_id, lease_partition
from kvstore.statemachine.leases import MAX_LEASE_TTL, Lease, LeaseTable
from kvstore.statemachine.staging import StagedWrites, read_sections
from kvstore.storage import CorruptionError, MemoryEngine

PARTITION = 7


class Replica:
    """A lease table over its own engine, with a batch written on `commit`, as the node does
    after each Ready cycle."""

    def __init__(self, engine: MemoryEngine | None = None) -> None:
        self.engine = engine or MemoryEngine()
        self.store = StagedWrites(self.engine)
        self.table = LeaseTable(PARTITION, self.store)
        self.batch = self.engine.new_batch()
        self.store.use(self.batch)

    def commit(self) -> None:
        self.engine.write(self.batch, sync=True)
        self.batch = self.engine.new_batch()
        self.store.use(self.batch)

    def restart(self) -> None:
        """Construct the table afresh over the written engine, as a restarted node does."""
        self.store = StagedWrites(self.engine)
        self.table = LeaseTable(PARTITION, self.store)
        self.store.use(self.batch)

    def reopened(self) -> LeaseTable:
        """A table constructed afresh over the written engine (a restarted node)."""
        return LeaseTable(PARTITION, StagedWrites(self.engine))

    def everything(self) -> list[tuple[bytes, bytes]]:
        return list(self.engine.iterate(b"", None))


def test_a_lease_id_encodes_its_partition_and_is_a_positive_int64() -> None:
    for partition in (0, 1, PARTITION, (1 << 16) - 1):
        for number in (1, 12345, (1 << 47) - 1):
            lease = lease_id(partition, number)
            assert 0 < lease < 1 << 63
            assert lease_partition(lease) == partition
    with pytest.raises(ValueError):
        lease_id(PARTITION, 0)
    with pytest.raises(ValueError):
        lease_id(PARTITION, 1 << 47)


def test_grant_takes_its_number_from_the_revision_and_persists() -> None:
    replica = Replica()
    lease = replica.table.grant(revision=42, ttl=10)
    assert lease == Lease(lease_id(PARTITION, 42), 10, 0, 42)
    assert lease.id in replica.table and replica.table.get(lease.id) == lease
    replica.commit()
    assert replica.reopened().leases() == [lease]


def test_a_requested_id_is_used_and_auto_ids_step_around_it() -> None:
    table = Replica().table
    chosen = table.grant(revision=5, ttl=3, requested=lease_id(PARTITION, 9))
    assert chosen.id == lease_id(PARTITION, 9)
    # A later grant at revision 9 would get number 9, which a client already took.
    assert table.grant(revision=9, ttl=3).id == lease_id(PARTITION, 10)
    assert [lease.id for lease in table.leases()] == [lease_id(PARTITION, 9), lease_id(PARTITION, 10)]


def test_auto_ids_wrap_below_2_to_the_47_and_skip_zero() -> None:
    table = Replica().table
    assert table.grant(revision=1 << 47, ttl=1).id == lease_id(PARTITION, 1)
    assert table.grant(revision=(1 << 47) + 1, ttl=1).id == lease_id(PARTITION, 2)
    assert table.grant(revision=(1 << 48) - 1, ttl=1).id == lease_id(PARTITION, (1 << 47) - 1)
    assert table.grant(revision=(1 << 48) + 1, ttl=1).id == lease_id(PARTITION, 3)


@pytest.mark.parametrize(
    ("ttl", "requested", "problem"),
    [
        (0, 0, "TTL must be between 1 and"),
        (MAX_LEASE_TTL + 1, 0, "TTL must be between 1 and"),
        (
            5,
            lease_id(PARTITION + 1, 3),
            f"belongs to partition {PARTITION + 1}, not to partition {PARTITION}",
        ),
        (5, PARTITION << 47, "is not a lease id"),
        (5, 1 << 63, "is not a lease id"),
        (5, lease_id(PARTITION, 4), "already exists"),
    ],
)
def test_grant_problems_are_explained_and_grant_refuses_them(ttl: int, requested: int, problem: str) -> None:
    replica = Replica()
    replica.table.grant(revision=4, ttl=5)
    before = len(replica.batch)
    found = replica.table.grant_problem(ttl, requested)
    assert found is not None and problem in found
    with pytest.raises(ValueError, match=problem):
        replica.table.grant(revision=20, ttl=ttl, requested=requested)
    assert len(replica.batch) == before
    assert replica.table.grant_problem(5, lease_id(PARTITION, 5)) is None
    assert replica.table.grant_problem(MAX_LEASE_TTL, 0) is None


def test_revoke_returns_the_attached_keys_and_removes_the_lease_and_its_index() -> None:
    replica = Replica()
    table = replica.table
    kept = table.grant(revision=1, ttl=5)
    gone = table.grant(revision=2, ttl=5)
    for key in (b"b", b"a", b"c"):
        table.attach(gone.id, key)
    table.attach(kept.id, b"z")
    replica.commit()
    assert table.keys(gone.id) == [b"a", b"b", b"c"]
    assert table.revoke(gone.id) == [b"a", b"b", b"c"]
    assert gone.id not in table and table.keys(gone.id) == []
    assert table.revoke(gone.id) is None
    replica.commit()
    reopened = replica.reopened()
    assert reopened.leases() == [kept]
    assert reopened.keys(kept.id) == [b"z"] and reopened.keys(gone.id) == []


def test_detach_removes_one_key_from_the_index() -> None:
    replica = Replica()
    lease = replica.table.grant(revision=1, ttl=5)
    replica.table.attach(lease.id, b"a")
    replica.table.attach(lease.id, b"b")
    replica.commit()
    replica.table.detach(lease.id, b"a")
    assert replica.table.keys(lease.id) == [b"b"]
    assert replica.table.revoke(lease.id) == [b"b"]


def test_attach_needs_an_existing_lease() -> None:
    with pytest.raises(KeyError):
        Replica().table.attach(lease_id(PARTITION, 3), b"k")


def test_changes_staged_in_one_batch_are_seen_before_it_is_written() -> None:
    """A put attaching a key and the expiry of its lease may be applied in one Ready cycle."""
    replica = Replica()
    lease = replica.table.grant(revision=1, ttl=5)
    replica.table.attach(lease.id, b"k1")
    replica.commit()
    replica.table.attach(lease.id, b"k2")
    replica.table.detach(lease.id, b"k1")
    assert replica.table.revoke(lease.id) == [b"k2"]
    replica.commit()
    assert replica.everything() == []


def test_an_expiry_meant_for_an_earlier_lease_of_the_same_id_does_nothing() -> None:
    table = Replica().table
    first = table.grant(revision=3, ttl=5, requested=lease_id(PARTITION, 100))
    assert table.revoke(first.id) == []
    second = table.grant(revision=8, ttl=5, requested=lease_id(PARTITION, 100))
    assert table.revoke(second.id, revision=first.revision) is None
    assert table.checkpoint(second.id, first.revision, 1000) is False
    assert table.get(second.id) == second
    assert table.revoke(second.id, revision=second.revision) == []


def test_checkpoint_records_and_clears_the_remaining_ttl() -> None:
    replica = Replica()
    lease = replica.table.grant(revision=1, ttl=5)
    assert replica.table.checkpoint(lease.id, lease.revision, 2500)
    assert replica.table.get(lease.id) == Lease(lease.id, 5, 2500, 1)
    replica.commit()
    assert replica.reopened().get(lease.id) == Lease(lease.id, 5, 2500, 1)
    assert replica.table.checkpoint(lease.id, lease.revision, 0)
    assert replica.table.get(lease.id) == lease
    assert not replica.table.checkpoint(lease_id(PARTITION, 99), 99, 10)


def test_a_corrupt_record_is_refused_when_loading() -> None:
    engine = MemoryEngine()
    batch = engine.new_batch()
    batch.put(b"E" + PARTITION.to_bytes(4, "big") + lease_id(PARTITION, 1).to_bytes(8, "big"), b"short")
    engine.write(batch, sync=True)
    with pytest.raises(CorruptionError, match=f"partition {PARTITION}"):
        LeaseTable(PARTITION, StagedWrites(engine))


def test_replace_restores_a_snapshot_of_another_replica() -> None:
    source = Replica()
    a = source.table.grant(revision=1, ttl=5)
    b = source.table.grant(revision=2, ttl=9)
    source.table.attach(a.id, b"x")
    source.table.attach(b.id, b"y")
    source.table.checkpoint(b.id, b.revision, 4000)
    source.commit()
    with source.engine.read_view() as view:
        sections = read_sections(view, source.table.prefixes)

    target = Replica()
    stale = target.table.grant(revision=1, ttl=1, requested=lease_id(PARTITION, 77))
    target.table.attach(stale.id, b"old")
    target.commit()
    target.table.replace(sections)
    assert target.table.leases() == source.table.leases()
    target.commit()
    assert target.everything() == source.everything()
    assert target.reopened().leases() == source.table.leases()


def test_replace_with_a_bad_record_stages_nothing() -> None:
    replica = Replica()
    replica.table.grant(revision=1, ttl=5)
    replica.commit()
    foreign = lease_id(PARTITION + 1, 1).to_bytes(8, "big")
    with pytest.raises(ValueError, match="stored in partition"):
        replica.table.replace([[(foreign, bytes(24))], []])
    assert len(replica.batch) == 0 and len(replica.table) == 1


def test_random_changes_agree_with_a_model_across_batches_and_restarts() -> None:
    """Grants, attaches, detaches, revokes and checkpoints against a plain dict model, with the
    batch written at random points and the table reopened from the engine now and then."""
    rng = random.Random(5)
    replica = Replica()
    model: dict[int, tuple[Lease, set[bytes]]] = {}
    for revision in range(1, 600):
        kind = rng.choice(("grant", "attach", "attach", "detach", "revoke", "checkpoint"))
        if kind == "grant" or not model:
            lease = replica.table.grant(revision, rng.randint(1, 60))
            model[lease.id] = (lease, set())
        else:
            lease, keys = model[rng.choice(sorted(model))]
            key = b"k%d" % rng.randrange(12)
            if kind == "attach":
                replica.table.attach(lease.id, key)
                keys.add(key)
            elif kind == "detach":
                replica.table.detach(lease.id, key)
                keys.discard(key)
            elif kind == "revoke":
                assert replica.table.revoke(lease.id) == sorted(keys)
                del model[lease.id]
            else:
                remaining = rng.randrange(60_000)
                assert replica.table.checkpoint(lease.id, lease.revision, remaining)
                model[lease.id] = (Lease(lease.id, lease.ttl, remaining, lease.revision), keys)
        if rng.random() < 0.2:
            replica.commit()
            if rng.random() < 0.2:
                replica.restart()
        assert replica.table.leases() == [model[lease][0] for lease in sorted(model)]
    for lease, keys in model.values():
        assert replica.table.keys(lease.id) == sorted(keys)
