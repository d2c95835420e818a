"""The shape and bounds of what a hub's case system sends a node, checked before anything else.

``event_document`` takes the decoded JSON body of ``POST /events`` (or ``node submit``'s file, or
a document the node makes itself: a forward, a notice) and returns it unchanged, or raises
``Malformed`` naming the first thing wrong: a body that is not an object, a field the API does
not define, a field of the wrong type, a value past its bound. The permission a forward of an H2
record carries (``permitted_by``, ``permit_key_id``, ``permit_signature``) comes only from the
node (``protection.request_forward``): its signature is bytes, which no JSON body can hold.
``page_limit`` and ``page_cursor`` check ``GET /inbox``'s query; ``json_body``,
``shred_request``, ``forward_request`` and ``permission_request`` the bodies of the other routes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from casebridge.core import limits
from casebridge.core.errors import Malformed
from casebridge.core.model import CONSENT_SCOPES, EVENT_TYPES, HANDLING_CODES, PARTICIPANT_ID
from casebridge.core.vault import SHRED_REASONS

FIELDS = frozenset(
    {"event_id", "event_type", "case_ref", "to", "handling_code", "correlation_id", "consent_scopes",
     "witness_hold", "payload", "handling_conditions", "forward_of", "permitted_by", "permit_key_id",
     "permit_signature"}
)
PERMIT_FIELDS = ("permitted_by", "permit_key_id", "permit_signature")
MAX_HANDLING_CONDITIONS = 500  # H3 conditions: a sentence or two of terms, never personal data
MAX_KEY_ID = 64  # directory key ids are 16 hex characters (core.keys.key_id); room for others
SIGNATURE_BYTES = 64  # Ed25519
MAX_ARRIVAL = 2**63 - 1  # the largest SQLite rowid: an inbox page cursor


def event_document(body: object) -> Mapping[str, Any]:
    """``body`` if it is an event document within every bound, else ``Malformed``."""
    if not isinstance(body, dict):
        raise Malformed("the body must be a JSON object: one event")
    unknown = sorted(str(k) for k in body if k not in FIELDS)
    if unknown:
        raise Malformed(f"unknown field(s): {', '.join(unknown)[:200]}")
    check_event_type(body.get("event_type"))
    check_case_ref(body.get("case_ref"))
    check_to(body.get("to", []))
    check_optional_fields(body)
    check_handling_fields(body)
    return body


def check_event_type(value: object) -> None:
    if not isinstance(value, str) or value not in EVENT_TYPES:
        raise Malformed(f"unknown event_type {str(value)[:80]!r}")


def check_case_ref(value: object) -> None:
    if not isinstance(value, str) or not value:
        raise Malformed("case_ref must be a non-empty pseudonymous reference")
    if len(value) > limits.MAX_CASE_REF or not value.isprintable():
        raise Malformed(f"case_ref must be at most {limits.MAX_CASE_REF} printable characters")


def check_to(value: object) -> None:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise Malformed("to must be a list of countries or participant ids")
    if len(value) > limits.MAX_RECIPIENTS or any(len(x) > limits.MAX_ADDRESS for x in value):
        raise Malformed(f"to holds at most {limits.MAX_RECIPIENTS} ids of {limits.MAX_ADDRESS} characters")


def check_optional_fields(doc: Mapping[str, Any]) -> None:
    """event_id, handling_code, correlation_id, consent_scopes, witness_hold and payload."""
    event_id = doc.get("event_id")
    if event_id is not None and not is_uuid(event_id):
        raise Malformed("event_id, when given, must be a UUID")
    if doc.get("handling_code", "H2") not in HANDLING_CODES:
        raise Malformed(f"handling_code must be one of {', '.join(HANDLING_CODES)}")
    correlation = doc.get("correlation_id")
    if correlation is not None and (
        not isinstance(correlation, str) or len(correlation) > limits.MAX_CORRELATION_ID
    ):
        raise Malformed(f"correlation_id must be at most {limits.MAX_CORRELATION_ID} characters")
    scopes = doc.get("consent_scopes", [])
    if not isinstance(scopes, list) or not all(isinstance(s, str) and s in CONSENT_SCOPES for s in scopes):
        raise Malformed(f"consent_scopes must be a list of {', '.join(CONSENT_SCOPES)}")
    if doc.get("witness_hold") not in (None, True, False):
        raise Malformed("witness_hold must be true or false")
    if not isinstance(doc.get("payload", {}), dict):
        raise Malformed("payload must be an object of data categories")


def check_handling_fields(doc: Mapping[str, Any]) -> None:
    """handling_conditions (H3), forward_of, and the provider's permission a forward carries."""
    conditions = doc.get("handling_conditions")
    if conditions is not None and (not isinstance(conditions, str) or not conditions
                                   or len(conditions) > MAX_HANDLING_CONDITIONS
                                   or not conditions.isprintable()):
        raise Malformed(f"handling_conditions must be 1 to {MAX_HANDLING_CONDITIONS} printable characters")
    forward_of = doc.get("forward_of")
    if forward_of is not None and not is_uuid(forward_of):
        raise Malformed("forward_of, when given, must be the event id (a UUID) of a received record")
    given = [k for k in PERMIT_FIELDS if doc.get(k) not in (None, b"")]
    if given:
        check_permit(doc, given)


