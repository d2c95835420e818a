"""Agreements as data: the YAML document model, its strict parser, and signing by every party.

``parse_agreement(text, source)`` turns one document into a frozen ``Agreement`` or raises a
``PolicyError`` whose ``why`` starts with ``source:line:`` (the line of the offending YAML node).
Signing is Ed25519 over ``canonical_bytes(text)``: a domain tag followed by the exact UTF-8 bytes of
the document, so what the parties read (comments marking configuration included) is what they sign.
``load_agreements`` accepts only documents signed by every signatory with a key the directory holds.
The schema is described for humans in ``deploy/agreements/README.md``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from typing import NoReturn

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from casebridge.core.errors import Malformed, PolicyError
from casebridge.core.keys import signature_valid
from casebridge.core.model import (
    CONSENT_SCOPES,
    COUNTRIES,
    DATA_CATEGORIES,
    EVENT_TYPES,
    HANDLING_CODES,
    PARTICIPANT_ID,
    REGION,
    ROLES,
    Directory,
    KeyRecord,
)

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's composer when PyYAML has it (7x faster); both give the node marks used for lines."""

KINDS = ("bilateral", "regional")
ANY_PARTY = "*"
"""Side key of a regional document: stands for each addressed counterpart country."""

TOP_KEYS = {"id", "version", "title", "kind", "parties", "signatories", "in_force", "source",
            "handling_codes", "checkpoints", "events", "deadlines"}
EVENT_KEYS = {"senders", "recipients", "consent", "witness_hold", "handling_codes", "source"}
RECIPIENT_KEYS = {"participant", "role", "categories", "consent", "domestic", "source"}
DEADLINE_KEYS = {"name", "opens_on", "closes_on", "party", "working_days", "source"}


@dataclass(frozen=True)
class RecipientRule:
    """One entry of ``events.<type>.recipients.<side>``: a participant or a role, and its view."""

    side: str  # a party country, "REG" (regional bodies) or "*" (each addressed counterpart)
    participant: str | None
    role: str | None
    categories: frozenset[str]
    consent: frozenset[str]  # scopes this recipient additionally needs (e.g. ngo_sharing)
    domestic: bool  # also a recipient when the sender is from its own side (a domestic copy)
    clause: str  # "TH-KH v2 §events.return_plan.proposed.recipients.KH[1]"

    @cached_property
    def grant_text(self) -> str:
        return "may see " + ", ".join(sorted(self.categories))


@dataclass(frozen=True)
class EventRule:
    """What an agreement says about one event type."""

    event_type: str
    senders: Mapping[str, frozenset[str]]  # side -> participant ids and roles that may send
    recipients: tuple[RecipientRule, ...]
    consent: frozenset[str]  # scopes that must all be in CaseState.consent
    witness_hold: bool  # refused while the case is under a witness hold
    handling_codes: frozenset[str]
    clause: str  # "TH-KH v2 §events.return_plan.proposed"


@dataclass(frozen=True)
class Deadline:
    """An obligation the event ``opens_on`` opens on ``party``, closed by ``closes_on``."""

    name: str
    opens_on: str
    closes_on: str
    party: str  # the country that must act, or "*" (each addressed counterpart)
    working_days: int
    source: str  # a citation, or "configuration" when no source fixes the value
    clause: str


@dataclass(frozen=True)
class Agreement:
    """One signed, versioned agreement: a bilateral MOU or the regional framework."""

    id: str
    version: int
    title: str
    kind: str  # bilateral | regional
    parties: tuple[str, ...]
    signatories: tuple[str, ...]
    in_force_from: datetime  # inclusive, 00:00 UTC of the first day
    in_force_until: datetime | None  # exclusive, 00:00 UTC of the day after the last day
    events: Mapping[str, EventRule]
    deadlines: tuple[Deadline, ...]
    checkpoints: tuple[Mapping[str, str], ...]
    source: str
    digest: bytes  # SHA-256 of canonical_bytes(text)
    origin: str  # the file it came from

    @cached_property
    def label(self) -> str:
        return f"{self.id} v{self.version}"

    def in_force(self, now: datetime) -> bool:
        return self.in_force_from <= now and (self.in_force_until is None
                                               or now < self.in_force_until)


SIGNING_TAG = b"casebridge-agreement-v1\n"


