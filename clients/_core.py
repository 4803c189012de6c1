"""The SDK's shared core, sans-I/O: what to send, how to read answers, when to retry.

Every network operation is a generator that *yields effects* and receives their
results (the h11 / etcd-raft style): :class:`Request` (the driver sends one HTTP
request and sends back a :class:`Response` or a :class:`Failure`), :class:`Sleep`
and :class:`Blocking` (a local call such as a record-store write; the async driver
runs it in a thread). ``clients/_sync.py`` and ``clients/_async.py`` are thin drivers
over the same generators, so the sync and async clients cannot drift apart.

Retry and failover policy (:meth:`Core.call`):

* nodes are tried in order, starting with the last one that answered; a node that
  failed is tried last for ``cooldown_s``;
* a node is used only after its ``/v1/info`` named our genesis hash and a genesis
  node (else it is dropped for good; all dropped → :class:`WrongNetwork`);
* connection failures, timeouts, 5xx, ``overloaded``, ``not_ready`` and
  ``not_validator`` move on to the next node — for idempotent calls only, which is
  every call the SDK makes (reads, and signed transactions, idempotent by their id); a
  non-idempotent call is retried only when the request surely never left;
* every attempt is signed afresh (new time and nonce); a ``stale_request`` or
  ``replayed_request`` answer is retried once on the same node;
* after a full round, back off exponentially (``backoff_s`` … ``max_backoff_s``, with
  jitter) and go round again, ``retries`` times, never past the call's deadline; then
  :class:`NodeUnreachable` listing every attempt.
"""

from __future__ import annotations

import functools
import json
import random
import secrets
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, TypeVar
from urllib.parse import quote

from clients._config import Settings
from clients._errors import (
    Attempt,
    AuthenticationFailed,
    NodeError,
    NodeUnreachable,
    NotCommitted,
    NotFound,
    PermissionDenied,
    SubmitRejected,
    WrongNetwork,
)
from clients._models import CommittedTx, Outcome, TxStatus
from ledger.blocks import MAX_TX_PAYLOAD_BYTES, BlockHeader, Transaction
from ledger.certificate import CommitCertificate, verify_certificate
from ledger.encoding import decode, encode
from ledger.errors import EncodingError, LedgerError, SchemaError
from ledger.merkle import merkle_root, verify_inclusion
from ledger.request_auth import sign_request

T = TypeVar("T")

JSON: Final = "application/json"
MSGPACK: Final = "application/msgpack"
EVENT_STREAM: Final = "text/event-stream"

#: Node error codes that mean "try another node".
FAILOVER_CODES: Final = frozenset({"overloaded", "not_ready", "not_validator"})
#: 401 codes fixed by signing again (clock skew, nonce collision).
RESIGN_CODES: Final = frozenset({"stale_request", "replayed_request"})
#: Longest single ``wait_ms`` the SDK asks a node for (the node allows 60 s); short
#: enough to notice a node that died while we waited.
WAIT_SLICE_MS: Final = 5_000
#: Most bytes per batch request (transactions per request: ``Settings.batch_size``).
BATCH_MAX_BYTES: Final = 2 * 1024 * 1024
#: Verified block views remembered (their tx ids, indexes and outcomes only).
VERIFIED_BLOCKS_KEPT: Final = 16


# ---------------------------------------------------------------------------- effects


@dataclass(frozen=True)
class Request:
    """Send one HTTP request to ``url`` (``base + target``; the target is signed as is)."""

    node: int
    url: str
    method: str
    target: str
    headers: Mapping[str, str] = field(hash=False)
    body: bytes
    timeout: float


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str] = field(hash=False)  # lower-case names
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


@dataclass(frozen=True)
class Failure:
    """The request got no HTTP answer. ``sent``: it may have reached the node."""

    problem: str
    sent: bool


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Blocking:
    """Run ``fn()`` (local, blocking: e.g. a durable store write) and send back its
    result; an exception it raises is thrown into the operation."""

    fn: Callable[[], Any]


Effect = Request | Sleep | Blocking
Reply = Response | Failure | Any
Op = Generator[Effect, Any, T]


# ---------------------------------------------------------------------------- JSON wire


def json_to_wire(value: Any) -> Any:
    """The node's JSON mapping back to wire values: ``{"$hex": h}`` → bytes."""
    if isinstance(value, dict):
        if set(value) == {"$hex"} and isinstance(value["$hex"], str):
            try:
                return bytes.fromhex(value["$hex"])
            except ValueError:
                raise SchemaError("bad {'$hex': …} value in the node's answer") from None
        return {str(k): json_to_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_to_wire(v) for v in value]
    return value


def parse_body(resp: Response) -> Any:
    """Decode a msgpack or JSON answer into wire values. Raises SchemaError."""
    if resp.content_type == MSGPACK:
        try:
            return decode(resp.body)
        except EncodingError as exc:
            raise SchemaError(f"node answered malformed msgpack: {exc}") from None
    try:
        return json_to_wire(json.loads(resp.body or b"null"))
    except (ValueError, RecursionError) as exc:
        raise SchemaError(f"node answered malformed JSON: {exc}") from None


