"""Lease safety and liveness in the deterministic simulation (see tests/sim/leases.py), and
mutations of the lessor that show each check bites."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from kvstore.node import lessor as lessor_module
from kvstore.node.lessor import Lessor
from tests.sim import leases
from tests.sim.leases import (
    LESSOR_CONFIG,
    InvariantViolation,
    LeaseSimConfig,
    LeaseSimulation,
    run_lease_seed,
    run_many,
)

SEEDS = int(os.environ.get("KVSTORE_LEASE_SIM_SEEDS", "30"))
STEPS = 1500
CHURN_SEEDS = 12
CHURN_EVERY = 15  # steps: a reign of 1.5 s, shorter than most TTLs (1-3 s)


JOBS = os.cpu_count() or 1


def test_leases_stay_safe_and_expire_under_faults() -> None:
    """Crashes, partitions, loss, pauses, transfers and membership changes, with clocks that
    drift; after healing, every lease left is expired and the replicas agree with the log."""
    totals, failures = run_many([LeaseSimConfig.for_seed(seed, STEPS) for seed in range(SEEDS)], JOBS)
    print(f"{SEEDS} seeds, {len(failures)} failures, {dict(totals)}")
    assert not failures, "\n".join(failures)
    # The run must exercise what it claims to.
    for happening in ("crashes", "partitions", "transfers", "conf_changes", "snapshots_sent", "pauses"):
        assert totals[happening] >= SEEDS // 2, f"too few {happening}: {totals}"
    assert totals["expiries"] > SEEDS * 10 and totals["promotions"] > SEEDS * 5, totals
    assert totals["keepalives_acked"] > SEEDS * 100 and totals["checkpoints"] > SEEDS * 50, totals


def test_abandoned_leases_expire_under_continuous_leader_churn() -> None:
    configs = [LeaseSimConfig.churn(seed, STEPS, CHURN_EVERY) for seed in range(CHURN_SEEDS)]
    totals, failures = run_many(configs, JOBS)
    assert not failures, "\n".join(failures)
    assert totals["transfers"] >= CHURN_SEEDS * STEPS // CHURN_EVERY // 2, totals
    assert totals["expiries"] > CHURN_SEEDS * 10, totals


def test_same_seed_gives_identical_trace() -> None:
    first = run_lease_seed(LeaseSimConfig.for_seed(7, 600))[1].digest()
    again = run_lease_seed(LeaseSimConfig.for_seed(7, 600))[1].digest()
    other = run_lease_seed(LeaseSimConfig.for_seed(8, 600))[1].digest()
    assert first == again != other


# -- mutations: each check must bite ----------------------------------------------------------


def _failing_seeds(configs: list[LeaseSimConfig]) -> list[str]:
    return [problems[0] for problems, _ in (run_lease_seed(config) for config in configs) if problems]


def test_safety_check_catches_a_new_leader_that_restarts_leases_at_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Lessor, "_restart_deadline", lambda self, now, lease: now)
    failing = _failing_seeds([LeaseSimConfig.for_seed(seed, STEPS) for seed in range(10)])
    assert len(failing) >= 8, failing
    assert all("early: a keepalive received at" in problem for problem in failing), failing


def test_safety_check_catches_a_lessor_without_a_drift_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clocks run up to 20 % fast; a lessor that trusts its clock's TTL expires leases early."""
    monkeypatch.setattr(leases, "LESSOR_CONFIG", replace(LESSOR_CONFIG, max_drift=0.0))
    failing = _failing_seeds([LeaseSimConfig.for_seed(seed, STEPS) for seed in range(10)])
    assert len(failing) >= 4, failing
    assert all("early" in problem for problem in failing), failing


