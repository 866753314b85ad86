"""Passwords and tokens: argon2id password hashes (argon2-cffi) and signed tokens with an expiry
(JSON Web Tokens, HMAC-SHA256, PyJWT). No hand-written cryptography.

A token names the user and the control revision it was issued at, and is signed with the
cluster's secret, which lives in the replicated control state (`kvstore.statemachine.control`):
any node can check a token without asking another, and a node restart keeps every token good.
A token is void once it expires, once its user's password changes or the user is deleted (the
user's revision is then above the token's), and once auth is disabled (the secret goes with it).

Pure but for the hashing's own randomness (its salt): the caller passes the time in.
"""

from __future__ import annotations

from dataclasses import dataclass

import argon2
import jwt

# OWASP's recommended minimum for argon2id (19 MiB, 2 passes, 1 lane): about 30-60 ms a hash
# on the 2-core development machine. Checking a password is done once per sign-in; requests
# then carry a token, whose check is an HMAC.
_HASHER = argon2.PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
_ALGORITHM = "HS256"

TOKEN_METADATA = "authorization"
TOKEN_SCHEME = "Bearer "
"""A call carries its token as the gRPC metadata `authorization: Bearer TOKEN`."""


class TokenError(ValueError):
    """A token that does not authenticate anyone; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user: str
    revision: int  # the control revision the issuing node had applied
    expires_at: float  # seconds since the epoch


def hash_password(password: str) -> str:
    """An encoded argon2id hash of `password`, with a random salt."""
    return _HASHER.hash(password)


def password_matches(password_hash: str, password: str) -> bool:
    """Whether `password` is the one `password_hash` was made from (False for an empty hash:
    a certificate-only user has no password)."""
    if not password_hash:
        return False
    try:
        return _HASHER.verify(password_hash, password)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


def issue_token(secret: bytes, user: str, revision: int, now: float, ttl_s: float) -> tuple[str, float]:
    """A token for `user` valid until `now + ttl_s`, and that expiry."""
    expires_at = now + ttl_s
    token = jwt.encode({"sub": user, "rev": revision, "exp": expires_at}, secret, algorithm=_ALGORITHM)
    return token, expires_at


def read_token(secret: bytes, token: str, now: float) -> TokenClaims:
    """The claims of a token signed with `secret` and not expired at `now`; `TokenError` otherwise."""
    try:
        # The expiry is checked here against `now`, not by PyJWT against its own clock.
        claims = jwt.decode(token, secret, algorithms=[_ALGORITHM], options={"verify_exp": False,
                                                                             "require": ["sub", "rev", "exp"]})
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"the token is not valid for this cluster ({exc}); authenticate again") from None
    user, revision, expires_at = claims["sub"], claims["rev"], claims["exp"]
    if not isinstance(user, str) or not isinstance(revision, int) or not isinstance(expires_at, int | float):
        raise TokenError("the token's claims are malformed; authenticate again")
    if expires_at <= now:
        raise TokenError(f"the token of user {user!r} expired {now - expires_at:.0f}s ago; authenticate again")
    return TokenClaims(user, revision, float(expires_at))
