"""Routing under the committed agreements: who gets what, who is refused, and why."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from itertools import permutations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from casebridge.core.errors import REJECT_CODES
from casebridge.core.model import (
    CONSENT_SCOPES,
    COUNTRIES,
    EVENT_TYPES,
    HANDLING_CODES,
    CaseState,
    Header,
)
from casebridge.core.routing import (
    Deliver,
    Reject,
    explain,
    index_agreements,
    route,
    select_agreement,
)
from tests.unit.policy_fixtures import (
    ALL_CONSENT,
    NOW,
    PARTICIPANTS,
    agreement,
    committed,
    directory,
    header,
    policy,
)

OPS, ID, LOG, REI, FAM = "operational", "identity", "logistics", "reintegration", "family_contact"
PLAN_GOV = {OPS, ID, "health", LOG, REI}
BILATERAL = {frozenset(p) for p in (("TH", "KH"), ("TH", "LA"), ("TH", "MM"), ("TH", "VN"),
                                    ("KH", "VN"), ("CN", "VN"), ("CN", "MM"))}
NO_CONSENT = CaseState()
NO_NGO = CaseState(frozenset({"origin_notification", "family_tracing"}))
HOLD = CaseState(ALL_CONSENT.consent, witness_hold=True)


def decide(event_type: str, sender: str, to: tuple[str, ...], state: CaseState = ALL_CONSENT,
           **overrides: object) -> Deliver | Reject:
    return route(header(event_type, sender, to, **overrides), policy(), directory(), state, NOW)


def grants_of(decision: Deliver | Reject) -> dict[str, set[str]]:
    assert isinstance(decision, Deliver), decision
    return {pid: set(categories) for pid, categories in decision.grants.items()}


DELIVERIES = [
    # (event, sender, to, state, expected grants, agreement)
    ("origin.notified", "TH.MSDHS", ("KH",), ALL_CONSENT, {"KH.MOSVY": {OPS, ID}}, "TH-KH"),
    ("return_plan.proposed", "TH.MSDHS", ("KH",), ALL_CONSENT,
     {"KH.MOSVY": PLAN_GOV, "KH.CWCC": {OPS, LOG, REI}}, "TH-KH"),
    ("reintegration.stage_changed", "KH.CWCC", ("TH",), ALL_CONSENT,
     {"TH.MSDHS": {OPS, REI}, "KH.MOSVY": {OPS, REI}}, "TH-KH"),  # the origin hub is told too
    ("legal_proceedings.status_changed", "TH.RTP", ("KH",), NO_CONSENT,
     {"TH.MSDHS": {OPS, "legal"}, "KH.MOSVY": {OPS, "legal"}}, "TH-KH"),
    ("nationality_verification.requested", "TH.MSDHS", ("LA",), ALL_CONSENT,
     {"LA.MOLSW": {OPS, ID}, "LA.MPS": {OPS, ID}}, "TH-LA"),
    ("followup.recorded", "LA.MOLSW", ("TH",), ALL_CONSENT, {"TH.MSDHS": {OPS, REI}}, "TH-LA"),
    ("return_plan.proposed", "TH.MSDHS", ("LA",), ALL_CONSENT,
     {"LA.MOLSW": PLAN_GOV, "LA.LWU": {OPS, LOG, REI}}, "TH-LA"),
    ("handover.scheduled", "TH.MSDHS", ("MM",), ALL_CONSENT,
     {"MM.DSW": {OPS, ID, LOG}, "MM.MPF": {OPS, ID, LOG}}, "TH-MM"),
    ("handover.completed", "TH.MSDHS", ("MM",), ALL_CONSENT,
     {"MM.DSW": {OPS, LOG}, "REG.SECRETARIAT": {OPS}}, "TH-MM"),
    ("nationality_verification.responded", "VN.MPS", ("TH",), ALL_CONSENT,
     {"TH.MSDHS": {OPS, ID}, "VN.MOLISA": {OPS, ID}}, "TH-VN"),
    ("family_tracing.requested", "TH.MSDHS", ("VN",), ALL_CONSENT,
     {"VN.MOLISA": {OPS, ID, FAM}}, "TH-VN"),
    ("referral.sent", "KH.MOSVY", ("VN.VWU",), ALL_CONSENT,
     {"VN.VWU": {OPS, "health", REI}}, "KH-VN"),
    ("travel_document.issued", "VN.MOLISA", ("KH",), ALL_CONSENT,
     {"KH.MOSVY": {OPS, ID, LOG}}, "KH-VN"),
    ("repatriation.approved", "CN.MCA", ("VN",), ALL_CONSENT,
     {"VN.MOLISA": {OPS, LOG}, "VN.MPS": {OPS, LOG}}, "CN-VN"),
    ("case.closed", "MM.DSW", ("CN",), ALL_CONSENT,
     {"CN.MCA": {OPS}, "CN.MPS": {OPS}}, "CN-MM"),
    ("return_plan.proposed", "LA.MOLSW", ("VN",), ALL_CONSENT,
     {"VN.MOLISA": PLAN_GOV, "VN.VWU": {OPS, LOG, REI}}, "COMMIT-ACTIP"),
    ("nationality_verification.requested", "KH.MOSVY", ("LA",), ALL_CONSENT,
     {"LA.MOLSW": {OPS, ID}, "LA.MPS": {OPS, ID}}, "COMMIT-ACTIP"),
    ("origin.notified", "MM.DSW", ("VN",), ALL_CONSENT, {"VN.MOLISA": {OPS, ID}},
     "COMMIT-ACTIP"),
]


@pytest.mark.parametrize(("event", "sender", "to", "state", "expected", "ident"), DELIVERIES)
def test_who_gets_what(event: str, sender: str, to: tuple[str, ...], state: CaseState,
                       expected: dict[str, set[str]], ident: str) -> None:
    """Each agreement grants exactly the recipients and categories its document lists."""
    decision = decide(event, sender, to, state)
    assert grants_of(decision) == expected
    assert isinstance(decision, Deliver)
    assert [i for i, _ in decision.agreements] == [ident]


REJECTIONS = [
    # (event, sender, to, state, code)
    ("origin.notified", "TH.MSDHS", ("KH",), NO_CONSENT, "consent_missing"),
    ("family_tracing.requested", "TH.MSDHS", ("VN",), CaseState(frozenset({"ngo_sharing"})),
     "consent_missing"),
    ("origin.notified", "LA.MOLSW", ("VN",), NO_CONSENT, "consent_missing"),
    ("return_plan.proposed", "TH.MSDHS", ("KH.CCPCR",), ALL_CONSENT, "recipient_not_permitted"),
    ("origin.notified", "TH.RTP", ("KH",), ALL_CONSENT, "event_type_not_covered"),
    ("referral.sent", "LA.MOLSW", ("VN",), ALL_CONSENT, "event_type_not_covered"),
    ("identification.decided", "TH.MSDHS", ("KH",), ALL_CONSENT, "event_type_not_covered"),
    ("no.such_event", "TH.MSDHS", ("KH",), ALL_CONSENT, "event_type_not_covered"),
    ("repatriation.approved", "TH.MSDHS", ("KH",), HOLD, "witness_hold"),
    ("handover.scheduled", "TH.MSDHS", ("MM",), HOLD, "witness_hold"),
    ("handover.completed", "CN.MCA", ("VN",), HOLD, "witness_hold"),
    ("repatriation.approved", "LA.MOLSW", ("VN",), HOLD, "witness_hold"),
    ("origin.notified", "TH.MSDHS", ("SG",), ALL_CONSENT, "no_agreement"),
    ("origin.notified", "REG.SECRETARIAT", ("KH",), ALL_CONSENT, "no_agreement"),
    ("origin.notified", "TH.MSDHS", ("TH.RTP",), ALL_CONSENT, "no_agreement"),
    ("origin.notified", "XX.NOBODY", ("KH",), ALL_CONSENT, "unknown_sender"),
]


@pytest.mark.parametrize(("event", "sender", "to", "state", "code"), REJECTIONS)
def test_who_is_refused_and_why(event: str, sender: str, to: tuple[str, ...], state: CaseState,
                                code: str) -> None:
    """Each refusal comes with the stable reject code of DESIGN.md and delivers to nobody."""
    decision = decide(event, sender, to, state)
    assert isinstance(decision, Reject), decision
    assert decision.code == code and decision.code in REJECT_CODES


def test_handling_code_outside_the_agreement_is_not_covered() -> None:
    """An H0 origin notification is refused: TH-KH allows only H2 and H3 for it."""
    decision = decide("origin.notified", "TH.MSDHS", ("KH",), handling_code="H0")
    assert isinstance(decision, Reject) and decision.code == "event_type_not_covered"


def test_ccpcr_is_refused_while_cwcc_receives_under_th_kh() -> None:
    """An event addressed to KH and KH.CCPCR reaches KH's permitted recipients, not CCPCR."""
    decision = decide("return_plan.proposed", "TH.MSDHS", ("KH", "KH.CCPCR"))
    assert set(grants_of(decision)) == {"KH.MOSVY", "KH.CWCC"}
    assert isinstance(decision, Deliver)
    (refusal,) = decision.refused
    assert (refusal.participant, refusal.code) == ("KH.CCPCR", "recipient_not_permitted")
    assert refusal.clause == "TH-KH v2 §events.return_plan.proposed.recipients.KH"


