"""Who may read and write which Kafka resources, derived from the directory (pure).

Kafka principals are participant ids (SCRAM user names), plus the secretariat's services:
``REG.ROUTER``, ``REG.DEADLINES`` (both in the directory: they sign what they emit) and
``REG.MONITOR`` (reads the audit stream, signs nothing). A participant writes only its outbox and
reads only its inbox, with its own consumer group; the router reads every outbox and writes
every inbox, the audit, the quarantine and its state changelog (in transactions of its own
ids); the monitor reads the audit only; the directory and
agreements topics are readable by all and writable by the secretariat only. Anything not granted
here is denied (``allow.everyone.if.no.acl.found=false``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from casebridge.core import topics as names

ROUTER = "REG.ROUTER"
DEADLINES = "REG.DEADLINES"
MONITOR = "REG.MONITOR"
SECRETARIAT = "REG.SECRETARIAT"
SERVICES = {ROUTER: "casebridge-router", DEADLINES: "casebridge-deadlines", MONITOR: "casebridge-monitor"}
SHARED_READ = (names.DIRECTORY, names.AGREEMENTS)


@dataclass(frozen=True, order=True)
class Grant:
    """One allow rule: principal, resource (type, name, literal or prefixed), operation."""

    principal: str
    resource: str  # "topic", "group" or "transactional_id"
    name: str
    pattern: str  # "literal" or "prefixed"
    operation: str  # "read", "write", "describe", "create"


def app_id(principal: str) -> str:
    """The faust app id (= consumer group, = prefix of its internal topics) of a principal."""
    return SERVICES.get(principal, f"casebridge-node-{principal}")


def topic(principal: str, name: str, *ops: str, pattern: str = "literal") -> list[Grant]:
    return [Grant(principal, "topic", name, pattern, op) for op in ops]


def own_app(principal: str) -> list[Grant]:
    """Its consumer group, and the internal topics faust makes under its app id."""
    prefix = f"{app_id(principal)}-"
    return [Grant(principal, "group", app_id(principal), "literal", "read"),
            *topic(principal, prefix, "create", "read", "write", "describe", pattern="prefixed")]


def participant(pid: str) -> list[Grant]:
    grants = [*topic(pid, names.outbox(pid), "write", "describe"),
              *topic(pid, names.inbox(pid), "read", "describe"), *own_app(pid)]
    grants += [g for name in SHARED_READ for g in topic(pid, name, "read", "describe")]
    if pid == SECRETARIAT:
        grants += [g for name in SHARED_READ for g in topic(pid, name, "write")]
    return grants


def services() -> list[Grant]:
    return [
        *topic(ROUTER, names.OUT_PREFIX, "read", "describe", pattern="prefixed"),
        *topic(ROUTER, names.IN_PREFIX, "write", "describe", pattern="prefixed"),
        *topic(ROUTER, names.AUDIT, "write", "describe"),
        *topic(ROUTER, names.QUARANTINE, "write", "describe"),
        *topic(ROUTER, names.ROUTER_STATE, "read", "write", "describe"),
        # the router's transactional producers: casebridge-router-<worker>
        *[Grant(ROUTER, "transactional_id", f"{app_id(ROUTER)}-", "prefixed", op)
          for op in ("write", "describe")],
        *topic(DEADLINES, names.AUDIT, "read", "write", "describe"),
        *topic(DEADLINES, names.DEADLINES_STATE, "read", "write", "describe"),
        *[Grant(DEADLINES, "transactional_id", f"{app_id(DEADLINES)}-", "prefixed", op)
          for op in ("write", "describe")],
        *topic(DEADLINES, names.IN_PREFIX, "write", "describe", pattern="prefixed"),
        *topic(MONITOR, names.AUDIT, "read", "describe"), *own_app(MONITOR),
    ]


def grants_for(participants: Iterable[str]) -> list[Grant]:
    """Every allow rule of a network whose directory lists ``participants``, sorted, no repeats."""
    found = {g for pid in participants for g in participant(pid)} | set(services())
    return sorted(found)


def principals(participants: Iterable[str]) -> list[str]:
    """Every Kafka user the network needs: the participants and the monitor."""
    return sorted({*participants, MONITOR})
