"""The files a run leaves behind, next to history.jsonl and nemesis.jsonl: results.json (the
verdicts), latency.png (latency over time with the faults shaded), timeline-<checker>.html (for
each checker that found a violation) and index.html, which links them all."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from enum import Enum
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kvstore.jepsen.history import Event, EventType, pair_operations
from kvstore.jepsen.nemesis import Intervals, NemesisEvent, NemesisKind, fault_intervals

if TYPE_CHECKING:
    from kvstore.jepsen.runner import RunResult

_NS_PER_S = 1e9
_FAULT_COLOURS = {
    NemesisKind.KILL: "#d62728",
    NemesisKind.PAUSE: "#9467bd",
    NemesisKind.PARTITION: "#ff7f0e",
    NemesisKind.CLOCK: "#17becf",
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


def plot_latency(events: Sequence[Event], nemesis_events: Sequence[NemesisEvent], path: Path, title: str) -> None:
    """Latency of every completed operation against its start time, one colour per function and
    one marker per outcome, fault intervals shaded."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    from matplotlib import pyplot
    from matplotlib.patches import Patch

    operations = [
        op
        for op in pair_operations(events)
        if op.invoke_time is not None and op.complete_time is not None
    ]
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
        axes.set_xlabel("time since the run started (s)")
        axes.set_ylabel("latency (ms)")
        axes.set_title(title)
        axes.grid(True, which="major", alpha=0.3)
        figure.tight_layout()
        figure.savefig(path, dpi=110)
    finally:
        pyplot.close(figure)


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
        f"{result.config.read_consistency.name.lower()} reads: {result.status.name.lower()}"
    )
    plot_latency(events, nemesis_events, out / "latency.png", title)
    timelines = []  # one per checker that found a violation
    for outcome in result.outcomes:
        if outcome.timeline_html is not None:
            timelines.append(f"timeline-{outcome.checker}.html")
            (out / timelines[-1]).write_text(outcome.timeline_html, encoding="utf-8")
    names = [*timelines, "history.jsonl", "nemesis.jsonl", "results.json", "latency.png"]
    node_logs = sorted((out / "nodes").glob("*.log")) if (out / "nodes").is_dir() else []
    names += [f"nodes/{path.name}" for path in node_logs]
    (out / "index.html").write_text(render_index(result, nemesis_events, names), encoding="utf-8")
