"""kvctl's data commands as scripts see them: output formats, one-line errors, exit codes."""

from __future__ import annotations

import asyncio
import io
import json
import re
import shlex
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from kvctl.demo import run_demo
from kvctl.main import cli
from kvctl.txn import parse_compare, parse_op
from rich.console import Console

from kvstore.client import ops
from kvstore.client.ops import CompareResult, CompareTarget
from tests.fakes.fake_cluster import FakeCluster


@pytest.fixture
async def cluster() -> AsyncIterator[FakeCluster]:
    async with FakeCluster(nodes=3, partitions=8) as fake:
        yield fake


async def kvctl(
    cluster: FakeCluster | None, *arguments: str, stdin: bytes | None = None, timeout: float = 2.0
) -> Result:
    """Run kvctl in a worker thread, so this loop keeps serving the fake cluster meanwhile."""
    endpoints = ",".join(cluster.endpoints) if cluster else dead_address()
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, cli, [*arguments, "--endpoints", endpoints, "--timeout", str(timeout)], input=stdin
    )


def dead_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


async def test_get_simple_prints_the_value_alone(cluster: FakeCluster) -> None:
    put = await kvctl(cluster, "put", "greeting", "hello world")
    got = await kvctl(cluster, "get", "greeting", "-o", "simple")

    assert put.exit_code == 0 and put.stdout == "OK (partition {}, revision 1, node {})\n".format(
        cluster.partition_of(b"greeting"), cluster.leader_of(cluster.partition_of(b"greeting"))
    )
    assert got.exit_code == 0 and got.stdout == "hello world\n"


async def test_get_json_is_machine_readable(cluster: FakeCluster) -> None:
    await kvctl(cluster, "put", "k", "v")

    result = await kvctl(cluster, "get", "k", "-o", "json", "--consistency", "stale")

    document = json.loads(result.stdout)
    assert result.exit_code == 0
    assert document["found"] is True
    assert document["kv"]["key"] == "k" and document["kv"]["value"] == "v" and document["kv"]["version"] == 1
    assert document["header"]["partition"] == cluster.partition_of(b"k")
    assert document["header"]["served"] == "stale"


async def test_json_carries_non_utf8_bytes_as_base64(cluster: FakeCluster) -> None:
    await kvctl(cluster, "put", "bin", "-", stdin=b"\xff\x00")

    result = await kvctl(cluster, "get", "bin", "-o", "json")

    assert json.loads(result.stdout)["kv"]["value_base64"] == "/wA="


async def test_get_table_shows_key_and_value(cluster: FakeCluster) -> None:
    await kvctl(cluster, "put", "color", "[bold]blue")

    result = await kvctl(cluster, "get", "color")

    assert result.exit_code == 0
    assert "color" in result.stdout and "[bold]blue" in result.stdout  # stored text is not rich markup


async def test_get_of_missing_key_exits_1_with_one_line_on_stderr(cluster: FakeCluster) -> None:
    result = await kvctl(cluster, "get", "missing", "-o", "simple")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert "not found" in one_line(result.stderr)


async def test_group_options_before_the_command_work_too(cluster: FakeCluster) -> None:
    await kvctl(cluster, "put", "k", "v")
    runner = CliRunner()

    result = await asyncio.to_thread(
        runner.invoke,
        cli,
        ["-o", "simple", "get", "k"],
        env={"KVSTORE_ENDPOINTS": ",".join(cluster.endpoints)},
    )

    assert result.exit_code == 0 and result.stdout == "v\n"


async def test_put_prev_kv_and_delete(cluster: FakeCluster) -> None:
    await kvctl(cluster, "put", "k", "old")

    replaced = await kvctl(cluster, "put", "k", "new", "--prev-kv", "-o", "json")
    deleted = await kvctl(cluster, "del", "k", "-o", "simple")
    deleted_again = await kvctl(cluster, "del", "k", "-o", "simple")

    assert json.loads(replaced.stdout)["prev_kv"]["value"] == "old"
    assert deleted.stdout == "1\n" and deleted_again.stdout == "0\n"
    assert deleted_again.exit_code == 0


