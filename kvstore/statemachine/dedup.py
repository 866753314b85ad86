"""Client dedup of one partition: which of a client's requests were applied, and what they were
answered, so that a retry is applied once and answered the same (Raft thesis §6.3).

A client numbers its writes (request seq 1, 2, ...) and keeps a request's seq on every retry.
It pipelines many of them, which may commit out of seq order, and retries one after later ones
were applied, so a partition keeps, per client, a window rather than only the last result:

* ``highest``: the highest seq applied;
* ``floor``: the lowest seq still told apart. A seq below it that is not remembered may have
  been applied and forgotten, so it is refused ("too old to tell"), never applied again;
* the results of the seqs applied and not forgotten yet: seq -> (revision, serialized
  `LogResponse`). Only the seqs and revisions stay in memory; the responses are on disk.

A seq is answered from the window when remembered, refused when below the floor or at or below
``highest - window``, and applied otherwise.

What is forgotten, and when:

* **The client's word.** Each request carries ``lowest_pending_seq``: the lowest seq the client
  still awaits an answer for, over all its requests and partitions. It will never retry a seq
  below it, so those results go and the floor rises to it: the table holds the client's
  requests in flight, not its history.
* **Safety nets**, for clients that do not send it (or stop talking): a client keeps at most
  `window` results (the lowest go); a partition remembers at most `max_clients` clients (the
  least recently applied go whole: a retry of theirs is applied again) and `max_results`
  results (the oldest applied go, raising their client's floor past them).

These bounds are replicated behaviour: every replica of a partition must use the same values.

Stored as ONE record per client (key ``C p client id``, `kvstore.codec.decode_client_dedup`),
rewritten once per apply batch for the clients that changed in it (`flush`) and deleted with
the client, in the same batch as the apply state.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from heapq import heappop, heappush

from kvstore.codec import ClientDedupResult, Encoder, decode_client_dedup

Read = Callable[[bytes], bytes | None]
"""Reads a key as the applier's current batch will leave it (staged writes over the engine)."""
Stage = Callable[[bytes, bytes | None], None]
"""Stages a put into the applier's current batch, or a delete when the value is None."""


class Seen(Enum):
    """What a partition knows of a client's request seq."""

    NEW = 1  # never applied here: apply it
    REMEMBERED = 2  # applied: answer with its stored response
    TOO_OLD = 3  # may have been applied and forgotten: refuse it


@dataclass(slots=True)
class _ClientWindow:
    """What a partition remembers of one client (mutable: it changes with every request)."""

    client_id: str
    key: bytes  # of its record
    highest: int
    floor: int
    revision: int  # of the last request applied, which orders clients for eviction
    seqs: dict[int, int]  # remembered seq -> revision it was applied at
    # Heap of the remembered seqs, to forget the lowest in O(log n). It may still hold seqs the
    # partition-wide bound forgot (skipped when popped): no seq is remembered twice, as a
    # forgotten one is below `floor` or at or below the window's edge, refused from then on.
    lowest: list[int]
    # Responses of the seqs applied since the last flush, not in the stored record yet.
    unflushed: dict[int, bytes]

    def edge(self, window: int) -> int:
        """The highest seq refused unless remembered."""
        return max(self.floor - 1, self.highest - window)

    def pop_lowest(self) -> tuple[int, int]:
        """(seq, revision) of the lowest remembered seq, forgotten here."""
        while True:
            seq = heappop(self.lowest)
            revision = self.seqs.pop(seq, None)
            if revision is not None:
                self.unflushed.pop(seq, None)
                return seq, revision

    def forget(self, seq: int) -> None:
        """Forget `seq` out of order (the partition-wide bound): seqs up to it are refused."""
        del self.seqs[seq]
        self.unflushed.pop(seq, None)
        self.floor = max(self.floor, seq + 1)
        # Bounds the seqs left in the heap after being forgotten here; amortised O(log n).
        if len(self.lowest) > 2 * len(self.seqs):
            self.lowest = sorted(self.seqs)


