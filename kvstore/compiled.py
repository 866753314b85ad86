"""Which of kvstore's modules run compiled, and running them from their source instead.

`setup.py` compiles a few pure modules with mypyc when the project is installed. An editable
install leaves each extension (`raft.cpython-311-x86_64-linux-gnu.so`) beside its source
(`raft.py`), and Python's import system prefers the extension. `use_source_when_asked()`, run by
`kvstore/__init__.py` before any other kvstore module is imported, puts a `SourceFinder` first
on `sys.meta_path` so that every compiled module is loaded from its `.py` instead when

* `KVSTORE_PURE_PYTHON=1` is set (the same code, interpreted: for debugging, profiling with
  Python tools, and the pure-Python run of the simulation in `make test`), or
* in a source checkout (setup.py beside the package), a source is newer than its extension,
  i.e. it was edited since the last install: the edit runs (with a warning to reinstall), never
  the stale compiled code. An installed wheel is left alone: pip writes each `.py` after its
  extension, and nobody edits those.

It is all or nothing: compiled modules reach each other's native classes directly, so one
interpreted module among them would not interoperate with the rest.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

PURE_PYTHON_VARIABLE = "KVSTORE_PURE_PYTHON"
PACKAGE_DIR = Path(__file__).parent


def pure_python_requested(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get(PURE_PYTHON_VARIABLE, "") not in ("", "0")


def compiled_sources(package_dir: Path = PACKAGE_DIR) -> dict[Path, Path]:
    """Each `.py` under `package_dir` that has a compiled extension beside it -> that extension."""
    found: dict[Path, Path] = {}
    for directory, _, files in os.walk(package_dir):
        for name in files:
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                if name.endswith(suffix):
                    source = Path(directory, name.removesuffix(suffix) + ".py")
                    if source.exists():
                        found[source] = Path(directory, name)
    return found


def is_compiled(module: ModuleType) -> bool:
    return module.__spec__ is not None and isinstance(
        module.__spec__.loader, importlib.machinery.ExtensionFileLoader
    )


class SourceFinder:
    """A meta path finder: finds the `.py` source of the modules in `sources` (absolute paths)
    ahead of their compiled extensions; every other module is left to the finders after it."""

    def __init__(self, sources: Sequence[Path]) -> None:
        self._sources = frozenset(str(source) for source in sources)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if path is None:
            return None  # a top-level module: never one of ours
        name = fullname.rpartition(".")[2] + ".py"
        for directory in path:
            source = os.path.join(directory, name)
            if source in self._sources:
                return importlib.util.spec_from_file_location(fullname, source)
        return None


def sources_to_interpret(
    package_dir: Path = PACKAGE_DIR, environ: Mapping[str, str] = os.environ
) -> list[Path]:
    """The compiled modules' sources to load instead of their extensions: every one when pure
    Python is asked for or when, in a source checkout, one of them is newer than its extension
    (with a warning); else none."""
    sources = compiled_sources(package_dir)
    if not sources or pure_python_requested(environ):
        return sorted(sources)
    if not (package_dir.parent / "setup.py").exists():
        return []
    stale = sorted(source for source, extension in sources.items()
                   if source.stat().st_mtime > extension.stat().st_mtime)
    if not stale:
        return []
    warnings.warn(
        f"{stale[0].relative_to(package_dir.parent)} changed since it was compiled: kvstore runs "
        "its pure-Python source; run `make install` to compile it again",
        RuntimeWarning,
        stacklevel=3,
    )
    return sorted(sources)


def use_source_when_asked() -> None:
    """Put a `SourceFinder` first on `sys.meta_path` if `sources_to_interpret()` names any."""
    sources = sources_to_interpret()
    if sources:
        sys.meta_path.insert(0, SourceFinder(sources))
