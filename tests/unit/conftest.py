"""Options for the unit tests.

`pytest tests/unit/test_raft_scenarios.py --rewrite` (or `REWRITE=1` in the environment) rewrites
the Raft scenario files under tests/unit/raft_scenarios/testdata with the actual outputs instead
of failing; review the resulting diff before keeping it.
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--rewrite",
        action="store_true",
        default=False,
        help="rewrite Raft scenario files with the actual outputs (same as REWRITE=1)",
    )


@pytest.fixture
def rewrite(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--rewrite")) or os.environ.get("REWRITE") == "1"
