"""kvctl's fixed exit codes: `kvstore.errors.ExitCode`, defined next to the error table that
maps every error to one of them."""

from kvstore.errors import ExitCode

__all__ = ["ExitCode"]
