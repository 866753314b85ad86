"""The Raft protocol as a pure state machine.

No I/O, no clock, no global randomness: time advances only through `tick()`, messages arrive
only through `step()`, and randomness comes from the `random.Random` the caller injects. What
the machine wants done (persist, send, apply) accumulates in its fields and is collected by
`RawNode.ready()`.

Beyond the basic algorithm it implements PreVote and CheckQuorum (a partitioned node cannot
disrupt a healthy leader; a leader that lost its quorum steps down), flow control per follower,
fast log backtracking, snapshots, ReadIndex with one heartbeat round shared by every read
queued behind it, a leader lease for local reads, leadership transfer, learners and
single-server membership changes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from kvstore.raft.errors import (
    CompactedError,
    NotLeaderError,
    ProposalDroppedError,
    SnapshotTemporarilyUnavailableError,
    UnavailableError,
)
from kvstore.raft.log import RaftLog
from kvstore.raft.log_storage import LogStorage
from kvstore.raft.progress import Progress, ProgressState
from kvstore.raft.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Role,
    Snapshot,
)


@dataclass(frozen=True, slots=True)
class Config:
    """Tuning of one Raft node. Times are in ticks of the caller's ticker."""

    id: int
    election_tick: int = 10
    heartbeat_tick: int = 1
    max_msg_bytes: int = 1 << 20
    max_inflight_msgs: int = 256
    max_apply_bytes: int = 64 << 20
    check_quorum: bool = True
    pre_vote: bool = True
    # The leader lease is election_tick - lease_drift_ticks: followers will not vote for
    # another candidate for election_tick ticks of *their* clock after hearing the leader, so
    # the margin absorbs clock-rate differences between nodes.
    lease_drift_ticks: int = 2
    # Do not send an empty append just to tell followers a new commit index: they learn it
    # from the next append or heartbeat (at most heartbeat_tick later). Under load this halves
    # the messages per write; followers apply a little later, the leader is not slowed.
    skip_bcast_commit: bool = False
    applied: int = 0

    def validate(self) -> None:
        if self.id == NONE:
            raise ValueError("node id must be non-zero")
        if self.heartbeat_tick <= 0:
            raise ValueError("heartbeat_tick must be positive")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError("election_tick must be greater than heartbeat_tick")
        if self.max_inflight_msgs <= 0:
            raise ValueError("max_inflight_msgs must be positive")
        if not 0 <= self.lease_drift_ticks < self.election_tick:
            raise ValueError("lease_drift_ticks must be in [0, election_tick)")


@dataclass(frozen=True, slots=True)
class _PendingRead:
    origin: int
    request_id: int


