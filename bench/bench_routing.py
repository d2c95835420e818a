"""Routing decisions per second with every committed agreement loaded, on one core.

Run: ``.venv/bin/python bench/bench_routing.py [--seconds 5]``. Prints the rates and writes
``bench/results/routing-<timestamp>.json``. Target: >= 50,000 decisions/s (the router must never be
limited by policy evaluation), met by the uncached path alone; the memoized rate (decisions are
remembered per Policy under a key of all their inputs) is what a router sees in steady state.
The directory holds the region's 17 participants (no keys are needed to route);
the event mix covers every agreement, multi-party, consent-gated and refused events.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from casebridge.core.agreements import parse_agreement
from casebridge.core.model import CaseState, Directory, Header, Participant
from casebridge.core.routing import MEMO_LIMIT, Deliver, Policy, index_agreements, route

ROOT = Path(__file__).resolve().parents[1]
TARGET = 50_000
NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
ROLES = {"REG.SECRETARIAT": "secretariat", "KH.CWCC": "ngo", "KH.CCPCR": "ngo", "LA.LWU": "ngo",
         "VN.VWU": "ngo", "TH.RTP": "police", "KH.MOI": "police", "LA.MPS": "police",
         "MM.MPF": "police", "VN.MPS": "police", "CN.MPS": "police"}
GOVERNMENT = ("TH.MSDHS", "KH.MOSVY", "LA.MOLSW", "MM.DSW", "VN.MOLISA", "CN.MCA")
MIX = [
    ("origin.notified", "TH.MSDHS", ("KH",)),
    ("nationality_verification.requested", "TH.MSDHS", ("VN",)),
    ("nationality_verification.responded", "VN.MPS", ("TH",)),
    ("return_plan.proposed", "TH.MSDHS", ("KH",)),
    ("return_plan.proposed", "TH.MSDHS", ("KH.CCPCR",)),
    ("return_plan.proposed", "TH.MSDHS", ("MM", "LA")),
    ("return_plan.proposed", "LA.MOLSW", ("VN",)),
    ("legal_proceedings.status_changed", "TH.RTP", ("KH",)),
    ("handover.scheduled", "CN.MCA", ("VN",)),
    ("handover.completed", "MM.DSW", ("CN",)),
    ("reintegration.stage_changed", "KH.CWCC", ("TH",)),
    ("referral.sent", "KH.MOSVY", ("VN.VWU",)),
    ("referral.sent", "LA.MOLSW", ("VN",)),
    ("family_tracing.requested", "KH.MOSVY", ("VN",)),
    ("receipt.delivered", "KH.MOSVY", ("TH.MSDHS",)),
    ("case.closed", "TH.MSDHS", ("KH", "LA")),
]


def directory() -> Directory:
    roles = {**{g: "government" for g in GOVERNMENT}, **ROLES}
    people = {pid: Participant(pid, pid.split(".")[0], role, pid) for pid, role in roles.items()}
    return Directory(1, NOW, NOW, people)


def headers(count: int) -> list[Header]:
    base = Header("00000000-0000-4000-8000-000000000000", "", "", "k", NOW, "case", ())
    rng = random.Random(7)
    return [replace(base, event_type=e, sender=s, to=t)
            for e, s, t in (rng.choice(MIX) for _ in range(count))]


def measure(policy: Policy, seconds: float) -> tuple[int, float, Counter[str]]:
    """Route a fixed random mix for ``seconds``: (decisions, elapsed, outcome counts)."""
    people, batch = directory(), headers(10_000)
    states = [CaseState(frozenset({"origin_notification", "ngo_sharing", "family_tracing"})),
              CaseState(frozenset({"origin_notification"})), CaseState(witness_hold=True)]
    outcomes: Counter[str] = Counter()
    decisions, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for i, header in enumerate(batch):
            decision = route(header, policy, people, states[i % 3], NOW)
            outcomes["deliver" if isinstance(decision, Deliver) else decision.code] += 1
        decisions += len(batch)
    return decisions, time.perf_counter() - started, outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    args = parser.parse_args()
    folder = ROOT / "deploy" / "agreements"
    agreements = [parse_agreement(p.read_bytes().decode(), str(p))
                  for p in sorted(folder.glob("*.yaml")) if p.name != "calendars.yaml"]
    result: dict[str, object] = {"benchmark": "routing", "target": TARGET,
                                 "agreements": [f"{a.id} v{a.version}" for a in agreements]}
    for name, limit in (("uncached", 0), ("memoized", MEMO_LIMIT)):
        decisions, elapsed, outcomes = measure(index_agreements(agreements, limit), args.seconds)
        rate = decisions / elapsed
        result[name] = {"decisions": decisions, "seconds": round(elapsed, 3),
                        "decisions_per_second": round(rate), "outcomes": dict(outcomes)}
        print(f"routing ({name}): {rate:,.0f} decisions/s on one core (target {TARGET:,})")
    cold = result["uncached"]["decisions_per_second"]  # type: ignore[index]
    result.update(met=cold >= TARGET, python=platform.python_version(),
                  machine=platform.machine(), at=datetime.now(UTC).isoformat())
    out = ROOT / "bench" / "results" / f"routing-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if result["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