def error_of(resp: Response) -> tuple[str, str]:
    """``(code, message)`` of an error answer (``{"error": {"code", "message"}}``)."""
    try:
        doc = json.loads(resp.body or b"{}")
        err = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(err, dict):
            return str(err.get("code", "")), str(err.get("message", ""))
    except (ValueError, RecursionError):
        pass
    text = resp.body[:200].decode("utf-8", "replace").strip()
    return f"http_{resp.status}", text or f"HTTP {resp.status}"


def raise_for(resp: Response, *, stage: str, tx_id: bytes | None = None, url: str = "") -> None:
    """Raise the typed error for a non-2xx answer."""
    if resp.status < 300:
        return
    code, message = error_of(resp)
    cls: type[NodeError] = NodeError
    if resp.status == 401:
        cls = AuthenticationFailed
    elif resp.status == 403:
        cls = PermissionDenied
    elif resp.status == 404:
        cls = NotFound
    raise cls(resp.status, code, message, stage=stage, tx_id=tx_id, url=url)


# ---------------------------------------------------------------------------- node pool


class NodePool:
    """Which node to try next (sticky to the last good one; failed ones last)."""

    def __init__(self, urls: Sequence[str], cooldown_s: float) -> None:
        self.urls = tuple(urls)
        self.cooldown_s = cooldown_s
        self.preferred = 0
        self.down_until = [0.0] * len(urls)
        #: None: not checked yet; "": verified; other text: why it is not ours.
        self.identity: list[str | None] = [None] * len(urls)
        #: the node id each URL named in its ``/v1/info`` (None: not checked yet)
        self.node_ids: list[str | None] = [None] * len(urls)

    def distinct(self, indexes: Iterable[int]) -> int:
        """How many distinct nodes ``indexes`` are: two URLs naming one node id count
        once (a node claiming another's id only lowers the count)."""
        return len({self.node_ids[i] or f"#{i}" for i in indexes})

    def order(self, now: float) -> list[int]:
        n = len(self.urls)
        ring = [(self.preferred + k) % n for k in range(n)]
        usable = [i for i in ring if self.identity[i] in (None, "")]
        return [i for i in usable if self.down_until[i] <= now] + [
            i for i in usable if self.down_until[i] > now
        ]

    def failed(self, i: int, now: float) -> None:
        self.down_until[i] = now + self.cooldown_s
        if self.preferred == i:
            self.preferred = (i + 1) % len(self.urls)

    def succeeded(self, i: int) -> None:
        self.down_until[i] = 0.0
        self.preferred = i

    def wrong(self) -> list[tuple[str, str]]:
        return [(u, p) for u, p in zip(self.urls, self.identity, strict=True) if p]


# ---------------------------------------------------------------------------- the core


