"""The meta group's control section: users, roles, whether auth is enabled, the token-signing
secret, and the alarms (a member past the space quota). The meta group's log carries these
commands beside the membership commands (`MetaCommand.control`, `proto/kvstore/_pb/meta.proto`;
`kvstore.statemachine.meta` applies both sections; `cluster_state` is the other one). Pure and
deterministic, like the partitions' applier: every node applies the same `ControlCommand`s
(`proto/kvstore/_pb/control.proto`) in log order and holds the same `ControlState` at the same
revision.

`apply_control(state, command, revision)` returns the next state and the command's refusal
(None: applied). A refused command leaves the state as it was. `revision` is the index of the
meta group's entry carrying the command; a state that changed takes it as its own `revision`,
so a token issued at revision R is good on any node that has applied R (`kvstore.credentials`).

The model is etcd's role-based access control, on key prefixes:

* a **role** grants `READ` or `READWRITE` on key prefixes (an empty prefix is every key); a
  user has the union of its roles' grants;
* the role `root` is built in: it grants everything, and it alone may manage users and roles
  and turn auth on and off. The user `root` always has it (`AddUser` of `root` grants it);
* enabling auth needs the user `root` (else nobody could manage the cluster any more), and
  while auth is enabled `root` can neither be deleted nor lose the `root` role.

Rate limits (requests and bytes per second) may be set on users and roles; the node applies
them with token buckets (`kvstore.ratelimit`). Passwords arrive here hashed: the node that takes
the request hashes them (the hash's salt is random, and the applier must not draw randomness).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import IntEnum
from types import MappingProxyType
from typing import Any

from google.protobuf.message import DecodeError

from kvstore._pb import control_pb2
from kvstore._pb import kvstore_pb2 as pb
from kvstore.codec import CodecError
from kvstore.statemachine.cluster_state import Refusal
from kvstore.storage.keys import prefix_end

ROOT = "root"
"""The built-in role that may do everything, and the user that always has it."""

MAX_NAME_CHARS = 128


class Access(IntEnum):
    READ = pb.READ
    READWRITE = pb.READWRITE


class AlarmType(IntEnum):
    NOSPACE = pb.NOSPACE


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Operations and request bytes per second; 0 means not set at this level."""

    requests_per_second: float = 0.0
    bytes_per_second: float = 0.0

    @property
    def is_set(self) -> bool:
        return bool(self.requests_per_second or self.bytes_per_second)


@dataclass(frozen=True, slots=True)
class Grant:
    prefix: bytes
    access: Access


@dataclass(frozen=True, slots=True)
class User:
    name: str
    password_hash: str  # "" for a user who signs in with a client certificate only
    roles: tuple[str, ...] = ()  # sorted
    rate_limit: RateLimit = RateLimit()
    revision: int = 0  # when it was added or its password last changed: older tokens are void


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    grants: tuple[Grant, ...] = ()  # sorted by prefix, one per prefix
    rate_limit: RateLimit = RateLimit()


@dataclass(frozen=True, slots=True)
class Alarm:
    node_id: int
    type: AlarmType


@dataclass(frozen=True, slots=True)
class ControlState:
    revision: int = 0
    auth_enabled: bool = False
    token_secret: bytes = b""
    users: Mapping[str, User] = field(default_factory=lambda: MappingProxyType({}))
    roles: Mapping[str, Role] = field(default_factory=lambda: MappingProxyType({}))
    alarms: frozenset[Alarm] = frozenset()

    def is_root(self, user: str) -> bool:
        found = self.users.get(user)
        return found is not None and ROOT in found.roles


@dataclass(frozen=True, slots=True)
class Refused:
    reason: Refusal  # the meta group's refusal kinds: NOT_FOUND or INVALID here
    message: str


# -- permissions ----------------------------------------------------------------------------


class KeySpace:
    """The keys a set of prefixes covers, as sorted disjoint intervals [start, end) (end None:
    to the end of the key space), so that a range is checked with one binary search: it is
    covered when one merged interval holds all of it."""

    __slots__ = ("_starts", "_ends")

    def __init__(self, prefixes: Iterable[bytes]) -> None:
        starts: list[bytes] = []
        ends: list[bytes | None] = []
        for prefix in sorted(set(prefixes)):
            end = prefix_end(prefix)
            if ends and (ends[-1] is None or prefix <= ends[-1]):  # overlaps or touches the last one
                last = ends[-1]
                ends[-1] = None if last is None or end is None else max(last, end)
            else:
                starts.append(prefix)
                ends.append(end)
        self._starts = starts
        self._ends = ends

    def covers(self, start: bytes, end: bytes | None) -> bool:
        """Whether every key in [start, end) is covered (end None: up to the end of the key space)."""
        i = bisect.bisect_right(self._starts, start) - 1
        if i < 0:
            return False
        covered_end = self._ends[i]
        if covered_end is None:
            return True
        return end is not None and end <= covered_end and start < covered_end


