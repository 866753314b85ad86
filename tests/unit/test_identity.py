"""A data dir's identity: recorded once, checked at every start; peers judged by their hellos."""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path

import pytest

from kvstore._pb import peer_pb2
from kvstore.node.identity import (
    LAYOUT_VERSION,
    Identity,
    IdentityError,
    PeerAdmission,
    derive_cluster_id,
    load_identity,
    open_identity,
)
from kvstore.storage import MemoryEngine
from kvstore.storage.keys import data_key, meta_key

DIR = Path("/data/node-1")
MEMBERS = {1: "10.0.0.1:2379", 2: "10.0.0.2:2379", 3: "10.0.0.3:2379"}


def open_new(engine: MemoryEngine, node_id: int = 1, partitions: int = 64) -> Identity:
    return open_identity(engine, DIR, node_id, partitions, lambda: derive_cluster_id("token", MEMBERS))


def test_cluster_id_depends_on_token_and_members_not_on_their_order() -> None:
    base = derive_cluster_id("token", MEMBERS)
    assert base == derive_cluster_id("token", dict(reversed(MEMBERS.items())))
    assert len(base) == 16 and int(base, 16) >= 0
    assert base != derive_cluster_id("other", MEMBERS)
    assert base != derive_cluster_id("token", {**MEMBERS, 4: "10.0.0.4:2379"})
    assert base != derive_cluster_id("token", {**MEMBERS, 3: "10.0.0.9:2379"})


def test_a_new_data_dir_records_its_identity_and_keeps_it() -> None:
    engine = MemoryEngine()
    created = open_new(engine)
    assert created == Identity(derive_cluster_id("token", MEMBERS), 1, 64, LAYOUT_VERSION, created.incarnation)
    # Later starts keep the recorded cluster id even though the members may have changed since.
    again = open_identity(engine, DIR, 1, 64, lambda: "never asked")
    assert again == created == load_identity(engine)
    assert open_new(MemoryEngine()).incarnation != created.incarnation


@pytest.mark.parametrize(
    ("node_id", "partitions", "fragment"),
    [
        (2, 64, "belongs to node 1, not --id 2: start it with --id 1"),
        (1, 128, "holds a cluster of 64 partitions, not --partitions 128: start it with --partitions 64"),
    ],
)
def test_settings_that_disagree_with_the_data_dir_are_refused(node_id: int, partitions: int, fragment: str) -> None:
    engine = MemoryEngine()
    open_new(engine)
    with pytest.raises(IdentityError, match=fragment) as refused:
        open_identity(engine, DIR, node_id, partitions, lambda: "unused")
    assert str(DIR) in str(refused.value) and "\n" not in str(refused.value)


def test_another_layout_version_is_refused() -> None:
    engine = MemoryEngine()
    open_new(engine)
    batch = engine.new_batch()
    batch.put(meta_key("layout_version"), str(LAYOUT_VERSION + 1).encode())
    engine.write(batch, sync=True)
    with pytest.raises(IdentityError, match=f"layout version {LAYOUT_VERSION + 1}, this kvstore reads"):
        open_new(engine)


def test_data_without_an_identity_is_from_an_older_kvstore() -> None:
    engine = MemoryEngine()
    batch = engine.new_batch()
    batch.put(data_key(0, b"k"), b"v")
    engine.write(batch, sync=True)
    with pytest.raises(IdentityError, match="no identity record: it was written by an older kvstore"):
        open_new(engine)


def test_a_partial_identity_is_damage() -> None:
    engine = MemoryEngine()
    batch = engine.new_batch()
    batch.put(meta_key("node_id"), b"1")
    engine.write(batch, sync=True)
    with pytest.raises(IdentityError, match="damaged"):
        load_identity(engine)


# -- peers ----------------------------------------------------------------------------------