async def test_stale_fencing_token_exits_2(cluster: FakeCluster) -> None:
    await kvctl(cluster, "put", "k", "v", "--fencing-token", "9")

    result = await kvctl(cluster, "put", "k", "stale", "--fencing-token", "3")

    assert result.exit_code == 2 and "fencing token" in one_line(result.stderr)
    assert cluster.value_of(b"k") == b"v"


async def test_scan_formats(cluster: FakeCluster) -> None:
    for index in range(5):
        await kvctl(cluster, "put", f"user/{index}", f"v{index}")
    await kvctl(cluster, "put", "zzz", "outside")

    simple = await kvctl(cluster, "scan", "--prefix", "user/", "--limit", "3", "-o", "simple")
    keys = await kvctl(cluster, "scan", "--start", "user/3", "--keys-only", "-o", "json")
    table = await kvctl(cluster, "scan", "--prefix", "user/")

    assert simple.stdout == "user/0\tv0\nuser/1\tv1\nuser/2\tv2\n"
    document = json.loads(keys.stdout)
    assert (document["count"], document["kvs"]) == (3, [{"key": "user/3"}, {"key": "user/4"}, {"key": "zzz"}])
    assert [header["partition"] for header in document["partitions"]] == list(range(cluster.partition_count))
    assert "5 key(s)" in table.stdout and "user/4" in table.stdout


async def test_scan_refuses_prefix_with_range(cluster: FakeCluster) -> None:
    result = await kvctl(cluster, "scan", "--prefix", "a", "--start", "b")

    assert result.exit_code == 2 and "either --prefix" in one_line(result.stderr)


async def test_txn_from_the_shell(cluster: FakeCluster) -> None:
    await kvctl(cluster, "put", "{acct}:a", "10")
    swap = ["--compare", 'value("{acct}:a") = "10"', "--then", "put {acct}:a 0", "--then", "put {acct}:b 10"]

    first = await kvctl(cluster, "txn", *swap, "--else", "get {acct}:a", "-o", "simple")
    second = await kvctl(cluster, "txn", *swap, "--else", "get {acct}:a", "-o", "json")

    assert first.exit_code == 0 and first.stdout == "SUCCESS\nOK\nOK\n"
    document = json.loads(second.stdout)
    assert second.exit_code == 0 and document["succeeded"] is False
    assert document["responses"][0]["kv"]["value"] == "0"
    assert cluster.value_of(b"{acct}:b") == b"10"


async def test_txn_with_a_malformed_compare_exits_2(cluster: FakeCluster) -> None:
    result = await kvctl(cluster, "txn", "--compare", "value(k) ~ v", "--then", "put k v")

    assert result.exit_code == 2 and "expected TARGET(KEY) OP OPERAND" in one_line(result.stderr)


async def test_cross_partition_txn_exits_2(cluster: FakeCluster) -> None:
    first, second = cluster.key_in_partition(0, "a").decode(), cluster.key_in_partition(3, "b").decode()

    result = await kvctl(cluster, "txn", "--compare", f"version({first}) = 0", "--then", f"put {second} v")

    assert result.exit_code == 2 and "partition 0" in one_line(result.stderr)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('value("a b") = "x y"', ops.Compare(b"a b", CompareTarget.VALUE, CompareResult.EQUAL, value=b"x y")),
        ("version(k) > 2", ops.Compare(b"k", CompareTarget.VERSION, CompareResult.GREATER, number=2)),
        (
            "mod('k=1') != 7",
            ops.Compare(b"k=1", CompareTarget.MOD_REVISION, CompareResult.NOT_EQUAL, number=7),
        ),
        ("create(k)<3", ops.Compare(b"k", CompareTarget.CREATE_REVISION, CompareResult.LESS, number=3)),
    ],
)
def test_compare_syntax(text: str, expected: ops.Compare) -> None:
    assert parse_compare(text) == expected


def test_op_syntax() -> None:
    assert parse_op("put 'a key' 'a value'", "--then") == ops.put("a key", "a value")
    assert parse_op("del k", "--else") == ops.delete("k")


async def test_unreachable_cluster_exits_3(cluster: FakeCluster) -> None:
    result = await kvctl(None, "get", "k", timeout=0.3)

    assert result.exit_code == 3 and "could not reach" in one_line(result.stderr)


