"""The meta group's state machine: membership commands, planned moves, their steps, the epoch."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvstore._pb import meta_pb2
from kvstore.codec import CodecError
from kvstore.ring import ClusterMap, StepKind, move_steps, rebalance_plan, schedule
from kvstore.statemachine.cluster_state import (
    ClusterState,
    CommandResult,
    MemberState,
    Refusal,
    apply_command,
    decode_state,
    encode_state,
    with_meta_voters,
)

PARTITIONS = 16
MEMBERS = {1: "10.0.0.1:2379", 2: "10.0.0.2:2379", 3: "10.0.0.3:2379"}


def initial(members: dict[int, str] = MEMBERS) -> ClusterState:
    return ClusterState.bootstrap("c0ffee", members, PARTITIONS, 3, 16)


def ring_map(state: ClusterState) -> ClusterMap:
    placed = [m for m in state.members if m.placed]
    return ClusterMap(epoch=state.epoch, members={str(m.id): m.address for m in placed},
                      partitions=PARTITIONS, replication_factor=3, vnodes=16,
                      tokens={str(m.id): m.tokens for m in placed if m.tokens})


def add(address: str) -> meta_pb2.MetaCommand:
    return meta_pb2.MetaCommand(add_member=meta_pb2.AddMember(address=address))


def remove(node_id: int) -> meta_pb2.MetaCommand:
    return meta_pb2.MetaCommand(remove_member=meta_pb2.RemoveMember(node_id=node_id))


def replace_member(node_id: int, address: str = "") -> meta_pb2.MetaCommand:
    return meta_pb2.MetaCommand(replace_member=meta_pb2.ReplaceMember(node_id=node_id, address=address))


def step_done(partition: int, step: int) -> meta_pb2.MetaCommand:
    return meta_pb2.MetaCommand(move_step_done=meta_pb2.MoveStepDone(partition=partition, step=step))


def applied(state: ClusterState, command: meta_pb2.MetaCommand) -> tuple[ClusterState, CommandResult]:
    after, result = apply_command(state, command)
    assert result.refusal is None, result.message
    assert after.epoch == state.epoch + 1
    return after, result


def finish_moves(state: ClusterState, rng: random.Random, limit: int = 3) -> ClusterState:
    """Record every step of every move, at most `limit` moves at once, in a random interleaving;
    then the meta group's voters become the members that stay (as its leader would make them)."""
    while True:
        runnable = schedule(state.moves(), limit)
        if not runnable:
            staying = [m.id for m in state.members if m.placed and not m.lost]
            return with_meta_voters(state, frozenset(staying[:5]))
        chosen = rng.choice(runnable)
        state, _ = applied(state, step_done(chosen.move.partition, chosen.done))


def replicas(state: ClusterState) -> tuple[tuple[int, ...], ...]:
    return tuple(partition.replicas for partition in state.partitions)


def test_bootstrap_places_every_partition_on_the_ring_at_epoch_1() -> None:
    state = initial()
    assert (state.epoch, state.next_node_id, state.moves()) == (1, 4, [])
    assert [(m.id, m.state) for m in state.members] == [(n, MemberState.ACTIVE) for n in MEMBERS]
    assert replicas(state) == tuple(tuple(int(n) for n in r) for r in ring_map(state).placement)


def test_an_added_member_joins_through_moves_of_exactly_the_partitions_it_takes() -> None:
    before = initial()
    state, result = applied(before, add("10.0.0.4:2379"))
    assert result == CommandResult(node_id=4, epoch=2)
    assert state.member(4) is not None and state.member(4).state is MemberState.JOINING  # type: ignore[union-attr]
    planned = {m.move.partition: m.move for m in state.moves()}
    expected = {m.partition: m for m in rebalance_plan(ring_map(before), ring_map(state))}
    assert planned == expected and planned
    assert all(move.add == ("4",) for move in planned.values())
    done = finish_moves(state, random.Random(1))
    assert replicas(done) == tuple(tuple(int(n) for n in r) for r in ring_map(done).placement)
    assert done.member(4).state is MemberState.ACTIVE  # type: ignore[union-attr]
    steps = sum(len(move_steps(m)) for m in planned.values())
    assert done.epoch == state.epoch + steps


def test_a_member_in_a_partition_moves_as_learner_then_voter_and_leads_when_preferred() -> None:
    state, _ = applied(initial(), add("10.0.0.4:2379"))
    move = next(m for m in state.moves() if m.move.new_replicas[0] == "4")
    partition = move.move.partition
    seen = []
    for index, step in enumerate(move.steps):
        state, _ = applied(state, step_done(partition, index))
        current = state.partitions[partition]
        seen.append((step.kind, 4 in current.learners, 4 in current.replicas))
    assert seen[:3] == [(StepKind.ADD_LEARNER, True, False), (StepKind.CATCH_UP, True, False),
                        (StepKind.PROMOTE, False, True)]
    assert state.partitions[partition].replicas[0] == 4 and state.partitions[partition].move is None


