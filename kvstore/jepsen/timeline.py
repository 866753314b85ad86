"""A self-contained HTML timeline of one key's operations: one lane per process, one bar per
operation from its invoke to its completion, the operations of a violation (a linearizability
failure, a session or staleness anomaly) highlighted."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from kvstore.jepsen.checker import CheckResult
from kvstore.jepsen.guarantees import Anomaly
from kvstore.jepsen.history import EventType, Operation, Value, render_key
from kvstore.jepsen.models import Model

_LANE_HEIGHT = 34
_BAR_HEIGHT = 22
_STEP_WIDTH = 30  # horizontal space between two consecutive events
_LABEL_WIDTH = 110
_MAX_STATES_SHOWN = 20

_STYLE = """
body { font: 13px system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; }
.legend span { display: inline-block; padding: 2px 8px; margin-right: 8px; border-radius: 3px; }
.scroll { overflow-x: auto; border: 1px solid #ddd; }
rect.ok { fill: #cfe3f7; stroke: #4a7fb5; }
rect.info { fill: #f3f3f3; stroke: #888; stroke-dasharray: 4 3; }
rect.fail { fill: #eee; stroke: #bbb; opacity: 0.6; }
rect.window { fill: #ffe1a8; stroke: #c98a00; }
rect.culprit { fill: #ffb3b3; stroke: #c00; stroke-width: 2; }
text { font-size: 11px; dominant-baseline: middle; pointer-events: none; }
text.lane { font-weight: bold; }
"""


def render_timeline(result: CheckResult, operations: Sequence[Operation], model: Model) -> str:
    """The HTML page for the key of a linearizability ``result`` (its violation, if any, highlighted)."""
    states = "".join(
        f"<li>{escape(model.describe_state(stuck.state))}"
        f"{escape(' after ' + stuck.after.describe()) if stuck.after is not None else ' (initial state)'}</li>"
        for stuck in result.states_tried[:_MAX_STATES_SHOWN]
    )
    explanation = (
        f"<p>Cannot linearize <b>{escape(result.culprit.describe())}</b> of process "
        f"{escape(str(result.culprit.process))} (lines {_lines(result.culprit)}). "
        f"States it was tried in:</p><ul>{states}</ul>"
        if result.culprit is not None
        else ""
    )
    return render_key_timeline(
        operations,
        result.key,
        heading=f"{result.verdict.value} ({model.name} model)",
        explanation_html=explanation,
        culprit=result.culprit,
        window=result.window,
        culprit_label="cannot be linearized",
    )


def render_anomaly_timeline(anomaly: Anomaly, operations: Sequence[Operation], checker: str) -> str:
    """The HTML page for the key of a session or staleness ``anomaly``."""
    return render_key_timeline(
        operations,
        anomaly.key,
        heading=f"{anomaly.kind} ({checker} checker)",
        explanation_html=f"<p>{escape(anomaly.explanation)}</p>",
        culprit=anomaly.culprit,
        window=anomaly.window,
        culprit_label="breaks the guarantee",
    )


def render_key_timeline(
    operations: Sequence[Operation],
    key: Value,
    *,
    heading: str,
    explanation_html: str,
    culprit: Operation | None,
    window: Sequence[Operation],
    culprit_label: str,
) -> str:
    """One lane per process, one bar per operation on ``key``; the culprit and window highlighted."""
    key_operations = [op for op in operations if op.key == key]
    window_ids = {op.id for op in window}
    culprit_id = culprit.id if culprit is not None else None

    positions = sorted(
        {op.invoke_index for op in key_operations}
        | {op.complete_index for op in key_operations if op.complete_index is not None}
    )
    column = {position: number for number, position in enumerate(positions)}
    end_column = len(positions)  # where bars of operations with unknown outcome stop
    processes = sorted({op.process for op in key_operations})
    lane = {process: number for number, process in enumerate(processes)}
    width = _LABEL_WIDTH + (end_column + 1) * _STEP_WIDTH
    height = max(1, len(processes)) * _LANE_HEIGHT + 10

    shapes: list[str] = []
    for process, number in lane.items():
        y = number * _LANE_HEIGHT + _LANE_HEIGHT / 2
        shapes.append(f'<text class="lane" x="8" y="{y}">process {escape(str(process))}</text>')
    for op in key_operations:
        x_start = _LABEL_WIDTH + column[op.invoke_index] * _STEP_WIDTH
        end = column[op.complete_index] if op.complete_index is not None else end_column
        bar_width = max(_STEP_WIDTH / 2, (end - column[op.invoke_index]) * _STEP_WIDTH)
        y = lane[op.process] * _LANE_HEIGHT + (_LANE_HEIGHT - _BAR_HEIGHT) / 2
        if op.id == culprit_id:
            css_class = "culprit"
        elif op.id in window_ids:
            css_class = "window"
        else:
            css_class = op.outcome.value
        shapes.append(
            f"<g><title>{escape(_tooltip(op))}</title>"
            f'<rect class="{css_class}" x="{x_start}" y="{y}" width="{bar_width}" '
            f'height="{_BAR_HEIGHT}" rx="3"/>'
            f'<text x="{x_start + 4}" y="{y + _BAR_HEIGHT / 2}">{escape(op.describe())}</text></g>'
        )

    key_text = escape(render_key(key)) if key is not None else "(no key)"
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>kvstore check: key {key_text}</title><style>{_STYLE}</style></head><body>"
        f"<h1>Key {key_text}: {escape(heading)}</h1>"
        f"{explanation_html}"
        f'<p class="legend"><span style="background:#ffb3b3">{escape(culprit_label)}</span>'
        '<span style="background:#ffe1a8">in the window</span>'
        '<span style="background:#cfe3f7">ok</span>'
        '<span style="background:#f3f3f3;border:1px dashed #888">outcome unknown</span>'
        '<span style="background:#eee">failed</span></p>'
        f'<div class="scroll"><svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}">{"".join(shapes)}</svg></div>'
        "<p>Time runs left to right in history order; hover a bar for its details.</p>"
        "</body></html>\n"
    )


def _lines(op: Operation) -> str:
    return f"{op.invoke_line}–{op.complete_line}" if op.complete_line is not None else f"{op.invoke_line}–"


def _tooltip(op: Operation) -> str:
    outcome = "outcome unknown" if op.outcome is EventType.INFO else op.outcome.value
    return f"process {op.process}: {op.describe()} ({outcome}), lines {_lines(op)}"