class Judge:
    """Node 1's admission of its peers, with the fatal verdicts it reported."""

    def __init__(self, engine: MemoryEngine | None = None, members: Callable[[], Collection[int]] = MEMBERS.keys,
                 also_counted: Collection[int] = ()) -> None:
        self.engine = engine or MemoryEngine()
        self.fatal: list[str] = []
        self.admission = PeerAdmission(open_new(self.engine), self.engine, members, self.fatal.append,
                                       also_counted=also_counted)

    def hello(self, node_id: int, incarnation: str = "aaaa", cluster_id: str | None = None,
              refusal: peer_pb2.PeerRefusal = peer_pb2.ACCEPTED) -> peer_pb2.PeerHello:
        cluster = self.admission.identity.cluster_id if cluster_id is None else cluster_id
        return peer_pb2.PeerHello(node_id=node_id, cluster_id=cluster, incarnation=incarnation, refusal=refusal)


def test_a_member_of_the_same_cluster_is_accepted_and_its_incarnation_remembered_durably() -> None:
    judge = Judge()
    assert judge.admission.judge(judge.hello(2, "aaaa")) == peer_pb2.ACCEPTED
    assert judge.admission.judge(judge.hello(2, "aaaa")) == peer_pb2.ACCEPTED
    # After a restart (a new admission over the same engine) the incarnation is still known.
    restarted = Judge(judge.engine)
    assert restarted.admission.judge(restarted.hello(2, "bbbb")) == peer_pb2.REUSED_NODE_ID


def test_other_clusters_and_non_members_are_refused() -> None:
    judge = Judge()
    assert judge.admission.judge(judge.hello(2, cluster_id="0123456789abcdef")) == peer_pb2.OTHER_CLUSTER
    assert judge.admission.judge(judge.hello(9)) == peer_pb2.NOT_A_MEMBER


def test_the_hello_carries_the_identity_and_the_refusal() -> None:
    judge = Judge()
    identity = judge.admission.identity
    hello = judge.admission.hello(peer_pb2.NOT_A_MEMBER)
    assert (hello.node_id, hello.cluster_id, hello.incarnation, hello.refusal) == (
        1, identity.cluster_id, identity.incarnation, peer_pb2.NOT_A_MEMBER)


def test_a_node_refused_by_a_majority_of_the_members_is_the_odd_one_out() -> None:
    judge = Judge()
    assert not judge.admission.check_reply(2, judge.hello(2, refusal=peer_pb2.REUSED_NODE_ID))
    assert judge.fatal == []  # one of three members: perhaps node 2 is the wrong one
    assert not judge.admission.check_reply(3, judge.hello(3, refusal=peer_pb2.REUSED_NODE_ID))
    (verdict,) = judge.fatal
    assert "2 of its 2 peers (2, 3)" in verdict and "never reused" in verdict
    assert judge.admission.fatal == verdict


def test_the_peers_a_node_was_started_with_count_when_its_own_state_names_only_itself() -> None:
    # Another cluster's data dir: its state knows node 1 alone, but it was started among 1, 2, 3.
    judge = Judge(members=lambda: (1,), also_counted=MEMBERS.keys())
    assert judge.admission.judge(judge.hello(2, cluster_id="0123456789abcdef")) == peer_pb2.OTHER_CLUSTER
    assert judge.fatal == []
    assert judge.admission.judge(judge.hello(3, cluster_id="0123456789abcdef")) == peer_pb2.OTHER_CLUSTER
    (verdict,) = judge.fatal
    assert "(2, 3)" in verdict and "another cluster" in verdict


def test_a_refusal_is_forgotten_once_the_peer_is_accepted() -> None:
    judge = Judge()
    assert not judge.admission.check_reply(2, judge.hello(2, cluster_id="0123456789abcdef"))
    assert judge.admission.check_reply(2, judge.hello(2))
    assert not judge.admission.check_reply(3, judge.hello(3, cluster_id="0123456789abcdef"))
    assert judge.fatal == []


def test_a_reply_from_another_node_than_the_one_addressed_is_not_a_stream() -> None:
    judge = Judge()
    assert not judge.admission.check_reply(2, judge.hello(3))
    assert judge.fatal == []
