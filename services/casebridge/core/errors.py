"""One error root with the stable reject codes of DESIGN.md.

The ``code`` of an error goes on the wire (quarantine record, ``receipt.rejected``) and in the log
line; a traceback never does. Each subclass also inherits the builtin that fits, so callers that
know nothing of CaseBridge can still catch it sensibly.
"""

from __future__ import annotations

from typing import ClassVar

REJECT_CODES: tuple[str, ...] = (
    "malformed",
    "unknown_schema",
    "schema_invalid",
    "unknown_sender",
    "unknown_key",
    "revoked_key",
    "bad_signature",
    "sender_topic_mismatch",
    "replay",
    "sequence_gap",
    "stale",
    "no_agreement",
    "event_type_not_covered",
    "consent_missing",
    "witness_hold",
    "recipient_not_permitted",
    "agreement_not_in_force",
    "oversized",
    "handling_restricted",
)


class CaseBridgeError(Exception):
    """Root of every error CaseBridge raises on purpose; ``code`` is a stable reject code."""

    code: ClassVar[str] = "malformed"

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why

    def __str__(self) -> str:
        return f"{self.code}: {self.why}"


class Malformed(CaseBridgeError, ValueError):
    code = "malformed"


class UnknownSchema(CaseBridgeError, LookupError):
    code = "unknown_schema"


class SchemaInvalid(CaseBridgeError, ValueError):
    code = "schema_invalid"


class UnknownSender(CaseBridgeError, LookupError):
    code = "unknown_sender"


class UnknownKey(CaseBridgeError, LookupError):
    code = "unknown_key"


class RevokedKey(CaseBridgeError, PermissionError):
    code = "revoked_key"


class BadSignature(CaseBridgeError, ValueError):
    code = "bad_signature"


class SenderTopicMismatch(CaseBridgeError, PermissionError):
    code = "sender_topic_mismatch"


class Replay(CaseBridgeError, ValueError):
    code = "replay"


class SequenceGap(CaseBridgeError, ValueError):
    code = "sequence_gap"


class Stale(CaseBridgeError, ValueError):
    code = "stale"


class Oversized(CaseBridgeError, ValueError):
    code = "oversized"


class PolicyError(CaseBridgeError, ValueError):
    """An agreement or directory document that cannot be loaded (file, line and reason in why)."""

    code = "schema_invalid"


BY_CODE: dict[str, type[CaseBridgeError]] = {
    cls.code: cls
    for cls in (
        Malformed,
        UnknownSchema,
        SchemaInvalid,
        UnknownSender,
        UnknownKey,
        RevokedKey,
        BadSignature,
        SenderTopicMismatch,
        Replay,
        SequenceGap,
        Stale,
        Oversized,
    )
}
