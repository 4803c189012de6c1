"""The asynchronous client: a thin driver (httpx.AsyncClient) over the shared core.

Same methods and semantics as :class:`clients.Client`, as coroutines; record-store
writes (durable, fsynced) run in a worker thread so the event loop keeps going.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from clients._config import Settings, make_settings, settings_from_network_dir
from clients._core import Blocking, Core, Failure, Op, Request, Response, Sleep
from clients._errors import Attempt
from clients._models import CommittedTx, CreditReport, TxStatus
from clients._ops import Evidence, EvidenceCheck, EvidenceTarget, Operations, verify_offline
from clients._pseudonym import PseudonymKey
from clients._records import LoanEvent, PreparedTransaction, Record, UnsignedTransaction
from clients._sse import SSEDecoder
from clients._store import RecordStore
from clients._sync import STREAM_IDLE_S, _failure, _Stream, _tx_id
from crosschain.receipt import Receipt, VerificationReport
from ledger.crypto import Signer
from ledger.errors import ConfigError, LedgerError, SchemaError
from ledger.genesis import Genesis

T = TypeVar("T")


async def _send(http: httpx.AsyncClient, req: Request) -> Response | Failure:
    try:
        r = await http.request(
            req.method, req.url, content=req.body or None, headers=dict(req.headers),
            timeout=req.timeout,
        )  # fmt: skip
    except httpx.HTTPError as exc:
        return _failure(exc)
    return Response(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)


async def run_async(http: httpx.AsyncClient, op: Op[T]) -> T:
    """Drive an operation to completion with non-blocking I/O."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = op.throw(error) if error is not None else op.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        reply, error = None, None
        if isinstance(effect, Request):
            reply = await _send(http, effect)
        elif isinstance(effect, Sleep):
            await asyncio.sleep(max(0.0, effect.seconds))
        elif isinstance(effect, Blocking):
            try:
                reply = await asyncio.to_thread(effect.fn)
            except Exception as exc:  # handed to the operation
                error = exc
        else:  # pragma: no cover - a bug in the core
            raise TypeError(f"unknown effect {effect!r}")


class AsyncSubmitHandle:
    """A submitted transaction to follow (``AsyncClient.submit_async``)."""

    def __init__(self, client: AsyncClient, prepared: PreparedTransaction, first: TxStatus) -> None:
        self._client = client
        self.prepared = prepared
        self.first_status = first

    @property
    def tx_id(self) -> bytes:
        return self.prepared.tx_id

    async def status(self) -> TxStatus:
        return await self._client._run(self._client._ops.status(self.prepared.channel, self.tx_id))

    async def wait(self, timeout: float | None = None, *, check: bool = True) -> TxStatus:
        ops = self._client._ops
        return await self._client._run(
            ops.follow(
                self.prepared.channel, self.tx_id, self.prepared.tx, timeout=timeout, check=check
            )
        )


