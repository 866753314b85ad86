"""Critical sections of the lock workload, read back from its history, and their timeline.

A worker's section is what one history process does from an ``ok`` ``acquire`` (whose value is
the fencing token and the lease) to its ``release``: the ``read`` and ``write`` of a register in
between. It ends *released* (the unlock found the lock still held), *lost* (the unlock found the
lock key gone: the lease had expired, so another worker may have held the lock meanwhile) or
*unknown* (an operation's outcome was unknown, or the history ends). Worker of a process: process
mod the number of workers (``lockworker.py``). ``render_sections`` draws them all on one page,
to scale in time, one lane per worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from html import escape
from typing import cast

from kvstore.jepsen.history import EventType, Operation
from kvstore.jepsen.nemesis import FaultInterval, NemesisKind

REFUSED_STALE = "StaleFencingTokenError"  # how a refused stale operation's error starts
LOCK_LOST = "LockNotHeldError"  # how a release's error starts when the lock was already gone
_NS_PER_S = 1e9


class Ending(StrEnum):
    RELEASED = "released"
    LOST = "lost"  # the lease expired before the release
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Section:
    worker: int
    process: int
    token: int
    lease: int
    acquired: Operation
    operations: tuple[Operation, ...]  # reads and writes, in order
    ending: Ending
    release: Operation | None

    @property
    def start(self) -> int:
        """When the worker knew it held the lock (the acquire's completion, ns)."""
        return self.acquired.complete_time or 0

    @property
    def end(self) -> int:
        """When it stopped acting on it (ns): its last completion, or last invoke."""
        last = self.release or (self.operations[-1] if self.operations else self.acquired)
        return last.complete_time or last.invoke_time or self.start

    def label(self) -> str:
        return f"worker {self.worker} (token {self.token})"


def is_refused_stale(op: Operation) -> bool:
    return op.outcome is EventType.FAIL and (op.error or "").startswith(REFUSED_STALE)


def critical_sections(operations: Iterable[Operation], workers: int) -> list[Section]:
    """Every section of the history, by the time it was acquired."""
    by_process: dict[int, list[Operation]] = {}
    for op in operations:
        by_process.setdefault(op.process, []).append(op)
    sections: list[Section] = []
    for process, ops in by_process.items():
        open_section: tuple[Operation, list[Operation]] | None = None
        for op in ops:
            if op.f == "acquire":
                if op.outcome is EventType.OK:
                    open_section = (op, [])
                continue
            if open_section is None:
                continue
            acquired, inside = open_section
            if op.f == "release":
                ending = Ending.RELEASED if op.outcome is EventType.OK else Ending.UNKNOWN
                if op.outcome is EventType.FAIL and (op.error or "").startswith(LOCK_LOST):
                    ending = Ending.LOST
                sections.append(_section(process, workers, acquired, inside, ending, op))
                open_section = None
            elif op.f in ("read", "write"):
                inside.append(op)
        if open_section is not None:  # ended by an operation of unknown outcome
            sections.append(_section(process, workers, *open_section, Ending.UNKNOWN, None))
    return sorted(sections, key=lambda section: section.start)


def _section(
    process: int, workers: int, acquired: Operation, inside: list[Operation], ending: Ending, release: Operation | None
) -> Section:
    token, lease = cast(tuple[int, int], acquired.result)  # what the worker's acquire returns
    return Section(process % workers, process, token, lease, acquired, tuple(inside), ending, release)


# -- the timeline --------------------------------------------------------------------------------

_LANE_HEIGHT = 46
_BAR_Y = 12
_BAR_HEIGHT = 22
_LABEL_WIDTH = 90
_PX_PER_S = 60
_STYLE = """
body { font: 13px system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; }
.legend span { display: inline-block; padding: 2px 8px; margin-right: 8px; border-radius: 3px; }
.scroll { overflow-x: auto; border: 1px solid #ddd; }
rect.released { fill: #cfe3f7; stroke: #4a7fb5; }
rect.lost { fill: #ffe1a8; stroke: #c98a00; }
rect.unknown { fill: #f3f3f3; stroke: #888; stroke-dasharray: 4 3; }
rect.overlap { stroke: #c00; stroke-width: 3; }
rect.client-pause { fill: #9467bd; opacity: 0.25; }
rect.fault { fill: #888; opacity: 0.08; }
circle.ok { fill: #1a7f37; }
path.stale { stroke: #c00; stroke-width: 2.5; }
text { font-size: 11px; dominant-baseline: middle; }
text.lane { font-weight: bold; }
text.axis { fill: #666; }
"""


def render_sections(
    sections: Sequence[Section],
    workers: int,
    faults: Sequence[FaultInterval],
    overlaps: Sequence[tuple[Section, Section, str]],
    heading: str,
) -> str:
    """One lane per worker, one bar per critical section from its acquire to its release, drawn to
    scale in time; each read or write a mark on it (a dot accepted, a cross refused as stale);
    client pauses shaded on the paused worker's lane, other faults behind every lane; the sections
    of each of ``overlaps`` (older, newer, what happened) outlined in red."""
    overlapped = {id(section) for older, newer, _ in overlaps for section in (older, newer)}
    end_ns = max([section.end for section in sections] + [fault.end or 0 for fault in faults] + [0])
    width = _LABEL_WIDTH + int(end_ns / _NS_PER_S * _PX_PER_S) + 40
    height = workers * _LANE_HEIGHT + 24

    def x(ns: int | None) -> float:
        return _LABEL_WIDTH + (ns or 0) / _NS_PER_S * _PX_PER_S

    shapes: list[str] = []
    for fault in faults:
        fault_end = fault.end if fault.end is not None else end_ns
        title = f"<title>{escape(fault.nemesis.value)}: {escape(fault.description)}</title>"
        lanes = fault.workers if fault.nemesis is NemesisKind.CLIENT_PAUSE else range(workers)
        css = "client-pause" if fault.nemesis is NemesisKind.CLIENT_PAUSE else "fault"
        for lane in lanes:
            shapes.append(
                f'<g>{title}<rect class="{css}" x="{x(fault.start):.1f}" y="{lane * _LANE_HEIGHT + 4}" '
                f'width="{max(1.0, x(fault_end) - x(fault.start)):.1f}" height="{_LANE_HEIGHT - 8}"/></g>'
            )
    for lane in range(workers):
        shapes.append(f'<text class="lane" x="8" y="{lane * _LANE_HEIGHT + _LANE_HEIGHT / 2}">worker {lane}</text>')
    for second in range(int(end_ns / _NS_PER_S) + 1):
        if second % 5 == 0:
            shapes.append(f'<text class="axis" x="{x(second * 10**9):.1f}" y="{height - 10}">{second}s</text>')
    for section in sections:
        y = section.worker * _LANE_HEIGHT + _BAR_Y
        css = section.ending.value + (" overlap" if id(section) in overlapped else "")
        shapes.append(
            f"<g><title>{escape(_tooltip(section))}</title>"
            f'<rect class="{css}" x="{x(section.start):.1f}" y="{y}" '
            f'width="{max(2.0, x(section.end) - x(section.start)):.1f}" height="{_BAR_HEIGHT}" rx="3"/></g>'
        )
        for op in section.operations:
            at = x(op.complete_time or op.invoke_time)
            middle = y + _BAR_HEIGHT / 2
            tip = f"<title>{escape(f'{op.f} {op.key}: {op.describe()} ({op.outcome.value})')}</title>"
            if op.outcome is EventType.OK:
                shapes.append(f'<g>{tip}<circle class="ok" cx="{at:.1f}" cy="{middle}" r="3"/></g>')
            elif is_refused_stale(op):
                shapes.append(
                    f'<g>{tip}<path class="stale" d="M{at - 5:.1f},{middle - 5} l10,10 m0,-10 l-10,10"/></g>'
                )
    listed = "".join(f"<li>{escape(description)}</li>" for _, _, description in overlaps)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>kvstore jepsen: critical sections</title><style>{_STYLE}</style></head><body>"
        f"<h1>Critical sections: {escape(heading)}</h1>"
        + (f"<p>Overlapping holders:</p><ul>{listed}</ul>" if listed else "")
        + '<p class="legend"><span style="background:#cfe3f7">released</span>'
        '<span style="background:#ffe1a8">lost: the lease expired before the release</span>'
        '<span style="background:#f3f3f3;border:1px dashed #888">outcome unknown</span>'
        '<span style="border:3px solid #c00">overlapping holders</span>'
        '<span style="background:#dcd0ea">worker paused (client-pause)</span>'
        '<span>● read or write accepted</span><span style="color:#c00">✕ refused as stale</span></p>'
        f'<div class="scroll"><svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
        f'{"".join(shapes)}</svg></div>'
        "<p>Time runs left to right, to scale; hover a bar or a mark for its details.</p>"
        "</body></html>\n"
    )


def _tooltip(section: Section) -> str:
    ops = ", ".join(f"{op.describe()} ({op.outcome.value})" for op in section.operations)
    lines = f"lines {section.acquired.invoke_line}–{(section.release or section.acquired).complete_line or '?'}"
    return f"{section.label()}, lease {section.lease}: {section.ending.value}; {ops or 'no operation'} ({lines})"
