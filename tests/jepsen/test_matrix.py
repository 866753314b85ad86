"""A small consistency × fault matrix on real clusters (needs root and `ip netns`): one negative
control per weaker setting, each showing the weakness its setting admits, while the guarantee the
setting does promise holds.

* stale reads under a partition: not linearizable, yet every read within the bound it reported;
* session reads under a partition: not linearizable, yet every session's guarantees hold;
* leader writes under a partition: acknowledged writes lost (a later read misses one, or two
  acknowledged writes claim one log position);
* lease reads under a clock running slower than the lease's drift margin: not linearizable.

The matrix with linearizable reads, and with all writes, under every fault is the full
`kvctl jepsen matrix` (README); tests/jepsen/test_jepsen.py runs linearizable reads under faults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kvstore.jepsen.checker import Validity
from kvstore.jepsen.matrix import MatrixConfig, MatrixStatus, run_matrix
from kvstore.jepsen.nemesis import Intervals, NemesisKind
from kvstore.jepsen.netns import missing_prerequisites

_WHY_NOT = missing_prerequisites()
pytestmark = [pytest.mark.skipif(_WHY_NOT is not None, reason=f"Jepsen tests skipped: {_WHY_NOT}"), pytest.mark.slow]

LOAD_S = 12.0
INTERVALS = Intervals(healthy=(1.5, 3.0), faulty=(3.0, 5.0))


# Shorter stretches for the leader cell: three or four partitions in its 12 s instead of two, so
# that some cut off a leader while writers still reach it (the matrix doubles that cell's writers).
LEADER_LOAD = {"intervals": Intervals(healthy=(1.0, 1.5), faulty=(2.5, 3.0))}


@pytest.mark.parametrize(
    ("setting", "nemesis", "weakness", "promise", "load"),
    [
        ("stale", NemesisKind.PARTITION, "linearizable", "staleness", {}),
        ("session", NemesisKind.PARTITION, "linearizable", "session", {}),
        ("leader", NemesisKind.PARTITION, None, None, LEADER_LOAD),
        ("lease", NemesisKind.CLOCK, "linearizable", None, {}),
    ],
)
def test_a_weaker_setting_shows_its_weakness_and_keeps_its_promise(
    tmp_path: Path,
    setting: str,
    nemesis: NemesisKind,
    weakness: str | None,
    promise: str | None,
    load: dict[str, Any],
) -> None:
    config = MatrixConfig(**{"out_dir": tmp_path, "time_s": LOAD_S, "settings": (setting,), "nemeses": (nemesis,),
                             "seed": 11, "intervals": INTERVALS, **load})  # fmt: skip

    result = run_matrix(config)

    (cell,) = result.cells
    verdicts = {verdict.checker: verdict.validity for verdict in cell.verdicts}
    where = f"{cell.error}; {verdicts}; see {tmp_path / cell.report}"
    if weakness is not None:
        assert verdicts[weakness] is Validity.INVALID, where
    else:
        assert cell.shows_loss, where  # by whichever checker sees it: the linearizability, session or lost-writes one
    if promise is not None:
        assert verdicts[promise] is Validity.VALID, where
    assert cell.agrees and result.status is MatrixStatus.AGREES, where
    assert cell.faults > 0
    document = json.loads((tmp_path / "matrix.json").read_text())
    assert document["cells"][0]["report"] == f"{setting}-{nemesis.value}/index.html"
    assert (tmp_path / cell.report).is_file() and (tmp_path / "matrix.html").is_file()
