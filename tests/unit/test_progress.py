"""kvctl's progress reporter: timestamped lines when not on a terminal, a live display on one.

The clock is a fake one moved by the test, so nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import io
import re

from kvctl.progress import ConsoleProgress
from rich.console import Console

TIMESTAMP = r"\d\d:\d\d:\d\d"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def console(*, terminal: bool) -> Console:
    return Console(file=io.StringIO(), force_terminal=terminal, width=160, color_system=None)


def output(target: Console) -> str:
    return target.file.getvalue()  # type: ignore[attr-defined]


def plain_lines(target: Console) -> list[str]:
    lines = output(target).splitlines()
    assert all(re.match(TIMESTAMP + " ", line) for line in lines), lines
    return [line[9:] for line in lines]


def test_plain_lines_mark_each_phase_and_throttle_updates() -> None:
    clock, target = FakeClock(), console(terminal=False)
    with ConsoleProgress(target, interval_s=5.0, clock=clock) as progress:
        progress.phase("setup")
        clock.now = 4.0
        progress.phase("run", total=30, unit="s")
        for second in range(1, 13):
            clock.now = 4.0 + second
            progress.update(second, detail=f"{second * 10} ok, 0 fail, 0 info")
        clock.now = 17.5
        progress.note("a step was skipped")
        progress.phase("check linearizable", unit="keys")
        progress.update(1, total=4, detail="10 ops")
        clock.now = 19.5
        progress.update(2, total=4, detail="20 ops")
    assert plain_lines(target) == [
        "setup",
        "run (30 s)",
        # At most one line per 5 s while the phase runs...
        "run: 5/30 s · 0:00:05 elapsed, 0:00:25 left · 50 ok, 0 fail, 0 info",
        "run: 10/30 s · 0:00:10 elapsed, 0:00:20 left · 100 ok, 0 fail, 0 info",
        "a step was skipped",
        # ...and its last state when it ends.
        "run: 12/30 s · 0:00:13 elapsed, 0:00:20 left · 120 ok, 0 fail, 0 info",
        "check linearizable",
        "check linearizable: 2/4 keys · 0:00:02 elapsed, 0:00:02 left · 20 ops",
    ]


def test_quick_work_stays_quiet_and_slow_work_shows_up_once_it_is_slow() -> None:
    clock, quick = FakeClock(), console(terminal=False)
    with ConsoleProgress(quick, show_after_s=1.0, clock=clock) as progress:
        progress.phase("loading h.jsonl", total=2.0, unit="MB")
        clock.now = 0.5
        progress.update(2.0, detail="1,000 lines")
    assert output(quick) == ""

    clock, slow = FakeClock(), console(terminal=False)
    with ConsoleProgress(slow, show_after_s=1.0, clock=clock) as progress:
        progress.phase("loading h.jsonl", total=200.0, unit="MB")
        clock.now = 0.5
        progress.update(50.0, detail="250,000 lines")
        clock.now = 2.0
        progress.update(200.0, detail="1,000,000 lines")
        progress.phase("checking (session)", unit="keys")
        progress.update(0, total=3)
    assert plain_lines(slow) == [
        "loading h.jsonl (200 MB)",
        "loading h.jsonl: 200/200 MB · 0:00:02 elapsed, 0:00:00 left · 1,000,000 lines",
        "checking (session)",
        "checking (session): 0/3 keys · 0:00:00 elapsed",
    ]


def test_a_terminal_gets_a_live_display_with_the_same_figures() -> None:
    clock, target = FakeClock(), console(terminal=True)
    with ConsoleProgress(target, clock=clock) as progress:
        progress.phase("setup")
        progress.phase("run", total=30, unit="s")
        clock.now = 12.0
        progress.update(12, detail="120 ok, 1 fail, 0 info · faults: kill 1")
        progress.phase("check session", unit="keys")
        progress.update(4, total=4, detail="1,000 ops")
    text = output(target)
    assert "\x1b[" in text  # drawn with terminal control sequences, redrawn in place
    final = text.rsplit("\x1b[?25h", 1)[0]  # the last frame, before the cursor comes back
    for expected in ("setup", "run", "12/30 s", "0:00:18 left", "faults: kill 1", "check session", "4/4 keys"):
        assert expected in final, expected
    assert not re.search(rf"^{TIMESTAMP} run", text, re.MULTILINE)  # no plain lines


def test_notes_show_even_before_the_progress_does() -> None:
    target = console(terminal=False)
    with ConsoleProgress(target, show_after_s=60.0, clock=FakeClock()) as progress:
        progress.phase("memory")
        progress.note("kvstore: memory needs a cluster the benchmark starts; skipped")
    assert plain_lines(target) == ["kvstore: memory needs a cluster the benchmark starts; skipped"]
