"""Compiles kvstore's pure hot modules with mypyc when the project is installed.

Everything else about the project is in pyproject.toml. The modules below stay plain typed
Python: `KVSTORE_PURE_PYTHON=1` runs their source instead of the compiled extensions (see
`kvstore/__init__.py`), and docs/architecture.md says what compiling them buys.
"""

from mypyc.build import mypycify
from setuptools import setup

# The one list of compiled modules. A module here must be pure (no I/O) and plain typed Python:
# native classes cannot be monkeypatched or subclassed from interpreted code.
COMPILED_MODULES = [
    "kvstore/codec.py",
    "kvstore/raft/errors.py",
    "kvstore/raft/log.py",
    "kvstore/raft/log_storage.py",
    "kvstore/raft/progress.py",
    "kvstore/raft/raft.py",
    "kvstore/raft/rawnode.py",
    "kvstore/raft/types.py",
    "kvstore/statemachine/applier.py",
    "kvstore/statemachine/commands.py",
    "kvstore/statemachine/dedup.py",
    "kvstore/statemachine/events.py",
    "kvstore/statemachine/layout.py",
    "kvstore/statemachine/leases.py",
    "kvstore/statemachine/staging.py",
    "kvstore/storage/keys.py",
]

# mypyc type-checks what it compiles (the [tool.mypy] settings apply). The modules they import
# but that are not compiled are read silently: their own imports (plyvel, msgpack...) are not
# installed yet when pip builds the project on a fresh machine.
MYPY_OPTIONS = ["--follow-imports=silent"]

# One shared library (kvstore_compiled__mypyc.*.so, top level as mypyc expects), so that calls
# between the modules are native calls.
setup(ext_modules=mypycify([*MYPY_OPTIONS, *COMPILED_MODULES], group_name="kvstore_compiled", opt_level="3"))
