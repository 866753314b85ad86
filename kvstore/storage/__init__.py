"""Storage: an ordered key-value engine (LevelDB or in memory), the key layout, record codecs and
the durable Raft log. Knows nothing of partitions' meaning, Raft rules or the network."""

from kvstore.storage.engine import Engine, LevelDBEngine, MemoryEngine, ReadView, WriteBatch
from kvstore.storage.errors import CorruptionError, DataDirLockedError, EngineClosedError, StorageError
from kvstore.storage.raft_log import DurableLogStorage, SnapshotSource

__all__ = [
    "CorruptionError",
    "DataDirLockedError",
    "DurableLogStorage",
    "Engine",
    "EngineClosedError",
    "LevelDBEngine",
    "MemoryEngine",
    "ReadView",
    "SnapshotSource",
    "StorageError",
    "WriteBatch",
]
