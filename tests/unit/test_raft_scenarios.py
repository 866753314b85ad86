"""Data-driven Raft scenarios: one test per file in raft_scenarios/testdata.

Each file is a script of commands for `InteractionEnv` with the output each must print (see
raft_scenarios/format.py). To accept changed outputs, run
`REWRITE=1 .venv/bin/pytest tests/unit/test_raft_scenarios.py` (or pass `--rewrite`) and review
the diff.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.raft_scenarios.env import InteractionEnv
from tests.unit.raft_scenarios.format import Command, run_scenario_file

TESTDATA = Path(__file__).parent / "raft_scenarios" / "testdata"
REQUIRED_SCENARIOS = {
    "figure8.txt",
    "prevote_rejoin.txt",
    "checkquorum_stepdown.txt",
    "transfer_leader.txt",
    "learner_promote.txt",
    "remove_leader.txt",
    "snapshot_catchup.txt",
    "readindex.txt",
    "applied_by_all.txt",
}


def test_required_scenarios_exist() -> None:
    present = {path.name for path in TESTDATA.glob("*.txt")}
    assert REQUIRED_SCENARIOS <= present, f"missing: {sorted(REQUIRED_SCENARIOS - present)}"


@pytest.mark.parametrize("path", sorted(TESTDATA.glob("*.txt")), ids=lambda p: p.stem)
def test_scenario(path: Path, rewrite: bool) -> None:
    env = InteractionEnv()
    run_scenario_file(path, env.handle, rewrite)


SAMPLE = """# a comment
echo a b
----
a b

# another
echo
----
ok
"""


def echo(command: Command) -> str:
    return " ".join(command.args) or "ok"


def test_a_matching_file_passes_and_a_mismatch_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "sample.txt"
    path.write_text(SAMPLE)
    run_scenario_file(path, echo, rewrite=False)
    path.write_text(SAMPLE.replace("a b\n\n", "a c\n\n"))
    with pytest.raises(AssertionError, match=r"sample.txt:2: output of 'echo a b' differs"):
        run_scenario_file(path, echo, rewrite=False)


def test_rewrite_replaces_outputs_and_keeps_comments(tmp_path: Path) -> None:
    path = tmp_path / "sample.txt"
    path.write_text(SAMPLE.replace("a b\n\n", "stale\nlines\n\n"))
    run_scenario_file(path, echo, rewrite=True)
    assert path.read_text() == SAMPLE


def test_command_line_parsing() -> None:
    command = Command.parse("deliver-msgs 1 2 drop=3,4 type=APPEND")
    assert command.name == "deliver-msgs"
    assert command.args == ("1", "2")
    assert command.option("drop") == "3,4"
    assert command.option("type") == "APPEND"
    assert command.option("missing") is None
