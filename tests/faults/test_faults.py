"""Fault injection on a 3-node secured KRaft cluster (issue 8): nothing acknowledged is lost,
nothing is stored twice, per-case order holds. Run with ``make test-faults``.

Event counts: ``FAULTS_EVENTS`` (leader kills, default 20,000), ``FAULTS_ROUTER_EVENTS`` (router
kills, default 3,000), ``FAULTS_SMALL_EVENTS`` (outage and recipient down, default 600).
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

from casebridge.core import access
from casebridge.localkafka import broker
from tests.faults import harness as h

pytestmark = [pytest.mark.faults, pytest.mark.kafka]

EVENTS = int(os.environ.get("FAULTS_EVENTS", "20000"))
ROUTER_EVENTS = int(os.environ.get("FAULTS_ROUTER_EVENTS", "3000"))
SMALL_EVENTS = int(os.environ.get("FAULTS_SMALL_EVENTS", "600"))
OUTBOX = f"cb.out.{h.SENDER}"
INBOX = f"cb.in.{h.RECIPIENT}"


def prefix(name: str) -> str:
    return f"CB-{name}-{uuid.uuid4().hex[:6]}"


def settle(cluster: h.Cluster, sender: h.Sender, timeout: float) -> dict[str, object]:
    """Wait until every accepted event is acknowledged and stored at its recipient; the figures."""
    settings, ids = cluster.settings, set(sender.accepted)
    assert {r for rs in sender.accepted.values() for r in rs} == {h.RECIPIENT}, "a recipient without a node"
    drained = h.drain(
        lambda: h.acknowledged(settings, ids) == ids
        and {e for e, _ in h.stored(settings, h.RECIPIENT, ids)} == ids,
        timeout,
    )
    acked = h.acknowledged(settings, ids)
    arrivals = h.stored(settings, h.RECIPIENT, ids)
    digests = h.outbox_digests(settings, ids)
    out_records, out_distinct = h.wire_copies(settings, OUTBOX, set(digests))
    in_records, in_distinct = h.wire_copies(settings, INBOX, set(digests))
    figures: dict[str, object] = {
        "events sent (accepted by the sender node)": len(ids),
        "refused by the sender node": dict(sender.refused),
        "acknowledged (sender outbox)": len(acked),
        "stored at the recipient": len(arrivals),
        "stored distinct": len({e for e, _ in arrivals}),
        f"records on {OUTBOX}": out_records,
        "  duplicates there (retried publishes)": out_records - out_distinct,
        f"records on {INBOX} (read_committed)": in_records,
        "  duplicates there": in_records - in_distinct,
        "duplicates dropped by the router (log)": h.log_count(cluster.net, ["router"], "duplicate"),
        "transactions aborted by the router (log)": h.log_count(cluster.net, ["router"],
                                                               "transaction_aborted"),
        "cases out of order at the recipient": h.in_order(arrivals, h.sequences(settings, ids)),
        "posting took (s)": round(sender.finished - sender.started, 1),
        "time to drain after the last post (s)": round(drained, 1),
        "workers restarted by the supervisor (exit 75, so far)": dict(cluster.net.restarts),
    }
    assert acked == ids
    assert [e for e, _ in arrivals] == list(dict.fromkeys(e for e, _ in arrivals))  # each once
    assert {e for e, _ in arrivals} == ids
    assert out_distinct == len(ids)
    assert in_records == in_distinct == len(ids)  # exactly one committed copy per event and recipient
    assert figures["cases out of order at the recipient"] == []
    return figures


def test_a_recipient_node_down_gets_its_events_when_it_returns(cluster: h.Cluster) -> None:
    """Events for a stopped node wait in its inbox topic; on its return they are stored and the
    sender receives a signed ``delivered`` receipt for each."""
    net, settings = cluster.net, cluster.settings
    net.stop_service(h.RECIPIENT)
    sender = h.Sender(net, prefix("R"), SMALL_EVENTS).start()
    sender.join(600)
    ids = set(sender.accepted)
    digests = set(h.outbox_digests(settings, ids))
    waited = h.drain(lambda: h.wire_copies(settings, INBOX, digests)[1] == len(ids), 300)
    assert h.stored(settings, h.RECIPIENT, ids) == []  # nobody has stored them yet
    down_for = time.monotonic() - sender.started
    net.start_node(h.RECIPIENT)
    net.wait_healthy()
    figures = settle(cluster, sender, 600)
    receipts = h.drain(lambda: h.delivered_receipts(settings, ids) == ids, 300)
    figures |= {
        "all waiting in the inbox topic after (s)": round(waited, 1),
        "recipient down for (s)": round(down_for, 1),
        "delivered receipts at the sender": len(h.delivered_receipts(settings, ids)),
        "receipts complete after (s)": round(receipts, 1),
    }
    h.report("recipient-down", figures)


def test_the_router_killed_three_times_mid_stream_loses_and_reorders_nothing(cluster: h.Cluster) -> None:
    """SIGKILL the router three times while events flow and start it again: the stored set equals
    the sent set, each stored once, per-case order kept."""
    net, settings = cluster.net, cluster.settings
    sender = h.Sender(net, prefix("K"), ROUTER_EVENTS).start()
    kills = []
    def stored() -> int:
        return len(h.stored(settings, h.RECIPIENT, sender.accepted))

    for fraction in (0.25, 0.5, 0.75):  # by what the recipient has stored: the router is mid-stream
        goal = ROUTER_EVENTS * fraction
        h.drain(lambda goal=goal: stored() >= goal, 900)
        net.stop_service("router", signal.SIGKILL)
        kills.append({"posted": sender.posted, "stored": stored()})
        time.sleep(3)
        net.spawn("router", ["router", "run"], principal=access.ROUTER)
    sender.join(900)
    figures = settle(cluster, sender, 900)
    figures["router SIGKILLs (at events posted, stored)"] = kills
    h.report("router-kill", figures)


def test_two_router_workers_one_killed_three_times_the_survivor_takes_over(cluster: h.Cluster) -> None:
    """Two router workers share the outbox partitions; one is SIGKILLed three times mid-stream and
    stays away each time until the survivor holds every partition (by its log; at most 120 s): the
    stored set equals the sent set, each once, per-case order kept."""
    net, settings = cluster.net, cluster.settings
    net.spawn("router2", ["router", "run"], principal=access.ROUTER)
    try:
        sender = h.Sender(net, prefix("W"), ROUTER_EVENTS).start()
        kills = []

        def stored() -> int:
            return len(h.stored(settings, h.RECIPIENT, sender.accepted))

        every = set(range(settings.partitions))

        def survivor_holds_all() -> bool:
            return h.held_partitions(net, "router2") == every

        for fraction in (0.25, 0.5, 0.75):
            goal = ROUTER_EVENTS * fraction
            h.drain(lambda goal=goal: stored() >= goal, 900)
            net.stop_service("router", signal.SIGKILL)
            killed = {"posted": sender.posted, "stored": stored()}
            # the group gives the killed worker's partitions away after its session timeout (10 s)
            killed["survivor holds all after (s)"] = round(h.drain(survivor_holds_all, 120), 1)
            kills.append(killed)
            net.spawn("router", ["router", "run"], principal=access.ROUTER)
        sender.join(900)
        figures = settle(cluster, sender, 900)
        widest = max((len(line["partitions"]) for line in h.log_lines(net, "router2", "router_assigned")),
                     default=0)
        figures["router SIGKILLs (at events posted, stored)"] = kills
        figures["partitions the survivor held at most"] = widest
        figures["events routed by each worker (log)"] = {
            n: sum(line["outcomes"].get("delivered", 0) for line in h.log_lines(net, n, "router_batch"))
            for n in ("router", "router2")}
        assert widest == settings.partitions  # it took over the killed worker's partitions
    finally:
        net.stop_service("router2")
    h.report("two-routers-kill", figures)


def test_the_broker_unavailable_for_30_seconds_loses_nothing(cluster: h.Cluster) -> None:
    """All three brokers down for 30 s while the sender node keeps accepting events: everything is
    delivered after recovery, and every service is still running."""
    net, spec, settings = cluster.net, cluster.spec, cluster.settings
    for node in spec.node_ids:
        broker.kill_node(spec, node)
    down_at = time.monotonic()
    sender = h.Sender(net, prefix("O"), SMALL_EVENTS).start()
    sender.join(300)
    ids = set(sender.accepted)
    acked_while_down = len(h.acknowledged(settings, ids))
    time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))
    for node in spec.node_ids:
        broker.restart_node(spec, node)
    back = h.drain(lambda: broker.answers(spec.bootstrap, spec.nodes, broker.client_auth(spec)), 180)
    outage = time.monotonic() - down_at
    figures = settle(cluster, sender, 900)
    for name in list(net.services):
        net.check_alive(name)
    figures |= {
        "brokers down for (s)": round(outage - back, 1),
        "cluster answering again after restart (s)": round(back, 1),
        "acknowledged while down": acked_while_down,
    }
    assert acked_while_down == 0
    h.report("broker-outage", figures)


def test_the_partition_leader_killed_three_times_while_publishing(cluster: h.Cluster) -> None:
    """SIGKILL the leader of the sender's outbox partition three times while it publishes: every
    event the outbox saw acknowledged is stored exactly once at its recipient."""
    net, spec, settings = cluster.net, cluster.spec, cluster.settings
    sender = h.Sender(net, prefix("L"), EVENTS).start()
    kills = []
    for fraction in (0.25, 0.5, 0.75):  # by what the outbox saw acknowledged: mid-publishing
        goal = EVENTS * fraction
        h.drain(lambda goal=goal: len(h.acknowledged(settings, set(sender.accepted))) >= goal, 1800)
        leader, isr = h.leader_of(settings, OUTBOX)
        broker.kill_node(spec, leader)
        killed_at, posted = time.monotonic(), sender.posted
        acked = len(h.acknowledged(settings, set(sender.accepted)))
        # the controller fences the dead node after broker.session.timeout.ms (9 s) and elects
        failover = h.drain(lambda leader=leader: h.leader_of(settings, OUTBOX)[0] != leader, 120)
        new_leader = h.leader_of(settings, OUTBOX)[0]
        broker.restart_node(spec, leader)
        h.wait_in_sync(settings, OUTBOX, 3)
        kills.append({"node": leader, "isr before": isr, "new leader": new_leader, "at events posted": posted,
                      "acknowledged": acked,
                      "new leader after (s)": round(failover, 1),
                      "back in sync after (s)": round(time.monotonic() - killed_at, 1)})
    sender.join(3600)
    figures = settle(cluster, sender, 1800)
    figures["leader SIGKILLs"] = kills
    h.report("leader-kill", figures)
