"""Pauses between retries: exponential, with jitter."""

from __future__ import annotations

import asyncio
import random

# Short enough that a leader election (hundreds of ms) is waited out quickly.
_FIRST_BACKOFF_S = 0.01
_MAX_BACKOFF_S = 0.5


class Backoff:
    """Exponential pauses with jitter, never past the call's deadline. One per call (or per
    reconnection): the pauses grow from the first."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._next = _FIRST_BACKOFF_S

    async def pause(self, deadline: float, at_least: float = 0.0) -> None:
        """Sleep the next pause, or `at_least` (a node's retry-after: RESOURCE_EXHAUSTED) plus a
        share of jitter when that is longer."""
        loop = asyncio.get_running_loop()
        jitter = 0.5 + self._rng.random() / 2
        delay = max(self._next * jitter, at_least * (1 + jitter / 5))
        self._next = min(self._next * 2, _MAX_BACKOFF_S)
        await asyncio.sleep(max(0.0, min(delay, deadline - loop.time())))
