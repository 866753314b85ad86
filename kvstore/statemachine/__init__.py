"""The applier: executes committed commands of a partition deterministically (puts, deletes,
transactions, fenced writes, client-request dedup, leases and locks) on the API's protobuf
messages, staging the data and the apply state into the node's write batch together."""

from kvstore.names import lease_id, lease_partition
from kvstore.statemachine.applier import DEFAULT_MAX_DEDUP_CLIENTS, PartitionStateMachine
from kvstore.statemachine.commands import (
    COMMAND_FIELDS,
    KvRequest,
    WriteRequest,
    WriteResponse,
    check_command,
    txn_keys,
)
from kvstore.statemachine.events import (
    Change,
    ChangeKind,
    LeaseCheckpointed,
    LeaseEvent,
    LeaseGranted,
    LeaseRemoved,
)
from kvstore.statemachine.leases import Lease

__all__ = [
    "COMMAND_FIELDS",
    "DEFAULT_MAX_DEDUP_CLIENTS",
    "KvRequest",
    "Change",
    "ChangeKind",
    "Lease",
    "LeaseCheckpointed",
    "LeaseEvent",
    "LeaseGranted",
    "LeaseRemoved",
    "PartitionStateMachine",
    "WriteRequest",
    "WriteResponse",
    "check_command",
    "lease_id",
    "lease_partition",
    "txn_keys",
]