class AsyncClient:
    """The asynchronous twin of :class:`clients.Client` (same arguments)."""

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
        http: httpx.AsyncClient | None = None,
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
        self._http = http or httpx.AsyncClient(
            timeout=settings.timeout, verify=settings.tls_verify()
        )

    @classmethod
    def from_network(
        cls, data_dir: str | os.PathLike[str], *, org: str | None = None, **options: Any
    ) -> AsyncClient:
        http = options.pop("http", None)
        settings = settings_from_network_dir(data_dir, org=org, **options)
        return cls(genesis=settings.genesis, settings=settings, http=http)

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()
        if self.store is not None:
            self.store.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self, op: Op[T]) -> T:
        return await run_async(self._http, op)

    @property
    def org(self) -> str:
        return self.settings.org

    @property
    def genesis(self) -> Genesis:
        return self.settings.genesis

    # ------------------------------------------------------------------ local

    def borrower_ref(self, id_number: str) -> bytes:
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
        return self._ops.build(channel, tx_type, payload, records=records, nonce=nonce)

    async def prepare(self, item: UnsignedTransaction) -> PreparedTransaction:
        return await self._run(self._ops.prepare(item))

    async def prepare_report(self, events: LoanEvent | Sequence[LoanEvent]) -> PreparedTransaction:
        return await self._run(self._ops.prepare(self._ops.build_report(events)))

    async def prepare_many(self, items: Sequence[UnsignedTransaction]) -> list[PreparedTransaction]:
        return await self._run(self._ops.prepare_many(items))

    async def prepare_reports(
        self, reports: Sequence[LoanEvent | Sequence[LoanEvent]]
    ) -> list[PreparedTransaction]:
        return await self.prepare_many([self._ops.build_report(r) for r in reports])

    async def prepare_unsigned_report(
        self, events: LoanEvent | Sequence[LoanEvent]
    ) -> UnsignedTransaction:
        return await self._run(self._ops.keep_unsigned(self._ops.build_report(events)))

    async def attach(self, item: UnsignedTransaction, signature: bytes) -> PreparedTransaction:
        return await self._run(self._ops.attach(item, signature))

    # ------------------------------------------------------------------ network

    async def info(self) -> dict[str, Any]:
        return await self._run(self._core.info())

    async def report(
        self,
        events: LoanEvent | Sequence[LoanEvent],
        *,
        timeout: float | None = None,
        check: bool = True,
    ) -> TxStatus:
        prepared = await self.prepare_report(events)
        return await self.submit(prepared, timeout=timeout, check=check)

    async def submit(
        self, item: PreparedTransaction, *, timeout: float | None = None, check: bool = True
    ) -> TxStatus:
        return await self._run(self._ops.submit(item, timeout=timeout, check=check))

    async def submit_async(self, item: PreparedTransaction) -> AsyncSubmitHandle:
        first = await self._run(self._ops.send(item))
        return AsyncSubmitHandle(self, item, first)

    async def submit_many(
        self,
        items: Sequence[PreparedTransaction],
        *,
        timeout: float | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[TxStatus]:
        return await self._run(self._ops.submit_many(items, timeout=timeout, progress=progress))

    async def status(self, tx_id: bytes | str, channel: str = "supervision") -> TxStatus:
        return await self._run(self._ops.status(channel, _tx_id(tx_id)))

    async def wait(
        self,
        tx_id: bytes | str,
        channel: str = "supervision",
        *,
        timeout: float | None = None,
        check: bool = True,
    ) -> TxStatus:
        return await self._run(self._ops.wait(channel, _tx_id(tx_id), timeout=timeout, check=check))

    def pending(self) -> list[PreparedTransaction]:
        """Stored transactions not known to be final (e.g. after a crash). Raises
        RecordStoreError if the store is damaged (checked once per open store)."""
        if self.store is None:
            return []
        self.store.check_integrity()
        return [s.prepared() for s in self.store.unfinished()]

    async def recover(
        self,
        *,
        timeout: float | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[TxStatus]:
        return await self._run(self._ops.recover(timeout=timeout, progress=progress))

    # ------------------------------------------------------------------ evidence

    async def evidence(
        self, target: EvidenceTarget, *, index: int = 0, timeout: float | None = None
    ) -> Evidence:
        return await self._run(self._ops.evidence(target, index=index, timeout=timeout))

    async def check_evidence(self, code: str, data: Record | bytes) -> EvidenceCheck:
        """Have a node verify a record (or its 32-byte commitment) against evidence code
        ``code``: verified / mismatch / not_anchored, anchoring times and checks."""
        (check,) = await self._run(self._ops.check_evidence([(code, data)]))
        return check

    async def check_evidence_batch(
        self, items: Sequence[tuple[str, Record | bytes]]
    ) -> list[EvidenceCheck]:
        """:meth:`check_evidence` for many ``(code, record or commitment)`` pairs, one
        result each, in order (chunked requests)."""
        return await self._run(self._ops.check_evidence(items))

    def verify(
        self, receipt: Mapping[str, Any] | Receipt, record: Record | None = None
    ) -> VerificationReport:
        return verify_offline(receipt, record, self._ops.trust)

    # ------------------------------------------------------------------ other channels

    async def credit_check(
        self,
        borrower_ref: bytes,
        *,
        purpose: str = "loan_application",
        query_id: str | None = None,
        timeout: float | None = None,
    ) -> CreditReport:
        return await self._run(
            self._ops.credit_check(
                borrower_ref, purpose=purpose, query_id=query_id, timeout=timeout
            )
        )

    async def register_asset(
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
        return await self._run(
            self._ops.register_asset(
                asset_id=asset_id, loan_id=loan_id, claimed_state=claimed_state,
                claimed_outstanding_cents=claimed_outstanding_cents, purpose=purpose,
                source_height=source_height, timeout=timeout,
            )
        )  # fmt: skip

    async def risk_alerts(self, *, status: str | None = None) -> list[dict[str, Any]]:
        return await self._run(self._ops.risk_alerts(status=status))

    async def risk_feedback(
        self,
        alert_id: bytes,
        measures: str,
        *,
        document_digest: bytes | None = None,
        timeout: float | None = None,
    ) -> TxStatus:
        return await self._run(
            self._ops.risk_feedback(
                alert_id, measures, document_digest=document_digest, timeout=timeout
            )
        )

    # ------------------------------------------------------------------ stream

    async def events(
        self,
        channel: str = "supervision",
        *,
        start: int | None = None,
        checkpoint: str | None = None,
        verify: bool = False,
        idle_timeout: float = STREAM_IDLE_S,
    ) -> AsyncIterator[CommittedTx]:
        """Async twin of :meth:`clients.Client.events`."""
        stream = _Stream(self._core, self.store, channel, start, checkpoint, verify)
        while True:
            for i in self._core.pool.order(self._core.monotonic()):
                if self._core.pool.identity[i] is None:
                    attempts: list[Attempt] = []
                    if not await self._run(self._core._identify(i, attempts)):
                        stream.attempts.extend(attempts)
                        continue
                req = self._core.stream_request(i, channel, stream.next)
                timeout = httpx.Timeout(self.settings.timeout, read=idle_timeout)
                try:
                    async with self._http.stream(
                        "GET", req.url, headers=dict(req.headers), timeout=timeout
                    ) as r:
                        if r.status_code != 200:
                            await r.aread()
                            stream.refused(i, Response(r.status_code, dict(r.headers), r.content))
                            continue
                        self._core.pool.succeeded(i)
                        decoder = SSEDecoder()
                        async for chunk in r.aiter_bytes():
                            for ev in decoder.feed(chunk):
                                if ev.event != "block":
                                    continue
                                height, txs = self._core.block_event(
                                    ev.data, channel=channel, expect_height=stream.next,
                                    verify=verify,
                                )  # fmt: skip
                                for tx in txs:
                                    yield tx
                                await asyncio.to_thread(stream.done_block, height)
                        stream.failed(i, "stream ended")
                except httpx.HTTPError as exc:
                    stream.failed(i, f"{type(exc).__name__}: {exc}")
                except LedgerError as exc:
                    if isinstance(exc, SchemaError):
                        stream.failed(i, str(exc))
                    else:
                        raise
            await asyncio.sleep(stream.next_round())