def canonical_bytes(text: str) -> bytes:
    """What every signatory signs: a domain tag, then the document's exact UTF-8 bytes."""
    return SIGNING_TAG + text.encode("utf-8")


def compose(text: str, source: str) -> yaml.Node:
    """The YAML node tree of a document (lines kept for errors), or ``PolicyError``."""
    try:
        root = yaml.compose(text, Loader=LOADER)
    except yaml.YAMLError as exc:
        raise yaml_error(source, exc) from exc
    if root is None:
        raise PolicyError(f"{source}:1: empty document")
    return root


def parse_agreement(text: str, source: str) -> Agreement:
    """Parse and validate one document; any fault raises ``PolicyError("source:line: reason")``."""
    root = compose(text, source)
    doc = Doc(source)
    top = doc.mapping(root, "the document", required=TOP_KEYS - {"handling_codes", "checkpoints",
                                                                  "deadlines", "source"},
                      allowed=TOP_KEYS)
    ident = doc.string(top["id"], "id", pattern=r"^(?:[A-Z]{2}-[A-Z]{2}|[A-Z][A-Z-]{1,30})$")
    version = doc.integer(top["version"], "version", minimum=1)
    label = f"{ident} v{version}"
    kind = doc.choice(top["kind"], "kind", KINDS)
    parties = doc.strings(top["parties"], "parties", COUNTRIES, unique=True)
    _check_parties(doc, top["parties"], kind, parties)
    signatories = doc.strings(top["signatories"], "signatories", unique=True,
                              pattern=PARTICIPANT_ID)
    _check_signatories(doc, top["signatories"], kind, parties, signatories)
    start, until = _in_force(doc, top["in_force"])
    codes = _codes(doc, top.get("handling_codes"), frozenset(HANDLING_CODES))
    sides = (*parties, REGION) + ((ANY_PARTY,) if kind == "regional" else ())
    events = doc.mapping(top["events"], "events", allowed=set(EVENT_TYPES))
    rules = {et: _event(doc, node, et, label, sides, codes) for et, node in events.items()}
    return Agreement(
        id=ident, version=version, title=doc.string(top["title"], "title"), kind=kind,
        parties=parties, signatories=signatories, in_force_from=start, in_force_until=until,
        events=rules, deadlines=_deadlines(doc, top.get("deadlines"), label, parties),
        checkpoints=_checkpoints(doc, top.get("checkpoints"), parties),
        source=doc.string(top["source"], "source") if "source" in top else "",
        digest=hashlib.sha256(canonical_bytes(text)).digest(), origin=source)


def _check_parties(doc: Doc, node: yaml.Node, kind: str, parties: tuple[str, ...]) -> None:
    if kind == "bilateral" and len(parties) != 2:
        doc.fail(node, f"a bilateral agreement has exactly 2 parties, not {len(parties)}")
    if kind == "regional" and len(parties) < 3:
        doc.fail(node, "a regional agreement has at least 3 parties")


def _check_signatories(doc: Doc, node: yaml.Node, kind: str, parties: tuple[str, ...],
                       signatories: tuple[str, ...]) -> None:
    countries = [s.split(".", 1)[0] for s in signatories]
    for party in parties:
        if party not in countries:
            doc.fail(node, f"party {party} has no signatory (every party signs)")
    outside = sorted(set(countries) - set(parties) - {REGION})
    if outside:
        doc.fail(node, f"signatories from non-parties: {', '.join(outside)}")


def _in_force(doc: Doc, node: yaml.Node) -> tuple[datetime, datetime | None]:
    fields = doc.mapping(node, "in_force", required={"from"}, allowed={"from", "until"})
    start = _midnight(doc.day(fields["from"], "in_force.from"))
    if "until" not in fields or is_null(fields["until"]):
        return start, None
    until = _midnight(doc.day(fields["until"], "in_force.until")) + timedelta(days=1)
    if until <= start:
        doc.fail(fields["until"], "in_force.until is before in_force.from")
    return start, until


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _codes(doc: Doc, node: yaml.Node | None, default: frozenset[str]) -> frozenset[str]:
    if node is None:
        return default
    return frozenset(doc.strings(node, "handling_codes", HANDLING_CODES, unique=True))


