"""kvstore-node settings: flags over environment over TOML over defaults; bad input is one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from kvstore.node.config import ConfigError, parse_peers
from kvstore.node.main import _wants_debug, build_config, cli
from kvstore.tls import TlsConfig

NO_FLAGS = {
    "config": None, "node_id": None, "listen": None, "peers": None, "single_node": None, "data_dir": None,
    "partitions": None,
    "replication_factor": None, "vnodes": None, "tick_ms": None, "election_ticks": None, "max_key_bytes": None,
    "max_value_bytes": None, "snapshot_entries": None, "initial_cluster_token": None, "log_level": None, "cert": None,
    "key": None, "ca": None, "peer_cert": None, "peer_key": None, "peer_ca": None, "max_request_bytes": None,
    "max_concurrent_streams": None, "metrics_address": None,
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


def test_a_single_node_cluster_is_asked_for_explicitly() -> None:
    config = build_config(flags(node_id=1, listen="127.0.0.1:2379", data_dir="d", single_node=True))
    assert config.peers == {1: "127.0.0.1:2379"}


def test_listening_on_every_interface_is_served_at_the_peers_address() -> None:
    config = build_config(flags(node_id=2, listen="0.0.0.0:2380", data_dir="d",
                                peers="1=kv-1.example:2379,2=kv-2.example:2380"))
    assert config.listen == "0.0.0.0:2380" and config.peers[2] == "kv-2.example:2380"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"listen": "127.0.0.1:1", "data_dir": "d"}, "missing --id"),
        ({"node_id": 1, "listen": "127.0.0.1:1", "data_dir": "d"}, "no --peers: .* or pass --single-node"),
        ({"node_id": 1, "listen": "127.0.0.1:1", "data_dir": "d", "single_node": True,
          "peers": "1=127.0.0.1:1,2=127.0.0.1:2"}, "--single-node, but --peers names 2 members"),
        ({"node_id": 1, "listen": "127.0.0.1:1", "data_dir": "d", "single_node": True, "partitions": 6},
         "power of two"),
        ({"node_id": 3, "listen": "127.0.0.1:1", "data_dir": "d", "peers": "1=127.0.0.1:1"}, "not in --peers"),
        ({"node_id": 1, "listen": "127.0.0.1:2379", "data_dir": "d", "peers": "1=127.0.0.1:2380,2=127.0.0.1:2381"},
         r"--listen 127.0.0.1:2379 is not node 1's address in --peers \(127.0.0.1:2380\)"),
        ({"node_id": 1, "listen": "10.0.0.1:2379", "data_dir": "d", "peers": "1=10.0.0.2:2379"},
         "is not node 1's address in --peers"),
        ({"node_id": 1, "listen": "0.0.0.0:2379", "data_dir": "d", "peers": "1=10.0.0.2:2380"},
         "listen on 0.0.0.0:2380 to serve every interface"),
        ({"node_id": 1, "listen": "localhost", "data_dir": "d", "single_node": True}, "--listen 'localhost' is not HOST:PORT"),
        ({"node_id": 1, "listen": "127.0.0.1:2379", "data_dir": "d", "peers": "1=127.0.0.1:2379,2=nohostport"},
         "--peers entry 2=nohostport: 'nohostport' is not HOST:PORT"),
        ({"node_id": 1, "listen": "h:99999", "data_dir": "d", "single_node": True}, "port 99999 is not between"),
        ({"node_id": 1, "listen": "127.0.0.1:1", "data_dir": "d", "single_node": True, "metrics_address": "9090"},
         "--metrics-address '9090' is not HOST:PORT"),
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
        parse_peers("one=a:1")


@pytest.mark.parametrize(
    ("argv", "environ", "debug"),
    [
        (["kvstore-node", "--log-level", "debug"], {}, True),
        (["kvstore-node", "--log-level=debug"], {}, True),
        (["kvstore-node"], {"KVSTORE_NODE_LOG_LEVEL": "debug"}, True),
        (["kvstore-node", "--log-level", "info"], {"KVSTORE_NODE_LOG_LEVEL": "debug"}, False),  # the flag wins
        (["kvstore-node", "--id", "1"], {}, False),
    ],
)
def test_grpc_chatter_is_let_through_only_with_debug_logging(argv: list[str], environ: dict[str, str],
                                                             debug: bool) -> None:
    assert _wants_debug(argv, environ) is debug


def tls_flags(**given: object) -> dict[str, object]:
    return flags(node_id=1, listen="127.0.0.1:1", data_dir="d", single_node=True, **given)


def test_tls_files_come_as_sets_and_peer_files_default_to_the_client_facing_ones() -> None:
    config = build_config(tls_flags(cert="n.crt", key="n.key", ca="ca.crt"))

    assert config.tls() == TlsConfig(ca=Path("ca.crt"), cert=Path("n.crt"), key=Path("n.key"))
    assert config.peer_tls() == config.tls()
    separate = build_config(tls_flags(cert="n.crt", key="n.key", ca="ca.crt", peer_cert="p.crt", peer_key="p.key",
                                      peer_ca="pca.crt"))
    assert separate.peer_tls() == TlsConfig(ca=Path("pca.crt"), cert=Path("p.crt"), key=Path("p.key"))
    assert build_config(tls_flags()).tls() is None


def test_tls_files_come_from_the_toml_file_too(tmp_path: Path) -> None:
    toml = tmp_path / "node.toml"
    toml.write_text('node_id = 1\nlisten = "127.0.0.1:1"\ndata_dir = "d"\nsingle_node = true\ncert = "n.crt"\nkey = "n.key"\n'
                    'ca = "ca.crt"\n')

    assert build_config(flags(config=str(toml))).tls() == TlsConfig(Path("ca.crt"), Path("n.crt"), Path("n.key"))


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"cert": "n.crt"}, "--cert, --key, --ca go together: missing --key, --ca"),
        ({"cert": "n.crt", "key": "n.key", "ca": "ca.crt", "peer_ca": "p.crt"},
         "--peer-cert, --peer-key, --peer-ca go together: missing --peer-cert, --peer-key"),
        ({"peer_cert": "p.crt", "peer_key": "p.key", "peer_ca": "p.crt"}, "need --cert, --key and --ca too"),
        ({"max_request_bytes": 1000}, "--max-request-bytes must be at least 1052673"),
        ({"max_concurrent_streams": 0}, "max_concurrent_streams must be positive"),
    ],
)
def test_incomplete_tls_settings_and_bad_limits_are_refused_in_one_line(given: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        build_config(tls_flags(**given))
    assert "\n" not in str(raised.value)


def test_a_node_given_part_of_a_set_through_the_environment_refuses_to_start(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--id", "1", "--listen", "127.0.0.1:1", "--data-dir", str(tmp_path), "--single-node"],
                                env={"KVSTORE_NODE_PEER_CERT": "p.crt"})

    assert result.exit_code == 2
    assert result.output == "kvstore-node: --peer-cert, --peer-key, --peer-ca go together: missing --peer-key, --peer-ca\n"


def test_a_node_whose_certificate_file_is_missing_refuses_to_start_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.crt"
    result = CliRunner().invoke(cli, ["--id", "1", "--listen", "127.0.0.1:1", "--data-dir", str(tmp_path / "d"), "--single-node",
                                      "--cert", str(missing), "--key", str(missing), "--ca", str(missing)])

    assert result.exit_code == 2
    assert result.output == f"kvstore-node: CA certificate {missing}: No such file or directory\n"
