"""The routing decision: which agreement applies, who receives which data categories, or why not.

``route(header, agreements, directory, case_state, now)`` is pure and denies by default. For each
counterpart country addressed in ``header.to`` it picks the bilateral agreement of the pair (the
highest version in force), else the regional framework, and applies that agreement's rule for the
event type; a multi-party event (e.g. ``to=("MM", "LA")``) is the union of those evaluations.
Every grant and every refusal carries the clause that justifies it (``casebridge route explain``).
The rules are written out in ``deploy/agreements/README.md``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType

from casebridge.core.agreements import ANY_PARTY, Agreement, EventRule, RecipientRule
from casebridge.core.handling import check_forward
from casebridge.core.model import REGION, CaseState, Directory, Header, Participant, country_of

RECEIPTS = frozenset({"receipt.delivered", "receipt.processed", "receipt.rejected"})
TRACKER_EVENTS = frozenset({"deadline.approaching", "sla.breached"})
AUDIT_NOTICES = frozenset({"case.shredded"})
"""Metadata-only notices to the secretariat's audit trail (a node shredded a case)."""
PROVIDER_NOTICES = frozenset({"handling.permission_granted", "consent.withdrawal_notified"})
"""Metadata-only notices from a provider to the participants it addresses, like receipts."""
DOMESTIC_EVENTS = frozenset({"consent.recorded", "consent.withdrawn", "identification.decided"})
"""Case-state events that never leave the sender's country: the router learns the consent flags
from their clear header, the country's own focal points get the operational metadata."""
DOMESTIC_ROLES = frozenset({"government", "police"})
SECRETARIAT = "REG.SECRETARIAT"
BUILTIN = "builtin"  # the "agreement" label of rules that no document states (receipts, deadlines)


@dataclass(frozen=True)
class Clause:
    """One step of the justification: who or what it is about, the clause path, and a sentence."""

    subject: str  # a participant id, a country, or "event"
    path: str  # "TH-KH v2 §events.return_plan.proposed.recipients.KH[1]"
    text: str


@dataclass(frozen=True)
class Refusal:
    """A participant that was addressed, or that a rule names, but receives nothing."""

    participant: str  # a participant id, or a country when a whole counterpart was refused
    code: str  # a reject code of errors.REJECT_CODES
    why: str
    clause: str = ""


