"""The membership nemesis's choices, on a fake cluster: changes take turns (add, replace, remove,
replace), each strikes a current member, and healing waits for the change to settle."""

from __future__ import annotations

import random

from kvstore.jepsen.nemesis import MembershipNemesis, NemesisKind


class FakeMembers:
    def __init__(self) -> None:
        self.members = [1, 2, 3]
        self.next_id = 4
        self.calls: list[str] = []

    @property
    def node_ids(self) -> tuple[int, ...]:
        return tuple(self.members)

    def address(self, node_id: int) -> str:
        return f"10.0.0.{node_id}:7000"

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    async def add_node(self) -> int:
        added = self._new_id()
        self.members.append(added)
        self.calls.append(f"add {added}")
        return added

    async def remove_node(self, node_id: int) -> None:
        self.calls.append(f"remove {node_id}")
        self.members.remove(node_id)

    async def replace_node(self, node_id: int) -> int:
        fresh = self._new_id()
        self.members[self.members.index(node_id)] = fresh
        self.calls.append(f"replace {node_id} by {fresh}")
        return fresh

    async def wait_settled(self, timeout_s: float) -> None:
        self.calls.append(f"settle within {timeout_s:g}s")


async def test_changes_take_turns_on_current_members_and_heal_waits_for_them_to_settle() -> None:
    members = FakeMembers()
    nemesis = MembershipNemesis(members, settle_timeout_s=30)
    rng = random.Random(5)
    descriptions = []
    for _ in range(4):
        before = set(members.node_ids)
        fault = await nemesis.inject(rng)
        assert fault.nemesis is NemesisKind.MEMBERSHIP
        assert set(fault.nodes) <= before | set(members.node_ids)
        descriptions.append(fault.description)
        await fault.heal()

    kinds = [call.split()[0] for call in members.calls]
    assert kinds == ["add", "settle", "replace", "settle", "remove", "settle", "replace", "settle"]
    assert descriptions[0] == "add node 4 at 10.0.0.4:7000"
    assert "(killed, data dir deleted) by node 5 at its address" in descriptions[1]
    assert len(members.node_ids) == 3  # back to the initial size
