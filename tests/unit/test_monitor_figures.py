"""The secretariat's figures from audit records: corridors, latency, receipts, SLAs, quarantine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from casebridge.monitor import figures, percentiles, synthetic

START = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
NOW = START + timedelta(minutes=5)


def demo() -> figures.Figures:
    return figures.compute([synthetic.demo_flow(START)], NOW)


def test_corridors_are_unordered_country_pairs_with_domestic_flows() -> None:
    """TH->KH and KH->TH share the KH-TH corridor; TH->TH is domestic; receipts are not on corridors."""
    got = {c.name: (c.events, c.deliveries) for c in demo().corridors}
    assert got == {"KH-TH": (4, 5), "LA-TH": (1, 1), "TH-TH": (1, 1)}


def test_corridor_volume_is_split_by_event_type() -> None:
    """Each corridor counts its events per type."""
    kh_th = next(c for c in demo().corridors if c.name == "KH-TH")
    assert dict(kh_th.by_type) == {"identification.decided": 1, "nationality_verification.requested": 2,
                                   "nationality_verification.responded": 1}


def test_receipts_are_counted_apart() -> None:
    """receipt.* events are counted by type and are not events on a corridor."""
    f = demo()
    assert (dict(f.receipts), f.events, f.deliveries) == ({"receipt.delivered": 5}, 6, 7)


def test_a_router_redelivery_counts_once() -> None:
    """A second delivered record with the same event id (at-least-once) adds nothing."""
    records = synthetic.demo_flow(START)
    again = [*records, dict(records[0], decided_at=START + timedelta(seconds=60))]
    assert figures.compute([again], NOW).corridors == demo().corridors


def test_series_buckets_events_by_creation_time() -> None:
    """Events fall into buckets of the given width, per corridor and type."""
    w = synthetic.Writer(START)
    for at in (0, 30, 61, 125):
        w.event("TH.MSDHS", "referral.sent", ("KH.MOSVY",), at)
    series = figures.compute([w.records], NOW, timedelta(minutes=1)).series
    assert [(start - START, n) for start, _, _, n in series] == [
        (timedelta(0), 2), (timedelta(minutes=1), 1), (timedelta(minutes=2), 1)]


def test_latency_runs_from_the_event_to_its_recipients_delivered_receipt() -> None:
    """Latencies 0.5, 1, 1, 2 and 2 s give p50 1 s and p90 = p99 = 2 s (nearest rank)."""
    latency = demo().latency
    assert (latency.count, latency.p50_ms, latency.p90_ms, latency.p99_ms, latency.sum_ms) == (
        5, 1000.0, 2000.0, 2000.0, 6500.0)


def test_a_receipt_from_someone_else_does_not_acknowledge_a_delivery() -> None:
    """Only the recipient's own receipt.delivered closes its delivery."""
    w = synthetic.Writer(START)
    event = w.event("TH.MSDHS", "referral.sent", ("KH.MOSVY",), 0)
    w.receipt(event, "KH.CWCC", 1)
    f = figures.compute([w.records], NOW)
    assert (f.latency.count, [o.recipient for o in f.outstanding]) == (0, ["KH.MOSVY"])


def test_outstanding_receipts_are_listed_oldest_first_with_their_age() -> None:
    """Deliveries without a receipt are outstanding, with the time since the event was created."""
    got = [(o.event_id, o.recipient, o.age_s) for o in demo().outstanding]
    assert got == [("ev-LA.MLSW-1", "TH.MSDHS", 280.0), ("ev-TH.RTP-1", "TH.MSDHS", 279.0)]


def test_obligations_are_met_overdue_or_open() -> None:
    """A warned obligation answered is met; a breached unanswered one is overdue."""
    got = {o.opened_by: (o.status, o.parties) for o in demo().obligations}
    assert got == {"ev-TH.MSDHS-2": ("overdue", ("KH",)), "ev-TH.MSDHS-3": ("met", ("KH",))}


@pytest.mark.parametrize(("alerts", "answer_at", "status"), [
    (("deadline.approaching",), None, "open"),
    (("deadline.approaching",), 50, "met"),
    (("deadline.approaching", "sla.breached"), None, "overdue"),
    (("deadline.approaching", "sla.breached"), 90, "breached"),
])
def test_obligation_status_table(alerts: tuple[str, ...], answer_at: float | None, status: str) -> None:
    """The status of one obligation from the alerts raised and whether the party answered."""
    w = synthetic.Writer(START)
    opening = w.event("TH.MSDHS", "nationality_verification.requested", ("KH.MOI",), 0)
    for i, kind in enumerate(alerts):
        w.alert(kind, opening, ("KH.MOI", "REG.SECRETARIAT"), 40 + 20 * i)
    if answer_at is not None:
        w.event("KH.MOI", "nationality_verification.responded", ("TH.MSDHS",), answer_at,
                correlation_id=opening["event_id"])
    assert [o.status for o in figures.compute([w.records], NOW).obligations] == [status]


def test_an_answer_from_another_country_does_not_meet_an_obligation() -> None:
    """Only an event from the obligated country answers the opening event."""
    w = synthetic.Writer(START)
    opening = w.event("TH.MSDHS", "nationality_verification.requested", ("KH.MOI",), 0)
    w.alert("deadline.approaching", opening, ("KH.MOI", "REG.SECRETARIAT"), 40)
    w.event("TH.RTP", "referral.sent", ("KH.MOI",), 50, correlation_id=opening["event_id"])
    assert [o.status for o in figures.compute([w.records], NOW).obligations] == ["open"]


def test_quarantine_counts_by_code_once_per_source_position() -> None:
    """Refused records count per reason code; the same position audited twice counts once."""
    records = synthetic.demo_flow(START)
    refused = next(r for r in records if r["code"] == "consent_missing")
    f = figures.compute([[*records, dict(refused)]], NOW)
    assert dict(f.quarantine) == {"bad_signature": 1, "consent_missing": 1}


def test_chain_status_is_part_of_the_figures() -> None:
    """Each sender's chain status comes with the figures."""
    assert {c.sender: c.status for c in demo().chains} == {
        "KH.CWCC": "ok", "KH.MOI": "ok", "KH.MOSVY": "ok", "LA.MLSW": "ok", "TH.MSDHS": "ok", "TH.RTP": "ok"}


@pytest.mark.parametrize(("values", "share", "expected"), [
    ([], 0.5, None), ([7.0], 0.99, 7.0), ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),
    ([float(v) for v in range(1, 101)], 0.9, 90.0), ([float(v) for v in range(1, 101)], 0.99, 99.0),
])
def test_percentile_is_nearest_rank(values: list[float], share: float, expected: float | None) -> None:
    """Nearest-rank percentiles of sorted values."""
    assert percentiles.percentile(values, share) == expected


def test_regional_participants_have_no_country() -> None:
    """REG.* participants are on no corridor; others take their id's country prefix."""
    assert (figures.country_of("REG.SECRETARIAT"), figures.country_of("KH.CWCC")) == (None, "KH")
