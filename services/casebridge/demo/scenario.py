"""The demonstration case: a Cambodian victim identified in Thailand goes home under the TH-KH MOU.

Every step is an event a node's HTTP API receives from its hub's case system; ``run`` sends them
in order, waits for each to be delivered (signed receipts from every recipient) or refused as
expected, and returns the timeline. All names and numbers are invented for the demonstration;
the canary values are searched for in topic bytes and logs by the tests (they must never appear
in plaintext).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from casebridge.core import avro, handover, jsonform, sealing
from casebridge.core.model import Header
from casebridge.demo.localnet import LocalNet
from casebridge.runtime.kafka import publish_once
from casebridge.runtime.world import World

CANARY_NAME = "Sokha Canarykhmer"
CANARY_PHONE = "+855-12-770-0190"
CANARIES = (CANARY_NAME.split()[1], CANARY_PHONE, "Srey Canarymother")
DEMO_NODES = ("TH.MSDHS", "TH.RTP", "KH.MOSVY", "KH.MOI", "KH.CWCC")


@dataclass(frozen=True)
class Step:
    """One event: who sends it, what, to whom; what must happen."""

    actor: str
    event_type: str
    to: tuple[str, ...]
    payload: Callable[[Context], dict[str, Any]]
    expect: tuple[str, ...] = ()  # recipients that must store it and send receipts
    refused: str | None = None  # the reject code it must get instead
    answers: str | None = None  # the label of the step it answers (correlation id)
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    processed_by: tuple[str, ...] = ()  # recipients whose hub marks it handled


@dataclass(frozen=True)
class Context:
    """What a payload may depend on: the case, the event ids so far, the schemas."""

    case_ref: str
    ids: dict[str, str]
    schemas: avro.SchemaSet
    sent: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)  # (type, sender, recipients)


@dataclass
class Line:
    """One line of the timeline."""

    at: float
    text: str
    ok: bool = True


def now_iso(offset: timedelta = timedelta(0)) -> str:
    return (datetime.now(UTC) + offset).isoformat()


IDENTITY = {
    "given_name": "Sokha",
    "family_name": "Canarykhmer",
    "sex": "F",
    "age_estimate": 17,
    "nationality_claimed": "KH",
    "place_of_birth": "Banteay Meanchey",
    "other_names": [],
    "documents": [],
}
FAMILY = {
    "family_members": [{"relationship": "mother", "name": "Srey Canarymother", "phone": CANARY_PHONE}],
    "village": "Ou Chrov",
    "province": "Banteay Meanchey",
}


def steps() -> list[Step]:
    return [
        Step(
            "TH.MSDHS",
            "consent.recorded",
            ("TH",),
            lambda _: {
                "operational": {
                    "scopes": ["origin_notification", "family_tracing", "ngo_sharing"],
                    "recorded_at": now_iso(),
                }
            },
            expect=("TH.RTP",),
            extra={"consent_scopes": ["origin_notification", "family_tracing", "ngo_sharing"]},
        ),
        Step(
            "TH.MSDHS",
            "origin.notified",
            ("KH",),
            lambda _: {
                "operational": {"identified_at": now_iso(), "host_country": "TH", "shelter": "Kredtrakarn"},
                "identity": IDENTITY,
            },
            expect=("KH.MOSVY",),
            label="notified",
        ),
        Step(
            "TH.MSDHS",
            "nationality_verification.requested",
            ("KH",),
            lambda _: {
                "operational": {"request_ref": "NV-1", "requested_at": now_iso()},
                "identity": IDENTITY,
                "family_contact": FAMILY,
            },
            expect=("KH.MOSVY", "KH.MOI"),
            label="nv",
            processed_by=("KH.MOI",),
        ),
        Step(
            "KH.MOI",
            "nationality_verification.responded",
            ("TH",),
            lambda _: {
                "operational": {"request_ref": "NV-1", "outcome": "confirmed", "responded_at": now_iso()}
            },
            expect=("TH.MSDHS",),
            answers="nv",
        ),
        Step(
            "TH.MSDHS",
            "family_tracing.requested",
            ("KH",),
            lambda _: {
                "operational": {"request_ref": "FT-1", "requested_at": now_iso(), "child": True},
                "family_contact": FAMILY,
            },
            expect=("KH.MOSVY",),
            label="ft",
        ),
        Step(
            "KH.MOSVY",
            "family_assessment.completed",
            ("TH",),
            lambda _: {
                "operational": {"request_ref": "FT-1", "outcome": "family_safe", "completed_at": now_iso()},
                "reintegration": {"stage": "pre-integration", "plan": "return to mother, school enrolment"},
            },
            expect=("TH.MSDHS",),
            answers="ft",
        ),
        Step(
            "TH.MSDHS",
            "return_plan.proposed",
            ("KH",),
            lambda _: {
                "operational": {
                    "plan_ref": "RP-1",
                    "window_start": str((datetime.now(UTC) + timedelta(days=7)).date()),
                    "window_end": str((datetime.now(UTC) + timedelta(days=14)).date()),
                    "checkpoint": "Aranyaprathet-Poipet",
                }
            },
            expect=("KH.MOSVY", "KH.CWCC"),
            label="plan",
        ),
        Step(
            "TH.MSDHS",
            "return_plan.proposed",
            ("KH.CCPCR",),
            lambda _: {
                "operational": {
                    "plan_ref": "RP-X",
                    "window_start": "2026-12-10",
                    "window_end": "2026-12-20",
                    "checkpoint": "Aranyaprathet-Poipet",
                }
            },
            refused="recipient_not_permitted",
        ),
        Step(
            "TH.MSDHS",
            "repatriation.approved",
            ("KH",),
            lambda _: {
                "operational": {
                    "plan_ref": "RP-1",
                    "approved_at": now_iso(),
                    "approving_participant": "TH.MSDHS",
                }
            },
            expect=("KH.MOSVY", "KH.MOI", "TH.RTP"),
            answers="plan",
        ),
        Step(
            "KH.MOSVY",
            "repatriation.approved",
            ("TH",),
            lambda _: {
                "operational": {
                    "plan_ref": "RP-1",
                    "approved_at": now_iso(),
                    "approving_participant": "KH.MOSVY",
                }
            },
            expect=("TH.MSDHS", "TH.RTP", "KH.MOI"),
            answers="plan",
        ),
        Step(
            "TH.MSDHS",
            "handover.scheduled",
            ("KH",),
            lambda _: {
                "operational": {
                    "plan_ref": "RP-1",
                    "checkpoint": "Aranyaprathet-Poipet",
                    "scheduled_at": now_iso(timedelta(days=7)),
                },
                "logistics": {"transport_mode": "road", "escort_required": True},
            },
            expect=("KH.MOSVY", "KH.MOI", "KH.CWCC", "TH.RTP"),
            label="scheduled",
        ),
        Step(
            "TH.RTP",
            "handover.completed",
            ("KH",),
            handover_payload,
            expect=("TH.MSDHS", "KH.MOSVY"),
            label="handover",
            answers="scheduled",
        ),
        Step(
            "KH.CWCC",
            "reintegration.stage_changed",
            ("TH",),
            lambda _: {
                "operational": {"stage": "integration", "changed_at": now_iso()},
                "reintegration": {"stage": "integration", "services": ["schooling", "counselling"]},
            },
            expect=("TH.MSDHS", "KH.MOSVY"),
        ),
        Step(
            "KH.MOSVY",
            "followup.recorded",
            ("TH",),
            lambda _: {
                "operational": {
                    "recorded_at": now_iso(),
                    "status": "doing_well",
                    "summary_for_host": "back in school, living with her mother",
                }
            },
            expect=("TH.MSDHS",),
            processed_by=("TH.MSDHS",),
        ),
    ]


def handover_payload(ctx: Context) -> dict[str, Any]:
    """The statement both officials sign at the checkpoint, with their two attestations."""
    statement = {
        "event_id": ctx.ids["scheduled"],
        "case_ref": ctx.case_ref,
        "checkpoint": "Aranyaprathet-Poipet",
        "completed_at": datetime.now(UTC),
        "handing_participant": "TH.RTP",
        "receiving_participant": "KH.MOI",
        "handing_official_id": "TH-RTP-4411",
        "receiving_official_id": "KH-MOI-2087",
        "persons": 1,
    }
    officials = {"handing": Ed25519PrivateKey.generate(), "receiving": Ed25519PrivateKey.generate()}
    operational = {"statement": statement, "note": "handed over in good health"} | {
        role: handover.attest(ctx.schemas, statement, role, str(statement[f"{role}_official_id"]), key)
        for role, key in officials.items()
    }
    return {"operational": operational}


Say = Callable[[str], None]


def submit(net: LocalNet, step: Step, ctx: Context) -> tuple[int, dict[str, Any]]:
    doc: dict[str, Any] = {
        "event_type": step.event_type,
        "case_ref": ctx.case_ref,
        "to": list(step.to),
        "handling_code": "H2",
        "payload": jsonform.to_json(step.payload(ctx)),
        **step.extra,
    }
    if step.answers:
        doc["correlation_id"] = ctx.ids[step.answers]
    status, body = net.call(step.actor, "POST", "/events", doc)
    return status, body


def return_plan(case_ref: str, n: int, to: Sequence[str] = ("KH",)) -> dict[str, Any]:
    """A bulk test event: an operational return plan (no personal data), ``n`` in its reference.
    Used by the fault tests, the network benchmark and the router-kill integration test."""
    return {
        "event_type": "return_plan.proposed",
        "case_ref": case_ref,
        "to": list(to),
        "payload": {
            "operational": {
                "plan_ref": f"RP-{n}",
                "window_start": "2026-12-01",
                "window_end": "2026-12-09",
                "checkpoint": "Poipet",
            }
        },
    }


def wait_for(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def receipts_from(net: LocalNet, actor: str, event_id: str, kind: str) -> set[str]:
    status = net.call(actor, "GET", f"/events/{event_id}")[1]
    return {r["participant"] for r in status.get("receipts", []) if r["kind"] == kind}


def run_step(net: LocalNet, step: Step, ctx: Context, say: Say, timeout: float) -> bool:
    _, body = submit(net, step, ctx)
    who = f"{step.actor:9} {step.event_type:38}"
    if step.refused:
        ok = body.get("status") == "rejected" and body.get("code") == step.refused
        verdict = "REFUSED " if ok else "UNEXPECTED"
        say(f"{verdict} {who} -> {','.join(step.to)}: {body.get('code')} ({body.get('why')})")
        return ok
    if body.get("status") != "queued":
        say(f"FAILED   {who}: {body.get('code')} {body.get('why')}")
        return False
    event_id = body["event_id"]
    ctx.ids[step.label or event_id] = event_id
    ctx.sent.append((step.event_type, step.actor, tuple(body["recipients"])))
    got = wait_for(lambda: set(step.expect) <= receipts_from(net, step.actor, event_id, "delivered"), timeout)
    receipts = sorted(receipts_from(net, step.actor, event_id, "delivered"))
    say(
        f"{'sent    ' if got else 'MISSING '} {who} -> {', '.join(body['recipients'])}; "
        f"signed receipts from {', '.join(receipts) or 'nobody'}"
    )
    return got and all(mark_processed(net, p, step.actor, event_id, say, timeout) for p in step.processed_by)


def mark_processed(
    net: LocalNet, participant: str, sender: str, event_id: str, say: Say, timeout: float
) -> bool:
    code, _ = net.call(participant, "POST", f"/inbox/{event_id}/processed")
    done = code == 200 and wait_for(
        lambda: participant in receipts_from(net, sender, event_id, "processed"), timeout
    )
    verdict = "handled " if done else "MISSING "
    say(f"{verdict} {participant:9} marks it processed; {sender} holds the signed receipt")
    return done


def run_case(net: LocalNet, schemas: avro.SchemaSet, say: Say, timeout: float = 30.0) -> tuple[bool, Context]:
    """The repatriation case of ``steps()``, in order; True if everything expected happened."""
    ctx = Context(f"CB-TH-{uuid.uuid4().hex[:8]}", {}, schemas)
    say(f"case {ctx.case_ref}: Cambodian minor identified in Thailand, returned under the TH-KH MOU")
    for step in steps():
        if not run_step(net, step, ctx, say, timeout):
            say("stopping the case here: the next steps depend on this one")
            return False, ctx
    return True, ctx


def run_breach(net: LocalNet, schemas: avro.SchemaSet, say: Say, timeout: float = 90.0,
               ctx: Context | None = None) -> bool:
    """A verification request nobody answers: the tracker's shortened clock raises sla.breached."""
    ctx = ctx or Context(f"CB-TH-{uuid.uuid4().hex[:8]}", {}, schemas)
    say(f"case {ctx.case_ref}: a nationality verification request left unanswered (shortened clock)")
    ok = run_step(net, steps()[0], ctx, say, timeout) and run_step(net, steps()[2], ctx, say, timeout)
    breached = wait_for(
        lambda: any(
            e["event_type"] == "sla.breached" and e["case_ref"] == ctx.case_ref
            for e in inbox(net, "KH.MOSVY")
        ),
        timeout,
    )
    say(
        f"{'BREACHED' if breached else 'MISSING '} REG.DEADLINES sla.breached -> KH.MOSVY, REG.SECRETARIAT "
        "(nationality_verification, KH side)"
    )
    return ok and breached


