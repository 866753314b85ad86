"""The consistency × fault matrix: one register run per (consistency setting, nemesis) cell, every
checker's verdict per cell, and whether the verdicts agree with what each setting promises.

A *setting* is a read level with a write concern (`SETTINGS`); a cell runs the register workload
at that setting while one nemesis strikes, then checks the history with the checkers that apply
to it (`kvstore.jepsen.workloads.register_guarantees`). `EXPECTED` says, per setting and nemesis,
what each checker must find: the promise of a level is a VALID verdict where it holds, and a weaker
level is *shown* to be weaker by an INVALID linearizability verdict (or lost writes) where its
weakness bites. A checker whose verdict the level does not predict either way is not judged.

The matrix writes `matrix.json` (machine-readable, rewritten after every cell, so an interrupted
matrix keeps what it ran) and `matrix.html` (one cell per run, each linking to the run's own report
in its directory), and reports its progress: one phase per cell, the run's own phases as detail.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from html import escape
from pathlib import Path
from typing import Any

from kvstore.client import ReadConsistency, WriteConcern
from kvstore.jepsen.checker import Validity
from kvstore.jepsen.durability import LOST_WRITES
from kvstore.jepsen.guarantees import SESSION, STALENESS
from kvstore.jepsen.nemesis import Intervals, NemesisKind
from kvstore.jepsen.runner import ExitStatus, RunConfig, RunResult, run
from kvstore.progress import SILENT, Progress

LINEARIZABLE = "linearizable"  # the linearizability checker's name in a run's outcomes


@dataclass(frozen=True, slots=True)
class Setting:
    """Reads at one level, writes at one concern, and where that sits in CAP/PACELC terms."""

    name: str
    reads: ReadConsistency
    writes: WriteConcern
    pacelc: str


SETTINGS: tuple[Setting, ...] = (
    Setting("linearizable", ReadConsistency.LINEARIZABLE, WriteConcern.MAJORITY,
            "PC/EC: a minority side refuses (C over A); every read pays a quorum round (C over L)"),
    Setting("lease", ReadConsistency.LEASE, WriteConcern.MAJORITY,
            "PC/EL-ish: reads skip the round while the lease holds, trading a clock assumption for latency"),
    Setting("session", ReadConsistency.SESSION, WriteConcern.MAJORITY,
            "PA/EL for reads: any caught-up replica answers; only the client's own session is ordered"),
    Setting("stale", ReadConsistency.STALE, WriteConcern.MAJORITY,
            "PA/EL for reads: any replica answers at once, with a bound on how stale it may be"),
    Setting("all", ReadConsistency.LINEARIZABLE, WriteConcern.ALL,
            "PC/EC, and writes stop when any replica is down (less A than majority)"),
    Setting("leader", ReadConsistency.LINEARIZABLE, WriteConcern.LEADER,
            "PA/EL for writes: the leader alone acknowledges, and a failover can lose them"),
)  # fmt: skip
SETTING_NAMES: tuple[str, ...] = tuple(setting.name for setting in SETTINGS)
NEMESES: tuple[NemesisKind, ...] = (NemesisKind.KILL, NemesisKind.PAUSE, NemesisKind.PARTITION, NemesisKind.CLOCK)

_V, _I = Validity.VALID, Validity.INVALID


def expected(setting: str, nemesis: NemesisKind) -> dict[str, Validity]:
    """What each checker must find in the cell; a checker not named is not judged.

    * linearizable reads with majority or all writes: valid under every fault;
    * lease reads: valid, except when a clock runs slower than the lease's drift margin allows
      (the clock nemesis), where the stale leader's lease reads are not linearizable;
    * session reads: not linearizable (a lagging replica answers), but every session holds;
    * stale reads: not linearizable, but every read within the staleness bound it reported --
      except under the clock nemesis: the bound, like the lease, assumes clock rates within the
      drift margin, and a cut-off follower whose clock runs at x0.2 reports a bound five times
      too small;
    * leader writes: acknowledged writes lost under a partition, which no single checker is sure
      to see (`loss_expected`); under a leader kill a loss is possible but not judged: only a
      write acknowledged in the milliseconds between the leader's fsync and a follower's is lost;
    * every setting whose writes wait for a quorum: no acknowledged write lost.
    """
    if setting == "leader":
        return {}
    kept: dict[str, Validity] = {LOST_WRITES: _V}
    if setting in ("linearizable", "all"):
        return {LINEARIZABLE: _V, SESSION: _V, **kept}
    if setting == "lease":
        if nemesis is NemesisKind.CLOCK:
            return {LINEARIZABLE: _I, **kept}
        return {LINEARIZABLE: _V, SESSION: _V, **kept}
    if setting == "session":
        return {LINEARIZABLE: _I, SESSION: _V, **kept}
    if setting == "stale":
        return {LINEARIZABLE: _I, STALENESS: _I if nemesis is NemesisKind.CLOCK else _V, **kept}
    raise ValueError(f"unknown setting {setting!r} (expected one of {', '.join(SETTING_NAMES)})")


LOSS_CHECKERS: tuple[str, ...] = (LINEARIZABLE, SESSION, LOST_WRITES)
"""A lost acknowledged write shows to one of these: as a revision another acknowledged write
claims (lost-writes), as a later read that misses it (linearizability; its own process's read:
session); none of them sees every loss, since a later write can overwrite a lost one first."""


def loss_expected(setting: str, nemesis: NemesisKind) -> bool:
    """Whether the cell must show an acknowledged write lost: leader writes under a partition."""
    return setting == "leader" and nemesis is NemesisKind.PARTITION


def setting_named(name: str) -> Setting:
    for setting in SETTINGS:
        if setting.name == name:
            return setting
    raise ValueError(f"unknown setting {name!r} (expected one of {', '.join(SETTING_NAMES)})")


@dataclass(frozen=True, slots=True)
class MatrixConfig:
    out_dir: Path
    time_s: float = 20.0
    settings: tuple[str, ...] = SETTING_NAMES
    nemeses: tuple[NemesisKind, ...] = NEMESES
    seed: int = 0
    # Sixteen keys over eight partitions: every partition holds some, so whichever partitions a
    # node leads, faults aimed at it hit the workload (the clock nemesis needs that).
    keys: int = 16
    partitions: int = 8
    concurrency: int = 5
    readers: int = 2  # of them read-only: they keep reading from the node they believe leads
    max_staleness_ms: int = 1000  # STALE reads ask for this bound; replicas beyond it refuse
    intervals: Intervals = Intervals()


class MatrixStatus(IntEnum):
    """What `kvctl jepsen matrix` exits with."""

    AGREES = 0  # every judged verdict is the expected one
    DISAGREES = 1  # some cell found what its setting does not predict (see the README)
    UNKNOWN = 2  # some cell could not decide, or hit an error
    COULD_NOT_RUN = 3


@dataclass(frozen=True, slots=True)
class CheckerVerdict:
    checker: str
    validity: Validity
    summary: str
    expected: Validity | None  # None: not judged

    @property
    def agrees(self) -> bool | None:
        return None if self.expected is None else self.validity is self.expected


@dataclass(frozen=True, slots=True)
class Cell:
    setting: str
    nemesis: NemesisKind
    status: ExitStatus
    verdicts: tuple[CheckerVerdict, ...]
    report: str  # the run's index.html, relative to the matrix directory
    duration_s: float
    faults: int
    operations: Mapping[str, Mapping[str, int]]
    error: str | None

    @property
    def shows_loss(self) -> bool:
        """One of `LOSS_CHECKERS` found a violation: an acknowledged write was lost."""
        return any(v.checker in LOSS_CHECKERS and v.validity is Validity.INVALID for v in self.verdicts)

    @property
    def agrees(self) -> bool:
        """Every judged verdict is the expected one, every checker the setting predicts ran, and
        a lost write shows where one is expected."""
        judged = [verdict for verdict in self.verdicts if verdict.expected is not None]
        predicted = expected(self.setting, self.nemesis)
        if len(judged) != len(predicted) or not all(verdict.agrees for verdict in judged):
            return False
        return self.shows_loss or not loss_expected(self.setting, self.nemesis)


@dataclass(slots=True)
class MatrixResult:
    config: MatrixConfig
    cells: list[Cell] = field(default_factory=list)
    error: str | None = None
    duration_s: float = 0.0
    load_average: tuple[float, float, float] | None = None  # when the matrix started

    @property
    def status(self) -> MatrixStatus:
        if self.error is not None and not self.cells:
            return MatrixStatus.COULD_NOT_RUN
        if any(cell.status is ExitStatus.UNKNOWN or cell.error for cell in self.cells):
            return MatrixStatus.UNKNOWN
        return MatrixStatus.AGREES if all(cell.agrees for cell in self.cells) else MatrixStatus.DISAGREES


class CellProgress:
    """One cell's run, reported as one phase of the matrix: the run's load seconds as the amount
    done, its own phase and detail as the detail."""

    def __init__(self, outer: Progress, label: str, time_s: float) -> None:
        self._outer = outer
        self._label = label
        self._done = 0.0
        self._phase = ""
        outer.phase(label, total=time_s, unit="s")

    def phase(self, name: str, *, total: float | None = None, unit: str = "") -> None:
        self._phase = name
        self._outer.update(self._done, detail=name)

    def update(self, completed: float, *, total: float | None = None, detail: str = "") -> None:
        if self._phase == "run":
            self._done = completed
        text = f"{self._phase}: {detail}" if detail else self._phase
        self._outer.update(self._done, detail=text)

    def note(self, message: str) -> None:
        self._outer.note(f"{self._label}: {message}")


def run_config(config: MatrixConfig, setting: Setting, nemesis: NemesisKind, index: int) -> RunConfig:
    # A LEADER write is lost only if it reaches a cut-off leader before that leader steps down,
    # and a client stops sending there at its first read or cas (they wait for a quorum): with
    # three writers, a fault often passed without one. A cell that must show a loss runs every
    # client as a writer, and twice as many.
    losing = loss_expected(setting.name, nemesis)
    return RunConfig(
        workload="register",
        nemeses=(nemesis,),
        time_s=config.time_s,
        out_dir=config.out_dir / f"{setting.name}-{nemesis.value}",
        concurrency=2 * config.concurrency if losing else config.concurrency,
        readers=0 if losing else config.readers,
        read_consistency=setting.reads,
        write_concern=setting.writes,
        max_staleness_ms=config.max_staleness_ms if setting.reads is ReadConsistency.STALE else 0,
        seed=config.seed * 1000 + index,
        keys=config.keys,
        partitions=config.partitions,
        intervals=config.intervals,
    )


def cell_of(setting: Setting, nemesis: NemesisKind, result: RunResult, out_dir: Path) -> Cell:
    predicted = expected(setting.name, nemesis)
    verdicts = tuple(
        CheckerVerdict(outcome.checker, outcome.validity, outcome.summary, predicted.get(outcome.checker))
        for outcome in result.outcomes
    )
    return Cell(
        setting=setting.name,
        nemesis=nemesis,
        status=result.status,
        verdicts=verdicts,
        report=str((result.config.out_dir / "index.html").relative_to(out_dir)),
        duration_s=result.duration_s,
        faults=result.faults,
        operations=result.operation_counts,
        error=result.error,
    )


def run_matrix(config: MatrixConfig, progress: Progress = SILENT) -> MatrixResult:
    """Run every cell in turn (settings outer, nemeses inner), writing the matrix after each."""
    config.out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    result = MatrixResult(config, load_average=_load_average())
    cells = [(setting_named(name), nemesis) for name in config.settings for nemesis in config.nemeses]
    for index, (setting, nemesis) in enumerate(cells):
        label = f"[{index + 1}/{len(cells)}] {setting.name} × {nemesis.value}"
        run_result = run(run_config(config, setting, nemesis, index), CellProgress(progress, label, config.time_s))
        if run_result.status is ExitStatus.COULD_NOT_RUN:
            result.error = run_result.error
            break
        cell = cell_of(setting, nemesis, run_result, config.out_dir)
        result.cells.append(cell)
        result.duration_s = time.monotonic() - started
        write_matrix(result)
        progress.note(f"{label}: {describe_cell(cell)}")
    result.duration_s = time.monotonic() - started
    write_matrix(result)
    return result


def describe_cell(cell: Cell) -> str:
    """``linearizable invalid (expected), staleness valid (expected)``"""
    parts = []
    for verdict in cell.verdicts:
        mark = {True: "expected", False: "NOT EXPECTED", None: "not judged"}[verdict.agrees]
        parts.append(f"{verdict.checker} {verdict.validity.value} ({mark})")
    if loss_expected(cell.setting, cell.nemesis):
        parts.append("a lost write shown, as expected" if cell.shows_loss else "NO lost write shown, NOT EXPECTED")
    if cell.error:
        parts.append(f"error: {cell.error}")
    return ", ".join(parts) or f"no verdict ({cell.status.name.lower()})"


def _load_average() -> tuple[float, float, float] | None:
    try:
        one, five, fifteen = (float(part) for part in Path("/proc/loadavg").read_text().split()[:3])
    except (OSError, ValueError):
        return None
    return one, five, fifteen


# -- the files ---------------------------------------------------------------------------------


def matrix_document(result: MatrixResult) -> dict[str, Any]:
    config = result.config
    return {
        "status": result.status.name.lower(),
        "exit_code": int(result.status),
        "error": result.error,
        "duration_s": round(result.duration_s, 1),
        "load_average_at_start": result.load_average,
        "config": {
            **{name: getattr(config, name) for name in ("time_s", "seed", "keys", "partitions", "concurrency",
                                                          "readers", "max_staleness_ms")},  # fmt: skip
            "settings": list(config.settings),
            "nemeses": [nemesis.value for nemesis in config.nemeses],
            "intervals": config.intervals.describe(),
        },
        "settings": [dataclasses.asdict(setting) | {"reads": setting.reads.name.lower(),
                                                     "writes": setting.writes.name.lower()}
                     for setting in SETTINGS if setting.name in config.settings],  # fmt: skip
        "cells": [
            {
                "setting": cell.setting,
                "nemesis": cell.nemesis.value,
                "status": cell.status.name.lower(),
                "agrees": cell.agrees,
                "loss_expected": loss_expected(cell.setting, cell.nemesis),
                "shows_loss": cell.shows_loss,
                "checkers": [
                    {"checker": v.checker, "validity": v.validity.value, "expected": v.expected and v.expected.value,
                     "summary": v.summary}
                    for v in cell.verdicts
                ],
                "report": cell.report,
                "duration_s": round(cell.duration_s, 1),
                "faults": cell.faults,
                "operations": cell.operations,
                "error": cell.error,
            }
            for cell in result.cells
        ],
    }


def write_matrix(result: MatrixResult) -> None:
    out = result.config.out_dir
    (out / "matrix.json").write_text(json.dumps(matrix_document(result), indent=2) + "\n", encoding="utf-8")
    (out / "matrix.html").write_text(render_matrix(result), encoding="utf-8")


_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.cell.agrees { background: #eefbf0; } td.cell.disagrees { background: #fdecec; }
.valid { color: #1a7f37; font-weight: bold; } .invalid { color: #c00; font-weight: bold; }
.unknown { color: #9a6700; font-weight: bold; } .note { color: #666; font-size: 90%; }
"""


