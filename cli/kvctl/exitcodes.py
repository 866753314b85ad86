"""kvctl's fixed exit codes. Scripts depend on these; never renumber them."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    NOT_FOUND = 1
    USAGE = 2
    UNAVAILABLE = 3