class Core:
    """Request building, response reading and the retry policy for one client."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock_ms: Callable[[], int] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.network = settings.genesis.hash
        self.org = settings.org
        self.pool = NodePool(settings.nodes, settings.cooldown_s)
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.monotonic = monotonic
        self._rng = random.Random()
        self._node_ids = {n.node_id for n in settings.genesis.nodes}
        #: (channel, height) → {tx id: (index, outcome)} of verified block views (the
        #: latest few): a block is fetched once for the claims of many transactions.
        self._verified: dict[tuple[str, int], dict[bytes, tuple[int, Outcome | None]]] = {}

    def now_ms(self) -> int:
        return self._clock_ms()

    # ------------------------------------------------------------------ requests

    def request(
        self,
        node: int,
        method: str,
        target: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        accept: str = JSON,
        timeout: float | None = None,
        sign: bool = True,
        extra: Mapping[str, str] | None = None,
    ) -> Request:
        """A request to ``node``, signed now with a fresh nonce (if ``sign``)."""
        headers: dict[str, str] = {"accept": accept}
        if sign:
            headers.update(
                sign_request(
                    self.settings.signer,
                    network=self.network,
                    org=self.org,
                    method=method,
                    path=target,
                    body=body,
                    time_ms=self._clock_ms(),
                    nonce=secrets.token_bytes(16),
                )
            )
        if content_type is not None:
            headers["content-type"] = content_type
        if extra:
            headers.update(extra)
        return Request(
            node=node,
            url=self.pool.urls[node] + target,
            method=method,
            target=target,
            headers=headers,
            body=body,
            timeout=self.settings.timeout if timeout is None else timeout,
        )

    def backoff(self, round_: int) -> float:
        s = self.settings
        base: float = min(s.max_backoff_s, s.backoff_s * (2.0**round_))
        return base * (0.5 + self._rng.random() / 2)

    def _identify(self, i: int, attempts: list[Attempt]) -> Op[bool]:
        """Check node ``i``'s ``/v1/info`` once; True if it is ours."""
        req = self.request(i, "GET", "/v1/info", sign=False)
        reply = yield req
        url = self.pool.urls[i]
        if isinstance(reply, Failure):
            attempts.append(Attempt(url, reply.problem))
            self.pool.failed(i, self.monotonic())
            return False
        if reply.status != 200:
            attempts.append(Attempt(url, f"/v1/info answered {reply.status}"))
            self.pool.failed(i, self.monotonic())
            return False
        try:
            info = json.loads(reply.body)
            genesis_hash = str(info["genesis_hash"])
            node_id = str(info["node"])
        except (ValueError, KeyError, TypeError):
            attempts.append(Attempt(url, "/v1/info answer is malformed"))
            self.pool.failed(i, self.monotonic())
            return False
        if genesis_hash != self.network.hex():
            self.pool.identity[i] = f"genesis hash {genesis_hash[:16]}… is not ours"
        elif node_id not in self._node_ids:
            self.pool.identity[i] = f"node id {node_id!r} is not in our genesis"
        else:
            self.pool.identity[i] = ""
            self.pool.node_ids[i] = node_id
            return True
        attempts.append(Attempt(url, str(self.pool.identity[i])))
        return False

    def call(
        self,
        method: str,
        target: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        accept: str = JSON,
        timeout: float | None = None,
        deadline: float | None = None,
        idempotent: bool = True,
        stage: str = "query",
        tx_id: bytes | None = None,
        sign: bool = True,
        what: str = "request",
        retries: int | None = None,
        exclude: frozenset[int] = frozenset(),
    ) -> Op[tuple[int, Response]]:
        """Send a request with failover; return ``(node index, answer)`` for any answer
        that is not a reason to try elsewhere (2xx, and 4xx other than the failover
        codes). Nodes in ``exclude`` are not asked. Raises :class:`NodeUnreachable` or
        :class:`WrongNetwork`."""
        attempts: list[Attempt] = []
        rounds = (self.settings.retries if retries is None else retries) + 1
        for round_ in range(rounds):
            order = self.pool.order(self.monotonic())
            if not order:
                url, problem = self.pool.wrong()[0]
                raise WrongNetwork(url, problem)
            candidates = [i for i in order if i not in exclude]
            if not candidates:  # every usable node is excluded: nobody left to ask
                raise NodeUnreachable(tuple(attempts), stage=stage, tx_id=tx_id, what=what)
            for i in candidates:
                if deadline is not None and self.monotonic() >= deadline:
                    raise NodeUnreachable(tuple(attempts), stage=stage, tx_id=tx_id, what=what)
                url = self.pool.urls[i]
                if self.pool.identity[i] is None:
                    ok = yield from self._identify(i, attempts)
                    if not ok:
                        continue
                per_try = self.settings.timeout if timeout is None else timeout
                if deadline is not None:
                    per_try = max(0.05, min(per_try, deadline - self.monotonic()))
                resigned = False
                while True:
                    req = self.request(
                        i, method, target, body=body, content_type=content_type,
                        accept=accept, timeout=per_try, sign=sign,
                    )  # fmt: skip
                    reply = yield req
                    if isinstance(reply, Failure):
                        attempts.append(Attempt(url, reply.problem))
                        self.pool.failed(i, self.monotonic())
                        if not idempotent and reply.sent:
                            raise NodeUnreachable(
                                tuple(attempts), stage=stage, tx_id=tx_id, what=what
                            )
                        break
                    assert isinstance(reply, Response)
                    code = ""
                    if reply.status >= 400:
                        code, _ = error_of(reply)
                    if reply.status == 401 and code in RESIGN_CODES and not resigned:
                        resigned = True
                        continue
                    if reply.status >= 500 or code in FAILOVER_CODES:
                        attempts.append(Attempt(url, f"HTTP {reply.status} {code}".strip()))
                        self.pool.failed(i, self.monotonic())
                        break
                    self.pool.succeeded(i)
                    return i, reply
            if not self.pool.order(self.monotonic()):
                url, problem = self.pool.wrong()[0]
                raise WrongNetwork(url, problem)
            if round_ + 1 < rounds:
                pause = self.backoff(round_)
                if deadline is not None:
                    pause = min(pause, max(0.0, deadline - self.monotonic()))
                yield Sleep(pause)
        raise NodeUnreachable(tuple(attempts), stage=stage, tx_id=tx_id, what=what)

    # ------------------------------------------------------------------ operations

    def info(self) -> Op[dict[str, Any]]:
        i, resp = yield from self.call("GET", "/v1/info", sign=False, what="info request")
        raise_for(resp, stage="query", url=self.pool.urls[i])
        doc = json.loads(resp.body)
        if not isinstance(doc, dict):
            raise SchemaError("/v1/info: expected an object")
        doc["url"] = self.pool.urls[i]
        return doc

    def get_doc(self, target: str, *, stage: str = "query", what: str = "query") -> Op[Any]:
        """GET a signed read (msgpack answer) and return its wire value."""
        i, resp = yield from self.call("GET", target, accept=MSGPACK, stage=stage, what=what)
        raise_for(resp, stage=stage, url=self.pool.urls[i])
        return parse_body(resp)

    def channel_height(self, channel: str) -> Op[int]:
        doc = yield from self.get_doc(f"/v1/channels/{quote(channel)}")
        h = doc.get("height") if isinstance(doc, dict) else None
        if not isinstance(h, int):
            raise SchemaError("channel status: no height")
        return h

    def refusal_quorum(self, channel: str) -> int:
        """How many distinct nodes must refuse a transaction before the SDK takes the
        refusal as final, or serve the same header before it takes a block it cannot
        check itself: f + 1 of the channel's validators (so at least one honest node),
        at most every usable node this client knows (a client given fewer trusts them)."""
        f = self.settings.genesis.channel(channel).validators.f
        usable = [i for i, p in enumerate(self.pool.identity) if p in (None, "")]
        return max(1, min(f + 1, self.pool.distinct(usable)))

    def submit_tx(
        self, tx: Transaction, *, wait_ms: int = 0, deadline: float | None = None
    ) -> Op[TxStatus]:
        """POST one signed transaction (idempotent by its id). Returns its status as
        the answering node claims it (``pending`` or ``committed``: see
        :meth:`confirm_commits`); raises :class:`SubmitRejected` for a refusal."""
        _, st = yield from self.submit_tx_at(tx, wait_ms=wait_ms, deadline=deadline)
        return st

    def submit_tx_at(
        self, tx: Transaction, *, wait_ms: int = 0, deadline: float | None = None
    ) -> Op[tuple[int, TxStatus]]:
        """:meth:`submit_tx`, also returning the answering node. A refusal is put to
        the other nodes until :meth:`refusal_quorum` nodes refused it; the
        :class:`SubmitRejected` raised then has ``final`` True, and False if no other
        node could be asked (one node's word: the transaction may still commit)."""
        q = f"?wait_ms={wait_ms}" if wait_ms else ""
        refused: dict[int, SubmitRejected] = {}
        while True:
            try:
                i, resp = yield from self.call(
                    "POST",
                    f"/v1/channels/{quote(tx.channel)}/transactions{q}",
                    body=encode(tx.to_wire()),
                    content_type=MSGPACK,
                    timeout=self.settings.timeout + wait_ms / 1000,
                    deadline=deadline,
                    stage="submit",
                    tx_id=tx.tx_id,
                    what="transaction",
                    exclude=frozenset(refused),
                    retries=0 if refused else None,
                )
            except NodeUnreachable:
                if refused:
                    raise next(iter(refused.values())) from None
                raise
            try:
                return i, self._submit_answer(tx, i, resp)
            except SubmitRejected as exc:
                refused[i] = exc
                exc.final = _decided_alike(exc.reason) and self.pool.distinct(
                    refused
                ) >= self.refusal_quorum(tx.channel)
                if exc.final:
                    raise

    def _submit_answer(self, tx: Transaction, i: int, resp: Response) -> TxStatus:
        if resp.status in (200, 202):
            return TxStatus.from_wire(parse_body(resp), tx_id=tx.tx_id, channel=tx.channel)
        code, message = error_of(resp)
        if resp.status == 401:
            raise_for(resp, stage="submit", tx_id=tx.tx_id, url=self.pool.urls[i])
        if 400 <= resp.status < 500:
            raise SubmitRejected(tx.tx_id, code, message, status=resp.status, final=False)
        raise_for(resp, stage="submit", tx_id=tx.tx_id, url=self.pool.urls[i])
        raise SchemaError(f"unexpected answer {resp.status} to a submission")

    def status(self, channel: str, tx_id: bytes) -> Op[TxStatus]:
        """The status at the first node that answers (``unknown`` if it has no record),
        as that node claims it (see :meth:`confirm_commits`)."""
        _, st = yield from self.status_at(channel, tx_id)
        return st

    def status_at(self, channel: str, tx_id: bytes) -> Op[tuple[int, TxStatus]]:
        """:meth:`status`, also returning the answering node."""
        i, resp = yield from self.call(
            "GET",
            f"/v1/channels/{quote(channel)}/transactions/{tx_id.hex()}",
            accept=MSGPACK,
            stage="query",
            tx_id=tx_id,
            what="status query",
        )
        if resp.status == 404 and error_of(resp)[0] == "not_found":
            return i, TxStatus(tx_id=tx_id, channel=channel, status="unknown")
        raise_for(resp, stage="query", tx_id=tx_id, url=self.pool.urls[i])
        return i, TxStatus.from_wire(parse_body(resp), tx_id=tx_id, channel=channel)

    # ------------------------------------------------------------------ commit checks

    def confirm_commits(
        self,
        channel: str,
        statuses: Sequence[TxStatus],
        *,
        claimer: int | None,
        deadline: float | None,
    ) -> Op[tuple[list[TxStatus], list[TxStatus]]]:
        """Check node claims of ``committed`` before anyone relies on them: fetch the
        block view at each distinct claimed height once (``GET
        /v1/channels/{ch}/blocks/{h}``), check its certificate against the channel's
        genesis validators (if it is not theirs, f + 1 distinct nodes must serve the
        same header: :meth:`_corroborate`) and each transaction's inclusion in it
        (:meth:`verified_block`). Returns ``(confirmed, unconfirmed)``: confirmed
        statuses carry the height, index and outcome of the verified view; unconfirmed
        ones are ``unknown`` with the reason. Node ``claimer`` (which made the claims)
        is tried last for a while if any claim failed. Raises nothing for a failed
        check: the transactions simply stay unconfirmed."""
        confirmed: list[TxStatus] = []
        unconfirmed: list[TxStatus] = []
        by_height: dict[int, list[TxStatus]] = {}
        for st in statuses:
            if isinstance(st.height, int) and st.height >= 1:
                by_height.setdefault(st.height, []).append(st)
            else:
                unconfirmed.append(_unverified(st, channel, "the claim names no height"))
        for height, group in by_height.items():
            cached = self._verified.get((channel, height), {})
            fetched: dict[bytes, tuple[int, Outcome | None]] | str = cached
            if any(st.tx_id not in cached for st in group):
                fetched = yield from self._verified_entries(channel, height, deadline)
            for st in group:
                found = cached.get(st.tx_id)
                if found is None and isinstance(fetched, dict):
                    found = fetched.get(st.tx_id)
                if found is None:
                    why = (
                        fetched if isinstance(fetched, str) else f"not in certified block {height}"
                    )
                    unconfirmed.append(_unverified(st, channel, why))
                else:
                    index, outcome = found
                    confirmed.append(
                        replace(st, channel=channel, height=height, index=index, outcome=outcome)
                    )
        if unconfirmed and claimer is not None:
            self.pool.failed(claimer, self.monotonic())
        return confirmed, unconfirmed

    def _verified_entries(
        self, channel: str, height: int, deadline: float | None
    ) -> Op[dict[bytes, tuple[int, Outcome | None]] | str]:
        """The transactions of block ``height`` as a verified view lists them
        (``{tx id: (index, outcome)}``, merged into a small cache), or why no node
        served a view that verifies."""
        try:
            i, resp = yield from self.call(
                "GET",
                f"/v1/channels/{quote(channel)}/blocks/{height}",
                accept=MSGPACK,
                deadline=deadline,
                stage="commit",
                what=f"block {height} request",
                retries=0,
            )
        except NodeUnreachable as exc:
            return f"no node served block {height} ({exc.attempts[-1] if exc.attempts else ''})"
        if resp.status != 200:
            code, _ = error_of(resp)
            return f"block {height}: node answered {resp.status} {code}".strip()
        view = parse_body(resp)
        try:
            header, entries = self.verified_block(
                view, channel=channel, expect_height=height, verify=False,
                what=f"block {height}",
            )  # fmt: skip
        except SchemaError as exc:
            self.pool.failed(i, self.monotonic())
            return str(exc)
        try:
            self._check_certificate(view, header, f"block {height}")
        except SchemaError as exc:
            # not certified by the genesis validators: forged, or the channel's set
            # has changed since (governance). Take it only if f + 1 distinct nodes
            # serve this very header: at least one of them is honest.
            problem = yield from self._corroborate(channel, header, {i}, deadline)
            if problem is not None:
                self.pool.failed(i, self.monotonic())
                return f"{exc}; {problem}"
        known = self._verified.pop((channel, height), {})
        known.update({e.tx.tx_id: (e.index, e.outcome) for e in entries})
        self._verified[(channel, height)] = known
        while len(self._verified) > VERIFIED_BLOCKS_KEPT:
            self._verified.pop(next(iter(self._verified)))
        return known

    def _corroborate(
        self, channel: str, header: BlockHeader, served: set[int], deadline: float | None
    ) -> Op[str | None]:
        """Ask nodes other than ``served`` (those that already served ``header``) for
        the same block until :meth:`refusal_quorum` distinct nodes (f + 1, f of the
        channel's genesis validators) have served this exact header. None when they
        have, else why not."""
        need = self.refusal_quorum(channel)
        asked = set(served)
        while self.pool.distinct(served) < need:
            try:
                i, resp = yield from self.call(
                    "GET",
                    f"/v1/channels/{quote(channel)}/blocks/{header.height}",
                    accept=MSGPACK, deadline=deadline, stage="commit",
                    what=f"block {header.height} request", retries=0,
                    exclude=frozenset(asked),
                )  # fmt: skip
            except NodeUnreachable:
                break
            asked.add(i)
            if resp.status == 200:
                view = parse_body(resp)
                if isinstance(view, dict) and view.get("hash") == header.hash:
                    served.add(i)
        if self.pool.distinct(served) >= need:
            return None
        return (
            f"its certificate is not by the genesis validators and only "
            f"{self.pool.distinct(served)} of the {need} nodes needed served the same header"
        )

    def wait(
        self,
        channel: str,
        tx_id: bytes,
        *,
        tx: Transaction | None,
        timeout: float,
        post_wait: bool = True,
        on_sent: Callable[[], None] | None = None,
    ) -> Op[TxStatus]:
        """Follow a transaction until it is committed (returned, VALID or not) and the
        commit is verified (:meth:`confirm_commits`; a claim that does not verify is
        ignored and the next round asks another node).

        With ``tx`` (and ``post_wait``) each round resubmits it with ``wait_ms`` — the
        node then answers when it commits, and a node that lost it (crash) gets it
        again; otherwise rounds poll the status, resubmitting ``tx`` (if given) when the
        node asked does not know it or says it refused it. Raises :class:`NotCommitted`
        after ``timeout`` (node outages, and refusals no other node confirmed, inside
        the window are ridden out), :class:`SubmitRejected` if the network refused it
        (``final``: refused by :meth:`refusal_quorum` nodes).
        """
        deadline = self.monotonic() + timeout
        last = "unknown"
        poll = 0.05
        submitted = False
        while True:
            started = self.monotonic()
            remaining = deadline - started
            if remaining <= 0:
                raise NotCommitted(tx_id, timeout, last)
            try:
                if tx is not None and (post_wait or not submitted):
                    slice_ms = int(min(remaining * 1000, WAIT_SLICE_MS)) if post_wait else 0
                    i, st = yield from self.submit_tx_at(
                        tx, wait_ms=max(slice_ms, 0), deadline=deadline
                    )
                    if on_sent is not None and not submitted:
                        yield Blocking(on_sent)
                    submitted = True
                else:
                    i, st = yield from self.status_at(channel, tx_id)
                    if st.status in ("unknown", "rejected") and tx is not None:
                        submitted = False  # resubmit next round (a refusal is confirmed)
            except NodeUnreachable as exc:
                last = f"no node reachable ({exc.attempts[-1] if exc.attempts else ''})"
                yield Sleep(min(1.0, max(0.0, deadline - self.monotonic())))
                continue
            except SubmitRejected as exc:
                if exc.final:
                    raise
                last = f"refused by one node ({exc.reason}), no other node could confirm it"
                yield Sleep(min(1.0, max(0.0, deadline - self.monotonic())))
                continue
            last = st.status
            if st.status == "committed":
                ok, bad = yield from self.confirm_commits(
                    channel, [st], claimer=i, deadline=deadline
                )
                if ok:
                    return ok[0]
                last = bad[0].reason or "unverified commit"
                submitted = False
            elif st.status == "rejected" and tx is None:
                raise SubmitRejected(
                    tx_id, "rejected", st.reason or "refused by the node", final=False
                )
            if not post_wait or tx is None or self.monotonic() - started < poll:
                # polling, or a node that answered "pending" without waiting
                yield Sleep(min(poll, max(0.0, deadline - self.monotonic())))
                poll = min(poll * 2, 0.5)

    def submit_batch(
        self, txs: Sequence[Transaction], *, wait_ms: int, deadline: float | None
    ) -> Op[list[TxStatus]]:
        """POST a batch (all of one channel); one status per transaction, in order, as
        the answering node claims them."""
        _, statuses = yield from self.post_batch(txs, wait_ms=wait_ms, deadline=deadline)
        return statuses

    def post_batch(
        self,
        txs: Sequence[Transaction],
        *,
        wait_ms: int,
        deadline: float | None,
        exclude: frozenset[int] = frozenset(),
    ) -> Op[tuple[int, list[TxStatus]]]:
        """:meth:`submit_batch` to a node not in ``exclude``, also returning that node.
        Raises :class:`SubmitRejected` (not ``final``) if it refused the whole batch."""
        channel = txs[0].channel
        body = encode({"txs": [t.to_wire() for t in txs]})
        q = f"?wait_ms={wait_ms}" if wait_ms else ""
        i, resp = yield from self.call(
            "POST",
            f"/v1/channels/{quote(channel)}/transactions/batch{q}",
            body=body,
            content_type=MSGPACK,
            timeout=self.settings.timeout + wait_ms / 1000,
            deadline=deadline,
            stage="submit",
            what=f"batch of {len(txs)} transactions",
            exclude=exclude,
        )
        if resp.status != 200:
            code, message = error_of(resp)
            if resp.status != 401 and 400 <= resp.status < 500:
                raise SubmitRejected(
                    txs[0].tx_id, code, f"whole batch refused: {message}", final=False
                )
            raise_for(resp, stage="submit", url=self.pool.urls[i])
        doc = parse_body(resp)
        results = doc.get("results") if isinstance(doc, dict) else None
        if not isinstance(results, list) or len(results) != len(txs):
            raise SchemaError("batch answer: expected one result per transaction")
        return i, [
            TxStatus.from_wire(r, tx_id=t.tx_id, channel=channel)
            for r, t in zip(results, txs, strict=True)
        ]

    def submit_many(
        self,
        txs: Sequence[Transaction],
        *,
        timeout: float,
        progress: Callable[[int, int], None] | None = None,
        on_final: Callable[[list[TxStatus]], None] | None = None,
    ) -> Op[list[TxStatus]]:
        """Submit many transactions (one channel) in batches and follow them until each
        is final or ``timeout`` passes. Final: committed, the commit verified
        (:meth:`confirm_commits`: one block fetch per distinct height in an answer), or
        refused by :meth:`refusal_quorum` distinct nodes (a refused transaction is sent
        to nodes that have not refused it yet; a per-transaction ``overloaded`` is sent
        again later).

        Node failures mid-way move the remaining batches to another node; a batch that
        failed in flight is sent again (idempotent: never committed twice). Returns one
        status per transaction in input order — ``pending``/``unknown`` ones did not
        commit in time (``unknown`` with a ``reason``: a commit claim that did not
        verify), a ``rejected`` one not final if fewer nodes refused it.
        ``progress(done, total)`` is called as transactions finish; ``on_final`` with
        the statuses that became final in each answer (the client records them in the
        store).
        """
        if not txs:
            return []
        if len({t.channel for t in txs}) != 1:
            raise SchemaError("submit_many: all transactions must be for one channel")
        channel = txs[0].channel
        deadline = self.monotonic() + timeout
        by_id = {t.tx_id: t for t in txs}
        if len(by_id) != len(txs):
            raise SchemaError("submit_many: a transaction appears twice")
        final: dict[bytes, TxStatus] = {}
        open_: dict[bytes, TxStatus] = {}
        refused: dict[bytes, set[int]] = {}
        done = 0
        poll = 0.05
        while len(final) < len(txs):
            if deadline - self.monotonic() <= 0:
                break
            before = len(final)
            todo = [t for t in txs if t.tx_id not in final]
            for exclude, group in _by_refusers(todo, refused):
                for chunk in _chunks(group, self.settings.batch_size):
                    remaining = deadline - self.monotonic()
                    if remaining <= 0:
                        break
                    wait_ms = int(min(remaining * 1000, WAIT_SLICE_MS))
                    try:
                        i, statuses = yield from self.post_batch(
                            chunk, wait_ms=wait_ms, deadline=deadline, exclude=exclude
                        )
                    except NodeUnreachable:
                        yield Sleep(min(0.5, max(0.0, deadline - self.monotonic())))
                        continue
                    now_final, still_open = yield from self._settle(
                        channel, i, statuses, refused, deadline
                    )
                    for st in now_final:
                        final[st.tx_id] = st
                        open_.pop(st.tx_id, None)
                    open_.update((st.tx_id, st) for st in still_open)
                    if on_final is not None and now_final:
                        yield Blocking(functools.partial(on_final, now_final))
                    if progress is not None and len(final) != done:
                        done = len(final)
                        progress(done, len(txs))
            if len(final) == before:  # nothing settled this round: do not spin
                yield Sleep(min(poll, max(0.0, deadline - self.monotonic())))
                poll = min(poll * 2, 0.5)
        out: list[TxStatus] = []
        for t in txs:
            found = final.get(t.tx_id) or open_.get(t.tx_id)
            out.append(found or TxStatus(tx_id=t.tx_id, channel=t.channel, status="unknown"))
        return out

    def _settle(
        self,
        channel: str,
        node: int,
        statuses: Sequence[TxStatus],
        refused: dict[bytes, set[int]],
        deadline: float | None,
    ) -> Op[tuple[list[TxStatus], list[TxStatus]]]:
        """Split one batch answer of ``node`` into final and still-open statuses:
        commits are checked (:meth:`confirm_commits`), a refusal counts once per node
        (``refused``) and is final at :meth:`refusal_quorum` nodes; ``overloaded`` and
        the other failover codes are not refusals."""
        committed = [st for st in statuses if st.status == "committed"]
        ok, bad = yield from self.confirm_commits(
            channel, committed, claimer=node, deadline=deadline
        )
        final, still_open = list(ok), list(bad)
        quorum = self.refusal_quorum(channel)
        for st in statuses:
            if st.status == "committed":
                continue
            if st.status == "rejected" and _reason_code(st) not in FAILOVER_CODES:
                nodes = refused.setdefault(st.tx_id, set())
                nodes.add(node)
                if _decided_alike(_reason_code(st)) and self.pool.distinct(nodes) >= quorum:
                    final.append(st)
                    continue
            still_open.append(st)
        return final, still_open

    # ------------------------------------------------------------------ stream

    def stream_request(self, node: int, channel: str, start: int | None) -> Request:
        target = f"/v1/channels/{quote(channel)}/stream"
        if start is not None:
            target += f"?from={start}"
        return self.request(node, "GET", target, accept=EVENT_STREAM)

    def block_event(
        self, data: str, *, channel: str, expect_height: int | None, verify: bool
    ) -> tuple[int, list[CommittedTx]]:
        """Parse one ``block`` event (a JSON block view) into our committed
        transactions, checked as :meth:`verified_block` does (the certificate only with
        ``verify``). Raises SchemaError."""
        try:
            view = json_to_wire(json.loads(data))
        except (ValueError, RecursionError) as exc:
            raise SchemaError(f"stream: malformed block event: {exc}") from None
        header, entries = self.verified_block(
            view, channel=channel, expect_height=expect_height, verify=verify, what="stream"
        )
        out = [
            CommittedTx(
                channel=channel,
                height=header.height,
                index=e.index,
                tx_id=e.tx.tx_id,
                tx_type=e.tx.type,
                block_hash=header.hash,
                block_time_ms=header.time_ms,
                outcome=e.outcome,
                payload=e.tx.payload,
            )
            for e in entries
            if e.tx.sender == self.org
        ]
        return header.height, out

    def verified_block(
        self,
        view: Any,
        *,
        channel: str,
        expect_height: int | None,
        verify: bool,
        what: str,
    ) -> tuple[BlockHeader, list[BlockEntry]]:
        """Check a block view (``node/views.py``): the header hashes to ``hash`` and is
        of ``channel`` (and ``expect_height``); each listed tx id is its transaction's
        and is in the block — by its inclusion proof against the header's ``tx_root``,
        or, for an unscoped view without proofs, because the view lists every id and
        they hash to ``tx_root``; with ``verify`` also the commit certificate against
        the genesis validators (valid until the channel's validator set changes). The
        outcomes are as the view reports them (the header does not certify them).
        Raises SchemaError naming ``what``."""
        if not isinstance(view, dict):
            raise SchemaError(f"{what}: block view is not an object")
        try:
            header = BlockHeader.from_wire(view.get("header"))
        except LedgerError as exc:
            raise SchemaError(f"{what}: bad header: {exc}") from None
        if header.channel != channel or view.get("hash") != header.hash:
            raise SchemaError(f"{what}: block {header.height} does not match its hash/channel")
        if expect_height is not None and header.height != expect_height:
            raise SchemaError(f"{what}: expected block {expect_height}, got {header.height}")
        if verify:
            self._check_certificate(view, header, what)
        items = view.get("txs")
        if not isinstance(items, list):
            raise SchemaError(f"{what}: block view without txs")
        listed = [_entry(item, what) for item in items]
        _check_inclusion(header, listed, view.get("scoped"), what)
        return header, [e for e, _ in listed]

    def _check_certificate(self, view: Mapping[str, Any], header: BlockHeader, what: str) -> None:
        try:
            cert = CommitCertificate.from_wire(view.get("certificate"))
            verify_certificate(
                cert,
                channel=header.channel,
                height=header.height,
                block_hash=header.hash,
                validators=self.settings.genesis.channel(header.channel).validators,
            )
        except LedgerError as exc:
            raise SchemaError(f"{what}: block {header.height}: {exc}") from None


