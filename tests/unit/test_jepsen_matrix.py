"""The consistency × fault matrix without root: what each cell is expected to find, how a run's
verdicts become a cell that agrees or not, the files it writes and the progress it reports. The
matrix on a real cluster is tests/jepsen/test_matrix.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from kvctl.main import cli

from kvstore.jepsen.checker import Validity
from kvstore.jepsen.matrix import (
    NEMESES,
    SETTING_NAMES,
    CellProgress,
    MatrixConfig,
    MatrixResult,
    MatrixStatus,
    cell_of,
    expected,
    loss_expected,
    run_config,
    setting_named,
    write_matrix,
)
from kvstore.jepsen.nemesis import NemesisKind
from kvstore.jepsen.runner import ExitStatus, RunResult
from kvstore.jepsen.workloads import CheckOutcome
from tests.fakes.progress import RecordingProgress

VALID, INVALID = Validity.VALID, Validity.INVALID


def test_the_expectations_are_those_each_setting_promises() -> None:
    kept = {"lost-writes": VALID}
    for nemesis in NEMESES:
        assert expected("linearizable", nemesis) == expected("all", nemesis) == {
            "linearizable": VALID, "session": VALID, **kept,
        }  # fmt: skip
        assert expected("session", nemesis) == {"linearizable": INVALID, "session": VALID, **kept}
    for nemesis in NEMESES[:-1]:
        assert expected("stale", nemesis) == {"linearizable": INVALID, "staleness": VALID, **kept}
    assert expected("lease", NemesisKind.PARTITION) == {"linearizable": VALID, "session": VALID, **kept}
    assert expected("lease", NemesisKind.CLOCK) == {"linearizable": INVALID, **kept}  # beyond the drift margin
    assert expected("stale", NemesisKind.CLOCK) == {"linearizable": INVALID, "staleness": INVALID, **kept}  # too
    assert all(expected("leader", nemesis) == {} for nemesis in NEMESES)  # no single checker is sure to see...
    assert [loss_expected("leader", nemesis) for nemesis in NEMESES] == [False, False, True, False]  # ...a loss
    assert not any(loss_expected(setting, nemesis) for setting in SETTING_NAMES[:-1] for nemesis in NEMESES)
    with pytest.raises(ValueError, match="unknown setting 'eventual'"):
        expected("eventual", NemesisKind.KILL)


def test_each_cell_runs_its_setting_with_its_nemesis_in_a_directory_of_its_own(tmp_path: Path) -> None:
    config = MatrixConfig(out_dir=tmp_path, time_s=7, seed=3)
    stale = run_config(config, setting_named("stale"), NemesisKind.PAUSE, 5)
    leader = run_config(config, setting_named("leader"), NemesisKind.KILL, 6)
    assert (stale.read_consistency.name, stale.write_concern.name, stale.max_staleness_ms) == ("STALE", "MAJORITY", 1000)
    assert (leader.read_consistency.name, leader.write_concern.name, leader.max_staleness_ms) == (
        "LINEARIZABLE", "LEADER", 0,
    )  # fmt: skip
    assert stale.out_dir == tmp_path / "stale-pause" and stale.nemeses == (NemesisKind.PAUSE,)
    assert (stale.time_s, stale.keys, stale.partitions, stale.seed, leader.seed) == (7, 16, 8, 3005, 3006)
    losing = run_config(config, setting_named("leader"), NemesisKind.PARTITION, 7)
    assert (stale.concurrency, stale.readers, leader.concurrency, leader.readers) == (5, 2, 5, 2)
    assert (losing.concurrency, losing.readers) == (10, 0)  # writers enough to reach a cut-off leader


def run_result(config: MatrixConfig, setting: str, nemesis: NemesisKind, *outcomes: CheckOutcome) -> RunResult:
    run = run_config(config, setting_named(setting), nemesis, 0)
    return RunResult(run, ExitStatus.VALID, outcomes, None, {"read": {"ok": 10, "fail": 1}}, 2, 31.0)


def test_a_cell_agrees_when_every_judged_verdict_is_the_expected_one(tmp_path: Path) -> None:
    config = MatrixConfig(out_dir=tmp_path)
    lin_invalid = CheckOutcome("linearizable", INVALID, "NOT linearizable on key k")
    stale_valid = CheckOutcome("staleness", VALID, "every bounded read within its bound")
    kept = CheckOutcome("lost-writes", VALID, "no acknowledged write lost of 10")
    agreeing = cell_of(setting_named("stale"), NemesisKind.KILL,
                       run_result(config, "stale", NemesisKind.KILL, lin_invalid, stale_valid, kept), tmp_path)  # fmt: skip
    disagreeing = cell_of(setting_named("linearizable"), NemesisKind.KILL,
                          run_result(config, "linearizable", NemesisKind.KILL, lin_invalid,
                                     CheckOutcome("session", VALID, "ok"), kept), tmp_path)  # fmt: skip
    unjudged = cell_of(setting_named("leader"), NemesisKind.PAUSE,
                       run_result(config, "leader", NemesisKind.PAUSE, lin_invalid), tmp_path)  # fmt: skip
    loss_shown = cell_of(setting_named("leader"), NemesisKind.PARTITION, run_result(
        config, "leader", NemesisKind.PARTITION, CheckOutcome("linearizable", VALID, "linearizable"),
        CheckOutcome("lost-writes", INVALID, "1 acknowledged writes lost"),
    ), tmp_path)  # fmt: skip
    loss_hidden = cell_of(setting_named("leader"), NemesisKind.PARTITION,
                          run_result(config, "leader", NemesisKind.PARTITION, kept), tmp_path)  # fmt: skip
    missing_checker = cell_of(setting_named("stale"), NemesisKind.KILL,
                              run_result(config, "stale", NemesisKind.KILL, lin_invalid), tmp_path)  # fmt: skip
    assert agreeing.agrees and unjudged.agrees and loss_shown.agrees
    assert not disagreeing.agrees and not missing_checker.agrees and not loss_hidden.agrees
    assert [v.agrees for v in disagreeing.verdicts] == [False, True, True]
    assert unjudged.verdicts[0].agrees is None
    assert agreeing.report == "stale-kill/index.html"


def test_the_matrix_files_show_every_cell_and_its_verdicts(tmp_path: Path) -> None:
    config = MatrixConfig(out_dir=tmp_path, settings=("linearizable", "stale"), nemeses=(NemesisKind.KILL,))
    result = MatrixResult(config, load_average=(1.5, 1.0, 0.5), duration_s=75.0)
    result.cells.append(cell_of(setting_named("stale"), NemesisKind.KILL, run_result(
        config, "stale", NemesisKind.KILL, CheckOutcome("linearizable", INVALID, "NOT linearizable on key k"),
        CheckOutcome("staleness", VALID, "every bounded read within its bound"),
        CheckOutcome("lost-writes", VALID, "no acknowledged write lost of 10"),
    ), tmp_path))  # fmt: skip
    write_matrix(result)

    document = json.loads((tmp_path / "matrix.json").read_text())
    (cell,) = document["cells"]
    assert (document["status"], document["load_average_at_start"]) == ("agrees", [1.5, 1.0, 0.5])
    assert (cell["setting"], cell["nemesis"], cell["agrees"], cell["report"]) == ("stale", "kill", True, "stale-kill/index.html")
    assert cell["checkers"][0] == {"checker": "linearizable", "validity": "invalid", "expected": "invalid",
                                   "summary": "NOT linearizable on key k"}  # fmt: skip
    assert [s["name"] for s in document["settings"]] == ["linearizable", "stale"]
    page = (tmp_path / "matrix.html").read_text()
    assert 'href="stale-kill/index.html"' in page and "✓ as expected" in page
    assert page.count('<td class="cell">not run</td>') == 1  # linearizable × kill has not run yet


def test_the_status_says_whether_every_cell_agreed(tmp_path: Path) -> None:
    config = MatrixConfig(out_dir=tmp_path)
    result = MatrixResult(config)
    assert result.status is MatrixStatus.AGREES
    result.error = "not root"
    assert result.status is MatrixStatus.COULD_NOT_RUN
    result.error = None
    result.cells.append(cell_of(setting_named("lease"), NemesisKind.CLOCK, run_result(
        config, "lease", NemesisKind.CLOCK, CheckOutcome("linearizable", VALID, "linearizable"),
        CheckOutcome("lost-writes", VALID, "no acknowledged write lost of 10"),
    ), tmp_path))  # fmt: skip
    assert result.status is MatrixStatus.DISAGREES


def test_a_cell_is_one_phase_with_the_runs_phases_as_detail() -> None:
    outer = RecordingProgress()
    cell = CellProgress(outer, "[2/24] stale × kill", time_s=20)
    cell.phase("setup")
    cell.phase("run", total=20, unit="s")
    cell.update(5, detail="100 ok")
    cell.phase("check linearizable", unit="keys")
    cell.update(3, total=16, detail="3/16 keys")
    cell.note("skipped")
    assert outer.phases() == ["[2/24] stale × kill"]
    assert [(u.completed, u.text) for u in outer.updates()] == [
        (0, "setup"), (0, "run"), (5, "run: 100 ok"), (5, "check linearizable"), (5, "check linearizable: 3/16 keys"),
    ]
    assert outer.reports[-1].text == "[2/24] stale × kill: skipped"


def test_every_setting_has_a_name_the_cli_accepts() -> None:
    assert SETTING_NAMES == ("linearizable", "lease", "session", "stale", "all", "leader")


def test_the_command_refuses_unknown_settings_and_nemeses_before_running_anything(tmp_path: Path) -> None:
    runner = CliRunner()
    levels = runner.invoke(cli, ["jepsen", "matrix", "--levels", "stale,eventual", "--out", str(tmp_path)])
    nemeses = runner.invoke(cli, ["jepsen", "matrix", "--nemesis", "meteor", "--out", str(tmp_path)])
    assert levels.exit_code == 2 and "choose from linearizable, lease, session, stale, all, leader" in levels.output
    assert nemeses.exit_code == 2 and "unknown nemesis 'meteor'" in nemeses.output
    assert not any(tmp_path.iterdir())
