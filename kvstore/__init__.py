"""kvstore: a distributed key-value store built on multi-Raft over a consistent-hash ring."""

from kvstore.compiled import use_source_when_asked

__version__ = "0.1.0"

# Before any compiled module is imported: KVSTORE_PURE_PYTHON=1 runs their source instead.
use_source_when_asked()
