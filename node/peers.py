"""Peer transport: batched, authenticated frames of consensus messages over one
long-lived HTTP request per peer link.

Wire format — a frame is ``0xc1 ‖ mac ‖ body``: the byte 0xc1 (never used by
MessagePack, so a version 1 frame is refused as an encoding error), a 32-byte MAC, and
the canonical encoding (:mod:`ledger.encoding`) of::

    {"v": 2, "from": <sender node id>, "to": <receiver node id>,
     "net": <genesis hash>, "seq": <int>,
     "msgs": [[<channel>, <encoded consensus message>], ...]}

``mac`` is keyed BLAKE2b-256 (personalisation ``wulian/frame/v2``) of the body bytes
under the link's key for that direction: both nodes' ed25519 keys, mapped to X25519,
agree a secret, hashed with the genesis hash, sender and receiver
(:meth:`ledger.crypto.Ed25519Signer.shared_key`, :class:`FrameAuth`). Only the two
nodes of a link hold the key. Version 1 signed each frame with ed25519 instead: a
signature and a verification per frame (and a re-encoding of its body) for what a MAC
between two parties does at a keyed hash's cost; the consensus messages inside are
still signed by their senders, and certificates still carry those signatures. The
receiver checks, before anything reaches consensus: the frame decodes within size,
``net`` is our genesis hash, ``from`` is a known peer other than us (the validators
per genesis and governance, :mod:`node.membership`), ``to`` is us, the MAC verifies,
and ``seq`` is greater than the last accepted from that sender (frames from one sender
are sent one at a time, in order; ``seq`` starts at the sender's boot time in ms ×
2**20, so it keeps growing across restarts). A retried frame (same ``seq``) is
acknowledged as a duplicate.

Frames travel in the body of one streaming ``POST /v1/peer/stream`` per link
(``Content-Type: application/x-wulian-frames``, chunked): each frame is preceded by its
length as 4 bytes, big-endian. The receiver authenticates every frame on its own, as it
arrives; a frame that fails ends the stream with a 4xx answer and closes the connection
(the answer is usually lost with it: the sender sees the stream break).
A stream costs one request for as long as the link is up, instead of one HTTP exchange
per frame (the per-request cost of httpx and uvicorn was most of an idle node's CPU
and ~1–3 ms per frame under load). ``POST /v1/peer/frames`` still takes one frame per
request (``application/msgpack``), answering 200 ``{"ok", "delivered", "duplicate"}``.

Sending: one :class:`PeerLink` per peer holds a bounded queue of outbound messages
and one persistent :class:`httpx.AsyncClient`. A sender task keeps a stream open while
there is traffic, drains the queue into frames (up to ``frame_max_bytes``, after
waiting ``frame_flush_ms`` for more messages to batch) and writes them to the stream.
When the stream breaks, the frame being written is kept and sent on its own with
``POST /v1/peer/frames`` (same ``seq``: a copy that did arrive is refused as a replay),
whose answer tells a refused frame (dropped, logged) from a network fault (retried);
then a new stream opens. Frames already handed to the kernel before the break may be
lost, which the protocol tolerates (STATUS/FETCH catch-up, view-change
retransmission). Reconnects back off exponentially
(capped). Urgent messages (votes and proposals) leave ahead of bulk traffic (FORWARD,
STATUS, FETCH, BLOCKS). Messages older than :data:`MESSAGE_TTL_S` are dropped unsent.

TLS (``tls=`` an :class:`ssl.SSLContext` trusting the network CA and holding this
node's certificate, :func:`node.tls.client_context`): links to ``https://`` peers
verify the peer's certificate against the CA *and* set the TLS server name to
:func:`node.tls.node_tls_name` of the peer, so the handshake fails — before a frame
is sent — unless the certificate names the genesis node being dialled.
:meth:`PeerLink.enqueue` never blocks: when the queue is full the oldest non-essential
message is dropped (then the oldest of any kind), and counted. A down peer only fills
its own queue; nobody else waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import ssl
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import httpx
import msgpack

from ledger.crypto import Ed25519Signer, Signer
from ledger.encoding import encode
from ledger.errors import LedgerError, SignatureError
from ledger.schema import as_map, check_keys, get_bytes, get_int, get_str, get_str_bytes_pairs
from node.metrics import NodeMetrics
from node.tls import node_tls_name

log = logging.getLogger("wulian.peers")

try:  # httpcore imports sniffio on every connection-pool lock; a failed import is slow
    import sniffio  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    # Cache the miss: `import sniffio` now fails at once and httpcore assumes asyncio.
    sys.modules["sniffio"] = None  # type: ignore[assignment]

FRAME_PATH: Final = "/v1/peer/frames"
FRAME_CONTENT_TYPE: Final = "application/msgpack"
STREAM_PATH: Final = "/v1/peer/stream"
STREAM_CONTENT_TYPE: Final = "application/x-wulian-frames"
#: Bytes of the length prefix before each frame of a stream.
LENGTH_PREFIX: Final = 4
#: Largest frame a node accepts (a frame may hold one large PRE-PREPARE or BLOCKS).
MAX_FRAME_BYTES: Final = 48 * 1024 * 1024
MAX_MSGS_PER_FRAME: Final = 100_000
#: A message still queued this long after it was enqueued is dropped unsent, and a frame
#: that could not be delivered for this long is given up: after an outage the protocol
#: recovers through STATUS/FETCH and view-change retransmission, and a backlog of stale
#: votes would only delay the messages that matter.
MESSAGE_TTL_S: Final = 10.0
FRAME_GIVE_UP_S: Final = MESSAGE_TTL_S
BACKOFF_MIN_S: Final = 0.05
BACKOFF_MAX_S: Final = 2.0
#: A link waiting to reconnect tries again at once when the peer is heard from (an
#: authentic frame arrived from it: it is up again), but not sooner than this after its
#: last attempt: a peer whose frames reach us while ours cannot reach it (a one-way
#: firewall) costs at most a few connection attempts a second.
REVIVE_MIN_S: Final = 0.25

_FRAME_KEYS: Final = frozenset({"v", "from", "to", "net", "seq", "msgs"})
#: The first byte of a frame: 0xc1, which MessagePack never uses, then the MAC.
FRAME_MAGIC: Final = b"\xc1"
MAC_BYTES: Final = 32
#: The BLAKE2b personalisation of frame MACs and of their keys' derivation.
_MAC_PERSON: Final = b"wulian/frame/v2"


class FrameError(LedgerError):
    """An inbound frame is malformed or not authentic. ``reason`` is a metric label."""

    code = "bad_frame"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Frame:
    sender: str
    network: bytes
    seq: int
    msgs: tuple[tuple[str, bytes], ...]


class FrameAuth:
    """Seals and opens this node's frames: a BLAKE2b MAC under a key per link and
    direction, agreed from the two nodes' keys (:meth:`Ed25519Signer.shared_key`,
    context: genesis hash, sender, receiver), derived once per peer key.

    ``node_keys()`` gives the current peers' public keys (genesis and governance:
    :mod:`node.membership`); a peer's new key gets a new link key. Only the two nodes
    of a link can make or check its MACs, so a frame names its sender as a signature
    did, at a keyed hash's cost instead of an ed25519 signature and verification per
    frame, and a frame for one peer cannot be replayed to another (``to``, and the
    key).
    """

    def __init__(
        self,
        signer: Signer,
        self_id: str,
        network: bytes,
        node_keys: Callable[[], Mapping[str, bytes]],
    ) -> None:
        if not isinstance(signer, Ed25519Signer):
            raise TypeError("frame keys need an ed25519 node key")
        self._signer = signer
        self.self_id = self_id
        self.network = network
        self._node_keys = node_keys
        self._keys: dict[tuple[str, str, bytes], bytes] = {}

    def _key(self, sender: str, receiver: str, peer_key: bytes) -> bytes:
        k = (sender, receiver, peer_key)
        key = self._keys.get(k)
        if key is None:
            context = encode(["frame-mac/v2", self.network, sender, receiver])
            key = self._signer.shared_key(peer_key, context)
            if len(self._keys) >= 4096:  # peers come and go with governance: bounded
                self._keys.clear()
            self._keys[k] = key
        return key

    def seal(self, to: str, seq: int, msgs: Sequence[tuple[str, bytes]]) -> bytes:
        """The wire bytes of a frame from us to ``to``. Raises :class:`FrameError`
        (``unknown_peer``) if ``to`` has no key here."""
        peer_key = self._node_keys().get(to)
        if peer_key is None or to == self.self_id:
            raise FrameError("unknown_peer", f"no key for node {to!r}")
        body = encode(
            {
                "v": 2,
                "from": self.self_id,
                "to": to,
                "net": self.network,
                "seq": seq,
                "msgs": [[ch, m] for ch, m in msgs],
            }
        )
        mac = _mac(self._key(self.self_id, to, peer_key), body)
        return FRAME_MAGIC + mac + body

    def open(self, data: bytes) -> Frame:
        """Decode and authenticate a frame for us. Raises :class:`FrameError` (with a
        ``reason``: ``encoding``, ``schema``, ``network``, ``unknown_sender``,
        ``signature`` — a MAC that does not verify keeps the label of the signatures
        it replaced)."""
        if len(data) > MAX_FRAME_BYTES:
            raise FrameError("encoding", f"frame larger than {MAX_FRAME_BYTES} bytes")
        head = len(FRAME_MAGIC) + MAC_BYTES
        if len(data) <= head or data[:1] != FRAME_MAGIC:
            raise FrameError("encoding", "frame: not a version 2 frame (magic byte 0xc1)")
        mac, body = bytes(data[1:head]), bytes(data[head:])
        try:
            # Not checked for canonical form: the MAC covers these exact bytes.
            raw = msgpack.unpackb(
                body, raw=False, strict_map_key=True, ext_hook=_refuse_ext, use_list=True
            )
        except Exception as exc:  # msgpack raises several unrelated types
            raise FrameError("encoding", f"frame: not valid MessagePack: {exc}") from None
        try:
            m = as_map(raw, "frame")
            check_keys(m, _FRAME_KEYS, "frame")
            if get_int(m, "v") != 2:
                raise FrameError("schema", "frame: unsupported version")
            sender = get_str(m, "from", name=True)
            to = get_str(m, "to", name=True)
            net = get_bytes(m, "net", 32)
            seq = get_int(m, "seq")
            msgs = get_str_bytes_pairs(
                m,
                "msgs",
                max_len=MAX_MSGS_PER_FRAME,
                error="frame: each message must be [channel, bytes]",
            )
        except LedgerError as exc:
            if isinstance(exc, FrameError):
                raise
            raise FrameError("schema", str(exc)) from None
        if net != self.network:
            raise FrameError("network", "frame is for another network (genesis hash differs)")
        peer_key = self._node_keys().get(sender)
        if peer_key is None or sender == self.self_id:
            raise FrameError("unknown_sender", f"frame from unknown node {sender!r}")
        if to != self.self_id:
            raise FrameError("unknown_sender", f"frame for node {to!r}, not for us")
        try:
            key = self._key(sender, self.self_id, peer_key)
        except SignatureError:
            raise FrameError("signature", f"no link key with {sender!r}'s key") from None
        if not hmac.compare_digest(mac, _mac(key, body)):
            raise FrameError("signature", f"frame from {sender!r} has an invalid MAC")
        return Frame(sender, net, seq, tuple(msgs))


def _mac(key: bytes, body: bytes) -> bytes:
    return hashlib.blake2b(body, key=key, digest_size=MAC_BYTES, person=_MAC_PERSON).digest()


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"extension type {code} is not allowed")


class SeqTracker:
    """Last accepted ``seq`` per sender: refuses replayed or reordered frames."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def accept(self, sender: str, seq: int) -> bool:
        if seq <= self._last.get(sender, -1):
            return False
        self._last[sender] = seq
        return True


