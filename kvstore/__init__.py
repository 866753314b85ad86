"""kvstore: a distributed key-value store built on multi-Raft over a consistent-hash ring."""

__version__ = "0.1.0"
