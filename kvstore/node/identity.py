"""Who a data directory belongs to, recorded when it is created and checked at every start.

A data dir records (as node metadata, ``M`` keys of `kvstore.storage.keys`, ASCII values):

==================  ==========================================================================
``cluster_id``      16 hex digits, derived once, at bootstrap, from ``--initial-cluster-token``
                    and the initial member list (`derive_cluster_id`), as etcd derives its
                    cluster ID: every initial node computes the same id without talking to the
                    others, and two clusters built from different tokens or members never
                    accept each other's nodes. Never recomputed afterwards: the member list
                    may change, the cluster stays the same.
``node_id``         the node's id; ids are never reused (see ``incarnation``)
``partitions``      the partition count, which never changes for a cluster
``layout_version``  the version of the key layout and record encodings the dir was written with
``incarnation``     16 random hex digits made with the dir: which copy of the node this is
``peer/<id>``       the incarnation of peer ``<id>``, remembered from its first hello
==================  ==========================================================================

At start the node refuses (`IdentityError`, one line saying what differs and what to do) a
data dir whose node id, partition count or layout version disagree with its settings.

Peers check each other in the first frame of every stream (`PeerHello`, both ways): they refuse
another cluster's node, a node that is not a member, and a node id that comes back with another
incarnation — a node that lost its disk has forgotten its votes and its log, and letting it vote
again under its old id could elect two leaders in one term. Which side is wrong is decided by
majority: a node refused by (or refusing) a majority of the members, itself included, is the
odd one out and stops (`PeerAdmission.fatal`); the others carry on without it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from hashlib import blake2b
from pathlib import Path

from kvstore._pb import peer_pb2
from kvstore.storage import Engine
from kvstore.storage.keys import meta_key, prefix_end

log = logging.getLogger("kvstore.identity")

LAYOUT_VERSION = 1
"""Bumped whenever the key layout or a stored record's encoding changes incompatibly."""

_CLUSTER_PERSON = b"kvstore.cluster"
_PEER_PREFIX = "peer/"
_FIELDS = ("cluster_id", "node_id", "partitions", "layout_version", "incarnation")


class IdentityError(Exception):
    """The data dir and this node's settings, or its peers, disagree; the message is one line
    for the user, saying what differs and what to do."""


@dataclass(frozen=True, slots=True)
class Identity:
    cluster_id: str
    node_id: int
    partitions: int
    layout_version: int
    incarnation: str


def derive_cluster_id(token: str, members: Mapping[int, str]) -> str:
    """The id of a cluster bootstrapped with `token` and `members` (node id -> address)."""
    described = "\n".join([token, *(f"{node_id}={address}" for node_id, address in sorted(members.items()))])
    return blake2b(described.encode(), digest_size=8, person=_CLUSTER_PERSON).hexdigest()


def load_identity(engine: Engine) -> Identity | None:
    """The identity recorded in `engine`, None when there is none; IdentityError when it is
    partial or does not parse (the dir is damaged)."""
    values = {name: engine.get(meta_key(name)) for name in _FIELDS}
    if all(value is None for value in values.values()):
        return None
    try:
        text = {name: value.decode("ascii") for name, value in values.items() if value is not None}
        missing = sorted(set(_FIELDS) - set(text))
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        return Identity(text["cluster_id"], int(text["node_id"]), int(text["partitions"]),
                        int(text["layout_version"]), text["incarnation"])
    except ValueError as exc:
        raise IdentityError(f"the identity record of the data dir is damaged ({exc}); "
                            "replace this node (docs/membership.md)") from None


def _has_data(engine: Engine) -> bool:
    return next(iter(engine.iterate(b"", None)), None) is not None


def open_identity(
    engine: Engine, data_dir: Path, node_id: int, partitions: int, cluster_id: Callable[[], str]
) -> Identity:
    """The data dir's identity after checking it against the node's settings; a new dir gets
    one (cluster id from `cluster_id()`, a fresh incarnation), written synced before anything else."""
    stored = load_identity(engine)
    if stored is None:
        if _has_data(engine):
            raise IdentityError(
                f"data dir {data_dir} holds data but no identity record: it was written by an older "
                f"kvstore (before layout version {LAYOUT_VERSION}); start this node with an empty data dir"
            )
        identity = Identity(cluster_id(), node_id, partitions, LAYOUT_VERSION, secrets.token_hex(8))
        batch = engine.new_batch()
        for name in _FIELDS:
            batch.put(meta_key(name), str(getattr(identity, name)).encode("ascii"))
        engine.write(batch, sync=True)
        return identity
    if stored.layout_version != LAYOUT_VERSION:
        raise IdentityError(
            f"data dir {data_dir} has layout version {stored.layout_version}, this kvstore reads version "
            f"{LAYOUT_VERSION}: run the kvstore that wrote it, or start this node with an empty data dir"
        )
    if stored.node_id != node_id:
        raise IdentityError(
            f"data dir {data_dir} belongs to node {stored.node_id}, not --id {node_id}: start it with "
            f"--id {stored.node_id}, or give node {node_id} its own data dir"
        )
    if stored.partitions != partitions:
        raise IdentityError(
            f"data dir {data_dir} holds a cluster of {stored.partitions} partitions, not --partitions "
            f"{partitions}: start it with --partitions {stored.partitions} (the partition count of a "
            f"cluster never changes)"
        )
    return stored


