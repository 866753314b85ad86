"""How kvctl shows the progress of long work (`jepsen run`, `check`, `bench`): one reporter for all.

On a terminal it is a rich live display, one bar per phase. Anywhere else (CI logs, pipes) it is
plain timestamped lines: one when a phase starts, at most one every ``interval_s`` while it
progresses, and its last state when it ends. Both show the same figures, computed in one place:
how much of the phase is done, its elapsed and estimated remaining time, and the work's own
detail (operations so far, faults so far...).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.table import Column

_BAR_WIDTH = 20


@dataclass(slots=True)
class _Phase:
    name: str
    total: float | None
    unit: str
    started: float
    completed: float = 0.0
    detail: str = ""
    printed: bool = field(default=False)  # plain lines: is the latest state on screen already?


def _amount(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or float(value).is_integer() else f"{value:,.1f}"


def _duration(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _count(phase: _Phase) -> str:
    """``12/30 s``, ``1,234 keys`` or nothing: how much of the phase is done."""
    if phase.total is not None:
        return f"{_amount(phase.completed)}/{_amount(phase.total)} {phase.unit}".rstrip()
    return f"{_amount(phase.completed)} {phase.unit}".rstrip() if phase.completed else ""


def _remaining(phase: _Phase, now: float) -> str:
    """Time left at the pace so far (for a phase measured in seconds, simply what is left)."""
    elapsed = now - phase.started
    if phase.total is None or phase.completed <= 0 or elapsed <= 0:
        return ""
    left = max(0.0, elapsed * (phase.total - phase.completed) / phase.completed)
    return f"{_duration(left)} left"


class ConsoleProgress:
    """A ``kvstore.progress.Progress`` shown on ``console``; use it as a context manager.

    Nothing shows until the work has run for ``show_after_s`` (quick work stays quiet); notes
    always show. Safe to call from several threads (checkers run in a worker thread).
    """

    def __init__(
        self,
        console: Console,
        *,
        show_after_s: float = 0.0,
        interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._console = console
        self._show_after_s = show_after_s
        self._interval_s = interval_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._live = console.is_terminal
        self._lock = threading.Lock()
        self._started = clock()
        self._visible = False
        self._phase: _Phase | None = None
        self._last_line_at = float("-inf")
        self._bars: RichProgress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> ConsoleProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        with self._lock:
            self._end_phase()
            if self._bars is not None:
                self._bars.stop()

    # ---- the Progress protocol ----------------------------------------------------------------

    def phase(self, name: str, *, total: float | None = None, unit: str = "") -> None:
        with self._lock:
            self._end_phase()
            self._phase = _Phase(name, total, unit, self._clock())
            if self._visible:
                self._start_phase()
            else:
                self._show()

    def update(self, completed: float, *, total: float | None = None, detail: str = "") -> None:
        with self._lock:
            phase = self._phase
            if phase is None:
                return
            phase.completed = completed
            phase.total = total if total is not None else phase.total
            phase.detail = detail or phase.detail
            visible = self._show()  # may print the phase's first line, not this state
            phase.printed = False
            if not visible:
                return
            if self._bars is not None:
                self._refresh_bar(phase)
            elif self._clock() - self._last_line_at >= self._interval_s:
                self._print_status(phase)

    def note(self, message: str) -> None:
        with self._lock:
            target = self._bars.console if self._bars is not None else self._console
            prefix = "" if self._live else f"{self._timestamp()} "
            target.print(f"{prefix}{message}", markup=False, highlight=False, soft_wrap=True)

    # ---- inside ---------------------------------------------------------------------------------

    def _show(self) -> bool:
        """Whether the progress is on screen: it comes on, with the phase running at that moment,
        once the work has run for show_after_s."""
        if self._visible:
            return True
        if self._clock() - self._started < self._show_after_s:
            return False
        self._visible = True
        if self._live:
            # The figures keep their width; the detail wraps when the terminal is narrow.
            self._bars = RichProgress(
                TextColumn("{task.description}", table_column=Column(no_wrap=True)),
                BarColumn(bar_width=_BAR_WIDTH),
                TextColumn("{task.fields[count]}", table_column=Column(no_wrap=True)),
                TimeElapsedColumn(),
                TextColumn("{task.fields[left]}", table_column=Column(no_wrap=True)),
                TextColumn("{task.fields[detail]}", table_column=Column(ratio=1, overflow="fold")),
                console=self._console,
            )
            self._bars.start()
        if self._phase is not None:
            self._start_phase()
        return True

    def _start_phase(self) -> None:
        phase = self._phase
        assert phase is not None
        if self._bars is not None:
            self._task = self._bars.add_task(phase.name, total=phase.total, count="", left="", detail="")
            self._refresh_bar(phase)
            return
        size = "" if phase.total is None else " (" + f"{_amount(phase.total)} {phase.unit}".rstrip() + ")"
        self._line(f"{phase.name}{size}")
        phase.printed = True

    def _end_phase(self) -> None:
        phase = self._phase
        if phase is None or not self._visible:
            return
        if self._bars is not None and self._task is not None:
            self._refresh_bar(phase)
            if phase.total is None:  # a bar of unknown length would pulse forever
                self._bars.update(self._task, total=1, completed=1)
            self._bars.stop_task(self._task)
        elif not phase.printed:
            self._print_status(phase)

    def _refresh_bar(self, phase: _Phase) -> None:
        assert self._bars is not None and self._task is not None
        self._bars.update(
            self._task,
            total=phase.total,
            completed=phase.completed,
            count=_count(phase),
            left=_remaining(phase, self._clock()),
            detail=phase.detail,
        )

    def _print_status(self, phase: _Phase) -> None:
        now = self._clock()
        count = _count(phase)
        times = ", ".join(filter(None, (f"{_duration(now - phase.started)} elapsed", _remaining(phase, now))))
        parts = [f"{phase.name}: {count}" if count else phase.name, times, phase.detail]
        self._line(" · ".join(part for part in parts if part))
        phase.printed = True

    def _line(self, text: str) -> None:
        self._console.print(f"{self._timestamp()} {text}", markup=False, highlight=False, soft_wrap=True)
        self._last_line_at = self._clock()

    def _timestamp(self) -> str:
        return time.strftime("%H:%M:%S", time.localtime(self._wall_clock()))
