"""The files a run leaves behind, next to history.jsonl and nemesis.jsonl: results.json (the
verdicts), latency.png (latency over time with the faults shaded; for the lock workload, its
critical sections below, one lane per worker), timeline-<checker>.html (for each checker that
drew one: a violation, or the lock workload's critical sections) and index.html, which links
them all and the nodes' and workers' logs."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from enum import Enum
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kvstore.jepsen.history import Event, EventType, pair_operations
from kvstore.jepsen.locks import LockWorkload
from kvstore.jepsen.nemesis import FaultInterval, Intervals, NemesisEvent, NemesisKind, fault_intervals
from kvstore.jepsen.sections import Ending, Section, critical_sections, is_refused_stale

if TYPE_CHECKING:
    from kvstore.jepsen.runner import RunResult

_NS_PER_S = 1e9
_FAULT_COLOURS = {
    NemesisKind.KILL: "#d62728",
    NemesisKind.PAUSE: "#9467bd",
    NemesisKind.PARTITION: "#ff7f0e",
    NemesisKind.CLOCK: "#17becf",
    NemesisKind.MEMBERSHIP: "#2ca02c",
    NemesisKind.CLIENT_PAUSE: "#8c564b",
}
_OUTCOME_MARKERS = {EventType.OK: "o", EventType.FAIL: "x", EventType.INFO: "^"}


def _enum_name(value: Enum) -> str:
    """``linearizable`` for ReadConsistency.LINEARIZABLE (an int on the wire), ``kill`` for NemesisKind.KILL."""
    return value.value if isinstance(value.value, str) else value.name.lower()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Enum):
        return _enum_name(value)
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _jsonable(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


def results_document(result: RunResult) -> dict[str, Any]:
    return {
        "status": result.status.name.lower(),
        "exit_code": int(result.status),
        "error": result.error,
        "duration_s": round(result.duration_s, 2),
        "faults": result.faults,
        "operations": result.operation_counts,
        "checkers": [
            {"checker": o.checker, "validity": o.validity.value, "summary": o.summary, "details": _jsonable(o.details)}
            for o in result.outcomes
        ],
        "config": _jsonable(result.config),
    }


def _setting_text(value: Any) -> str:
    """A setting as a reader wants it: names for enums, comma lists for tuples."""
    if isinstance(value, Enum):
        return _enum_name(value)
    if isinstance(value, Intervals):
        return value.describe()
    if isinstance(value, list | tuple):
        return ", ".join(_setting_text(item) for item in value) or "none"
    return str(value)


def plot_latency(
    events: Sequence[Event],
    nemesis_events: Sequence[NemesisEvent],
    path: Path,
    title: str,
    sections: Sequence[Section] = (),
    workers: int = 0,
) -> None:
    """Latency of every completed operation against its start time, one colour per function and
    one marker per outcome, fault intervals shaded; below it, with ``workers``, the lock
    workload's critical ``sections``, one lane per worker."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    from matplotlib import pyplot
    from matplotlib.patches import Patch

    operations = [
        op
        for op in pair_operations(events)
        if op.invoke_time is not None and op.complete_time is not None
    ]
    if workers:
        figure, (axes, lanes) = pyplot.subplots(
            2, 1, figsize=(11, 5 + 0.45 * workers), sharex=True,
            gridspec_kw={"height_ratios": [5, 0.45 * workers + 0.6]},
        )  # fmt: skip
    else:
        figure, axes = pyplot.subplots(figsize=(11, 5))
    try:
        end_s = max((op.complete_time or 0 for op in operations), default=0) / _NS_PER_S
        legend: list[Any] = []
        shaded: set[NemesisKind] = set()
        for interval in fault_intervals(nemesis_events):
            stop = interval.end if interval.end is not None else end_s * _NS_PER_S
            axes.axvspan(interval.start / _NS_PER_S, stop / _NS_PER_S, color=_FAULT_COLOURS[interval.nemesis],
                         alpha=0.15, linewidth=0)  # fmt: skip
            if interval.nemesis not in shaded:
                shaded.add(interval.nemesis)
                legend.append(Patch(color=_FAULT_COLOURS[interval.nemesis], alpha=0.3, label=f"{interval.nemesis} fault"))
        functions = sorted({op.f for op in operations})
        colours = pyplot.get_cmap("tab10")
        for number, f in enumerate(functions):
            for outcome, marker in _OUTCOME_MARKERS.items():
                selected = [op for op in operations if op.f == f and op.outcome is outcome]
                if not selected:
                    continue
                axes.scatter(
                    [op.invoke_time / _NS_PER_S for op in selected],  # type: ignore[operator]
                    [max((op.complete_time - op.invoke_time) / 1e6, 0.01) for op in selected],  # type: ignore[operator]
                    s=9 if outcome is EventType.OK else 22,
                    marker=marker,
                    color=colours(number % 10),
                    alpha=0.6,
                    label=f"{f} {outcome.value}",
                )
        handles, _ = axes.get_legend_handles_labels()
        axes.legend(handles=handles + legend, loc="upper left", fontsize=8, ncols=2)
        axes.set_yscale("log")
        axes.set_ylabel("latency (ms)")
        axes.set_title(title)
        axes.grid(True, which="major", alpha=0.3)
        if workers:
            _plot_sections(lanes, sections, workers, fault_intervals(nemesis_events), end_s)
        (lanes if workers else axes).set_xlabel("time since the run started (s)")
        figure.tight_layout()
        figure.savefig(path, dpi=110)
    finally:
        pyplot.close(figure)


_ENDING_COLOURS = {Ending.RELEASED: "#4a7fb5", Ending.LOST: "#e6a100", Ending.UNKNOWN: "#999999"}