async def test_missing_argument_exits_2_on_one_line(cluster: FakeCluster) -> None:
    result = await kvctl(cluster, "get")

    assert result.exit_code == 2 and "Missing argument" in one_line(result.stderr)


async def test_cluster_commands(cluster: FakeCluster) -> None:
    members = await kvctl(cluster, "member", "list", "-o", "simple")
    partitions = await kvctl(cluster, "partitions", "-o", "json")
    status = await kvctl(cluster, "status", "-o", "json")

    assert members.stdout.splitlines() == [
        f"{node}\tnode-{node}\t{cluster.address_of(node)}\tactive" for node in (1, 2, 3)
    ]
    layout = json.loads(partitions.stdout)
    assert [row["leader"] for row in layout["partitions"]] == [cluster.leader_of(p) for p in range(8)]
    assert [row["node_id"] for row in json.loads(status.stdout)["nodes"]] == [1, 2, 3]


async def test_status_of_an_unreachable_node_exits_3(cluster: FakeCluster) -> None:
    dead = dead_address()

    result = await kvctl(cluster, "status", cluster.address_of(1), dead, "-o", "simple", timeout=0.3)

    assert result.exit_code == 3
    assert result.stdout.startswith(f"{cluster.address_of(1)}\t1\t")
    assert dead in one_line(result.stderr)


@pytest.mark.parametrize(
    "command",
    ["get", "put", "del", "scan", "txn", "status", "partitions", "member list", "member add", "member remove",
     "member replace", "lock", "lease", "lease grant", "lease keep-alive", "lease revoke", "lease ttl", "lease list"],
)
def test_every_command_help_shows_examples(command: str) -> None:
    result = CliRunner().invoke(cli, [*command.split(), "--help"])

    assert result.exit_code == 0 and "Examples:" in result.stdout and "kvctl " + command in result.stdout


