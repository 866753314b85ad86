"""Behaviour of the Raft core that its users rely on, driven through the scenario environment."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

import kvstore.raft
from kvstore.raft import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Message,
    MessageType,
    NotLeaderError,
    ProgressState,
    ProposalDroppedError,
    Ready,
    Role,
)
from tests.unit.raft_scenarios.env import InteractionEnv

ELECTION_TICK = 10


def make_env(count: int = 3, seed: int = 0, **config_fields: Any) -> InteractionEnv:
    env = InteractionEnv(seed=seed, trace=False)
    env.add_nodes(count, **config_fields)
    return env


def elect(env: InteractionEnv, node_id: int) -> None:
    env.campaign(node_id)
    env.stabilize()
    assert env.nodes[node_id].role is Role.LEADER


def leader_of(env: InteractionEnv) -> int:
    (leader,) = env.leader_ids()
    return leader


def heartbeat_round(env: InteractionEnv, leader: int) -> None:
    env.tick_heartbeat(leader)
    env.stabilize()


def commit_index(env: InteractionEnv, node_id: int) -> int:
    return env.nodes[node_id].raw.status().commit


def delivered_between(env: InteractionEnv, src: int, to: int, kind: MessageType) -> list[Message]:
    return [m for m in env.delivered if m.src == src and m.to == to and m.type is kind]


def persisted_log(env: InteractionEnv, node_id: int) -> list[tuple[int, int, bytes]]:
    storage = env.nodes[node_id].storage
    entries = storage.entries(storage.first_index(), storage.last_index() + 1, 1 << 62)
    return [(e.index, e.term, e.data) for e in entries]


def out_of_lease(env: InteractionEnv, *node_ids: int) -> None:
    """Run followers' clocks for an election timeout, short of their own (randomized) timeout,
    so they stop counting on the current leader but do not campaign themselves."""
    for node_id in node_ids:
        raft = env.nodes[node_id].raw.raft
        assert raft.randomized_election_timeout > ELECTION_TICK
        env.tick(node_id, ELECTION_TICK - raft.election_elapsed)


# -- elections ------------------------------------------------------------------------------


def test_randomized_timeouts_always_resolve_split_votes() -> None:
    """Two voters that tick in lock-step split the vote whenever their timers coincide; the
    randomized timeouts make a leader emerge for every seed."""
    split_resolved = 0
    for seed in range(60):
        env = make_env(2, seed=seed)
        for _ in range(40 * ELECTION_TICK):
            for node_id in env.nodes:
                env.tick(node_id)
            env.stabilize()
            if env.leader_ids():
                break
        leader = leader_of(env)
        assert all(node.term == env.nodes[leader].term for node in env.nodes.values())
        if env.nodes[leader].term > 1:
            split_resolved += 1
    # Some seeds did split first: the loop above really exercised the tie-break.
    assert split_resolved > 0


def test_randomized_election_timeout_lies_in_one_to_two_election_ticks() -> None:
    env = make_env(1)
    raft = env.nodes[1].raw.raft
    seen = set()
    for _ in range(200):
        raft.become_follower(raft.term, NONE)
        seen.add(raft.randomized_election_timeout)
    assert min(seen) >= ELECTION_TICK
    assert max(seen) < 2 * ELECTION_TICK
    assert len(seen) > 5


def test_prevote_keeps_the_term_of_a_partitioned_node() -> None:
    env = make_env(3)
    elect(env, 1)
    term = env.nodes[3].term
    env.isolated.add(3)
    for _ in range(20):
        env.tick_election(3)
        env.stabilize()
    assert env.nodes[3].term == term
    assert env.nodes[3].role is Role.PRE_CANDIDATE
    env.isolated.clear()
    heartbeat_round(env, 1)
    assert leader_of(env) == 1
    assert {node.term for node in env.nodes.values()} == {term}


def test_without_prevote_a_partitioned_node_inflates_its_term() -> None:
    """The contrast case: what PreVote prevents."""
    env = make_env(3, pre_vote=False)
    elect(env, 1)
    term = env.nodes[3].term
    env.isolated.add(3)
    for _ in range(5):
        env.tick_election(3)
        env.stabilize()
    assert env.nodes[3].term >= term + 5


def test_checkquorum_leader_steps_down_without_a_quorum() -> None:
    env = make_env(3)
    elect(env, 1)
    env.isolated.add(1)
    for _ in range(2):
        env.tick_election(1)
    assert env.nodes[1].role is Role.FOLLOWER
    assert env.nodes[1].raw.status().leader == NONE
    with pytest.raises(NotLeaderError):
        env.nodes[1].raw.propose([b"x"])


def test_checkquorum_leader_with_a_quorum_stays() -> None:
    env = make_env(3)
    elect(env, 1)
    env.isolated.add(3)
    for _ in range(5 * ELECTION_TICK):
        env.tick(1)
        env.stabilize()
    assert env.nodes[1].role is Role.LEADER


def test_followers_ignore_vote_requests_while_in_lease() -> None:
    env = make_env(3)
    elect(env, 1)
    follower = env.nodes[2]
    term = follower.term
    last = follower.raw.status().last_index

    def vote_request() -> Message:
        return Message(MessageType.VOTE, 2, 3, follower.term + 1, log_term=follower.term, index=last + 100)

    follower.raw.step(vote_request())
    rd = follower.raw.ready()
    follower.raw.advance(rd)
    assert follower.term == term
    assert not [m for m in rd.messages if m.type is MessageType.VOTE_RESP]

    # Once an election timeout passes without the leader, the same request is granted.
    out_of_lease(env, 2)
    follower.raw.step(vote_request())
    rd = follower.raw.ready()
    follower.raw.advance(rd)
    assert follower.term == term + 1
    assert [m for m in rd.messages if m.type is MessageType.VOTE_RESP and not m.reject]


def test_followers_told_their_leader_is_unreachable_elect_a_new_one_right_after_the_lease() -> None:
    """The transport reports the leader's connection lost: the lowest-id follower campaigns by
    one tick after the election timeout instead of at a random point up to twice that, never
    before it (voters refuse votes until then, which keeps the leader lease safe), and the
    other follower does not compete with it."""
    for seed in range(20):
        env = make_env(3, seed=seed)
        elect(env, 1)
        term = env.nodes[2].term
        env.isolated.add(1)
        for node_id in (2, 3):
            env.nodes[node_id].raw.report_unreachable(1)
        for ticks in range(1, ELECTION_TICK + 2):
            for node_id in (2, 3):
                env.tick(node_id)
            env.stabilize([2, 3])
            if ticks < ELECTION_TICK:
                assert (env.nodes[2].term, env.nodes[3].term) == (term, term), seed
        assert env.nodes[2].role is Role.LEADER, seed
        assert env.nodes[3].raw.raft.vote == 2, seed  # it voted for 2 and never campaigned itself


def test_an_unreachable_report_about_a_live_leader_changes_nothing() -> None:
    env = make_env(3)
    elect(env, 1)
    term = env.nodes[2].term
    env.nodes[2].raw.report_unreachable(1)
    for _ in range(3 * ELECTION_TICK):
        for node_id in (1, 2, 3):
            env.tick(node_id)
        env.stabilize()
    assert env.leader_ids() == [1]
    assert {env.nodes[n].term for n in (1, 2, 3)} == {term}


# -- replication ----------------------------------------------------------------------------


def test_progress_goes_from_probe_to_replicate() -> None:
    env = make_env(3)
    env.campaign(1)
    while env.nodes[1].role is not Role.LEADER:
        env.process_ready(1)
        env.deliver()
        for node_id in (2, 3):
            env.process_ready(node_id)
        env.deliver([1])
    assert env.nodes[1].raw.status().progress[2].state is ProgressState.PROBE
    env.stabilize()
    assert env.nodes[1].raw.status().progress[2].state is ProgressState.REPLICATE


def test_inflight_appends_to_a_slow_follower_are_bounded() -> None:
    max_inflight = 3
    env = make_env(3, max_inflight_msgs=max_inflight, max_msg_bytes=1)
    elect(env, 1)
    leader = env.nodes[1]
    for i in range(30):
        leader.raw.propose([f"e{i}".encode()])
        # 2 acknowledges everything; 3 receives nothing (its inbox only grows).
        env.stabilize([1, 2])
        unacknowledged = [m for m in env.inboxes[3] if m.type is MessageType.APPEND and m.entries]
        assert len(unacknowledged) <= max_inflight
        assert len(leader.raw.raft.prs[3].inflights) <= max_inflight
    assert commit_index(env, 1) == leader.raw.status().last_index
    # Once 3 catches up, it has the whole log.
    env.stabilize()
    heartbeat_round(env, 1)
    assert persisted_log(env, 3) == persisted_log(env, 1)


def test_fast_backtracking_skips_a_divergent_tail_in_few_round_trips() -> None:
    tail = 100
    env = make_env(3, check_quorum=False)
    elect(env, 1)
    # 1 appends a long tail of term-1 entries that nobody else receives.
    env.isolated.add(1)
    for i in range(tail):
        env.nodes[1].raw.propose([f"old{i}".encode()])
    env.stabilize()
    # 3 leads term 2 and commits a different, equally long tail with 2; then 2 takes over at
    # term 3, so its first probe to 1 is at the very end of that tail.
    elect(env, 3)
    for i in range(tail):
        env.nodes[3].raw.propose([f"new{i}".encode()])
    env.stabilize()
    env.transfer_leader(3, 2)
    env.stabilize()
    assert env.nodes[2].role is Role.LEADER
    env.isolated.clear()
    env.delivered.clear()
    heartbeat_round(env, 2)
    rejections = [m for m in delivered_between(env, 1, 2, MessageType.APPEND_RESP) if m.reject]
    assert 1 <= len(rejections) <= 2
    assert persisted_log(env, 1) == persisted_log(env, 2)
    assert env.nodes[1].applied.payloads == [f"new{i}" for i in range(tail)]


def test_one_append_carries_many_entries() -> None:
    env = make_env(3)
    elect(env, 1)
    env.delivered.clear()
    env.nodes[1].raw.propose([f"e{i}".encode() for i in range(50)])
    env.stabilize()
    appends = [m for m in delivered_between(env, 1, 2, MessageType.APPEND) if m.entries]
    assert [len(m.entries) for m in appends] == [50]


@pytest.mark.parametrize("skip_bcast_commit", [False, True])
def test_followers_learn_a_commit_from_an_empty_append_or_else_the_next_heartbeat(skip_bcast_commit: bool) -> None:
    env = make_env(3, skip_bcast_commit=skip_bcast_commit)
    elect(env, 1)
    env.delivered.clear()
    last = env.nodes[1].raw.propose([b"x"])
    env.stabilize()
    assert commit_index(env, 1) == last
    empty_appends = [m for m in delivered_between(env, 1, 2, MessageType.APPEND) if not m.entries]
    if skip_bcast_commit:
        # One append and its answer per follower: the commit waits for the next message.
        assert empty_appends == []
        assert commit_index(env, 2) < last
        heartbeat_round(env, 1)
    else:
        assert [m.commit for m in empty_appends] == [last]
    assert commit_index(env, 2) == commit_index(env, 3) == last


def test_with_skip_bcast_commit_the_next_append_carries_the_commit() -> None:
    env = make_env(3, skip_bcast_commit=True)
    elect(env, 1)
    first = env.nodes[1].raw.propose([b"a"])
    env.stabilize()
    env.delivered.clear()
    env.nodes[1].raw.propose([b"b"])
    env.stabilize()
    (append,) = [m for m in delivered_between(env, 1, 2, MessageType.APPEND)]
    assert append.commit >= first
    assert commit_index(env, 2) >= first


def test_proposals_queued_behind_a_probe_go_out_in_one_append() -> None:
    env = make_env(3)
    env.campaign(1)
    for _ in range(2):
        env.process_ready(1)
        env.deliver()
        env.process_ready(2)
        env.process_ready(3)
        env.deliver([1])
    assert env.nodes[1].role is Role.LEADER
    for i in range(10):
        env.nodes[1].raw.propose([f"e{i}".encode()])
    env.stabilize()
    appends = [m for m in delivered_between(env, 1, 2, MessageType.APPEND) if m.entries]
    # The probe carries the no-op; the ten proposals follow together once 2 answered it.
    assert [len(m.entries) for m in appends] == [1, 10]


def test_figure8_an_earlier_term_entry_commits_only_with_an_entry_of_the_leaders_term() -> None:
    env = make_env(3, check_quorum=False, max_msg_bytes=1)
    elect(env, 1)
    env.nodes[1].raw.propose([b"x"])
    env.process_ready(1)
    env.deliver([2], drop_to=[3])
    # 1 never hears that 2 has x, so x is not committed in term 1.
    env.process_ready(2)
    env.deliver(drop_to=[1])
    x_index = env.nodes[2].raw.status().last_index
    # 1 goes away; 2 (which has x) is elected at term 2 by 3.
    env.isolated.add(1)
    env.campaign(2)
    while env.nodes[2].role is not Role.LEADER:
        env.process_ready(2)
        env.deliver([3])
        env.process_ready(3)
        env.deliver([2])
    # Step until x is on 2 and 3 (a majority) and 3 has nothing of term 2 yet.
    while env.nodes[3].raw.status().last_index < x_index:
        env.process_ready(2)
        env.deliver([3])
        env.process_ready(3)
        env.deliver([2])
    assert persisted_log(env, 3)[-1] == (x_index, 1, b"x")
    assert env.nodes[2].raw.status().progress[3].match == x_index
    assert commit_index(env, 2) < x_index
    env.stabilize([2, 3])
    assert commit_index(env, 2) == x_index + 1
    assert env.nodes[2].applied.payloads == ["x"]


# -- snapshots ------------------------------------------------------------------------------


def test_a_follower_far_behind_is_restored_from_a_snapshot() -> None:
    env = make_env(3)
    elect(env, 1)
    env.isolated.add(3)
    for i in range(50):
        env.nodes[1].raw.propose([f"e{i}".encode()])
    env.stabilize()
    applied = env.nodes[1].raw.status().applied
    env.compact(1, applied)
    env.isolated.clear()
    env.delivered.clear()
    heartbeat_round(env, 1)
    assert len(delivered_between(env, 1, 3, MessageType.SNAPSHOT)) == 1
    assert env.nodes[3].storage.snapshot().meta.index == applied
    assert env.nodes[3].applied.payloads == [f"e{i}" for i in range(50)]
    assert env.nodes[1].raw.status().progress[3].state is ProgressState.REPLICATE

    env.nodes[1].raw.propose([b"after"])
    env.stabilize()
    assert env.nodes[3].applied.payloads[-1] == "after"
    # After a crash, 3 rebuilds its state from the snapshot plus the log after it.
    env.restart(3)
    env.stabilize()
    assert env.nodes[3].applied.payloads == env.nodes[1].applied.payloads
    assert env.nodes[3].raw.status().conf_state == env.nodes[1].raw.status().conf_state


def test_a_leader_restarted_from_a_compacted_log_keeps_its_state() -> None:
    env = make_env(3)
    elect(env, 1)
    for i in range(5):
        env.nodes[1].raw.propose([f"e{i}".encode()])
    env.stabilize()
    env.compact(2, env.nodes[2].raw.status().applied)
    env.restart(2)
    env.stabilize()
    status = env.nodes[2].raw.status()
    assert status.commit == commit_index(env, 1)
    assert env.nodes[2].applied.payloads == [f"e{i}" for i in range(5)]


# -- reads ----------------------------------------------------------------------------------


def transfer_to(env: InteractionEnv, from_id: int, to_id: int) -> None:
    """Hand leadership over and stop as soon as `to_id` leads, before its no-op commits."""
    env.transfer_leader(from_id, to_id)
    for _ in range(10):
        for node_id in sorted(env.nodes):
            env.process_ready(node_id)
        env.deliver()
        if env.nodes[to_id].role is Role.LEADER:
            return
    raise AssertionError(f"{to_id} did not become leader")


def test_a_read_before_the_leaders_first_commit_waits_for_it() -> None:
    env = make_env(3)
    elect(env, 1)
    env.nodes[1].raw.propose([b"a"])
    env.stabilize()
    transfer_to(env, 1, 2)
    leader = env.nodes[2]
    assert leader.raw.status().commit < leader.raw.status().last_index
    env.read_index(2, 7)
    env.process_ready(2)
    assert leader.read_states == []
    env.stabilize()
    (read,) = leader.read_states
    noop_index = leader.raw.status().last_index
    assert read.request_id == 7
    assert read.index == noop_index == commit_index(env, 2)


def test_reads_queued_behind_a_round_share_the_next_round() -> None:
    env = make_env(3)
    elect(env, 1)
    heartbeat_round(env, 1)
    env.delivered.clear()
    for request_id in range(1, 6):
        env.read_index(1, request_id)
    env.stabilize()
    assert [r.request_id for r in env.nodes[1].read_states] == [1, 2, 3, 4, 5]
    heartbeats = delivered_between(env, 1, 2, MessageType.HEARTBEAT)
    assert len(heartbeats) == 2


def test_a_deposed_leader_never_answers_a_pending_read() -> None:
    env = make_env(3)
    elect(env, 1)
    env.read_index(1, 1)
    env.process_ready(1)
    env.isolated.add(1)
    env.stabilize()
    # 2 and 3 elect a new leader and commit a write the old leader never sees.
    out_of_lease(env, 3)
    env.tick_election(2)
    env.stabilize()
    assert env.nodes[2].role is Role.LEADER
    env.nodes[2].raw.propose([b"new"])
    env.stabilize()
    # 1, still believing it leads, retries its round after the partition heals.
    env.isolated.clear()
    env.tick_heartbeat(1)
    env.stabilize()
    assert env.nodes[1].role is Role.FOLLOWER
    assert env.nodes[1].read_states == []
    # Once it hears from the new leader, a read asked of it is forwarded there and sees the
    # new write.
    heartbeat_round(env, 2)
    env.read_index(1, 2)
    env.stabilize()
    (read,) = env.nodes[1].read_states
    assert read.index >= commit_index(env, 2)


def test_lease_holds_only_after_a_quorum_acknowledged_a_heartbeat() -> None:
    env = make_env(3)
    elect(env, 1)
    leader = env.nodes[1].raw
    assert not leader.status().lease_valid
    env.read_index(1, 1, lease=True)
    env.process_ready(1)
    assert env.nodes[1].read_states == []
    env.stabilize()

    heartbeat_round(env, 1)
    assert leader.status().lease_valid
    env.delivered.clear()
    env.read_index(1, 2, lease=True)
    env.process_ready(1)
    assert [r.request_id for r in env.nodes[1].read_states] == [1, 2]
    assert env.nodes[1].raw.raft.msgs == [] and all(not inbox for inbox in env.inboxes.values())


def test_lease_expires_election_tick_minus_drift_after_the_last_acknowledged_round() -> None:
    drift = 2
    env = make_env(3, lease_drift_ticks=drift)
    elect(env, 1)
    # The round that confirms the lease is sent on this tick.
    heartbeat_round(env, 1)
    leader = env.nodes[1].raw
    env.tick(1, ELECTION_TICK - drift - 1)
    assert leader.status().lease_valid
    env.tick(1)
    assert not leader.status().lease_valid


def test_lease_is_invalid_during_a_transfer() -> None:
    env = make_env(3)
    elect(env, 1)
    heartbeat_round(env, 1)
    assert env.nodes[1].raw.status().lease_valid
    env.isolated.add(2)
    env.transfer_leader(1, 2)
    assert not env.nodes[1].raw.status().lease_valid
    env.read_index(1, 1, lease=True)
    env.process_ready(1)
    assert env.nodes[1].read_states == []


def test_lease_stays_invalid_after_an_abandoned_transfer_whose_timeout_now_may_still_arrive() -> None:
    """TimeoutNow lets the transferee win despite followers' leases, and it may arrive late: the
    old leader must not renew its lease until such an election is surely over."""
    env = make_env(3)
    elect(env, 1)
    heartbeat_round(env, 1)
    env.transfer_leader(1, 2)  # node 2 is up to date: TimeoutNow is sent at once
    env.process_ready(1)
    env.isolated.add(2)  # ...and held up in the network
    env.tick(1, ELECTION_TICK)  # the transfer is abandoned
    heartbeat_round(env, 1)  # node 3 acknowledges: a quorum with node 1
    assert env.nodes[1].raw.raft.lead_transferee == 0
    assert not env.nodes[1].raw.status().lease_valid
    env.tick(1, ELECTION_TICK)
    heartbeat_round(env, 1)
    assert env.nodes[1].raw.status().lease_valid


def test_a_read_state_says_whether_the_lease_released_it() -> None:
    """The node reports which path served a read: the lease (no quorum round, resting on the
    clock-drift assumption) or a quorum round, even when a lease read had to fall back to one."""
    env = make_env(3)
    elect(env, 1)
    heartbeat_round(env, 1)
    env.read_index(1, 1, lease=True)  # the lease holds: released at once, by the lease
    env.read_index(1, 2)  # ReadIndex asked for: a round, even though the lease holds
    env.stabilize()
    env.tick(1, ELECTION_TICK)  # no round acknowledged meanwhile: the lease has expired
    env.isolated.add(1)
    env.process_ready(1)
    env.isolated.clear()
    env.read_index(1, 3, lease=True)  # falls back to a round
    env.read_index(3, 4, lease=True)  # a follower's read is forwarded: always a round
    env.stabilize()
    released = {r.request_id: r.lease for r in (*env.nodes[1].read_states, *env.nodes[3].read_states)}
    assert released == {1: True, 2: False, 3: False, 4: False}


def test_a_lone_voter_releases_reads_without_a_lease() -> None:
    env = make_env(1)
    elect(env, 1)
    env.read_index(1, 1, lease=True)
    env.stabilize()
    (read,) = env.nodes[1].read_states
    assert read.lease is False  # it is the whole quorum: linearizable without any clock


# -- write concern ALL: what every replica applied ---------------------------------------------


def test_followers_report_their_applied_index_and_the_leader_takes_the_smallest() -> None:
    env = make_env(3)
    elect(env, 1)
    leader = env.nodes[1].raw
    index = leader.propose([b"a"])
    env.stabilize()
    heartbeat_round(env, 1)
    assert leader.applied_by_all() == index
    env.isolated.add(3)
    later = leader.propose([b"b"])
    env.stabilize()
    heartbeat_round(env, 1)
    assert env.nodes[2].raw.status().applied == later
    assert leader.applied_by_all() == index  # 3 has not applied "b": ALL must wait
    assert env.nodes[2].raw.applied_by_all() == 0  # only the leader knows
    env.isolated.clear()
    heartbeat_round(env, 1)
    heartbeat_round(env, 1)
    assert leader.applied_by_all() == later


def test_applied_by_all_counts_learners_as_replicas() -> None:
    env = make_env(3)
    elect(env, 1)
    learner = add_learner(env, 1)
    heartbeat_round(env, 1)
    leader = env.nodes[1].raw
    assert leader.applied_by_all() == leader.status().applied
    env.isolated.add(learner)
    index = leader.propose([b"a"])
    env.stabilize()
    heartbeat_round(env, 1)
    assert leader.status().commit >= index  # committed by the voters alone...
    assert leader.applied_by_all() < index  # ...but the learner is a replica too


# -- leadership transfer --------------------------------------------------------------------


def test_transfer_sends_timeout_now_and_the_transferee_wins() -> None:
    env = make_env(3)
    elect(env, 1)
    term = env.nodes[1].term
    env.delivered.clear()
    env.transfer_leader(1, 3)
    env.stabilize()
    assert delivered_between(env, 1, 3, MessageType.TIMEOUT_NOW)
    assert leader_of(env) == 3
    assert env.nodes[3].term == term + 1


def test_proposals_are_refused_during_a_transfer_and_accepted_after_it_aborts() -> None:
    env = make_env(3)
    elect(env, 1)
    heartbeat_round(env, 1)
    env.isolated.add(3)
    env.transfer_leader(1, 3)
    with pytest.raises(ProposalDroppedError):
        env.nodes[1].raw.propose([b"x"])
    env.stabilize()
    env.tick_election(1)
    assert env.nodes[1].role is Role.LEADER
    assert env.nodes[1].raw.status().lead_transferee == NONE
    assert env.nodes[1].raw.propose([b"x"]) > 0


def test_a_follower_refuses_proposals_with_a_leader_hint() -> None:
    env = make_env(3)
    elect(env, 2)
    with pytest.raises(NotLeaderError) as refused:
        env.nodes[3].raw.propose([b"x"])
    assert refused.value.leader_hint == 2


# -- membership -----------------------------------------------------------------------------


def add_learner(env: InteractionEnv, leader: int) -> int:
    (learner,) = env.add_nodes(1)
    env.nodes[leader].raw.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, learner))
    env.stabilize()
    return learner


def test_a_learner_replicates_but_neither_votes_nor_counts() -> None:
    env = make_env(3)
    elect(env, 1)
    learner = add_learner(env, 1)
    assert env.nodes[learner].raw.status().conf_state.learners == {learner}

    env.isolated.update({2, 3})
    env.nodes[1].raw.propose([b"x"])
    env.stabilize()
    assert persisted_log(env, learner)[-1][2] == b"x"
    assert commit_index(env, 1) < env.nodes[1].raw.status().last_index

    for _ in range(3):
        env.tick_election(learner)
    assert env.nodes[learner].role is Role.FOLLOWER
    env.isolated.clear()
    env.delivered.clear()
    out_of_lease(env, 2, 3)
    env.campaign(2)
    env.stabilize()
    assert not [m for m in env.delivered if m.to == learner and m.type in (MessageType.VOTE, MessageType.PRE_VOTE)]


def test_a_promoted_learner_counts_toward_commit() -> None:
    env = make_env(3)
    elect(env, 1)
    learner = add_learner(env, 1)
    env.nodes[1].raw.propose_conf_change(ConfChange(ConfChangeType.ADD_VOTER, learner))
    env.stabilize()
    assert env.nodes[1].raw.status().conf_state.voters == {1, 2, 3, learner}
    env.isolated.add(3)
    index = env.nodes[1].raw.propose([b"x"])
    env.stabilize()
    assert commit_index(env, 1) == index


def test_a_second_conf_change_is_refused_while_one_is_pending() -> None:
    env = make_env(3)
    elect(env, 1)
    env.add_nodes(2)
    env.nodes[1].raw.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    with pytest.raises(ProposalDroppedError):
        env.nodes[1].raw.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 5))
    env.stabilize()
    env.nodes[1].raw.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 5))
    env.stabilize()
    assert env.nodes[1].raw.status().conf_state.learners == {4, 5}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (ConfChange(ConfChangeType.ADD_VOTER, 4), ConfState(frozenset({1, 2, 4}), frozenset({3}))),
        (ConfChange(ConfChangeType.ADD_VOTER, 3), ConfState(frozenset({1, 2, 3}))),  # a learner promoted
        (ConfChange(ConfChangeType.ADD_LEARNER, 2), ConfState(frozenset({1}), frozenset({2, 3}))),
        (ConfChange(ConfChangeType.REMOVE, 3), ConfState(frozenset({1, 2}))),
        (ConfChange(ConfChangeType.REMOVE, 1), ConfState(frozenset({2}), frozenset({3}))),
    ],
)
def test_a_conf_change_moves_one_node_between_voters_and_learners(change: ConfChange, expected: ConfState) -> None:
    assert ConfState(frozenset({1, 2}), frozenset({3})).apply(change) == expected


def test_the_cheap_accessors_agree_with_status() -> None:
    env = make_env(3)
    elect(env, 1)
    env.nodes[1].raw.propose([b"a"])
    env.stabilize()
    for node_id in (1, 2):
        raw = env.nodes[node_id].raw
        status = raw.status()
        assert (raw.leader, raw.role, raw.term, raw.committed, raw.conf_state()) == (
            status.leader, status.role, status.term, status.commit, status.conf_state,
        )
        assert not raw.transferring_leadership
    env.isolated.add(3)
    env.nodes[1].raw.propose([b"b"])  # 3 falls behind, so a transfer to it has to wait
    env.stabilize()
    env.nodes[1].raw.transfer_leader(3)
    assert env.nodes[1].raw.transferring_leadership


def test_a_new_leader_cannot_change_membership_before_its_noop_is_applied() -> None:
    env = make_env(3)
    elect(env, 1)
    env.nodes[1].raw.propose([b"a"])
    env.stabilize()
    heartbeat_round(env, 1)
    transfer_to(env, 1, 2)
    new_leader = env.nodes[2].raw
    # Everything of the earlier term is committed and applied on 2; only its no-op is not.
    assert new_leader.status().applied == new_leader.status().last_index - 1
    with pytest.raises(ProposalDroppedError):
        new_leader.propose_conf_change(ConfChange(ConfChangeType.REMOVE, 3))
    env.stabilize()
    assert new_leader.propose_conf_change(ConfChange(ConfChangeType.REMOVE, 3)) > 0


def test_removing_the_leader_hands_the_group_to_the_others() -> None:
    env = make_env(3)
    elect(env, 1)
    env.nodes[1].raw.propose_conf_change(ConfChange(ConfChangeType.REMOVE, 1))
    env.stabilize()
    assert env.nodes[1].role is Role.FOLLOWER
    assert env.nodes[2].raw.status().conf_state.voters == {2, 3}
    for _ in range(3):
        env.tick_election(1)
    assert env.nodes[1].role is Role.FOLLOWER

    out_of_lease(env, 3)
    env.tick_election(2)
    env.stabilize()
    assert env.leader_ids() == [2]
    index = env.nodes[2].raw.propose([b"without 1"])
    env.stabilize()
    assert commit_index(env, 2) == index
    assert "without 1" not in env.nodes[1].applied.payloads


# -- the Ready / advance contract -----------------------------------------------------------


def test_ready_documents_persist_before_send() -> None:
    # Read from the source: classes compiled with mypyc carry no docstring.
    types_module = ast.parse((Path(kvstore.raft.__file__).parent / "types.py").read_text())
    ready = next(
        node for node in types_module.body if isinstance(node, ast.ClassDef) and node.name == Ready.__name__
    )
    doc = ast.get_docstring(ready) or ""
    assert "persist BEFORE send" in doc
    assert doc.index("persist") < doc.index("send")


def test_a_vote_is_in_the_same_ready_as_the_answer_that_grants_it() -> None:
    env = make_env(3)
    env.campaign(1)
    env.stabilize([1])
    env.deliver([2])
    env.process_ready(2)
    env.deliver([1])
    env.process_ready(1)
    env.deliver([2])
    rd = env.nodes[2].raw.ready()
    (granted,) = [m for m in rd.messages if m.type is MessageType.VOTE_RESP and not m.reject]
    assert rd.hard_state is not None and rd.hard_state.vote == 1
    assert rd.must_sync
    env.nodes[2].raw.advance(rd)


def test_a_restarted_voter_remembers_its_vote() -> None:
    env = make_env(3, check_quorum=False, pre_vote=False)
    env.campaign(1)
    env.process_ready(1)
    env.deliver([2])
    env.process_ready(2)
    term = env.nodes[2].term
    env.restart(2)
    env.campaign(3)
    env.process_ready(3)
    env.deliver([2])
    env.process_ready(2)
    answers = [m for m in env.inboxes[3] if m.type is MessageType.VOTE_RESP and m.term == term]
    assert answers and all(m.reject for m in answers)


def test_ready_twice_without_advance_raises() -> None:
    env = make_env(3)
    raw = env.nodes[1].raw
    raw.campaign()
    raw.ready()
    with pytest.raises(AssertionError):
        raw.ready()


def test_advance_without_ready_raises() -> None:
    env = make_env(3)
    raw = env.nodes[1].raw
    raw.campaign()
    rd = raw.ready()
    raw.advance(rd)
    with pytest.raises(AssertionError):
        raw.advance(rd)
