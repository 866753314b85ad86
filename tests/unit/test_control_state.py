"""The control state machine: users, roles, permissions on prefixes, auth on/off, alarms — pure,
deterministic, and what every node applies alike."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kvstore._pb import control_pb2
from kvstore._pb import kvstore_pb2 as pb
from kvstore.statemachine.cluster_state import Refusal
from kvstore.statemachine.control import (
    ROOT,
    Access,
    Alarm,
    AlarmType,
    ControlState,
    KeySpace,
    RateLimit,
    apply_control,
    decode_state,
    encode_state,
    permissions,
    rate_limit_of,
    without_alarms_of,
)

SECRET = b"s" * 32
C = control_pb2.ControlCommand


def run(*commands: C, state: ControlState | None = None) -> ControlState:
    """Apply `commands` at revisions 1, 2, ...; every one must be accepted."""
    state = state or ControlState()
    for revision, command in enumerate(commands, start=state.revision + 1):
        state, refusal = apply_control(state, command, revision)
        assert refusal is None, refusal
    return state


def refusal_of(state: ControlState, command: C) -> tuple[Refusal, str]:
    after, refusal = apply_control(state, command, state.revision + 1)
    assert refusal is not None
    assert after == state, "a refused command changes nothing"
    return refusal.reason, refusal.message


def add_user(name: str, password_hash: str = "hash") -> C:
    return C(add_user=control_pb2.AddUser(name=name, password_hash=password_hash))


def add_role(name: str) -> C:
    return C(add_role=pb.RoleAddRequest(name=name))


def grant(role: str, prefix: bytes, access: Access) -> C:
    return C(grant_permission=pb.RoleGrantPermissionRequest(
        role=role, permission=pb.KeyPermission(prefix=prefix, permission=access.value)))


def give_role(user: str, role: str) -> C:
    return C(grant_role=pb.UserGrantRoleRequest(user=user, role=role))


ENABLE = C(enable_auth=control_pb2.EnableAuth(token_secret=SECRET))


def test_enabling_auth_needs_the_root_user_and_keeps_its_secret_when_enabled_again() -> None:
    code, message = refusal_of(ControlState(), ENABLE)
    assert code is Refusal.INVALID and "kvctl user add root" in message
    state = run(add_user(ROOT), ENABLE)
    assert state.auth_enabled and state.token_secret == SECRET and state.users[ROOT].roles == (ROOT,)
    again = run(C(enable_auth=control_pb2.EnableAuth(token_secret=b"t" * 32)), state=state)
    assert again.token_secret == SECRET, "enabling twice must not void the tokens already issued"
    disabled = run(C(disable_auth=pb.AuthDisableRequest()), state=again)
    assert not disabled.auth_enabled and disabled.token_secret == b""


def test_root_cannot_be_deleted_or_lose_its_role_while_auth_is_enabled() -> None:
    state = run(add_user(ROOT), ENABLE)
    assert refusal_of(state, C(delete_user=pb.UserDeleteRequest(name=ROOT)))[0] is Refusal.INVALID
    assert refusal_of(state, C(revoke_role=pb.UserRevokeRoleRequest(user=ROOT, role=ROOT)))[0] \
        is Refusal.INVALID
    assert refusal_of(state, C(delete_role=pb.RoleDeleteRequest(name=ROOT)))[0] is Refusal.INVALID


def test_users_and_roles_refuse_what_does_not_exist_or_exists_already() -> None:
    state = run(add_user("alice"), add_role("reader"))
    assert refusal_of(state, add_user("alice"))[0] is Refusal.INVALID
    assert refusal_of(state, add_role("reader"))[0] is Refusal.INVALID
    assert refusal_of(state, add_role(ROOT))[0] is Refusal.INVALID
    assert refusal_of(state, give_role("bob", "reader"))[0] is Refusal.NOT_FOUND
    assert refusal_of(state, give_role("alice", "writer"))[0] is Refusal.NOT_FOUND
    assert refusal_of(state, C(revoke_role=pb.UserRevokeRoleRequest(user="alice", role="reader")))[0] \
        is Refusal.NOT_FOUND
    assert refusal_of(state, C(revoke_permission=pb.RoleRevokePermissionRequest(role="reader", prefix=b"a")))[0] \
        is Refusal.NOT_FOUND
    assert refusal_of(state, add_user("has space"))[0] is Refusal.INVALID
    assert refusal_of(state, add_user("a:b"))[0] is Refusal.INVALID


def test_a_user_may_do_what_its_roles_grant_on_their_prefixes_and_nothing_else() -> None:
    state = run(add_user("alice"), add_role("app"), add_role("audit"),
                grant("app", b"app/", Access.READWRITE), grant("audit", b"logs/", Access.READ),
                give_role("alice", "app"), give_role("alice", "audit"))
    granted = permissions(state, "alice")
    assert granted is not None and not granted.root
    assert granted.allows(Access.READWRITE, b"app/x", b"app/x\x00")
    assert granted.allows(Access.READ, b"app/", b"app0")  # the whole prefix
    assert granted.allows(Access.READ, b"logs/1", b"logs/1\x00")
    assert not granted.allows(Access.READWRITE, b"logs/1", b"logs/1\x00")
    assert not granted.allows(Access.READ, b"other", b"other\x00")
    assert not granted.allows(Access.READ, b"app/", None), "a range past the prefix is not covered"
    assert permissions(state, "nobody") is None


def test_root_may_do_everything_and_a_revoked_or_deleted_role_takes_its_grants_along() -> None:
    state = run(add_user(ROOT), add_user("alice"), add_role("app"), grant("app", b"", Access.READWRITE),
                give_role("alice", "app"))
    root = permissions(state, ROOT)
    assert root is not None and root.root and root.allows(Access.READWRITE, b"", None)
    alice = permissions(state, "alice")
    assert alice is not None and alice.allows(Access.READWRITE, b"", None)  # the empty prefix is every key
    revoked = run(C(revoke_permission=pb.RoleRevokePermissionRequest(role="app", prefix=b"")), state=state)
    assert not permissions(revoked, "alice").allows(Access.READ, b"k", b"k\x00")  # type: ignore[union-attr]
    deleted = run(C(delete_role=pb.RoleDeleteRequest(name="app")), state=state)
    assert deleted.users["alice"].roles == ()


def test_changing_a_password_moves_the_users_revision_which_voids_older_tokens() -> None:
    state = run(add_user("alice", "old"))
    assert state.users["alice"].revision == 1
    changed = run(C(change_password=control_pb2.ChangePassword(name="alice", password_hash="new")), state=state)
    assert changed.users["alice"].revision == 2 and changed.users["alice"].password_hash == "new"
    assert changed.revision == 2


def test_rate_limits_come_from_the_user_else_the_most_generous_role_else_none() -> None:
    def limit(requests: float, size: float) -> pb.RateLimit:
        return pb.RateLimit(requests_per_second=requests, bytes_per_second=size)

    state = run(add_user("alice"), add_role("slow"), add_role("fast"), give_role("alice", "slow"),
                give_role("alice", "fast"))
    assert rate_limit_of(state, "alice") is None
    state = run(C(set_role_rate_limit=pb.RoleSetRateLimitRequest(name="slow", rate_limit=limit(10, 1000))),
                C(set_role_rate_limit=pb.RoleSetRateLimitRequest(name="fast", rate_limit=limit(100, 0))), state=state)
    assert rate_limit_of(state, "alice") == RateLimit(100, 0), "a role without a bytes limit does not limit bytes"
    state = run(C(set_user_rate_limit=pb.UserSetRateLimitRequest(name="alice", rate_limit=limit(5, 50))), state=state)
    assert rate_limit_of(state, "alice") == RateLimit(5, 50)
    assert refusal_of(state, C(set_user_rate_limit=pb.UserSetRateLimitRequest(name="alice", rate_limit=limit(-1, 0))))[0] \
        is Refusal.INVALID


def test_alarms_are_raised_and_cleared_per_member() -> None:
    state = run(C(raise_alarm=pb.Alarm(node_id=2, type=pb.NOSPACE)), C(raise_alarm=pb.Alarm(node_id=3, type=pb.NOSPACE)))
    assert state.alarms == {Alarm(2, AlarmType.NOSPACE), Alarm(3, AlarmType.NOSPACE)}
    state = run(C(clear_alarm=pb.Alarm(node_id=2, type=pb.NOSPACE)), state=state)
    assert state.alarms == {Alarm(3, AlarmType.NOSPACE)}
    assert refusal_of(state, C(raise_alarm=pb.Alarm(node_id=0, type=pb.NOSPACE)))[0] is Refusal.INVALID


def test_the_alarms_of_removed_members_go_with_them() -> None:
    state = run(C(raise_alarm=pb.Alarm(node_id=2, type=pb.NOSPACE)), C(raise_alarm=pb.Alarm(node_id=3, type=pb.NOSPACE)))
    after = without_alarms_of(state, {3, 4}, state.revision + 1)
    assert after.alarms == {Alarm(2, AlarmType.NOSPACE)} and after.revision == state.revision + 1
    assert without_alarms_of(after, {4}, after.revision + 1) is after, "nothing to drop: the same state"


def test_an_unknown_command_is_refused_alike_everywhere() -> None:
    assert refusal_of(ControlState(), C())[0] is Refusal.INVALID


def test_the_stored_record_round_trips_and_is_the_same_bytes_for_the_same_state() -> None:
    state = run(add_user(ROOT), add_user("alice"), add_role("app"), grant("app", b"a/", Access.READ),
                give_role("alice", "app"), ENABLE, C(raise_alarm=pb.Alarm(node_id=1, type=pb.NOSPACE)))
    assert decode_state(encode_state(state)) == state
    assert encode_state(decode_state(encode_state(state))) == encode_state(state)


_SMALL_KEYS = st.lists(st.sampled_from(b"\x00ab\xff"), max_size=3).map(bytes)
# Bytes of the keys above and their neighbours: a byte outside the set compares like one of these.
_ALPHABET = b"\x00\x01`abc\xfe\xff"


@given(st.lists(_SMALL_KEYS, max_size=5), _SMALL_KEYS, _SMALL_KEYS)
def test_a_key_space_covers_a_range_exactly_when_every_key_of_it_has_a_granted_prefix(
        prefixes: list[bytes], start: bytes, end: bytes) -> None:
    """Against brute force over every key of up to 4 bytes: a longer key in the range has its
    first 4 bytes in the range too, and prefixes are shorter than that."""
    keys = [b""]
    frontier = [b""]
    for _ in range(4):
        frontier = [key + bytes([byte]) for key in frontier for byte in _ALPHABET]
        keys += frontier
    in_range = [key for key in keys if start <= key and (not end or key < end)]
    if not in_range:
        return
    expected = all(any(key.startswith(prefix) for prefix in prefixes) for key in in_range)
    assert KeySpace(prefixes).covers(start, end or None) == expected
