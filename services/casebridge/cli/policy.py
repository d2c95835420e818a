"""``casebridge agreements validate|sign`` and ``casebridge route explain``: agreements as data.

Files are read here, never in the core: the core parses text and decides. ``sign`` keeps a copy of
each document next to its detached ``<id>.sig.json`` in the output (state) directory; the router
loads that directory with ``load_agreements``. ``route explain`` uses the committed documents
unsigned and a key-less directory built from ``participants.yaml``, and says so.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from casebridge.core.agreements import (
    Agreement,
    Signature,
    parse_agreement,
    parse_signatures,
    sign_agreement,
    signatures_json,
)
from casebridge.core.deadlines import Calendar, obligations, parse_calendars
from casebridge.core.errors import PolicyError
from casebridge.core.keys import Identity
from casebridge.core.model import CONSENT_SCOPES, CaseState, Directory, Header
from casebridge.core.routing import Deliver, explain, index_agreements, route
from casebridge.runtime import keystore

CALENDARS = "calendars.yaml"
EXPLAIN_NOTE = ("note: agreements read unsigned from {dir}; directory from {participants} "
                "without keys (signatures and keys are checked by the router, not here)")


def register(sub: Any) -> None:
    """Add the ``agreements`` and ``route`` command groups."""
    agreements = sub.add_parser("agreements", help="validate and sign agreement documents")
    actions = agreements.add_subparsers(dest="action", required=True, metavar="ACTION")
    validate = actions.add_parser("validate", help="check every document (file:line: reason)")
    validate.add_argument("--dir", type=Path, default=Path("deploy/agreements"))
    validate.set_defaults(func=cmd_validate)
    sign = actions.add_parser("sign", help="sign the documents that name PARTICIPANT")
    sign.add_argument("--as", dest="participant", required=True, metavar="PARTICIPANT")
    sign.add_argument("--keystore", type=Path, default=Path(".casebridge/keys"))
    sign.add_argument("--dir", type=Path, default=Path("deploy/agreements"))
    sign.add_argument("--out", type=Path, default=Path(".casebridge/agreements"))
    sign.set_defaults(func=cmd_sign)
    routing = sub.add_parser("route", help="explain routing decisions")
    what = routing.add_subparsers(dest="action", required=True, metavar="ACTION")
    _explain_parser(what.add_parser("explain", help="EVENT.json's decision, clause by clause"))


def _explain_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("event", type=Path, metavar="EVENT.json")
    parser.add_argument("--dir", type=Path, default=Path("deploy/agreements"))
    parser.add_argument("--participants", type=Path,
                        default=Path("deploy/directory/participants.yaml"))
    parser.add_argument("--consent", nargs="*", default=[], choices=CONSENT_SCOPES,
                        metavar="SCOPE", help=f"consented scopes: {', '.join(CONSENT_SCOPES)}")
    parser.add_argument("--witness-hold", action="store_true", help="the case is on hold")
    parser.add_argument("--at", type=datetime.fromisoformat, help="ISO time (default: now)")
    parser.set_defaults(func=cmd_explain)


def read_text(path: Path) -> str:
    """Exact file text (no newline translation: the bytes are what parties sign)."""
    return path.read_bytes().decode("utf-8")


def document_paths(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.glob("*.yaml")) if p.name != CALENDARS]


def validate_dir(folder: Path) -> tuple[list[Agreement], list[str]]:
    """Parse every document and the calendars; the valid agreements and ``file:line: reason``s."""
    valid: list[Agreement] = []
    problems: list[str] = []
    for path in document_paths(folder):
        try:
            valid.append(_parse_file(path))
        except PolicyError as exc:
            problems.append(exc.why)
    if (folder / CALENDARS).exists():
        try:
            parse_calendars(read_text(folder / CALENDARS), str(folder / CALENDARS))
        except PolicyError as exc:
            problems.append(exc.why)
    return valid, problems + _clashes(valid)


def _parse_file(path: Path) -> Agreement:
    agreement = parse_agreement(read_text(path), str(path))
    if path.stem != agreement.id:
        raise PolicyError(f"{path}:1: file name must be the agreement id ({agreement.id}.yaml)")
    return agreement


def _clashes(agreements: list[Agreement]) -> list[str]:
    """Two documents for the same pair would make the choice ambiguous."""
    seen: dict[tuple[str, ...], Agreement] = {}
    problems = []
    for agreement in agreements:
        key = tuple(sorted(agreement.parties)) if agreement.kind == "bilateral" else ("*",)
        if key in seen:
            problems.append(f"{agreement.origin}:1: {agreement.label} governs the same parties "
                            f"as {seen[key].label} ({seen[key].origin})")
        seen[key] = agreement
    return problems


def cmd_validate(args: argparse.Namespace) -> int:
    valid, problems = validate_dir(args.dir)
    for agreement in valid:
        print(f"ok {agreement.origin}: {agreement.label} ({'-'.join(agreement.parties)}, "
              f"{len(agreement.events)} event types)")
    for problem in problems:
        print(problem)
    return 1 if problems or not valid else 0


def cmd_sign(args: argparse.Namespace) -> int:
    identity = keystore.load_identity(args.keystore, args.participant)
    for line in sign_dir(args.dir, args.out, identity, datetime.now(UTC)):
        print(line)
    return 0


def sign_dir(folder: Path, out: Path, identity: Identity, now: datetime) -> list[str]:
    """Sign every document naming ``identity.participant`` as signatory; copies go to ``out``."""
    _, problems = validate_dir(folder)
    if problems:
        raise PolicyError(f"{folder}: not signing invalid documents: {problems[0]}")
    out.mkdir(parents=True, exist_ok=True)
    report = []
    for path in document_paths(folder):
        text = read_text(path)
        agreement = parse_agreement(text, str(path))
        if identity.participant not in agreement.signatories:
            report.append(f"skip {agreement.label}: {identity.participant} is not a signatory")
            continue
        signature = sign_agreement(text, identity.participant, identity.signing_key_id,
                                   identity.signing_key, now)
        report.append(_store(out, agreement, text, signature))
    return report


def _store(out: Path, agreement: Agreement, text: str, signature: Signature) -> str:
    """Write the copy and merge the signature; a changed document drops older signatures."""
    copy, sig_path = out / f"{agreement.id}.yaml", out / f"{agreement.id}.sig.json"
    kept: list[Signature] = []
    if sig_path.exists():
        digest, previous = parse_signatures(read_text(sig_path), str(sig_path))
        if digest == agreement.digest:
            kept = [s for s in previous if s.signatory != signature.signatory]
    copy.write_bytes(text.encode("utf-8"))
    sig_path.write_text(signatures_json(agreement, [*kept, signature]), encoding="utf-8")
    names = ", ".join(s.signatory for s in [*kept, signature])
    missing = sorted(set(agreement.signatories) - {s.signatory for s in [*kept, signature]})
    return (f"signed {agreement.label} as {signature.signatory} -> {sig_path} (signed by {names}"
            + (f"; awaiting {', '.join(missing)})" if missing else "; complete)"))


def cmd_explain(args: argparse.Namespace) -> int:
    now = args.at or datetime.now(UTC)
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    header = header_from_event(json.loads(read_text(args.event)), str(args.event), now)
    valid, problems = validate_dir(args.dir)
    if problems:
        raise PolicyError(f"{args.dir}: invalid agreements: {problems[0]}")
    directory = read_participants(args.participants, now)
    state = CaseState(frozenset(args.consent), args.witness_hold)
    decision = route(header, index_agreements(valid), directory, state, now)
    print(EXPLAIN_NOTE.format(dir=args.dir, participants=args.participants))
    print(f"event {header.event_type} from {header.sender} to {', '.join(header.to)} at "
          f"{now.isoformat()}; consent: {', '.join(sorted(state.consent)) or 'none'}; "
          f"witness hold: {'yes' if state.witness_hold else 'no'}")
    print("\n".join(explain(decision)))
    if isinstance(decision, Deliver):
        _print_obligations(header, valid, decision, _calendars(args.dir))
    return 0 if isinstance(decision, Deliver) else 1


def _calendars(folder: Path) -> Mapping[str, Calendar]:
    path = folder / CALENDARS
    return parse_calendars(read_text(path), str(path)) if path.exists() else {}


def _print_obligations(header: Header, agreements: list[Agreement], decision: Deliver,
                       calendars: Mapping[str, Calendar]) -> None:
    for agreement in agreements:
        key = (agreement.id, agreement.version)
        parties = [country for country, used in decision.applied.items() if used == key]
        for o in obligations(header, agreement, calendars, parties) if parties else ():
            print(f"opens obligation {o.name}: {o.party} must send {o.closes_on} "
                  f"(correlation_id={o.opened_by}) by {o.due.isoformat()} "
                  f"[{o.working_days} working days; {o.source}] ({o.clause})")


def header_from_event(event: Any, source: str, now: datetime) -> Header:
    """A routing header from an EVENT.json (event_type, sender, case_ref, to, ...)."""
    if not isinstance(event, dict):
        raise PolicyError(f"{source}: an event is a JSON object")
    missing = sorted({"event_type", "sender", "case_ref", "to"} - set(event))
    if missing:
        raise PolicyError(f"{source}: missing {', '.join(missing)}")
    return Header(
        event_id=str(event.get("event_id", "explain")), event_type=str(event["event_type"]),
        sender=str(event["sender"]), sender_key_id=str(event.get("sender_key_id", "")),
        created_at=now, case_ref=str(event["case_ref"]), to=tuple(map(str, event["to"])),
        handling_code=str(event.get("handling_code", "H2")),
        correlation_id=event.get("correlation_id"))


def read_participants(path: Path, now: datetime) -> Directory:
    """A key-less directory from participants.yaml (routing needs ids, countries and roles)."""
    return Directory(0, now, now, {p.id: p for p in keystore.read_participants(path)})