class DedupTable:
    """The dedup windows of one partition's clients (see the module docstring)."""

    def __init__(
        self,
        prefix: bytes,
        records: Iterable[tuple[bytes, bytes]],
        *,
        max_clients: int,
        window: int,
        max_results: int,
    ) -> None:
        """The table stored as `records` (client id as a key suffix after `prefix`, record).
        ValueError (or its subclass `CodecError`) when a record does not decode."""
        self._prefix = prefix
        self._encoder = Encoder()
        self._max_clients = max_clients
        self._window = window
        self._max_results = max_results
        # The clients, least recently applied first, and revision -> (client, seq) of every
        # remembered result, oldest first. Both orders are by revision, as `remember` builds
        # them (ties are impossible: one command per revision), so a loaded table decides
        # exactly as the one that was stored.
        self._clients: OrderedDict[str, _ClientWindow] = OrderedDict()
        self._remembered: OrderedDict[int, tuple[_ClientWindow, int]] = OrderedDict()
        # Clients changed since the last flush (None: forgotten, its record to delete).
        self._changed: dict[str, _ClientWindow | None] = {}
        loaded: list[tuple[int, _ClientWindow]] = []
        for suffix, record in records:
            client_id = suffix.decode()
            highest, floor, revision, results = decode_client_dedup(record)
            seqs = {seq: applied_at for seq, applied_at, _ in results}
            if len(seqs) != len(results) or any(not 0 < seq <= highest for seq in seqs):
                raise ValueError(f"dedup record of client {client_id!r:.80} holds seqs it cannot have applied")
            loaded.append((revision, _ClientWindow(client_id, prefix + suffix, highest, floor, revision, seqs,
                                                   sorted(seqs), {})))
        for _, client in sorted(loaded, key=lambda item: item[0]):
            self._clients[client.client_id] = client
        for revision, owner, seq in sorted(
            ((revision, client, seq) for client in self._clients.values() for seq, revision in client.seqs.items()),
            key=lambda item: item[0],
        ):
            self._remembered[revision] = (owner, seq)

    def __len__(self) -> int:
        """The number of results remembered."""
        return len(self._remembered)

    @property
    def clients(self) -> int:
        return len(self._clients)

    def seen(self, client_id: str, seq: int, lowest_pending: int) -> Seen:
        """What this partition knows of `client_id`'s `seq`, once it took in the client's word
        that it awaits nothing below `lowest_pending` (at most `seq`: a request awaits its own
        answer)."""
        window = self._clients.get(client_id)
        if window is None:
            return Seen.NEW
        self._raise_floor(window, min(lowest_pending, seq))
        # A seq above the client's highest applied one is new: the common case, which needs
        # no look into the window (every remembered seq and the edge are at most `highest`).
        if seq > window.highest:
            return Seen.NEW
        if seq in window.seqs:
            return Seen.REMEMBERED
        return Seen.TOO_OLD if seq <= window.edge(self._window) else Seen.NEW

    def too_old(self, client_id: str, seq: int) -> str:
        """Why `seq` (TOO_OLD) is refused."""
        window = self._clients[client_id]
        return (
            f"request seq {seq} of client {client_id!r} is too old to tell whether it was applied; this partition "
            f"remembers only seqs above {window.edge(self._window)} for that client (highest applied "
            f"{window.highest}); retry it as a new request"
        )

    def response(self, read: Read, client_id: str, seq: int) -> bytes:
        """The serialized `LogResponse` of a REMEMBERED seq. ValueError when its record does not
        hold it (corruption)."""
        window = self._clients[client_id]
        unflushed = window.unflushed.get(seq)
        if unflushed is not None:
            return unflushed
        for stored_seq, _, response in self._stored_results(read, window):
            if stored_seq == seq:
                return response
        raise ValueError(f"the dedup record of client {client_id!r:.80} lacks seq {seq}")

    def remember(self, client_id: str, seq: int, lowest_pending: int, revision: int, response: bytes) -> None:
        """Record `response` (a serialized `LogResponse`) to `client_id`'s NEW `seq`, applied at
        `revision`, then enforce the bounds."""
        window = self._clients.get(client_id)
        if window is None:
            floor = min(lowest_pending, seq)
            window = _ClientWindow(client_id, self._prefix + client_id.encode(), seq, floor, revision, {}, [], {})
            self._clients[client_id] = window
        else:
            self._clients.move_to_end(client_id)
            window.revision = revision
            window.highest = max(window.highest, seq)
        window.seqs[seq] = revision
        window.unflushed[seq] = response
        heappush(window.lowest, seq)
        self._remembered[revision] = (window, seq)
        self._changed[client_id] = window

        # The remembered seqs are distinct and at most `highest`: with more than `window` of
        # them the lowest is at or below highest - window, the edge, which refuses it from now
        # on without raising the floor. `seq` was above the edge, so it is never the one to go.
        while len(window.seqs) > self._window:
            _, forgotten_revision = window.pop_lowest()
            del self._remembered[forgotten_revision]

        while len(self._clients) > self._max_clients:
            evicted_id, evicted = self._clients.popitem(last=False)
            for evicted_revision in evicted.seqs.values():
                del self._remembered[evicted_revision]
            self._changed[evicted_id] = None

        while len(self._remembered) > self._max_results:
            _, (owner, forgotten) = self._remembered.popitem(last=False)
            owner.forget(forgotten)
            self._changed[owner.client_id] = owner

    def flush(self, read: Read, stage: Stage) -> None:
        """Stage the record of every client changed since the last flush (once per apply batch:
        the batch is written atomically, so the stored table is the same as if staged per
        command)."""
        for client_id, window in self._changed.items():
            if window is None:
                stage(self._prefix + client_id.encode(), None)
                continue
            results: list[ClientDedupResult] = []
            if len(window.unflushed) < len(window.seqs):  # some results are only in the stored record
                results = [r for r in self._stored_results(read, window) if window.seqs.get(r[0]) == r[1]]
            results += [(seq, window.seqs[seq], response) for seq, response in window.unflushed.items()]
            results.sort()
            stage(window.key, self._encoder.client_dedup(window.highest, window.floor, window.revision, results))
            window.unflushed = {}
        self._changed = {}

    def _raise_floor(self, window: _ClientWindow, floor: int) -> None:
        """Forget the client's results below `floor`, which it will never ask for again."""
        if floor <= window.floor:
            return
        window.floor = floor
        lowest = window.lowest
        while lowest and lowest[0] < floor:
            seq = heappop(lowest)
            revision = window.seqs.pop(seq, None)
            if revision is not None:
                window.unflushed.pop(seq, None)
                del self._remembered[revision]
        self._changed[window.client_id] = window

    def _stored_results(self, read: Read, window: _ClientWindow) -> list[ClientDedupResult]:
        record = read(window.key)
        return [] if record is None else decode_client_dedup(record)[3]