def test_addressing_one_participant_narrows_the_counterpart() -> None:
    """Addressing KH.CWCC alone delivers to CWCC only, not to every KH recipient."""
    assert set(grants_of(decide("return_plan.proposed", "TH.MSDHS", ("KH.CWCC",)))) == {"KH.CWCC"}


def test_ngo_without_sharing_consent_is_filtered_out() -> None:
    """Without ngo_sharing consent the NGO is refused (consent_missing); the ministry still gets it."""
    decision = decide("return_plan.proposed", "TH.MSDHS", ("KH",), NO_NGO)
    assert set(grants_of(decision)) == {"KH.MOSVY"}
    assert isinstance(decision, Deliver)
    assert [(r.participant, r.code) for r in decision.refused] == [("KH.CWCC", "consent_missing")]


def test_only_ngo_addressed_without_consent_rejects_with_consent_missing() -> None:
    """If every recipient is filtered out for consent, the event is rejected consent_missing."""
    decision = decide("referral.sent", "TH.MSDHS", ("KH.CWCC",), NO_NGO)
    assert isinstance(decision, Reject) and decision.code == "consent_missing"


def test_multi_party_is_the_union_of_each_counterparts_agreement() -> None:
    """A Myanmar national transiting Lao PDR: TH-MM and TH-LA each decide their own side."""
    decision = decide("return_plan.proposed", "TH.MSDHS", ("MM", "LA"))
    assert set(grants_of(decision)) == {"MM.DSW", "LA.MOLSW", "LA.LWU"}
    assert isinstance(decision, Deliver)
    assert decision.agreements == (("TH-LA", 1), ("TH-MM", 2))


