"""A small Prometheus registry: counters, gauges and histograms with labels, rendered
in the text exposition format (version 0.0.4).

The node is single-threaded (one asyncio loop), so no locks. Gauges may be given a
callback that is read at scrape time (heights, views, queue sizes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LabelValues = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _labels(names: Sequence[str], values: LabelValues, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


@dataclass
class _Metric:
    name: str
    help: str
    kind: str
    label_names: tuple[str, ...] = ()

    def _key(self, labels: Sequence[str]) -> LabelValues:
        key = tuple(str(v) for v in labels)
        if len(key) != len(self.label_names):
            raise ValueError(f"{self.name}: expected labels {self.label_names}")
        return key

    def samples(self) -> Iterable[str]:  # pragma: no cover - abstract
        return ()


@dataclass
class Counter(_Metric):
    kind: str = "counter"
    _values: dict[LabelValues, float] = field(default_factory=dict)

    def inc(self, amount: float = 1.0, *labels: str) -> None:
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, *labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def set_total(self, total: float, *labels: str) -> None:
        """Mirror an externally kept monotonic count (e.g. the replica's counters)."""
        self._values[self._key(labels)] = float(total)

    def samples(self) -> Iterable[str]:
        for key in sorted(self._values):
            yield f"{self.name}{_labels(self.label_names, key)} {_fmt(self._values[key])}"


@dataclass
class Gauge(_Metric):
    kind: str = "gauge"
    _values: dict[LabelValues, float] = field(default_factory=dict)
    _callbacks: dict[LabelValues, Callable[[], float]] = field(default_factory=dict)

    def set(self, value: float, *labels: str) -> None:
        self._values[self._key(labels)] = float(value)

    def set_function(self, fn: Callable[[], float], *labels: str) -> None:
        self._callbacks[self._key(labels)] = fn

    def value(self, *labels: str) -> float:
        key = self._key(labels)
        cb = self._callbacks.get(key)
        return float(cb()) if cb is not None else self._values.get(key, 0.0)

    def samples(self) -> Iterable[str]:
        keys = sorted(set(self._values) | set(self._callbacks))
        for key in keys:
            yield f"{self.name}{_labels(self.label_names, key)} {_fmt(self.value(*key))}"


@dataclass
class Histogram(_Metric):
    kind: str = "histogram"
    buckets: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
    _counts: dict[LabelValues, list[int]] = field(default_factory=dict)
    _sums: dict[LabelValues, float] = field(default_factory=dict)

    def observe(self, value: float, *labels: str) -> None:
        key = self._key(labels)
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = [0] * (len(self.buckets) + 1)
            self._sums[key] = 0.0
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                counts[i] += 1
        counts[-1] += 1
        self._sums[key] += value

    def count(self, *labels: str) -> int:
        counts = self._counts.get(self._key(labels))
        return counts[-1] if counts else 0

    def samples(self) -> Iterable[str]:
        for key in sorted(self._counts):
            counts = self._counts[key]
            for bound, c in zip((*self.buckets, math.inf), counts, strict=True):
                le = f'le="{_fmt(bound)}"'
                yield f"{self.name}_bucket{_labels(self.label_names, key, le)} {c}"
            yield f"{self.name}_sum{_labels(self.label_names, key)} {_fmt(self._sums[key])}"
            yield f"{self.name}_count{_labels(self.label_names, key)} {counts[-1]}"


class Registry:
    """Holds metrics in registration order and renders them."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def _add(self, metric: _Metric) -> None:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} registered twice")
        self._metrics[metric.name] = metric

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        m = Counter(name, help, label_names=tuple(labels))
        self._add(m)
        return m

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> Gauge:
        m = Gauge(name, help, label_names=tuple(labels))
        self._add(m)
        return m

    def histogram(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] | None = None,
    ) -> Histogram:
        m = Histogram(name, help, label_names=tuple(labels))
        if buckets is not None:
            m.buckets = tuple(sorted(buckets))
        self._add(m)
        return m

    def render(self) -> str:
        out: list[str] = []
        for m in self._metrics.values():
            out.append(f"# HELP {m.name} {_escape(m.help)}")
            out.append(f"# TYPE {m.name} {m.kind}")
            out.extend(m.samples())
        return "\n".join(out) + "\n"


class NodeMetrics:
    """The node's metrics (names documented in docs/node.md)."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.height = r.gauge("wulian_height", "Committed height per channel", ["channel"])
        self.view = r.gauge("wulian_view", "Current consensus view per channel", ["channel"])
        self.view_changes = r.counter(
            "wulian_view_changes_total", "Views entered after the first", ["channel"]
        )
        self.mempool = r.gauge(
            "wulian_mempool_transactions", "Transactions waiting to be ordered", ["channel"]
        )
        self.committed_txs = r.counter(
            "wulian_committed_transactions_total", "Transactions committed", ["channel"]
        )
        self.commit_latency = r.histogram(
            "wulian_commit_latency_seconds",
            "From submission to this node until commit (transactions submitted here)",
            ["channel"],
        )
        self.ready_seconds = r.histogram(
            "wulian_ready_seconds",
            "Time to persist and apply one Ready",
            ["channel"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
        )
        self.driver_seconds = r.counter(
            "wulian_driver_seconds_total",
            "Wall time a channel's driver spent, by stage: step (its replica checking "
            "messages and client transactions), apply (the rules on committed blocks, a "
            "worker thread's turn included), write (synced store writes, likewise), "
            "wait_channel (a block waiting for another channel's height)",
            ["channel", "stage"],
        )
        self.stalled_seconds = r.histogram(
            "wulian_driver_stalled_seconds",
            "How late a channel driver's tick came (the event loop could not run it): "
            "paused on the replica's blame timers",
            ["channel"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.submitted = r.counter(
            "wulian_submitted_transactions_total", "Client transactions by result", ["result"]
        )
        self.rejected_requests = r.counter(
            "wulian_rejected_requests_total", "Client requests refused, by error code", ["code"]
        )
        self.peer_up = r.gauge(
            "wulian_peer_up", "1 if the last frame to the peer went through", ["peer"]
        )
        self.peer_queue = r.gauge("wulian_peer_queue_messages", "Outbound queue length", ["peer"])
        self.frames_sent = r.counter("wulian_peer_frames_sent_total", "Frames sent", ["peer"])
        self.frame_errors = r.counter(
            "wulian_peer_send_errors_total", "Frames that failed to send", ["peer"]
        )
        self.dropped_outbound = r.counter(
            "wulian_peer_dropped_messages_total",
            "Outbound messages dropped because a peer's queue was full",
            ["peer", "kind"],
        )
        self.frames_received = r.counter(
            "wulian_peer_frames_received_total", "Authenticated frames received", ["peer"]
        )
        self.rejected_frames = r.counter(
            "wulian_peer_rejected_frames_total", "Inbound frames refused, by reason", ["reason"]
        )
        self.rejected_messages = r.counter(
            "wulian_rejected_messages_total",
            "Consensus messages dropped by the replica or the node, by reason",
            ["channel", "reason"],
        )
        self.timeouts = r.counter(
            "wulian_view_change_timeouts_total",
            "View changes this node started, by the timer that expired: progress (a "
            "block in flight took too long), censorship (a transaction waited too long) "
            "or primary_unreachable; prepared_grace counts progress timeouts that waited "
            "once more instead (the next block was prepared: only a COMMIT was late)",
            ["channel", "timer"],
        )
        self.catchup = r.counter(
            "wulian_catchup_total",
            "Catch-up by event: fetches (requests sent), blocks (committed from answers), "
            "timeouts (requests unanswered in time, asked again elsewhere), "
            "bad_certificate (answers refused), served_blocks (blocks sent to others), "
            "delta_blocks (blocks taken from their proven state deltas, not applied), "
            "delta_refused (answers whose state deltas did not match a certified root)",
            ["channel", "event"],
        )
        self.loop_lag = r.histogram(
            "wulian_event_loop_lag_seconds",
            "How late a 100 ms timer fires on the node's event loop (CPU starvation)",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
        )
        self.evidence = r.counter(
            "wulian_misbehaviour_total", "Protocol violations reported by the replica", ["channel"]
        )
        self.signature_memo_hits = r.counter(
            "wulian_signature_memo_hits_total",
            "Signature verifications saved by the node's memo of verified signatures "
            "(node/signatures.py): votes checked again inside certificates",
        )

    def render(self) -> str:
        return self.registry.render()
