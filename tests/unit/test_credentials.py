"""Password hashes, signed tokens and their expiry, and the token buckets of the rate limiter."""

from __future__ import annotations

import pytest

from kvstore.credentials import TokenError, hash_password, issue_token, password_matches, read_token
from kvstore.ratelimit import MAX_IDLE_BUCKETS, RateLimiter
from kvstore.statemachine.control import RateLimit

SECRET = b"k" * 32


def test_a_password_hash_is_salted_and_checks_only_its_password() -> None:
    first, second = hash_password("pw"), hash_password("pw")
    assert first != second and first.startswith("$argon2id$")
    assert password_matches(first, "pw") and password_matches(second, "pw")
    assert not password_matches(first, "pW")
    assert not password_matches("", "pw"), "a certificate-only user has no password"
    assert not password_matches("not a hash", "pw")


def test_a_token_names_its_user_and_revision_until_it_expires() -> None:
    token, expires_at = issue_token(SECRET, "alice", 17, now=1000.0, ttl_s=60)
    assert expires_at == 1060.0
    claims = read_token(SECRET, token, now=1059.9)
    assert (claims.user, claims.revision, claims.expires_at) == ("alice", 17, 1060.0)
    with pytest.raises(TokenError, match="expired"):
        read_token(SECRET, token, now=1060.0)


def test_a_token_signed_with_another_secret_or_altered_is_refused() -> None:
    token, _ = issue_token(SECRET, "alice", 1, now=0.0, ttl_s=60)
    with pytest.raises(TokenError, match="not valid for this cluster"):
        read_token(b"x" * 32, token, now=1.0)
    header, payload, signature = token.split(".")
    forged, _ = issue_token(b"x" * 32, "root", 1, now=0.0, ttl_s=60)
    with pytest.raises(TokenError):
        read_token(SECRET, ".".join([header, forged.split(".")[1], signature]), now=1.0)


def test_a_bucket_admits_its_burst_then_one_token_per_interval() -> None:
    limiter = RateLimiter(RateLimit(requests_per_second=2))
    assert [limiter.admit("c", None, 1, 0, now=10.0) for _ in range(3)] == [0.0, 0.0, 0.5]
    assert limiter.admit("c", None, 1, 0, now=10.4) == pytest.approx(0.1)
    assert limiter.admit("c", None, 1, 0, now=10.5) == 0.0
    assert limiter.admit("other", None, 1, 0, now=10.5) == 0.0, "each client has its own bucket"


def test_bytes_and_operations_are_limited_together_and_a_refusal_takes_nothing() -> None:
    limiter = RateLimiter(RateLimit())
    limit = RateLimit(requests_per_second=100, bytes_per_second=1000)
    assert limiter.admit("c", limit, 1, 600, now=0.0) == 0.0
    assert limiter.admit("c", limit, 1, 600, now=0.0) == pytest.approx(0.2)  # 400 bytes left of 600 needed
    assert limiter.admit("c", limit, 1, 400, now=0.0) == 0.0, "the refused call took no operation or byte"
    # Larger than the burst: admitted once the bucket is full, leaving a debt.
    assert limiter.admit("c", limit, 1, 5000, now=1.0) == 0.0
    assert limiter.admit("c", limit, 1, 1, now=1.0) == pytest.approx(4.001)


def test_no_limit_set_anywhere_admits_everything_and_keeps_no_bucket() -> None:
    limiter = RateLimiter(RateLimit())
    assert all(limiter.admit(f"c{i}", None, 1000, 1 << 20, now=0.0) == 0.0 for i in range(10))
    assert len(limiter) == 0


def test_idle_clients_are_forgotten_when_there_are_too_many() -> None:
    limiter = RateLimiter(RateLimit(requests_per_second=10))
    for i in range(MAX_IDLE_BUCKETS):
        limiter.admit(f"c{i}", None, 1, 0, now=0.0)
    limiter.admit("busy", None, 1, 0, now=5.0)
    assert len(limiter) == 1, "every bucket full again at 5 s was dropped"
