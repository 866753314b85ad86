"""Writes staged into the node's write batch, readable before the batch is written.

The applier stages every change of a Ready cycle into one batch that the node writes (synced)
after applying; later commands of the same cycle must see the earlier ones' changes. A
`StagedWrites` is that overlay: reads look at the staged writes first, then the engine.
"""

from __future__ import annotations

from collections.abc import Iterable

from kvstore.storage.engine import Engine, ReadView, WriteBatch
from kvstore.storage.keys import prefix_end


class StagedWrites:
    """The writes staged into the current batch, over `engine`.

    Rule: writes staged into a batch stay visible while the SAME batch is passed to `use`;
    passing another batch means the previous one was written (the engine now shows it).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._batch: WriteBatch | None = None
        self._staged: dict[bytes, bytes | None] = {}  # key -> value, None for a delete

    def use(self, batch: WriteBatch) -> None:
        """Stage into `batch` from now on."""
        if batch is not self._batch:
            self._staged = {}
            self._batch = batch

    def read(self, key: bytes) -> bytes | None:
        staged = self._staged
        if key in staged:
            return staged[key]
        return self.engine.get(key)

    def stage(self, key: bytes, value: bytes | None) -> None:
        """Stage a put (`value` None: a delete) into the batch given to `use`."""
        batch = self._batch
        if batch is None:
            raise RuntimeError("no write batch to stage into: call use(batch) first")
        self._staged[key] = value
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)

    def scan(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """Every (key, value) starting with `prefix` as if the batch were written, in key order."""
        merged = dict(self.engine.iterate(prefix, prefix_end(prefix)))
        for key, value in self._staged.items():
            if key.startswith(prefix):
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
        return sorted(merged.items())

    def replace(self, prefix: bytes, pairs: Iterable[tuple[bytes, bytes]]) -> None:
        """Stage replacing every key starting with `prefix` by `pairs` of (suffix, value): what a
        snapshot restore does to each range it carries."""
        replacement = {prefix + suffix: value for suffix, value in pairs}
        for key, _ in self.scan(prefix):
            if key not in replacement:
                self.stage(key, None)
        for key, value in replacement.items():
            self.stage(key, value)


def read_sections(view: ReadView, prefixes: Iterable[bytes]) -> list[list[tuple[bytes, bytes]]]:
    """The (suffix, value) pairs under each of `prefixes` in `view`: a snapshot's sections."""
    return [
        [(key[len(prefix) :], value) for key, value in view.iterate(prefix, prefix_end(prefix))]
        for prefix in prefixes
    ]
