"""Handling codes enforced (after Europol SIENA): who may pass a received record on, and how.

H0 free within purpose; H1 not as evidence without permission; H2 no onward sharing without the
provider's permission; H3 see the provider's conditions (carried with the record and returned
with every read). A record is passed on only by an explicit *forward*: a new event whose header
names the record (``forward_of``). A forward of an H2 record must carry the provider's
permission: an Ed25519 signature by the provider over ``permission_message`` — the case, the
record, the forwarder and the exact addressees — which the provider sends in a signed
``handling.permission_granted`` event. ``check_forward`` is the router's defence in depth; it
needs nothing but the header and the directory, so it is pure and stateless.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from casebridge.core.directory import is_valid
from casebridge.core.errors import CaseBridgeError
from casebridge.core.keys import Identity, signature_valid
from casebridge.core.model import Directory, Header
from casebridge.core.sealing import frame

PERMISSION_LABEL = "casebridge/v1/permission"
NEEDS_PERMISSION = frozenset({"H2"})
"""Handling codes under which onward sharing needs the provider's signed permission."""


class HandlingRestricted(CaseBridgeError, PermissionError):
    code = "handling_restricted"


@dataclass(frozen=True)
class Permission:
    """The provider's signed permission to forward one record to exactly ``onward_to``."""

    provider: str
    key_id: str
    signature: bytes


def permission_message(case_ref: str, record_id: str, forwarder: str, onward_to: Iterable[str]) -> bytes:
    return frame(PERMISSION_LABEL, case_ref, record_id, forwarder, *sorted(onward_to))


def grant(provider: Identity, case_ref: str, record_id: str, forwarder: str,
          onward_to: Iterable[str]) -> Permission:
    """The provider's signature letting ``forwarder`` pass ``record_id`` on to ``onward_to``."""
    message = permission_message(case_ref, record_id, forwarder, onward_to)
    return Permission(provider.participant, provider.signing_key_id, provider.signing_key.sign(message))


def check_forward(header: Header, directory: Directory) -> str | None:
    """Why a forward may not go on (``handling_restricted``), or None; non-forwards pass."""
    if header.forward_of is None or header.handling_code not in NEEDS_PERMISSION:
        return None
    if not header.permitted_by or not header.permit_key_id or not header.permit_signature:
        return (f"{header.handling_code} record {header.forward_of} is forwarded without the "
                "provider's permission")
    if header.permitted_by == header.sender:
        return "a forwarder cannot permit its own forward (the permission must be the provider's)"
    provider = directory.participants.get(header.permitted_by)
    key = next((k for k in provider.keys if k.key_id == header.permit_key_id and k.use == "sign"),
               None) if provider else None
    if key is None or key.revoked_at is not None or not is_valid(key, header.created_at):
        return f"no current signing key {header.permit_key_id} of {header.permitted_by}"
    message = permission_message(header.case_ref, header.forward_of, header.sender, header.to)
    if not signature_valid(key.public_key, header.permit_signature, message):
        return f"the permission of {header.permitted_by} does not cover this forward"
    return None