@dataclass(frozen=True)
class BlockEntry:
    """One transaction of a checked block view: its index, body and reported outcome."""

    index: int
    tx: Transaction
    outcome: Outcome | None


#: Refusals every honest node decides alike, from the transaction alone. Others
#: (``not_permitted``, ``forbidden``…) depend on governance as each node stands: nodes
#: behind a key rotation refuse what the others take, so those never become final.
DETERMINISTIC_REFUSALS: Final = frozenset(
    {
        "bad_transaction_signature",
        "wrong_network",
        "wrong_channel",
        "bad_schema",
        "bad_json",
        "bad_msgpack",
        "invalid_transaction",
        "too_many_transactions",
    }
)


def _decided_alike(code: str | None) -> bool:
    return code in DETERMINISTIC_REFUSALS


def _entry(item: Any, what: str) -> tuple[BlockEntry, Any]:
    """A view's transaction entry and its proof (None if absent). Raises SchemaError."""
    if not isinstance(item, dict):
        raise SchemaError(f"{what}: malformed transaction entry")
    try:
        tx = Transaction.from_wire(item.get("tx"))
    except LedgerError as exc:
        raise SchemaError(f"{what}: bad transaction: {exc}") from None
    index = item.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or tx.tx_id != item.get("id"):
        raise SchemaError(f"{what}: transaction entry does not match its id")
    return BlockEntry(index, tx, Outcome.from_wire(item.get("outcome"))), item.get("proof")


