"""Records exchanged between the Raft core and its caller.

Everything here is an immutable value: the core hands them out in a `Ready` and takes them in
through `step()`, so the caller can persist, send or apply them without copying.

The records built for every write (`Entry`, `HardState`, `SnapshotMeta`, `Message`, `Ready`)
spell out their `__init__`: mypyc compiles a method written in the class, but leaves the one
`@dataclass` generates interpreted (mypyc/mypyc#671), which for a frozen class sets each field
through `object.__setattr__` — ~330 ns against ~35 ns compiled for three fields. They stay
frozen dataclasses (equality, repr, `replace`); `tests/unit/test_raft_types.py` checks that each
`__init__` takes and sets exactly the dataclass's fields.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

NONE = 0
"""Node id 0 means "nobody" (no leader known, no vote cast). Real node ids start at 1."""


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


class EntryType(IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


class MessageType(IntEnum):
    APPEND = 1
    APPEND_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    PRE_VOTE = 5
    PRE_VOTE_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    SNAPSHOT = 9
    TIMEOUT_NOW = 10
    TRANSFER_LEADER = 11
    READ_INDEX = 12
    READ_INDEX_RESP = 13


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    term: int
    data: bytes = b""
    type: EntryType = EntryType.NORMAL

    def __init__(self, index: int, term: int, data: bytes = b"", type: EntryType = EntryType.NORMAL) -> None:
        object.__setattr__(self, "index", index)
        object.__setattr__(self, "term", term)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "type", type)


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before any message that depends on it is sent."""

    term: int = 0
    vote: int = NONE
    commit: int = 0

    def __init__(self, term: int = 0, vote: int = NONE, commit: int = 0) -> None:
        object.__setattr__(self, "term", term)
        object.__setattr__(self, "vote", vote)
        object.__setattr__(self, "commit", commit)


EMPTY_HARD_STATE = HardState()


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state the caller may want to observe (not persisted)."""

    leader: int
    role: Role


@dataclass(frozen=True, slots=True)
class ConfState:
    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()

    def apply(self, change: ConfChange) -> ConfState:
        """The configuration once `change` is applied: a node is a voter or a learner, never both.
        The one rule shared by the Raft core and the state machine that tracks it."""
        node = frozenset((change.node_id,))
        if change.type is ConfChangeType.ADD_VOTER:
            return ConfState(self.voters | node, self.learners - node)
        if change.type is ConfChangeType.ADD_LEARNER:
            return ConfState(self.voters - node, self.learners | node)
        return ConfState(self.voters - node, self.learners - node)


EMPTY_CONF_STATE = ConfState()


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)

    def __init__(self, index: int = 0, term: int = 0, conf_state: ConfState = EMPTY_CONF_STATE) -> None:
        object.__setattr__(self, "index", index)
        object.__setattr__(self, "term", term)
        object.__setattr__(self, "conf_state", conf_state)


@dataclass(frozen=True, slots=True)
class Snapshot:
    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""

    @property
    def is_empty(self) -> bool:
        return self.meta.index == 0


EMPTY_SNAPSHOT = Snapshot()


class ConfChangeType(IntEnum):
    ADD_VOTER = 0
    ADD_LEARNER = 1
    REMOVE = 2


_CONF_CHANGE = struct.Struct(">BQ")


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A single-server membership change. Takes effect when the caller applies its entry."""

    type: ConfChangeType
    node_id: int

    def encode(self) -> bytes:
        return _CONF_CHANGE.pack(self.type, self.node_id)

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        kind, node_id = _CONF_CHANGE.unpack(data)
        return cls(ConfChangeType(kind), node_id)


@dataclass(frozen=True, slots=True)
class Message:
    """A Raft message between two peers of one group.

    `context` carries the heartbeat round (leadership confirmation for ReadIndex and the
    leader lease), or a read request's id for READ_INDEX / READ_INDEX_RESP.
    `transfer` marks votes of a leadership transfer, which voters grant even inside a lease.
    """

    type: MessageType
    to: int
    src: int
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    context: int = 0
    transfer: bool = False

    def __init__(
        self,
        type: MessageType,
        to: int,
        src: int,
        term: int = 0,
        log_term: int = 0,
        index: int = 0,
        entries: tuple[Entry, ...] = (),
        commit: int = 0,
        reject: bool = False,
        reject_hint: int = 0,
        snapshot: Snapshot | None = None,
        context: int = 0,
        transfer: bool = False,
    ) -> None:
        object.__setattr__(self, "type", type)
        object.__setattr__(self, "to", to)
        object.__setattr__(self, "src", src)
        object.__setattr__(self, "term", term)
        object.__setattr__(self, "log_term", log_term)
        object.__setattr__(self, "index", index)
        object.__setattr__(self, "entries", entries)
        object.__setattr__(self, "commit", commit)
        object.__setattr__(self, "reject", reject)
        object.__setattr__(self, "reject_hint", reject_hint)
        object.__setattr__(self, "snapshot", snapshot)
        object.__setattr__(self, "context", context)
        object.__setattr__(self, "transfer", transfer)


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read request may be served once the caller has applied up to `index`."""

    index: int
    request_id: int


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work for the caller. The caller MUST handle it in this order:

    1. persist `hard_state` (if not None), append `entries` to stable storage and install
       `snapshot` (if not None), durably (fsync when `must_sync`);
    2. only then send `messages` (persist BEFORE send: a vote or an append acknowledged over
       the network must survive a crash);
    3. apply the `snapshot` (if any) and then `committed_entries`, in order, to the state
       machine; call `RawNode.apply_conf_change` for each CONF_CHANGE entry as it is applied;
    4. serve `read_states` once the applied index reaches their index;
    5. call `RawNode.advance(ready)`.
    """

    soft_state: SoftState | None
    hard_state: HardState | None
    entries: tuple[Entry, ...]
    snapshot: Snapshot | None
    committed_entries: tuple[Entry, ...]
    messages: tuple[Message, ...]
    read_states: tuple[ReadState, ...]
    must_sync: bool

    def __init__(
        self,
        soft_state: SoftState | None,
        hard_state: HardState | None,
        entries: tuple[Entry, ...],
        snapshot: Snapshot | None,
        committed_entries: tuple[Entry, ...],
        messages: tuple[Message, ...],
        read_states: tuple[ReadState, ...],
        must_sync: bool,
    ) -> None:
        object.__setattr__(self, "soft_state", soft_state)
        object.__setattr__(self, "hard_state", hard_state)
        object.__setattr__(self, "entries", entries)
        object.__setattr__(self, "snapshot", snapshot)
        object.__setattr__(self, "committed_entries", committed_entries)
        object.__setattr__(self, "messages", messages)
        object.__setattr__(self, "read_states", read_states)
        object.__setattr__(self, "must_sync", must_sync)