@dataclass(frozen=True)
class Deliver:
    """Deliver to ``grants`` (recipient -> the data categories it may see); ``seal()`` takes it."""

    grants: Mapping[str, frozenset[str]]
    agreements: tuple[tuple[str, int], ...]  # (id, version) of each agreement applied
    refused: tuple[Refusal, ...] = ()
    clauses: tuple[Clause, ...] = ()
    applied: Mapping[str, tuple[str, int]] = field(  # counterpart country -> agreement applied
        default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Reject:
    """Deliver to nobody; ``code`` is the stable reject code for quarantine and the receipt."""

    code: str
    why: str
    clauses: tuple[Clause, ...] = ()


Decision = Deliver | Reject


MEMO_LIMIT = 65_536
"""Decisions remembered per Policy; the memo is cleared when full (bounded memory)."""

_MemoKey = tuple[str, str, tuple[str, ...], str, frozenset[str], bool, int]


@dataclass(frozen=True)
class Target:
    """A recipient entry as it applies in one direction: the country it names, and whether its
    participants must be addressed (counterpart entries) or not (domestic and regional copies)."""

    rule: RecipientRule
    country: str
    must_be_addressed: bool
    grant: Clause | None = None  # precomputed for an entry naming one participant


@dataclass(frozen=True)
class Choice:
    """A candidate agreement for an ordered country pair, precomputed at load time."""

    agreement: Agreement
    selected: Clause  # why this agreement applies to the pair
    targets: Mapping[str, tuple[Target, ...]]  # event type -> the entries that apply


@dataclass(frozen=True)
class Policy:
    """Agreements indexed for routing: per (sender country, counterpart) the candidates.

    ``choices`` lists, newest version first, the bilateral agreements of each ordered pair, or the
    regional ones where the pair has no bilateral agreement (bilateral overrides regional).
    ``memo`` remembers decisions under a key holding every input a decision depends on (sender,
    event type, addressees, handling code, case state, the interval of ``boundaries`` that ``now``
    falls in, and the directory object itself), so it is invisible to callers: ``route`` stays a
    pure function. ``boundaries`` are all in-force instants; between two of them the choice of
    agreements cannot change.
    """

    choices: Mapping[tuple[str, str], tuple[Choice, ...]]
    boundaries: tuple[datetime, ...] = ()
    memo: dict[_MemoKey, tuple[Directory, Decision]] = field(
        default_factory=dict, compare=False, repr=False)
    memo_limit: int = MEMO_LIMIT


@dataclass(slots=True)
class _Part:
    """What one agreement grants for one counterpart country (an accumulator, never returned)."""

    agreement: Agreement
    counterpart: str
    grants: dict[str, frozenset[str]]
    refused: list[Refusal]
    clauses: list[Clause]


def index_agreements(agreements: Iterable[Agreement], memo_limit: int = MEMO_LIMIT) -> Policy:
    """Build the routing index once at load time (``route`` also accepts a plain iterable)."""
    newest_first = sorted(agreements, key=lambda a: -a.version)
    countries = sorted({c for a in newest_first for c in a.parties})
    choices = {(a, b): _candidates(newest_first, a, b) for a in countries for b in countries
               if a != b}
    instants = {a.in_force_from for a in newest_first} | {
        a.in_force_until for a in newest_first if a.in_force_until is not None}
    return Policy({pair: found for pair, found in choices.items() if found},
                  tuple(sorted(instants)), memo_limit=memo_limit)


def _candidates(agreements: list[Agreement], sender_country: str,
                counterpart: str) -> tuple[Choice, ...]:
    """The pair's bilateral agreements, else the regional ones covering both countries."""
    both = [a for a in agreements if sender_country in a.parties and counterpart in a.parties]
    bilateral = [a for a in both if a.kind == "bilateral"]
    reason = "bilateral agreement of the pair" if bilateral else (
        f"regional fallback: no bilateral {sender_country}-{counterpart} agreement")
    return tuple(Choice(a, Clause(counterpart, f"{a.label} §in_force",
                                  f"{a.label} applies to {counterpart} ({reason})"),
                        {et: _targets(rule, sender_country, counterpart)
                         for et, rule in a.events.items()})
                 for a in bilateral or both)


def _targets(rule: EventRule, sender_country: str, counterpart: str) -> tuple[Target, ...]:
    """The recipient entries of ``rule`` that apply when ``sender_country`` sends to the pair."""
    found = []
    for entry in rule.recipients:
        if entry.side in (counterpart, ANY_PARTY):
            target = Target(entry, counterpart, True)
        elif entry.side == REGION or (entry.domestic and entry.side == sender_country):
            target = Target(entry, entry.side, False)
        else:
            continue
        if entry.participant is None:
            found.append(target)
        elif country_of(entry.participant) == target.country:
            found.append(replace(target, grant=Clause(entry.participant, entry.clause,
                                                      entry.grant_text)))
    return tuple(found)


def select_agreement(policy: Policy, sender_country: str, counterpart: str,
                     now: datetime) -> tuple[Agreement, Clause] | Reject:
    """The bilateral agreement of the pair, else the regional one; in force at ``now``."""
    choice = _choose(policy, sender_country, counterpart, now)
    return choice if isinstance(choice, Reject) else (choice.agreement, choice.selected)


def _choose(policy: Policy, sender_country: str, counterpart: str,
            now: datetime) -> Choice | Reject:
    choices = policy.choices.get((sender_country, counterpart))
    if not choices:
        return Reject("no_agreement", f"no agreement between {sender_country} and {counterpart}")
    for choice in choices:
        if choice.agreement.in_force(now):
            return choice
    lapsed, clause = choices[0].agreement, choices[0].selected
    return Reject("agreement_not_in_force", f"{clause.text} is not in force then (in force "
                  f"{_span(lapsed)})", (Clause(counterpart, clause.path, "not in force"),))


def _span(agreement: Agreement) -> str:
    until = agreement.in_force_until
    end = f"before {until.date().isoformat()}" if until else "with no end date"
    return f"from {agreement.in_force_from.date().isoformat()} {end}"


def route(header: Header, agreements: Policy | Iterable[Agreement], directory: Directory,
          case_state: CaseState, now: datetime) -> Decision:
    """Deliver to whom the applicable agreements permit, or Reject with a stable code."""
    policy = agreements if isinstance(agreements, Policy) else index_agreements(agreements, 0)
    restricted = check_forward(header, directory)  # before the memo: its key omits the permission
    if restricted is not None:
        return Reject("handling_restricted", restricted, (Clause(
            "event", f"{BUILTIN} §handling.{header.handling_code}", restricted),))
    if not policy.memo_limit:
        return _decide(header, policy, directory, case_state, now)
    key = (header.sender, header.event_type, header.to, header.handling_code,
           case_state.consent, case_state.witness_hold, bisect_right(policy.boundaries, now))
    hit = policy.memo.get(key)
    if hit is not None and hit[0] is directory:
        return hit[1]
    decision = _decide(header, policy, directory, case_state, now)
    if len(policy.memo) >= policy.memo_limit:
        policy.memo.clear()
    policy.memo[key] = (directory, decision)
    return decision


def _decide(header: Header, policy: Policy, directory: Directory, case_state: CaseState,
            now: datetime) -> Decision:
    sender = directory.participants.get(header.sender)
    if sender is None:
        return Reject("unknown_sender", f"{header.sender} is not in the directory")
    if header.event_type in RECEIPTS or header.event_type in TRACKER_EVENTS \
            or header.event_type in AUDIT_NOTICES or header.event_type in PROVIDER_NOTICES:
        return _route_builtin(header, sender, directory)
    if header.event_type in DOMESTIC_EVENTS:
        return _route_domestic(header, sender, directory)
    counterparts = _counterparts(header.to, sender.country)
    if not counterparts:
        return Reject("no_agreement", f"{header.event_type} addresses no counterpart country "
                                      f"(only the sender's own {sender.country} or {REGION})")
    parts = [_route_pair(header, sender, cp, directory, case_state, policy, now)
             for cp in counterparts]
    return _merge(header, parts, counterparts)


def _counterparts(to: tuple[str, ...], own: str) -> list[str]:
    """The countries addressed directly or through a participant, less the sender's and REG."""
    if len(to) == 1:  # the common case, without building a set
        country = to[0].split(".", 1)[0]
        return [] if country in (own, REGION) else [country]
    return sorted({address.split(".", 1)[0] for address in to} - {own, REGION})


def _route_pair(header: Header, sender: Participant, counterpart: str, directory: Directory,
                state: CaseState, policy: Policy, now: datetime) -> _Part | Reject:
    chosen = _choose(policy, sender.country, counterpart, now)
    if isinstance(chosen, Reject):
        return chosen
    agreement, selected = chosen.agreement, chosen.selected
    rule = agreement.events.get(header.event_type)
    if rule is None:
        return Reject("event_type_not_covered", f"{agreement.label} does not cover "
                      f"{header.event_type}", (selected, Clause(
                          "event", f"{agreement.label} §events", "event type not listed")))
    refused = _check_rule(rule, header, sender, state)
    if refused is not None:
        return Reject(refused.code, refused.why, (selected, Clause(
            "event", refused.clause, refused.why)))
    part = _Part(agreement, counterpart, {}, [], [selected])
    for target in chosen.targets[header.event_type]:
        _apply_target(part, target, header, sender, directory, state)
    _refuse_unlisted(part, rule, header, counterpart)
    return part


def _check_rule(rule: EventRule, header: Header, sender: Participant,
                state: CaseState) -> Refusal | None:
    """The event-level conditions: sender, handling code, witness hold, consent."""
    side = sender.country if sender.country in rule.senders else ANY_PARTY
    allowed = rule.senders.get(side, frozenset())
    if sender.id not in allowed and sender.role not in allowed:
        return Refusal(sender.id, "event_type_not_covered", f"{sender.id} ({sender.role}) may not "
                       f"send {rule.event_type}", f"{rule.clause}.senders.{side}")
    if header.handling_code not in rule.handling_codes:
        return Refusal(sender.id, "event_type_not_covered", f"handling code "
                       f"{header.handling_code} is not allowed for {rule.event_type}",
                       f"{rule.clause}.handling_codes")
    if rule.witness_hold and state.witness_hold:
        return Refusal(sender.id, "witness_hold", f"{rule.event_type} is refused while the "
                       "victim is held as a witness", f"{rule.clause}.witness_hold")
    missing = rule.consent - state.consent
    if missing:
        return Refusal(sender.id, "consent_missing", f"{rule.event_type} needs consent "
                       f"{', '.join(sorted(missing))}", f"{rule.clause}.consent")
    return None


def _apply_target(part: _Part, target: Target, header: Header, sender: Participant,
                  directory: Directory, state: CaseState) -> None:
    """Grant (or refuse for consent) the participants one recipient entry names."""
    rule = target.rule
    whole = not target.must_be_addressed or target.country in header.to
    missing = rule.consent - state.consent if rule.consent else frozenset()
    for pid in _expand(rule, target.country, directory):
        if pid == sender.id or not (whole or pid in header.to):
            continue
        if missing:
            why = f"needs consent {', '.join(sorted(missing))}"
            part.refused.append(Refusal(pid, "consent_missing", why, rule.clause))
            continue
        part.grants[pid] = part.grants.get(pid, frozenset()) | rule.categories
        part.clauses.append(target.grant or Clause(pid, rule.clause, rule.grant_text))


def _expand(rule: RecipientRule, country: str, directory: Directory) -> list[str]:
    if rule.participant is not None:
        return [rule.participant] if rule.participant in directory.participants else []
    return [p.id for p in directory.participants.values()
            if p.country == country and p.role == rule.role]


def _refuse_unlisted(part: _Part, rule: EventRule, header: Header, counterpart: str) -> None:
    refused = {r.participant for r in part.refused}
    for pid in header.to:
        if "." in pid and country_of(pid) == counterpart and pid not in part.grants \
                and pid not in refused:
            part.refused.append(Refusal(pid, "recipient_not_permitted", f"{pid} is not a "
                                        f"recipient of {rule.event_type} under "
                                        f"{part.agreement.label}",
                                        f"{rule.clause}.recipients.{counterpart}"))


def _merge(header: Header, parts: list[_Part | Reject], counterparts: list[str]) -> Decision:
    if len(parts) == 1:
        only = parts[0]
        if isinstance(only, Reject):
            return only
        if only.grants:
            return _deliver(header, only)
    grants: dict[str, frozenset[str]] = {}
    refused: list[Refusal] = []
    clauses: list[Clause] = []
    for counterpart, part in zip(counterparts, parts, strict=True):
        if isinstance(part, Reject):
            refused.append(Refusal(counterpart, part.code, part.why))
            clauses.extend(part.clauses)
            continue
        for pid, categories in part.grants.items():
            grants[pid] = grants.get(pid, frozenset()) | categories
        refused.extend(part.refused)
        clauses.extend(part.clauses)
    refused = [r for r in refused if r.participant not in grants]
    if not grants:
        return _nobody(parts, refused, tuple(clauses))
    refused.extend(_unknown_addressees(header, grants, refused))
    applied = {p.counterpart: (p.agreement.id, p.agreement.version)
               for p in parts if isinstance(p, _Part) and p.grants}
    return Deliver(MappingProxyType(dict(sorted(grants.items()))),
                   tuple(dict.fromkeys(applied.values())), tuple(refused), tuple(clauses),
                   MappingProxyType(applied))


def _deliver(header: Header, part: _Part) -> Deliver:
    """The common case: one counterpart, somebody permitted."""
    refused = [r for r in part.refused if r.participant not in part.grants]
    if len(header.to) > 1 or "." in header.to[0]:
        refused.extend(_unknown_addressees(header, part.grants, refused))
    applied = (part.agreement.id, part.agreement.version)
    return Deliver(MappingProxyType(dict(sorted(part.grants.items()))), (applied,),
                   tuple(refused), tuple(part.clauses),
                   MappingProxyType({part.counterpart: applied}))


def _nobody(parts: list[_Part | Reject], refused: list[Refusal],
            clauses: tuple[Clause, ...]) -> Reject:
    """No recipient at all: the first counterpart's reject, else why each was refused."""
    rejects = [p for p in parts if isinstance(p, Reject)]
    if rejects and len(rejects) == len(parts):
        return Reject(rejects[0].code, rejects[0].why, clauses)
    codes = {r.code for r in refused}
    code = "consent_missing" if codes == {"consent_missing"} else "recipient_not_permitted"
    why = "; ".join(f"{r.participant}: {r.why}" for r in refused) or "no permitted recipient"
    return Reject(code, why, clauses + tuple(Clause(r.participant, r.clause, r.why)
                                             for r in refused if r.clause))


def _unknown_addressees(header: Header, grants: Mapping[str, frozenset[str]],
                        refused: list[Refusal]) -> list[Refusal]:
    """Addressed participants outside every counterpart rule (e.g. the sender's own agencies)."""
    seen = set(grants) | {r.participant for r in refused}
    return [Refusal(pid, "recipient_not_permitted", f"{pid} is not a recipient under any "
                    "applicable agreement") for pid in header.to if "." in pid and pid not in seen]


def _route_builtin(header: Header, sender: Participant, directory: Directory) -> Decision:
    """Receipts and tracker events: operational metadata to addressed participants only."""
    grants: dict[str, frozenset[str]] = {}
    refused: list[Refusal] = []
    targets = list(header.to)
    if (header.event_type in TRACKER_EVENTS or header.event_type in AUDIT_NOTICES) \
            and SECRETARIAT not in targets:
        targets.append(SECRETARIAT)
    for target in targets:
        if target in directory.participants and target != sender.id:
            grants[target] = frozenset({"operational"})
        elif target != sender.id and target != SECRETARIAT:
            refused.append(Refusal(target, "recipient_not_permitted", f"{target} is not a "
                                   "participant in the directory", f"{BUILTIN} §metadata"))
    clause = Clause("event", f"{BUILTIN} §metadata", f"{header.event_type} carries operational "
                    "metadata only, to the participants it addresses")
    if not grants:
        return Reject("recipient_not_permitted", f"{header.event_type} addresses no known "
                      "participant", (clause,))
    return Deliver(MappingProxyType(grants), (), tuple(refused), (clause,))


def _route_domestic(header: Header, sender: Participant, directory: Directory) -> Decision:
    """Consent and identification: operational metadata to the sender country's focal points."""
    clause = Clause("event", f"{BUILTIN} §domestic", f"{header.event_type} stays in "
                    f"{sender.country}: operational metadata to its government and police focal points")
    foreign = [t for t in header.to if t.split(".", 1)[0] != sender.country]
    if foreign:
        return Reject("event_type_not_covered", f"{header.event_type} never leaves "
                      f"{sender.country} (addressed {', '.join(foreign)})", (clause,))
    grants = {p.id: frozenset({"operational"}) for p in directory.participants.values()
              if p.country == sender.country and p.role in DOMESTIC_ROLES and p.id != sender.id}
    if not grants:
        return Reject("recipient_not_permitted", f"no focal point in {sender.country} to tell", (clause,))
    return Deliver(MappingProxyType(grants), (), (), (clause,))


def explain(decision: Decision) -> list[str]:
    """The decision as lines of text, clause by clause (for ``casebridge route explain``)."""
    if isinstance(decision, Reject):
        lines = [f"REJECT {decision.code}: {decision.why}"]
    else:
        applied = ", ".join(f"{i} v{v}" for i, v in decision.agreements) or BUILTIN
        lines = [f"DELIVER under {applied}"]
        lines += [f"  grant  {pid}: {', '.join(sorted(c))}" for pid, c in decision.grants.items()]
        lines += [f"  refuse {r.participant} [{r.code}]: {r.why}"
                  + (f"  ({r.clause})" if r.clause else "") for r in decision.refused]
    lines.append("because:")
    lines += [f"  {c.path}: {c.subject}: {c.text}" for c in decision.clauses]
    return lines
