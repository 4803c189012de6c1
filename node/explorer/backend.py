"""The explorer's backend over a running node: :class:`RuntimeBackend` implements
:class:`~node.explorer.port.ExplorerBackend` from a :class:`~node.runtime.NodeRuntime`.

Where the data comes from:

* channels, blocks, certificates, transactions, outcomes — the node's store and its
  :class:`~node.channel.ChannelService` per channel (governance at the tip for roles,
  permissions and validator sets);
* validator health — this node's peer links (``PeerTransport.links``) and the votes in
  the last :data:`HEALTH_WINDOW` commit certificates of each channel;
* view changes — consecutive block headers committed in different views, and the
  replica's current view when a view change is under way;
* evidence — the judicial channel's state written by the cross-chain anchor rule
  (:mod:`crosschain.anchor_rules`: ``xc/ev/…`` evidence index, ``xc/anchor/…`` header
  anchors), the supervision channel's transactions (their ``"records"``) and loan
  event facts (``sup/ev/…``, :mod:`channels.supervision`);
* verification — :func:`crosschain.receipt.assemble_receipt` then
  :func:`crosschain.receipt.verify_receipt` against the genesis trust root: exactly
  what an offline verifier would do with the receipt (blocks come proven from a
  bounded :class:`~crosschain.receipt.ProvenBlockCache`, certificate checks go
  through a :class:`~crosschain.receipt.CertificateMemo`; shared with the API's
  evidence routes);
* accounts and the audit log — files in the node's data directory
  (:mod:`node.explorer.accounts`, :mod:`node.explorer.audit`).

Reads may run in worker threads (the explorer verifies off the event loop); they only
read the store (thread-safe) and plain attributes of the channel services.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from channels.loans import EventFact
from channels.supervision import event_prefix
from crosschain.anchor import SOURCE_CHANNEL, TARGET_CHANNEL
from crosschain.anchor_rules import read_anchor_entry, read_config_steps, read_evidence
from crosschain.evidence_index import AnchorEntry, EvidenceEntry
from crosschain.receipt import (
    CertificateMemo,
    ProvenBlock,
    ProvenBlockCache,
    Receipt,
    ReceiptUnavailable,
    RecordLeaf,
    TrustRoot,
    assemble_receipt,
)
from crosschain.validator_history import ConfigStep
from ledger.blocks import Block, Transaction, record_leaves
from ledger.certificate import CommitCertificate, ValidatorSet
from ledger.crypto import ED25519
from ledger.encoding import decode
from ledger.errors import LedgerError, SignatureError
from ledger.evidence_code import EvidenceCode, code_for_leaf
from ledger.hashing import TAG_COMMIT_VOTE
from node.explorer.accounts import AccountFile, accounts_path, audit_path
from node.explorer.audit import AuditLog
from node.explorer.decode import flatten_fields
from node.explorer.port import (
    CHAIN_FAILED,
    NOT_ANCHORED,
    Account,
    AnchorInfo,
    BlockDetail,
    BlockSummary,
    CertificateView,
    ChannelSummary,
    EvidenceRecord,
    NodeSummary,
    OrgView,
    RecordRef,
    SupervisionDetail,
    TxDetail,
    TxSummary,
    ValidatorChannel,
    ValidatorHealth,
    Verification,
    ViewChange,
    VoteView,
)
from node.explorer.verification import verification_from_receipts
from node.rules import StoreState

if TYPE_CHECKING:
    from node.channel import ChannelService
    from node.runtime import NodeRuntime

#: Certificates looked at to judge whether a validator signs.
HEALTH_WINDOW: Final = 20
#: Headers scanned for view changes.
VIEW_SCAN: Final = 200
#: Loan lookups without a lender scan at most this many loan keys.
MAX_LOAN_SCAN: Final = 200_000
#: At most this many records returned by one lookup.
MAX_RECORDS: Final = 500
#: Blocks (and a rough byte budget) kept proven for receipts: leaves, Merkle tree, ids.
PROVEN_BLOCKS: Final = 64
PROVEN_BLOCK_BYTES: Final = 32 * 1024 * 1024
#: Certificate verification results memoised (by exact inputs).
CERTIFICATE_MEMO: Final = 4096


class RuntimeBackend:
    """:class:`~node.explorer.port.ExplorerBackend` over one node's runtime."""

    def __init__(self, runtime: NodeRuntime) -> None:
        self.rt = runtime
        self.store = runtime.store
        self.genesis = runtime.genesis
        self.trust = TrustRoot.from_genesis(runtime.genesis)
        data_dir = runtime.config.data_dir
        self.accounts = AccountFile(accounts_path(data_dir))
        from node.runtime import wall_clock_ms

        self.audit = AuditLog(audit_path(data_dir), wall_clock_ms)
        self._lock = threading.Lock()
        self._health_cache: dict[str, tuple[int, dict[str, tuple[int | None, int]]]] = {}
        self._view_cache: dict[str, tuple[int, list[ViewChange]]] = {}
        self._jud_steps: list[ConfigStep] = []
        self._jud_scanned = 0
        #: Committed blocks never change: proven once, served to every receipt.
        self.proven_blocks = ProvenBlockCache(PROVEN_BLOCKS, PROVEN_BLOCK_BYTES)
        #: The node's certificate checks (a pure function of its inputs) memoised.
        self.certificates = CertificateMemo(CERTIFICATE_MEMO)

    # ------------------------------------------------------------------ basics

    def _svc(self, channel: str) -> ChannelService | None:
        return self.rt.channels.get(channel)

    def node_summary(self) -> NodeSummary:
        node_id = self.rt.config.node_id
        try:
            org_id = self.genesis.node(node_id).org_id
        except LookupError:
            org_id = ""
        return NodeSummary(self.genesis.network, node_id, org_id, self.genesis.hash)

    def channel_ids(self) -> Sequence[str]:
        return tuple(self.rt.channels)

    def read_roles(self, channel: str) -> frozenset[str]:
        svc = self._svc(channel)
        return frozenset() if svc is None else frozenset(svc.permissions().read)

    def org(self, org_id: str) -> OrgView | None:
        order = [TARGET_CHANNEL, SOURCE_CHANNEL, *self.rt.channels]
        for ch in order:
            svc = self._svc(ch)
            if svc is None:
                continue
            org = svc.governance.registry.org_at(org_id, svc.height + 1)
            if org is not None:
                return OrgView(org.org_id, org.name, org.role)
        return None

    # ------------------------------------------------------------------ overview

    def channel_summaries(self) -> list[ChannelSummary]:
        from node import consensus_port as cport

        out = []
        for ch, svc in self.rt.channels.items():
            height = svc.height
            header = self.store.header(ch, height) if height else None
            vset = svc.governance.validators_at(height + 1)
            view = primary = ready = None
            status = svc.failed or ""
            if svc.replica is not None:
                view = svc.replica.view
                primary = cport.primary_of(svc.replica)
                ready, why = cport.readiness(svc.replica)
                status = status or why
            elif header is not None:
                primary = vset.primary(header.view)
            out.append(
                ChannelSummary(
                    channel=ch,
                    height=height,
                    last_block_hash=header.hash if header else None,
                    last_block_time_ms=header.time_ms if header else None,
                    validators=vset.n,
                    quorum=vset.quorum,
                    view=view,
                    primary=primary,
                    ready=ready,
                    status=status,
                )
            )
        return out

    def _signing(self, channel: str, tip: int) -> dict[str, tuple[int | None, int]]:
        """node id → (last signed height, certificates signed) over the last window."""
        with self._lock:
            cached = self._health_cache.get(channel)
            if cached is not None and cached[0] == tip:
                return cached[1]
        stats: dict[str, tuple[int | None, int]] = {}
        for h in range(tip, max(0, tip - HEALTH_WINDOW), -1):
            cert = self.store.certificate(channel, h)
            if cert is None:
                continue
            for vote in {v.validator for v in cert.votes}:
                last, n = stats.get(vote, (None, 0))
                stats[vote] = (h if last is None else last, n + 1)
        with self._lock:
            self._health_cache[channel] = (tip, stats)
        return stats

    def validators(self) -> list[ValidatorHealth]:
        from node import consensus_port as cport

        me = self.rt.config.node_id
        per_channel: dict[str, list[ValidatorChannel]] = {}
        infos: dict[str, tuple[str, str]] = {
            n.node_id: (n.org_id, n.address) for n in self.genesis.nodes
        }
        order: list[str] = [n.node_id for n in self.genesis.nodes]
        for ch, svc in self.rt.channels.items():
            tip = svc.height
            vset = svc.governance.validators_at(tip + 1)
            if svc.replica is not None:
                primary = cport.primary_of(svc.replica)
            else:
                header = self.store.header(ch, tip) if tip else None
                primary = vset.primary(header.view if header else 0)
            stats = self._signing(ch, tip)
            window = min(HEALTH_WINDOW, tip)
            for v in vset.validators:
                if v.node_id not in infos:
                    info = svc.governance.validators.node_info(v.node_id, tip + 1)
                    infos[v.node_id] = (info.org_id, info.address) if info else ("", "")
                    order.append(v.node_id)
                last, n = stats.get(v.node_id, (None, 0))
                per_channel.setdefault(v.node_id, []).append(
                    ValidatorChannel(ch, v.node_id == primary, last, n, window)
                )
        links = self.rt.transport.links
        out = []
        for node_id in order:
            if node_id not in per_channel:
                continue
            org_id, address = infos[node_id]
            if node_id == me:
                link, err = "self", ""
            elif node_id in links:
                pl = links[node_id]
                link, err = ("up" if pl.up else "down"), pl.last_error
            else:
                link, err = "unknown", ""
            out.append(
                ValidatorHealth(
                    node_id, org_id, address, node_id == me, link, err, tuple(per_channel[node_id])
                )
            )
        return out

    def recent_blocks(
        self, channel: str, limit: int, before: int | None = None
    ) -> list[BlockSummary]:
        svc = self._svc(channel)
        if svc is None:
            return []
        top = svc.height if before is None else min(svc.height, before - 1)
        out = []
        for h in range(top, max(0, top - limit), -1):
            header = self.store.header(channel, h)
            if header is None:
                continue
            out.append(
                BlockSummary(
                    channel,
                    h,
                    header.hash,
                    header.time_ms,
                    header.tx_count,
                    header.proposer,
                    header.view,
                )
            )
        return out

    def view_changes(self, channel: str, limit: int) -> list[ViewChange]:
        svc = self._svc(channel)
        if svc is None:
            return []
        tip = svc.height
        with self._lock:
            cached = self._view_cache.get(channel)
        if cached is not None and cached[0] == tip:
            changes = cached[1]
        else:
            changes = []
            lo = max(1, tip - VIEW_SCAN + 1)
            prev = self.store.header(channel, lo - 1) if lo > 1 else None
            prev_view = prev.view if prev is not None else 0
            for h in range(lo, tip + 1):
                header = self.store.header(channel, h)
                if header is None:
                    continue
                if header.view > prev_view:
                    changes.append(
                        ViewChange(
                            channel, h, prev_view, header.view, header.time_ms, header.proposer
                        )
                    )
                prev_view = header.view
            changes.reverse()
            with self._lock:
                self._view_cache[channel] = (tip, changes)
        out = list(changes)
        rep = svc.replica
        if rep is not None and not rep.view_active:
            last = self.store.header(channel, tip) if tip else None
            vset = svc.governance.validators_at(tip + 1)
            out.insert(
                0,
                ViewChange(
                    channel,
                    tip + 1,
                    last.view if last else 0,
                    rep.view,
                    None,
                    vset.primary(rep.view),
                    in_progress=True,
                ),
            )
        return out[:limit]

    # ------------------------------------------------------------------ blocks and txs

    def _certificate_view(
        self, cert: CommitCertificate | None, block: Block, vset: ValidatorSet
    ) -> CertificateView | None:
        if cert is None:
            return None
        message = cert.message()
        right_block = cert.block_hash == block.hash and cert.height == block.height
        votes = []
        seen: set[str] = set()
        for vote in cert.votes:
            member = vset.by_id.get(vote.validator)
            ok = (
                right_block
                and member is not None
                and vote.validator not in seen
                and ED25519.verify(member.public_key, TAG_COMMIT_VOTE, message, vote.signature)
            )
            seen.add(vote.validator)
            votes.append(VoteView(vote.validator, vote.signature, bool(ok)))
        return CertificateView(cert.view, cert.block_hash, tuple(votes), vset.n, vset.quorum)

    def _block_detail(self, channel: str, height: int) -> BlockDetail | None:
        svc = self._svc(channel)
        if svc is None:
            return None
        block = self.store.block(channel, height)
        if block is None:
            return None
        cert = self.store.certificate(channel, height)
        outcomes = svc.outcomes(height)
        txs = []
        for i, tx in enumerate(block.transactions):
            o = outcomes[i] if i < len(outcomes) else None
            txs.append(
                TxSummary(
                    i,
                    tx.tx_id,
                    tx.type,
                    tx.sender,
                    tx.time_ms,
                    o.valid if o else None,
                    o.code if o else "",
                )
            )
        h = block.header
        return BlockDetail(
            channel=channel,
            height=height,
            hash=block.hash,
            prev_hash=h.prev_hash,
            time_ms=h.time_ms,
            proposer=h.proposer,
            view=h.view,
            tx_root=h.tx_root,
            tx_count=h.tx_count,
            record_root=h.record_root,
            record_count=h.record_count,
            state_height=h.state_height,
            state_root=h.state_root,
            certificate=self._certificate_view(cert, block, svc.governance.validators_at(height)),
            txs=tuple(txs),
            tip_height=svc.height,
        )

    def block(self, channel: str, height: int) -> BlockDetail | None:
        return self._block_detail(channel, height)

    def block_by_hash(self, channel: str, block_hash: bytes) -> BlockDetail | None:
        if self._svc(channel) is None:
            return None
        h = self.store.height_of(channel, block_hash)
        return None if h is None else self._block_detail(channel, h)

    @staticmethod
    def _records_of(tx: Transaction) -> tuple[RecordRef, ...]:
        try:
            leaves = record_leaves(tx)
        except LedgerError:
            return ()
        out = []
        for i, leaf in enumerate(leaves):
            rec = RecordLeaf.decode(leaf)
            out.append(RecordRef(i, rec.commitment, str(code_for_leaf(leaf))))
        return tuple(out)

    def transaction(self, channel: str, tx_id: bytes) -> TxDetail | None:
        svc = self._svc(channel)
        if svc is None:
            return None
        located = self.store.transaction(channel, tx_id)
        if located is None:
            return None
        tx = located.transaction
        header = self.store.header(channel, located.height)
        outcomes = svc.outcomes(located.height)
        o = outcomes[located.index] if located.index < len(outcomes) else None
        try:
            tx.verify_signature()
            sig_ok = True
        except SignatureError:
            sig_ok = False
        return TxDetail(
            channel=channel,
            tx_id=tx_id,
            height=located.height,
            index=located.index,
            block_hash=header.hash if header else b"",
            block_time_ms=header.time_ms if header else 0,
            type=tx.type,
            sender=tx.sender,
            sender_role=svc.role_of(tx.sender, tx.public_key, located.height),
            public_key=tx.public_key,
            signature=tx.signature,
            signature_valid=sig_ok,
            nonce=tx.nonce,
            time_ms=tx.time_ms,
            fields=flatten_fields(tx.payload),
            valid=o.valid if o else None,
            code=o.code if o else "",
            message=o.message if o else "",
            records=self._records_of(tx),
        )

    # ------------------------------------------------------------------ evidence

    def _jud_state(self) -> StoreState:
        return StoreState(self.store, TARGET_CHANNEL)

    def _supervision_detail(self, tx_id: bytes, record_index: int) -> SupervisionDetail | None:
        located = self.store.transaction(SOURCE_CHANNEL, tx_id)
        if located is None:
            return None
        tx = located.transaction
        # Loan events travel as the records themselves (channels.supervision: each
        # record map holds the regulatory fields and "c"); older payloads kept them
        # in a parallel "events" list.
        item: Mapping[str, Any] = tx.payload
        for key in ("records", "events"):
            items = tx.payload.get(key)
            entry = (
                items[record_index]
                if isinstance(items, list) and 0 <= record_index < len(items)
                else None
            )
            if isinstance(entry, dict) and len(entry) > 1:
                item = entry
                break
        loan = item.get("loan_id")
        event = item.get("event")
        shown = {k: v for k, v in item.items() if k != "records"}
        return SupervisionDetail(
            lender=tx.sender,
            tx_time_ms=tx.time_ms,
            tx_index=located.index,
            loan_id=loan if isinstance(loan, str) else None,
            event=event if isinstance(event, str) else None,
            fields=flatten_fields(shown, max_fields=60),
        )

    def _anchor_info(self, entry: AnchorEntry | None) -> AnchorInfo | None:
        if entry is None:
            return None
        header = self.store.header(TARGET_CHANNEL, entry.judicial_height)
        if header is None:
            return None
        return AnchorInfo(
            entry.judicial_height, header.hash, header.time_ms, entry.tx_id, entry.tx_index
        )

    def _record_from_entry(self, e: EvidenceEntry) -> EvidenceRecord | None:
        try:
            rec = RecordLeaf.decode(e.leaf)
        except LedgerError:
            return None
        anchor = read_anchor_entry(self._jud_state(), SOURCE_CHANNEL, e.source_height)
        if anchor is not None:
            sup_hash, sup_time = anchor.header_hash, anchor.header_time_ms
        else:
            header = self.store.header(SOURCE_CHANNEL, e.source_height)
            sup_hash = header.hash if header else b""
            sup_time = header.time_ms if header else 0
        return EvidenceRecord(
            evidence_code=str(code_for_leaf(e.leaf)),
            commitment=rec.commitment,
            tx_id=rec.tx_id,
            tx_type=rec.tx_type,
            record_index=rec.index,
            leaf_index=e.leaf_index,
            supervision_height=e.source_height,
            supervision_hash=sup_hash,
            supervision_time_ms=sup_time,
            anchor=self._anchor_info(anchor),
            supervision=self._supervision_detail(rec.tx_id, rec.index),
        )

    def evidence_by_code(self, code: EvidenceCode) -> list[EvidenceRecord]:
        out = []
        for e in read_evidence(self._jud_state(), code)[:MAX_RECORDS]:
            r = self._record_from_entry(e)
            if r is not None:
                out.append(r)
        return out

    def _records_of_tx(self, tx_id: bytes, only_index: int | None = None) -> list[EvidenceRecord]:
        located = self.store.transaction(SOURCE_CHANNEL, tx_id)
        if located is None:
            return []
        try:
            leaves = record_leaves(located.transaction)
        except LedgerError:
            return []
        if not leaves:
            return []
        header = self.store.header(SOURCE_CHANNEL, located.height)
        if header is None:
            return []
        block = self.store.block(SOURCE_CHANNEL, located.height)
        base = 0
        if block is not None:
            for tx in block.transactions[: located.index]:
                try:
                    base += len(record_leaves(tx))
                except LedgerError:
                    continue
        reader = self._jud_state()
        out = []
        for i, leaf in enumerate(leaves):
            if only_index is not None and i != only_index:
                continue
            code = code_for_leaf(leaf)
            entries = [e for e in read_evidence(reader, code) if e.leaf == leaf]
            if entries:
                r = self._record_from_entry(entries[0])
                if r is not None:
                    out.append(r)
                    continue
            rec = RecordLeaf.decode(leaf)
            out.append(
                EvidenceRecord(
                    evidence_code=str(code),
                    commitment=rec.commitment,
                    tx_id=tx_id,
                    tx_type=rec.tx_type,
                    record_index=i,
                    leaf_index=base + i,
                    supervision_height=located.height,
                    supervision_hash=header.hash,
                    supervision_time_ms=header.time_ms,
                    anchor=None,
                    supervision=self._supervision_detail(tx_id, i),
                )
            )
        return out[:MAX_RECORDS]

    def evidence_by_tx(self, tx_id: bytes) -> list[EvidenceRecord]:
        return self._records_of_tx(tx_id)

    def _loan_lenders(self, loan_id: str) -> list[str]:
        """Lenders that reported a loan ``loan_id`` (bounded scan of loan summaries)."""
        suffix = b"/" + loan_id.encode()
        lenders = []
        for n, (key, _v) in enumerate(self.store.iter_state(SOURCE_CHANNEL, b"sup/loan/")):
            if n >= MAX_LOAN_SCAN:
                break
            if key.endswith(suffix):
                org = key[len(b"sup/loan/") : -len(suffix)]
                if b"/" not in org:
                    lenders.append(org.decode("utf-8", "replace"))
        return lenders

    def evidence_by_loan(self, loan_id: str, lender: str | None) -> list[EvidenceRecord]:
        lenders = [lender] if lender else self._loan_lenders(loan_id)
        out: list[EvidenceRecord] = []
        for org in lenders:
            for _key, raw in self.store.iter_state(SOURCE_CHANNEL, event_prefix(org, loan_id)):
                try:
                    fact = EventFact.from_wire(decode(raw))
                except (LedgerError, KeyError, TypeError, ValueError):
                    continue
                for r in self._records_of_tx(fact.ref.tx_id):
                    if r.commitment == fact.ev.commitment and r not in out:
                        out.append(r)
                if len(out) >= MAX_RECORDS:
                    return out
        return out

    # ------------------------------------------------------------------ verification

    def _judicial_config_steps(self, below: int) -> list[ConfigStep]:
        """Config steps of the judicial channel below ``below`` (incrementally scanned
        and cached: committed blocks never change)."""
        with self._lock:
            tip = self.store.height(TARGET_CHANNEL)
            target = min(below - 1, tip)
            if target > self._jud_scanned:
                for block, cert in self.store.iter_blocks(
                    TARGET_CHANNEL, self._jud_scanned + 1, target
                ):
                    step = ConfigStep.of(block, cert)
                    if step is not None:
                        self._jud_steps.append(step)
                self._jud_scanned = target
            return [s for s in self._jud_steps if s.height < below]

    def _receipt_source(self) -> _ReceiptSource:
        """A receipt source over the store and :attr:`proven_blocks`; use one per
        request (it pins what it served: each block is fetched once per request)."""
        return _ReceiptSource(self)

    def proven_block(self, channel: str, height: int) -> ProvenBlock | None:
        """The committed block ``height`` of ``channel`` proven for receipts (cached)."""

        def load() -> ProvenBlock | None:
            block = self.store.block(channel, height)
            cert = self.store.certificate(channel, height)
            return None if block is None or cert is None else ProvenBlock.of(block, cert)

        return self.proven_blocks.get(channel, height, load)

    def record_owner(self, receipt: Receipt) -> str | None:
        """The sender of the supervision transaction holding ``receipt``'s record."""
        tx_id = receipt.record.tx_id
        block = self.proven_block(SOURCE_CHANNEL, receipt.supervision_header.height)
        if block is not None and block.hash == receipt.supervision_header.hash:
            sender = block.sender_of(tx_id)
            if sender is not None:
                return sender
        located = self.store.transaction(SOURCE_CHANNEL, tx_id)
        return None if located is None else located.transaction.sender

    def verify_receipts(
        self, code: str, commitment: bytes, receipts: Sequence[Receipt | dict[str, Any]]
    ) -> Verification:
        """:func:`verification_from_receipts` against the genesis, with this node's
        certificate memo (every check still runs)."""
        return verification_from_receipts(
            code, commitment, receipts, self.trust, certificate_verifier=self.certificates
        )

    def verify(self, code: EvidenceCode, commitment: bytes) -> Verification:
        try:
            receipts = assemble_receipt(code, self._receipt_source())
        except ReceiptUnavailable as exc:
            entries = read_evidence(self._jud_state(), code)
            status = NOT_ANCHORED if not entries else CHAIN_FAILED
            return Verification(str(code), status, commitment, detail=exc.message)
        except LedgerError as exc:
            return Verification(str(code), CHAIN_FAILED, commitment, detail=exc.message)
        return self.verify_receipts(str(code), commitment, receipts)

    # ------------------------------------------------------------------ accounts, audit

    def find_account(self, username: str) -> Account | None:
        return self.accounts.find(username)

    def append_audit(self, entry: Mapping[str, Any]) -> None:
        self.audit.append(entry)


