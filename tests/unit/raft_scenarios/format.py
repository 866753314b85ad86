"""The scenario file format: parse, run against a handler, compare or rewrite.

A file is a sequence of blocks separated by blank lines:

    # Lines starting with '#' are comments (only before a command).
    command arg1 arg2 key=value key2=v1,v2
    ----
    expected output, one or more lines, up to the next blank line

Running a block hands its `Command` to a handler and compares what the handler returns with the
expected text. A mismatch fails with a diff that names the file and line. With rewrite enabled
(`REWRITE=1` in the environment, or `pytest --rewrite`), the file is written back with the actual
outputs instead, comments and spacing kept, so a changed behaviour can be reviewed as a diff.
Output never contains blank lines; a command that prints nothing shows `ok`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SEPARATOR = "----"


@dataclass(frozen=True, slots=True)
class Command:
    """`name arg... key=value...`; arguments keep their order."""

    name: str
    args: tuple[str, ...]
    options: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, line: str) -> Command:
        words = line.split()
        if not words:
            raise ValueError("empty command line")
        args = tuple(w for w in words[1:] if "=" not in w)
        options = tuple((key, value) for key, _, value in (w.partition("=") for w in words[1:] if "=" in w))
        return cls(words[0], args, options)

    def int_arg(self, position: int) -> int:
        return int(self.args[position])

    def option(self, key: str) -> str | None:
        for name, value in self.options:
            if name == key:
                return value
        return None


@dataclass(frozen=True, slots=True)
class Block:
    preamble: tuple[str, ...]
    """Comment and blank lines before the command, kept verbatim when rewriting."""
    command_line: str
    line_number: int
    expected: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ScenarioFile:
    blocks: tuple[Block, ...]
    epilogue: tuple[str, ...]
    """Comment and blank lines after the last block."""


def parse_scenario(text: str) -> ScenarioFile:
    lines = text.splitlines()
    blocks: list[Block] = []
    preamble: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            preamble.append(line)
            i += 1
            continue
        command_line, line_number = line, i + 1
        if i + 1 >= len(lines) or lines[i + 1] != SEPARATOR:
            raise ValueError(f"line {line_number}: expected {SEPARATOR!r} after the command {line!r}")
        i += 2
        expected: list[str] = []
        while i < len(lines) and lines[i].strip():
            expected.append(lines[i])
            i += 1
        blocks.append(Block(tuple(preamble), command_line, line_number, tuple(expected)))
        preamble = []
    return ScenarioFile(tuple(blocks), tuple(preamble))


def render_scenario(scenario: ScenarioFile, outputs: list[str]) -> str:
    lines: list[str] = []
    for block, output in zip(scenario.blocks, outputs, strict=True):
        lines.extend(block.preamble)
        lines.append(block.command_line)
        lines.append(SEPARATOR)
        lines.extend(output.splitlines())
    lines.extend(scenario.epilogue)
    return "\n".join(lines) + "\n"


def run_scenario_file(path: Path, handle: Callable[[Command], str], rewrite: bool) -> None:
    """Run every block of `path`; fail at the first mismatch, or rewrite the file."""
    scenario = parse_scenario(path.read_text())
    outputs: list[str] = []
    for block in scenario.blocks:
        actual = handle(Command.parse(block.command_line))
        if any(not line.strip() for line in actual.splitlines()):
            raise AssertionError(f"{path.name}:{block.line_number}: output of {block.command_line!r} has a blank line")
        outputs.append(actual)
        if not rewrite and tuple(actual.splitlines()) != block.expected:
            diff = "\n".join(
                difflib.unified_diff(
                    list(block.expected), actual.splitlines(), "expected", "actual", lineterm=""
                )
            )
            raise AssertionError(
                f"{path}:{block.line_number}: output of {block.command_line!r} differs "
                f"(rerun with REWRITE=1 to accept):\n{diff}"
            )
    if rewrite:
        path.write_text(render_scenario(scenario, outputs))
