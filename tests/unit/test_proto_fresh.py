"""The generated modules in kvstore/_pb must match a fresh compile of proto/ (run `make proto`)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from kvstore._pb import generate


@pytest.mark.parametrize("proto", generate.proto_files(), ids=lambda p: p.name)
def test_generated_code_matches_proto(proto: Path, tmp_path: Path) -> None:
    out = tmp_path / "set.pb"
    generate.protoc([f"--descriptor_set_out={out}", str(proto)])
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    _drop_json_names(fresh.message_type)

    module = importlib.import_module(f"kvstore._pb.{proto.stem}_pb2")
    committed = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)

    assert committed == fresh, f"kvstore/_pb/{proto.stem}_pb2.py is stale: run `make proto`"


def test_every_proto_has_generated_modules() -> None:
    pb_dir = Path(generate.__file__).parent
    for proto in generate.proto_files():
        assert (pb_dir / f"{proto.stem}_pb2.py").exists(), f"run `make proto` for {proto.name}"
        assert (pb_dir / f"{proto.stem}_pb2_grpc.py").exists(), f"run `make proto` for {proto.name}"


def _drop_json_names(messages) -> None:
    """protoc fills json_name in descriptor sets but not in generated modules; it is derived data."""
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _drop_json_names(message.nested_type)