def _event(doc: Doc, node: yaml.Node, event_type: str, label: str, sides: tuple[str, ...],
           codes: frozenset[str]) -> EventRule:
    where = f"events.{event_type}"
    fields = doc.mapping(node, where, required={"senders", "recipients"}, allowed=EVENT_KEYS)
    senders = doc.mapping(fields["senders"], f"{where}.senders", allowed=set(sides) - {REGION})
    recipients = doc.mapping(fields["recipients"], f"{where}.recipients", allowed=set(sides))
    rules = tuple(_recipient(doc, item, side, i, f"{label} §{where}.recipients.{side}[{i}]")
                  for side, seq in recipients.items()
                  for i, item in enumerate(doc.sequence(seq, f"{where}.recipients.{side}")))
    return EventRule(
        event_type=event_type,
        senders={side: frozenset(_party_refs(doc, n, f"{where}.senders.{side}", side))
                 for side, n in senders.items()},
        recipients=rules,
        consent=_scopes(doc, fields.get("consent"), f"{where}.consent"),
        witness_hold=doc.boolean(fields["witness_hold"], f"{where}.witness_hold")
        if "witness_hold" in fields else False,
        handling_codes=_codes(doc, fields.get("handling_codes"), codes),
        clause=f"{label} §{where}")


def _party_refs(doc: Doc, node: yaml.Node, where: str, side: str) -> tuple[str, ...]:
    refs = doc.strings(node, where, unique=True)
    for ref in refs:
        if ref not in ROLES and not _participant_of(ref, side):
            doc.fail(node, f"{where}: {ref!r} is neither a role ({', '.join(ROLES)}) "
                           f"nor a participant of {side}")
    return refs


def _participant_of(ref: str, side: str) -> bool:
    return PARTICIPANT_ID.match(ref) is not None and (side == ANY_PARTY
                                                      or ref.split(".", 1)[0] == side)


def _recipient(doc: Doc, node: yaml.Node, side: str, index: int, clause: str) -> RecipientRule:
    where = clause.split("§", 1)[1]
    fields = doc.mapping(node, where, required={"categories"}, allowed=RECIPIENT_KEYS)
    if ("participant" in fields) == ("role" in fields):
        doc.fail(node, f"{where}: give exactly one of 'participant' or 'role'")
    participant = role = None
    if "participant" in fields:
        participant = doc.string(fields["participant"], f"{where}.participant")
        if not _participant_of(participant, side):
            doc.fail(fields["participant"], f"{participant!r} is not a participant of {side}")
    else:
        role = doc.choice(fields["role"], f"{where}.role", ROLES)
    categories = doc.strings(fields["categories"], f"{where}.categories", DATA_CATEGORIES,
                             unique=True)
    if not categories:
        doc.fail(fields["categories"], f"{where}.categories is empty")
    domestic = "domestic" in fields and doc.boolean(fields["domestic"], f"{where}.domestic")
    return RecipientRule(side, participant, role, frozenset(categories),
                         _scopes(doc, fields.get("consent"), f"{where}.consent"), domestic, clause)


def _scopes(doc: Doc, node: yaml.Node | None, where: str) -> frozenset[str]:
    return frozenset(doc.strings(node, where, CONSENT_SCOPES, unique=True)) if node else frozenset()


def _deadlines(doc: Doc, node: yaml.Node | None, label: str,
               parties: tuple[str, ...]) -> tuple[Deadline, ...]:
    items = doc.sequence(node, "deadlines") if node is not None else []
    return tuple(_deadline(doc, item, f"{label} §deadlines[{i}]", parties)
                 for i, item in enumerate(items))


def _deadline(doc: Doc, node: yaml.Node, clause: str, parties: tuple[str, ...]) -> Deadline:
    where = clause.split("§", 1)[1]
    fields = doc.mapping(node, where, required=DEADLINE_KEYS, allowed=DEADLINE_KEYS)
    return Deadline(
        name=doc.string(fields["name"], f"{where}.name"),
        opens_on=doc.choice(fields["opens_on"], f"{where}.opens_on", EVENT_TYPES),
        closes_on=doc.choice(fields["closes_on"], f"{where}.closes_on", EVENT_TYPES),
        party=doc.choice(fields["party"], f"{where}.party", (*parties, ANY_PARTY)),
        working_days=doc.integer(fields["working_days"], f"{where}.working_days", minimum=1),
        source=doc.string(fields["source"], f"{where}.source"), clause=clause)


