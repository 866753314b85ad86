"""The client's membership calls against a node (loopback, in-memory backend) whose meta group
has no reachable leader for a moment, as right after its leader died."""

from __future__ import annotations

import asyncio

import pytest

from kvstore._pb import meta_pb2
from kvstore.client import Client
from kvstore.errors import NotLeaderError
from kvstore.statemachine.cluster_state import CommandResult
from tests.fakes.guarded import serving


async def test_a_membership_change_waits_out_the_meta_groups_election(monkeypatch: pytest.MonkeyPatch) -> None:
    async with serving() as served:
        propose = served.backend.propose_meta
        proposed: list[meta_pb2.MetaCommand] = []
        refusals = 3

        def leaderless_at_first(command: meta_pb2.MetaCommand, forward: bool = True) -> asyncio.Future[CommandResult]:
            nonlocal refusals
            if refusals:
                refusals -= 1
                raise NotLeaderError("the meta group's leader at 127.0.0.1:1 cannot be reached (connection refused)")
            proposed.append(command)
            return propose(command, forward)

        monkeypatch.setattr(served.backend, "propose_meta", leaderless_at_first)
        async with Client([served.address], timeout=10.0) as client:
            member = await client.member_add("127.0.0.1:7001")

        assert refusals == 0 and len(proposed) == 1  # refused three times, proposed once
        assert member.address == "127.0.0.1:7001"


async def test_a_meta_group_without_a_leader_until_the_deadline_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    async with serving() as served:
        def leaderless(command: meta_pb2.MetaCommand, forward: bool = True) -> asyncio.Future[CommandResult]:
            raise NotLeaderError("node 1 does not lead the meta group; no leader is known yet")

        monkeypatch.setattr(served.backend, "propose_meta", leaderless)
        async with Client([served.address], timeout=1.0) as client:
            with pytest.raises(NotLeaderError, match="no leader is known yet"):
                await client.member_remove(2)