def inbox(net: LocalNet, participant: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = net.call(participant, "GET", f"/inbox?after={quote(cursor)}&limit=500")[1]
        events += page["events"]
        if not page["next"] or len(page["events"]) < 500:
            return events
        cursor = page["next"]


def run_misdirected(net: LocalNet, world: World, say: Say, timeout: float = 30.0) -> bool:
    """An envelope signed by TH.MSDHS but written to TH.RTP's outbox: the router refuses it."""
    now = datetime.now(UTC)
    header = Header(
        event_id=str(uuid.uuid4()),
        event_type="return_plan.proposed",
        sender="TH.MSDHS",
        sender_key_id="",
        created_at=now,
        case_ref=f"CB-TH-{uuid.uuid4().hex[:8]}",
        to=("KH",),
        sequence=1,
    )
    payload = {
        "operational": {
            "plan_ref": "RP-M",
            "window_start": now.date(),
            "window_end": now.date(),
            "checkpoint": "Aranyaprathet-Poipet",
            "receiving_agency": None,
            "transit_centre": None,
            "note": None,
        }
    }
    data = sealing.seal(
        header,
        payload,
        world.identity("TH.MSDHS"),
        {"KH.MOSVY": frozenset({"operational"})},
        world.directory,
        now,
        schemas=world.schemas,
    )
    asyncio.run(publish_once(net.settings, "cb.out.TH.RTP", header.case_ref.encode(), data))
    refused = wait_for(  # told: who wrote it (TH.RTP), not the sender it names, whose record stays
        lambda: "REG.ROUTER" in receipts_from(net, "TH.RTP", header.event_id, "rejected"), timeout
    )
    say(
        f"{'REFUSED ' if refused else 'MISSING '} router: a TH.MSDHS envelope in cb.out.TH.RTP -> "
        "cb.quarantine (sender_topic_mismatch); signed receipt.rejected to TH.RTP, who wrote it"
    )
    return refused



# --- Protecting the people in the data (issue 14): self-contained, called once by the demo -------

PROTECTION_CANARY = "Vanna Canaryshred"


def _posted(net: LocalNet, who: str, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    status, answer = net.call(who, "POST", path, body)
    return status, answer if isinstance(answer, dict) else {}


def _stored(net: LocalNet, who: str, event_id: str, timeout: float) -> bool:
    return wait_for(lambda: net.call(who, "GET", f"/records/{event_id}")[0] == 200, timeout)


def _approval(case_ref: str, to: Sequence[str], note: str | None = None) -> dict[str, Any]:
    operational = {"plan_ref": "RP-9", "approved_at": now_iso(), "approving_participant": "TH.MSDHS"}
    return {"event_type": "repatriation.approved", "case_ref": case_ref, "to": list(to),
            "handling_code": "H2", "payload": {"operational": {**operational, "note": note}}}


def run_h2_forward(net: LocalNet, say: Say, timeout: float = 30.0) -> bool:
    """KH.MOSVY passes TH.MSDHS's H2 approval on to TH.RTP: refused, then permitted by TH.MSDHS."""
    case_ref = f"CB-H2-{uuid.uuid4().hex[:8]}"
    say(f"case {case_ref}: an H2 record passed on to a third participant")
    _, sent = _posted(net, "TH.MSDHS", "/events", _approval(case_ref, ["KH.MOSVY"]))
    if not _stored(net, "KH.MOSVY", sent.get("event_id", ""), timeout):
        return False
    forward = f"/records/{sent['event_id']}/forward"
    status, first = _posted(net, "KH.MOSVY", forward, {"to": ["TH.RTP"]})
    refused = status == 422 and first.get("code") == "handling_restricted"
    say(f"{'REFUSED ' if refused else 'WRONG   '} KH.MOSVY forward -> TH.RTP [handling_restricted: H2, "
        "no permission of TH.MSDHS]")
    _posted(net, "TH.MSDHS", f"/events/{sent['event_id']}/permissions",
            {"forwarder": "KH.MOSVY", "to": ["TH.RTP"]})
    permitted = wait_for(lambda: any(e["event_type"] == "handling.permission_granted"
                                     and e["case_ref"] == case_ref for e in inbox(net, "KH.MOSVY")), timeout)
    status, second = _posted(net, "KH.MOSVY", forward, {"to": ["TH.RTP"]})
    delivered = permitted and status == 202 and _stored(net, "TH.RTP", second.get("event_id", ""), timeout)
    say(f"{'DELIVERED' if delivered else 'MISSING '} KH.MOSVY forward -> TH.RTP after TH.MSDHS's signed "
        "handling.permission_granted")
    return refused and delivered


def run_shred(net: LocalNet, say: Say, timeout: float = 30.0) -> bool:
    """A case shredded at KH.MOSVY: 410 Gone afterwards, and its canary in none of its files."""
    case_ref = f"CB-SHRED-{uuid.uuid4().hex[:8]}"
    say(f"case {case_ref}: shredded at KH.MOSVY (crypto-shredding)")
    _, sent = _posted(net, "TH.MSDHS", "/events", _approval(case_ref, ["KH.MOSVY"], PROTECTION_CANARY))
    if not _stored(net, "KH.MOSVY", sent.get("event_id", ""), timeout):
        return False
    status, shred = _posted(net, "KH.MOSVY", f"/cases/{case_ref}/shred", {"reason": "data_subject_request"})
    gone = net.call("KH.MOSVY", "GET", f"/records/{sent['event_id']}")[0] == 410
    folder = net.settings.home / "nodes" / "KH.MOSVY"
    leaks = [p.name for p in [*folder.iterdir(), *(net.settings.home / "logs").iterdir()]
             if p.is_file() and PROTECTION_CANARY.encode() in p.read_bytes()]
    ok = status == 200 and gone and not leaks
    say(f"{'SHREDDED' if ok else 'WRONG   '} {shred.get('records', 0)} record(s), "
        f"{shred.get('keys', 0)} key(s); "
        f"GET /records -> {'410 Gone' if gone else 'not gone'}; canary in {leaks or 'no file'}; "
        "case.shredded -> REG.SECRETARIAT")
    return ok


def run_withdrawal(net: LocalNet, schemas: avro.SchemaSet, say: Say, timeout: float = 30.0) -> bool:
    """The victim withdraws origin notification: KH.MOSVY's copy of it becomes restricted."""
    ctx = Context(f"CB-CONSENT-{uuid.uuid4().hex[:8]}", {}, schemas)
    say(f"case {ctx.case_ref}: consent withdrawn after the origin was notified")
    first, origin = steps()[0], steps()[1]
    if not (run_step(net, first, ctx, say, timeout) and run_step(net, origin, ctx, say, timeout)):
        return False
    _posted(net, "TH.MSDHS", "/events", {"event_type": "consent.withdrawn", "case_ref": ctx.case_ref,
                                         "to": ["TH"], "consent_scopes": ["origin_notification"]})
    record = f"/records/{ctx.ids[origin.label or origin.event_type]}"
    restricted = wait_for(lambda: "restricted" in net.call("KH.MOSVY", "GET", record)[1], timeout)
    say(f"{'RESTRICTED' if restricted else 'MISSING '} KH.MOSVY's origin.notified after the signed "
        "consent.withdrawal_notified (readable with its handling, never forwarded)")
    return restricted


def run_stats(net: LocalNet, say: Say) -> bool:
    """``casebridge stats export --as KH.MOSVY``: what the node's store would publish (k >= 11)."""
    from casebridge.core import stats, statspage
    from casebridge.node import protection, store

    folder = net.settings.home / "nodes" / "KH.MOSVY"
    conn = store.connect(folder / "node.sqlite")
    records = protection.stored_records(protection.open_node_vault(net.settings, conn, folder), conn)
    facts = stats.case_facts(records, "KH")
    table = stats.export(facts)
    out = net.settings.home / "stats"
    out.mkdir(parents=True, exist_ok=True)
    (out / "stats.csv").write_text(statspage.to_csv(table))
    (out / "stats.html").write_text(statspage.to_html(table, "Cases at KH.MOSVY"))
    say(f"EXPORTED casebridge stats export --as KH.MOSVY: {len(facts)} cases, {len(table.cells)} cells "
        f"released (each >= {table.k} cases), {table.suppressed_cells} suppressed; "
        f"{out / 'stats.csv'}, {out / 'stats.html'}")
    return all(cell.count >= table.k for cell in table.cells)


def run_protection(net: LocalNet, schemas: avro.SchemaSet, say: Say) -> bool:
    """Issue 14's demonstration: an H2 forward, a shredded case, a consent withdrawal, statistics."""
    parts: list[Callable[[], bool]] = [lambda: run_h2_forward(net, say), lambda: run_shred(net, say),
                                       lambda: run_withdrawal(net, schemas, say), lambda: run_stats(net, say)]
    results = []
    for part in parts:
        results.append(part())
        say("")
    return all(results)
