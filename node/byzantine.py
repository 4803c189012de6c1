"""Test-only misbehaving modes of a node, for the reliability suite (tests/reliability).

Enabled by the environment variable ``WULIAN_TEST_BYZANTINE=<mode>`` (or
``<mode>:paused``: installed but honest until the first SIGUSR1; every SIGUSR1 turns
the misbehaviour on or off, so a test can compare windows on one network). The node refuses
to start with it (:class:`ConfigError`) unless its config also says ``rules = "test"``
— the rules only integration tests use — or ``test_misbehaviour = true`` (for the
relay path, which runs only with the real channel rules), so a production node cannot
misbehave by accident. Modes:

- ``equivocate``: as primary, every PRE-PREPARE goes to all peers as usual, and the
  first peer (in id order) then also receives a second, validly signed PRE-PREPARE for
  the same (view, height) with a different block (header time moved by 1 ms).
- ``bad-certs``: catch-up answers (BLOCKS) carry commit certificates whose votes are
  forged (signature bytes flipped); the message itself is re-signed with the node's
  key, so it passes authentication and reaches the certificate check.
- ``bad-anchors``: the node's relay does not submit its anchors; it sends every other
  validator of the judicial channel a FORWARD of the same anchors with the
  supervision certificate's votes forged (signature bytes flipped), each anchor
  transaction correctly signed by the node, so it passes everything up to the
  light-client check of the anchor rule.
- ``flood``: the node behaves correctly and in addition sends every peer
  :data:`FLOOD_PER_TICK` invalid messages every :data:`FLOOD_TICK_S`: undecodable
  bytes, schema-invalid maps, PREPAREs and COMMITs with bad signatures, messages for
  an unknown channel.

Outgoing messages are rewritten through :attr:`node.peers.PeerTransport.tamper`; the
flood runs as one task started by :meth:`Byzantine.start`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import signal
from collections.abc import Sequence
from typing import Final

from consensus.messages import Blocks, Forward, Prepare, PrePrepare, sign
from crosschain.anchor import TARGET_CHANNEL
from ledger.blocks import Transaction, build_block
from ledger.certificate import CommitCertificate, Vote
from ledger.crypto import Signer
from ledger.encoding import encode
from ledger.errors import ConfigError, LedgerError
from node import consensus_port as cport
from node.config import NodeConfig
from node.peers import PeerTransport

log = logging.getLogger("wulian.byzantine")

ENV: Final = "WULIAN_TEST_BYZANTINE"
MODES: Final = frozenset({"equivocate", "bad-certs", "bad-anchors", "flood"})
FLOOD_TICK_S: Final = 0.02
FLOOD_PER_TICK: Final = 10


def mode_from_env(config: NodeConfig) -> str | None:
    """The misbehaviour asked for by :data:`ENV`, or None. Raises :class:`ConfigError`
    if the mode is unknown or the config is not a test config (``rules = "test"``)."""
    mode = os.environ.get(ENV, "").strip().removesuffix(":paused")
    if not mode:
        return None
    src = str(config.source or "config")
    if config.rules != "test" and not config.test_misbehaviour:
        raise ConfigError(
            src, "rules", f'{ENV} is set: refused unless rules = "test" or test_misbehaviour'
        )
    if mode not in MODES:
        raise ConfigError(src, ENV, f"unknown mode {mode!r} (one of {', '.join(sorted(MODES))})")
    return mode


class Byzantine:
    """One misbehaving mode installed on a node's transport."""

    def __init__(
        self, mode: str, *, node_id: str, signer: Signer, transport: PeerTransport,
        channels: Sequence[str],
    ) -> None:  # fmt: skip
        self.mode = mode
        self._id = node_id
        self._signer = signer
        self._transport = transport
        self._channels = tuple(channels)
        self._victim = min(transport.links) if transport.links else ""
        self._task: asyncio.Task[None] | None = None
        self.sent_bad = 0
        self.active = not os.environ.get(ENV, "").strip().endswith(":paused")
        if mode in ("equivocate", "bad-certs"):
            transport.tamper = self._tamper
        log.warning("TEST-ONLY byzantine mode %r installed (active: %s)", mode, self.active)

    def toggle(self) -> None:
        """Turn the misbehaviour on or off (SIGUSR1)."""
        self.active = not self.active
        log.warning("TEST-ONLY byzantine mode %r active: %s", self.mode, self.active)

    # ------------------------------------------------------------------ rewriting

    def _tamper(self, peer: str, channel: str, payload: bytes) -> Sequence[bytes]:
        if not self.active:
            return (payload,)
        try:
            msg = cport.decode_message(payload)
        except LedgerError:
            return (payload,)
        if self.mode == "equivocate" and isinstance(msg, PrePrepare) and peer == self._victim:
            return (payload, self._conflicting(msg))
        if self.mode == "bad-certs" and isinstance(msg, Blocks) and msg.entries:
            return (self._forged(msg),)
        return (payload,)

    def _conflicting(self, pp: PrePrepare) -> bytes:
        h = pp.block.header
        other = build_block(
            channel=h.channel, height=h.height, prev_hash=h.prev_hash,
            transactions=pp.block.transactions, state_height=h.state_height,
            state_root=h.state_root, proposer=h.proposer, view=h.view, time_ms=h.time_ms + 1,
        )  # fmt: skip
        self.sent_bad += 1
        return cport.encode_message(sign(dataclasses.replace(pp, block=other), self._signer))

    def _forged(self, b: Blocks) -> bytes:
        entries = []
        for block, cert in b.entries:
            votes = tuple(
                Vote(v.validator, bytes(x ^ 0x5A for x in v.signature)) for v in cert.votes
            )
            entries.append((block, CommitCertificate(
                cert.channel, cert.height, cert.view, cert.block_hash, votes
            )))  # fmt: skip
        self.sent_bad += 1
        return cport.encode_message(
            sign(dataclasses.replace(b, entries=tuple(entries)), self._signer)
        )

    # ------------------------------------------------------------------ relay path

    def relay_anchors(self, txs: Sequence[Transaction]) -> list[Transaction]:
        """The relay's anchor transactions → the ones to submit locally. While active,
        sends forged copies (supervision certificate votes flipped, re-signed) straight
        to the judicial peers and submits none itself."""
        if not self.active or self.mode != "bad-anchors":
            return list(txs)
        forged = [self._forged_anchor(tx) for tx in txs if "cert" in tx.payload]
        if forged:
            fw = sign(Forward(TARGET_CHANNEL, self._id, tuple(forged)), self._signer)
            peers = sorted(self._transport.links)
            self._transport.send(peers, TARGET_CHANNEL, cport.encode_message(fw), "forward", False)
            self.sent_bad += len(forged)
            log.warning("TEST-ONLY sent %d forged anchor(s) to %s", len(forged), peers)
        return []

    def _forged_anchor(self, tx: Transaction) -> Transaction:
        cert = CommitCertificate.from_wire(tx.payload["cert"])
        votes = tuple(Vote(v.validator, bytes(x ^ 0x5A for x in v.signature)) for v in cert.votes)
        bad = CommitCertificate(cert.channel, cert.height, cert.view, cert.block_hash, votes)
        payload = {**tx.payload, "cert": bad.to_wire()}
        return dataclasses.replace(tx, payload=payload, signature=b"").signed(self._signer)

    # ------------------------------------------------------------------ flooding

    def _junk(self, channel: str) -> list[tuple[str, bytes]]:
        bad_sig = secrets.token_bytes(64)
        prepare = Prepare(channel, self._id, 0, 1, secrets.token_bytes(32), bad_sig)
        commit = dataclasses.replace(prepare, signature=secrets.token_bytes(64))
        return [
            (channel, secrets.token_bytes(48)),  # not MessagePack at all (mostly)
            (channel, encode({"k": "prepare", "junk": 1})),  # schema-invalid
            (channel, cport.encode_message(prepare)),  # bad signature
            (channel, cport.encode_message(commit)),
            ("no-such-channel", cport.encode_message(prepare)),
        ]

    async def _flood(self) -> None:
        peers = sorted(self._transport.links)
        while True:
            await asyncio.sleep(FLOOD_TICK_S)
            if not self.active:
                continue
            batch: list[tuple[str, bytes]] = []
            while len(batch) < FLOOD_PER_TICK:
                batch.extend(self._junk(self._channels[len(batch) % len(self._channels)]))
            for channel, payload in batch[:FLOOD_PER_TICK]:
                self._transport.send(peers, channel, payload, "flood", essential=False)
            self.sent_bad += FLOOD_PER_TICK

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGUSR1, self.toggle)
        if self.mode == "flood" and self._channels and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flood())

    async def stop(self) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def install_from_env(
    config: NodeConfig, *, signer: Signer, transport: PeerTransport, channels: Sequence[str]
) -> Byzantine | None:
    """Install the mode of :data:`ENV` (None if unset). Raises :class:`ConfigError`
    (see :func:`mode_from_env`)."""
    mode = mode_from_env(config)
    if mode is None:
        return None
    return Byzantine(
        mode, node_id=config.node_id, signer=signer, transport=transport, channels=channels
    )
