"""The lender commands of the ``wulian`` CLI, over the SDK.

``register(subparsers)`` adds them to the ``wulian`` parser (node/cli.py mounts this
module); ``python -m clients.cli`` runs them alone. Commands::

    wulian submit   [--channel CH] FILE.json      report loan events (single or batch)
    wulian status   TXID [--wait]                 a transaction's status
    wulian evidence TXID --out RECEIPT.json       wait for the evidence code, save the receipt
    wulian verify   --receipt R.json --data RECORD.json    offline check (no network)
    wulian credit-check BORROWER_REF              multi-lender credit check
    wulian recover                                resubmit stored, unfinished transactions

Every command takes the connection options (``--network DIR`` for a ``wulian up``
directory, or ``--genesis``/``--key``/``--node``/``--store``) and ``--json`` for
machine-readable output on stdout. Progress goes to stderr. Exit status: 0 success;
1 an error or a refused/invalid transaction (one line on stderr); 2 usage; 3 (status)
not final yet.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from clients._config import settings_from_network_dir
from clients._core import json_to_wire
from clients._errors import RecordStoreError
from clients._models import TxStatus, jsonable
from clients._ops import record_from_document, verify_offline
from clients._pseudonym import load_pseudonym_key_file
from clients._records import LoanEvent, PreparedTransaction, Record
from clients._sync import Client
from crosschain.receipt import TrustRoot
from ledger.errors import ConfigError, LedgerError, SchemaError
from ledger.genesis import load_genesis

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOT_FINAL = 3
DEFAULT_PER_TX = 100
MAX_FILE_BYTES = 256 * 1024 * 1024

# ---------------------------------------------------------------------------- options


def _connection_options(p: argparse.ArgumentParser, *, network_only: bool = False) -> None:
    g = p.add_argument_group("connection")
    g.add_argument(
        "--network",
        metavar="DIR",
        help="a `wulian up` data directory: genesis, node URLs, the lender's key and record "
        "store are read from it",
    )
    g.add_argument("--genesis", metavar="FILE", help="the network genesis file")
    if network_only:
        return
    g.add_argument("--org", help="lender org id (with --network: which lender)")
    g.add_argument("--key", metavar="FILE", help="the lender's key file")
    g.add_argument(
        "--node", metavar="URL", action="append", help="node URL (repeat; default: genesis nodes)"
    )
    g.add_argument("--store", metavar="DIR", help="the lender's record store directory")
    g.add_argument("--pseudonym-key", metavar="FILE", help="the bureau's pseudonym key file")
    g.add_argument(
        "--ca-file",
        metavar="FILE",
        help="the network CA certificate for https:// nodes (with --network: DIR/tls/ca.crt)",
    )
    g.add_argument(
        "--timeout", type=float, metavar="S", help="how long to wait for commit / evidence"
    )


def _json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the lender commands to the ``wulian`` parser."""
    p = sub.add_parser(
        "submit",
        help="report loan events from a JSON file (returns once committed)",
        description="Report loan events: FILE.json holds one event object, a list of "
        'events, or {"events": [...]}; large files are split into transactions of '
        "--per-tx events (each transaction atomic) and sent in batches with failover. "
        'Raw transactions: {"type": T, "payload": {...}} or {"transactions": [...]}.',
    )
    p.add_argument("file", metavar="FILE.json", help="events ('-' for stdin)")
    p.add_argument("--channel", default="supervision", help="channel (default: supervision)")
    p.add_argument(
        "--per-tx",
        type=int,
        default=DEFAULT_PER_TX,
        metavar="N",
        help=f"events per transaction (atomic together; default {DEFAULT_PER_TX}, max 1000)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _connection_options(p)
    _json_option(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="show a transaction's status")
    p.add_argument("tx_id", metavar="TXID")
    p.add_argument("--channel", default="supervision")
    p.add_argument("--wait", action="store_true", help="wait until it is committed")
    _connection_options(p)
    _json_option(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "evidence",
        help="wait for a record's evidence code and save its receipt",
        description="Wait until record INDEX of a reported transaction is anchored on the "
        "court chain, fetch its receipt, verify it offline and save it. With "
        "--record-out, also save the record (bytes and salt) for `wulian verify --data`.",
    )
    p.add_argument("tx_id", metavar="TXID")
    p.add_argument("--index", type=int, default=0, help="record index in the transaction")
    p.add_argument("--out", required=True, metavar="RECEIPT.json")
    p.add_argument("--record-out", metavar="RECORD.json", help="also write the record file")
    _connection_options(p)
    _json_option(p)
    p.set_defaults(func=cmd_evidence)

    p = sub.add_parser(
        "verify",
        help="check a receipt (and the record) offline",
        description="Offline verification, no network: exits 0 only if every check passes; "
        "otherwise prints one line naming the failing check and exits 1. The trust root is "
        "the genesis (--genesis FILE or --network DIR).",
    )
    p.add_argument("--receipt", required=True, metavar="R.json")
    p.add_argument(
        "--data",
        metavar="RECORD.json",
        help="the record: a wulian-record/1 file (from `wulian evidence --record-out`), or "
        "the raw record bytes with --salt",
    )
    p.add_argument("--salt", metavar="HEX", help="the record's salt (with raw --data bytes)")
    _connection_options(p, network_only=True)
    _json_option(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("credit-check", help="multi-lender credit check of a borrower")
    p.add_argument("borrower_ref", metavar="BORROWER_REF", help="64 hex digits")
    p.add_argument(
        "--purpose",
        default="loan_application",
        choices=("loan_application", "post_loan_management", "guarantee_review"),
    )
    _connection_options(p)
    _json_option(p)
    p.set_defaults(func=cmd_credit_check)

    p = sub.add_parser(
        "recover", help="resubmit stored transactions that were never confirmed (after a crash)"
    )
    p.add_argument("--no-progress", action="store_true")
    _connection_options(p)
    _json_option(p)
    p.set_defaults(func=cmd_recover)


# ---------------------------------------------------------------------------- helpers


def _client(args: argparse.Namespace) -> Client:
    """The client the connection options describe, its record store (if any)
    checked with ``quick_check``. Raises ConfigError, RecordStoreError."""
    client = _open_client(args)
    if client.store is not None:
        try:
            client.store.check_integrity()
        except RecordStoreError:
            client.close()
            raise
    return client


def _open_client(args: argparse.Namespace) -> Client:
    options: dict[str, Any] = {}
    timeout = getattr(args, "timeout", None)
    if timeout is not None:
        if timeout <= 0:
            raise ConfigError("--timeout", "", "must be positive")
        options.update(commit_timeout=timeout, evidence_timeout=timeout)
    if getattr(args, "ca_file", None):
        options["ca_file"] = args.ca_file
    if args.network:
        settings = settings_from_network_dir(
            args.network, org=args.org, nodes=args.node, store=args.store, **options
        )
        if args.pseudonym_key:
            settings = replace(settings, pseudonym=load_pseudonym_key_file(args.pseudonym_key))
        return Client(genesis=settings.genesis, settings=settings)
    if not args.genesis or not args.key:
        raise ConfigError("wulian", "--network", "give --network DIR, or --genesis and --key")
    return Client(
        args.node,
        genesis=args.genesis,
        key_file=args.key,
        org=args.org,
        store=args.store,
        pseudonym_key=args.pseudonym_key,
        **options,
    )


def _read_json(path: str, what: str) -> Any:
    try:
        if path == "-":
            text = sys.stdin.read(MAX_FILE_BYTES + 1)
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read(MAX_FILE_BYTES + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "", f"cannot read {what} ({exc})") from None
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(path, "", f"{what} larger than {MAX_FILE_BYTES} bytes")
    try:
        return json.loads(text, parse_float=_no_float)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(path, "", f"not valid JSON ({exc})") from None


def _no_float(text: str) -> Any:
    raise ValueError(f"{text}: amounts and rates are integers (cents, basis points)")


def _write_file(path: str, data: bytes) -> None:
    """Write ``path`` whole or not at all, readable by its owner only (mode 0600: a
    record file holds the record's bytes and salt): a fresh temp file beside it
    (``O_EXCL | O_NOFOLLOW``: never an existing file or symlink), fsync, rename.
    Raises ConfigError."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, p)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
    except OSError as exc:
        raise ConfigError(path, "", f"cannot write ({exc.strerror})") from None


def _emit(args: argparse.Namespace, doc: Any, text: str) -> None:
    if args.json:
        print(json.dumps(jsonable(doc), indent=2, sort_keys=True))
    else:
        print(text)


def _fail(message: str) -> None:
    print(f"wulian: error: {message}", file=sys.stderr)


def _time(ms: int | None) -> str:
    if ms is None:
        return "?"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _short(tx_id: bytes) -> str:
    return tx_id.hex()


class Progress:
    """A plain-text progress bar on stderr (a line per 10% when stderr is not a tty)."""

    def __init__(self, total: int, what: str, stream: TextIO | None = None) -> None:
        self.total = total
        self.what = what
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self._last_decile = -1

    def __call__(self, done: int, total: int) -> None:
        frac = done / total if total else 1.0
        rate = done / max(1e-6, time.monotonic() - self.start)
        if self.tty:
            bar = "#" * int(frac * 30)
            self.stream.write(
                f"\r[{bar:<30}] {done}/{total} {self.what} ({frac:4.0%}, {rate:.0f}/s) "
            )
            if done >= total:
                self.stream.write("\n")
        else:
            decile = int(frac * 10)
            if decile != self._last_decile:
                self._last_decile = decile
                self.stream.write(f"progress: {done}/{total} {self.what} ({frac:.0%})\n")
        self.stream.flush()


def _status_line(st: TxStatus) -> str:
    tx = _short(st.tx_id)
    if st.status == "committed":
        o = st.outcome
        verdict = "VALID" if st.valid else f"INVALID ({o.code}: {o.message})" if o else "?"
        return f"committed {tx} at height {st.height} index {st.index}: {verdict}"
    if st.status == "rejected":
        return f"rejected {tx}: {st.reason}"
    return f"{st.status} {tx}" + (f" ({st.reason})" if st.reason else "")


# ---------------------------------------------------------------------------- submit


def parse_submission(
    doc: Any, *, client: Client, channel: str, per_tx: int
) -> tuple[list[PreparedTransaction], int]:
    """Turn a submission file into prepared (signed, stored) transactions.
    Returns ``(transactions, number of events)``. Raises SchemaError."""
    if not 1 <= per_tx <= 1000:
        raise SchemaError("--per-tx must be between 1 and 1000")
    if isinstance(doc, dict) and ("type" in doc or "transactions" in doc):
        raws = doc.get("transactions", [doc]) if "transactions" in doc else [doc]
        if not isinstance(raws, list) or not raws:
            raise SchemaError("'transactions' must be a non-empty list")
        unsigned = []
        for i, raw in enumerate(raws):
            if not isinstance(raw, dict) or set(raw) != {"type", "payload"}:
                raise SchemaError(f"transactions[{i}]: expected {{'type', 'payload'}}")
            payload = json_to_wire(raw["payload"])
            if not isinstance(payload, dict) or not isinstance(raw["type"], str):
                raise SchemaError(f"transactions[{i}]: payload must be an object")
            unsigned.append(client.build(channel, raw["type"], payload))
        return client.prepare_many(unsigned), 0
    if channel != "supervision":
        raise SchemaError("loan events go to the supervision channel")
    if isinstance(doc, dict) and "events" in doc:
        if set(doc) != {"events"}:
            raise SchemaError("a batch file is {'events': [...]}")
        items = doc["events"]
    elif isinstance(doc, list):
        items = doc
    else:
        items = [doc]
    if not isinstance(items, list) or not items:
        raise SchemaError("no events in the file")
    pseudonym = client.settings.pseudonym
    events = [
        LoanEvent.from_json(item, pseudonym=pseudonym, where=f"events[{i}]")
        for i, item in enumerate(items)
    ]
    groups: list[LoanEvent | list[LoanEvent]] = []
    for k in range(0, len(events), per_tx):
        chunk = events[k : k + per_tx]
        groups.append(chunk[0] if len(chunk) == 1 else chunk)
    return client.prepare_reports(groups), len(events)


def cmd_submit(args: argparse.Namespace) -> int:
    doc = _read_json(args.file, "submission file")
    with _client(args) as client:
        prepared, n_events = parse_submission(
            doc, client=client, channel=args.channel, per_tx=args.per_tx
        )
        progress: Callable[[int, int], None] | None = None
        if len(prepared) > 1 and not args.no_progress:
            progress = Progress(len(prepared), "transactions")
        if len(prepared) == 1:
            statuses = [client.submit(prepared[0], check=False)]
        else:
            statuses = client.submit_many(prepared, progress=progress)
    bad = [s for s in statuses if not s.valid]
    summary = {
        "transactions": len(statuses),
        "events": n_events,
        "committed": sum(1 for s in statuses if s.valid),
        "invalid": sum(1 for s in statuses if s.committed and not s.valid),
        "rejected": sum(1 for s in statuses if s.status == "rejected"),
        "not_committed": sum(1 for s in statuses if s.status in ("pending", "unknown")),
    }
    if args.json:
        _emit(args, {"summary": summary, "results": [s.to_json() for s in statuses]}, "")
    elif len(statuses) == 1:
        print(_status_line(statuses[0]))
    else:
        print(
            f"{summary['transactions']} transactions ({n_events} events): "
            f"{summary['committed']} committed, {summary['invalid']} invalid, "
            f"{summary['rejected']} rejected, {summary['not_committed']} not committed"
        )
    for s in bad:
        _fail(_status_line(s))
    return EXIT_OK if not bad else EXIT_FAILED


# ---------------------------------------------------------------------------- status


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.wait:
            st = client.wait(args.tx_id, args.channel, check=False)
        else:
            st = client.status(args.tx_id, args.channel)
    _emit(args, st.to_json(), _status_line(st))
    if st.valid:
        return EXIT_OK
    if st.status in ("pending", "unknown"):
        return EXIT_NOT_FINAL
    return EXIT_FAILED


# ---------------------------------------------------------------------------- evidence


def cmd_evidence(args: argparse.Namespace) -> int:
    with _client(args) as client:
        ev = client.evidence(args.tx_id, index=args.index)
        _write_file(args.out, (json.dumps(ev.receipt, indent=2, sort_keys=True) + "\n").encode())
        if args.record_out:
            doc = ev.record_document()
            _write_file(args.record_out, (json.dumps(doc, indent=2) + "\n").encode())
    r = ev.report
    _emit(
        args,
        {"evidence_code": ev.code, "tx_id": ev.tx_id.hex(), "index": ev.index,
         "receipt": args.out, "record": args.record_out, "report": r.to_json()},
        f"evidence code {ev.code}: anchored at judicial height {r.judicial_height} "
        f"({_time(r.anchored_time_ms)}); receipt written to {args.out}",
    )  # fmt: skip
    return EXIT_OK


# ---------------------------------------------------------------------------- verify


def _trust(args: argparse.Namespace) -> TrustRoot:
    if args.network:
        genesis = load_genesis(Path(args.network) / "genesis.json")
    elif args.genesis:
        genesis = load_genesis(args.genesis)
    else:
        raise ConfigError("wulian verify", "--genesis", "give --genesis FILE or --network DIR")
    return TrustRoot.from_genesis(genesis)


def _record_arg(args: argparse.Namespace) -> Record | None:
    if args.data is None:
        if args.salt is not None:
            raise ConfigError("wulian verify", "--salt", "needs --data")
        return None
    try:
        raw = Path(args.data).read_bytes()
    except OSError as exc:
        raise ConfigError(args.data, "", f"cannot read ({exc.strerror})") from None
    if args.salt is not None:
        try:
            salt = bytes.fromhex(args.salt)
        except ValueError:
            raise ConfigError("--salt", "", "not hexadecimal") from None
        if len(salt) != 32:
            raise ConfigError("--salt", "", "expected 32 bytes (64 hex digits)")
        return Record(raw, salt)
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(
            args.data, "", "not a wulian-record/1 file (give --salt for raw bytes)"
        ) from None
    return record_from_document(doc, args.data)


def cmd_verify(args: argparse.Namespace) -> int:
    receipt = _read_json(args.receipt, "receipt")
    record = _record_arg(args)
    report = verify_offline(receipt, record, _trust(args))
    passed = report.ok and (record is None or report.data_verified)
    if args.json:
        _emit(args, report.to_json(), "")
    if passed:
        if not args.json:
            what = "receipt and record verified" if record else "receipt verified (no record given)"
            print(
                f"{what}: evidence code {report.evidence_code}; committed at supervision height "
                f"{report.supervision_height} ({_time(report.supervision_time_ms)}); anchored at "
                f"judicial height {report.judicial_height} ({_time(report.anchored_time_ms)})"
            )
        return EXIT_OK
    failed = report.failures[0] if report.failures else None
    if failed is not None:
        _fail(f"verification failed: {failed.name}: {failed.reason} ({failed.detail})")
    else:
        skipped = next(c for c in report.checks if c.status != "pass")
        _fail(f"verification failed: {skipped.name}: not checked ({skipped.detail})")
    return EXIT_FAILED


# ---------------------------------------------------------------------------- credit


def cmd_credit_check(args: argparse.Namespace) -> int:
    try:
        ref = bytes.fromhex(args.borrower_ref)
    except ValueError:
        ref = b""
    if len(ref) != 32:
        raise SchemaError("BORROWER_REF must be 64 hex digits (a borrower reference, not an ID)")
    with _client(args) as client:
        report = client.credit_check(ref, purpose=args.purpose)
    a = report.answer
    _emit(
        args,
        report.to_json(),
        f"borrower {args.borrower_ref[:16]}…: {a.get('lenders_with_open_loans', 0)} lender(s) "
        f"with open loans ({a.get('other_lenders_with_open_loans', 0)} other than you), "
        f"{a.get('open_loans', 0)} open loan(s), {a.get('overdue_loans', 0)} overdue, "
        f"outstanding {a.get('total_outstanding_cents', 0) / 100:.2f}; "
        f"{a.get('recent_queries_by_others', 0)} recent queries by other lenders",
    )
    return EXIT_OK


# ---------------------------------------------------------------------------- recover


def cmd_recover(args: argparse.Namespace) -> int:
    with _client(args) as client:
        pending = client.pending()
        progress = (
            Progress(len(pending), "transactions")
            if len(pending) > 1 and not args.no_progress
            else None
        )
        statuses = client.recover(progress=progress)
    bad = [s for s in statuses if not s.valid]
    _emit(
        args,
        {"resubmitted": len(statuses), "results": [s.to_json() for s in statuses]},
        f"resubmitted {len(statuses)} stored transaction(s): {len(statuses) - len(bad)} committed",
    )
    for s in bad:
        _fail(_status_line(s))
    return EXIT_OK if not bad else EXIT_FAILED


# ---------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the lender commands alone (``python -m clients.cli``); same conventions as
    ``wulian``: a LedgerError is one line on stderr and exit 1."""
    parser = argparse.ArgumentParser(prog="wulian", description="wulian lender commands")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    register(sub)
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except LedgerError as exc:
        _fail(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
