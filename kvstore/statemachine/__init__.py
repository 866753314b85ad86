"""The applier: executes committed commands of a partition deterministically (puts, deletes,
transactions, fenced writes, client-request dedup) on the API's protobuf messages, staging the
data and the apply state into the node's write batch together."""

from kvstore.statemachine.applier import DEFAULT_MAX_DEDUP_CLIENTS, PartitionStateMachine
from kvstore.statemachine.commands import WriteRequest, WriteResponse, check_command, txn_keys

__all__ = [
    "DEFAULT_MAX_DEDUP_CLIENTS",
    "PartitionStateMachine",
    "WriteRequest",
    "WriteResponse",
    "check_command",
    "txn_keys",
]
