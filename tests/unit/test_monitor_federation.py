"""The monitor's figures over a federation: flows counted once, per-corridor forwards, deliveries, lag."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from casebridge.monitor import federation, figures, synthetic

START = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
NOW = START + timedelta(minutes=5)


def direction(name: str, figs: figures.Figures) -> federation.Crossing:
    return next(c for c in figs.crossings if c.name == name)


def test_an_event_that_crossed_a_corridor_counts_once() -> None:
    """TH.MSDHS -> {TH.RTP, KH.MOSVY} across two clusters gives the flow figures of one cluster."""
    w = synthetic.Writer(START)
    w.crossing("TH.MSDHS", "referral.sent", ("TH.RTP", "KH.MOSVY"), 0)
    one = synthetic.Writer(START)
    one.event("TH.MSDHS", "referral.sent", ("TH.RTP", "KH.MOSVY"), 0)
    federated, single = figures.compute(w.partitions(), NOW), figures.compute([one.records], NOW)
    assert (federated.events, federated.deliveries) == (single.events, single.deliveries) == (1, 2)
    assert federated.corridors == single.corridors
    assert federated.series == single.series


def test_a_forward_alone_is_no_delivery() -> None:
    """An envelope forwarded to KH but not yet delivered there is no event, delivery or corridor flow."""
    w = synthetic.Writer(START)
    w.crossing("TH.MSDHS", "referral.sent", ("KH.MOSVY",), 0, arrive_s={"KH": None})
    f = figures.compute(w.partitions(), NOW)
    assert (f.events, f.deliveries, f.corridors, f.outstanding) == (0, 0, (), ())
    assert direction("TH->KH", f).pending == 1


def test_receipts_back_through_the_reverse_corridor_close_deliveries() -> None:
    """KH.MOSVY's receipt.delivered, forwarded KH->TH, gives the latency; TH.RTP's is outstanding."""
    w = synthetic.Writer(START)
    event = w.crossing("TH.MSDHS", "referral.sent", ("TH.RTP", "KH.MOSVY"), 0)
    w.crossing("KH.MOSVY", "receipt.delivered", ("TH.MSDHS",), 2, case_ref=event["case_ref"],
               correlation_id=event["event_id"])
    f = figures.compute(w.partitions(), NOW)
    assert (dict(f.receipts), f.latency.count, f.latency.p50_ms) == ({"receipt.delivered": 1}, 1, 2000.0)
    assert [o.recipient for o in f.outstanding] == ["TH.RTP"]
    assert [(c.name, c.forwarded, c.delivered) for c in f.crossings] == [("KH->TH", 1, 1), ("TH->KH", 1, 1)]


def corridor_day() -> synthetic.Writer:
    """TH->KH: four forwards, delivered after 0.5 s and 2 s, one not arrived, one refused at KH."""
    w = synthetic.Writer(START)
    w.crossing("TH.MSDHS", "referral.sent", ("KH.MOSVY",), 0, arrive_s={"KH": 0.5})
    w.crossing("TH.MSDHS", "referral.sent", ("TH.RTP", "KH.MOSVY", "KH.CWCC"), 10, arrive_s={"KH": 2.0})
    w.crossing("TH.MSDHS", "referral.sent", ("KH.MOSVY",), 20, arrive_s={"KH": None})
    w.crossing("TH.MSDHS", "referral.sent", ("KH.MOSVY",), 30, refuse="sender_topic_mismatch")
    return w


def test_corridor_figures_count_forwards_deliveries_refusals_and_pending() -> None:
    """Per direction: forwarded 4, delivered through 2, refused 1, pending 1, the oldest pending 280 s old."""
    c = direction("TH->KH", figures.compute(corridor_day().partitions(), NOW))
    assert (c.source, c.target, c.forwarded, c.delivered, c.refused, c.pending, c.unmatched) == (
        "TH", "KH", 4, 2, 1, 1, 0)
    assert c.oldest_pending_s == 280.0


def test_mirror_lag_runs_from_the_forward_to_the_delivery_at_the_destination() -> None:
    """Lags of 0.5 s and 2 s (decided_at at KH minus decided_at at TH) give p50 500 ms and p99 2000 ms."""
    lag = direction("TH->KH", figures.compute(corridor_day().partitions(), NOW)).mirror_lag
    assert (lag.count, lag.p50_ms, lag.p99_ms, lag.sum_ms) == (2, 500.0, 2000.0, 2500.0)


def test_a_pending_forward_is_delivered_once_its_record_arrives() -> None:
    """The same forward is pending before the destination's delivered record and delivered after it."""
    w = synthetic.Writer(START)
    w.crossing("TH.MSDHS", "referral.sent", ("KH.MOSVY",), 0, arrive_s={"KH": 3.0})
    th_only = [w.audits["TH.cb.audit"]]
    before, after = figures.compute(th_only, NOW), figures.compute(w.partitions(), NOW)
    assert (direction("TH->KH", before).pending, direction("TH->KH", before).delivered) == (1, 0)
    assert (direction("TH->KH", after).pending, direction("TH->KH", after).delivered) == (0, 1)
    assert direction("TH->KH", after).oldest_pending_s is None


