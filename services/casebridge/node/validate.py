"""The shape and bounds of what a hub's case system sends a node, checked before anything else.

``event_document`` takes the decoded JSON body of ``POST /events`` (or ``node submit``'s file) and
returns it unchanged, or raises ``Malformed`` naming the first thing wrong: a body that is not an
object, a field the API does not define, a field of the wrong type, a value past its bound.
``page_limit`` and ``page_cursor`` do the same for ``GET /inbox``'s query.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from casebridge.core import limits
from casebridge.core.errors import Malformed
from casebridge.core.model import CONSENT_SCOPES, EVENT_TYPES, HANDLING_CODES

FIELDS = frozenset(
    {"event_id", "event_type", "case_ref", "to", "handling_code", "correlation_id", "consent_scopes",
     "witness_hold", "payload"}
)


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
    """The ``after`` query parameter: a ``next`` cursor of an earlier page (or nothing)."""
    if raw is None:
        return ""
    if len(raw) > limits.MAX_CURSOR or not raw.isprintable():
        raise Malformed("after must be the next cursor of an earlier page")
    return raw
