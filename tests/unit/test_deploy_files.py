"""The deploy files, checked offline (no Docker, no Kubernetes here): they parse and validate
against their formats' schemas, pass only settings `kvstore-node` has, and agree with each other."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import dockerfile
import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from kvstore.address import parse_address
from kvstore.node.config import parse_peers
from kvstore.node.http import PATHS
from kvstore.node.main import build_config, cli

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBERNETES_VERSION = "1.30"  # the oldest release the manifests are meant for


@cache
def node_help() -> tuple[frozenset[str], frozenset[str]]:
    """(flags, environment variables) that `kvstore-node --help` names."""
    result = CliRunner().invoke(cli, ["--help"], prog_name="kvstore-node", terminal_width=200)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    return frozenset(re.findall(r"--[a-z][a-z-]+", text)), frozenset(re.findall(r"\bKVSTORE_NODE_[A-Z_]+\b", text))


def check_settings(environment: dict[str, str], args: list[str]) -> dict[str, Any]:
    """Every KVSTORE_NODE_* variable and flag is one `kvstore-node --help` names; together they
    parse into a valid node configuration. Returns the parsed settings."""
    flags, variables = node_help()
    unknown_variables = sorted(name for name in environment if name.startswith("KVSTORE_") and name not in variables)
    assert not unknown_variables, f"not in kvstore-node --help: {unknown_variables}"
    unknown_flags = sorted(flag for flag in args if flag.startswith("--") and flag.split("=")[0] not in flags)
    assert not unknown_flags, f"not in kvstore-node --help: {unknown_flags}"
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        context = cli.make_context("kvstore-node", list(args))
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name)
            else:
                os.environ[name] = old
    params = dict(context.params)
    params.pop("log_format")
    build_config(dict(params))  # raises ConfigError on any bad setting
    return params


# -- Dockerfile ---------------------------------------------------------------------------------


@cache
def dockerfile_commands() -> tuple[dockerfile.Command, ...]:
    return dockerfile.parse_file(str(DEPLOY / "Dockerfile"))


def final_stage() -> list[dockerfile.Command]:
    commands = list(dockerfile_commands())
    last_from = max(i for i, c in enumerate(commands) if c.cmd == "FROM")
    return commands[last_from:]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for command in final_stage():
        if command.cmd == "ENV":
            values = command.value
            env.update(zip(values[::2], values[1::2], strict=True))
    return env


def image_ports() -> set[int]:
    return {int(port) for c in final_stage() if c.cmd == "EXPOSE" for port in c.value}


def image_volume() -> str:
    (volume,) = [value for c in final_stage() if c.cmd == "VOLUME" for value in c.value]
    return volume


def image_user() -> str:
    (user,) = [c.value[0] for c in final_stage() if c.cmd == "USER"]
    return user


def test_the_dockerfile_is_multi_stage_non_root_with_a_volume_and_a_healthcheck() -> None:
    commands = dockerfile_commands()
    assert sum(c.cmd == "FROM" for c in commands) >= 2
    stage = final_stage()
    assert image_user().split(":")[0] not in ("root", "0")
    (entrypoint,) = [c for c in stage if c.cmd == "ENTRYPOINT"]
    assert entrypoint.json and entrypoint.value == ("kvstore-node",)
    env = image_env()
    # What deploy/README.md's single-node `docker run` adds to the image's environment.
    settings = check_settings({**env, "KVSTORE_NODE_ID": "1", "KVSTORE_NODE_PEERS": "1=127.0.0.1:2379"}, [])
    assert str(settings["data_dir"]) == image_volume()
    listen_port = parse_address(env["KVSTORE_NODE_LISTEN"])[1]
    metrics_port = parse_address(env["KVSTORE_NODE_METRICS_ADDRESS"])[1]
    assert image_ports() == {listen_port, metrics_port}
    (healthcheck,) = [c for c in stage if c.cmd == "HEALTHCHECK"]
    probe = " ".join(healthcheck.value)
    assert "/readyz" in probe and "KVSTORE_NODE_METRICS_ADDRESS" in probe


# -- compose ------------------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return document


def test_the_compose_file_is_a_valid_compose_file() -> None:
    schema = json.loads((files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(compose())


def test_the_compose_cluster_is_three_nodes_that_agree_with_the_image() -> None:
    services = compose()["services"]
    assert len(services) == 3
    listen_port = parse_address(image_env()["KVSTORE_NODE_LISTEN"])[1]
    metrics_port = parse_address(image_env()["KVSTORE_NODE_METRICS_ADDRESS"])[1]
    ids = set()
    for name, service in services.items():
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        environment = {k: str(v) for k, v in service["environment"].items()}
        settings = check_settings({**image_env(), **environment}, [])
        peers = parse_peers(settings["peers"])
        node_id = settings["node_id"]
        ids.add(node_id)
        assert peers[node_id] == f"{name}:{listen_port}", "a node's own address is its service name"
        assert set(peers.values()) == {f"{other}:{listen_port}" for other in services}
        volume, target = service["volumes"][0].split(":")
        assert target == image_volume() and volume in compose()["volumes"]
        assert {int(port.rsplit(":", 1)[1]) for port in service["ports"]} <= image_ports()
        assert all(int(port.rsplit(":", 1)[1]) == metrics_port for port in service["ports"])
    assert ids == {1, 2, 3}


# -- Kubernetes ---------------------------------------------------------------------------------


@cache
def kubernetes_objects() -> tuple[dict[str, Any], ...]:
    documents = yaml.safe_load_all((DEPLOY / "kubernetes" / "kvstore.yaml").read_text())
    return tuple(document for document in documents if document)


def objects_of(kind: str) -> list[dict[str, Any]]:
    return [o for o in kubernetes_objects() if o["kind"] == kind]


@pytest.mark.parametrize("index", range(4))
def test_each_kubernetes_object_validates_against_the_api_schema(index: int) -> None:
    obj = kubernetes_objects()[index]
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_manifests_hold_a_statefulset_its_services_and_a_disruption_budget() -> None:
    kinds = sorted(o["kind"] for o in kubernetes_objects())
    assert kinds == ["PodDisruptionBudget", "Service", "Service", "StatefulSet"]
    (statefulset,) = objects_of("StatefulSet")
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    headless = next(s for s in objects_of("Service") if s["spec"].get("clusterIP") == "None")
    assert headless["metadata"]["name"] == statefulset["spec"]["serviceName"]
    assert headless["spec"]["publishNotReadyAddresses"] is True
    for selector in (*(s["spec"]["selector"] for s in objects_of("Service")),
                     statefulset["spec"]["selector"]["matchLabels"],
                     objects_of("PodDisruptionBudget")[0]["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= pod_labels.items()
    claim = statefulset["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


def container() -> dict[str, Any]:
    (statefulset,) = objects_of("StatefulSet")
    (only,) = statefulset["spec"]["template"]["spec"]["containers"]
    return only


def container_env(namespace: str) -> dict[str, str]:
    """The container's plain environment values, with `$(VAR)` references expanded as the
    kubelet does; a downward-API value is `namespace` (the only one used) or its field path."""
    resolved: dict[str, str] = {}
    for item in container()["env"]:
        if "valueFrom" in item:
            assert item["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
            resolved[item["name"]] = namespace
        else:
            resolved[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: resolved[m.group(1)], item["value"])
    return resolved


def test_the_pods_get_ids_1_to_3_from_their_names_and_find_each_other_by_dns(tmp_path: Path) -> None:
    (statefulset,) = objects_of("StatefulSet")
    name, service = statefulset["metadata"]["name"], statefulset["spec"]["serviceName"]
    replicas = statefulset["spec"]["replicas"]
    spec = container()
    # Run the pod's command with a stand-in kvstore-node that prints what it was given.
    stand_in = tmp_path / "kvstore-node"
    stand_in.write_text('#!/bin/sh\necho "$@"\n')
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IEXEC)
    environment = container_env("shop")
    grpc_port = next(p["containerPort"] for p in spec["ports"] if p["name"] == "grpc")
    for ordinal in range(replicas):
        pod = f"{name}-{ordinal}"
        run = subprocess.run([*spec["command"], *spec["args"]], capture_output=True, text=True, check=True,
                             env={"PATH": f"{tmp_path}:/usr/bin:/bin", "HOSTNAME": pod})
        args = run.stdout.split()
        assert args == ["--id", str(ordinal + 1)]
        settings = check_settings({k: v for k, v in environment.items() if k.startswith("KVSTORE_")}, args)
        peers = parse_peers(settings["peers"])
        assert peers[ordinal + 1] == f"{pod}.{service}.shop.svc:{grpc_port}"
    assert sorted(peers) == list(range(1, replicas + 1))
    unused = [k for k in environment if not k.startswith("KVSTORE_")
              and not any(f"$({k})" in item.get("value", "") for item in spec["env"])]
    assert not unused, f"environment variables nothing reads: {unused}"


def test_ports_paths_user_and_probes_agree_with_the_image() -> None:
    spec = container()
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    assert set(ports.values()) == image_ports()
    environment = container_env("default")
    assert parse_address(environment["KVSTORE_NODE_LISTEN"])[1] == ports["grpc"]
    assert parse_address(environment["KVSTORE_NODE_METRICS_ADDRESS"])[1] == ports["metrics"]
    assert environment["KVSTORE_NODE_DATA_DIR"] == image_volume()
    data_mount = next(m for m in spec["volumeMounts"] if m["name"] == "data")
    assert data_mount["mountPath"] == image_volume()
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        http = spec[probe]["httpGet"]
        assert http["port"] == "metrics" and http["path"] in PATHS, probe
    assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz"
    pod_security = objects_of("StatefulSet")[0]["spec"]["template"]["spec"]["securityContext"]
    assert str(pod_security["runAsUser"]) == image_user().split(":")[0]
    for service in objects_of("Service"):
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports and port["port"] == ports[port["targetPort"]]