@dataclass(frozen=True, slots=True)
class Permissions:
    """What one user may do, compiled from its roles."""

    root: bool
    readable: KeySpace
    writable: KeySpace

    def allows(self, access: Access, start: bytes, end: bytes | None) -> bool:
        if self.root:
            return True
        space = self.writable if access is Access.READWRITE else self.readable
        return space.covers(start, end)


def permissions(state: ControlState, user: str) -> Permissions | None:
    """The permissions of `user`, None when there is no such user."""
    found = state.users.get(user)
    if found is None:
        return None
    grants = [grant for name in found.roles if (role := state.roles.get(name)) is not None for grant in role.grants]
    return Permissions(
        ROOT in found.roles,
        KeySpace(grant.prefix for grant in grants),
        KeySpace(grant.prefix for grant in grants if grant.access is Access.READWRITE),
    )


def rate_limit_of(state: ControlState, user: str) -> RateLimit | None:
    """The limit set for `user`: its own when set, else the most generous of its roles' (each
    figure on its own), None when neither sets one (the node's default applies)."""
    found = state.users.get(user)
    if found is None:
        return None
    if found.rate_limit.is_set:
        return found.rate_limit
    limits = [role.rate_limit for name in found.roles
              if (role := state.roles.get(name)) is not None and role.rate_limit.is_set]
    if not limits:
        return None
    return RateLimit(_most_generous(limit.requests_per_second for limit in limits),
                     _most_generous(limit.bytes_per_second for limit in limits))


def _most_generous(rates: Iterable[float]) -> float:
    rates = list(rates)
    return 0.0 if 0.0 in rates else max(rates)  # 0 at any role: that role does not limit it


# -- checks shared by the node (before proposing) and the applier ---------------------------


def name_problem(name: str, what: str) -> str | None:
    """Why `name` cannot name a user or role, None when it can."""
    if not name:
        return f"the {what} name is empty"
    if len(name) > MAX_NAME_CHARS:
        return f"the {what} name is {len(name)} characters; the limit is {MAX_NAME_CHARS}"
    if not name.isprintable() or any(char.isspace() or char == ":" for char in name):
        return f"the {what} name {name!r} may not hold spaces, ':' or control characters"
    return None


def rate_limit_problem(limit: pb.RateLimit) -> str | None:
    for figure in (limit.requests_per_second, limit.bytes_per_second):
        if not math.isfinite(figure) or figure < 0:
            return f"a rate limit must be a finite number >= 0, got {figure}"
    return None


# -- applying -------------------------------------------------------------------------------

Outcome = tuple[ControlState, Refused | None]


def apply_control(state: ControlState, command: control_pb2.ControlCommand, revision: int) -> Outcome:
    """The state after `command` (the entry at index `revision`) and its refusal, if any."""
    kind = command.WhichOneof("command")
    handler = _HANDLERS.get(kind or "")
    if handler is None:
        return _refused(state, Refusal.INVALID, f"not a control command: {kind!r}")
    next_state, refusal = handler(state, getattr(command, kind or ""), revision)
    if refusal is None and next_state != state:
        next_state = replace(next_state, revision=revision)
    return next_state, refusal


def _refused(state: ControlState, reason: Refusal, message: str) -> Outcome:
    return state, Refused(reason, message)


def _invalid(state: ControlState, message: str) -> Outcome:
    return _refused(state, Refusal.INVALID, message)


def _with_user(state: ControlState, user: User) -> ControlState:
    return replace(state, users=MappingProxyType({**state.users, user.name: user}))


def _with_role(state: ControlState, role: Role) -> ControlState:
    return replace(state, roles=MappingProxyType({**state.roles, role.name: role}))


def _user(state: ControlState, name: str) -> User | Refused:
    found = state.users.get(name)
    return found if found is not None else Refused(Refusal.NOT_FOUND, f"there is no user {name!r}")


def _role(state: ControlState, name: str) -> Role | Refused:
    found = state.roles.get(name)
    if found is not None:
        return found
    return Refused(Refusal.NOT_FOUND, f"there is no role {name!r}")


def _enable(state: ControlState, command: control_pb2.EnableAuth, revision: int) -> Outcome:
    if not state.is_root(ROOT):
        return _invalid(state, "auth cannot be enabled before the user 'root' exists (kvctl user add root)")
    if state.auth_enabled:
        return state, None  # keep the secret: tokens issued so far stay good
    if len(command.token_secret) < 32:
        return _invalid(state, "the token secret must be at least 32 bytes")
    return replace(state, auth_enabled=True, token_secret=command.token_secret), None


