"""The secretariat's figures after the demo flow equal what was sent, delivered, refused, breached.

Its own broker and network (issue 7): the monitor runs as a process beside the nodes and the
router, and its JSON API is compared with what the nodes' APIs said about each event.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from casebridge.core.model import country_of
from casebridge.demo import localnet, scenario
from tests.integration.test_network import SCALE
from tests.support import launcher_broker

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[localnet.LocalNet, list[Any]]]:
    """The demo's three flows on a fresh broker; the network and every event the nodes queued."""
    source = launcher_broker(tmp_path_factory.mktemp("monbroker"), secure=True)
    handle = next(source)
    settings = replace(handle.settings, home=tmp_path_factory.mktemp("monhome"))
    net = localnet.start(settings, scenario.DEMO_NODES, SCALE)
    try:
        ok, case = scenario.run_case(net, net.world.schemas, print)
        assert ok and scenario.run_misdirected(net, net.world, print)
        breach = scenario.Context(f"CB-TH-{uuid.uuid4().hex[:8]}", {}, net.world.schemas)
        assert scenario.run_breach(net, net.world.schemas, print, ctx=breach)
        yield net, case.sent + breach.sent
    finally:
        net.stop()
        for _ in source:
            pass


def figures(net: localnet.LocalNet, want: Any) -> dict[str, Any]:
    """The monitor's JSON once ``want(figures)`` holds (it follows the audit topic live)."""
    seen: dict[str, Any] = {}

    def check() -> bool:
        seen.update(net.call("monitor", "GET", "/api/figures")[1])
        return bool(want(seen))

    scenario.wait_for(check, 30)
    return seen


def corridors(sent: list[Any]) -> Counter[tuple[str, str]]:
    """Each event counted once per recipient country, as a sorted country pair (REG excluded)."""
    counts: Counter[tuple[str, str]] = Counter()
    for _, sender, recipients in sent:
        for country in {country_of(r) for r in recipients} - {"REG"}:
            a, b = sorted((country_of(sender), country))
            counts[(a, b)] += 1
    return counts


def test_totals_equal_what_the_nodes_sent_and_delivered(ran: tuple[localnet.LocalNet, list[Any]]) -> None:
    """Events and deliveries on the monitor equal the events queued and their recipients."""
    net, sent = ran
    deliveries = sum(len(recipients) for _, _, recipients in sent)
    got = figures(net, lambda f: f.get("totals", {}).get("deliveries") == deliveries)
    assert got["totals"]["events"] == len(sent)
    assert got["totals"]["deliveries"] == deliveries


def test_corridor_volumes_equal_the_events_per_country_pair(ran: tuple[localnet.LocalNet, list[Any]]) -> None:
    """Each corridor (TH-KH among them) carries exactly the events sent across it."""
    net, sent = ran
    expected = corridors(sent)
    got = figures(
        net,
        lambda f: (
            {(c["a"], c["b"]): c["events"] for c in f.get("corridors", [])}
            == {tuple(sorted(k)): v for k, v in expected.items()}
        ),
    )
    assert {(c["a"], c["b"]): c["events"] for c in got["corridors"]} == dict(expected)
    assert expected[("KH", "TH")] > 10


def test_refusals_breaches_and_processed_receipts_are_counted(
    ran: tuple[localnet.LocalNet, list[Any]],
) -> None:
    """One router refusal by its code, one overdue obligation, three processed receipts."""
    net, _ = ran
    got = figures(
        net, lambda f: f.get("quarantine") == {"sender_topic_mismatch": 1} and len(f.get("overdue", [])) == 1
    )
    assert got["quarantine"] == {"sender_topic_mismatch": 1}
    assert [o["parties"] for o in got["overdue"]] == [["KH"]]
    assert got["receipts"]["receipt.processed"] == 3
    assert all(chain["status"] == "ok" for chain in got["chains"])
