"""Per-client rate limits: a token bucket for operations and one for request bytes, per client.

A bucket holds at most `capacity` tokens (one second's worth of its rate, the burst) and
refills at `rate` tokens per second. A request takes as many tokens as it costs; it is admitted
when the bucket holds at least that many, or is full (so a request larger than the burst still
gets through when the client has been idle, leaving the bucket in debt until the refill pays
it back). A refused request takes nothing and is told when the bucket will hold enough: its
retry-after. Over any window of `t` seconds a client thus gets at most `capacity + rate * t`
worth through, which is what a sliding-window limit of `rate * w` per window `w` promises, plus
the burst; docs/security.md compares the two.

Pure: the caller passes the monotonic time in. One `RateLimiter` per node; buckets are per
client (a user, or an anonymous connection) and forgotten once full again, so memory follows
the clients active in the last second or so.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvstore.statemachine.control import RateLimit

BURST_S = 1.0
"""A bucket's capacity, in seconds of its rate."""

MAX_IDLE_BUCKETS = 10_000
"""Past this many clients, the buckets that are full again (idle clients) are dropped."""


@dataclass(slots=True)
class TokenBucket:
    rate: float  # tokens per second, > 0
    tokens: float
    updated: float  # when `tokens` was last brought up to date

    @property
    def capacity(self) -> float:
        return max(self.rate * BURST_S, 1.0)

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def wait_for(self, cost: float) -> float:
        """Seconds until a request of `cost` would be admitted (0: now); call `refill` first."""
        needed = min(cost, self.capacity)
        return 0.0 if self.tokens >= needed else (needed - self.tokens) / self.rate

    def is_full(self) -> bool:
        return self.tokens >= self.capacity


class RateLimiter:
    """The buckets of every client of one node."""

    def __init__(self, default: RateLimit) -> None:
        self.default = default  # the node's limit for clients whose user and roles set none
        self._buckets: dict[tuple[str, str], TokenBucket] = {}  # (client, "ops" | "bytes")

    def admit(self, client: str, limit: RateLimit | None, ops: int, size: int, now: float) -> float:
        """Take `ops` operations and `size` bytes from `client`'s buckets under `limit` (None:
        the node default) and return 0, or take nothing and return the seconds to wait."""
        limit = limit if limit is not None else self.default
        wanted = [(self._bucket(client, kind, rate, now), cost)
                  for kind, rate, cost in (("ops", limit.requests_per_second, ops), ("bytes", limit.bytes_per_second, size))
                  if rate > 0]
        wait = max((bucket.wait_for(cost) for bucket, cost in wanted), default=0.0)
        if wait == 0.0:
            for bucket, cost in wanted:
                bucket.tokens -= cost
        return wait

    def _bucket(self, client: str, kind: str, rate: float, now: float) -> TokenBucket:
        key = (client, kind)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_IDLE_BUCKETS:
                self._forget_idle(now)
            bucket = self._buckets[key] = TokenBucket(rate, max(rate * BURST_S, 1.0), now)
        else:
            bucket.rate = rate  # the limit may have changed since
            bucket.refill(now)
        return bucket

    def _forget_idle(self, now: float) -> None:
        for key, bucket in list(self._buckets.items()):
            bucket.refill(now)
            if bucket.is_full():
                del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