def _disable(state: ControlState, command: pb.AuthDisableRequest, revision: int) -> Outcome:
    return replace(state, auth_enabled=False, token_secret=b""), None


def _add_user(state: ControlState, command: control_pb2.AddUser, revision: int) -> Outcome:
    problem = name_problem(command.name, "user")
    if problem is not None:
        return _invalid(state, problem)
    if command.name in state.users:
        return _invalid(state, f"the user {command.name!r} exists already")
    roles = (ROOT,) if command.name == ROOT else ()
    return _with_user(state, User(command.name, command.password_hash, roles, revision=revision)), None


def _delete_user(state: ControlState, command: pb.UserDeleteRequest, revision: int) -> Outcome:
    user = _user(state, command.name)
    if isinstance(user, Refused):
        return state, user
    if user.name == ROOT and state.auth_enabled:
        return _invalid(state, "the user 'root' cannot be deleted while auth is enabled")
    users = dict(state.users)
    del users[user.name]
    return replace(state, users=MappingProxyType(users)), None


def _change_password(state: ControlState, command: control_pb2.ChangePassword, revision: int) -> Outcome:
    user = _user(state, command.name)
    if isinstance(user, Refused):
        return state, user
    return _with_user(state, replace(user, password_hash=command.password_hash, revision=revision)), None


def _grant_role(state: ControlState, command: pb.UserGrantRoleRequest, revision: int) -> Outcome:
    user = _user(state, command.user)
    if isinstance(user, Refused):
        return state, user
    if command.role != ROOT:
        role = _role(state, command.role)
        if isinstance(role, Refused):
            return state, role
    return _with_user(state, replace(user, roles=tuple(sorted({*user.roles, command.role})))), None


def _revoke_role(state: ControlState, command: pb.UserRevokeRoleRequest, revision: int) -> Outcome:
    user = _user(state, command.user)
    if isinstance(user, Refused):
        return state, user
    if command.role not in user.roles:
        return _refused(state, Refusal.NOT_FOUND, f"the user {user.name!r} does not have the role {command.role!r}")
    if user.name == ROOT and command.role == ROOT:
        return _invalid(state, "the user 'root' always has the role 'root'")
    return _with_user(state, replace(user, roles=tuple(r for r in user.roles if r != command.role))), None


def _set_user_rate_limit(state: ControlState, command: pb.UserSetRateLimitRequest, revision: int) -> Outcome:
    user = _user(state, command.name)
    if isinstance(user, Refused):
        return state, user
    problem = rate_limit_problem(command.rate_limit)
    if problem is not None:
        return _invalid(state, problem)
    return _with_user(state, replace(user, rate_limit=rate_limit_from_pb(command.rate_limit))), None


def _add_role(state: ControlState, command: pb.RoleAddRequest, revision: int) -> Outcome:
    problem = name_problem(command.name, "role")
    if problem is not None:
        return _invalid(state, problem)
    if command.name == ROOT or command.name in state.roles:
        return _invalid(state, f"the role {command.name!r} exists already")
    return _with_role(state, Role(command.name)), None


def _delete_role(state: ControlState, command: pb.RoleDeleteRequest, revision: int) -> Outcome:
    if command.name == ROOT:
        return _invalid(state, "the role 'root' is built in and cannot be deleted")
    role = _role(state, command.name)
    if isinstance(role, Refused):
        return state, role
    roles = dict(state.roles)
    del roles[role.name]
    # As etcd: the users that had it lose it.
    users = {name: replace(user, roles=tuple(r for r in user.roles if r != role.name)) if role.name in user.roles
             else user for name, user in state.users.items()}
    return replace(state, roles=MappingProxyType(roles), users=MappingProxyType(users)), None


def _grant_permission(state: ControlState, command: pb.RoleGrantPermissionRequest, revision: int) -> Outcome:
    if command.role == ROOT:
        return _invalid(state, "the role 'root' has every permission already")
    role = _role(state, command.role)
    if isinstance(role, Refused):
        return state, role
    permission = command.permission
    if permission.permission not in _ACCESS_VALUES:
        return _invalid(state, f"unknown permission {permission.permission}")
    grants = {grant.prefix: grant for grant in role.grants}
    grants[permission.prefix] = Grant(permission.prefix, Access(permission.permission))
    return _with_role(state, replace(role, grants=tuple(grants[prefix] for prefix in sorted(grants)))), None


def _revoke_permission(state: ControlState, command: pb.RoleRevokePermissionRequest, revision: int) -> Outcome:
    role = _role(state, command.role)
    if isinstance(role, Refused):
        return state, role
    kept = tuple(grant for grant in role.grants if grant.prefix != command.prefix)
    if len(kept) == len(role.grants):
        return _refused(state, Refusal.NOT_FOUND,
                        f"the role {role.name!r} grants nothing on the prefix {command.prefix!r}")
    return _with_role(state, replace(role, grants=kept)), None


