"""Benchmark the linearizability checker on a generated history.

The history comes from a simulated linearizable cas-register store: each of ``--processes``
concurrent clients invokes an operation on a random key, the operation takes effect on the store
at some later step and completes at a later step still, so operations overlap at random. Some
operations crash (``info``) before or after taking effect, and their client continues under a new
process id, as in Jepsen. Everything is driven by one seeded random.Random.

    .venv/bin/python benchmarks/checker.py [--ops 10000] [--keys 100] [--processes 20] [--seed 1]
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
from dataclasses import dataclass
from enum import Enum

from kvstore.bench.report import machine_line
from kvstore.jepsen.checker import Verdict, check
from kvstore.jepsen.history import Event, EventType, pair_operations, parse_jsonl, write_jsonl
from kvstore.jepsen.models import CasRegisterModel


class _Phase(Enum):
    IDLE = "idle"
    INVOKED = "invoked"  # not yet applied to the store
    APPLIED = "applied"  # applied, not yet answered


@dataclass(slots=True)
class _Client:
    process: int
    phase: _Phase = _Phase.IDLE
    f: str = ""
    key: str = ""
    argument: object = None
    outcome: EventType = EventType.OK
    result: object = None


def _event(client: _Client, event_type: EventType, value: object, now: int) -> Event:
    return Event(client.process, event_type, client.f, client.key, value, now)


def generate_history(
    rng: random.Random, operations: int, keys: int, processes: int, info_rate: float
) -> list[Event]:
    """A valid history of ``operations`` operations that is linearizable by construction."""
    store: dict[str, int] = {}
    clients = [_Client(process) for process in range(processes)]
    next_process = processes
    events: list[Event] = []
    invoked = 0
    now = 0
    while invoked < operations or any(client.phase is not _Phase.IDLE for client in clients):
        slot = rng.randrange(processes)
        client = clients[slot]
        now += rng.randrange(1, 1000)

        if client.phase is _Phase.IDLE:
            if invoked == operations:
                continue
            invoked += 1
            client.key = f"k{rng.randrange(keys)}"
            client.f = rng.choices(("read", "write", "cas"), weights=(5, 3, 2))[0]
            client.argument = {
                "read": None,
                "write": rng.randrange(5),
                "cas": (rng.randrange(5), rng.randrange(5)),
            }[client.f]
            client.phase = _Phase.INVOKED
            events.append(_event(client, EventType.INVOKE, client.argument, now))
        elif rng.random() < info_rate / 2:
            # Crash before or after taking effect; the client comes back as a new process.
            events.append(_event(client, EventType.INFO, client.argument, now))
            clients[slot] = _Client(next_process)
            next_process += 1
        elif client.phase is _Phase.INVOKED:
            current = store.get(client.key)
            client.outcome, client.result = EventType.OK, client.argument
            if client.f == "read":
                client.result = current
            elif client.f == "write":
                store[client.key] = client.argument  # type: ignore[assignment]
            elif client.argument[0] == current:  # type: ignore[index]
                store[client.key] = client.argument[1]  # type: ignore[index]
            else:
                client.outcome = EventType.FAIL
            client.phase = _Phase.APPLIED
        else:
            events.append(_event(client, client.outcome, client.result, now))
            client.phase = _Phase.IDLE
    return events


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--processes", type=int, default=20)
    parser.add_argument(
        "--info-rate", type=float, default=0.01, help="chance per step that a pending op crashes"
    )
    parser.add_argument("--seed", type=int, default=1)
    arguments = parser.parse_args()

    events = generate_history(
        random.Random(arguments.seed), arguments.ops, arguments.keys, arguments.processes, arguments.info_rate
    )
    text = io.StringIO()
    write_jsonl(events, text)

    started = time.perf_counter()
    operations = pair_operations(parse_jsonl(text.getvalue().splitlines()))
    parsed = time.perf_counter()
    result = check(operations, CasRegisterModel())
    checked = time.perf_counter()

    if result.verdict is not Verdict.LINEARIZABLE:
        sys.exit(f"checker said {result.verdict.value} on a linearizable history (seed {arguments.seed})")
    crashed = sum(1 for op in operations if op.outcome is EventType.INFO)
    check_seconds = checked - parsed
    print(f"ops:        {len(operations)} ({crashed} info)")
    print(f"keys:       {result.keys_total}")
    print(
        f"processes:  {arguments.processes} concurrent ({len({op.process for op in operations})} process ids)"
    )
    print(f"parse:      {parsed - started:.3f} s")
    print(f"check:      {check_seconds:.3f} s")
    print(f"ops/s:      {len(operations) / check_seconds:,.0f} (check only)")
    print(machine_line())


if __name__ == "__main__":
    main()
