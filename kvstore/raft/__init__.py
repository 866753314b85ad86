"""Raft as a pure state machine (no I/O, no clock, injected randomness).

Drive it through `RawNode`; see `Ready` for the order in which its output must be handled.
"""

from kvstore.raft.errors import (
    CompactedError,
    NotLeaderError,
    ProposalDroppedError,
    RaftError,
    SnapshotTemporarilyUnavailableError,
    UnavailableError,
)
from kvstore.raft.log_storage import LogStorage, MemoryLogStorage
from kvstore.raft.progress import ProgressState
from kvstore.raft.raft import Config
from kvstore.raft.rawnode import PeerStatus, RawNode, Status
from kvstore.raft.tombstone import Tombstone
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
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)

__all__ = [
    "NONE",
    "CompactedError",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Config",
    "Entry",
    "EntryType",
    "HardState",
    "LogStorage",
    "MemoryLogStorage",
    "Message",
    "MessageType",
    "NotLeaderError",
    "PeerStatus",
    "ProgressState",
    "ProposalDroppedError",
    "RaftError",
    "RawNode",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SnapshotTemporarilyUnavailableError",
    "SoftState",
    "Status",
    "Tombstone",
    "UnavailableError",
]
