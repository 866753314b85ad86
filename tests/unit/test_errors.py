"""The one error table: every code has a row, the proto and the enum agree, and the lookups each
layer makes (client, kvctl, gRPC status) come back to the code they started from."""

from __future__ import annotations

import grpc
import pytest

from kvstore._pb import kvstore_pb2 as pb
from kvstore.errors import (
    ERRORS,
    ErrorCode,
    ExitCode,
    KvError,
    NotLeaderError,
    TransportSecurityError,
    code_for_status,
    error_code,
    exception_for,
)


def test_the_enum_and_the_proto_enum_agree() -> None:
    assert {code.name: code.value for code in ErrorCode} == dict(pb.ErrorCode.items())


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda code: code.name)
def test_every_code_has_one_row_and_its_exception_carries_it(code: ErrorCode) -> None:
    kind = ERRORS[code]
    raised = exception_for(code, "message")
    assert type(raised) is kind.exception
    assert raised.code is code and raised.message == "message"
    assert kind.exit_code in ExitCode
    if kind.grpc_status is not None:
        assert code_for_status(kind.grpc_status) is code


def test_every_exception_class_defaults_to_a_code_whose_row_names_it() -> None:
    classes = {kind.exception for kind in ERRORS.values()}
    for cls in classes:
        assert ERRORS[cls.default_code].exception is cls


def test_a_code_newer_than_the_client_is_internal_and_says_so() -> None:
    assert error_code(999) is ErrorCode.INTERNAL
    raised = exception_for(999, "something new")
    assert type(raised) is KvError and raised.code is ErrorCode.INTERNAL
    assert raised.message == "something new (unknown error code 999)"


def test_a_status_no_code_travels_as_is_internal() -> None:
    assert code_for_status(grpc.StatusCode.UNIMPLEMENTED) is ErrorCode.INTERNAL


@pytest.mark.parametrize(
    ("code", "exit_code", "retryable", "may_be_applied"),
    [
        (ErrorCode.NOT_FOUND, ExitCode.NOT_FOUND, False, False),
        (ErrorCode.INVALID_ARGUMENT, ExitCode.USAGE, False, False),
        (ErrorCode.CROSS_PARTITION, ExitCode.USAGE, False, False),
        (ErrorCode.STALE_FENCING_TOKEN, ExitCode.USAGE, False, False),
        (ErrorCode.NOT_LEADER, ExitCode.UNAVAILABLE, True, True),
        (ErrorCode.UNAVAILABLE, ExitCode.UNAVAILABLE, True, True),
        (ErrorCode.TIMEOUT, ExitCode.UNAVAILABLE, True, True),
        (ErrorCode.PERMISSION_DENIED, ExitCode.USAGE, False, False),
        (ErrorCode.UNAUTHENTICATED, ExitCode.USAGE, False, False),
        (ErrorCode.RESOURCE_EXHAUSTED, ExitCode.UNAVAILABLE, True, False),
        (ErrorCode.NO_SPACE, ExitCode.USAGE, False, False),
    ],
)
def test_what_users_rely_on(code: ErrorCode, exit_code: ExitCode, retryable: bool, may_be_applied: bool) -> None:
    """kvctl's fixed exit codes, and which failures leave a write's outcome open."""
    kind = ERRORS[code]
    assert (kind.exit_code, kind.retryable, kind.may_be_applied) == (exit_code, retryable, may_be_applied)


def test_not_leader_carries_its_hint() -> None:
    assert NotLeaderError("elsewhere", leader_hint=3).leader_hint == 3


def test_a_tls_mismatch_is_refused_for_good_with_exit_code_2() -> None:
    """The client raises it on its own; its row is INVALID_ARGUMENT's: not retried, kvctl exits 2."""
    error = TransportSecurityError("node requires TLS")
    kind = ERRORS[error.code]
    assert error.code is ErrorCode.INVALID_ARGUMENT
    assert (kind.exit_code, kind.retryable) == (ExitCode.USAGE, False)