def _plot_sections(
    lanes: Any, sections: Sequence[Section], workers: int, faults: Sequence[FaultInterval], end_s: float
) -> None:
    """One lane per worker: a bar per critical section (coloured by how it ended), a red cross per
    operation refused as stale, the worker's client pauses shaded."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    for fault in faults:
        if fault.nemesis is NemesisKind.CLIENT_PAUSE:
            stop = fault.end / _NS_PER_S if fault.end is not None else end_s
            for worker in fault.workers:
                lanes.broken_barh([(fault.start / _NS_PER_S, stop - fault.start / _NS_PER_S)], (worker - 0.45, 0.9),
                                  color=_FAULT_COLOURS[NemesisKind.CLIENT_PAUSE], alpha=0.25, linewidth=0)  # fmt: skip
    for ending, colour in _ENDING_COLOURS.items():
        for section in (section for section in sections if section.ending is ending):
            lanes.broken_barh([(section.start / _NS_PER_S, max(section.end - section.start, 1) / _NS_PER_S)],
                              (section.worker - 0.3, 0.6), color=colour)  # fmt: skip
    stale = [(op.complete_time or 0, section.worker) for section in sections for op in section.operations
             if is_refused_stale(op)]  # fmt: skip
    if stale:
        lanes.scatter([time / _NS_PER_S for time, _ in stale], [worker for _, worker in stale], marker="x",
                      color="#c00", s=40, zorder=3)  # fmt: skip
    lanes.set_yticks(range(workers), [f"worker {worker}" for worker in range(workers)], fontsize=8)
    lanes.set_ylim(workers - 0.5, -0.5)
    lanes.grid(True, axis="x", alpha=0.3)
    handles: list[Any] = [Patch(color=colour, label=f"section {ending.value}") for ending, colour in _ENDING_COLOURS.items()]
    handles.append(Patch(color=_FAULT_COLOURS[NemesisKind.CLIENT_PAUSE], alpha=0.25, label="worker paused"))
    handles.append(Line2D([], [], marker="x", color="#c00", linestyle="", label="refused as stale"))
    lanes.legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1), fontsize=7, ncols=5, frameon=False)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.valid { color: #1a7f37; font-weight: bold; } .invalid { color: #c00; font-weight: bold; }
.unknown { color: #9a6700; font-weight: bold; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def render_index(result: RunResult, nemesis_events: Sequence[NemesisEvent], files: Sequence[str]) -> str:
    config = result.config
    status = result.status.name.lower()
    verdict_class = {"valid": "valid", "invalid": "invalid"}.get(status, "unknown")
    verdicts = _table(
        ("checker", "verdict", "summary"),
        [(o.checker, o.validity.value, o.summary) for o in result.outcomes],
    )
    counts = _table(
        ("operation", "ok", "fail", "info"),
        [
            (f, *(str(per_outcome.get(kind, 0)) for kind in ("ok", "fail", "info")))
            for f, per_outcome in sorted(result.operation_counts.items())
        ],
    )
    settings = _table(
        ("setting", "value"),
        [(field.name, _setting_text(getattr(config, field.name))) for field in dataclasses.fields(config)],
    )
    faults = _table(
        ("time (s)", "event", "nemesis", "what"),
        [(f"{e.time / _NS_PER_S:.2f}", e.phase.value, e.nemesis.value, e.description) for e in nemesis_events],
    )
    links = "".join(f'<li><a href="{escape(name)}">{escape(name)}</a></li>' for name in files)
    error = "" if result.error is None else f"<p class='invalid'>error: {escape(result.error)}</p>"
    image = '<img src="latency.png" alt="latency over time">' if "latency.png" in files else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>kvstore jepsen: {escape(config.workload)}</title>
<style>{_STYLE}</style></head><body>
<h1>{escape(config.workload)} under {escape(",".join(config.nemeses) or "no faults")}:
<span class="{verdict_class}">{escape(status)}</span></h1>
{error}
<h2>Verdicts</h2>{verdicts}
<h2>Latency</h2>{image}
<h2>Operations</h2>{counts}
<h2>Faults</h2>{faults}
<h2>Files</h2><ul>{links}</ul>
<h2>Settings</h2>{settings}
<p>Run took {result.duration_s:.1f}s.</p>
</body></html>
"""


def write_report(result: RunResult, events: Sequence[Event], nemesis_events: Sequence[NemesisEvent]) -> None:
    out = result.config.out_dir
    (out / "results.json").write_text(json.dumps(results_document(result), indent=2) + "\n", encoding="utf-8")
    title = (
        f"{result.config.workload} / {','.join(result.config.nemeses) or 'no faults'} / "
        f"{result.config.read_consistency.name.lower()} reads, {result.config.write_concern.name.lower()} writes: "
        f"{result.status.name.lower()}"
    )
    workers = result.config.concurrency if result.config.workload == LockWorkload.name else 0
    sections = critical_sections(pair_operations(events), workers) if workers else []
    plot_latency(events, nemesis_events, out / "latency.png", title, sections, workers)
    timelines = []  # one per checker that found a violation
    for outcome in result.outcomes:
        if outcome.timeline_html is not None:
            timelines.append(f"timeline-{outcome.checker}.html")
            (out / timelines[-1]).write_text(outcome.timeline_html, encoding="utf-8")
    names = [*timelines, "history.jsonl", "nemesis.jsonl", "results.json", "latency.png"]
    for logs in ("nodes", "workers"):
        names += [f"{logs}/{path.name}" for path in sorted((out / logs).glob("*.log"))]
    (out / "index.html").write_text(render_index(result, nemesis_events, names), encoding="utf-8")
