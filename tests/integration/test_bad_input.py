"""What a user sees when something is wrong: one line, a fixed exit code, never a traceback."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from kvctl.main import cli

from kvstore.node.identity import open_identity
from kvstore.storage import LevelDBEngine
from tests.integration.harness import LocalCluster, free_ports, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def single_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("one"), size=1, partitions=1)
    cluster.start_all()
    yield cluster
    cluster.stop_all()


@pytest.fixture(scope="module")
def no_quorum(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A 3-node cluster of which only node 1 runs: no partition can have a leader."""
    cluster = LocalCluster(tmp_path_factory.mktemp("no-quorum"), size=3, partitions=4)
    cluster.start(1)
    try:
        wait_for(lambda: cluster.status(1) is not None, "node 1 to answer")
        yield cluster
    finally:
        cluster.stop_all()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], result.stderr


def test_a_port_in_use_is_refused(single_node: LocalCluster, tmp_path: Path) -> None:
    result = run("-m", "kvstore.node", "--id", "1", "--listen", single_node.address(1), "--data-dir", str(tmp_path),
                 "--single-node")
    assert_one_line_error(result, 2, "is in use")


def test_a_metrics_port_in_use_is_refused(single_node: LocalCluster, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    result = run("-m", "kvstore.node", "--id", "1", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path),
                 "--single-node", "--metrics-address", single_node.address(1))
    assert_one_line_error(result, 2, f"cannot serve metrics on {single_node.address(1)}")


def test_a_data_dir_held_by_another_node_is_refused(single_node: LocalCluster) -> None:
    (port,) = free_ports(1)
    result = run("-m", "kvstore.node", "--id", "1", "--listen", f"127.0.0.1:{port}",
                 "--data-dir", str(single_node.root / "node-1"), "--single-node")
    assert_one_line_error(result, 2, "is in use by another process")


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        ([], "no --peers: list every member with --peers"),
        (["--peers", "1=127.0.0.1:{other},2=127.0.0.1:{port}"], "is not node 1's address in --peers"),
        (["--single-node", "--peers", "1=127.0.0.1:{port},2=127.0.0.1:{other}"], "--single-node, but --peers"),
    ],
    ids=["no peers and no --single-node", "--listen not its --peers entry", "--single-node with peers"],
)
def test_a_node_whose_membership_is_not_explicit_is_refused(tmp_path: Path, flags: list[str], fragment: str) -> None:
    port, other = free_ports(2)
    given = [flag.format(port=port, other=other) for flag in flags]
    result = run("-m", "kvstore.node", "--id", "1", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path),
                 *given)
    assert_one_line_error(result, 2, fragment)


@pytest.mark.parametrize(("key", "fragment"), [("", "must not be empty"), ("k" * 5000, "4096-byte limit")])
def test_bad_keys_are_usage_errors_even_without_a_cluster(key: str, fragment: str) -> None:
    (port,) = free_ports(1)
    result = run("-m", "kvctl.main", "--endpoints", f"127.0.0.1:{port}", "put", key, "v")
    assert_one_line_error(result, 2, fragment)


def test_an_unreachable_cluster_exits_3() -> None:
    (port,) = free_ports(1)
    result = run("-m", "kvctl.main", "--endpoints", f"127.0.0.1:{port}", "--timeout", "1", "get", "k")
    assert_one_line_error(result, 3, "could not reach")


def test_a_missing_key_exits_1_and_a_present_one_prints_alone(single_node: LocalCluster) -> None:
    endpoint = single_node.address(1)
    assert run("-m", "kvctl.main", "--endpoints", endpoint, "put", "greeting", "hello").returncode == 0
    present = run("-m", "kvctl.main", "--endpoints", endpoint, "get", "greeting", "-o", "simple")
    assert (present.returncode, present.stdout) == (0, "hello\n")
    assert run("-m", "kvctl.main", "--endpoints", endpoint, "get", "absent").returncode == 1


