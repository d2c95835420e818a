"""The monitor's HTTP handlers over figures from synthetic audit records (aiohttp's test client)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from casebridge.monitor import figures, synthetic, view, web

START = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
RECORDS = synthetic.demo_flow(START)
SAMPLE = re.compile(r'^([a-z_]+)(?:\{((?:[a-z_]+="(?:[^"\\]|\\.)*",?)*)\})? (-?[0-9.e+]+)$')
ALLOWED_KEYS = {
    "generated_at", "countries", "totals", "records", "events", "deliveries", "receipts", "quarantined",
    "receipts_outstanding", "corridors", "corridor", "a", "b", "domestic", "by_type", "series", "start",
    "event_type", "latency", "count", "p50_ms", "p90_ms", "p99_ms", "outstanding", "oldest_s", "items",
    "event_id", "case_ref", "sender", "recipient", "age_s", "sla", "agreement_id", "opened", "open", "met",
    "breached", "overdue", "opened_by", "parties", "status", "warned_at", "breached_at", "answered_at",
    "overdue_s", "quarantine", "chains", "partition", "links", "last_sequence", "findings", "kind",
    "sequence", "position", "detail", "forwarded", "crossings", "from", "to", "delivered", "refused",
    "pending", "unmatched", "mirror_lag", "oldest_pending_s",
}


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    figs = figures.compute([RECORDS], START + timedelta(minutes=5))
    async with TestClient(TestServer(web.http_app(lambda: figs))) as test_client:
        yield test_client


def keys_of(doc: Any) -> set[str]:
    if isinstance(doc, dict):
        return set(doc) | {k for v in doc.values() for k in keys_of(v)}
    if isinstance(doc, list):
        return {k for v in doc for k in keys_of(v)}
    return set()


def parse_metrics(text: str) -> dict[tuple[str, str], float]:
    """Every sample of a Prometheus text page; fails on a line that is neither comment nor sample."""
    samples: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample: {line!r}"
        samples[(match[1], match[2] or "")] = float(match[3])
    return samples


async def test_the_json_api_serves_the_figures(client: TestClient[Any, Any]) -> None:
    """/api/figures has the corridor counts, latency, outstanding receipts, SLA and quarantine figures."""
    response = await client.get("/api/figures")
    assert response.status == 200
    doc = await response.json()
    assert {c["corridor"]: c["events"] for c in doc["corridors"]} == {"KH-TH": 4, "LA-TH": 1, "TH-TH": 1}
    assert doc["latency"]["p50_ms"] == 1000.0
    assert doc["outstanding"]["count"] == 2
    assert doc["sla"] == [{"agreement_id": "MOU-KH-TH", "opened": 2, "open": 0, "met": 1, "breached": 0,
                           "overdue": 1}]
    assert [o["opened_by"] for o in doc["overdue"]] == ["ev-TH.MSDHS-2"]
    assert doc["quarantine"] == {"bad_signature": 1, "consent_missing": 1}


async def test_the_json_api_carries_only_metadata_fields(client: TestClient[Any, Any]) -> None:
    """Every key in the JSON document is a metadata field named in an allowlist."""
    doc = await (await client.get("/api/figures")).json()
    assert keys_of(doc) - ALLOWED_KEYS - set(doc["quarantine"]) - {"receipt.delivered"} - {
        t for c in doc["corridors"] for t in c["by_type"]} == set()


async def test_metrics_parse_as_prometheus_text(client: TestClient[Any, Any]) -> None:
    """/metrics is Prometheus text 0.0.4 with the same figures as the JSON API."""
    response = await client.get("/metrics")
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = parse_metrics(await response.text())
    corridor = 'corridor="KH-TH",event_type="nationality_verification.requested"'
    assert samples[("casebridge_corridor_events_total", corridor)] == 2
    assert samples[("casebridge_delivery_latency_seconds", 'quantile="0.5"')] == 1.0
    assert samples[("casebridge_receipts_outstanding", "")] == 2
    assert samples[("casebridge_quarantined_total", 'code="consent_missing"')] == 1
    assert samples[("casebridge_sla_obligations", 'agreement_id="MOU-KH-TH",status="overdue"')] == 1
    assert samples[("casebridge_chain_ok", 'sender="TH.MSDHS",partition="0"')] == 1


async def test_the_page_is_self_contained_and_holds_no_case_content(client: TestClient[Any, Any]) -> None:
    """/ loads only same-origin assets under a strict CSP and names no case, event or person."""
    response = await client.get("/")
    html = await response.text()
    assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert re.findall(r'(?:src|href)="([^"]+)"', html) == ["monitor.css", "monitor.js"]
    for record in RECORDS:
        for value in (record["case_ref"], record["event_id"]):
            assert value is None or value not in html


@pytest.mark.parametrize(("path", "kind", "marker"), [
    ("/monitor.js", "text/javascript", "api/figures"), ("/monitor.css", "text/css", "#flows"),
])
async def test_the_page_assets_ship_in_the_package(client: TestClient[Any, Any], path: str, kind: str,
                                                    marker: str) -> None:
    """The script and style sheet are served from package data, with no remote URL in them."""
    response = await client.get(path)
    text = await response.text()
    assert (response.status, response.content_type, marker in text) == (200, kind, True)
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text)


def test_label_values_are_escaped() -> None:
    """Quotes, backslashes and newlines in a label value are escaped as the text format requires."""
    assert view.sample("m", {"code": 'a"b\\c\nd'}, 1) == 'm{code="a\\"b\\\\c\\nd"} 1'


def test_the_text_summary_fits_one_screen() -> None:
    """The summary names each corridor, the latency, SLA, quarantine and chain figures in a few lines."""
    lines = view.summary(figures.compute([RECORDS], START + timedelta(minutes=5)))
    assert len(lines) <= 12 and all(len(line) <= 120 for line in lines)
    assert "Corridors: KH\u2013TH 4 · LA\u2013TH 1 · TH\u2013TH 1 (domestic)" in lines
    assert "SLA MOU-KH-TH: reported 2, open 0, met 1, breached 0, overdue 1" in lines
    assert lines[-1] == "Chains (sender/partition): 6 of 6 ok"


def federated_figures() -> figures.Figures:
    """TH->KH: two forwards, one delivered at KH 1.5 s later, one pending; KH->TH: nothing yet."""
    w = synthetic.Writer(START)
    w.crossing("TH.MSDHS", "referral.sent", ("TH.RTP", "KH.MOSVY"), 0, arrive_s={"KH": 1.5})
    w.crossing("TH.MSDHS", "referral.sent", ("KH.MOSVY",), 60, arrive_s={"KH": None})
    return figures.compute(w.partitions(), START + timedelta(minutes=5))


async def test_the_json_api_and_metrics_carry_the_corridor_crossings() -> None:
    """/api/figures lists each corridor direction; /metrics has the same counts, labelled from and to."""
    figs = federated_figures()
    async with TestClient(TestServer(web.http_app(lambda: figs))) as test_client:
        doc = await (await test_client.get("/api/figures")).json()
        samples = parse_metrics(await (await test_client.get("/metrics")).text())
    assert doc["crossings"] == [{
        "corridor": "TH->KH", "from": "TH", "to": "KH", "forwarded": 2, "delivered": 1, "refused": 0,
        "pending": 1, "unmatched": 0, "oldest_pending_s": 240.0,
        "mirror_lag": {"count": 1, "p50_ms": 1500.0, "p90_ms": 1500.0, "p99_ms": 1500.0}}]
    assert (doc["totals"]["events"], doc["totals"]["deliveries"], doc["totals"]["forwarded"]) == (1, 2, 2)
    way = 'from="TH",to="KH"'
    assert samples[("casebridge_corridor_forwarded_total", way)] == 2
    assert samples[("casebridge_corridor_delivered_through_total", way)] == 1
    assert samples[("casebridge_corridor_pending", way)] == 1
    assert samples[("casebridge_corridor_oldest_pending_seconds", way)] == 240
    assert samples[("casebridge_corridor_mirror_lag_seconds", f'{way},quantile="0.99"')] == 1.5
    assert samples[("casebridge_corridor_mirror_lag_seconds_count", way)] == 1


def test_the_text_summary_has_a_line_per_corridor_direction() -> None:
    """A federation's summary adds, after the corridors, the forwards, deliveries and lag per direction."""
    lines = view.summary(federated_figures())
    assert lines[2] == ("Corridor TH->KH: forwarded 2, delivered 1, pending 1 (oldest 240 s), refused 0; "
                        "mirror lag p50 1.50 s · p99 1.50 s")
