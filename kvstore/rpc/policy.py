"""What every RPC needs from its caller: one table, `RULES`, from a method's full name to its rule.

The guard (`kvstore.rpc.guard`) is the one place that enforces it, for every service on the
node's port, before the servicer runs: a service added later is checked by adding its methods
here, and `tests/unit/test_policy.py` fails while a method of the protos has no rule or a rule
names a request field its message does not have.

Rules say who may call, or which keys a call touches and how:

* `Who.PUBLIC`: anyone, signed in or not (signing in; cluster metadata without keys or values;
  health checks);
* `Who.SIGNED_IN`: any user; `Who.ROOT`: a user with the `root` role;
* `Who.PEER`: another node (with TLS, a peer certificate: docs/security.md), never a user;
* `Who.NOBODY`: refused, auth enabled or not: what a method missing from the table gets;
* `OnKey`, `OnRange`, `OnWatch`, `OnLock`, `OnLeaseKeys`, `OnOperation`: a permission on the keys
  the request names, read from its fields (a lease's: the keys attached to it); `EachOperation`: a `Batch`, whose operations are checked (and refused) one by one.

With auth disabled only `Who.PEER` and `Who.NOBODY` are enforced; rate limits and the space quota apply either
way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

from google.protobuf.message import Message

from kvstore._pb import kvstore_pb2 as pb
from kvstore.names import lock_prefix
from kvstore.statemachine.control import Access
from kvstore.storage.keys import prefix_end


class Who(Enum):
    PUBLIC = "anyone"
    SIGNED_IN = "a signed-in user"
    ROOT = "the root role"
    PEER = "a peer node"
    NOBODY = "nobody"  # what a method without a rule gets


@dataclass(frozen=True, slots=True)
class Need:
    """One permission a request needs: `access` on every key in [start, end) (end None: to the
    end of the key space). `adds_data`: the cluster refuses it while over its space quota."""

    access: Access
    start: bytes
    end: bytes | None
    adds_data: bool = False

    def describe(self) -> str:
        if self.end == self.start + b"\x00":
            where = f"key {_show(self.start)}"
        elif self.end == prefix_end(self.start):
            where = f"prefix {_show(self.start)}" if self.start else "every key"
        else:
            where = f"range [{_show(self.start)}, {_show(self.end) if self.end is not None else 'end'})"
        return f"{self.access.name.lower()} permission on {where}"


def _show(key: bytes) -> str:
    text = key.decode("utf-8", "backslashreplace")
    return repr(text if len(text) <= 80 else text[:77] + "...")


def key_need(access: Access, key: bytes, adds_data: bool = False) -> Need:
    return Need(access, key, key + b"\x00", adds_data)


def prefix_need(access: Access, prefix: bytes, adds_data: bool = False) -> Need:
    return Need(access, prefix, prefix_end(prefix), adds_data)


@dataclass(frozen=True, slots=True)
class OnKey:
    """`access` on the key in the request's field `field` (or every key under it, `prefix`)."""

    access: Access
    field: str
    prefix: bool = False
    adds_data: bool = False

    def needs(self, request: Message) -> list[Need]:
        key = getattr(request, self.field)
        if self.prefix:
            return [prefix_need(self.access, key, self.adds_data)]
        return [key_need(self.access, key, self.adds_data)]


@dataclass(frozen=True, slots=True)
class OnRange:
    """`access` on the range the request names: its `prefix` field when set, else [start, end)
    with an empty end meaning the end of the key space."""

    access: Access
    start: str
    end: str
    prefix: str

    def needs(self, request: Message) -> list[Need]:
        prefix = getattr(request, self.prefix)
        if prefix:
            return [prefix_need(self.access, prefix)]
        return [Need(self.access, getattr(request, self.start), getattr(request, self.end) or None)]


@dataclass(frozen=True, slots=True)
class OnWatch:
    """A watch stream's request: creating a watch needs read on its key, or on every key under
    it when it watches a prefix; cancelling one or asking for progress needs nothing more than
    the stream's caller. A refused request is answered in its place (`refused`), and the
    stream goes on."""

    def needs(self, request: Message) -> list[Need]:
        if not isinstance(request, pb.WatchRequest) or request.WhichOneof("request") != "create":
            return []
        create = request.create
        return [prefix_need(Access.READ, create.key) if create.prefix else key_need(Access.READ, create.key)]

    @staticmethod
    def refused(request: Message, error: pb.Error) -> pb.WatchResponse:
        """The answer to a refused request: its watch, canceled with the refusal."""
        watch_id = request.create.watch_id if isinstance(request, pb.WatchRequest) else 0
        return pb.WatchResponse(watch_id=watch_id, canceled=True, error=error)


@dataclass(frozen=True, slots=True)
class OnLock:
    """Readwrite on the keys of the lock named in the request's field `field`: a lock named N is
    held through keys under `kvstore.names.lock_prefix(N)` (`{N}/`, or `N/` when N has a hash
    tag), and taking it writes one there."""

    field: str

    def needs(self, request: Message) -> list[Need]:
        name = getattr(request, self.field)
        if not name:
            return []  # refused by the service: a lock needs a name
        return [prefix_need(Access.READWRITE, lock_prefix(name), adds_data=True)]


