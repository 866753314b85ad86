"""The mypyc build: the install compiles the modules setup.py lists, they are the ones imported,
and KVSTORE_PURE_PYTHON=1 (or an edit since the install) runs their source instead."""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kvstore
from kvstore.compiled import (
    PURE_PYTHON_VARIABLE,
    SourceFinder,
    compiled_sources,
    is_compiled,
    pure_python_requested,
    sources_to_interpret,
)

PROJECT_DIR = Path(kvstore.__file__).parent.parent
EXTENSION = importlib.machinery.EXTENSION_SUFFIXES[0]


def modules_listed_in_setup_py() -> list[str]:
    tree = ast.parse((PROJECT_DIR / "setup.py").read_text())
    listed = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and [target.id for target in node.targets if isinstance(target, ast.Name)] == ["COMPILED_MODULES"]
    )
    assert isinstance(listed, ast.List)
    return [str(ast.literal_eval(item)).removesuffix(".py").replace("/", ".") for item in listed.elts]


def test_every_module_setup_py_lists_is_imported_compiled() -> None:
    names = modules_listed_in_setup_py()
    assert "kvstore.raft.raft" in names
    assert {PROJECT_DIR / (name.replace(".", "/") + ".py") for name in names} == set(compiled_sources())
    compiled = {name: is_compiled(importlib.import_module(name)) for name in names}
    # This process runs whichever way make test asked for; each way is all or nothing.
    assert compiled == dict.fromkeys(names, not pure_python_requested())


def test_pure_python_variable_runs_the_source() -> None:
    script = (
        "import sys, kvstore.raft.raft as raft, kvstore.storage.keys as keys;"
        "print(raft.__file__, keys.__file__, 'kvstore_compiled__mypyc' in sys.modules)"
    )
    environ = {**os.environ, PURE_PYTHON_VARIABLE: "1"}
    output = subprocess.run(
        [sys.executable, "-c", script], env=environ, capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert output == [
        str(PROJECT_DIR / "kvstore/raft/raft.py"),
        str(PROJECT_DIR / "kvstore/storage/keys.py"),
        "False",
    ]


def make_module(package: Path, name: str, extension_is_newer: bool) -> Path:
    """`name.py` and a stand-in for its compiled extension, the newer of the two as asked, in a
    source checkout (a setup.py beside the package)."""
    package.mkdir(exist_ok=True)
    (package.parent / "setup.py").touch()
    source, extension = package / f"{name}.py", package / f"{name}{EXTENSION}"
    source.write_text("WHERE = 'source'\n")
    extension.write_bytes(b"not really a shared library")
    older, newer = (source, extension) if extension_is_newer else (extension, source)
    os.utime(older, (1_000_000, 1_000_000))
    os.utime(newer, (2_000_000, 2_000_000))
    return source


def test_fresh_extensions_are_used(tmp_path: Path) -> None:
    make_module(tmp_path / "pkg", "a", extension_is_newer=True)
    make_module(tmp_path / "pkg", "b", extension_is_newer=True)
    (tmp_path / "pkg" / "plain.py").write_text("")
    assert sources_to_interpret(tmp_path / "pkg", environ={}) == []


def test_pure_python_variable_interprets_every_compiled_module(tmp_path: Path) -> None:
    a = make_module(tmp_path / "pkg", "a", extension_is_newer=True)
    b = make_module(tmp_path / "pkg", "b", extension_is_newer=True)
    assert sources_to_interpret(tmp_path / "pkg", environ={PURE_PYTHON_VARIABLE: "1"}) == [a, b]
    assert sources_to_interpret(tmp_path / "pkg", environ={PURE_PYTHON_VARIABLE: "0"}) == []


def test_one_edited_source_interprets_every_compiled_module_with_a_warning(tmp_path: Path) -> None:
    a = make_module(tmp_path / "pkg", "a", extension_is_newer=True)
    b = make_module(tmp_path / "pkg", "b", extension_is_newer=False)
    with pytest.warns(RuntimeWarning, match=r"pkg/b\.py changed since it was compiled.*make install"):
        assert sources_to_interpret(tmp_path / "pkg", environ={}) == [a, b]


def test_an_installed_wheel_uses_its_extensions_whatever_their_times(tmp_path: Path) -> None:
    make_module(tmp_path / "pkg", "a", extension_is_newer=False)
    (tmp_path / "setup.py").unlink()
    assert sources_to_interpret(tmp_path / "pkg", environ={}) == []


def test_source_finder_loads_only_the_sources_it_was_given(tmp_path: Path) -> None:
    a = make_module(tmp_path / "pkg", "a", extension_is_newer=True)
    finder = SourceFinder([a])
    spec = finder.find_spec("pkg.a", [str(tmp_path / "pkg")])
    assert spec is not None and spec.origin == str(a)
    assert finder.find_spec("pkg.other", [str(tmp_path / "pkg")]) is None
    assert finder.find_spec("a", None) is None
