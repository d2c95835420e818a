"""Faults of a federation (issue 15): the corridor TH -> KH cut for 30 s while TH keeps sending,
and KH's MirrorMaker SIGKILLed mid-stream. Nothing acknowledged is lost, every event is stored
exactly once at KH (one read_committed copy on cb.in.KH.MOSVY), per-case order holds, and every
signed delivered receipt comes back to TH through the reverse corridor.

Sizes: ``FAULTS_SMALL_EVENTS`` (default 600) for the cut, ``FAULTS_ROUTER_EVENTS`` (default 3,000)
for the MirrorMaker kills.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest

from casebridge.demo import federation
from casebridge.localkafka import mirror
from casebridge.runtime.settings import Settings
from tests.faults import harness as h

pytestmark = [pytest.mark.faults, pytest.mark.kafka]

MIRROR_EVENTS = int(os.environ.get("FAULTS_ROUTER_EVENTS", "3000"))
CUT_EVENTS = int(os.environ.get("FAULTS_SMALL_EVENTS", "600"))
CORRIDOR = "cb.xb.TH.KH"
OUTBOX, INBOX = f"cb.out.{h.SENDER}", f"cb.in.{h.RECIPIENT}"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[federation.Federation]:
    home = tmp_path_factory.mktemp("fedfaults")
    try:
        running = federation.up(replace(Settings.from_env(), home=home), h.NODES, h.progress)
    except Exception as exc:  # say why, and fail: a fault test never skips
        pytest.fail(f"no federation could be started for the fault tests: {exc}", pytrace=False)
    try:
        yield running
    finally:
        running.stop(lambda _m: None)


def settle(fed: federation.Federation, sender: h.Sender, timeout: float) -> dict[str, object]:
    """Wait until every accepted event is acknowledged at TH, stored at KH and its receipt back at TH."""
    home, ids = fed.net.settings, set(sender.accepted)
    th, kh = fed.clusters["TH"].settings, fed.clusters["KH"].settings
    drained = h.drain(
        lambda: h.acknowledged(home, ids) == ids
        and {e for e, _ in h.stored(home, h.RECIPIENT, ids)} == ids
        and h.delivered_receipts(home, ids) == ids,
        timeout,
    )
    arrivals = h.stored(home, h.RECIPIENT, ids)
    digests = set(h.outbox_digests(home, ids))
    at_origin = h.wire_copies(th, CORRIDOR, digests)
    mirrored = h.wire_copies(kh, CORRIDOR, digests)
    inbox = h.wire_copies(kh, INBOX, digests)
    figures: dict[str, object] = {
        "events sent (accepted by TH.MSDHS)": len(ids),
        "acknowledged (TH outbox)": len(h.acknowledged(home, ids)),
        "stored at KH.MOSVY": len(arrivals),
        "delivered receipts back at TH.MSDHS": len(h.delivered_receipts(home, ids)),
        f"records on TH's {CORRIDOR} (read_committed)": at_origin[0],
        f"records on KH's {CORRIDOR} (mirrored)": mirrored[0],
        "  duplicates mirrored": mirrored[0] - mirrored[1],
        f"records on KH's {INBOX} (read_committed)": inbox[0],
        "duplicates dropped by KH's router (log)": h.log_count(fed.net, ["router-KH"], "duplicate"),
        "cases out of order at the recipient": h.in_order(arrivals, h.sequences(home, ids)),
        "posting took (s)": round(sender.finished - sender.started, 1),
        "time to drain after the last post (s)": round(drained, 1),
    }
    assert [e for e, _ in arrivals] == list(dict.fromkeys(e for e, _ in arrivals))  # each stored once
    assert {e for e, _ in arrivals} == ids
    assert at_origin == (len(ids), len(ids))  # forwarded once each
    assert mirrored[1] == len(ids)  # every one copied
    assert inbox == (len(ids), len(ids))  # exactly one committed copy per event at KH
    assert figures["cases out of order at the recipient"] == []
    return figures


def kh_mirror(fed: federation.Federation) -> mirror.MirrorSpec:
    spec = fed.clusters["KH"].mirror
    assert spec is not None
    return spec


def test_the_corridor_cut_for_30_seconds_loses_nothing(fed: federation.Federation) -> None:
    """KH's MirrorMaker stopped for 30 s while TH keeps sending: TH acknowledges and forwards;
    once the mirror is back, every event is stored once at KH and every receipt reaches TH."""
    spec = kh_mirror(fed)
    paced = 3 * 50.0 / CUT_EVENTS  # the posts spread over about 50 s: TH keeps sending through the cut
    sender = h.Sender(fed.net, f"CB-C-{uuid.uuid4().hex[:6]}", CUT_EVENTS, pause=paced).start()
    h.drain(lambda: sender.posted >= CUT_EVENTS // 5, 300)
    mirror.stop(spec, h.progress)
    cut_at = sender.posted
    time.sleep(30)  # the fault itself: the 30-second cut (not a wait for a condition)
    during = sender.posted - cut_at
    mirror.start(spec, h.progress)
    mirror.ready(spec)
    sender.join(600)
    figures = settle(fed, sender, 600)
    figures |= {"posted while the corridor was cut": during}
    assert during > 0  # TH kept accepting while KH was unreachable
    h.report("federation-corridor-cut", figures)


def test_the_mirror_sigkilled_mid_stream_loses_and_duplicates_nothing(fed: federation.Federation) -> None:
    """KH's MirrorMaker SIGKILLed three times while events flow, started again each time: no event
    lost, none stored twice (KH's router drops a copy mirrored twice by its event id)."""
    spec = kh_mirror(fed)
    paced = 3 * 60.0 / MIRROR_EVENTS  # the posts spread over about a minute: the kills land mid-stream
    sender = h.Sender(fed.net, f"CB-M-{uuid.uuid4().hex[:6]}", MIRROR_EVENTS, pause=paced).start()
    home = fed.net.settings
    kills = []
    for fraction in (0.25, 0.5, 0.75):
        goal = MIRROR_EVENTS * fraction
        h.drain(lambda goal=goal: len(h.stored(home, h.RECIPIENT, sender.accepted)) >= goal, 900)
        mirror.kill(spec)
        kills.append({"posted": sender.posted, "stored": len(h.stored(home, h.RECIPIENT, sender.accepted))})
        at = sender.posted  # the corridor stays down while TH forwards more to it
        h.drain(lambda at=at: sender.posted >= min(MIRROR_EVENTS, at + 20), 120)
        mirror.start(spec, h.progress)
    sender.join(900)
    figures = settle(fed, sender, 900)
    figures["mirror SIGKILLs (at events posted, stored)"] = kills
    h.report("federation-mirror-kill", figures)
