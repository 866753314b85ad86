"""What a user sees when something is wrong: one line, a fixed exit code, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore.node.identity import open_identity
from kvstore.storage import LevelDBEngine
from tests.integration.harness import LocalCluster, free_ports

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def single_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("one"), size=1, partitions=1)
    cluster.start_all()
    yield cluster
    cluster.stop_all()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], result.stderr


def test_a_port_in_use_is_refused(single_node: LocalCluster, tmp_path: Path) -> None:
    result = run("-m", "kvstore.node", "--id", "1", "--listen", single_node.address(1), "--data-dir", str(tmp_path))
    assert_one_line_error(result, 2, "is in use")


def test_a_data_dir_held_by_another_node_is_refused(single_node: LocalCluster) -> None:
    (port,) = free_ports(1)
    result = run("-m", "kvstore.node", "--id", "1", "--listen", f"127.0.0.1:{port}",
                 "--data-dir", str(single_node.root / "node-1"))
    assert_one_line_error(result, 2, "is in use by another process")


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
    result = run("-m", "kvstore.node", "--id", "1", "--listen", f"127.0.0.1:{port}", "--partitions", "8",
                 "--data-dir", str(data_dir))
    assert_one_line_error(result, 3, f"is corrupt ({manifest})")
    assert "replace the node" in result.stderr
