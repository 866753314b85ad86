"""What one call met on the nodes it tried, and the error it ends with when its deadline passes.

A call that is not served in time says why in one line: how many of the partition's replicas
answered and what each said, which could not be reached and why, how many a leader needs, and,
for a write, whether it may still have been applied (read from the error table: a write that
met a code whose `may_be_applied` is set may have been proposed, so its outcome is unknown).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kvstore.errors import ERRORS, ErrorCode, KvError, KvTimeoutError, NotLeaderError, ResourceExhaustedError


@dataclass(frozen=True, slots=True)
class _Outcome:
    address: str
    answered: bool  # the node answered (with an error); False: it could not be reached
    detail: str


def _nodes(node_ids: Sequence[int]) -> str:
    return f"node {node_ids[0]}" if len(node_ids) == 1 else f"nodes {', '.join(map(str, node_ids))}"


class Attempts:
    """The last outcome of each node one call tried, and every error code it met."""

    def __init__(self) -> None:
        self._outcomes: dict[int, _Outcome] = {}
        self._codes: set[ErrorCode] = set()
        self._last_code = ErrorCode.TIMEOUT

    def answered(self, node_id: int, address: str, code: ErrorCode, detail: str) -> None:
        """The node answered with `code` (one the call may retry)."""
        self._note(node_id, _Outcome(address, True, detail), code)

    def unreachable(self, node_id: int, address: str, reason: str) -> None:
        """No answer from the node: it refused the connection, did not answer in time..."""
        self._note(node_id, _Outcome(address, False, reason), ErrorCode.UNAVAILABLE)

    def _note(self, node_id: int, outcome: _Outcome, code: ErrorCode) -> None:
        self._outcomes[node_id] = outcome
        self._codes.add(code)
        self._last_code = code

    def deadline_error(
        self, partition: int, replicas: Sequence[int], timeout: float, *, write: bool
    ) -> KvError:
        """The error of a call to `partition` (held by `replicas`) whose `timeout` passed."""
        tried = sorted({*replicas, *self._outcomes})
        answered = [node for node in tried if node in self._outcomes and self._outcomes[node].answered]
        silent = [node for node in tried if node in self._outcomes and not self._outcomes[node].answered]
        untried = [node for node in sorted(replicas) if node not in self._outcomes]
        parts = [f"{len(answered)} of its {len(replicas)} replicas answered"]
        if answered:
            parts[0] += " (" + "; ".join(f"node {n}: {self._outcomes[n].detail}" for n in answered) + ")"
        if silent:
            parts.append(
                f"{_nodes(silent)} could not be reached ("
                + "; ".join(f"{self._outcomes[n].address}: {self._outcomes[n].detail}" for n in silent)
                + ")"
            )
        if untried:
            parts.append(f"{_nodes(untried)} not tried")
        quorum = len(replicas) // 2 + 1
        parts.append(f"a leader needs {quorum} of the {len(replicas)}")
        message = ", ".join(parts)
        if write:
            unknown = any(ERRORS[code].may_be_applied for code in self._codes)
            message += (
                "; the write's outcome is unknown: it may or may not have been applied"
                if unknown
                else "; the write was not applied"
            )
        if self._last_code is ErrorCode.RESOURCE_EXHAUSTED:
            return ResourceExhaustedError(f"partition {partition} was not served within {timeout:g}s: {message}")
        if self._last_code in (ErrorCode.NOT_LEADER, ErrorCode.WRONG_NODE):
            return NotLeaderError(f"no leader for partition {partition} within {timeout:g}s: {message}")
        return KvTimeoutError(f"partition {partition} was not served within {timeout:g}s: {message}")