def test_multi_party_refuses_the_counterpart_whose_agreement_does_not_cover() -> None:
    """KH to VN and LA: KH-VN covers referral.sent, the regional fallback for LA does not."""
    decision = decide("referral.sent", "KH.MOSVY", ("VN", "LA"))
    assert set(grants_of(decision)) == {"VN.MOLISA", "VN.VWU"}
    assert isinstance(decision, Deliver)
    assert [(r.participant, r.code) for r in decision.refused] == [("LA", "event_type_not_covered")]


@pytest.mark.parametrize(("a", "b"), list(permutations(COUNTRIES, 2)))
def test_regional_fallback_only_where_no_bilateral_applies(a: str, b: str) -> None:
    """Every pair uses its bilateral agreement if one exists, else COMMIT-ACTIP."""
    chosen = select_agreement(policy(), a, b, NOW)
    assert not isinstance(chosen, Reject)
    expected = "bilateral" if frozenset((a, b)) in BILATERAL else "regional"
    assert chosen[0].kind == expected


def test_expired_bilateral_is_not_in_force_and_does_not_fall_back() -> None:
    """A lapsed TH-KH rejects with agreement_not_in_force rather than silently going regional."""
    lapsed = replace(agreement("TH-KH"), in_force_until=datetime(2025, 1, 1, tzinfo=UTC))
    others = [a for a in committed() if a.id != "TH-KH"]
    decision = route(header("origin.notified", "TH.MSDHS", ("KH",)), [lapsed, *others],
                     directory(), ALL_CONSENT, NOW)
    assert isinstance(decision, Reject) and decision.code == "agreement_not_in_force"


