"""The lessor on a manual clock: deadlines with the drift margin, restarts on promotion,
keepalives acknowledged only after a leadership confirmation and with no shorter checkpoint in
the way, periodic checkpoints, expiries (bounded, retried) and demotion."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kvstore.node.lessor import Checkpoint, Expiry, Lessor, LessorConfig, LessorWork, ManualClock
from kvstore.statemachine.leases import Lease

DRIFT = 0.01
CONFIG = LessorConfig(max_drift=DRIFT, checkpoint_interval=1.0, expire_retry=3.0)


def lease(number: int, ttl: int, remaining_ms: int = 0) -> Lease:
    return Lease(number, ttl, remaining_ms, revision=number * 10)


def promoted(*leases: Lease, config: LessorConfig = CONFIG) -> tuple[Lessor[str], ManualClock]:
    clock = ManualClock(1000.0)
    lessor: Lessor[str] = Lessor(clock, config)
    lessor.promote(leases)
    return lessor, clock


def run_until_expiry(lessor: Lessor[str], clock: ManualClock, step: float = 0.01) -> float:
    """Advance until `poll` proposes an expiry; the time it did, answering any checkpoint."""
    for _ in range(100_000):
        work = lessor.poll()
        for checkpoint in work.checkpoints:
            lessor.checkpointed(checkpoint.lease, checkpoint.remaining_ms)
        if work.expiries:
            return clock.now()
        clock.advance(step)
    raise AssertionError("no expiry proposed")


def confirm(lessor: Lessor[str], work: LessorWork[str]) -> LessorWork[str]:
    assert work.confirm is not None
    lessor.confirmed(work.confirm)
    return lessor.poll()


def test_a_promoted_lease_expires_after_its_ttl_with_the_drift_margin() -> None:
    lessor, clock = promoted(lease(1, 10))
    start = clock.now()
    expired_at = run_until_expiry(lessor, clock)
    assert expired_at - start == pytest.approx(10 * (1 + DRIFT), abs=0.02)


def test_promotion_restarts_a_checkpointed_lease_from_its_remaining_ttl() -> None:
    lessor, clock = promoted(lease(1, 10, remaining_ms=2500))
    start = clock.now()
    assert run_until_expiry(lessor, clock) - start == pytest.approx(2.5, abs=0.02)


def test_the_expiry_names_the_lease_and_its_grant_and_is_proposed_once_then_retried() -> None:
    lessor, clock = promoted(lease(1, 1))
    clock.advance(1 * (1 + DRIFT))
    work = lessor.poll()
    assert work.expiries == (Expiry(1, 10),)
    clock.advance(2.9)
    assert lessor.poll().expiries == ()
    clock.advance(0.2)
    assert lessor.poll().expiries == (Expiry(1, 10),)  # the first entry was lost
    lessor.removed(1)
    clock.advance(10)
    assert lessor.poll().expiries == ()


def test_expiries_are_bounded_per_poll_soonest_first() -> None:
    config = replace(CONFIG, max_expiries=2)
    lessor, clock = promoted(lease(1, 3), lease(2, 1), lease(3, 2), config=config)
    clock.advance(10)
    assert lessor.poll().expiries == (Expiry(2, 20), Expiry(3, 30))
    assert lessor.poll().expiries == (Expiry(1, 10),)


def test_a_keepalive_is_acknowledged_only_after_leadership_is_confirmed() -> None:
    lessor, clock = promoted(lease(1, 5))
    assert lessor.keep_alive(1, "ka")
    work = lessor.poll()
    assert work.acknowledged == () and work.confirm is not None
    assert lessor.poll().confirm is None  # one round covers it
    assert confirm(lessor, work).acknowledged == (("ka", 5),)


def test_a_round_started_before_a_keepalive_does_not_confirm_it() -> None:
    lessor, _ = promoted(lease(1, 5))
    lessor.keep_alive(1, "first")
    first_round = lessor.poll().confirm
    lessor.keep_alive(1, "second")
    second = lessor.poll()
    assert first_round is not None and second.confirm == first_round + 1
    lessor.confirmed(first_round)
    assert lessor.poll().acknowledged == (("first", 5),)
    lessor.confirmed(second.confirm)
    assert lessor.poll().acknowledged == (("second", 5),)


def test_a_failed_confirmation_round_is_started_again() -> None:
    lessor, _ = promoted(lease(1, 5))
    lessor.keep_alive(1, "ka")
    first = lessor.poll().confirm
    assert first is not None
    lessor.confirmation_failed(first)
    again = lessor.poll()
    assert again.confirm == first + 1
    assert confirm(lessor, again).acknowledged == (("ka", 5),)


def test_a_keepalive_extends_the_deadline_from_its_receipt() -> None:
    lessor, clock = promoted(lease(1, 10))
    clock.advance(8)
    lessor.keep_alive(1, "ka")
    received = clock.now()
    assert run_until_expiry(lessor, clock) - received == pytest.approx(10 * (1 + DRIFT), abs=0.02)


def test_keepalives_of_unknown_or_expiring_leases_or_on_a_follower_are_refused() -> None:
    lessor, clock = promoted(lease(1, 1))
    assert not lessor.keep_alive(2, "unknown")
    lessor.keep_alive(1, "pending")
    clock.advance(2)
    work = lessor.poll()
    assert work.expiries == (Expiry(1, 10),) and work.refused == ("pending",)
    assert not lessor.keep_alive(1, "while expiring")
    follower: Lessor[str] = Lessor(ManualClock(), CONFIG)
    assert not follower.keep_alive(1, "follower")
    assert follower.poll() == LessorWork()


def test_a_keepalive_of_a_checkpointed_lease_waits_for_a_clearing_checkpoint() -> None:
    lessor, _ = promoted(lease(1, 10, remaining_ms=3000))
    lessor.keep_alive(1, "ka")
    work = lessor.poll()
    assert work.checkpoints == (Checkpoint(1, 10, 0),)
    after_confirmation = confirm(lessor, work)
    assert after_confirmation.acknowledged == () and after_confirmation.checkpoints == ()
    lessor.checkpointed(1, 0)
    assert lessor.poll().acknowledged == (("ka", 10),)


def test_a_keepalive_waits_for_a_checkpoint_proposed_before_it_and_then_clears() -> None:
    lessor, clock = promoted(lease(1, 10))
    clock.advance(6)  # a checkpoint is due
    periodic = lessor.poll().checkpoints
    assert len(periodic) == 1 and periodic[0].remaining_ms == pytest.approx(4100, abs=1)
    lessor.keep_alive(1, "ka")
    work = lessor.poll()
    # The checkpoint proposed before the keepalive would restart a new leader at 4.1 s, so a
    # clear follows it in the log, and the keepalive waits for both.
    assert work.checkpoints == (Checkpoint(1, 10, 0),)
    lessor.confirmed(work.confirm or 0)
    lessor.checkpointed(1, periodic[0].remaining_ms)
    assert lessor.poll().acknowledged == ()
    lessor.checkpointed(1, 0)
    assert lessor.poll().acknowledged == (("ka", 10),)


def test_a_lease_renewed_more_often_than_the_interval_is_never_checkpointed() -> None:
    lessor, clock = promoted(lease(1, 3))
    for tick in range(3000):
        if tick % 90 == 0:
            lessor.keep_alive(1, f"ka{tick}")
        work = lessor.poll()
        assert work.checkpoints == () and work.expiries == ()
        if work.confirm is not None:
            lessor.confirmed(work.confirm)
        clock.advance(0.01)


def test_an_abandoned_lease_is_checkpointed_every_interval() -> None:
    lessor, clock = promoted(lease(1, 4))
    proposed: list[int] = []
    for _ in range(100):
        work = lessor.poll()
        for checkpoint in work.checkpoints:
            proposed.append(checkpoint.remaining_ms)
            lessor.checkpointed(checkpoint.lease, checkpoint.remaining_ms)
        if work.expiries:
            break
        clock.advance(0.25)
    assert proposed == pytest.approx([3040, 2040, 1040, 40], abs=1)


def test_a_new_leader_restarting_from_checkpoints_expires_an_abandoned_lease_under_churn() -> None:
    """Each leader reigns 3 s, less than the 10 s TTL: without checkpoints each would restart
    the lease from its full TTL forever."""
    table = lease(1, 10)
    clock = ManualClock()
    for reign in range(20):
        lessor: Lessor[str] = Lessor(clock, CONFIG)
        lessor.promote([table])
        for _ in range(300):
            work = lessor.poll()
            if work.expiries:
                assert reign > 2
                return
            for checkpoint in work.checkpoints:
                lessor.checkpointed(checkpoint.lease, checkpoint.remaining_ms)
                table = Lease(table.id, table.ttl, checkpoint.remaining_ms, table.revision)
            clock.advance(0.01)
        lessor.demote()
    raise AssertionError("the lease never expired under leader churn")


def test_checkpoints_are_bounded_per_poll() -> None:
    config = replace(CONFIG, max_checkpoints=2)
    lessor, clock = promoted(lease(1, 10), lease(2, 10), lease(3, 10), config=config)
    clock.advance(6)
    assert [checkpoint.lease for checkpoint in lessor.poll().checkpoints] == [1, 2]
    clock.advance(1)
    assert [checkpoint.lease for checkpoint in lessor.poll().checkpoints] == [3]


def test_a_dropped_checkpoint_is_no_longer_waited_for() -> None:
    lessor, _ = promoted(lease(1, 10, remaining_ms=3000))
    lessor.keep_alive(1, "ka")
    work = lessor.poll()
    lessor.checkpoints_dropped(work.checkpoints)
    lessor.confirmed(work.confirm or 0)
    assert lessor.poll().checkpoints == (Checkpoint(1, 10, 0),)  # proposed again


def test_grants_start_at_full_ttl_and_removal_refuses_pending_keepalives() -> None:
    lessor, clock = promoted()
    lessor.granted(lease(4, 2))
    start = clock.now()
    lessor.keep_alive(4, "pending")
    assert lessor.removed(4) == ["pending"]
    assert not lessor.keep_alive(4, "after")
    lessor.granted(lease(5, 2))
    assert run_until_expiry(lessor, clock) - start == pytest.approx(2 * (1 + DRIFT), abs=0.02)


def test_demotion_forgets_everything_and_returns_the_pending_keepalives() -> None:
    lessor, clock = promoted(lease(1, 1))
    lessor.keep_alive(1, "pending")
    assert lessor.demote() == ["pending"]
    assert not lessor.primary
    clock.advance(100)
    assert lessor.poll() == LessorWork()
    assert lessor.next_deadline() is None and lessor.remaining(1) is None


def test_remaining_is_in_real_seconds_and_next_deadline_is_the_soonest_event() -> None:
    lessor, clock = promoted(lease(1, 10), lease(2, 3), config=replace(CONFIG, checkpoint_interval=5.0))
    assert lessor.remaining(1) == pytest.approx(10)
    assert lessor.next_deadline() == pytest.approx(1000 + 3 * (1 + DRIFT))
    clock.set(1000 + 3 * (1 + DRIFT))
    assert lessor.poll().expiries == (Expiry(2, 20),)
    assert lessor.next_deadline() == pytest.approx(1005.0)  # checkpoints, before the retry
    assert lessor.remaining(2) == 0


def test_config_is_checked() -> None:
    with pytest.raises(ValueError):
        LessorConfig(max_drift=1.0)
    with pytest.raises(ValueError):
        LessorConfig(checkpoint_interval=0)
    with pytest.raises(ValueError):
        LessorConfig(max_expiries=0)
