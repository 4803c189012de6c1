"""What a rule knows besides the state and the transaction.

* :class:`NetworkParams` — business parameters (legal rate cap, multi-lender
  threshold, reporting bounds…), read from the genesis channel params with defaults.
* :class:`CrossChannelReader` — committed data of the *other* channels, supplied by the
  node. Rules read it only through :func:`committed_facts`, which (1) raises
  :class:`NotYetCommitted` when the named height is above what this node has applied
  and (2) restricts reads to the append-only, height-stamped fact prefixes, so that
  "the state of X as of height H" is the same on every validator whatever its lag.
* :class:`BlockContext` / :class:`TxContext` — height, block time, the transaction's
  position and sender, the params and the reader.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final, Protocol

from channels.errors import NotYetCommitted
from channels.state import StateReader
from ledger.errors import ConfigError

DAY_MS: Final = 86_400_000


@dataclass(frozen=True)
class NetworkParams:
    """Network-wide business parameters (integers only; amounts in cents, rates in bp).

    Defaults are conservative placeholders; a network sets real values in its genesis
    (``channels.<name>.params``).
    """

    #: Annual rate above which a contract raises a ``rate_above_cap`` alert (2400 = 24%).
    legal_rate_cap_bp: int = 2400
    #: A borrower with open loans at MORE than this many lenders raises ``multi_lender``.
    multi_lender_threshold: int = 3
    #: An event reported more than this long after its event time is "late".
    late_report_bound_ms: int = DAY_MS
    #: An admitted lender silent for longer than this raises ``reporting_gap``.
    reporting_gap_ms: int = 3 * DAY_MS
    #: One borrower's share of a lender's outstanding book above this raises an alert.
    concentration_share_bp: int = 1000
    #: …but only for books of at least this size (cents).
    concentration_min_book_cents: int = 10_000_000
    #: Overdue ratio (by outstanding) rising by at least this much within a window.
    overdue_jump_bp: int = 500
    #: …with at least this many overdue loans at the end of the window.
    overdue_min_loans: int = 3
    #: How far an event time may lie after the block time (clock skew), ms.
    event_time_skew_ms: int = 300_000
    #: A transaction's own time must be within this much before the block time, ms.
    tx_max_age_ms: int = DAY_MS
    #: … and at most this much after it, ms.
    tx_max_skew_ms: int = 300_000
    #: Credit queries one lender may make per UTC day (enumeration guard).
    credit_query_daily_limit: int = 10_000
    #: Window for the "queries by other lenders" count in a credit answer, ms.
    credit_query_window_ms: int = 30 * DAY_MS
    #: Most supervision facts one ``credit_sync`` may consume.
    credit_sync_max_facts: int = 50_000
    #: A supervision height named by the service channel may be at most this old, ms.
    source_max_age_ms: int = DAY_MS

    @staticmethod
    def from_mapping(
        params: Mapping[str, Any], *, path: str = "genesis", strict: bool = True
    ) -> NetworkParams:
        """Build from a channel's genesis ``params``; unset names keep their defaults.

        Raises ConfigError for a known name whose value is not a non-negative integer,
        and (``strict``) for an unknown name. Genesis params also hold other layers'
        settings (``max_block_txs``…): pass ``strict=False`` to skip those.
        """
        known = {f.name for f in fields(NetworkParams)}
        values: dict[str, int] = {}
        for name, value in params.items():
            if name not in known:
                if strict:
                    raise ConfigError(path, f"params.{name}", "unknown channel parameter")
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(path, f"params.{name}", "expected a non-negative integer")
            values[name] = value
        return NetworkParams(**values)

    def to_mapping(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


DEFAULT_PARAMS: Final = NetworkParams()


class CrossChannelReader(Protocol):
    """Committed data of other channels, as applied on this node.

    ``committed_height(ch)`` is the highest height of ``ch`` whose writes are applied
    locally; ``facts(ch)`` reads that channel's applied state. Rules never call these
    directly: they use :func:`committed_facts`.
    """

    def committed_height(self, channel: str) -> int: ...

    def facts(self, channel: str) -> StateReader: ...


class NoCrossChannel:
    """A reader for contexts that must not read other channels (height 0 everywhere)."""

    def committed_height(self, channel: str) -> int:
        return 0

    def facts(self, channel: str) -> StateReader:
        raise LookupError(f"no cross-channel reads available for {channel}")


NO_CROSS_CHANNEL: Final = NoCrossChannel()


#: Key prefixes of each channel that hold append-only, height-stamped facts, the only
#: keys another channel's rules may read.
FACT_PREFIXES: Final[Mapping[str, tuple[bytes, ...]]] = {
    "supervision": (
        b"meta/block/",
        b"sup/ev/",
        b"sup/hx/",
        b"sup/bx/",
        b"sup/lx/",
        b"sup/lact/",
        b"sup/lagg/",
        b"sup/lenderlog/",
    ),
    # the court chain's accepted anchors (crosschain.anchor_rules.anchor_prefix): one
    # write-once entry per anchored block, naming the judicial height that wrote it;
    # the supervision channel's acknowledgement rule reads them
    "judicial": (b"xc/anchor/",),
}


class FactsOnly:
    """A :class:`StateReader` refusing keys outside ``prefixes`` (a rule bug if hit)."""

    def __init__(self, inner: StateReader, channel: str, prefixes: tuple[bytes, ...]) -> None:
        self._inner = inner
        self._channel = channel
        self._prefixes = prefixes

    def _check(self, key: bytes) -> None:
        if not key.startswith(self._prefixes):
            raise AssertionError(
                f"rule read {key!r} of {self._channel}: not an append-only fact key"
            )

    def get(self, key: bytes) -> bytes | None:
        self._check(key)
        return self._inner.get(key)

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        self._check(prefix)
        return self._inner.iter_prefix(prefix)

    def last_below(self, prefix: bytes, stop: bytes) -> tuple[bytes, bytes] | None:
        self._check(prefix)
        return self._inner.last_below(prefix, stop)


def committed_facts(cross: CrossChannelReader, channel: str, height: int) -> StateReader:
    """Facts of ``channel`` for reading "as of ``height``".

    Raises :class:`NotYetCommitted` if this node has not applied ``height`` yet. The
    caller must still filter by height (the facts may extend beyond ``height``).
    """
    local = cross.committed_height(channel)
    if height > local:
        raise NotYetCommitted(channel, height, local)
    return FactsOnly(cross.facts(channel), channel, FACT_PREFIXES.get(channel, ()))


@dataclass(frozen=True)
class BlockContext:
    """Per-block inputs of :func:`channels.base.apply_block`."""

    channel: str
    height: int
    block_time_ms: int
    params: NetworkParams = DEFAULT_PARAMS
    cross: CrossChannelReader = NO_CROSS_CHANNEL


@dataclass(frozen=True)
class TxContext:
    """Per-transaction inputs of a rule."""

    channel: str
    height: int
    block_time_ms: int
    tx_index: int
    tx_id: bytes
    sender: str
    sender_role: str | None
    sender_key: bytes
    params: NetworkParams = DEFAULT_PARAMS
    cross: CrossChannelReader = NO_CROSS_CHANNEL
