"""`kvstore-node`: the node process. The runtime lands with the running-cluster issue."""

from __future__ import annotations

import sys


def main() -> None:
    print("kvstore-node: the node runtime is not built yet; see the running-cluster issue", file=sys.stderr)
    sys.exit(3)
