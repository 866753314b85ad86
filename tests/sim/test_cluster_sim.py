"""Deterministic simulation of membership changes across many Raft groups (tests/sim/cluster.py)."""

from __future__ import annotations

import os

from tests.sim.cluster import run_cluster_seed

SEEDS = int(os.environ.get("KVSTORE_CLUSTER_SIM_SEEDS", "24"))
STEPS = int(os.environ.get("KVSTORE_CLUSTER_SIM_STEPS", "600"))


def test_membership_changes_under_faults_keep_every_invariant_and_settle() -> None:
    totals: dict[str, int] = {}
    failures = []
    for seed in range(SEEDS):
        problems, sim = run_cluster_seed(seed, STEPS)
        if problems:
            failures.append(f"seed {seed}: {problems[0]}")
        for name, count in sim.stats.items():
            totals[name] = totals.get(name, 0) + count
    print(f"{SEEDS} seeds, {len(failures)} failures, {totals}")
    assert not failures, "\n".join(failures)
    # The run must exercise what it claims to, not pass by doing nothing.
    for happening in ("adds", "removes", "replaces", "crashes", "replicas_created", "replicas_deleted"):
        assert totals[happening] >= SEEDS // 4, f"too few {happening}: {totals}"


def test_same_seed_gives_identical_trace() -> None:
    assert run_cluster_seed(3, 300)[1].digest() == run_cluster_seed(3, 300)[1].digest()
    assert run_cluster_seed(3, 300)[1].digest() != run_cluster_seed(4, 300)[1].digest()

