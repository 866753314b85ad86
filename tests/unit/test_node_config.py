"""kvstore-node settings: flags over environment over TOML over defaults; bad input is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvstore.node.config import ConfigError, parse_peers
from kvstore.node.main import build_config

NO_FLAGS = {
    "config": None, "node_id": None, "listen": None, "peers": None, "data_dir": None, "partitions": None,
    "replication_factor": None, "vnodes": None, "tick_ms": None, "election_ticks": None, "max_key_bytes": None,
    "max_value_bytes": None, "snapshot_entries": None, "initial_cluster_token": None, "log_level": None,
}


def flags(**given: object) -> dict[str, object]:
    return {**NO_FLAGS, **given}


def test_flags_override_the_toml_file_which_overrides_defaults(tmp_path: Path) -> None:
    toml = tmp_path / "node.toml"
    toml.write_text('node_id = 2\nlisten = "127.0.0.1:2380"\ndata_dir = "d"\npartitions = 16\n'
                    'peers = { 1 = "127.0.0.1:2379", 2 = "127.0.0.1:2380" }\n')
    config = build_config(flags(config=str(toml), partitions=32))
    assert config.node_id == 2
    assert config.partitions == 32  # the flag wins
    assert config.peers == {1: "127.0.0.1:2379", 2: "127.0.0.1:2380"}
    assert config.replication_factor == 3  # the default


def test_a_single_node_needs_no_peers() -> None:
    config = build_config(flags(node_id=1, listen="127.0.0.1:2379", data_dir="d"))
    assert config.peers == {1: "127.0.0.1:2379"}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"listen": "127.0.0.1:1", "data_dir": "d"}, "missing --id"),
        ({"node_id": 1, "listen": "127.0.0.1:1", "data_dir": "d", "partitions": 6}, "power of two"),
        ({"node_id": 3, "listen": "127.0.0.1:1", "data_dir": "d", "peers": "1=127.0.0.1:1"}, "not in --peers"),
    ],
)
def test_bad_settings_are_reported_in_one_line(given: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        build_config(flags(**given))
    assert "\n" not in str(raised.value)


def test_unknown_toml_settings_are_refused(tmp_path: Path) -> None:
    toml = tmp_path / "node.toml"
    toml.write_text("node_id = 1\nlisten_adress = 'x'\n")
    with pytest.raises(ConfigError, match="unknown settings listen_adress"):
        build_config(flags(config=str(toml)))


def test_peers_parse_and_reject_garbage() -> None:
    assert parse_peers("1=a:1, 2=b:2") == {1: "a:1", 2: "b:2"}
    with pytest.raises(ConfigError, match="expected ID=HOST:PORT"):
        parse_peers("1=nohostport")
