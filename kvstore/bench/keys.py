"""Benchmark key names and the choosers that pick which key an operation touches."""

from __future__ import annotations

import math
import random
from enum import StrEnum

KEY_PREFIX = "bench/"


def key_name(index: int) -> bytes:
    return f"{KEY_PREFIX}{index:010d}".encode()


class Distribution(StrEnum):
    UNIFORM = "uniform"
    ZIPFIAN = "zipfian"


# The skew YCSB's papers use; at 0.99 the hottest 1% of keys receive roughly half the requests.
ZIPF_THETA = 0.99


class UniformChooser:
    def __init__(self, keys: int, rng: random.Random) -> None:
        self._keys = keys
        self._rng = rng

    def next_index(self) -> int:
        return self._rng.randrange(self._keys)


class ZipfianChooser:
    """Zipf-distributed ranks mapped to keys through a hash ("scrambled"), so the hot keys are
    scattered over the key space (and over partitions) instead of being the first few names.

    Ranks are drawn with the closed-form approximation of Gray et al., "Quickly Generating
    Billion-Record Synthetic Databases" (SIGMOD '94): one uniform draw per rank, after an
    O(n) precomputation of the generalized harmonic number zeta(n, theta).
    """

    def __init__(self, keys: int, rng: random.Random, theta: float = ZIPF_THETA) -> None:
        if keys < 2:
            raise ValueError("a zipfian distribution needs at least 2 keys")
        self._keys = keys
        self._rng = rng
        self._theta = theta
        zeta_n = math.fsum(1.0 / (i**theta) for i in range(1, keys + 1))
        zeta_2 = 1.0 + 0.5**theta
        self._zeta_n = zeta_n
        self._alpha = 1.0 / (1.0 - theta)
        self._eta = (1.0 - (2.0 / keys) ** (1.0 - theta)) / (1.0 - zeta_2 / zeta_n)
        self._second_threshold = 1.0 + 0.5**theta

    def next_rank(self) -> int:
        u = self._rng.random()
        scaled = u * self._zeta_n
        if scaled < 1.0:
            return 0
        if scaled < self._second_threshold:
            return 1
        return min(self._keys - 1, int(self._keys * (self._eta * u - self._eta + 1.0) ** self._alpha))

    def next_index(self) -> int:
        return _mix64(self.next_rank()) % self._keys


def _mix64(value: int) -> int:
    """A 64-bit finalizer (splitmix64's): cheap, deterministic across processes, well spread."""
    mask = (1 << 64) - 1
    value = (value + 0x9E3779B97F4A7C15) & mask
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & mask
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & mask
    return value ^ (value >> 31)


KeyChooser = UniformChooser | ZipfianChooser


def make_chooser(distribution: Distribution, keys: int, seed: int) -> KeyChooser:
    rng = random.Random(seed)
    if distribution is Distribution.ZIPFIAN:
        return ZipfianChooser(keys, rng)
    return UniformChooser(keys, rng)
