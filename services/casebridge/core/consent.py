"""Consent withdrawal, end to end: which participants received a record under a withdrawn scope.

The sending node knows whom it sent each record to. A record was received *under* a consent
scope by the recipients that routing would now refuse with ``consent_missing`` once that scope is
withdrawn: ``received_under`` asks the same pure ``route`` as the router, with the case state
after the withdrawal. Those recipients get a signed ``consent.withdrawal_notified`` naming the
records; their nodes mark them restricted (readable with their handling, never forwarded).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from casebridge.core import avro
from casebridge.core.model import CaseState, Directory, Header, country_of
from casebridge.core.routing import Policy, Reject, route
from casebridge.core.sealing import ENVELOPE, SEALED, header_from_record

NOTICE = "consent.withdrawal_notified"


def own_header(schemas: avro.SchemaSet, envelope: bytes) -> Header:
    """The header of an envelope from this node's own outbox (sealed by itself: no verification)."""
    outer = avro.decode(schemas, envelope, SEALED)
    return header_from_record(avro.decode(schemas, outer["envelope"], ENVELOPE)["header"])


def received_under(header: Header, recipients: Iterable[str], policy: Policy, directory: Directory,
                   after: CaseState, now: datetime) -> frozenset[str]:
    """The ``recipients`` of a sent record that routing refuses for consent once ``after`` holds."""
    decision = route(header, policy, directory, after, now)
    if isinstance(decision, Reject):
        return frozenset(recipients) if decision.code == "consent_missing" else frozenset()
    lost = {r.participant for r in decision.refused if r.code == "consent_missing"}
    return frozenset(p for p in recipients if p in lost or country_of(p) in lost)
