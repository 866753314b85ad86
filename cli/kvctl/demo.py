"""The short demo `make cluster` prints: a few writes, reads, a scan across partitions and a
transaction, through the public client library."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from kvstore.client import GetResult, SyncClient, TlsConfig, ops


def run_demo(endpoints: str, tls: TlsConfig | None, console: Console) -> None:
    console.rule("demo")
    with SyncClient(endpoints.split(","), timeout=10.0, tls=tls) as client:
        layout = client.partitions()
        users = {"alice": "engineer", "bob": "designer", "carol": "researcher", "dave": "operator"}
        for name, role in users.items():
            client.put(f"demo/user/{name}", role)
        console.print(f"put {len(users)} keys under demo/user/ (they spread over partitions)")
        value = client.get("demo/user/alice")
        console.print(f"get demo/user/alice -> {value.value.decode() if value else None!r} (linearizable)")
        table = Table(title="scan --prefix demo/user/  (gathered across partitions, in key order)")
        table.add_column("key")
        table.add_column("value")
        table.add_column("mod revision", justify="right")
        for kv in client.scan(prefix="demo/user/"):
            table.add_row(kv.key.decode(), kv.value.decode(), str(kv.mod_revision))
        console.print(table)
        client.put("{cart:alice}:items", "3")
        client.put("{cart:alice}:total", "42")
        console.print("keys tagged {cart:alice} share a partition: one transaction can change both")
        # Add an item for 15 to the cart: both keys change, or neither (compare-and-swap on the count).
        console.print('  txn: if items = "3" then put items 4, put total 57; else get items')
        add_item = (
            [ops.value("{cart:alice}:items") == "3"],
            [ops.put("{cart:alice}:items", "4"), ops.put("{cart:alice}:total", "57")],
            [ops.get("{cart:alice}:items")],
        )
        for attempt in ("first run", "again"):
            result = client.txn(*add_item)
            if result.succeeded:
                outcome = "SUCCESS, both written"
            else:
                (current,) = result.responses
                seen = current.kv.value.decode() if isinstance(current, GetResult) and current.kv else None
                outcome = f"FAILURE, items is {seen!r}: nothing written"
            console.print(f"    {attempt + ':':10} {outcome} (partition {result.header.partition}, "
                          f"revision {result.header.revision})")
        console.print(f"cluster: {len(layout.members)} members, {layout.partition_count} partitions, "
                      f"replication factor {layout.replication_factor}")
    console.rule()