def test_a_removed_member_is_drained_then_removed_and_its_id_never_comes_back() -> None:
    state, result = applied(initial({**MEMBERS, 4: "10.0.0.4:2379"}), remove(2))
    assert result == CommandResult(node_id=2, epoch=state.epoch)
    assert state.member(2).state is MemberState.LEAVING  # type: ignore[union-attr]
    assert {m.move.partition for m in state.moves()} == {p for p, r in enumerate(replicas(initial({**MEMBERS, 4: "10.0.0.4:2379"}))) if 2 in r}
    again, again_result = apply_command(state, remove(2))
    assert (again, again_result) == (state, result)  # already draining: no change
    done = finish_moves(state, random.Random(2))
    assert done.member(2).state is MemberState.REMOVED  # type: ignore[union-attr]
    assert all(2 not in r for r in replicas(done))
    later, added = applied(done, add("10.0.0.2:2379"))  # the address may come back, the id never
    assert added.node_id == 5


def test_a_replacement_takes_over_exactly_the_lost_members_partitions() -> None:
    before = initial({**MEMBERS, 4: "10.0.0.4:2379"})
    state, result = applied(before, replace_member(3, "10.0.0.3:2379"))
    assert result.node_id == 5
    lost, fresh = state.member(3), state.member(5)
    assert lost is not None and lost.lost and lost.state is MemberState.LEAVING
    assert fresh is not None and fresh.address == lost.address and fresh.tokens
    moves = state.moves()
    assert {m.move.partition for m in moves} == {p for p, r in enumerate(replicas(before)) if 3 in r}
    assert all((m.move.add, m.move.remove) == (("5",), ("3",)) for m in moves)
    done = finish_moves(state, random.Random(3))
    assert replicas(done) == tuple(tuple(5 if n == 3 else n for n in r) for r in replicas(before))
    assert (done.member(3).state, done.member(5).state) == (MemberState.REMOVED, MemberState.ACTIVE)  # type: ignore[union-attr]


def test_a_replacement_without_a_fresh_node_rebuilds_on_the_others() -> None:
    state, result = applied(initial({**MEMBERS, 4: "10.0.0.4:2379"}), replace_member(1))
    assert result == CommandResult(epoch=state.epoch)
    done = finish_moves(state, random.Random(4))
    assert all(1 not in r and len(r) == 3 for r in replicas(done))
    assert done.member(1).lost and done.member(1).state is MemberState.REMOVED  # type: ignore[union-attr]


def test_losing_a_member_that_was_joining_ends_the_moves_waiting_for_it() -> None:
    state, _ = applied(initial(), add("10.0.0.4:2379"))
    first, second = (m.move.partition for m in state.moves()[:2])
    for step in range(2):  # first: a learner that caught up; second: a voter already
        state, _ = applied(state, step_done(first, step))
    for step in range(3):
        state, _ = applied(state, step_done(second, step))
    assert 4 in state.partitions[first].learners and 4 in state.partitions[second].replicas
    state, _ = applied(state, replace_member(4))
    moves = {m.move.partition: m.move for m in state.moves()}
    assert set(moves) == {first, second}
    assert moves[first].remove == ("4",) and moves[second].remove == ("4",)
    done = finish_moves(state, random.Random(6))
    assert replicas(done) == replicas(initial()) and all(not p.learners for p in done.partitions)
    assert done.member(4).state is MemberState.REMOVED  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("command", "refusal", "fragment"),
    [
        (add("10.0.0.1:2379"), Refusal.INVALID, "already member 1's"),
        (add("no-port"), Refusal.INVALID, "not HOST:PORT"),
        (remove(9), Refusal.NOT_FOUND, "node 9 is not a member"),
        (replace_member(9, "10.0.0.9:1"), Refusal.NOT_FOUND, "node 9 is not a member"),
        (replace_member(1, "10.0.0.2:2379"), Refusal.INVALID, "already member 2's"),
        (step_done(PARTITIONS, 0), Refusal.NOT_FOUND, "no partition"),
        (step_done(0, 0), Refusal.STALE, "none is under way"),
        (meta_pb2.MetaCommand(), Refusal.INVALID, "not a meta command"),
    ],
)
def test_refused_commands_change_nothing(command: meta_pb2.MetaCommand, refusal: Refusal, fragment: str) -> None:
    state = initial()
    after, result = apply_command(state, command)
    assert after is state
    assert result.refusal is refusal and fragment in result.message


