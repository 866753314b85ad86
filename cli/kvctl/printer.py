"""kvctl's one printer: every command's result as a table, JSON or bare values (`-o`)."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Sequence
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from kvctl.connection import OutputFormat
from kvstore.client import (
    ClusterLayout,
    DeleteResult,
    GetOp,
    GetResult,
    KeyValue,
    Lease,
    LeaseStatus,
    Lock,
    Member,
    NodeStatus,
    Op,
    OpResult,
    PartitionInfo,
    PutOp,
    PutResult,
    ResponseHeader,
    TxnResult,
    WatchEvent,
)
from kvstore.client.types import Alarm, AuthStatus, RateLimit, Role, User
from kvstore.names import lease_partition


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="backslashreplace")


def _bytes_field(name: str, data: bytes) -> dict[str, str]:
    """JSON stays lossless: UTF-8 as text under `name`, anything else base64 under `name_base64`."""
    try:
        return {name: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_base64": base64.b64encode(data).decode("ascii")}


def kv_json(kv: KeyValue) -> dict[str, Any]:
    return {
        **_bytes_field("key", kv.key),
        **_bytes_field("value", kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "lease": kv.lease,
    }


def header_json(header: ResponseHeader) -> dict[str, Any]:
    return {
        "partition": header.partition,
        "revision": header.revision,
        "served": header.served.name.lower(),
        "node_id": header.node_id,
        "epoch": header.epoch,
        "staleness_ms": header.staleness_ms,
    }


def op_result_json(result: OpResult) -> dict[str, Any]:
    header = {"header": header_json(result.header)}
    if isinstance(result, GetResult):
        return {"op": "get", "found": result.found, "kv": result.kv and kv_json(result.kv), **header}
    if isinstance(result, PutResult):
        return {"op": "put", "prev_kv": result.prev_kv and kv_json(result.prev_kv), **header}
    return {
        "op": "delete",
        "deleted": result.deleted,
        "prev_kv": result.prev_kv and kv_json(result.prev_kv),
        **header,
    }


def _op_text(op: Op) -> str:
    if isinstance(op, PutOp):
        return f"put {_text(op.key)} {_text(op.value)}"
    return f"{'get' if isinstance(op, GetOp) else 'del'} {_text(op.key)}"


def _returned(result: OpResult) -> str:
    """What one operation of a transaction returned, in a few words."""
    if isinstance(result, GetResult):
        return repr(_text(result.kv.value)) if result.kv is not None else "not found"
    if isinstance(result, PutResult):
        return "OK"
    return "deleted" if result.deleted else "nothing to delete"


def _served(header: ResponseHeader) -> str:
    return f"partition {header.partition}, revision {header.revision}, served {header.served.name.lower()}"


class Printer:
    """Writes to stdout in one format; made per command, after options are parsed."""

    def __init__(self, output: OutputFormat) -> None:
        self.output = output

    # ---- low-level writers -------------------------------------------------------------------

    def _json(self, document: dict[str, Any]) -> None:
        click.echo(json.dumps(document, sort_keys=True, ensure_ascii=False))

    def _table(self, table: Table) -> None:
        Console(file=sys.stdout, highlight=False).print(table)

    def _line(self, text: str) -> None:
        click.echo(text)

    def _raw(self, *parts: bytes) -> None:
        """Bytes exactly as stored, joined by tabs, newline-terminated (simple output)."""
        click.echo(b"\t".join(parts))

    @staticmethod
    def _kv_table(kvs: Sequence[KeyValue], keys_only: bool = False, caption: str | None = None) -> Table:
        table = Table(caption=caption)
        table.add_column("KEY")
        if not keys_only:
            table.add_column("VALUE")
            for column in ("VERSION", "CREATE_REV", "MOD_REV", "LEASE"):
                table.add_column(column, justify="right")
        for kv in kvs:
            # Text cells: stored data is never interpreted as rich markup.
            cells = [Text(_text(kv.key))]
            if not keys_only:
                cells += [Text(_text(kv.value))] + [
                    Text(str(number))
                    for number in (kv.version, kv.create_revision, kv.mod_revision, kv.lease)
                ]
            table.add_row(*cells)
        return table

    # ---- results -----------------------------------------------------------------------------

    def get(self, result: GetResult) -> None:
        if self.output is OutputFormat.JSON:
            self._json(op_result_json(result))
        elif result.kv is None:
            return  # the caller reports the missing key on stderr and exits 1
        elif self.output is OutputFormat.SIMPLE:
            self._raw(result.kv.value)
        else:
            self._table(self._kv_table([result.kv], caption=_served(result.header)))

    def put(self, result: PutResult) -> None:
        if self.output is OutputFormat.JSON:
            self._json(op_result_json(result))
        elif self.output is OutputFormat.SIMPLE:
            self._line("OK")
            if result.prev_kv is not None:
                self._raw(result.prev_kv.value)
        else:
            self._line(f"OK ({_served(result.header)})")
            if result.prev_kv is not None:
                self._table(self._kv_table([result.prev_kv], caption="previous value"))

    def delete(self, result: DeleteResult) -> None:
        if self.output is OutputFormat.JSON:
            self._json(op_result_json(result))
        elif self.output is OutputFormat.SIMPLE:
            self._line("1" if result.deleted else "0")
            if result.prev_kv is not None:
                self._raw(result.prev_kv.value)
        else:
            self._line(f"{'deleted' if result.deleted else 'nothing to delete'} ({_served(result.header)})")
            if result.prev_kv is not None:
                self._table(self._kv_table([result.prev_kv], caption="previous value"))

    def scan(self, kvs: Sequence[KeyValue], keys_only: bool) -> None:
        if self.output is OutputFormat.JSON:
            rows = [_bytes_field("key", kv.key) if keys_only else kv_json(kv) for kv in kvs]
            self._json({"count": len(kvs), "kvs": rows})
        elif self.output is OutputFormat.SIMPLE:
            for kv in kvs:
                self._raw(*((kv.key,) if keys_only else (kv.key, kv.value)))
        else:
            self._table(self._kv_table(kvs, keys_only, caption=f"{len(kvs)} key(s)"))

    def txn(self, result: TxnResult, ran: Sequence[Op]) -> None:
        """The outcome, then each operation that `ran` (the branch taken) with what it returned."""
        branch = "then" if result.succeeded else "else"
        if self.output is OutputFormat.JSON:
            self._json(
                {
                    "succeeded": result.succeeded,
                    "ran": branch,
                    "responses": [
                        {**_bytes_field("key", op.key), **op_result_json(response)}
                        for op, response in zip(ran, result.responses, strict=True)
                    ],
                    "header": header_json(result.header),
                }
            )
            return
        if self.output is OutputFormat.SIMPLE:
            self._line("SUCCESS" if result.succeeded else "FAILURE")
            for response in result.responses:
                if isinstance(response, GetResult):
                    if response.kv is not None:
                        self.get(response)
                elif isinstance(response, PutResult):
                    self.put(response)
                else:
                    self.delete(response)
            return
        outcome = "SUCCESS: every compare held" if result.succeeded else "FAILURE: a compare did not hold"
        ran_what = f"ran the --{branch} operations" if ran else f"nothing ran (no --{branch} operations)"
        self._line(f"{outcome}; {ran_what} ({_served(result.header)})")
        for op, response in zip(ran, result.responses, strict=True):
            self._line(f"  {_op_text(op)} -> {_returned(response)}")

    def statuses(self, statuses: Sequence[NodeStatus | tuple[str, str]]) -> None:
        """One row per node; a (address, error) pair for a node that did not answer."""
        if self.output is OutputFormat.JSON:
            rows = [
                {"address": status[0], "error": status[1]}
                if isinstance(status, tuple)
                else {
                    "node_id": status.node_id,
                    "address": status.address,
                    "version": status.version,
                    "epoch": status.epoch,
                    "partitions_hosted": status.partitions_hosted,
                    "partitions_led": status.partitions_led,
                    "db_size_bytes": status.db_size_bytes,
                    "stored_bytes": status.stored_bytes,
                    "quota_backend_bytes": status.quota_backend_bytes,
                    "alarms": [{"node_id": alarm.node_id, "type": alarm.type} for alarm in status.alarms],
                }
                for status in statuses
            ]
            self._json({"nodes": rows})
            return
        if self.output is OutputFormat.SIMPLE:
            for status in statuses:
                if isinstance(status, tuple):
                    self._line(f"{status[0]}\terror\t{status[1]}")
                else:
                    self._line(
                        f"{status.address}\t{status.node_id}\t{status.epoch}\t"
                        f"{status.partitions_hosted}\t{status.partitions_led}"
                    )
            for alarm in _alarms(statuses):
                self._line(f"alarm\t{alarm.type}\t{alarm.node_id}")
            return
        # Compact, and only STATE wraps: a down node's reason fits an 80-column terminal.
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        for column in ("NODE", "ADDRESS", "STATE", "VERSION", "EPOCH", "HOSTED", "LED", "DB SIZE", "STORED"):
            table.add_column(column, no_wrap=column != "STATE")
        for status in statuses:
            if isinstance(status, tuple):
                table.add_row("?", Text(status[0]), Text(f"unreachable: {status[1]}"), "", "", "", "", "", "")
            else:
                table.add_row(
                    str(status.node_id),
                    Text(status.address),
                    "up",
                    Text(status.version),
                    str(status.epoch),
                    str(status.partitions_hosted),
                    str(status.partitions_led),
                    str(status.db_size_bytes),
                    _stored(status),
                )
        self._table(table)
        for alarm in _alarms(statuses):
            quota = next((s.quota_backend_bytes for s in statuses if not isinstance(s, tuple) and s.quota_backend_bytes), 0)
            self._line(f"ALARM {alarm.type}: node {alarm.node_id} stores more than the space quota"
                       f"{f' of {quota} bytes' if quota else ''}; writes that add data are refused until deletes "
                       "free space")

    def done(self, message: str, revision: int | None = None) -> None:
        """A change made (auth revision it applied at, when it has one)."""
        if self.output is OutputFormat.JSON:
            self._json({"ok": True, "message": message, **({"revision": revision} if revision is not None else {})})
        elif self.output is OutputFormat.SIMPLE:
            self._line("OK")
        else:
            self._line(f"OK: {message}" + (f" (auth revision {revision})" if revision is not None else ""))

    def auth_status(self, status: AuthStatus) -> None:
        if self.output is OutputFormat.JSON:
            self._json({"enabled": status.enabled, "revision": status.revision, "user": status.user})
        elif self.output is OutputFormat.SIMPLE:
            self._line(f"{'enabled' if status.enabled else 'disabled'}\t{status.revision}\t{status.user}")
        else:
            who = f"you are {status.user!r}" if status.user else "you are not signed in"
            self._line(f"auth {'enabled' if status.enabled else 'disabled'} (auth revision {status.revision}); "
                       + (who if status.enabled else "every call is allowed"))

    def users(self, users: Sequence[User]) -> None:
        if self.output is OutputFormat.JSON:
            self._json({"users": [{"name": u.name, "roles": list(u.roles), "has_password": u.has_password,
                                   "rate_limit": _limit_json(u.rate_limit)} for u in users]})
        elif self.output is OutputFormat.SIMPLE:
            for u in users:
                self._line(f"{u.name}\t{','.join(u.roles)}")
        else:
            table = Table()
            for column in ("USER", "ROLES", "SIGNS IN WITH", "RATE LIMIT"):
                table.add_column(column)
            for u in users:
                table.add_row(Text(u.name), Text(", ".join(u.roles)), "password" if u.has_password else "certificate",
                              _limit_text(u.rate_limit))
            self._table(table)

    def roles(self, roles: Sequence[Role]) -> None:
        if self.output is OutputFormat.JSON:
            self._json({"roles": [{"name": r.name, "rate_limit": _limit_json(r.rate_limit),
                                   "grants": [{**_bytes_field("prefix", g.prefix), "permission": g.permission.name.lower()}
                                              for g in r.grants]} for r in roles]})
        elif self.output is OutputFormat.SIMPLE:
            for r in roles:
                for g in r.grants:
                    self._line(f"{r.name}\t{g.permission.name.lower()}\t{_text(g.prefix)}")
        else:
            table = Table()
            for column in ("ROLE", "GRANTS", "RATE LIMIT"):
                table.add_column(column)
            for r in roles:
                grants = "\n".join(f"{g.permission.name.lower()} {_text(g.prefix)!r}" for g in r.grants)
                table.add_row(Text(r.name), Text(grants or "(nothing)"), _limit_text(r.rate_limit))
            self._table(table)

    def members(self, members: Sequence[Member]) -> None:
        if self.output is OutputFormat.JSON:
            self._json({"members": [_member_json(member) for member in members]})
        elif self.output is OutputFormat.SIMPLE:
            for member in members:
                self._line(f"{member.id}\t{member.name}\t{member.address}\t{_member_state(member)}")
        else:
            table = Table()
            for column in ("ID", "NAME", "ADDRESS", "STATE"):
                table.add_column(column)
            for member in members:
                table.add_row(str(member.id), Text(member.name), Text(member.address), _member_state(member))
            self._table(table)

    def partitions(self, layout: ClusterLayout) -> None:
        if self.output is OutputFormat.JSON:
            self._json(
                {
                    "epoch": layout.epoch,
                    "partition_count": layout.partition_count,
                    "replication_factor": layout.replication_factor,
                    "partitions": [
                        {
                            "id": info.id,
                            "leader": info.leader,
                            "replicas": list(info.replicas),
                            "learners": list(info.learners),
                            "term": info.term,
                            "commit_index": info.commit_index,
                            "applied_index": info.applied_index,
                            "moving_to": list(info.moving_to),
                            "move_step": info.move_step,
                            "move_steps": info.move_steps,
                        }
                        for info in layout.partitions
                    ],
                    "members": [_member_json(member) for member in layout.members],
                }
            )
        elif self.output is OutputFormat.SIMPLE:
            for info in layout.partitions:
                self._line(f"{info.id}\t{info.leader}\t{','.join(map(str, info.replicas))}\t{_move(info)}")
        else:
            addresses = {member.id: member.address for member in layout.members}
            moving = sum(1 for info in layout.partitions if info.moving_to)
            table = Table(
                caption=f"epoch {layout.epoch}, {layout.partition_count} partitions, "
                f"replication factor {layout.replication_factor}, {moving} moving"
            )
            for column in ("PARTITION", "LEADER", "REPLICAS", "TERM", "MOVE"):
                table.add_column(column)
            for info in layout.partitions:
                leader = f"{info.leader} ({addresses.get(info.leader, '?')})" if info.leader else "unknown"
                replicas = ",".join(map(str, info.replicas)) + "".join(f" +{n}" for n in info.learners)
                table.add_row(str(info.id), Text(leader), replicas, str(info.term), _move(info))
            self._table(table)

    # ---- leases and locks ----------------------------------------------------------------------

    def lease_granted(self, lease: Lease) -> None:
        if self.output is OutputFormat.JSON:
            self._json({"id": lease.id, "ttl": lease.ttl, "partition": lease_partition(lease.id)})
        elif self.output is OutputFormat.SIMPLE:
            self._line(str(lease.id))
        else:
            self._line(f"lease {lease.id} granted with TTL {lease.ttl}s (partition {lease_partition(lease.id)})")

    def lease_kept_alive(self, lease: int, ttl: int) -> None:
        if self.output is OutputFormat.JSON:
            self._json({"id": lease, "ttl": ttl})
        elif self.output is OutputFormat.SIMPLE:
            self._line(str(ttl))
        else:
            self._line(f"lease {lease} kept alive with TTL {ttl}s")

    def lease_revoked(self, lease: int) -> None:
        if self.output is OutputFormat.JSON:
            self._json({"id": lease, "revoked": True})
        elif self.output is OutputFormat.SIMPLE:
            self._line("OK")
        else:
            self._line(f"lease {lease} revoked")

    def lease_status(self, status: LeaseStatus, with_keys: bool) -> None:
        if self.output is OutputFormat.JSON:
            document: dict[str, Any] = {"id": status.id, "ttl": status.ttl, "granted_ttl": status.granted_ttl,
                                        "partition": lease_partition(status.id)}
            if with_keys:
                document["keys"] = [_bytes_field("key", key) for key in status.keys]
            self._json(document)
        elif self.output is OutputFormat.SIMPLE:
            self._line(str(status.ttl))
            for key in status.keys:
                self._raw(key)
        else:
            self._line(f"lease {status.id}: {status.ttl}s left at least, of {status.granted_ttl}s granted "
                       f"(partition {lease_partition(status.id)})")
            if with_keys:
                self._line(f"attached keys: {', '.join(_text(key) for key in status.keys) or 'none'}")

    def leases(self, statuses: Sequence[LeaseStatus]) -> None:
        if self.output is OutputFormat.JSON:
            self._json({"count": len(statuses), "leases": [
                {"id": s.id, "ttl": s.ttl, "granted_ttl": s.granted_ttl, "partition": lease_partition(s.id)}
                for s in statuses
            ]})
        elif self.output is OutputFormat.SIMPLE:
            for status in statuses:
                self._line(str(status.id))
        else:
            table = Table(caption=f"{len(statuses)} lease(s)")
            for column in ("ID", "TTL", "GRANTED_TTL", "PARTITION"):
                table.add_column(column, justify="right")
            for status in statuses:
                table.add_row(str(status.id), str(status.ttl), str(status.granted_ttl), str(lease_partition(status.id)))
            self._table(table)

    def lock_held(self, lock: Lock) -> None:
        if self.output is OutputFormat.JSON:
            self._json({**_bytes_field("name", lock.name), **_bytes_field("key", lock.key), "token": lock.token})
        elif self.output is OutputFormat.SIMPLE:
            self._raw(lock.key)
            self._line(str(lock.token))
        else:
            self._line(f"holding lock {_text(lock.name)!r}: key {_text(lock.key)}, fencing token {lock.token}")
        sys.stdout.flush()

    def watch_event(self, event: WatchEvent, prev_kv: bool) -> None:
        """One line per event, printed at once (a watch's reader follows it live)."""
        kind = event.type.name
        if self.output is OutputFormat.JSON:
            document = {
                "type": kind.lower(),
                **_bytes_field("key", event.key),
                **_bytes_field("value", event.value),
                "revision": event.revision,
                "partition": event.partition,
                "create_revision": event.create_revision,
                "version": event.version,
                "lease": event.lease,
            }
            if prev_kv:
                document["prev_kv"] = event.prev_kv and kv_json(event.prev_kv)
            self._json(document)
        elif self.output is OutputFormat.SIMPLE:
            self._raw(kind.encode(), event.key, event.value)
        else:
            line = f"{kind} {_one_line(event.key)}"
            if event.value or kind == "PUT":
                line += f" = {_one_line(event.value)}"
            if prev_kv:
                line += f" (was {_one_line(event.prev_kv.value) if event.prev_kv else 'absent'})"
            self._line(f"{line}  [partition {event.partition}, revision {event.revision}]")


def _one_line(data: bytes) -> str:
    """Stored bytes as text on one line: line breaks and other control characters escaped."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in _text(data))


def _member_state(member: Member) -> str:
    return member.state.name.lower() + (" (lost)" if member.lost else "")


def _move(info: PartitionInfo) -> str:
    """A move under way: where to, and how far (learners show as +N in the replicas)."""
    if not info.moving_to:
        return ""
    return f"to {','.join(map(str, info.moving_to))}, step {info.move_step}/{info.move_steps}"


def _member_json(member: Member) -> dict[str, Any]:
    return {"id": member.id, "name": member.name, "address": member.address,
            "state": member.state.name.lower(), "lost": member.lost}


def _stored(status: NodeStatus) -> str:
    if not status.quota_backend_bytes:
        return str(status.stored_bytes)
    return f"{status.stored_bytes} / {status.quota_backend_bytes}"


def _alarms(statuses: Sequence[NodeStatus | tuple[str, str]]) -> list[Alarm]:
    """The alarms the nodes that answered report, each once."""
    return sorted({alarm for status in statuses if not isinstance(status, tuple) for alarm in status.alarms},
                  key=lambda alarm: (alarm.node_id, alarm.type))


def _limit_json(limit: RateLimit) -> dict[str, float]:
    return {"requests_per_second": limit.requests_per_second, "bytes_per_second": limit.bytes_per_second}


def _limit_text(limit: RateLimit) -> str:
    parts = [f"{limit.requests_per_second:g} ops/s" if limit.requests_per_second else "",
             f"{limit.bytes_per_second:g} B/s" if limit.bytes_per_second else ""]
    return ", ".join(part for part in parts if part) or "-"