def check_permit(doc: Mapping[str, Any], given: list[str]) -> None:
    if len(given) < len(PERMIT_FIELDS) or doc.get("forward_of") is None:
        raise Malformed("permitted_by, permit_key_id and permit_signature come together, on a forward "
                        "(forward_of) only")
    if not isinstance(doc["permitted_by"], str) or not PARTICIPANT_ID.match(doc["permitted_by"]):
        raise Malformed("permitted_by must be a participant id")
    key_id = doc["permit_key_id"]
    if not isinstance(key_id, str) or not key_id or len(key_id) > MAX_KEY_ID or not key_id.isprintable():
        raise Malformed(f"permit_key_id must be a key id of 1 to {MAX_KEY_ID} printable characters")
    signature = doc["permit_signature"]
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        raise Malformed("permit_signature is the provider's Ed25519 signature, which the node sets from "
                        "the permission it received (POST /records/{id}/forward); no JSON body gives it")


def is_uuid(value: object) -> bool:
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def page_limit(raw: str | None, default: int = 50) -> int:
    """The ``limit`` query parameter: an integer from 1 to ``MAX_PAGE``."""
    if raw is None:
        return default
    if len(raw) > 4 or not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= limits.MAX_PAGE:
        raise Malformed(f"limit must be an integer from 1 to {limits.MAX_PAGE}")
    return int(raw)


def page_cursor(raw: str | None) -> str:
    """The ``after`` query parameter: a ``next`` cursor of an earlier page (or nothing). A cursor
    is an arrival number, an SQLite rowid: digits other than ASCII, or past the largest rowid, are
    ``Malformed``; other text that is no cursor gives an empty page (``store.inbox_page``)."""
    if raw is None:
        return ""
    if len(raw) > limits.MAX_CURSOR or not raw.isprintable():
        raise Malformed("after must be the next cursor of an earlier page")
    if raw.isdigit() and not (raw.isascii() and int(raw) <= MAX_ARRIVAL):
        raise Malformed(f"after must be the next cursor of an earlier page (an arrival number up to "
                        f"{MAX_ARRIVAL})")
    return raw


def json_body(raw: bytes) -> Any:
    """A request's body as JSON, or ``Malformed`` (not UTF-8, not JSON, nested past recursion)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise Malformed(f"the body is not JSON: {type(exc).__name__}") from exc


def request_object(body: object, fields: frozenset[str], route: str) -> dict[str, Any]:
    """``body`` if it is a JSON object of exactly ``fields``."""
    if not isinstance(body, dict):
        raise Malformed(f"the body of {route} must be a JSON object")
    unknown = sorted(str(k) for k in body if k not in fields)
    if unknown:
        raise Malformed(f"unknown field(s) of {route}: {', '.join(unknown)[:200]}")
    missing = sorted(fields - set(body))
    if missing:
        raise Malformed(f"{route} needs {', '.join(missing)}")
    return body


def shred_request(case_ref: str, body: object) -> str:
    """The reason code of ``POST /cases/{case}/shred``, its case reference checked first."""
    check_case_ref(case_ref)
    reason = request_object(body, frozenset({"reason"}), "a shred")["reason"]
    if reason not in SHRED_REASONS:
        raise Malformed(f"reason must be one of {', '.join(SHRED_REASONS)} (a code, never free text)")
    return str(reason)


def addressees(value: object) -> list[str]:
    """A forward's or a permission's ``to``: one or more countries or participant ids."""
    check_to(value)
    if not isinstance(value, list) or not value:
        raise Malformed("to must name at least one country or participant")
    return [str(x) for x in value]


def forward_request(body: object) -> list[str]:
    """The addressees of ``POST /records/{id}/forward``."""
    return addressees(request_object(body, frozenset({"to"}), "a forward")["to"])


def permission_request(body: object) -> tuple[str, list[str]]:
    """The forwarder and the exact addressees of ``POST /events/{id}/permissions``."""
    doc = request_object(body, frozenset({"forwarder", "to"}), "a permission")
    if not isinstance(doc["forwarder"], str) or not PARTICIPANT_ID.match(doc["forwarder"]):
        raise Malformed("forwarder must be the participant id of a recipient of the event")
    return doc["forwarder"], addressees(doc["to"])