@dataclass(frozen=True, slots=True)
class OnLeaseKeys:
    """`access` on every key attached to the lease whose id is in the request's field `field`,
    as the node taking the call has applied them: revoking a lease deletes its keys, listing them
    shows them. With `only_if`, only when that boolean field of the request is set."""

    access: Access
    field: str
    only_if: str = ""

    def needs(self, request: Message, lease_keys: Callable[[int], Sequence[bytes]]) -> list[Need]:
        if self.only_if and not getattr(request, self.only_if):
            return []
        return [key_need(self.access, key) for key in lease_keys(getattr(request, self.field))]


@dataclass(frozen=True, slots=True)
class OnOperation:
    """The request is a key operation (get, put, delete, transaction) or a `RequestOp` holding
    one: reads need read, writes readwrite; a transaction needs read on the keys it compares and
    what each operation of both branches needs (either may run)."""

    def needs(self, request: Message) -> list[Need]:
        return operation_needs(request)


@dataclass(frozen=True, slots=True)
class EachOperation:
    """A batch: each `RequestOp` in the request's field `items` is checked on its own, like
    `OnOperation`; a refused one is answered in its place among the response's `results` and
    the others go on."""

    items: str
    results: str


Rule = Who | OnKey | OnRange | OnWatch | OnLock | OnLeaseKeys | OnOperation | EachOperation


def operation_needs(request: Message) -> list[Need]:
    if isinstance(request, pb.RequestOp):
        kind = request.WhichOneof("op")
        return [] if kind is None else operation_needs(getattr(request, kind))
    if isinstance(request, pb.GetRequest):
        return [key_need(Access.READ, request.key)]
    if isinstance(request, pb.PutRequest):
        return [key_need(Access.READWRITE, request.key, adds_data=True)]
    if isinstance(request, pb.DeleteRequest):
        return [key_need(Access.READWRITE, request.key)]
    if isinstance(request, pb.TxnRequest):
        needs = [key_need(Access.READ, compare.key) for compare in request.compare]
        for branch in (request.success, request.failure):
            for op in branch:
                needs += operation_needs(op)
        return needs
    raise TypeError(f"not a key operation: {type(request).__name__}")


_KV, _LEASE, _LOCK, _WATCH, _CLUSTER, _AUTH, _PEER = (
    "/kvstore.v1.KV/", "/kvstore.v1.Lease/", "/kvstore.v1.Lock/", "/kvstore.v1.Watch/", "/kvstore.v1.Cluster/",
    "/kvstore.v1.Auth/", "/kvstore.v1.Peer/",
)

RULES: Mapping[str, Rule] = MappingProxyType({
    _KV + "Get": OnOperation(),
    _KV + "Put": OnOperation(),
    _KV + "Delete": OnOperation(),
    _KV + "Txn": OnOperation(),
    _KV + "Scan": OnRange(Access.READ, start="start", end="end", prefix="prefix"),
    _KV + "Batch": EachOperation(items="ops", results="results"),
    # A lease holds no key of its own; what is attached to it is checked by the put that attaches
    # it. Revoking it deletes the keys attached (as etcd: readwrite on each), and TimeToLive
    # with `keys` lists them (read on each).
    _LEASE + "Grant": Who.SIGNED_IN,
    _LEASE + "Revoke": OnLeaseKeys(Access.READWRITE, "id"),
    _LEASE + "KeepAlive": Who.SIGNED_IN,
    _LEASE + "TimeToLive": OnLeaseKeys(Access.READ, "id", only_if="keys"),
    _LEASE + "Leases": Who.SIGNED_IN,
    _LOCK + "Lock": OnLock("name"),
    _LOCK + "Unlock": OnKey(Access.READWRITE, "key"),
    _WATCH + "Watch": OnWatch(),
    _CLUSTER + "Status": Who.PUBLIC,
    _CLUSTER + "Members": Who.PUBLIC,
    _CLUSTER + "Partitions": Who.PUBLIC,
    _CLUSTER + "MemberAdd": Who.ROOT,
    _CLUSTER + "MemberRemove": Who.ROOT,
    _CLUSTER + "MemberReplace": Who.ROOT,
    _CLUSTER + "Join": Who.PEER,  # a new node asking its place, with its peer certificate
    _AUTH + "Authenticate": Who.PUBLIC,
    _AUTH + "AuthStatus": Who.PUBLIC,
    **{_AUTH + name: Who.ROOT for name in (
        "AuthEnable", "AuthDisable", "UserAdd", "UserDelete", "UserChangePassword", "UserGrantRole", "UserRevokeRole",
        "UserSetRateLimit", "UserList", "RoleAdd", "RoleDelete", "RoleGrantPermission", "RoleRevokePermission",
        "RoleSetRateLimit", "RoleList")},
    _PEER + "Stream": Who.PEER,
    _PEER + "SendSnapshot": Who.PEER,
    _PEER + "ProposeMeta": Who.PEER,
    "/grpc.health.v1.Health/Check": Who.PUBLIC,
    "/grpc.health.v1.Health/Watch": Who.PUBLIC,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": Who.PUBLIC,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": Who.PUBLIC,
})