def _checkpoints(doc: Doc, node: yaml.Node | None,
                 parties: tuple[str, ...]) -> tuple[Mapping[str, str], ...]:
    items = doc.sequence(node, "checkpoints") if node is not None else []
    pairs = [doc.mapping(item, f"checkpoints[{i}]", allowed=set(parties))
             for i, item in enumerate(items)]
    return tuple({side: doc.string(n, f"checkpoints.{side}") for side, n in pair.items()}
                 for pair in pairs)


# -- signatures ------------------------------------------------------------------------------


class AgreementNotSigned(PolicyError):
    """An agreement lacks a valid signature of one of its signatories (not loaded)."""

    code = "bad_signature"


@dataclass(frozen=True)
class Signature:
    """One detached Ed25519 signature of a signatory over ``canonical_bytes(text)``."""

    signatory: str
    key_id: str
    signature: bytes
    signed_at: datetime


@dataclass(frozen=True)
class Loaded:
    """The agreements that passed parsing and every signature check, and why others did not."""

    agreements: tuple[Agreement, ...]
    errors: tuple[PolicyError, ...]


def sign_agreement(text: str, signatory: str, key_id: str, key: Ed25519PrivateKey,
                   signed_at: datetime) -> Signature:
    """Sign the document's canonical bytes as ``signatory`` with its directory key ``key_id``."""
    return Signature(signatory, key_id, key.sign(canonical_bytes(text)), signed_at)


def signatures_json(agreement: Agreement, signatures: Iterable[Signature]) -> str:
    """The ``<id>.sig.json`` text: the document digest and one entry per signature."""
    entries = [{"signatory": s.signatory, "key_id": s.key_id,
                "signature": base64.b64encode(s.signature).decode("ascii"),
                "signed_at": s.signed_at.isoformat()} for s in signatures]
    body = {"agreement": agreement.id, "version": agreement.version,
            "sha256": agreement.digest.hex(), "signatures": entries}
    return json.dumps(body, indent=2, sort_keys=True) + "\n"


def parse_signatures(text: str, source: str) -> tuple[bytes, tuple[Signature, ...]]:
    """Read a ``<id>.sig.json`` text into (document digest, signatures)."""
    try:
        body = json.loads(text)
        sigs = tuple(Signature(e["signatory"], e["key_id"], base64.b64decode(e["signature"]),
                               datetime.fromisoformat(e["signed_at"]))
                     for e in body["signatures"])
        return bytes.fromhex(body["sha256"]), sigs
    except (ValueError, KeyError, TypeError) as exc:
        raise AgreementNotSigned(f"{source}:1: unreadable signature file ({exc})") from exc


def verify_agreement(agreement: Agreement, text: str, signatures: tuple[Signature, ...],
                     directory: Directory, now: datetime) -> None:
    """Raise ``AgreementNotSigned`` unless every signatory signed exactly this text."""
    message = canonical_bytes(text)
    for signatory in agreement.signatories:
        mine = [s for s in signatories_of(signatures, signatory)
                if _signature_valid(s, message, directory, now)]
        if not mine:
            raise AgreementNotSigned(f"{agreement.origin}:1: {agreement.label} lacks a valid "
                                     f"signature by {signatory}")


def signatories_of(signatures: Iterable[Signature], signatory: str) -> list[Signature]:
    return [s for s in signatures if s.signatory == signatory]


def _signature_valid(sig: Signature, message: bytes, directory: Directory, now: datetime) -> bool:
    key = _signing_key(directory, sig, now)
    if key is None:
        return False
    try:
        return signature_valid(key.public_key, sig.signature, message)
    except Malformed:  # a key of the wrong size
        return False


def _signing_key(directory: Directory, sig: Signature, now: datetime) -> KeyRecord | None:
    """The signatory's key ``key_id`` if it was valid when signing and is not revoked by now."""
    participant = directory.participants.get(sig.signatory)
    for key in participant.keys if participant else ():
        if key.key_id != sig.key_id or key.use != "sign" or sig.signed_at > now:
            continue
        if key.revoked_at is not None and key.revoked_at <= now:
            continue
        if key.valid_from <= sig.signed_at and (key.valid_until is None
                                                 or sig.signed_at < key.valid_until):
            return key
    return None


