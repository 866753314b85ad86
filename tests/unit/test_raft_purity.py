"""The Raft core stays a pure state machine: no I/O, no clock, no global randomness, no
module-level mutable state. Checked statically on the source of every module of kvstore.raft."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import kvstore.raft

RAFT_DIR = Path(kvstore.raft.__file__).parent
ALLOWED_MODULES = frozenset(
    {
        "__future__",
        "bisect",
        "collections",
        "collections.abc",
        "dataclasses",
        "enum",
        "functools",
        "itertools",
        "random",
        "struct",
        "typing",
    }
)
FORBIDDEN_EXAMPLES = ("asyncio", "grpc", "plyvel", "time", "socket", "threading", "os", "logging")
# From `random` only the generator class may be used: every draw must come from the injected,
# seeded instance, never from the module's hidden global generator.
ALLOWED_RANDOM_NAMES = frozenset({"Random"})
MUTABLE_FACTORIES = frozenset({"list", "dict", "set", "bytearray", "deque", "defaultdict", "OrderedDict", "Counter"})
# `__all__` is a module-level list by convention, read by the import system, never mutated.
EXEMPT_NAMES = frozenset({"__all__"})


def _is_allowed_module(name: str) -> bool:
    return name in ALLOWED_MODULES or name == "kvstore.raft" or name.startswith("kvstore.raft.")


def _is_mutable_value(value: ast.expr) -> bool:
    if isinstance(value, ast.List | ast.Dict | ast.Set | ast.ListComp | ast.DictComp | ast.SetComp):
        return True
    if isinstance(value, ast.Call):
        func = value.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        return name in MUTABLE_FACTORIES
    return False


def _assigned_names(node: ast.Assign | ast.AnnAssign | ast.AugAssign) -> list[str]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return [t.id for t in targets if isinstance(t, ast.Name)]


def purity_violations(source: str) -> list[str]:
    """What makes `source` impure, one line per finding (empty when pure)."""
    tree = ast.parse(source)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not _is_allowed_module(alias.name):
                    found.append(f"line {node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = ("." * node.level) + (node.module or "")
            if node.level == 0 and not _is_allowed_module(module):
                found.append(f"line {node.lineno}: from {module} import ...")
            if module == "random":
                for alias in node.names:
                    if alias.name not in ALLOWED_RANDOM_NAMES:
                        found.append(f"line {node.lineno}: from random import {alias.name}")
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "random"
            and node.attr not in ALLOWED_RANDOM_NAMES
        ):
            found.append(f"line {node.lineno}: random.{node.attr} (the global generator)")
    for statement in tree.body:
        if isinstance(statement, ast.Assign | ast.AnnAssign | ast.AugAssign) and statement.value is not None:
            names = [n for n in _assigned_names(statement) if n not in EXEMPT_NAMES]
            if names and _is_mutable_value(statement.value):
                found.append(f"line {statement.lineno}: module-level mutable {', '.join(names)}")
    return found


RAFT_MODULES = sorted(RAFT_DIR.rglob("*.py"))


def test_the_raft_package_has_modules() -> None:
    assert {p.name for p in RAFT_MODULES} >= {"raft.py", "rawnode.py", "log.py", "progress.py", "types.py"}


@pytest.mark.parametrize("path", RAFT_MODULES, ids=lambda p: p.name)
def test_raft_module_is_pure(path: Path) -> None:
    assert purity_violations(path.read_text()) == []


@pytest.mark.parametrize("module", FORBIDDEN_EXAMPLES)
def test_checker_rejects_io_and_clock_imports(module: str) -> None:
    assert purity_violations(f"import {module}\n")
    assert purity_violations(f"from {module} import something\n")


@pytest.mark.parametrize(
    "source",
    [
        "import random\nx = random.random()\n",
        "import random\ndef f():\n    return random.randint(1, 6)\n",
        "import random\ndef f(xs):\n    return random.choice(xs)\n",
        "import random\nrandom.seed(1)\n",
        "from random import randrange\n",
    ],
)
def test_checker_rejects_the_global_random_generator(source: str) -> None:
    assert purity_violations(source)


def test_checker_accepts_an_injected_generator() -> None:
    source = "import random\ndef f(rng: random.Random) -> int:\n    return rng.randrange(10)\n"
    assert purity_violations(source) == []


@pytest.mark.parametrize(
    "source",
    ["CACHE = {}\n", "SEEN = set()\n", "QUEUE: list[int] = []\n", "ITEMS = [x for x in range(3)]\n"],
)
def test_checker_rejects_module_level_mutable_state(source: str) -> None:
    assert purity_violations(source)


def test_checker_accepts_immutable_module_constants() -> None:
    source = "LIMIT = 10\nNAMES = frozenset({'a'})\nPAIR = (1, 2)\n__all__ = ['LIMIT']\n"
    assert purity_violations(source) == []