def test_repeated_and_mirrored_twice_records_count_once() -> None:
    """A repeated forward, a repeated delivery and a mirrored duplicate refused as a replay add nothing."""
    w = synthetic.Writer(START)
    w.crossing("TH.MSDHS", "referral.sent", ("KH.MOSVY",), 0)
    forward = w.audits["TH.cb.audit"][0]
    arrived = w.audits["KH.cb.audit"][0]
    duplicate = dict(arrived, outcome="quarantined", code="replay", offset=1, envelope_hash=None,
                     recipients=[])
    f = figures.compute([[*w.audits["TH.cb.audit"], dict(forward)], [arrived, dict(arrived), duplicate]], NOW)
    c = direction("TH->KH", f)
    assert (c.forwarded, c.delivered, c.refused, c.pending, f.events) == (1, 1, 0, 0, 1)


def test_a_delivery_with_no_forward_seen_is_unmatched() -> None:
    """Before TH's audit reaches the secretariat, KH's delivery through cb.xb.TH.KH is unmatched."""
    w = synthetic.Writer(START)
    w.crossing("TH.MSDHS", "referral.sent", ("KH.MOSVY",), 0)
    c = direction("TH->KH", figures.compute([w.audits["KH.cb.audit"]], NOW))
    assert (c.forwarded, c.delivered, c.unmatched, c.mirror_lag.count) == (0, 0, 1, 0)


def test_a_forged_corridor_record_is_refused_on_its_corridor() -> None:
    """A record on cb.xb.TH.KH that KH's router refused before it could read a header counts as refused."""
    w = synthetic.Writer(START)
    w.unverifiable("cb.xb.TH.KH", "bad_signature", 5)
    c = direction("TH->KH", figures.compute([w.records], NOW))
    assert (c.forwarded, c.refused, c.pending) == (0, 1, 0)


def test_one_cluster_has_no_crossings() -> None:
    """The single shared cluster writes no forwarded record and reads no corridor topic."""
    assert figures.compute([synthetic.demo_flow(START)], NOW).crossings == ()


@pytest.mark.parametrize(("topic", "way"), [
    ("cb.xb.TH.KH", ("TH", "KH")), ("cb.xb.KH.TH", ("KH", "TH")), ("cb.out.TH.MSDHS", None),
    ("cb.xb.TH", None), ("cb.xb.TH.KH.extra", None), ("cb.xb..KH", None), ("TH.cb.audit", None),
])
def test_corridor_topics_name_their_direction(topic: str, way: tuple[str, str] | None) -> None:
    """cb.xb.<FROM>.<TO> names the direction; any other topic is not a corridor."""
    assert federation.corridor_of(topic) == way
