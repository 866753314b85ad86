"""Commands and results: codec round-trips, refusal of malformed bytes, shape checks."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore._pb import kvstore_pb2
from kvstore.statemachine import (
    CodecError,
    Command,
    Compare,
    CompareResult,
    CompareTarget,
    Delete,
    DeleteResult,
    ErrorCode,
    ErrorResult,
    Get,
    GetResult,
    KeyValue,
    Put,
    PutResult,
    Result,
    Txn,
    TxnResult,
    check_command,
    decode_command,
    decode_result,
    encode_command,
    encode_result,
)
from kvstore.statemachine.commands import check_command_parts, decode_command_parts

UINT64 = st.integers(0, 2**64 - 1)
KEYS = st.binary(min_size=1, max_size=16)
VALUES = st.binary(max_size=64)

puts = st.builds(Put, KEYS, VALUES, UINT64, st.booleans(), UINT64)
deletes = st.builds(Delete, KEYS, st.booleans(), UINT64)
gets = st.builds(Get, KEYS)
compares = st.builds(
    Compare, KEYS, st.sampled_from(CompareTarget), st.sampled_from(CompareResult), VALUES, UINT64
)
txn_ops = st.one_of(puts, deletes, gets)
txns = st.builds(
    Txn,
    st.lists(compares, max_size=3).map(tuple),
    st.lists(txn_ops, max_size=3).map(tuple),
    st.lists(txn_ops, max_size=3).map(tuple),
)
commands = st.builds(Command, st.text(max_size=12), UINT64, st.one_of(puts, deletes, txns))

key_values = st.builds(KeyValue, KEYS, VALUES, UINT64, UINT64, UINT64, UINT64)
maybe_kv = st.none() | key_values
op_results = st.one_of(
    st.builds(PutResult, UINT64, maybe_kv),
    st.builds(DeleteResult, UINT64, st.booleans(), maybe_kv),
    st.builds(GetResult, maybe_kv),
)
results = st.one_of(
    op_results,
    st.builds(TxnResult, UINT64, st.booleans(), st.lists(op_results, max_size=3).map(tuple)),
    st.builds(ErrorResult, st.sampled_from(ErrorCode), st.text(max_size=20)),
)


@settings(max_examples=300)
@given(commands)
def test_every_command_round_trips(command: Command) -> None:
    raw = encode_command(command)
    assert decode_command(raw) == command
    assert decode_command_parts(raw) == (command.client_id, command.seq, command.op)


@settings(max_examples=300)
@given(results)
def test_every_result_round_trips(result: Result) -> None:
    encoded = encode_result(result)
    assert decode_result(encoded) == result
    assert encode_result(result, msgpack.Packer()) == encoded


def test_decoded_enums_are_enum_members() -> None:
    command = Command(
        "c", 1, Txn((Compare(b"k", CompareTarget.VERSION, CompareResult.LESS, number=3),), (), ())
    )
    decoded = decode_command(encode_command(command))
    assert isinstance(decoded.op, Txn)
    compare = decoded.op.compares[0]
    assert compare.target is CompareTarget.VERSION
    assert compare.result is CompareResult.LESS


def test_equal_commands_encode_to_equal_bytes() -> None:
    # The encoding is what replicas store and compare; it must not depend on object identity.
    first = Command("client", 3, Put(b"k", b"v", lease=2, prev_kv=True, fencing_token=9))
    second = Command("client", 3, Put(b"k", b"v", lease=2, prev_kv=True, fencing_token=9))
    assert encode_command(first) == encode_command(second)


def test_a_put_costs_few_bytes_beyond_key_and_value() -> None:
    key, value = b"user:1234", bytes(100)
    encoded = encode_command(Command("client-0001", 42, Put(key, value)))
    assert len(encoded) - len(key) - len(value) - len("client-0001") <= 16


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xc1",  # never used by msgpack
        msgpack.packb(7),
        msgpack.packb(("c", 1)),
        msgpack.packb(("c", 1, (9, b"k"))),  # unknown op tag
        msgpack.packb(("c", 1, (1, "k", b"v", 0, False, 0))),  # key not bytes
        msgpack.packb(("c", 1, (1, b"k", b"v", 0, 0, 0))),  # prev_kv not a bool
        msgpack.packb(("c", 1, (1, b"k", b"v", 0, False))),  # a field short
        msgpack.packb((1, 1, (3, b"k"))),  # client id not a string
        msgpack.packb(("c", 1, (4, [(b"k", 9, 0, b"", 0)], [], []))),  # unknown compare target
        msgpack.packb(("c", 1, (4, [(b"k", 0, 9, b"", 0)], [], []))),  # unknown compare result
        msgpack.packb(("c", 1, (3, b"k"))) + b"\x00",  # trailing bytes
    ],
)
def test_malformed_commands_raise_codec_error(raw: bytes) -> None:
    with pytest.raises(CodecError):
        decode_command(raw)
    with pytest.raises(CodecError):
        decode_command_parts(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        msgpack.packb((9, 1)),
        msgpack.packb((5, 1, "message")),  # code not a string
        msgpack.packb((4, 1, True, [(5, "INVALID_ARGUMENT", "x")])),  # an error inside a txn result
        msgpack.packb((1, 1, ("k", b"v", 1, 1, 1, 0))),  # kv key not bytes
    ],
)
def test_malformed_results_raise_codec_error(raw: bytes) -> None:
    with pytest.raises(CodecError):
        decode_result(raw)


def test_error_codes_are_proto_error_code_names() -> None:
    proto_names = set(kvstore_pb2.ErrorCode.keys())
    assert {code.value for code in ErrorCode} <= proto_names


@pytest.mark.parametrize(
    "command",
    [
        Command("c", 1, Put(b"", b"v")),
        Command("c", 1, Delete(b"")),
        Command("c", 1, Get(b"k")),
        Command("c", -1, Put(b"k", b"v")),
        Command("", 1, Put(b"k", b"v")),
        Command("c", 1, Put(b"k", b"v", fencing_token=-1)),
        Command("c", 1, Put(b"k", b"v", lease=2**64)),
        Command("c", 1, Txn((Compare(b"", CompareTarget.VALUE, CompareResult.EQUAL),), (), ())),
        Command("c", 1, Txn((Compare(b"k", CompareTarget.VERSION, CompareResult.EQUAL, number=-1),), (), ())),
        Command("c", 1, Txn((), (Txn((), (), ()),), ())),  # type: ignore[arg-type]
        Command("c", 1, Txn((), (), (Put(b"", b"v"),))),
    ],
)
def test_check_command_refuses_bad_shapes(command: Command) -> None:
    problem = check_command(command)
    assert problem is not None
    assert problem.code == ErrorCode.INVALID_ARGUMENT
    assert check_command_parts(command.client_id, command.seq, command.op) == problem


@pytest.mark.parametrize(
    "command",
    [
        Command("", 0, Put(b"k", b"")),
        Command("c", 2**64 - 1, Delete(b"k", fencing_token=2**64 - 1)),
        Command("c", 1, Txn((Compare(b"k", CompareTarget.VALUE, CompareResult.EQUAL),), (Get(b"k"),), ())),
    ],
)
def test_check_command_accepts_good_shapes(command: Command) -> None:
    assert check_command(command) is None
    assert check_command_parts(command.client_id, command.seq, command.op) is None