def _check_inclusion(
    header: BlockHeader, listed: Sequence[tuple[BlockEntry, Any]], scoped: Any, what: str
) -> None:
    """Every listed transaction is in the block: its proof leads to ``tx_root``; an
    entry without a proof only in an unscoped view that lists the whole block (ids in
    index order hashing to ``tx_root``, ``tx_count`` of them). Raises SchemaError."""
    h = header.height
    indexes = [e.index for e, _ in listed]
    if len(set(indexes)) != len(indexes):
        raise SchemaError(f"{what}: block {h} lists a transaction index twice")
    unproven = [e for e, proof in listed if proof is None]
    for e, proof in listed:
        if proof is None:
            continue
        if not isinstance(proof, list) or not all(isinstance(p, bytes) for p in proof):
            raise SchemaError(f"{what}: tx {e.tx.tx_id.hex()[:16]}…: malformed inclusion proof")
        try:
            verify_inclusion(e.tx.tx_id, e.index, header.tx_count, proof, header.tx_root)
        except LedgerError as exc:
            raise SchemaError(f"{what}: tx {e.tx.tx_id.hex()[:16]}…: {exc}") from None
    if not unproven:
        return
    whole = (
        scoped is False
        and indexes == list(range(header.tx_count))
        and merkle_root([e.tx.tx_id for e, _ in listed]) == header.tx_root
    )
    if not whole:
        raise SchemaError(
            f"{what}: block {h}: tx {unproven[0].tx.tx_id.hex()[:16]}… has no inclusion "
            "proof, and the view does not list the whole block"
        )