def test_not_yet_in_force_is_refused() -> None:
    """Before CN-VN entered into force (15 Sep 2010) its events are not routed."""
    early = datetime(2010, 9, 14, 23, 59, tzinfo=UTC)
    decision = route(header("case.closed", "CN.MCA", ("VN",)), policy(), directory(),
                     ALL_CONSENT, early)
    assert isinstance(decision, Reject) and decision.code == "agreement_not_in_force"


def test_newest_version_in_force_wins() -> None:
    """With v2 and a v3 of TH-KH both in force, v3 applies."""
    v3 = replace(agreement("TH-KH"), version=3)
    decision = route(header("origin.notified", "TH.MSDHS", ("KH",)), [*committed(), v3],
                     directory(), ALL_CONSENT, NOW)
    assert isinstance(decision, Deliver) and decision.agreements == (("TH-KH", 3),)


def test_without_the_regional_framework_an_uncovered_pair_has_no_agreement() -> None:
    """LA-VN has no bilateral: without COMMIT-ACTIP loaded it is no_agreement."""
    bilateral_only = index_agreements(a for a in committed() if a.kind == "bilateral")
    decision = route(header("origin.notified", "LA.MOLSW", ("VN",)), bilateral_only,
                     directory(), ALL_CONSENT, NOW)
    assert isinstance(decision, Reject) and decision.code == "no_agreement"


def test_receipts_go_back_to_the_addressed_participant_with_operational_only() -> None:
    """receipt.* needs no agreement: operational metadata to the participant it addresses."""
    decision = decide("receipt.delivered", "KH.MOSVY", ("TH.MSDHS",), NO_CONSENT)
    assert grants_of(decision) == {"TH.MSDHS": {OPS}}
    assert isinstance(decision, Deliver) and decision.agreements == ()


def test_deadline_events_also_reach_the_secretariat() -> None:
    """sla.breached goes to the responsible focal point and to the secretariat."""
    decision = decide("sla.breached", "TH.MSDHS", ("VN.MOLISA",), NO_CONSENT)
    assert grants_of(decision) == {"VN.MOLISA": {OPS}, "REG.SECRETARIAT": {OPS}}


def test_consent_stays_in_the_country_with_operational_metadata_only() -> None:
    """consent.recorded goes to the sender country's government and police focal points only."""
    decision = decide("consent.recorded", "TH.MSDHS", ("TH",), NO_CONSENT)
    assert grants_of(decision) == {"TH.RTP": {OPS}}
    assert isinstance(decision, Deliver) and decision.agreements == ()


def test_consent_addressed_abroad_is_not_covered() -> None:
    """consent.withdrawn addressed to another country is refused: it never leaves home."""
    decision = decide("consent.withdrawn", "KH.MOSVY", ("TH",), NO_CONSENT)
    assert isinstance(decision, Reject) and decision.code == "event_type_not_covered"