def load_agreements(documents: Mapping[str, str], signatures: Mapping[str, str],
                    directory: Directory, now: datetime | None = None) -> Loaded:
    """Parse every document (source name -> text) and keep those signed by all signatories.

    ``signatures`` maps an agreement id to its ``<id>.sig.json`` text. ``now`` defaults to the
    directory's issue time. A document that fails is left out and its error collected.
    """
    at = now if now is not None else directory.issued_at
    loaded: list[Agreement] = []
    errors: list[PolicyError] = []
    for source, text in sorted(documents.items()):
        try:
            loaded.append(_load_one(source, text, signatures, directory, at))
        except PolicyError as exc:
            errors.append(exc)
    return Loaded(tuple(loaded), tuple(errors))


def _load_one(source: str, text: str, signatures: Mapping[str, str], directory: Directory,
              now: datetime) -> Agreement:
    agreement = parse_agreement(text, source)
    if agreement.id not in signatures:
        raise AgreementNotSigned(f"{source}:1: {agreement.label} is unsigned "
                                 f"(no {agreement.id}.sig.json)")
    digest, sigs = parse_signatures(signatures[agreement.id], f"{agreement.id}.sig.json")
    if digest != agreement.digest:
        raise AgreementNotSigned(f"{source}:1: {agreement.label} differs from the signed "
                                 "document (tampered or changed since signing)")
    verify_agreement(agreement, text, sigs, directory, now)
    return agreement


# -- YAML nodes with line numbers -------------------------------------------------------------


def yaml_error(source: str, exc: yaml.YAMLError) -> PolicyError:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else 1
    return PolicyError(f"{source}:{line}: not valid YAML ({getattr(exc, 'problem', exc)})")


def is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


@dataclass(frozen=True)
class Doc:
    """Typed access to composed YAML nodes; every failure names ``source:line``."""

    source: str

    def fail(self, node: yaml.Node, reason: str) -> NoReturn:
        raise PolicyError(f"{self.source}:{node.start_mark.line + 1}: {reason}")

    def mapping(self, node: yaml.Node, what: str, required: Iterable[str] = (),
                allowed: Iterable[str] | None = None) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, f"{what} must be a mapping")
        fields: dict[str, yaml.Node] = {}
        allow = set(allowed) if allowed is not None else None
        for key, value in node.value:
            name = self.string(key, f"a key of {what}")
            if name in fields:
                self.fail(key, f"duplicate key {name!r} in {what}")
            if allow is not None and name not in allow:
                self.fail(key, f"unknown key {name!r} in {what} (expected: "
                               f"{', '.join(sorted(allow))})")
            fields[name] = value
        for name in sorted(set(required) - set(fields)):
            self.fail(node, f"{what} lacks required key {name!r}")
        return fields

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, f"{what} must be a list")
        return list(node.value)

    def string(self, node: yaml.Node, what: str, pattern: str | re.Pattern[str] | None = None
               ) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:str":
            self.fail(node, f"{what} must be a string")
        if pattern is not None and re.match(pattern, node.value) is None:
            self.fail(node, f"{what}: {node.value!r} is malformed")
        return str(node.value)

    def strings(self, node: yaml.Node, what: str, allowed: Sequence[str] | None = None,
                unique: bool = False, pattern: str | re.Pattern[str] | None = None
                ) -> tuple[str, ...]:
        items = self.sequence(node, what)
        values = tuple(self.string(item, what, pattern) for item in items)
        for item, value in zip(items, values, strict=True):
            if allowed is not None and value not in allowed:
                self.fail(item, f"{what}: unknown value {value!r}")
        if unique and len(set(values)) != len(values):
            self.fail(node, f"{what} lists a value twice")
        return values

    def choice(self, node: yaml.Node, what: str, allowed: Sequence[str]) -> str:
        value = self.string(node, what)
        if value not in allowed:
            self.fail(node, f"{what}: {value!r} is not one of {', '.join(allowed)}")
        return value

    def integer(self, node: yaml.Node, what: str, minimum: int) -> int:
        if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:int":
            self.fail(node, f"{what} must be an integer")
        value = int(node.value)
        if value < minimum:
            self.fail(node, f"{what} must be at least {minimum}")
        return value

    def boolean(self, node: yaml.Node, what: str) -> bool:
        if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:bool":
            self.fail(node, f"{what} must be true or false")
        return str(node.value).lower() in ("true", "yes", "on")

    def day(self, node: yaml.Node, what: str) -> date:
        try:
            return date.fromisoformat(str(node.value))
        except (ValueError, TypeError):
            self.fail(node, f"{what} must be a date YYYY-MM-DD")