def _reason_code(st: TxStatus) -> str:
    """The node's error code of a refused status (``reason`` is ``"code: message"``)."""
    return (st.reason or "").split(":", 1)[0].strip()


def _by_refusers(
    txs: Sequence[Transaction], refused: Mapping[bytes, set[int]]
) -> list[tuple[frozenset[int], list[Transaction]]]:
    """``txs`` grouped by the nodes that refused them (those are not asked again),
    in order of first appearance."""
    groups: dict[frozenset[int], list[Transaction]] = {}
    for t in txs:
        groups.setdefault(frozenset(refused.get(t.tx_id, ())), []).append(t)
    return list(groups.items())


def _unverified(st: TxStatus, channel: str, why: str) -> TxStatus:
    """A node's unverified claim of a commit, as a non-final ``unknown`` status."""
    claim = f"claimed committed at height {st.height}" if st.height else "claimed committed"
    return TxStatus(st.tx_id, channel, "unknown", reason=f"{claim}, not verified: {why}")


def _chunks(txs: Iterable[Transaction], max_txs: int) -> Iterable[list[Transaction]]:
    chunk: list[Transaction] = []
    size = 0
    for t in txs:
        n = len(t.body_bytes) + 128
        if chunk and (len(chunk) >= max_txs or size + n > BATCH_MAX_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(t)
        size += n
    if chunk:
        yield chunk


assert MAX_TX_PAYLOAD_BYTES < BATCH_MAX_BYTES
