"""Sequential specifications the checker linearizes against.

A model is a small immutable object: ``init(initial)`` gives the first state and
``step(state, op)`` the state after ``op`` or None when ``op`` cannot happen in ``state``. States
are hashable (the checker memoises on them) and never None, so None can mean "illegal".
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar, Protocol, cast

from kvstore.jepsen.history import EventType, Operation, Value, render_value

State = Hashable


class Absent(Enum):
    """The state of a register that holds nothing (read as null)."""

    ABSENT = "absent"


class Free(Enum):
    """The state of a mutex nobody holds."""

    FREE = "free"


class Model(Protocol):
    name: ClassVar[str]
    # Functions whose outcome-unknown operations the checker may drop: they never change the state.
    read_only_functions: ClassVar[frozenset[str]]

    def init(self, initial: Value) -> State:
        """The state before any operation; ValueError when ``initial`` makes no sense for the model."""
        ...

    def step(self, state: State, op: Operation) -> State | None: ...

    def invalid_operation(self, op: Operation) -> str | None:
        """Why ``op`` cannot be checked with this model, or None when it can."""
        ...

    def describe_state(self, state: State) -> str: ...


def _register_state(value: Value) -> State:
    return Absent.ABSENT if value is None else value


def _describe_register(state: State) -> str:
    return "null" if state is Absent.ABSENT else render_value(state)


def _unknown_function(op: Operation, functions: tuple[str, ...], model: str) -> str | None:
    if op.f in functions:
        return None
    return f"operation {op.f!r} is not part of the {model} model (expected {', '.join(functions)})"


@dataclass(frozen=True, slots=True)
class RegisterModel:
    """A read/write register; a read of null means the register is empty."""

    name: ClassVar[str] = "register"
    read_only_functions: ClassVar[frozenset[str]] = frozenset({"read"})

    def init(self, initial: Value) -> State:
        return _register_state(initial)

    def step(self, state: State, op: Operation) -> State | None:
        if op.f == "read":
            return state if _register_state(op.result) == state else None
        return _register_state(op.argument)

    def invalid_operation(self, op: Operation) -> str | None:
        return _unknown_function(op, ("read", "write"), self.name)

    def describe_state(self, state: State) -> str:
        return _describe_register(state)


@dataclass(frozen=True, slots=True)
class CasRegisterModel:
    """A register with compare-and-set. Clients report a cas whose expected value differed as
    ``fail``, so an ``ok`` cas must have found its expected value."""

    name: ClassVar[str] = "cas-register"
    read_only_functions: ClassVar[frozenset[str]] = frozenset({"read"})

    def init(self, initial: Value) -> State:
        return _register_state(initial)

    def step(self, state: State, op: Operation) -> State | None:
        f = op.f
        if f == "read":
            return state if _register_state(op.result) == state else None
        if f == "write":
            return _register_state(op.argument)
        expected, new = cast(tuple[Value, Value], op.argument)  # shape checked by invalid_operation
        return _register_state(new) if _register_state(expected) == state else None

    def invalid_operation(self, op: Operation) -> str | None:
        problem = _unknown_function(op, ("read", "write", "cas"), self.name)
        if (
            problem is None
            and op.f == "cas"
            and not (isinstance(op.argument, tuple) and len(op.argument) == 2)
        ):
            problem = f"cas value must be [expected, new], got {render_value(op.argument)}"
        return problem

    def describe_state(self, state: State) -> str:
        return _describe_register(state)


@dataclass(frozen=True, slots=True)
class SetModel:
    """A grow-only set: ``add`` one element, ``read`` the whole set as a list (null = empty)."""

    name: ClassVar[str] = "set"
    read_only_functions: ClassVar[frozenset[str]] = frozenset({"read"})

    def init(self, initial: Value) -> State:
        if initial is None:
            return frozenset()
        if not isinstance(initial, tuple | frozenset):
            raise ValueError(f"the initial value of a set must be a list, got {render_value(initial)}")
        return frozenset(initial)

    def step(self, state: State, op: Operation) -> State | None:
        elements: frozenset[Value] = state  # type: ignore[assignment]
        if op.f == "add":
            return elements if op.argument in elements else elements | {op.argument}
        read = op.result
        return state if (frozenset() if read is None else frozenset(cast(Iterable[Value], read))) == elements else None

    def invalid_operation(self, op: Operation) -> str | None:
        problem = _unknown_function(op, ("add", "read"), self.name)
        if (
            problem is None
            and op.f == "read"
            and op.outcome is EventType.OK
            and not (op.result is None or isinstance(op.result, tuple | frozenset))
        ):
            problem = f"a set read must return a list, got {render_value(op.result)}"
        return problem

    def describe_state(self, state: State) -> str:
        return render_value(state)


@dataclass(frozen=True, slots=True)
class MutexModel:
    """A lock: ``acquire`` succeeds only when free, ``release`` only by the process holding it."""

    name: ClassVar[str] = "mutex"
    read_only_functions: ClassVar[frozenset[str]] = frozenset()

    def init(self, initial: Value) -> State:
        if initial is None:
            return Free.FREE
        if isinstance(initial, bool) or not isinstance(initial, int):
            raise ValueError(
                f"the initial value of a mutex is null (free) or the holding process, got {initial!r}"
            )
        return initial

    def step(self, state: State, op: Operation) -> State | None:
        if op.f == "acquire":
            return op.process if state is Free.FREE else None
        return Free.FREE if state == op.process else None

    def invalid_operation(self, op: Operation) -> str | None:
        return _unknown_function(op, ("acquire", "release"), self.name)

    def describe_state(self, state: State) -> str:
        return "free" if state is Free.FREE else f"held by process {state}"


MODEL_NAMES: tuple[str, ...] = (RegisterModel.name, CasRegisterModel.name, SetModel.name, MutexModel.name)


def model_named(name: str) -> Model:
    """The model called ``name`` (one of MODEL_NAMES); ValueError otherwise."""
    for model_type in (RegisterModel, CasRegisterModel, SetModel, MutexModel):
        if model_type.name == name:
            return model_type()
    raise ValueError(f"unknown model {name!r} (expected one of {', '.join(MODEL_NAMES)})")