class _ReceiptSource:
    """:class:`crosschain.receipt.ProvenBlockSource` over the node's store and the
    backend's proven-block cache. For one request (one thread): it remembers the
    evidence entries, anchor entries, proven blocks and config steps it served, so a
    batch reads each at most once even if the shared cache evicts them meanwhile."""

    def __init__(self, backend: RuntimeBackend) -> None:
        self.b = backend
        self._evidence: dict[EvidenceCode, list[EvidenceEntry]] = {}
        self._anchors: dict[int, AnchorEntry] = {}
        self._blocks: dict[tuple[str, int], ProvenBlock] = {}
        self._steps: dict[tuple[str, int], list[ConfigStep]] = {}

    def evidence(self, code: EvidenceCode) -> list[EvidenceEntry]:
        got = self._evidence.get(code)
        if got is None:
            got = self._evidence[code] = read_evidence(self.b._jud_state(), code)
        return list(got)

    def anchor_entry(self, source_height: int) -> AnchorEntry | None:
        got = self._anchors.get(source_height)
        if got is None:
            got = read_anchor_entry(self.b._jud_state(), SOURCE_CHANNEL, source_height)
            if got is not None:
                self._anchors[source_height] = got
        return got

    def block(self, channel: str, height: int) -> tuple[Block, CommitCertificate] | None:
        block = self.b.store.block(channel, height)
        cert = self.b.store.certificate(channel, height)
        return None if block is None or cert is None else (block, cert)

    def proven_block(self, channel: str, height: int) -> ProvenBlock | None:
        key = (channel, height)
        got = self._blocks.get(key)
        if got is None:
            got = self.b.proven_block(channel, height)
            if got is not None:
                self._blocks[key] = got
        return got

    def config_steps(self, channel: str, below: int) -> list[ConfigStep]:
        key = (channel, below)
        got = self._steps.get(key)
        if got is None:
            if channel == SOURCE_CHANNEL:
                got = read_config_steps(self.b._jud_state(), SOURCE_CHANNEL, below)
            else:
                got = self.b._judicial_config_steps(below)
            self._steps[key] = got
        return list(got)
