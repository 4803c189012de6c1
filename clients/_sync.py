"""The synchronous client: a thin driver (httpx.Client) over the shared core."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from clients._config import Settings, make_settings, settings_from_network_dir
from clients._core import (
    Blocking,
    Core,
    Failure,
    Op,
    Request,
    Response,
    Sleep,
    error_of,
    raise_for,
)
from clients._errors import Attempt, NodeUnreachable, PermissionDenied
from clients._models import CommittedTx, CreditReport, TxStatus
from clients._ops import Evidence, EvidenceCheck, EvidenceTarget, Operations, verify_offline
from clients._pseudonym import PseudonymKey
from clients._records import LoanEvent, PreparedTransaction, Record, UnsignedTransaction
from clients._sse import SSEDecoder
from clients._store import RecordStore
from crosschain.receipt import Receipt, VerificationReport
from ledger.crypto import Signer
from ledger.errors import ConfigError, LedgerError, SchemaError
from ledger.genesis import Genesis

T = TypeVar("T")
#: SSE keep-alives come every 15 s; a stream silent for longer is dead.
STREAM_IDLE_S = 40.0


def _failure(exc: httpx.HTTPError) -> Failure:
    sent = not isinstance(
        exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.UnsupportedProtocol
    )
    return Failure(f"{type(exc).__name__}: {exc}".strip().rstrip(":"), sent)


def _send(http: httpx.Client, req: Request) -> Response | Failure:
    try:
        r = http.request(
            req.method, req.url, content=req.body or None, headers=dict(req.headers),
            timeout=req.timeout,
        )  # fmt: skip
    except httpx.HTTPError as exc:
        return _failure(exc)
    return Response(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)


def run(http: httpx.Client, op: Op[T]) -> T:
    """Drive an operation to completion with blocking I/O."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = op.throw(error) if error is not None else op.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        reply, error = None, None
        if isinstance(effect, Request):
            reply = _send(http, effect)
        elif isinstance(effect, Sleep):
            if effect.seconds > 0:
                time.sleep(effect.seconds)
        elif isinstance(effect, Blocking):
            try:
                reply = effect.fn()
            except Exception as exc:  # handed to the operation
                error = exc
        else:  # pragma: no cover - a bug in the core
            raise TypeError(f"unknown effect {effect!r}")


class SubmitHandle:
    """A submitted transaction to follow (``Client.submit_async``)."""

    def __init__(self, client: Client, prepared: PreparedTransaction, first: TxStatus) -> None:
        self._client = client
        self.prepared = prepared
        self.first_status = first

    @property
    def tx_id(self) -> bytes:
        return self.prepared.tx_id

    def status(self) -> TxStatus:
        """The current status at one node (``unknown`` if that node has not seen it)."""
        return self._client._run(self._client._ops.status(self.prepared.channel, self.tx_id))

    def wait(self, timeout: float | None = None, *, check: bool = True) -> TxStatus:
        """Block until committed (resubmitting if a node lost it). Raises NotCommitted,
        TransactionInvalid (if ``check``) or SubmitRejected."""
        ops = self._client._ops
        return self._client._run(
            ops.follow(
                self.prepared.channel, self.tx_id, self.prepared.tx, timeout=timeout, check=check
            )
        )


