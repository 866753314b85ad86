"""`HOST:PORT` network addresses: the one parser behind the client's endpoints and the node's
`--listen` and `--peers`, so that a malformed address is refused at once, in one line, instead of
surfacing later as a connection that never succeeds.
"""

from __future__ import annotations

import re

# A bracketed IPv6 literal, or a host name / IPv4 address, then a decimal port.
_ADDRESS = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9._-]+)):(?P<port>[0-9]+)")

# `--listen` hosts that bind every interface; the node is then reached at its `--peers` address.
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::"})


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` or ``[ipv6]:port`` → (host, port); `ValueError` with a one-line reason otherwise."""
    match = _ADDRESS.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:2379 or [::1]:2379)")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: port {port} is not between 1 and 65535")
    return match["ipv6"] or match["host"], port