class Raft:
    def __init__(self, config: Config, storage: LogStorage, rng: random.Random) -> None:
        config.validate()
        self.config = config
        self.id = config.id
        self.rng = rng
        self.log = RaftLog(storage, config.max_apply_bytes)
        self.election_timeout = config.election_tick
        self.heartbeat_timeout = config.heartbeat_tick
        self.max_msg_bytes = config.max_msg_bytes

        hard_state, conf_state = storage.initial_state()
        # A restarted voter may have acknowledged a leader's lease just before it crashed; it
        # refuses votes for one election timeout so that the lease still holds.
        self._votes_refused_until_tick = self.election_timeout if hard_state.term > 0 else 0
        self.term = hard_state.term
        self.vote = hard_state.vote
        if hard_state.commit:
            self.log.commit_to(hard_state.commit)
        if config.applied:
            self.log.applied_to(config.applied)

        self.prs: dict[int, Progress] = {}
        self.voters: set[int] = set()
        self.learners: set[int] = set()
        self._apply_conf_state(conf_state)

        self.role = Role.FOLLOWER
        self.lead = NONE
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.votes: dict[int, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_timeout
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        # Monotonic count of this node's ticks, for the leader lease.
        self.ticks = 0
        # ReadIndex / lease bookkeeping (leader only); see _start_read_round.
        self._read_round = 0
        self._round_sent_tick: dict[int, int] = {}
        self._confirmed_round = 0
        self._lease_expiry_tick = 0
        self._lease_blocked_until_tick = 0
        self._reads_waiting: list[_PendingRead] = []
        self._reads_in_flight: list[tuple[int, int, list[_PendingRead]]] = []

        self.become_follower(self.term, NONE)

    # -- state ------------------------------------------------------------------------------

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def conf_state(self) -> ConfState:
        return ConfState(frozenset(self.voters), frozenset(self.learners))

    def promotable(self) -> bool:
        """May this node campaign? Only voters, and not while a snapshot is being installed."""
        return self.id in self.voters and self.log.unstable_snapshot is None

    def _quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def _send(self, message: Message) -> None:
        self.msgs.append(message)

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(self.election_timeout)
        self.lead_transferee = NONE
        self.votes = {}
        last = self.log.last_index()
        for node_id, pr in self.prs.items():
            fresh = Progress(last + 1, self.config.max_inflight_msgs, pr.is_learner)
            if node_id == self.id:
                fresh.match = last
            self.prs[node_id] = fresh
        self.pending_conf_index = 0
        self._read_round = 0
        self._round_sent_tick = {}
        self._confirmed_round = 0
        self._lease_expiry_tick = 0
        self._reads_waiting = []
        self._reads_in_flight = []

    def become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER

    def become_pre_candidate(self) -> None:
        if self.role is Role.LEADER:
            raise AssertionError("a leader cannot become a pre-candidate")
        # PreVote changes neither term nor vote: a node that cannot win disturbs nobody.
        self.role = Role.PRE_CANDIDATE
        self.votes = {}
        self.lead = NONE

    def become_candidate(self) -> None:
        if self.role is Role.LEADER:
            raise AssertionError("a leader cannot become a candidate")
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def become_leader(self) -> None:
        if self.role is Role.FOLLOWER:
            raise AssertionError("a follower cannot become leader without an election")
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        self.prs[self.id].become_replicate()
        # A no-op of our own term lets us commit what earlier leaders left uncommitted (§5.4.2).
        self._append_entries([b""])
        # No conf change may be proposed until that no-op is applied: a leader must commit an
        # entry of its own term before it changes membership (the fix for the single-server
        # change bug, Ongaro, raft-dev 2015), even when the earlier log is already applied.
        self.pending_conf_index = self.log.last_index()
        self._broadcast_append()

    # -- ticks ------------------------------------------------------------------------------

    def tick(self) -> None:
        self.ticks += 1
        if self.role is Role.LEADER:
            self._tick_leader()
        else:
            self.election_elapsed += 1
            if self.election_elapsed >= self.randomized_election_timeout and self.promotable():
                self.election_elapsed = 0
                self.campaign()

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.config.check_quorum and not self._quorum_recently_active():
                self.become_follower(self.term, NONE)
                return
            for pr in self.prs.values():
                if pr.state is ProgressState.SNAPSHOT:
                    pr.snapshot_age += 1
                    if pr.snapshot_age > 1:
                        # The snapshot or its acknowledgement was lost: probe again.
                        pr.become_probe()
            if self.lead_transferee != NONE:
                self.lead_transferee = NONE
        if self.role is Role.LEADER and self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self._start_read_round()

    def _quorum_recently_active(self) -> bool:
        active = 0
        for node_id, pr in self.prs.items():
            if node_id == self.id:
                if not pr.is_learner:
                    active += 1
                continue
            if pr.recent_active and not pr.is_learner:
                active += 1
            pr.recent_active = False
        return active >= self._quorum()

    # -- elections --------------------------------------------------------------------------

    def campaign(self, transfer: bool = False) -> None:
        """Start an election: a PreVote round first (unless disabled or a transfer), so that a
        node that cannot win never bumps the term and never disrupts a working leader."""
        if not self.promotable() or self.log.has_pending_conf_change():
            return
        self._start_election(pre_vote=self.config.pre_vote and not transfer, transfer=transfer)

    def _start_election(self, pre_vote: bool, transfer: bool = False) -> None:
        if pre_vote:
            self.become_pre_candidate()
            vote_type, term = MessageType.PRE_VOTE, self.term + 1
        else:
            self.become_candidate()
            vote_type, term = MessageType.VOTE, self.term
        if self._record_vote(self.id, True) is True:
            self._won_election()
            return
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for node_id in sorted(self.voters):
            if node_id != self.id:
                self._send(
                    Message(
                        vote_type, node_id, self.id, term, log_term=last_term, index=last_index, transfer=transfer
                    )
                )

    def _won_election(self) -> None:
        if self.role is Role.PRE_CANDIDATE:
            self._start_election(pre_vote=False)
        else:
            self.become_leader()

    def _record_vote(self, node_id: int, granted: bool) -> bool | None:
        """Count a vote; True = won, False = lost, None = still open."""
        self.votes.setdefault(node_id, granted)
        granted_count = sum(1 for v, g in self.votes.items() if g and v in self.voters)
        rejected_count = sum(1 for v, g in self.votes.items() if not g and v in self.voters)
        if granted_count >= self._quorum():
            return True
        if rejected_count > len(self.voters) - self._quorum():
            return False
        return None

    # -- stepping messages ------------------------------------------------------------------

    def step(self, m: Message) -> None:
        if m.term > self.term:
            if m.type in (MessageType.VOTE, MessageType.PRE_VOTE):
                in_lease = self.config.check_quorum and (
                    (self.lead != NONE and self.election_elapsed < self.election_timeout)
                    or self.ticks < self._votes_refused_until_tick
                )
                if in_lease and not m.transfer:
                    # We heard from a live leader recently: do not help unseat it.
                    return
            if m.type is MessageType.PRE_VOTE or (m.type is MessageType.PRE_VOTE_RESP and not m.reject):
                pass  # a pre-vote never changes our term
            elif m.type in (MessageType.APPEND, MessageType.HEARTBEAT, MessageType.SNAPSHOT):
                self.become_follower(m.term, m.src)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.config.check_quorum or self.config.pre_vote) and m.type in (
                MessageType.HEARTBEAT,
                MessageType.APPEND,
            ):
                # A deposed leader: tell it our term so it steps down.
                self._send(Message(MessageType.APPEND_RESP, m.src, self.id, self.term))
            elif m.type is MessageType.PRE_VOTE:
                self._send(Message(MessageType.PRE_VOTE_RESP, m.src, self.id, self.term, reject=True))
            return

        if m.type in (MessageType.VOTE, MessageType.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role is Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = (
            self.vote == m.src
            or (self.vote == NONE and self.lead == NONE)
            or (m.type is MessageType.PRE_VOTE and m.term > self.term)
        )
        resp_type = MessageType.VOTE_RESP if m.type is MessageType.VOTE else MessageType.PRE_VOTE_RESP
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            self._send(Message(resp_type, m.src, self.id, m.term))
            if m.type is MessageType.VOTE:
                self.election_elapsed = 0
                self.vote = m.src
        else:
            self._send(Message(resp_type, m.src, self.id, self.term, reject=True))

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t is MessageType.APPEND:
            self.become_follower(m.term, m.src)
            self._handle_append(m)
        elif t is MessageType.HEARTBEAT:
            self.become_follower(m.term, m.src)
            self._handle_heartbeat(m)
        elif t is MessageType.SNAPSHOT:
            self.become_follower(m.term, m.src)
            self._handle_snapshot(m)
        elif (t is MessageType.PRE_VOTE_RESP and self.role is Role.PRE_CANDIDATE) or (
            t is MessageType.VOTE_RESP and self.role is Role.CANDIDATE
        ):
            result = self._record_vote(m.src, not m.reject)
            if result is True:
                self._won_election()
            elif result is False:
                self.become_follower(self.term, NONE)

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t is MessageType.APPEND:
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_append(m)
        elif t is MessageType.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_heartbeat(m)
        elif t is MessageType.SNAPSHOT:
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_snapshot(m)
        elif t is MessageType.TIMEOUT_NOW:
            # The leader hands over: campaign at once, skipping PreVote and voters' leases.
            self.campaign(transfer=True)
        elif t is MessageType.TRANSFER_LEADER:
            if self.lead != NONE:
                self._send(Message(MessageType.TRANSFER_LEADER, self.lead, m.src, self.term, index=m.index))
        elif t is MessageType.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))

    # -- follower handlers ------------------------------------------------------------------

    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            self._send(Message(MessageType.APPEND_RESP, m.src, self.id, self.term, index=log.committed, applied=log.applied))
            return
        last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new >= 0:
            self._send(Message(MessageType.APPEND_RESP, m.src, self.id, self.term, index=last_new, applied=log.applied))
            return
        hint_index = min(m.index, log.last_index())
        hint_index, hint_term = log.find_conflict_by_term(hint_index, m.log_term)
        self._send(
            Message(
                MessageType.APPEND_RESP,
                m.src,
                self.id,
                self.term,
                log_term=hint_term,
                index=m.index,
                reject=True,
                reject_hint=hint_index,
                applied=log.applied,
            )
        )

    def _handle_heartbeat(self, m: Message) -> None:
        self.log.commit_to(m.commit)
        self._send(Message(MessageType.HEARTBEAT_RESP, m.src, self.id, self.term, context=m.context, applied=self.log.applied))

    def _handle_snapshot(self, m: Message) -> None:
        assert m.snapshot is not None
        if self._restore(m.snapshot):
            index = self.log.last_index()
        else:
            index = self.log.committed
        self._send(Message(MessageType.APPEND_RESP, m.src, self.id, self.term, index=index, applied=self.log.applied))

    def _restore(self, snapshot: Snapshot) -> bool:
        meta = snapshot.meta
        if meta.index <= self.log.committed:
            return False
        if self.log.match_term(meta.index, meta.term):
            # We already have the snapshot's last entry: just fast-forward the commit.
            self.log.commit_to(meta.index)
            return False
        self.log.restore(snapshot)
        self.prs = {}
        self._apply_conf_state(meta.conf_state)
        return True

    # -- leader -----------------------------------------------------------------------------

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t is MessageType.TRANSFER_LEADER:
            self.transfer_leader(m.src)
            return
        if t is MessageType.READ_INDEX:
            self._queue_read(_PendingRead(m.src, m.context), lease=False)
            return
        pr = self.prs.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        if m.applied > pr.applied:
            pr.applied = m.applied
        if t is MessageType.APPEND_RESP:
            self._handle_append_resp(m, pr)
        elif t is MessageType.HEARTBEAT_RESP:
            pr.probe_sent = False
            if m.context > pr.acked_round:
                pr.acked_round = m.context
                self._advance_read_rounds()
            if pr.match < self.log.last_index():
                self._send_append(m.src)

    def _handle_append_resp(self, m: Message, pr: Progress) -> None:
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decrease_to(m.index, next_probe):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.src)
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        elif pr.state is ProgressState.REPLICATE:
            pr.inflights.free_up_to(m.index)
        if self._maybe_commit() and not self.config.skip_bcast_commit:
            self._broadcast_append()
        elif was_paused:
            self._send_append(m.src)
        # Pipeline: keep sending while the window allows and there is something to send.
        while self._send_append(m.src, send_if_empty=False):
            pass
        if m.src == self.lead_transferee and pr.match == self.log.last_index():
            self._send_timeout_now(m.src)

    def _maybe_commit(self) -> bool:
        matches = sorted([self.prs[v].match for v in self.voters if v in self.prs], reverse=True)
        quorum = self._quorum()
        if len(matches) < quorum:
            return False
        committed_before = self.log.committed
        if not self.log.maybe_commit(matches[quorum - 1], self.term):
            return False
        if self.log.term_or_zero(committed_before) != self.term:
            # The first commit of our term: reads queued since the election may start.
            self._maybe_start_waiting_reads()
        return True

    def _append_entries(self, data: list[bytes], entry_type: EntryType = EntryType.NORMAL) -> int:
        """Append one entry of `entry_type` per item of `data`, stamped with the next indexes
        and our term; returns the index of the last one."""
        last = self.log.last_index()
        term = self.term
        stamped = [Entry(last + i, term, d, entry_type) for i, d in enumerate(data, 1)]
        last = self.log.append(stamped)
        self.prs[self.id].maybe_update(last)
        self._maybe_commit()
        return last

    def _broadcast_append(self) -> None:
        for node_id in self.prs:
            if node_id != self.id:
                self._send_append(node_id)

    def _send_append(self, to: int, send_if_empty: bool = True) -> bool:
        pr = self.prs[to]
        if pr.is_paused():
            return False
        if not send_if_empty and pr.next == self.log.last_index() + 1:
            return False  # the follower has been sent everything: the common case, made cheap
        prev_index = pr.next - 1
        try:
            prev_term = self.log.term(prev_index)
            entries = self.log.entries_from(pr.next, self.max_msg_bytes)
        except (CompactedError, UnavailableError):
            return self._send_snapshot(to, pr)
        if not entries and not send_if_empty:
            return False
        self._send(
            Message(
                MessageType.APPEND,
                to,
                self.id,
                self.term,
                log_term=prev_term,
                index=prev_index,
                entries=tuple(entries),
                commit=self.log.committed,
            )
        )
        if entries:
            if pr.state is ProgressState.REPLICATE:
                last = entries[-1].index
                pr.next = last + 1
                pr.inflights.add(last)
            else:
                pr.probe_sent = True
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        try:
            snapshot = self.log.snapshot()
        except SnapshotTemporarilyUnavailableError:
            return False
        if snapshot.is_empty:
            raise AssertionError("need a snapshot but storage has none")
        pr.become_snapshot(snapshot.meta.index)
        self._send(Message(MessageType.SNAPSHOT, to, self.id, self.term, snapshot=snapshot))
        return True

    def _broadcast_heartbeat(self, round_id: int) -> None:
        committed = self.log.committed
        for node_id, pr in self.prs.items():
            if node_id != self.id:
                # Never tell a follower to commit beyond what it is known to have.
                commit = min(pr.match, committed)
                self._send(
                    Message(MessageType.HEARTBEAT, node_id, self.id, self.term, commit=commit, context=round_id)
                )

    # -- reads: ReadIndex and the leader lease ----------------------------------------------
    #
    # Every heartbeat broadcast is a numbered round. A follower echoes the round; once a quorum
    # has acknowledged round r (or a later one), this node was still leader when round r was
    # sent, so every read that arrived before round r started may be served at the commit
    # index recorded for that round. The same confirmation starts the lease: no other leader
    # can be elected until election_tick after round r was sent.

    def read_index(self, request_id: int, lease: bool = False) -> None:
        """Ask for a linearizable read point; the answer is a `ReadState` in a later Ready."""
        if self.role is not Role.LEADER:
            if self.lead == NONE:
                raise NotLeaderError(NONE)
            self._send(Message(MessageType.READ_INDEX, self.lead, self.id, self.term, context=request_id))
            return
        self._queue_read(_PendingRead(self.id, request_id), lease)

    def lease_valid(self) -> bool:
        if self.role is not Role.LEADER or self.lead_transferee != NONE:
            return False
        if len(self.voters) == 1 and self.id in self.voters:
            return True
        return (
            self.config.check_quorum
            and self.ticks < self._lease_expiry_tick
            and self.ticks >= self._lease_blocked_until_tick
        )

    def _committed_in_current_term(self) -> bool:
        return self.log.term_or_zero(self.log.committed) == self.term

    def _queue_read(self, read: _PendingRead, lease: bool) -> None:
        if self._committed_in_current_term():
            if self._quorum() == 1:
                self._release_read(read, self.log.committed)  # this node alone is the quorum
                return
            if lease and self.lease_valid():
                self._release_read(read, self.log.committed, by_lease=True)
                return
        self._reads_waiting.append(read)
        if not self._reads_in_flight:
            self._maybe_start_waiting_reads()

    def _maybe_start_waiting_reads(self) -> None:
        if self._reads_waiting and self._committed_in_current_term():
            self._start_read_round()

    def _start_read_round(self) -> None:
        self._read_round += 1
        round_id = self._read_round
        self._round_sent_tick[round_id] = self.ticks
        if self._reads_waiting and self._committed_in_current_term():
            self._reads_in_flight.append((round_id, self.log.committed, self._reads_waiting))
            self._reads_waiting = []
        self._broadcast_heartbeat(round_id)
        if self._quorum() == 1:
            self._advance_read_rounds()

    def _advance_read_rounds(self) -> None:
        acked = sorted(
            [self._read_round if v == self.id else self.prs[v].acked_round for v in self.voters if v in self.prs],
            reverse=True,
        )
        quorum = self._quorum()
        if len(acked) < quorum:
            return
        confirmed = acked[quorum - 1]
        if confirmed <= self._confirmed_round:
            return
        self._confirmed_round = confirmed
        sent_tick = self._round_sent_tick.get(confirmed)
        if sent_tick is not None:
            self._lease_expiry_tick = sent_tick + self.election_timeout - self.config.lease_drift_ticks
        for round_id in [r for r in self._round_sent_tick if r <= confirmed]:
            del self._round_sent_tick[round_id]
        in_flight = self._reads_in_flight
        while in_flight and in_flight[0][0] <= confirmed:
            _, index, reads = in_flight.pop(0)
            for read in reads:
                self._release_read(read, index)
        if not in_flight:
            self._maybe_start_waiting_reads()

    def _release_read(self, read: _PendingRead, index: int, by_lease: bool = False) -> None:
        if read.origin == self.id:
            self.read_states.append(ReadState(index, read.request_id, by_lease))
        else:
            self._send(
                Message(
                    MessageType.READ_INDEX_RESP,
                    read.origin,
                    self.id,
                    self.term,
                    index=index,
                    context=read.request_id,
                )
            )

    # -- proposals, transfer, membership ----------------------------------------------------

    def _check_can_propose(self) -> None:
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.lead)
        if self.lead_transferee != NONE:
            raise ProposalDroppedError(f"leadership is being transferred to node {self.lead_transferee}")

    def propose(self, data: list[bytes]) -> int:
        """Append `data` as new entries; returns the index of the last one."""
        self._check_can_propose()
        last = self._append_entries(data)
        self._broadcast_append()
        return last

    def propose_conf_change(self, change: ConfChange) -> int:
        self._check_can_propose()
        if self.pending_conf_index > self.log.applied:
            raise ProposalDroppedError("a configuration change is still pending; retry after it is applied")
        self._validate_conf_change(change)
        last = self._append_entries([change.encode()], EntryType.CONF_CHANGE)
        self.pending_conf_index = last
        self._broadcast_append()
        return last

    def _validate_conf_change(self, change: ConfChange) -> None:
        if change.type is ConfChangeType.REMOVE and change.node_id not in self.prs:
            raise ValueError(f"node {change.node_id} is not a member")
        if change.type is ConfChangeType.ADD_VOTER and change.node_id in self.voters:
            raise ValueError(f"node {change.node_id} is already a voter")
        if change.type is ConfChangeType.ADD_LEARNER and change.node_id in self.learners:
            raise ValueError(f"node {change.node_id} is already a learner")
        if change.type is ConfChangeType.REMOVE and self.voters == {change.node_id}:
            raise ValueError("cannot remove the last voter")

    def apply_conf_change(self, change: ConfChange) -> ConfState:
        """Called by the caller when it applies a committed CONF_CHANGE entry."""
        node_id = change.node_id
        conf_state = self.conf_state().apply(change)
        self.voters, self.learners = set(conf_state.voters), set(conf_state.learners)
        if change.type is ConfChangeType.REMOVE:
            self.prs.pop(node_id, None)
        elif node_id in self.prs:
            self.prs[node_id].is_learner = node_id in self.learners
        else:
            last = self.log.last_index()
            self.prs[node_id] = Progress(last + 1, self.config.max_inflight_msgs, node_id in self.learners)

        if self.role is Role.LEADER:
            if self.id not in self.voters:
                # Removed (or demoted) leader: step down; the others elect a new one.
                self.become_follower(self.term, NONE)
            else:
                if self.lead_transferee != NONE and self.lead_transferee not in self.voters:
                    self.lead_transferee = NONE
                if self._maybe_commit():
                    self._broadcast_append()
                self._advance_read_rounds()
                if node_id in self.prs and node_id != self.id:
                    self._send_append(node_id)
        return self.conf_state()

    def _apply_conf_state(self, conf_state: ConfState) -> None:
        self.voters = set(conf_state.voters)
        self.learners = set(conf_state.learners)
        last = self.log.last_index()
        for node_id in self.voters | self.learners:
            pr = Progress(last + 1, self.config.max_inflight_msgs, node_id in self.learners)
            if node_id == self.id:
                pr.match = last
            self.prs[node_id] = pr

    def transfer_leader(self, to: int) -> None:
        if self.role is not Role.LEADER:
            if self.lead != NONE:
                self._send(Message(MessageType.TRANSFER_LEADER, self.lead, to, self.term))
            return
        if to == self.id or to not in self.voters:
            return
        if self.lead_transferee == to:
            return
        # The transfer must finish within an election timeout or it is abandoned.
        self.election_elapsed = 0
        self.lead_transferee = to
        if self.prs[to].match == self.log.last_index():
            self._send_timeout_now(to)
        else:
            self._send_append(to)

    def _send_timeout_now(self, to: int) -> None:
        # The transferee's votes ignore followers' leases, and TimeoutNow may arrive late, even
        # after this transfer is abandoned: no lease reads until such an election is surely over.
        self._lease_blocked_until_tick = self.ticks + 2 * self.election_timeout
        self._send(Message(MessageType.TIMEOUT_NOW, to, self.id, self.term))

    def report_snapshot(self, to: int, success: bool) -> None:
        """The transport tells whether a snapshot reached `to`."""
        pr = self.prs.get(to)
        if self.role is not Role.LEADER or pr is None or pr.state is not ProgressState.SNAPSHOT:
            return
        if not success:
            pr.pending_snapshot = 0
        pr.become_probe()
        pr.probe_sent = True  # wait for the follower's answer or the next heartbeat

    def report_unreachable(self, to: int) -> None:
        """The transport lost its connection to `to`. A leader stops pipelining to it.

        A follower of `to` takes it as a sign that its leader died, and its election timer
        fires one tick after the election timeout (the randomized timeout may be up to twice
        that). Not sooner: voters refuse votes for an election timeout after they last heard
        the leader, which is what keeps the leader's lease safe, and their ticks may lag ours
        by one. Only the lowest-id other voter goes that early; the rest wait two ticks more,
        so that they do not split the vote. A false alarm costs at most a refused PreVote.
        """
        pr = self.prs.get(to)
        if self.role is Role.LEADER:
            if pr is not None and pr.state is ProgressState.REPLICATE:
                pr.become_probe()
            return
        if self.lead != to:
            return
        earliest = self.election_timeout + 1
        successor = min((voter for voter in self.voters if voter != to), default=NONE)
        if successor == self.id:
            self.randomized_election_timeout = min(self.randomized_election_timeout, earliest)
        else:
            self.randomized_election_timeout = max(self.randomized_election_timeout, earliest + 2)