@dataclass
class _Item:
    channel: str
    payload: bytes
    kind: str
    essential: bool
    enqueued: float = 0.0


class PeerLink:
    """The outbound side of one peer: a bounded queue and a sender task."""

    def __init__(
        self,
        *,
        peer_id: str,
        address: str,
        auth: FrameAuth,
        metrics: NodeMetrics,
        queue_limit: int,
        frame_max_bytes: int,
        flush_ms: int,
        seq_start: int,
        client: httpx.AsyncClient | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.peer_id = peer_id
        self.address = address.rstrip("/")
        self._auth = auth
        self._metrics = metrics
        self._limit = queue_limit
        self._frame_max = frame_max_bytes
        self._flush_s = flush_ms / 1000.0
        self._seq = seq_start
        #: Urgent messages (votes, proposals) go out ahead of ``_queue`` (bulk traffic).
        self._urgent: deque[_Item] = deque()
        self._queue: deque[_Item] = deque()
        self._essential_count = 0
        self._wakeup = asyncio.Event()
        #: Set by :meth:`heard_from` while the link is broken: cut the backoff short.
        self._revive = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: The frame being written when a stream broke: (bytes, messages, first try).
        self._retry: tuple[bytes, int, float] | None = None
        #: Request extensions: the TLS server name that must be in the peer's certificate.
        self._extensions: dict[str, Any] = {}
        if self.address.startswith("https://"):
            self._extensions["sni_hostname"] = node_tls_name(peer_id)
        self._client = client or httpx.AsyncClient(
            base_url=self.address,
            timeout=httpx.Timeout(10.0, connect=2.0),
            limits=httpx.Limits(max_connections=2, max_keepalive_connections=1),
            verify=tls if tls is not None else True,
        )
        self.up = False
        #: The last attempt to reach the peer failed (and none has succeeded since).
        self.broken = False
        self.last_error = ""
        #: Frames written to the peer's stream since the link started.
        self.frames_sent = 0
        metrics.peer_up.set(0, peer_id)
        metrics.peer_queue.set_function(lambda: float(self.queued), peer_id)

    @property
    def queued(self) -> int:
        return len(self._queue) + len(self._urgent)

    def enqueue(
        self, channel: str, payload: bytes, kind: str, essential: bool, urgent: bool = False
    ) -> None:
        """Queue one encoded message; never blocks. When the queue is full, drops the
        oldest non-essential bulk message, else the oldest bulk message, else the
        oldest urgent one. Urgent messages are sent before bulk ones."""
        if self.queued >= self._limit:
            self._drop_one()
        item = _Item(channel, payload, kind, essential, time.monotonic())
        if urgent:
            self._urgent.append(item)
        else:
            self._queue.append(item)
            if essential:
                self._essential_count += 1
        self._wakeup.set()

    def _drop_one(self) -> None:
        if not self._queue:
            victim = self._urgent.popleft()
            self._metrics.dropped_outbound.inc(1, self.peer_id, victim.kind)
            return
        victim_index = 0
        if self._essential_count < len(self._queue):
            for i, item in enumerate(self._queue):
                if not item.essential:
                    victim_index = i
                    break
        victim = self._queue[victim_index]
        del self._queue[victim_index]
        if victim.essential:
            self._essential_count -= 1
        self._metrics.dropped_outbound.inc(1, self.peer_id, victim.kind)

    def _take_frame(self) -> list[tuple[str, bytes]]:
        msgs: list[tuple[str, bytes]] = []
        size = 0
        expired_before = time.monotonic() - MESSAGE_TTL_S
        while self._urgent:
            item = self._urgent[0]
            if item.enqueued < expired_before:
                self._urgent.popleft()
                self._metrics.dropped_outbound.inc(1, self.peer_id, "expired")
                continue
            if msgs and size + len(item.payload) + 64 > self._frame_max:
                return msgs
            self._urgent.popleft()
            msgs.append((item.channel, item.payload))
            size += len(item.payload) + 16
        while self._queue:
            item = self._queue[0]
            if item.enqueued < expired_before:
                self._queue.popleft()
                if item.essential:
                    self._essential_count -= 1
                self._metrics.dropped_outbound.inc(1, self.peer_id, "expired")
                continue
            if msgs and size + len(item.payload) + 64 > self._frame_max:
                break
            self._queue.popleft()
            if item.essential:
                self._essential_count -= 1
            msgs.append((item.channel, item.payload))
            size += len(item.payload) + 16
        return msgs

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"peer-{self.peer_id}"
            )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self._client.aclose()

    def heard_from(self) -> None:
        """The peer sent us an authentic frame: if this link is waiting to reconnect
        after a failure, it tries again now (see :data:`REVIVE_MIN_S`) instead of at
        the end of its backoff (up to :data:`BACKOFF_MAX_S`). A restarted node then
        hears its peers' STATUS, and starts catching up, without waiting for them."""
        if self.broken:
            self._revive.set()

    async def _pause(self, backoff: float) -> None:
        """Wait ``backoff`` seconds before the next attempt, or less once the peer is
        heard from (at least :data:`REVIVE_MIN_S`)."""
        self._revive.clear()
        first = min(backoff, REVIVE_MIN_S)
        await asyncio.sleep(first)
        if backoff > first and not self._revive.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._revive.wait(), backoff - first)

    async def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        while True:
            if self._retry is None:
                await self._wakeup.wait()  # open a stream only when there is traffic
            elif not await self._post_retry():
                await self._pause(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            if await self._stream():
                backoff = BACKOFF_MIN_S
            await self._pause(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _post_retry(self) -> bool:
        """Send the frame a broken stream left behind on its own (``POST
        /v1/peer/frames``). Its answer tells a refusal (the peer answered the stream
        with 4xx and closed it; the answer is lost with the connection) from a network
        fault. Returns False if the peer could not be reached."""
        assert self._retry is not None
        frame, count, first_try = self._retry
        if time.monotonic() - first_try > FRAME_GIVE_UP_S:
            self._retry = None
            self._metrics.dropped_outbound.inc(count, self.peer_id, "stale_frame")
            return True
        try:
            resp = await self._client.post(
                FRAME_PATH,
                content=frame,
                headers={"content-type": FRAME_CONTENT_TYPE},
                extensions=self._extensions,
            )
        except (httpx.HTTPError, OSError) as exc:
            self._mark_down(f"{type(exc).__name__}: {exc}")
            return False
        if resp.status_code >= 500:
            self._mark_down(f"HTTP {resp.status_code}")
            return False
        self._retry = None
        if resp.status_code >= 400:
            self._refused(resp, count)
            return True
        self.frames_sent += 1
        self._metrics.frames_sent.inc(1, self.peer_id)
        self._mark_up()
        return True

    def _refused(self, resp: httpx.Response, count: int) -> None:
        # The peer refused a frame (e.g. it runs another genesis): sending the same
        # bytes again cannot help. Count it and drop the frame.
        self._metrics.dropped_outbound.inc(count, self.peer_id, "refused")
        self._metrics.frame_errors.inc(1, self.peer_id)
        if self.last_error != f"refused {resp.status_code}":
            log.warning(
                "peer %s refused a frame: HTTP %s %s",
                self.peer_id,
                resp.status_code,
                resp.text[:200],
            )
        self.last_error = f"refused {resp.status_code}"

    async def _frames(self) -> AsyncIterator[bytes]:
        """The body of one stream: length-prefixed frames, forever. A stream starts
        with no frame left behind (:meth:`_run` sends that one first). The frame being
        written is kept in ``_retry``; resuming after its ``yield`` means the transport
        wrote it, so it counts as sent."""
        while True:
            await self._wakeup.wait()
            if self._flush_s > 0:
                await asyncio.sleep(self._flush_s)
            self._wakeup.clear()
            msgs = self._take_frame()
            if not msgs:
                continue
            if self.queued:
                self._wakeup.set()
            try:
                frame = self._auth.seal(self.peer_id, self._seq + 1, msgs)
            except FrameError:  # the peer left (governance) before its link was closed
                self._metrics.dropped_outbound.inc(len(msgs), self.peer_id, "unknown_peer")
                continue
            self._seq += 1
            self._retry = (frame, len(msgs), time.monotonic())
            yield len(frame).to_bytes(LENGTH_PREFIX, "big") + frame
            self._retry = None
            self.frames_sent += 1
            self._metrics.frames_sent.inc(1, self.peer_id)
            self._mark_up()

    async def _stream(self) -> bool:
        """Run one stream until it breaks or the peer ends it. Returns True if at least
        one frame went through (the caller then reconnects without waiting long)."""
        sent_before = self.frames_sent
        try:
            resp = await self._client.post(
                STREAM_PATH,
                content=self._frames(),
                headers={"content-type": STREAM_CONTENT_TYPE},
                extensions=self._extensions,
            )
        except (httpx.HTTPError, OSError) as exc:
            self._mark_down(f"{type(exc).__name__}: {exc}")
            return self.frames_sent > sent_before
        if resp.status_code >= 500:
            self._mark_down(f"HTTP {resp.status_code}")
        elif resp.status_code >= 400 and self._retry is not None:
            # The answer arrived (it usually does not: the connection is reset): the
            # frame being written is the refused one or came after it.
            frame_count = self._retry[1]
            self._retry = None
            self._refused(resp, frame_count)
        return self.frames_sent > sent_before

    def _mark_up(self) -> None:
        if not self.up:
            log.info("peer %s is reachable", self.peer_id, extra={"peer": self.peer_id})
            self._metrics.peer_up.set(1, self.peer_id)
        self.up = True
        self.broken = False
        self.last_error = ""

    def _mark_down(self, error: str) -> None:
        self._metrics.frame_errors.inc(1, self.peer_id)
        if self.up:
            log.warning(
                "peer %s unreachable: %s", self.peer_id, error, extra={"peer": self.peer_id}
            )
        self.up = False
        self.broken = True
        self.last_error = error
        self._metrics.peer_up.set(0, self.peer_id)


class PeerTransport:
    """All outbound links of this node, addressed by node id."""

    def __init__(
        self,
        *,
        auth: FrameAuth,
        peers: Mapping[str, str],
        metrics: NodeMetrics,
        queue_limit: int,
        frame_max_bytes: int,
        flush_ms: int,
        client_factory: Callable[[str], httpx.AsyncClient] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._auth = auth
        self._self_id = auth.self_id
        self._metrics = metrics
        self._queue_limit = queue_limit
        self._frame_max_bytes = frame_max_bytes
        self._flush_ms = flush_ms
        self._tls = tls
        self._client_factory = client_factory
        self._started = False
        self._seq_start = int(time.time() * 1000) << 20
        self.links: dict[str, PeerLink] = {
            pid: self._link(pid, addr)
            for pid, addr in sorted(peers.items())
            if pid != self._self_id
        }
        #: Test-only hook (node/byzantine.py): ``tamper(peer, channel, payload)`` gives
        #: the payloads actually queued for that peer. Always None in production.
        self.tamper: Callable[[str, str, bytes], Sequence[bytes]] | None = None

    def _link(self, peer_id: str, address: str) -> PeerLink:
        factory = self._client_factory
        return PeerLink(
            peer_id=peer_id,
            address=address,
            auth=self._auth,
            metrics=self._metrics,
            queue_limit=self._queue_limit,
            frame_max_bytes=self._frame_max_bytes,
            flush_ms=self._flush_ms,
            seq_start=self._seq_start,
            client=factory(address) if factory else None,
            tls=self._tls,
        )

    def start(self) -> None:
        self._started = True
        for link in self.links.values():
            link.start()

    async def update_peers(self, peers: Mapping[str, str]) -> None:
        """Make the links exactly ``peers`` (node id → address; this node is skipped):
        dial nodes that joined (a validator added by governance), close links to nodes
        that left or whose address changed. Links that stay keep their queues."""
        want = {pid: addr.rstrip("/") for pid, addr in peers.items() if pid != self._self_id}
        gone = [pid for pid, link in self.links.items() if want.get(pid) != link.address]
        for pid in gone:
            link = self.links.pop(pid)
            await link.close()
            log.info("peer link to %s closed", pid, extra={"peer": pid})
        for pid, addr in sorted(want.items()):
            if pid not in self.links:
                link = self._link(pid, addr)
                self.links[pid] = link
                if self._started:
                    link.start()
                log.info("peer link to %s at %s opened", pid, addr, extra={"peer": pid})

    async def close(self) -> None:
        await asyncio.gather(*(link.close() for link in self.links.values()))

    def send(
        self,
        to: Sequence[str],
        channel: str,
        payload: bytes,
        kind: str,
        essential: bool,
        urgent: bool = False,
    ) -> None:
        """Queue ``payload`` (already encoded once) to every peer in ``to``."""
        for pid in to:
            link = self.links.get(pid)
            if link is None:
                continue
            if self.tamper is None:
                link.enqueue(channel, payload, kind, essential, urgent)
            else:
                for data in self.tamper(pid, channel, payload):
                    link.enqueue(channel, data, kind, essential, urgent)

    def heard_from(self, peer_id: str) -> None:
        """An authentic frame arrived from ``peer_id``: see :meth:`PeerLink.heard_from`."""
        link = self.links.get(peer_id)
        if link is not None:
            link.heard_from()

    def connected(self) -> dict[str, bool]:
        return {pid: link.up for pid, link in self.links.items()}

    def unreachable(self) -> frozenset[str]:
        """Peers whose last connection attempt or stream failed (refused, reset, timed
        out) and that have not been reached since; not those merely idle."""
        return frozenset(pid for pid, link in self.links.items() if link.broken)
