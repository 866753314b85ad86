"""Jepsen-style testing of kvstore: histories, the linearizability checker and the session and
staleness checkers (usable on their own, e.g. by `kvctl check`), and the harness that runs a real
cluster in network namespaces under faults (`kvctl jepsen run`)."""

from kvstore.jepsen.checker import CheckResult, Validity, Verdict, check
from kvstore.jepsen.guarantees import GUARANTEE_NAMES, GuaranteeResult, check_guarantee
from kvstore.jepsen.history import Event, EventType, Operation, pair_operations, read_jsonl, write_jsonl
from kvstore.jepsen.models import MODEL_NAMES, model_named
from kvstore.jepsen.nemesis import Intervals, NemesisKind
from kvstore.jepsen.netns import cleanup_leftovers, missing_prerequisites
from kvstore.jepsen.runner import WORKLOAD_NAMES, ExitStatus, RunConfig, RunResult, run
from kvstore.jepsen.workloads import CheckOutcome

__all__ = [
    "GUARANTEE_NAMES",
    "MODEL_NAMES",
    "WORKLOAD_NAMES",
    "CheckOutcome",
    "CheckResult",
    "Event",
    "GuaranteeResult",
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
    "check_guarantee",
    "cleanup_leftovers",
    "missing_prerequisites",
    "model_named",
    "pair_operations",
    "read_jsonl",
    "run",
    "write_jsonl",
]