async def test_tls_options_come_as_a_set_from_flags_and_environment(
    cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KVSTORE_KEY", "client.key")

    result = await kvctl(cluster, "get", "k", "--cacert", "ca.crt")

    assert result.exit_code == 2
    assert one_line(result.stderr) == "Error: --cacert, --cert and --key go together: missing --cert (or KVSTORE_CERT)"


async def test_an_unreadable_tls_file_exits_2_naming_it(cluster: FakeCluster, tmp_path: Path) -> None:
    missing = tmp_path / "ca.crt"

    result = await kvctl(cluster, "get", "k", "--cacert", str(missing), "--cert", "c.crt", "--key", "c.key")

    assert result.exit_code == 2
    assert one_line(result.stderr) == f"Error: CA certificate {missing}: No such file or directory"
# ---- bytes on the command line, malformed endpoints, what status and txn say -------------------

NOT_UTF8 = b"k\xff".decode("utf-8", "surrogateescape")  # how Python hands over a non-UTF-8 argument


@pytest.mark.parametrize(
    "arguments",
    [
        ["get", NOT_UTF8],
        ["put", "k", NOT_UTF8],
        ["del", NOT_UTF8],
        ["scan", "--prefix", NOT_UTF8],
        ["txn", "--compare", f"version({NOT_UTF8}) = 0"],
        ["txn", "--then", f"put k {NOT_UTF8}"],
    ],
    ids=["get", "put value", "del", "scan prefix", "txn compare", "txn op"],
)
async def test_an_argument_that_is_not_utf8_is_bad_usage_naming_hex(arguments: list[str]) -> None:
    result = await kvctl(None, *arguments)

    assert result.exit_code == 2
    assert "b'k\\xff' is not UTF-8; pass its bytes as hex digits with --hex: 6bff" in one_line(result.stderr)


async def test_hex_keys_and_values_round_trip(cluster: FakeCluster) -> None:
    put = await kvctl(cluster, "put", "--hex", "00ff", "c0ffee")
    got = await kvctl(cluster, "get", "--hex", "00ff", "-o", "json")
    scanned = await kvctl(cluster, "scan", "--hex", "--prefix", "00", "-o", "json")
    swapped = await kvctl(
        cluster, "txn", "--hex", "--compare", "value(00ff) = c0ffee", "--then", "put 00ff 01", "-o", "json"
    )
    deleted = await kvctl(cluster, "del", "--hex", "00ff", "-o", "simple")

    assert put.exit_code == 0 and got.exit_code == 0
    assert json.loads(got.stdout)["kv"]["value_base64"] == "wP/u"  # base64 of c0ffee
    assert [row["key_base64"] for row in json.loads(scanned.stdout)["kvs"]] == ["AP8="]
    assert json.loads(swapped.stdout)["succeeded"] is True
    assert deleted.stdout == "1\n" and cluster.value_of(b"\x00\xff") is None


async def test_a_key_that_is_not_hex_with_hex_is_bad_usage() -> None:
    result = await kvctl(None, "get", "--hex", "xyz")

    assert result.exit_code == 2 and "key 'xyz' is not hex digits (--hex)" in one_line(result.stderr)


@pytest.mark.parametrize("endpoint", ["nonsense", "host:notaport", ":80", "host:99999"])
def test_a_malformed_endpoint_exits_2_at_once(endpoint: str) -> None:
    result = CliRunner().invoke(cli, ["--endpoints", endpoint, "--timeout", "60", "get", "k"])

    assert result.exit_code == 2 and f"endpoint '{endpoint}'" in one_line(result.stderr)


async def test_a_malformed_status_address_exits_2(cluster: FakeCluster) -> None:
    result = await kvctl(cluster, "status", "nonsense")

    assert result.exit_code == 2 and "endpoint 'nonsense' is not HOST:PORT" in one_line(result.stderr)


async def test_status_gives_one_short_reason_per_node_that_is_down(
    cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "120")  # the table's width (on 80 columns the reason wraps once)
    await cluster.stop_node(3)

    result = await kvctl(cluster, "status")

    assert result.exit_code == 3
    rows = [line for line in result.stdout.splitlines() if cluster.address_of(3) in line]
    assert len(rows) == 1 and "unreachable: connection refused" in rows[0]
    assert "failed to connect" not in result.stdout  # no gRPC dump
    assert len(result.stdout.strip().splitlines()) == 2 + 3  # header, rule, one line per node


async def test_txn_says_which_branch_ran_and_what_each_operation_returned(cluster: FakeCluster) -> None:
    created = await kvctl(
        cluster, "txn", "--compare", "version({cart}:n) = 0", "--then", "put {cart}:n 1", "--then", "get {cart}:n"
    )
    refused = await kvctl(
        cluster, "txn", "--compare", "version({cart}:n) = 0", "--then", "put {cart}:n 1", "--else", "get {cart}:n",
        "--else", "del {cart}:x",
    )  # fmt: skip
    nothing = await kvctl(cluster, "txn", "--compare", "version({cart}:n) = 0", "--then", "put {cart}:n 1")

    assert created.exit_code == 0 and created.stdout.splitlines()[0].startswith(
        "SUCCESS: every compare held; ran the --then operations (partition "
    )
    assert created.stdout.splitlines()[1:] == ["  put {cart}:n 1 -> OK", "  get {cart}:n -> '1'"]
    assert refused.stdout.splitlines()[0].startswith("FAILURE: a compare did not hold; ran the --else operations")
    assert refused.stdout.splitlines()[1:] == ["  get {cart}:n -> '1'", "  del {cart}:x -> nothing to delete"]
    assert nothing.stdout.startswith("FAILURE: a compare did not hold; nothing ran (no --else operations)")


def readme_transactions() -> list[tuple[list[str], list[str]]]:
    """The README's transaction example: each kvctl command with the output shown under it."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = readme.split("A transaction compares and writes")[1].split("```sh\n")[1].split("```")[0]
    examples: list[tuple[list[str], list[str]]] = []
    for line in block.replace("\\\n", " ").splitlines():
        if line.startswith("kvctl "):
            examples.append((shlex.split(line)[1:], []))
        elif line.startswith("#   "):
            examples[-1][1].append(line.removeprefix("#   "))
    return examples


async def test_the_readme_transactions_print_what_it_shows_on_a_fresh_cluster(cluster: FakeCluster) -> None:
    examples = readme_transactions()
    assert len(examples) == 2

    for arguments, shown in examples:
        result = await kvctl(cluster, *arguments)
        printed = re.sub(r"partition \d+, revision \d+, node \d+", "partition P, revision R, node N", result.stdout)
        assert (result.exit_code, printed.splitlines()) == (0, shown)
    assert cluster.value_of(b"{cart:7}:total") == b"30"


async def test_the_demo_runs_a_transaction_across_hash_tagged_keys(cluster: FakeCluster) -> None:
    console = Console(file=io.StringIO(), width=100, record=True)

    await asyncio.to_thread(run_demo, ",".join(cluster.endpoints), None, console)

    shown = console.export_text()
    assert "first run: SUCCESS, both written" in shown
    assert "again:     FAILURE, items is '4': nothing written" in shown
    assert (cluster.value_of(b"{cart:alice}:items"), cluster.value_of(b"{cart:alice}:total")) == (b"4", b"57")


# -- consistency levels, write concerns, sessions ---------------------------------------------


async def test_get_at_a_weaker_level_says_in_json_what_served_it(cluster: FakeCluster) -> None:
    await kvctl(cluster, "put", "k", "v")

    result = await kvctl(cluster, "get", "k", "--consistency", "stale", "--max-staleness", "1.5s",
                         "--min-revision", "1", "-o", "json")  # fmt: skip

    header = json.loads(result.stdout)["header"]
    assert result.exit_code == 0
    assert header["served"] == "stale" and header["revision"] >= 1 and "staleness_ms" in header
    assert header["node_id"] != cluster.leader_of(cluster.partition_of(b"k"))  # a follower
    assert cluster.reads_served()[-1][2] == 1  # --min-revision reached the replica


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        (["--consistency", "stale", "--max-staleness", "500"], "not a duration: use e.g. 500ms or 1.5s"),
        (["--max-staleness", "500ms"], "bounds STALE reads only"),
        (["--min-revision", "-1"], "-1 is not in the range x>=0"),
        (["--session-token", "nonsense"], "bad session token"),
    ],
)
async def test_bad_read_options_are_one_line_usage_errors(
    cluster: FakeCluster, arguments: list[str], complaint: str
) -> None:
    result = await kvctl(cluster, "get", "k", *arguments)

    assert result.exit_code == 2 and complaint in one_line(result.stderr)


async def test_a_session_file_carries_read_your_writes_across_commands(
    cluster: FakeCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = tmp_path / "session"
    monkeypatch.setenv("KVSTORE_SESSION", str(session))

    put = json.loads((await kvctl(cluster, "put", "k", "v", "-o", "json")).stdout)
    got = await kvctl(cluster, "get", "k", "--consistency", "session", "-o", "json")

    revision, partition = put["header"]["revision"], put["header"]["partition"]
    assert session.read_text() == f"{partition}:{revision}\n" and put["session_token"] == f"{partition}:{revision}"
    assert json.loads(got.stdout)["header"]["served"] == "session"
    assert cluster.reads_served()[-1][2] == revision  # the next command asked for the put's revision


async def test_a_session_token_from_json_output_continues_the_session(cluster: FakeCluster) -> None:
    token = json.loads((await kvctl(cluster, "put", "k", "v", "-o", "json")).stdout)["session_token"]

    await kvctl(cluster, "get", "k", "--consistency", "session", "--session-token", token)

    assert cluster.reads_served()[-1][2] == int(token.split(":")[1])


async def test_write_concerns_and_what_a_leader_delete_can_say(cluster: FakeCluster) -> None:
    assert (await kvctl(cluster, "put", "k", "v", "--concern", "all")).exit_code == 0
    deleted = await kvctl(cluster, "del", "k", "--concern", "leader")
    in_json = await kvctl(cluster, "del", "k", "--concern", "leader", "-o", "json")
    help_text = (await kvctl(None, "put", "--help")).stdout

    assert one_line(deleted.stdout).startswith("accepted by the leader, not applied yet")
    assert json.loads(in_json.stdout)["deleted"] is None
    assert "IS LOST if that leader fails" in " ".join(help_text.split())
