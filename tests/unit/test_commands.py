"""Commands: the bytes of a client's RequestOp are the LogCommand the log carries, the applier's
remembered LogResponse mirrors ResponseOp, and `check_command` refuses what the message types
allow but the store does not."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb.internal_pb2 import LogCommand, LogResponse
from kvstore.statemachine import WriteRequest, check_command, txn_keys

UINT64 = st.integers(0, 2**64 - 1)
KEYS = st.binary(min_size=1, max_size=16)
VALUES = st.binary(max_size=64)
headers = st.builds(pb.RequestHeader, client_id=st.text(max_size=12), request_seq=UINT64)
puts = st.builds(
    pb.PutRequest, header=headers, key=KEYS, value=VALUES, lease=UINT64, prev_kv=st.booleans(), fencing_token=UINT64
)
deletes = st.builds(pb.DeleteRequest, header=headers, key=KEYS, prev_kv=st.booleans(), fencing_token=UINT64)
compares = st.builds(
    pb.Compare,
    key=KEYS,
    target=st.sampled_from(pb.Compare.Target.values()),
    result=st.sampled_from(pb.Compare.Result.values()),
    value=VALUES,
    number=UINT64,
)
txn_ops = st.one_of(
    puts.map(lambda put: pb.RequestOp(put=put)),
    deletes.map(lambda delete: pb.RequestOp(delete=delete)),
    KEYS.map(lambda key: pb.RequestOp(get=pb.GetRequest(key=key))),
)
txns = st.builds(
    pb.TxnRequest,
    header=headers,
    compare=st.lists(compares, max_size=3),
    success=st.lists(txn_ops, max_size=3),
    failure=st.lists(txn_ops, max_size=3),
)
write_ops = st.one_of(
    puts.map(lambda put: pb.RequestOp(put=put)),
    deletes.map(lambda delete: pb.RequestOp(delete=delete)),
    txns.map(lambda txn: pb.RequestOp(txn=txn)),
)


@settings(max_examples=300)
@given(write_ops)
def test_the_bytes_of_a_write_request_op_are_a_log_command(op: pb.RequestOp) -> None:
    kind = op.WhichOneof("op")
    command = LogCommand.FromString(op.SerializeToString())
    assert command.WhichOneof("command") == kind
    assert getattr(command, kind) == getattr(op, kind)
    assert command.SerializeToString() == op.SerializeToString()


def test_a_get_request_op_is_no_log_command() -> None:
    command = LogCommand.FromString(pb.RequestOp(get=pb.GetRequest(key=b"k")).SerializeToString())
    assert command.WhichOneof("command") is None


def test_log_messages_share_the_field_numbers_of_the_api_ones() -> None:
    """Below 16 a log message's fields are the API's own; from 16 up (leases, locks) they are
    the log's only, so no RequestOp's bytes can be taken for one of them."""
    request_op, response_op = pb.RequestOp.DESCRIPTOR, pb.ResponseOp.DESCRIPTOR
    for log_message, api_message in ((LogCommand.DESCRIPTOR, request_op), (LogResponse.DESCRIPTOR, response_op)):
        for field in log_message.fields:
            if field.number < 16:
                assert api_message.fields_by_number[field.number].message_type is field.message_type
            else:
                assert field.number not in api_message.fields_by_number


def test_equal_commands_encode_to_equal_bytes() -> None:
    # The encoding is what replicas store and compare; it must not depend on object identity.
    def make() -> bytes:
        header = pb.RequestHeader(client_id="client", request_seq=3)
        return pb.RequestOp(put=pb.PutRequest(header=header, key=b"k", value=b"v", lease=2, fencing_token=9)).SerializeToString()

    assert make() == make()


def test_a_put_costs_few_bytes_beyond_key_and_value() -> None:
    key, value = b"user:1234", bytes(100)
    header = pb.RequestHeader(client_id="client-0001", request_seq=42)
    encoded = pb.RequestOp(put=pb.PutRequest(header=header, key=key, value=value)).SerializeToString()
    assert len(encoded) - len(key) - len(value) - len("client-0001") <= 16


def test_number_ranges_are_the_message_types_business() -> None:
    # Every number of a command is a uint64 field: no check of its own is needed.
    with pytest.raises(ValueError):
        pb.PutRequest(lease=-1)
    with pytest.raises(ValueError):
        pb.RequestHeader(request_seq=2**64)
    with pytest.raises(ValueError):
        pb.Compare(number=-1)


def txn(*ops: pb.RequestOp, compare: tuple[pb.Compare, ...] = ()) -> pb.TxnRequest:
    return pb.TxnRequest(compare=compare, success=ops)


@pytest.mark.parametrize(
    "request_",
    [
        pb.PutRequest(key=b"", value=b"v"),
        pb.DeleteRequest(key=b""),
        pb.PutRequest(header=pb.RequestHeader(request_seq=1), key=b"k"),  # a seq without a client id
        # A write cannot have stopped awaiting its own answer.
        pb.PutRequest(header=pb.RequestHeader(client_id="c", request_seq=4, lowest_pending_seq=5), key=b"k"),
        txn(compare=(pb.Compare(key=b""),)),
        txn(compare=(pb.Compare(key=b"k", target=9),)),  # type: ignore[arg-type]
        txn(compare=(pb.Compare(key=b"k", result=9),)),  # type: ignore[arg-type]
        txn(pb.RequestOp(txn=txn())),
        txn(pb.RequestOp()),
        txn(pb.RequestOp(put=pb.PutRequest(key=b""))),
        pb.TxnRequest(failure=[pb.RequestOp(get=pb.GetRequest(key=b""))]),
    ],
)
def test_check_command_refuses_bad_shapes(request_: WriteRequest) -> None:
    assert check_command(request_) is not None


@pytest.mark.parametrize(
    "request_",
    [
        pb.PutRequest(key=b"k"),
        pb.PutRequest(header=pb.RequestHeader(client_id="c", request_seq=5, lowest_pending_seq=5), key=b"k"),
        pb.DeleteRequest(header=pb.RequestHeader(client_id="c", request_seq=2**64 - 1), key=b"k", fencing_token=2**64 - 1),
        txn(pb.RequestOp(get=pb.GetRequest(key=b"k")), compare=(pb.Compare(key=b"k"),)),
        txn(),  # empty, but well formed: the RPC layer refuses it, having no partition to send it to
    ],
)
def test_check_command_accepts_good_shapes(request_: WriteRequest) -> None:
    assert check_command(request_) is None


def test_txn_keys_are_every_key_of_compares_and_branches() -> None:
    request = pb.TxnRequest(
        compare=[pb.Compare(key=b"c")],
        success=[pb.RequestOp(put=pb.PutRequest(key=b"p")), pb.RequestOp(get=pb.GetRequest(key=b"g"))],
        failure=[pb.RequestOp(delete=pb.DeleteRequest(key=b"d"))],
    )
    assert txn_keys(request) == [b"c", b"p", b"g", b"d"]
