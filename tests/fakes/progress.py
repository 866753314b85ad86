"""A ``kvstore.progress.Progress`` that remembers every report, for tests that look at them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Report:
    kind: str  # "phase", "update" or "note"
    text: str  # the phase name, the detail of an update, or the note
    completed: float | None = None
    total: float | None = None


@dataclass
class RecordingProgress:
    reports: list[Report] = field(default_factory=list)

    def phase(self, name: str, *, total: float | None = None, unit: str = "") -> None:
        self.reports.append(Report("phase", name, None, total))

    def update(self, completed: float, *, total: float | None = None, detail: str = "") -> None:
        self.reports.append(Report("update", detail, completed, total))

    def note(self, message: str) -> None:
        self.reports.append(Report("note", message))

    def phases(self) -> list[str]:
        return [report.text for report in self.reports if report.kind == "phase"]

    def updates(self) -> list[Report]:
        return [report for report in self.reports if report.kind == "update"]