def _verdict_html(verdict: CheckerVerdict) -> str:
    mark = {True: "✓ as expected", False: "✗ NOT as expected", None: "not judged"}[verdict.agrees]
    return (f'<div title="{escape(verdict.summary)}">{escape(verdict.checker)}: '
            f'<span class="{verdict.validity.value}">{escape(verdict.validity.value)}</span> '
            f'<span class="note">{mark}</span></div>')  # fmt: skip


def _cell_html(cell: Cell | None) -> str:
    if cell is None:
        return '<td class="cell">not run</td>'
    verdicts = "".join(_verdict_html(verdict) for verdict in cell.verdicts)
    if loss_expected(cell.setting, cell.nemesis):
        verdicts += ('<div>a lost write: <span class="invalid">shown</span> <span class="note">✓ as expected</span></div>'
                     if cell.shows_loss else
                     '<div>a lost write: <span class="valid">not shown</span> <span class="note">✗ NOT as expected'
                     '</span></div>')  # fmt: skip
    error = f'<div class="unknown">{escape(cell.error)}</div>' if cell.error else ""
    operations = sum(count for per in cell.operations.values() for count in per.values())
    return (f'<td class="cell {"agrees" if cell.agrees else "disagrees"}">{verdicts}{error}'
            f'<div class="note">{operations} ops, {cell.faults} faults, {cell.duration_s:.0f}s · '
            f'<a href="{escape(cell.report)}">report</a></div></td>')  # fmt: skip


