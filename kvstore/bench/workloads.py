"""The workloads: what fraction of operations read, and what the others do."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class WriteKind(StrEnum):
    PUT = "put"  # a blind write of a fresh value
    READ_MODIFY_WRITE = "rmw"  # read the value, then write it back only if unchanged (a CAS txn)


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    read_fraction: float
    write_kind: WriteKind
    description: str


WORKLOADS: MappingProxyType[str, Workload] = MappingProxyType({
    w.name: w
    for w in (
        Workload("put", 0.0, WriteKind.PUT, "100% put"),
        Workload("get", 1.0, WriteKind.PUT, "100% get"),
        Workload("a", 0.5, WriteKind.PUT, "YCSB A: 50% get / 50% put (update heavy)"),
        Workload("b", 0.95, WriteKind.PUT, "YCSB B: 95% get / 5% put (read mostly)"),
        Workload("c", 1.0, WriteKind.PUT, "YCSB C: 100% get (read only)"),
        Workload("f", 0.5, WriteKind.READ_MODIFY_WRITE,
                 "YCSB F: 50% get / 50% read-modify-write (get, then a txn comparing the value read)"),
    )
})