def data_dir_of_node(path: Path, node_id: int, partitions: int) -> Path:
    """A data dir as node `node_id` of a cluster of `partitions` partitions leaves it."""
    with LevelDBEngine(path / "db") as engine:
        open_identity(engine, path, node_id, partitions, lambda: "0123456789abcdef")
    return path


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--id", "2", "--partitions", "8"], "belongs to node 1, not --id 2: start it with --id 1"),
        (["--id", "1", "--partitions", "16"], "holds a cluster of 8 partitions, not --partitions 16"),
    ],
)
def test_settings_that_disagree_with_the_data_dir_are_refused(tmp_path: Path, flags: list[str], fragment: str) -> None:
    data_dir = data_dir_of_node(tmp_path / "node", 1, 8)
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    result = run("-m", "kvstore.node", *flags, "--listen", address, "--peers", f"{flags[1]}={address}",
                 "--data-dir", str(data_dir))
    assert_one_line_error(result, 2, fragment)


def test_a_corrupt_data_dir_is_one_line_naming_the_file(tmp_path: Path) -> None:
    data_dir = data_dir_of_node(tmp_path / "node", 1, 8)
    (manifest,) = (data_dir / "db").glob("MANIFEST-*")
    with manifest.open("r+b") as f:
        f.truncate(10)
    (port,) = free_ports(1)
    result = run("-m", "kvstore.node", "--id", "1", "--listen", f"127.0.0.1:{port}", "--single-node", "--partitions", "8",
                 "--data-dir", str(data_dir))
    assert_one_line_error(result, 3, f"is corrupt ({manifest})")
    assert "replace the node" in result.stderr


@pytest.mark.parametrize("endpoint", ["nonsense", "host:notaport", ":80", "host:99999"])
def test_a_malformed_endpoint_is_bad_usage_at_once(endpoint: str) -> None:
    result = run("-m", "kvctl.main", "--endpoints", endpoint, "--timeout", "60", "get", "k")
    assert_one_line_error(result, 2, f"endpoint '{endpoint}'")


def test_a_key_that_is_not_utf8_is_bad_usage_naming_hex() -> None:
    (port,) = free_ports(1)
    result = subprocess.run([sys.executable, "-m", "kvctl.main", "--endpoints", f"127.0.0.1:{port}", "get", b"k\xff"],
                            capture_output=True, text=True, timeout=60)
    assert_one_line_error(result, 2, "b'k\\xff' is not UTF-8; pass its bytes as hex digits with --hex: 6bff")


def run_within(timeout: float, *args: str) -> Result:
    """kvctl with `--timeout timeout`, in this process, checked to end within it plus 1.5 s: an
    upper bound only (the deadline's correctness, not a speed figure). In this process so that
    the bound does not measure Python starting up on a loaded machine."""
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["--timeout", f"{timeout:g}", *args])
    assert time.monotonic() - started < timeout + 1.5, result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def assert_one_line(result: Result, code: int, fragment: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == code and len(lines) == 1 and fragment in lines[0], result.stderr


def test_a_write_without_a_quorum_says_who_answered_and_that_its_outcome_is_unknown(no_quorum: LocalCluster) -> None:
    result = run_within(2, "--endpoints", ",".join(no_quorum.endpoints), "put", "k", "v")

    assert_one_line(result, 3, "within 2s: 1 of its 3 replicas answered (node 1: ")
    dead = f"nodes 2, 3 could not be reached ({no_quorum.address(2)}: connection refused; {no_quorum.address(3)}"
    assert dead in result.stderr and "a leader needs 2 of the 3" in result.stderr
    assert result.stderr.rstrip().endswith("the write's outcome is unknown: it may or may not have been applied")


def test_a_read_without_a_quorum_times_out_within_its_timeout(no_quorum: LocalCluster) -> None:
    result = run_within(2, "--endpoints", no_quorum.address(1), "get", "k")

    assert_one_line(result, 3, "1 of its 3 replicas answered (node 1: ")
    assert "outcome" not in result.stderr


def test_status_with_nodes_down_gives_one_short_reason_each(no_quorum: LocalCluster) -> None:
    result = run_within(2, "--endpoints", no_quorum.address(1), "status", "-o", "simple")

    assert_one_line(result, 3, f"no status from {no_quorum.address(2)}, {no_quorum.address(3)}")
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{no_quorum.address(1)}\t1\t")
    assert lines[1:] == [f"{no_quorum.address(n)}\terror\tconnection refused" for n in (2, 3)]
