from __future__ import annotations

from node.metrics import NodeMetrics, Registry


def test_exposition_format() -> None:
    r = Registry()
    c = r.counter("x_total", "things", ["reason"])
    g = r.gauge("y", 'a "gauge"', ["ch"])
    h = r.histogram("lat_seconds", "latency", ["ch"], buckets=(0.1, 1))
    c.inc(2, 'we"ird')
    g.set_function(lambda: 7, "sup")
    for v in (0.05, 0.5, 5):
        h.observe(v, "sup")
    text = r.render()
    assert "# TYPE x_total counter" in text
    assert 'x_total{reason="we\\"ird"} 2' in text
    assert 'y{ch="sup"} 7' in text
    assert 'lat_seconds_bucket{ch="sup",le="0.1"} 1' in text
    assert 'lat_seconds_bucket{ch="sup",le="1"} 2' in text
    assert 'lat_seconds_bucket{ch="sup",le="+Inf"} 3' in text
    assert 'lat_seconds_count{ch="sup"} 3' in text
    assert 'lat_seconds_sum{ch="sup"} 5.55' in text
    assert text.endswith("\n")


def test_node_metrics_render() -> None:
    m = NodeMetrics()
    m.height.set(3, "supervision")
    m.rejected_frames.inc(1, "signature")
    text = m.render()
    assert 'wulian_height{channel="supervision"} 3' in text
    assert 'wulian_peer_rejected_frames_total{reason="signature"} 1' in text


def test_the_view_log_line_names_only_the_timers_that_started_the_view_change() -> None:
    from node.channel import view_change_cause

    assert view_change_cause(["progress"]) == " after this node's progress timeout"
    assert view_change_cause({"prepared_grace": 1, "progress": 1}) == (
        " after this node's progress timeout"
    )
    # waiting once more started nothing: the node joined the others' view change
    assert view_change_cause(["prepared_grace"]) == ""
    assert view_change_cause([]) == ""


def test_the_replica_counters_are_mirrored_by_kind() -> None:
    from types import SimpleNamespace

    from node.consensus_port import mirror_counters

    m = NodeMetrics()
    replica = SimpleNamespace(
        metrics={
            "dropped.bad_signature": 2,
            "timeouts.progress": 1,
            "catchup.timeouts": 3,
            "catchup.bad_certificate": 1,
            "committed.blocks": 9,
        }
    )
    mirror_counters(replica, m, "supervision")  # type: ignore[arg-type]
    text = m.render()
    assert 'wulian_rejected_messages_total{channel="supervision",reason="bad_signature"} 2' in text
    assert 'wulian_view_change_timeouts_total{channel="supervision",timer="progress"} 1' in text
    assert 'wulian_catchup_total{channel="supervision",event="timeouts"} 3' in text
    assert 'wulian_catchup_total{channel="supervision",event="bad_certificate"} 1' in text
    assert " 9\n" not in text  # committed.* has no metric of its own
    replica.metrics["catchup.timeouts"] = 5  # totals are set, not added
    mirror_counters(replica, m, "supervision")  # type: ignore[arg-type]
    assert 'wulian_catchup_total{channel="supervision",event="timeouts"} 5' in m.render()
