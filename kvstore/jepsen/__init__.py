"""Jepsen-style testing of kvstore: histories and the linearizability checker (usable on their
own, e.g. by `kvctl check`), and the harness that runs a real cluster in network namespaces under
faults (`kvctl jepsen run`)."""

from kvstore.jepsen.checker import CheckResult, Verdict, check
from kvstore.jepsen.history import Event, EventType, Operation, pair_operations, read_jsonl, write_jsonl
from kvstore.jepsen.models import MODEL_NAMES, model_named
from kvstore.jepsen.nemesis import Intervals, NemesisKind
from kvstore.jepsen.netns import cleanup_leftovers, missing_prerequisites
from kvstore.jepsen.runner import ExitStatus, RunConfig, RunResult, run
from kvstore.jepsen.workloads import WORKLOAD_NAMES, CheckOutcome, Validity

__all__ = [
    "MODEL_NAMES",
    "WORKLOAD_NAMES",
    "CheckOutcome",
    "CheckResult",
    "Event",
    "EventType",
    "ExitStatus",
    "Intervals",
    "NemesisKind",
    "Operation",
    "RunConfig",
    "RunResult",
    "Validity",
    "Verdict",
    "check",
    "cleanup_leftovers",
    "missing_prerequisites",
    "model_named",
    "pair_operations",
    "read_jsonl",
    "run",
    "write_jsonl",
]