def remembered_incarnations(engine: Engine) -> dict[int, str]:
    """Peer id -> the incarnation it had when this node first heard from it."""
    prefix = meta_key(_PEER_PREFIX)
    return {
        int(key[len(prefix):]): value.decode("ascii")
        for key, value in engine.iterate(prefix, prefix_end(prefix))
    }


_WHAT_TO_DO = {
    peer_pb2.OTHER_CLUSTER: (
        "this node's data dir belongs to another cluster, or its --peers or --initial-cluster-token "
        "differ from theirs; give it its own cluster's data dir (docs/membership.md)"
    ),
    peer_pb2.NOT_A_MEMBER: "this node is not a member of their cluster (docs/membership.md)",
    peer_pb2.REUSED_NODE_ID: (
        "they know this node id with another data dir; a node id is never reused with an empty or "
        "different disk (it could vote twice in one term): replace the node instead (docs/membership.md)"
    ),
}


class PeerAdmission:
    """Which peers may talk to this node, judged from their hellos, and whether this node is the
    odd one out. Both ends of a stream judge: the receiver refuses in its reply, the sender checks
    the reply. Every refusal, either way, counts toward `fatal`: refusals by a majority of the
    members — and of `also_counted`, the peers this node was started with, so that a node whose
    own state names other members (another cluster's data dir) still learns it is the odd one
    out — are fatal."""

    def __init__(self, identity: Identity, engine: Engine, members: Callable[[], Collection[int]],
                 on_fatal: Callable[[str], None], also_counted: Collection[int] = ()) -> None:
        self.identity = identity
        self._engine = engine
        self._members = members
        self._also_counted = frozenset(also_counted)
        self._on_fatal = on_fatal
        self._incarnations = remembered_incarnations(engine)
        self._refusals: dict[int, peer_pb2.PeerRefusal] = {}
        self.fatal: str | None = None

    def hello(self, refusal: peer_pb2.PeerRefusal = peer_pb2.ACCEPTED) -> peer_pb2.PeerHello:
        identity = self.identity
        return peer_pb2.PeerHello(node_id=identity.node_id, cluster_id=identity.cluster_id,
                                  incarnation=identity.incarnation, refusal=refusal)

    def judge(self, hello: peer_pb2.PeerHello) -> peer_pb2.PeerRefusal:
        """Whether the peer that sent `hello` may talk to this node (ACCEPTED) or why not. The
        first incarnation seen of a peer is remembered, durably, before it is accepted."""
        peer_id = hello.node_id
        if hello.cluster_id != self.identity.cluster_id:
            refusal = peer_pb2.OTHER_CLUSTER
        elif peer_id not in self._members():
            refusal = peer_pb2.NOT_A_MEMBER
        elif self._incarnations.get(peer_id, hello.incarnation) != hello.incarnation:
            refusal = peer_pb2.REUSED_NODE_ID
        else:
            refusal = peer_pb2.ACCEPTED
            if peer_id not in self._incarnations:
                batch = self._engine.new_batch()
                batch.put(meta_key(f"{_PEER_PREFIX}{peer_id}"), hello.incarnation.encode("ascii"))
                self._engine.write(batch, sync=True)
                self._incarnations[peer_id] = hello.incarnation
        self._note(peer_id, refusal)
        return refusal

    def check_reply(self, peer_id: int, reply: peer_pb2.PeerHello) -> bool:
        """The reply of peer `peer_id` to our hello: True when the stream may carry messages."""
        if reply.node_id != peer_id:
            log.warning("the address of peer %d is served by node %d; not talking to it", peer_id, reply.node_id)
            return False
        if reply.refusal != peer_pb2.ACCEPTED:
            self._note(peer_id, reply.refusal)
            return False
        return self.judge(reply) == peer_pb2.ACCEPTED

    def _note(self, peer_id: int, refusal: peer_pb2.PeerRefusal) -> None:
        if refusal == peer_pb2.ACCEPTED:
            self._refusals.pop(peer_id, None)
            return
        if peer_id not in self._refusals:
            log.warning("refusing to talk with node %d: %s", peer_id, peer_pb2.PeerRefusal.Name(refusal))
        self._refusals[peer_id] = refusal
        members = set(self._members()) | self._also_counted | {self.identity.node_id}
        against = sorted(p for p in self._refusals if p in members)
        if self.fatal is None and len(against) > len(members) // 2:
            names = ", ".join(str(p) for p in against)
            self.fatal = (
                f"node {self.identity.node_id} (cluster {self.identity.cluster_id}) and {len(against)} of "
                f"its {len(members) - 1} peers ({names}) refuse each other: {_WHAT_TO_DO[self._refusals[against[0]]]}"
            )
            self._on_fatal(self.fatal)