def test_receipt_to_an_unknown_participant_is_rejected() -> None:
    """A receipt addressed to nobody known is recipient_not_permitted."""
    decision = decide("receipt.processed", "KH.MOSVY", ("TH",), NO_CONSENT)
    assert isinstance(decision, Reject) and decision.code == "recipient_not_permitted"


def test_explain_names_the_clause_of_every_grant_and_refusal() -> None:
    """The explanation cites TH-KH v2 §events.return_plan.proposed.recipients.KH[1] for CWCC."""
    text = "\n".join(explain(decide("return_plan.proposed", "TH.MSDHS", ("KH", "KH.CCPCR"))))
    assert "TH-KH v2 §events.return_plan.proposed.recipients.KH[1]: KH.CWCC" in text
    assert "refuse KH.CCPCR [recipient_not_permitted]" in text
    assert "TH-KH v2 §in_force" in text


def test_memo_is_invisible_and_follows_the_directory() -> None:
    """A memoized decision equals a fresh one, and a new directory object is decided afresh."""
    h = header("return_plan.proposed", "TH.MSDHS", ("KH",))
    fresh = route(h, index_agreements(committed(), 0), directory(), ALL_CONSENT, NOW)
    memo = index_agreements(committed())
    assert route(h, memo, directory(), ALL_CONSENT, NOW) == fresh
    without_cwcc = directory(drop=["KH.CWCC"])
    assert set(grants_of(route(h, memo, without_cwcc, ALL_CONSENT, NOW))) == {"KH.MOSVY"}


def allowed_categories(h: Header, decision: Deliver, recipient: str) -> set[str]:
    """Union of categories of every recipient entry naming ``recipient`` in the applied rules."""
    people = directory().participants
    found: set[str] = set()
    for ident, version in decision.agreements:
        doc = next(a for a in committed() if (a.id, a.version) == (ident, version))
        rule = doc.events[h.event_type]
        for entry in rule.recipients:
            if entry.participant == recipient or (
                    entry.role == people[recipient].role
                    and entry.side in (people[recipient].country, "*")):
                found |= entry.categories
    return found


ADDRESSES = [*COUNTRIES, *PARTICIPANTS, "REG", "SG"]


@settings(max_examples=300, deadline=None)
@given(event_type=st.sampled_from(EVENT_TYPES), sender=st.sampled_from(sorted(PARTICIPANTS)),
       to=st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=3, unique=True),
       consent=st.frozensets(st.sampled_from(CONSENT_SCOPES)), hold=st.booleans(),
       code=st.sampled_from(HANDLING_CODES))
def test_no_recipient_ever_gets_a_category_its_agreement_does_not_list(
        event_type: str, sender: str, to: list[str], consent: frozenset[str], hold: bool,
        code: str) -> None:
    """For any event, every grant is within what the applied agreements list for that recipient."""
    h = header(event_type, sender, to, handling_code=code)
    decision = route(h, policy(), directory(), CaseState(consent, hold), NOW)
    if isinstance(decision, Reject):
        assert decision.code in REJECT_CODES
        return
    assert sender not in decision.grants
    for recipient, categories in decision.grants.items():
        if not decision.agreements:
            assert categories == {OPS}
            continue
        assert categories <= allowed_categories(h, decision, recipient)


def test_addressing_the_region_is_not_a_counterpart() -> None:
    """REG.SECRETARIAT addressed explicitly is refused; it receives only what a REG entry gives."""
    decision = decide("origin.notified", "TH.MSDHS", ("KH", "REG.SECRETARIAT"))
    assert set(grants_of(decision)) == {"KH.MOSVY"}
    assert isinstance(decision, Deliver)
    assert [(r.participant, r.code) for r in decision.refused] == [
        ("REG.SECRETARIAT", "recipient_not_permitted")]
