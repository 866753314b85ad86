"""Generate the Python protobuf and gRPC modules in this package from ``proto/``.

Run with ``make proto``. The modules it writes are never edited by hand; a test compares
their descriptors against a fresh compile of ``proto/`` and fails when they are stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = ROOT / "proto"


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "kvstore" / "_pb").glob("*.proto"))


def protoc(args: list[str]) -> None:
    """Run grpc_tools' bundled protoc with the well-known types on the include path."""
    from importlib.resources import files

    from grpc_tools import protoc as grpc_protoc

    include = str(files("grpc_tools") / "_proto")
    code = grpc_protoc.main(["protoc", f"-I{PROTO_ROOT}", f"-I{include}", *args])
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


def main() -> None:
    files = [str(p) for p in proto_files()]
    protoc([f"--python_out={ROOT}", f"--pyi_out={ROOT}", f"--grpc_python_out={ROOT}", *files])
    print(f"generated {len(files)} proto file(s) into kvstore/_pb", file=sys.stderr)


if __name__ == "__main__":
    main()
