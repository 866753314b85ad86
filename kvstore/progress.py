"""Progress of long work as the work reports it: phases, how far the current one is, and notes.

A Jepsen run, a checker or a benchmark reports through ``Progress``; how it is shown (a live
display on a terminal, timestamped lines in CI logs, nothing at all) is the caller's choice, so the
code doing the work depends on no display library. ``kvctl`` shows it with
``kvctl.progress.ConsoleProgress``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol


class Progress(Protocol):
    def phase(self, name: str, *, total: float | None = None, unit: str = "") -> None:
        """A new phase starts and the previous one ends; ``total`` units of work when known."""
        ...

    def update(self, completed: float, *, total: float | None = None, detail: str = "") -> None:
        """``completed`` units of the current phase are done (``total`` once it is known);
        ``detail`` is a short status such as the operations so far."""
        ...

    def note(self, message: str) -> None:
        """A message for the user beside the progress itself, e.g. a step that was skipped."""
        ...


@dataclass(frozen=True, slots=True)
class SilentProgress:
    """Progress nobody watches: the default of library calls."""

    def phase(self, name: str, *, total: float | None = None, unit: str = "") -> None:
        return None

    def update(self, completed: float, *, total: float | None = None, detail: str = "") -> None:
        return None

    def note(self, message: str) -> None:
        return None


SILENT: Final = SilentProgress()
