"""The figures as the JSON API serves them and as Prometheus text (exposition format 0.0.4).

Both carry what ``figures.Figures`` holds and nothing more: ids, types, codes, participant ids,
pseudonymous case references and times. Lists of items are capped at ``LIST_LIMIT`` (counts are not).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from casebridge.monitor.chains import ChainStatus
from casebridge.monitor.federation import Crossing
from casebridge.monitor.figures import COUNTRIES, LIST_LIMIT, Figures, Obligation, Outstanding
from casebridge.monitor.percentiles import Latency

STATUSES = ("open", "met", "breached", "overdue")


def iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def to_json(f: Figures) -> dict[str, Any]:
    """The ``/api/figures`` document."""
    return {
        "generated_at": iso(f.generated_at), "countries": list(COUNTRIES),
        "totals": {"records": f.records, "events": f.events, "deliveries": f.deliveries,
                   "receipts": sum(f.receipts.values()), "quarantined": sum(f.quarantine.values()),
                   "receipts_outstanding": len(f.outstanding),
                   "forwarded": sum(c.forwarded for c in f.crossings)},
        "corridors": [{"corridor": c.name, "a": c.a, "b": c.b, "domestic": c.a == c.b, "events": c.events,
                       "deliveries": c.deliveries, "by_type": dict(c.by_type)} for c in f.corridors],
        "series": [{"start": iso(start), "corridor": name, "event_type": kind, "events": n}
                   for start, name, kind, n in f.series],
        "receipts": dict(f.receipts),
        "latency": latency_json(f.latency),
        "outstanding": {"count": len(f.outstanding),
                        "oldest_s": f.outstanding[0].age_s if f.outstanding else None,
                        "items": [outstanding_json(o) for o in f.outstanding[:LIST_LIMIT]]},
        "sla": sla_json(f.obligations),
        "overdue": [obligation_json(o, f.generated_at) for o in f.obligations if o.status == "overdue"],
        "quarantine": dict(f.quarantine),
        "chains": [chain_json(c) for c in f.chains],
        "crossings": [crossing_json(c) for c in f.crossings],
    }


def latency_json(latency: Latency) -> dict[str, Any]:
    return {"count": latency.count, "p50_ms": latency.p50_ms, "p90_ms": latency.p90_ms,
            "p99_ms": latency.p99_ms}


def crossing_json(c: Crossing) -> dict[str, Any]:
    """One direction of a corridor between national clusters (``from`` -> ``to``)."""
    oldest = round(c.oldest_pending_s, 3) if c.oldest_pending_s is not None else None
    return {"corridor": c.name, "from": c.source, "to": c.target, "forwarded": c.forwarded,
            "delivered": c.delivered, "refused": c.refused, "pending": c.pending, "unmatched": c.unmatched,
            "mirror_lag": latency_json(c.mirror_lag), "oldest_pending_s": oldest}


def outstanding_json(o: Outstanding) -> dict[str, Any]:
    return {"event_id": o.event_id, "event_type": o.event_type, "case_ref": o.case_ref,
            "sender": o.sender, "recipient": o.recipient, "age_s": round(o.age_s, 3)}


def obligation_json(o: Obligation, now: datetime) -> dict[str, Any]:
    late = (now - o.breached_at).total_seconds() if o.breached_at else None
    return {"agreement_id": o.agreement_id, "opened_by": o.opened_by, "case_ref": o.case_ref,
            "parties": list(o.parties), "status": o.status, "warned_at": iso(o.warned_at),
            "breached_at": iso(o.breached_at), "answered_at": iso(o.answered_at),
            "overdue_s": round(late, 3) if late is not None else None}


def sla_json(obligations: tuple[Obligation, ...]) -> list[dict[str, Any]]:
    """Per agreement: obligations reported (``opened``) and how many are in each status."""
    table: dict[str, dict[str, int]] = {}
    for o in obligations:
        row = table.setdefault(o.agreement_id, {"opened": 0, **dict.fromkeys(STATUSES, 0)})
        row["opened"] += 1
        row[o.status] += 1
    return [{"agreement_id": agreement, **row} for agreement, row in sorted(table.items())]


def chain_json(c: ChainStatus) -> dict[str, Any]:
    return {"sender": c.sender, "partition": c.partition, "status": c.status, "links": c.links,
            "last_sequence": c.last_sequence,
            "findings": [{"kind": x.kind, "sequence": x.sequence, "position": x.position, "detail": x.detail}
                         for x in c.findings[:LIST_LIMIT]]}


def chain_labels(c: ChainStatus) -> dict[str, object]:
    return {"sender": c.sender, "partition": c.partition}


def label(value: object) -> str:
    text = str(value)
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def sample(name: str, labels: Mapping[str, object], value: float) -> str:
    inner = ",".join(f'{k}="{label(v)}"' for k, v in labels.items())
    number = str(int(value)) if float(value).is_integer() else repr(float(value))
    return f"{name}{{{inner}}} {number}" if inner else f"{name} {number}"


def family(name: str, kind: str, doc: str, samples: list[str]) -> Iterator[str]:
    yield f"# HELP {name} {doc}"
    yield f"# TYPE {name} {kind}"
    yield from samples


def metrics(f: Figures) -> str:
    """The ``/metrics`` page."""
    lines = [
        *family("casebridge_audit_records", "gauge", "Audit records read.", [sample(
            "casebridge_audit_records", {}, f.records)]),
        *family("casebridge_corridor_events_total", "counter", "Events per corridor and type.", [
            sample("casebridge_corridor_events_total", {"corridor": c.name, "event_type": t}, n)
            for c in f.corridors for t, n in c.by_type.items()]),
        *family("casebridge_corridor_deliveries_total", "counter", "Deliveries per corridor.", [
            sample("casebridge_corridor_deliveries_total", {"corridor": c.name}, c.deliveries)
            for c in f.corridors]),
        *family("casebridge_receipts_total", "counter", "Receipts routed, per type.", [
            sample("casebridge_receipts_total", {"event_type": t}, n) for t, n in f.receipts.items()]),
        *latency_lines(f),
        *family("casebridge_receipts_outstanding", "gauge", "Deliveries not yet acknowledged.", [
            sample("casebridge_receipts_outstanding", {}, len(f.outstanding))]),
        *family("casebridge_sla_obligations", "gauge", "Reported obligations per agreement and status.", [
            sample("casebridge_sla_obligations", {"agreement_id": row["agreement_id"], "status": s}, row[s])
            for row in sla_json(f.obligations) for s in STATUSES]),
        *family("casebridge_quarantined_total", "counter", "Refused records per reason code.", [
            sample("casebridge_quarantined_total", {"code": code}, n) for code, n in f.quarantine.items()]),
        *family("casebridge_chain_ok", "gauge", "1 when a sender's hash chain in a partition verifies.", [
            sample("casebridge_chain_ok", chain_labels(c), int(c.status == "ok")) for c in f.chains]),
        *family("casebridge_chain_last_sequence", "gauge", "Highest sequence number per chain.", [
            sample("casebridge_chain_last_sequence", chain_labels(c), c.last_sequence) for c in f.chains]),
        *crossing_lines(f),
    ]
    return "\n".join(lines) + "\n"


CROSSING_SAMPLES = {  # Crossing attribute: metric name, type, help
    "forwarded": ("casebridge_corridor_forwarded_total", "counter",
                  "Envelopes the origin router forwarded onto a corridor."),
    "delivered": ("casebridge_corridor_delivered_through_total", "counter",
                  "Forwarded envelopes the destination router delivered from the corridor."),
    "refused": ("casebridge_corridor_refused_total", "counter",
                "Corridor records the destination router quarantined and never delivered."),
    "pending": ("casebridge_corridor_pending", "gauge",
                "Forwarded envelopes neither delivered nor refused at the destination yet."),
    "unmatched": ("casebridge_corridor_unmatched", "gauge",
                  "Deliveries from a corridor with no forward seen in the origin's audit."),
}


def crossing_lines(f: Figures) -> Iterator[str]:
    """Per direction of a corridor between national clusters (labels ``from`` and ``to``)."""
    for attribute, (name, kind, doc) in CROSSING_SAMPLES.items():
        yield from family(name, kind, doc, [sample(name, way(c), getattr(c, attribute)) for c in f.crossings])
    name = "casebridge_corridor_oldest_pending_seconds"
    yield from family(name, "gauge", "Age of the oldest pending forward per corridor direction.", [
        sample(name, way(c), c.oldest_pending_s) for c in f.crossings if c.oldest_pending_s is not None])
    name = "casebridge_corridor_mirror_lag_seconds"
    yield from family(name, "summary", "Forward at the origin to delivery at the destination.", [
        line for c in f.crossings for line in summary_samples(name, way(c), c.mirror_lag)])


def way(c: Crossing) -> dict[str, object]:
    return {"from": c.source, "to": c.target}


def summary_samples(name: str, labels: Mapping[str, object], latency: Latency) -> list[str]:
    """The quantile, ``_sum`` and ``_count`` samples of one summary (durations in seconds)."""
    quantiles = {"0.5": latency.p50_ms, "0.9": latency.p90_ms, "0.99": latency.p99_ms}
    return [*(sample(name, {**labels, "quantile": q}, ms / 1000) for q, ms in quantiles.items()
              if ms is not None),
            sample(f"{name}_sum", labels, latency.sum_ms / 1000),
            sample(f"{name}_count", labels, latency.count)]


def latency_lines(f: Figures) -> Iterator[str]:
    name = "casebridge_delivery_latency_seconds"
    yield from family(name, "summary", "Event creation to its delivered receipt.",
                      summary_samples(name, {}, f.latency))


def seconds(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.2f} s"


def crossing_line(c: Crossing) -> str:
    oldest = f" (oldest {c.oldest_pending_s:.0f} s)" if c.oldest_pending_s is not None else ""
    return (f"Corridor {c.name}: forwarded {c.forwarded}, delivered {c.delivered}, pending {c.pending}"
            f"{oldest}, refused {c.refused}; mirror lag p50 {seconds(c.mirror_lag.p50_ms)} · p99 "
            f"{seconds(c.mirror_lag.p99_ms)}")


def summary(f: Figures) -> list[str]:
    """A one-screen text summary of the figures (for ``make demo`` and terminals)."""
    corridors = " · ".join(f"{c.a}\u2013{c.b} {c.events}" + (" (domestic)" if c.a == c.b else "")
                           for c in f.corridors)
    bad = [c for c in f.chains if c.status != "ok"]
    return [
        f"Events {f.events} (deliveries {f.deliveries}), receipts {sum(f.receipts.values())}, "
        f"quarantined {sum(f.quarantine.values())}, audit records {f.records}",
        f"Corridors: {corridors or 'none yet'}",
        *map(crossing_line, f.crossings),
        f"Latency (event -> delivered receipt): p50 {seconds(f.latency.p50_ms)} · p90 "
        f"{seconds(f.latency.p90_ms)} · p99 {seconds(f.latency.p99_ms)} ({f.latency.count} receipts); "
        f"outstanding {len(f.outstanding)}",
        *(f"SLA {row['agreement_id']}: reported {row['opened']}, open {row['open']}, met {row['met']}, "
          f"breached {row['breached']}, overdue {row['overdue']}" for row in sla_json(f.obligations)),
        "Quarantine: " + (" · ".join(f"{code} {n}" for code, n in f.quarantine.items()) or "none"),
        f"Chains (sender/partition): {len(f.chains) - len(bad)} of {len(f.chains)} ok"
        + "".join(f"; {c.sender}/{c.partition} {c.status} at {c.findings[0].sequence}" for c in bad),
    ]