def _set_role_rate_limit(state: ControlState, command: pb.RoleSetRateLimitRequest, revision: int) -> Outcome:
    role = _role(state, command.name)
    if isinstance(role, Refused):
        return state, role
    problem = rate_limit_problem(command.rate_limit)
    if problem is not None:
        return _invalid(state, problem)
    return _with_role(state, replace(role, rate_limit=rate_limit_from_pb(command.rate_limit))), None


def _raise_alarm(state: ControlState, command: pb.Alarm, revision: int) -> Outcome:
    if command.type not in _ALARM_VALUES or not command.node_id:
        return _invalid(state, f"not an alarm: node {command.node_id}, type {command.type}")
    return replace(state, alarms=state.alarms | {Alarm(command.node_id, AlarmType(command.type))}), None


def _clear_alarm(state: ControlState, command: pb.Alarm, revision: int) -> Outcome:
    return replace(state, alarms=frozenset(a for a in state.alarms
                                           if (a.node_id, a.type.value) != (command.node_id, command.type))), None


def without_alarms_of(state: ControlState, node_ids: Container[int], revision: int) -> ControlState:
    """`state` without the alarms of `node_ids` (members that were removed), as of `revision`."""
    kept = frozenset(alarm for alarm in state.alarms if alarm.node_id not in node_ids)
    return state if kept == state.alarms else replace(state, alarms=kept, revision=revision)


_ACCESS_VALUES = frozenset(access.value for access in Access)
_ALARM_VALUES = frozenset(alarm.value for alarm in AlarmType)

_HANDLERS: Mapping[str, Callable[[ControlState, Any, int], Outcome]] = MappingProxyType({
    "enable_auth": _enable,
    "disable_auth": _disable,
    "add_user": _add_user,
    "delete_user": _delete_user,
    "change_password": _change_password,
    "grant_role": _grant_role,
    "revoke_role": _revoke_role,
    "set_user_rate_limit": _set_user_rate_limit,
    "add_role": _add_role,
    "delete_role": _delete_role,
    "grant_permission": _grant_permission,
    "revoke_permission": _revoke_permission,
    "set_role_rate_limit": _set_role_rate_limit,
    "raise_alarm": _raise_alarm,
    "clear_alarm": _clear_alarm,
})


# -- the stored record ----------------------------------------------------------------------


def rate_limit_from_pb(limit: pb.RateLimit) -> RateLimit:
    return RateLimit(limit.requests_per_second, limit.bytes_per_second)


def rate_limit_to_pb(limit: RateLimit) -> pb.RateLimit:
    return pb.RateLimit(requests_per_second=limit.requests_per_second, bytes_per_second=limit.bytes_per_second)


def encode_state(state: ControlState) -> bytes:
    """The state as one `ControlState` record; equal states encode to equal bytes."""
    record = control_pb2.ControlState(
        revision=state.revision,
        auth_enabled=state.auth_enabled,
        token_secret=state.token_secret,
        users=[control_pb2.StoredUser(name=user.name, password_hash=user.password_hash, roles=user.roles,
                                      rate_limit=rate_limit_to_pb(user.rate_limit), revision=user.revision)
               for _, user in sorted(state.users.items())],
        roles=[control_pb2.StoredRole(name=role.name,
                                      permissions=[pb.KeyPermission(prefix=g.prefix, permission=g.access.value)
                                                   for g in role.grants],
                                      rate_limit=rate_limit_to_pb(role.rate_limit))
               for _, role in sorted(state.roles.items())],
        alarms=[pb.Alarm(node_id=alarm.node_id, type=alarm.type.value)
                for alarm in sorted(state.alarms, key=lambda a: (a.node_id, a.type))],
    )
    return record.SerializeToString(deterministic=True)


def decode_state(data: bytes) -> ControlState:
    """The state stored by `encode_state`; `CodecError` when `data` is not one."""
    try:
        record = control_pb2.ControlState.FromString(data)
        users = {u.name: User(u.name, u.password_hash, tuple(u.roles), rate_limit_from_pb(u.rate_limit), u.revision)
                 for u in record.users}
        roles = {r.name: Role(r.name, tuple(Grant(p.prefix, Access(p.permission)) for p in r.permissions),
                              rate_limit_from_pb(r.rate_limit))
                 for r in record.roles}
        alarms = frozenset(Alarm(a.node_id, AlarmType(a.type)) for a in record.alarms)
    except (DecodeError, ValueError) as exc:
        raise CodecError(f"not a control state record: {exc}") from None
    return ControlState(record.revision, record.auth_enabled, record.token_secret, MappingProxyType(users),
                        MappingProxyType(roles), alarms)