class Client:
    """A lender's client for a wulian network (blocking; see :class:`AsyncClient`).

    ::

        with Client(genesis="genesis.json", key_file="lender.key", store="records/",
                    pseudonym_key="pseudonym.key") as client:
            ref = client.borrower_ref("110105199001011234")
            status = client.report(LoanEvent(..., borrower_ref=ref, ...))

    ``nodes`` defaults to the genesis node addresses; each node's identity is checked
    (``/v1/info`` must name our genesis) before it is used. ``store`` is the record
    store directory (needed to report records). ``http`` lets you pass your own
    ``httpx.Client`` (proxies, TLS); it is not closed by :meth:`close`.
    """

    def __init__(
        self,
        nodes: Sequence[str] | None = None,
        *,
        genesis: Genesis | str | os.PathLike[str],
        key_file: str | os.PathLike[str] | None = None,
        signer: Signer | None = None,
        org: str | None = None,
        store: str | os.PathLike[str] | None = None,
        pseudonym_key: PseudonymKey | bytes | str | os.PathLike[str] | None = None,
        timeout: float = 10.0,
        commit_timeout: float = 30.0,
        evidence_timeout: float = 300.0,
        retries: int = 2,
        batch_size: int = 200,
        ca_file: str | os.PathLike[str] | None = None,
        http: httpx.Client | None = None,
        settings: Settings | None = None,
    ) -> None:
        if settings is None:
            settings = make_settings(
                genesis=genesis, nodes=nodes, key_file=key_file, signer=signer, org=org,
                store=store, pseudonym_key=pseudonym_key, timeout=timeout,
                commit_timeout=commit_timeout, evidence_timeout=evidence_timeout,
                retries=retries, batch_size=batch_size, ca_file=ca_file,
            )  # fmt: skip
        self.settings = settings
        self.store = (
            RecordStore(settings.store_dir, network=settings.network, owner=settings.org)
            if settings.store_dir is not None
            else None
        )
        self._core = Core(settings)
        self._ops = Operations(self._core, self.store)
        self._own_http = http is None
        self._http = http or httpx.Client(timeout=settings.timeout, verify=settings.tls_verify())

    @classmethod
    def from_network(
        cls, data_dir: str | os.PathLike[str], *, org: str | None = None, **options: Any
    ) -> Client:
        """A client for a lender of a ``wulian up`` data directory (genesis, keys and
        record store read from it; see ``clients._config``)."""
        http = options.pop("http", None)
        settings = settings_from_network_dir(data_dir, org=org, **options)
        return cls(genesis=settings.genesis, settings=settings, http=http)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        if self._own_http:
            self._http.close()
        if self.store is not None:
            self.store.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, op: Op[T]) -> T:
        return run(self._http, op)

    @property
    def org(self) -> str:
        return self.settings.org

    @property
    def genesis(self) -> Genesis:
        return self.settings.genesis

    # ------------------------------------------------------------------ local

    def borrower_ref(self, id_number: str) -> bytes:
        """The borrower reference of a resident ID number, computed locally with the
        bureau's pseudonym key (the number itself goes nowhere)."""
        if self.settings.pseudonym is None:
            raise ConfigError("client", "pseudonym_key", "no pseudonym key configured")
        return self.settings.pseudonym.borrower_ref(id_number)

    def build(
        self,
        channel: str,
        tx_type: str,
        payload: Mapping[str, Any],
        *,
        records: Sequence[Record] = (),
        nonce: int | None = None,
    ) -> UnsignedTransaction:
        """An unsigned transaction (nothing stored, nothing sent)."""
        return self._ops.build(channel, tx_type, payload, records=records, nonce=nonce)

    def prepare(self, item: UnsignedTransaction) -> PreparedTransaction:
        """Sign with the client's key and store durably (not sent)."""
        return self._run(self._ops.prepare(item))

    def prepare_report(self, events: LoanEvent | Sequence[LoanEvent]) -> PreparedTransaction:
        """Build, salt, commit, sign and durably store a loan event (one event) or an
        atomic batch (several); nothing is sent yet."""
        return self._run(self._ops.prepare(self._ops.build_report(events)))

    def prepare_many(self, items: Sequence[UnsignedTransaction]) -> list[PreparedTransaction]:
        """Sign several transactions and store them in one durable write."""
        return self._run(self._ops.prepare_many(items))

    def prepare_reports(
        self, reports: Sequence[LoanEvent | Sequence[LoanEvent]]
    ) -> list[PreparedTransaction]:
        """Many reports at once (each an event or an atomic batch), stored in one
        durable write: the fast path for bulk uploads (then :meth:`submit_many`)."""
        return self.prepare_many([self._ops.build_report(r) for r in reports])

    def prepare_unsigned_report(
        self, events: LoanEvent | Sequence[LoanEvent]
    ) -> UnsignedTransaction:
        """Offline signing, step 1: build and store the report unsigned. Sign
        ``.signing_message`` in the HSM, then :meth:`attach`."""
        return self._run(self._ops.keep_unsigned(self._ops.build_report(events)))

    def attach(self, item: UnsignedTransaction, signature: bytes) -> PreparedTransaction:
        """Offline signing, step 2: check and attach the signature (stored)."""
        return self._run(self._ops.attach(item, signature))

    # ------------------------------------------------------------------ network

    def info(self) -> dict[str, Any]:
        """``/v1/info`` of the first node that answers (plus its ``url``)."""
        return self._run(self._core.info())

    def report(
        self,
        events: LoanEvent | Sequence[LoanEvent],
        *,
        timeout: float | None = None,
        check: bool = True,
    ) -> TxStatus:
        """Report loan event(s) and return once committed (``prepare_report`` +
        ``submit``)."""
        return self.submit(self.prepare_report(events), timeout=timeout, check=check)

    def submit(
        self, item: PreparedTransaction, *, timeout: float | None = None, check: bool = True
    ) -> TxStatus:
        """Store (if not yet), send, and return once committed. Raises SubmitRejected,
        NotCommitted, TransactionInvalid (if ``check``), NodeUnreachable."""
        return self._run(self._ops.submit(item, timeout=timeout, check=check))

    def submit_async(self, item: PreparedTransaction) -> SubmitHandle:
        """Store (if not yet), send once, and return at once with a handle."""
        first = self._run(self._ops.send(item))
        return SubmitHandle(self, item, first)

    def submit_many(
        self,
        items: Sequence[PreparedTransaction],
        *,
        timeout: float | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[TxStatus]:
        """Store all, then submit in batches with failover; one final status each
        (``pending``/``unknown`` ones did not commit within ``timeout``)."""
        return self._run(self._ops.submit_many(items, timeout=timeout, progress=progress))

    def status(self, tx_id: bytes | str, channel: str = "supervision") -> TxStatus:
        """A transaction's status (the store is updated when it is final)."""
        return self._run(self._ops.status(channel, _tx_id(tx_id)))

    def wait(
        self,
        tx_id: bytes | str,
        channel: str = "supervision",
        *,
        timeout: float | None = None,
        check: bool = True,
    ) -> TxStatus:
        """Wait for a transaction to commit (resubmitted from the store if needed)."""
        return self._run(self._ops.wait(channel, _tx_id(tx_id), timeout=timeout, check=check))

    def pending(self) -> list[PreparedTransaction]:
        """Stored transactions not known to be final (e.g. after a crash). Raises
        RecordStoreError if the store is damaged (checked once per open store)."""
        if self.store is None:
            return []
        self.store.check_integrity()
        return [s.prepared() for s in self.store.unfinished()]

    def recover(
        self,
        *,
        timeout: float | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[TxStatus]:
        """Resubmit every stored, unfinished transaction (same signed bytes, same ids)
        and follow them; returns their statuses."""
        return self._run(self._ops.recover(timeout=timeout, progress=progress))

    # ------------------------------------------------------------------ evidence

    def evidence(
        self, target: EvidenceTarget, *, index: int = 0, timeout: float | None = None
    ) -> Evidence:
        """Wait for record ``index``'s evidence code, fetch the receipt, verify it
        offline. ``target``: tx id, prepared transaction or record."""
        return self._run(self._ops.evidence(target, index=index, timeout=timeout))

    def check_evidence(self, code: str, data: Record | bytes) -> EvidenceCheck:
        """Have a node verify a record (or its 32-byte commitment) against evidence code
        ``code``: verified / mismatch / not_anchored, anchoring times and checks."""
        (check,) = self._run(self._ops.check_evidence([(code, data)]))
        return check

    def check_evidence_batch(
        self, items: Sequence[tuple[str, Record | bytes]]
    ) -> list[EvidenceCheck]:
        """:meth:`check_evidence` for many ``(code, record or commitment)`` pairs, one
        result each, in order (chunked requests)."""
        return self._run(self._ops.check_evidence(items))

    def verify(
        self, receipt: Mapping[str, Any] | Receipt, record: Record | None = None
    ) -> VerificationReport:
        """Check a receipt (and the record) offline against our genesis."""
        return verify_offline(receipt, record, self._ops.trust)

    # ------------------------------------------------------------------ other channels

    def credit_check(
        self,
        borrower_ref: bytes,
        *,
        purpose: str = "loan_application",
        query_id: str | None = None,
        timeout: float | None = None,
    ) -> CreditReport:
        """Multi-lender credit check of a borrower (counts only, never identities)."""
        return self._run(
            self._ops.credit_check(
                borrower_ref, purpose=purpose, query_id=query_id, timeout=timeout
            )
        )

    def register_asset(
        self,
        *,
        asset_id: str,
        loan_id: str,
        claimed_state: str,
        claimed_outstanding_cents: int,
        purpose: str = "financing",
        source_height: int | None = None,
        timeout: float | None = None,
    ) -> TxStatus:
        """Register one of our loans as an asset on the service channel."""
        return self._run(
            self._ops.register_asset(
                asset_id=asset_id, loan_id=loan_id, claimed_state=claimed_state,
                claimed_outstanding_cents=claimed_outstanding_cents, purpose=purpose,
                source_height=source_height, timeout=timeout,
            )
        )  # fmt: skip

    def risk_alerts(self, *, status: str | None = None) -> list[dict[str, Any]]:
        """Risk alerts about this lender."""
        return self._run(self._ops.risk_alerts(status=status))

    def risk_feedback(
        self,
        alert_id: bytes,
        measures: str,
        *,
        document_digest: bytes | None = None,
        timeout: float | None = None,
    ) -> TxStatus:
        """Give feedback on an alert the bureau disposed to us."""
        return self._run(
            self._ops.risk_feedback(
                alert_id, measures, document_digest=document_digest, timeout=timeout
            )
        )

    # ------------------------------------------------------------------ stream

    def events(
        self,
        channel: str = "supervision",
        *,
        start: int | None = None,
        checkpoint: str | None = None,
        verify: bool = False,
        idle_timeout: float = STREAM_IDLE_S,
    ) -> Iterator[CommittedTx]:
        """Our committed transactions on ``channel``, block by block, forever.

        Resumes after the last block fully consumed: with ``checkpoint`` (a name) the
        position is kept in the record store and saved once every transaction of a
        block was consumed (at-least-once delivery: a crash mid-block re-delivers that
        block). ``start`` is the first height when there is no checkpoint (default:
        the next block). Fails over to other nodes; raises NodeUnreachable when none
        serves the stream.
        """
        stream = _Stream(self._core, self.store, channel, start, checkpoint, verify)
        yield from stream.run_sync(self._http, idle_timeout)


def _tx_id(v: bytes | str) -> bytes:
    if isinstance(v, str):
        try:
            b = bytes.fromhex(v)
        except ValueError:
            raise SchemaError("tx id must be 64 hex digits") from None
    else:
        b = v
    if len(b) != 32:
        raise SchemaError("tx id must be 32 bytes (64 hex digits)")
    return b


class _Stream:
    """The event stream's state, shared by the sync and async drivers."""

    def __init__(
        self,
        core: Core,
        store: RecordStore | None,
        channel: str,
        start: int | None,
        checkpoint: str | None,
        verify: bool,
    ) -> None:
        if checkpoint is not None and store is None:
            raise ConfigError("client", "store", "a stream checkpoint needs the record store")
        self.core = core
        self.store = store
        self.channel = channel
        self.checkpoint = checkpoint
        self.verify = verify
        self.next: int | None = start
        if checkpoint is not None and store is not None:
            saved = store.checkpoint(checkpoint)
            if saved is not None:
                self.next = saved + 1
        self.attempts: list[Attempt] = []
        self.rounds = 0

    def done_block(self, height: int) -> None:
        self.next = height + 1
        self.attempts.clear()
        self.rounds = 0
        if self.checkpoint is not None and self.store is not None:
            self.store.save_checkpoint(self.checkpoint, height)

    def refused(self, i: int, resp: Response) -> None:
        """A non-200 answer to the stream request: raise or note for failover."""
        code, message = error_of(resp)
        if resp.status >= 500 or code in ("overloaded", "not_ready"):
            self.failed(i, f"HTTP {resp.status} {code}")
            return
        if resp.status == 403:
            raise PermissionDenied(resp.status, code, message, stage="stream")
        raise_for(resp, stage="stream", url=self.core.pool.urls[i])

    def failed(self, i: int, problem: str) -> None:
        self.attempts.append(Attempt(self.core.pool.urls[i], problem))
        self.core.pool.failed(i, self.core.monotonic())

    def next_round(self) -> float:
        """Back-off before another round; raises NodeUnreachable when out of retries."""
        self.rounds += 1
        if self.rounds > self.core.settings.retries + 1:
            raise NodeUnreachable(tuple(self.attempts), stage="stream", what="event stream")
        return self.core.backoff(self.rounds - 1)

    def run_sync(self, http: httpx.Client, idle_timeout: float) -> Iterator[CommittedTx]:
        while True:
            for i in self.core.pool.order(self.core.monotonic()):
                if self.core.pool.identity[i] is None:
                    attempts: list[Attempt] = []
                    if not run(http, self.core._identify(i, attempts)):
                        self.attempts.extend(attempts)
                        continue
                req = self.core.stream_request(i, self.channel, self.next)
                timeout = httpx.Timeout(self.core.settings.timeout, read=idle_timeout)
                try:
                    with http.stream(
                        "GET", req.url, headers=dict(req.headers), timeout=timeout
                    ) as r:
                        if r.status_code != 200:
                            r.read()
                            self.refused(i, Response(r.status_code, dict(r.headers), r.content))
                            continue
                        self.core.pool.succeeded(i)
                        decoder = SSEDecoder()
                        for chunk in r.iter_bytes():
                            for ev in decoder.feed(chunk):
                                if ev.event != "block":
                                    continue
                                height, txs = self.core.block_event(
                                    ev.data, channel=self.channel, expect_height=self.next,
                                    verify=self.verify,
                                )  # fmt: skip
                                yield from txs
                                self.done_block(height)
                        self.failed(i, "stream ended")
                except httpx.HTTPError as exc:
                    self.failed(i, f"{type(exc).__name__}: {exc}")
                except (LedgerError, ValueError) as exc:
                    if isinstance(exc, SchemaError):
                        self.failed(i, str(exc))
                    else:
                        raise
            time.sleep(self.next_round())
