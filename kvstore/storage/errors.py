"""Errors raised by the storage layer.

Every message is one line and names what failed, so that a node can log it as is and an operator
can act on it without a traceback.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every storage error. After one is raised by `Engine.write`, the durable state
    is unknown: the node must stop and reopen its data directory (never retry the write)."""


class DataDirLockedError(StorageError):
    """The data directory is held (LevelDB's LOCK file) by another process or another engine."""

    def __init__(self, path: str, *, same_process: bool = False) -> None:
        self.path = path
        holder = "is already open in this process" if same_process else "is in use by another process"
        super().__init__(f"data directory {path} {holder}")


class EngineClosedError(StorageError):
    """An operation reached an engine (or a read view) that has been closed."""


class CorruptionError(StorageError):
    """Stored bytes do not decode, or the stored log has a hole: the data directory is damaged."""