def test_liveness_check_catches_a_lessor_without_checkpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each reign is shorter than the TTLs: without checkpoints every new leader restarts an
    abandoned lease from its full TTL, forever."""
    monkeypatch.setattr(Lessor, "_due_checkpoints", lambda self, now, limit: [])
    failing = _failing_seeds([LeaseSimConfig.churn(seed, STEPS, CHURN_EVERY) for seed in range(6)])
    assert len(failing) == 6, failing
    assert all("is not expired" in problem for problem in failing), failing


# -- directed scenarios: the two conditions of an acknowledgement --------------------------------


def _quiet_simulation(seed: int) -> LeaseSimulation:
    """Three nodes, no random faults, no random clients: the test drives everything."""
    config = LeaseSimConfig(
        seed=seed,
        steps=0,
        initial_voters=3,
        max_nodes=3,
        membership_changes=False,
        compaction=False,
        clients=1,
        faults=False,
    )
    return LeaseSimulation(config)


def _deposed_leader_acknowledges_a_keepalive(seed: int) -> tuple[LeaseSimulation, int, int]:
    """The leader is paused (a long GC) while a new leader takes over and restarts the lease;
    it resumes, still believing it leads, and receives the client's last keepalive."""
    sim = _quiet_simulation(seed)
    sim.step_until(lambda: sim.promoted_leader() is not None, "a leader is promoted")
    old = sim.promoted_leader()
    assert old is not None
    lease = sim.grant_through(old, process=0, ttl=2)
    sim.pause(old, until=0)
    sim.step_until(lambda: sim.promoted_leader() not in (None, old), "a new leader is promoted")
    sim.advance(15)  # 1.5 s of the new leader's restarted 2 s
    sim.resume(old.id)
    received = sim.round
    assert sim.keep_alive_through(old, process=0, lease=lease)
    sim.step_until(lambda: lease in sim.expired_round, "the lease expires", limit=100)
    return sim, lease, received


def test_a_deposed_leader_does_not_acknowledge_keepalives() -> None:
    for seed in range(5):
        sim, lease, received = _deposed_leader_acknowledges_a_keepalive(seed)
        # The keepalive never got its leadership confirmation: the client did not hear back.
        assert sim.acked_round[lease] < received


def test_safety_check_catches_acknowledging_without_leadership_confirmation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keep_alive = Lessor.keep_alive

    def confirmed_at_once(self: Lessor[object], lease: int, ticket: object) -> bool:
        taken = keep_alive(self, lease, ticket)
        if taken:
            self._tickets[-1].confirmed = True
        return taken

    monkeypatch.setattr(Lessor, "keep_alive", confirmed_at_once)
    for seed in range(5):
        with pytest.raises(InvariantViolation, match="early: a keepalive received at"):
            _deposed_leader_acknowledges_a_keepalive(seed)


def _checkpointed_lease_renewed_then_leader_crashes(seed: int) -> None:
    """A lease left alone long enough to be checkpointed is renewed, and its leader crashes
    right after acknowledging: the next leader restarts it from the table."""
    sim = _quiet_simulation(seed)
    sim.step_until(lambda: sim.promoted_leader() is not None, "a leader is promoted")
    leader = sim.promoted_leader()
    assert leader is not None
    lease = sim.grant_through(leader, process=0, ttl=3)
    sim.step_until(
        lambda: 250 < sim.lease(leader, lease).remaining_ms < 900,
        "the lease is checkpointed below 0.9 s",
    )
    acked_before = sim.acked_round[lease]
    assert sim.keep_alive_through(leader, process=0, lease=lease)
    sim.step_until(lambda: sim.acked_round[lease] > acked_before, "the keepalive is acknowledged")
    sim.crash(leader)
    sim.step_until(lambda: lease in sim.expired_round, "the lease expires", limit=200)


def test_a_renewal_clears_the_checkpoint_before_it_is_acknowledged() -> None:
    for seed in range(5):
        _checkpointed_lease_renewed_then_leader_crashes(seed)


def test_safety_check_catches_acknowledging_over_a_shorter_checkpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lessor_module._LeaseClock, "safe_for", lambda self, received: True)
    for seed in range(5):
        with pytest.raises(InvariantViolation, match="early: a keepalive received at"):
            _checkpointed_lease_renewed_then_leader_crashes(seed)
