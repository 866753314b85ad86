"""kvctl's fixed exit codes. Scripts depend on these; never renumber them."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    NOT_FOUND = 1
    USAGE = 2
    UNAVAILABLE = 3

    # `kvctl check` verdicts: aliases of the numbers above, with names that say what they mean there.
    VIOLATION = 1  # not linearizable, or a session/staleness anomaly
    UNKNOWN = 2  # timed out, or unusable input (bad usage, unreadable or malformed file)
