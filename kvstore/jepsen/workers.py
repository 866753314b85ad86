"""The lock workload's clients as OS processes (``lockworker.py``), one per worker: started
together, their history events read from their stdout as they come and recorded, which worker
holds the lock followed from those events, and any worker stopped (SIGSTOP) and resumed
(SIGCONT) when the client-pause nemesis says so. Each worker's stderr goes to
``workers/worker-N.log`` in the run directory."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from kvstore.jepsen.history import Event, EventType, HistoryError, event_from_mapping
from kvstore.jepsen.locks import WorkerConfig


class EventSink(Protocol):
    def append(self, event: Event) -> None: ...


class WorkerProcesses:
    """Owns the worker processes: `run` returns once all have exited, and none outlives it."""

    def __init__(self, configs: Sequence[WorkerConfig], sink: EventSink, log_dir: Path) -> None:
        self._configs = list(configs)
        self._sink = sink
        self._log_dir = log_dir
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        self._holding: dict[int, int] = {}  # worker -> token of the lock it holds
        self._read: set[int] = set()  # holders that read their register and have not sent their write
        self._paused: set[int] = set()
        self.problems: list[str] = []  # what went wrong with the workers themselves

    @property
    def count(self) -> int:
        return len(self._configs)

    def log_path(self, worker: int) -> Path:
        return self._log_dir / f"worker-{worker}.log"

    async def run(self, grace_s: float) -> None:
        """Start every worker and record what it does until it exits; a worker still running
        ``grace_s`` after its deadline is killed (its operations in flight stay of unknown outcome)."""
        self._log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for config in self._configs:
                with self.log_path(config.index).open("ab") as log:
                    self._processes[config.index] = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "kvstore.jepsen.lockworker", config.to_json(),
                        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=log,
                        start_new_session=True,  # a Ctrl-C on the terminal reaches the harness alone
                    )  # fmt: skip
            loop = asyncio.get_running_loop()
            deadline_s = max(config.deadline_ns for config in self._configs) / 1e9
            timeout = max(0.0, deadline_s - loop.time()) + grace_s  # the loop's clock is monotonic
            await asyncio.wait_for(
                asyncio.gather(*(self._follow(index, process) for index, process in self._processes.items())),
                timeout,
            )
        except TimeoutError:
            running = sorted(index for index, process in self._processes.items() if process.returncode is None)
            self.problems.append(f"workers {running} still ran {grace_s:g}s after the deadline and were killed")
        finally:
            await asyncio.shield(self._stop_all())

    async def _follow(self, worker: int, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        line_number = 0
        async for line in process.stdout:
            line_number += 1
            try:
                fields = json.loads(line)
                event = event_from_mapping(fields, line_number)
            except (ValueError, HistoryError) as error:
                self.problems.append(f"worker {worker} wrote a line that is not an event ({error}): {line[:200]!r}")
                continue
            self._follow_holder(worker, event)
            self._sink.append(event)
        code = await process.wait()
        if code != 0:
            self.problems.append(f"worker {worker} exited with status {code}; see {self.log_path(worker)}")

    def _follow_holder(self, worker: int, event: Event) -> None:
        if event.f == "acquire" and event.type is EventType.OK and isinstance(event.value, tuple):
            self._holding[worker] = event.value[0]
            self._read.discard(worker)
        elif event.f == "read" and event.type is EventType.OK and worker in self._holding:
            self._read.add(worker)
        elif event.f == "write" and event.type is EventType.INVOKE:
            self._read.discard(worker)
        elif (event.f == "release" and event.type is EventType.INVOKE) or event.type is EventType.INFO:
            self._holding.pop(worker, None)
            self._read.discard(worker)

    def holders(self) -> dict[int, int]:
        return {
            worker: token
            for worker, token in self._holding.items()
            if worker not in self._paused and self._processes[worker].returncode is None
        }

    def about_to_write(self) -> dict[int, int]:
        return {worker: token for worker, token in self.holders().items() if worker in self._read}

    def pause(self, worker: int) -> None:
        if self._signal(worker, signal.SIGSTOP):
            self._paused.add(worker)

    def resume(self, worker: int) -> None:
        self._signal(worker, signal.SIGCONT)
        self._paused.discard(worker)

    def _signal(self, worker: int, number: signal.Signals) -> bool:
        process = self._processes.get(worker)
        if process is None or process.returncode is not None:
            return False
        with contextlib.suppress(ProcessLookupError):  # it exited since
            process.send_signal(number)
            return True
        return False

    async def _stop_all(self) -> None:
        for process in self._processes.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        for process in self._processes.values():
            await process.wait()
        self._paused.clear()
