"""The records whose `__init__` is written out (so that mypyc compiles it) still behave as the
frozen dataclasses they declare: every field taken by its name, set, defaulted as declared, and
immutable. A field added to the class but not to its `__init__` fails here."""

from __future__ import annotations

import dataclasses

import pytest

from kvstore.raft.types import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)
from kvstore.statemachine.events import Change, ChangeKind

ENTRY = Entry(7, 3, b"data", EntryType.CONF_CHANGE)
META = SnapshotMeta(9, 2, ConfState(frozenset({1, 2}), frozenset({3})))

# One instance of each such record, every field away from its default.
SAMPLES = [
    ENTRY,
    HardState(4, 2, 6),
    META,
    Message(MessageType.APPEND, 2, 1, 5, 4, 6, (ENTRY,), 6, True, 3, Snapshot(META, b"s"), 8, True),
    Ready(SoftState(1, Role.LEADER), HardState(1, 1, 1), (ENTRY,), Snapshot(META, b"s"), (ENTRY,),
          (Message(MessageType.HEARTBEAT, 2, 1),), (ReadState(5, 1),), True),
    Change(4, ChangeKind.DELETE, b"key", 11, None, b"before"),
]


@pytest.mark.parametrize("record", SAMPLES, ids=lambda record: type(record).__name__)
def test_init_takes_and_sets_every_field_by_name(record: object) -> None:
    fields = dataclasses.fields(record)  # type: ignore[arg-type]
    by_name = {field.name: getattr(record, field.name) for field in fields}
    assert type(record)(**by_name) == record
    assert dataclasses.replace(record) == record  # type: ignore[type-var]
    assert dataclasses.astuple(record)  # type: ignore[call-overload]


@pytest.mark.parametrize("record", SAMPLES, ids=lambda record: type(record).__name__)
def test_omitted_fields_take_their_declared_defaults(record: object) -> None:
    fields = dataclasses.fields(record)  # type: ignore[arg-type]
    required = {
        field.name: getattr(record, field.name)
        for field in fields
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    }
    built = type(record)(**required)
    for field in fields:
        if field.name in required:
            continue
        declared = field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[operator]
        assert getattr(built, field.name) == declared, field.name


@pytest.mark.parametrize("record", SAMPLES, ids=lambda record: type(record).__name__)
def test_fields_stay_immutable(record: object) -> None:
    first = dataclasses.fields(record)[0].name  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(record, first, getattr(record, first))
