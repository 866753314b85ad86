"""What a node accepts on its port and how it dials its peers: TLS or plaintext, certificate
rotation on SIGHUP, the peer check, and the request limits.

With TLS (docs/security.md) the port serves `--cert` and requires every caller, client or peer,
to present a certificate that `--ca` or `--peer-ca` vouches for. The Peer service admits only
callers with a peer certificate (`kvstore.tls.peer_refusal`). Towards its peers the node
presents `--peer-cert` and checks their served certificate against `--ca`.

Rotation: `reload()` re-reads every file. If all of them are good, handshakes from then on
use the new certificates (gRPC asks `_fetch` before each one) and `generation` moves on, which
tells the peer transport to dial its peers again with the new client certificate; connections
already open are left alone. If any file is bad, one log line says so and nothing changes.
"""

from __future__ import annotations

import logging
import time

import grpc

from kvstore import tls
from kvstore.node.config import NodeConfig
from kvstore.rpc.backend import PeerCaller
from kvstore.tls import TlsConfig, TlsMaterial

log = logging.getLogger("kvstore.security")

# A peer's frame may exceed the largest request by the envelope of the Raft message carrying it.
PEER_ENVELOPE_BYTES = 64 << 10
REFUSAL_LOG_INTERVAL_S = 60.0
MAX_REMEMBERED_REFUSALS = 64


class NodeSecurity:
    """The node's TLS state (or plaintext) and limits. Loading raises `TlsError` (one line)."""

    def __init__(self, config: NodeConfig) -> None:
        self._config = config
        self._serving: TlsMaterial | None = None
        self._peer: TlsMaterial | None = None
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self._refusals_logged: dict[str, float] = {}  # refusal -> when it was last logged
        self.generation = 0
        self._load()

    @property
    def enabled(self) -> bool:
        return self._serving is not None

    def _load(self) -> None:
        serving_files, peer_files = self._config.tls(), self._config.peer_tls()
        if serving_files is None or peer_files is None:
            return
        serving = tls.load(serving_files)
        peer = serving if peer_files == serving_files else tls.load(peer_files, "peer ")
        self._serving, self._peer = serving, peer

    def _server_configuration(self) -> grpc.ServerCertificateConfiguration:
        assert self._serving is not None and self._peer is not None
        trusted = self._serving.ca if self._peer.ca == self._serving.ca else self._serving.ca + b"\n" + self._peer.ca
        return tls.server_configuration(self._serving, trusted)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # Runs on a gRPC thread before each handshake; taking the attribute is atomic.
        pending, self._pending = self._pending, None
        return pending

    # -- serving ----------------------------------------------------------------------------

    def server_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_receive_message_length", self._config.max_request_bytes + PEER_ENVELOPE_BYTES),
            ("grpc.max_concurrent_streams", self._config.max_concurrent_streams),
        ]

    def add_port(self, server: grpc.aio.Server, address: str) -> int:
        """Listen on `address` with TLS or plaintext; the port, 0 when it cannot be bound."""
        if not self.enabled:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, tls.server_credentials(self._server_configuration(), self._fetch))

    def reload(self) -> bool:
        """Re-read the certificate files (SIGHUP); True when the new ones are in use."""
        if not self.enabled:
            log.info("SIGHUP: no certificates to reload, the node serves plaintext")
            return False
        try:
            self._load()
        except tls.TlsError as e:
            log.warning("certificate reload failed, the old certificates stay in use: %s", e)
            return False
        assert self._serving is not None and self._peer is not None
        self._pending = self._server_configuration()
        self.generation += 1
        peer = "the same to peers" if self._peer is self._serving else f"{tls.describe(self._peer.certificate)} to peers"
        log.info("reloaded certificates: serving %s, presenting %s", tls.describe(self._serving.certificate), peer)
        return True

    # -- peers ------------------------------------------------------------------------------

    def peer_channel(self, address: str, options: tls.ChannelOptions) -> grpc.aio.Channel:
        """A channel to a peer with the current certificates (taken now: call again after a reload)."""
        credentials = None
        if self._serving is not None and self._peer is not None:
            credentials = tls.channel_credentials(self._peer, trusted_ca=self._serving.ca)
        return tls.aio_channel(address, credentials, options)

    async def diagnose_peer(self, address: str, timeout: float) -> str | None:
        """Why dialling the peer at `address` failed at the TLS layer, or None (see `tls.diagnose`)."""
        serving, peer = self._config.tls(), self._config.peer_tls()
        if serving is None or peer is None:
            return None
        return await tls.diagnose(address, TlsConfig(ca=serving.ca, cert=peer.cert, key=peer.key), timeout)

    def peer_refusal(self, context: PeerCaller) -> str | None:
        """Why the caller of a Peer RPC may not use it, or None. Every refusal is logged, each
        distinct one at most once a minute (a refused node keeps dialling)."""
        if self._peer is None:
            return None
        refusal = tls.peer_refusal(context.auth_context(), self._peer.authorities)
        if refusal is not None:
            now = time.monotonic()
            logged_at = self._refusals_logged.get(refusal)
            if logged_at is None or now - logged_at > REFUSAL_LOG_INTERVAL_S:
                if len(self._refusals_logged) >= MAX_REMEMBERED_REFUSALS:
                    self._refusals_logged.clear()
                self._refusals_logged[refusal] = now
                log.warning("refused a peer connection from %s: %s", context.peer(), refusal)
        return refusal