def test_the_last_member_cannot_be_removed_but_can_be_replaced() -> None:
    alone = initial({1: "10.0.0.1:2379"})
    _, result = apply_command(alone, remove(1))
    assert result.refusal is Refusal.INVALID and "last member" in result.message
    replaced, result = applied(alone, replace_member(1, "10.0.0.1:2379"))
    assert result.node_id == 2
    assert all(p.replicas == (2,) for p in finish_moves(replaced, random.Random(5)).partitions)


def test_a_step_reported_twice_is_stale_the_second_time() -> None:
    state, _ = applied(initial(), add("10.0.0.4:2379"))
    partition = state.moves()[0].move.partition
    state, _ = applied(state, step_done(partition, 0))
    after, result = apply_command(state, step_done(partition, 0))
    assert after is state and result.refusal is Refusal.STALE and "the next is step 1" in result.message


def test_the_state_round_trips_through_its_encoding_mid_move() -> None:
    state, _ = applied(initial(), add("10.0.0.4:2379"))
    state, _ = applied(state, replace_member(2, "10.0.0.2:2379"))
    state, _ = applied(state, step_done(state.moves()[0].move.partition, 0))
    assert decode_state(encode_state(state)) == state
    assert encode_state(decode_state(encode_state(state))) == encode_state(state)


def test_bytes_that_are_not_a_state_are_a_codec_error() -> None:
    with pytest.raises(CodecError):
        decode_state(b"\xff\xff\xff")
    broken = meta_pb2.MetaState.FromString(encode_state(initial()))
    broken.partition_count = PARTITIONS * 2
    with pytest.raises(CodecError, match="partitions"):
        decode_state(broken.SerializeToString())
    broken = meta_pb2.MetaState.FromString(encode_state(initial()))
    broken.partitions[0].replicas.append(42)
    with pytest.raises(CodecError, match="not members"):
        decode_state(broken.SerializeToString())


commands = st.lists(
    st.one_of(
        st.builds(lambda n: add(f"10.0.1.{n}:2379"), st.integers(1, 6)),
        st.builds(remove, st.integers(1, 8)),
        st.builds(lambda n, fresh: replace_member(n, f"10.0.2.{n}:2379" if fresh else ""),
                  st.integers(1, 8), st.booleans()),
        st.builds(step_done, st.integers(0, PARTITIONS - 1), st.integers(0, 8)),
    ),
    max_size=25,
)


@given(commands=commands, seed=st.integers(0, 2**32))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_command_sequence_keeps_the_invariants_and_settles_on_the_placement(
    commands: list[meta_pb2.MetaCommand], seed: int
) -> None:
    state = initial()
    given_ids = {1, 2, 3}
    rng = random.Random(seed)
    for command in commands:
        after, result = apply_command(state, command)
        assert after.epoch == state.epoch + (0 if result.refusal is not None or after == state else 1)
        if result.node_id and command.WhichOneof("command") != "remove_member":
            assert result.node_id not in given_ids, "a node id was given out twice"
            given_ids.add(result.node_id)
        assert [m.id for m in after.members] == sorted(given_ids) and after.next_node_id > max(given_ids)
        assert all(p.replicas for p in after.partitions)
        assert decode_state(encode_state(after)) == after
        state = after
        if rng.random() < 0.3:
            runnable = state.moves()
            if runnable:
                chosen = rng.choice(runnable)
                state, _ = applied(state, step_done(chosen.move.partition, chosen.done))
    settled = finish_moves(state, rng)
    assert replicas(settled) == tuple(tuple(int(n) for n in r) for r in ring_map(settled).placement)
    assert all(m.state in (MemberState.ACTIVE, MemberState.REMOVED) for m in settled.members)
    assert all(not p.learners for p in settled.partitions)


def test_a_leaving_member_is_removed_only_once_it_no_longer_votes_in_the_meta_group() -> None:
    state, _ = applied(initial({**MEMBERS, 4: "10.0.0.4:2379"}), remove(2))
    while state.moves():
        progress = state.moves()[0]
        state, _ = applied(state, step_done(progress.move.partition, progress.done))
    assert state.member(2).state is MemberState.LEAVING  # type: ignore[union-attr]
    demoted = with_meta_voters(state, frozenset({1, 3, 4}))
    assert demoted.member(2).state is MemberState.REMOVED and demoted.epoch == state.epoch + 1  # type: ignore[union-attr]
    assert with_meta_voters(demoted, frozenset({1, 3, 4})) is demoted