def render_matrix(result: MatrixResult) -> str:
    config = result.config
    by_cell = {(cell.setting, cell.nemesis): cell for cell in result.cells}
    head = "<th>setting</th><th>reads / writes</th>" + "".join(f"<th>{escape(n.value)}</th>" for n in config.nemeses)
    rows = []
    for name in config.settings:
        setting = setting_named(name)
        cells = "".join(_cell_html(by_cell.get((name, nemesis))) for nemesis in config.nemeses)
        rows.append(f"<tr><th>{escape(name)}</th><td>{setting.reads.name.lower()} / {setting.writes.name.lower()}"
                    f'<div class="note">{escape(setting.pacelc)}</div></td>{cells}</tr>')  # fmt: skip
    load = (f"load average {result.load_average[0]:.2f} when it started"
            if result.load_average is not None else "load average unknown")  # fmt: skip
    error = f'<p class="invalid">error: {escape(result.error)}</p>' if result.error else ""
    status = result.status.name.lower().replace("_", " ")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>kvstore consistency × fault matrix</title>
<style>{_STYLE}</style></head><body>
<h1>Consistency × fault matrix: {escape(status)}</h1>
{error}
<p>{len(result.cells)} cells of {config.time_s:g}s of register load each ({config.keys} keys over
{config.partitions} partitions, {config.concurrency} clients of which {config.readers} only read;
faults {escape(config.intervals.describe())});
{result.duration_s / 60:.1f} minutes in all, {load}. A green cell found what its setting promises;
a red one did not (docs/consistency.md says what each expectation is, the README what a disagreement means).
Hover a verdict for its summary; each cell links to its run's report.</p>
<table><tr>{head}</tr>{"".join(rows)}</table>
</body></html>
"""
