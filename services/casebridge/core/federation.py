"""A federation of national clusters joined by MirrorMaker 2: who holds what, who mirrors what,
and who may do what on each cluster (pure).

Members are countries (ISO alpha-2) and ``REG``, the secretariat. Each member's cluster holds
only its own participants' ``cb.out.*`` / ``cb.in.*``, its router's and tracker's topics, its
``cb.audit``, one outgoing corridor ``cb.xb.<own>.<partner>`` per partner (its router writes
there what it accepted for that partner's participants) and the incoming corridors its own
MirrorMaker copies from its partners. Pull, never push: a member's MirrorMaker (principal
``<member>.MIRROR``) reads its partners' corridors to it and writes only into its own cluster; a
partner grants that principal READ on the one corridor topic, nothing else.

- National members mirror, with Kafka's ``IdentityReplicationPolicy`` (names kept), the corridors
  ``cb.xb.<partner>.<own>`` and, from the secretariat, ``cb.directory`` and ``cb.agreements``
  (read-only copies: only their MirrorMaker writes them there).
- The secretariat mirrors, with the ``DefaultReplicationPolicy``, each member's ``cb.audit`` (as
  ``<member>.cb.audit``, metadata only, for its monitor) and the corridors to it (as
  ``<member>.cb.xb.<member>.REG``, read by its router).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from casebridge.core import access
from casebridge.core import topics as names
from casebridge.core.access import Grant, topic
from casebridge.core.errors import CaseBridgeError
from casebridge.core.model import REGION, country_of

MIRROR_SUFFIX = "MIRROR"
SOURCE_CONNECTOR = "MirrorSourceConnector"


# --- the names MirrorMaker 2 (dedicated mode) uses on its own cluster: its defaults, which the
# --- grants must name (checked against Kafka 4.1.1's connect-mirror)


def worker_group(source: str) -> str:
    """The Connect group of the ``source -> own`` herder (also the prefix of its task ids)."""
    return f"{source}-mm2"


def internal_topics(source: str) -> tuple[str, str, str]:
    """The herder's offsets, status and configs topics on the own cluster."""
    offsets, status, configs = (f"mm2-{kind}.{source}.internal" for kind in ("offsets", "status", "configs"))
    return offsets, status, configs


def transactional_ids(source: str) -> tuple[str, str]:
    """With exactly-once: the leader's id (config topic) and the prefix of the task producers'."""
    group = worker_group(source)
    return f"connect-cluster-{group}", f"{group}-{SOURCE_CONNECTOR}-"


def mirror_principal(member: str) -> str:
    """``KH.MIRROR``: the Kafka user of KH's MirrorMaker, on KH's cluster and on its partners'."""
    return f"{member}.{MIRROR_SUFFIX}"


def prefixed(member: str) -> bool:
    """The secretariat keeps the source alias in mirrored names (``TH.cb.audit``); members don't."""
    return member == REGION


@dataclass(frozen=True)
class Flow:
    """What ``target``'s MirrorMaker copies from ``source`` (topic names as at the source)."""

    source: str
    target: str
    topics: tuple[str, ...]

    def mirrored(self, name: str) -> str:
        """The topic's name on the target cluster."""
        return f"{self.source}.{name}" if prefixed(self.target) else name


class FederationInvalid(CaseBridgeError, ValueError):
    """The members named do not make a federation (``CASEBRIDGE_FEDERATION``)."""

    code = "federation_invalid"


@dataclass(frozen=True)
class Federation:
    members: tuple[str, ...]  # e.g. ("REG", "TH", "KH")

    def __post_init__(self) -> None:
        if REGION not in self.members:
            raise FederationInvalid(f"the members {','.join(self.members) or '(none)'} lack the "
                                    f"secretariat's cluster ({REGION}): set CASEBRIDGE_FEDERATION=REG,…")
        if len(set(self.members)) != len(self.members):
            raise FederationInvalid(f"a member is named twice in {','.join(self.members)}")
        bad = [m for m in self.members if not m.isalpha() or not m.isupper()]
        if bad:
            raise FederationInvalid(f"members are country codes or REG, not {', '.join(bad)}")

    def member(self, country: str) -> str:
        """``country``, checked to be a member (the ``CASEBRIDGE_COUNTRY`` of a process)."""
        if country not in self.members:
            raise FederationInvalid(f"{country} is not a member of the federation {','.join(self.members)}")
        return country

    def partners(self, member: str) -> tuple[str, ...]:
        return tuple(m for m in self.members if m != member)

    def flows_into(self, target: str) -> tuple[Flow, ...]:
        flows = []
        for source in self.partners(target):
            wanted = [names.corridor(source, target)]
            if target == REGION:
                wanted.append(names.AUDIT)
            elif source == REGION:
                wanted += [names.DIRECTORY, names.AGREEMENTS]
            flows.append(Flow(source, target, tuple(wanted)))
        return tuple(flows)

    def incoming_corridors(self, member: str) -> tuple[str, ...]:
        """The corridors into ``member`` as named on its cluster (what its router reads)."""
        return tuple(f.mirrored(names.corridor(f.source, member)) for f in self.flows_into(member))

    def outgoing_corridors(self, member: str) -> tuple[str, ...]:
        return tuple(names.corridor(member, p) for p in self.partners(member))

    def mirrored_audits(self) -> tuple[str, ...]:
        """The members' audit topics on the secretariat's cluster (what its monitor reads)."""
        return tuple(Flow(m, REGION, ()).mirrored(names.AUDIT) for m in self.partners(REGION))

    def participants_of(self, member: str, participants: Iterable[str]) -> list[str]:
        return sorted(p for p in participants if country_of(p) == member)


def grants(fed: Federation, member: str, participants: Sequence[str]) -> list[Grant]:
    """Every allow rule on ``member``'s cluster, sorted, no repeats (deny by default otherwise)."""
    own = fed.participants_of(fed.member(member), participants)
    found: set[Grant] = set()
    for pid in own:
        found |= set(access.participant(pid))
        if pid == access.SECRETARIAT and member != REGION:  # its copies are the mirror's to write
            found -= {g for name in access.SHARED_READ for g in topic(pid, name, "write")}
    found |= set(services(fed, member))
    found |= set(own_mirror(fed, member))
    for partner in fed.partners(member):  # a partner's MirrorMaker reads what is meant for it
        for flow in fed.flows_into(partner):
            if flow.source == member:
                for name in flow.topics:  # describe_configs: MM2 copies a topic's settings
                    found |= set(topic(mirror_principal(partner), name, "read", "describe",
                                       "describe_configs"))
    return sorted(found)


def own_mirror(fed: Federation, member: str) -> list[Grant]:
    """``member``'s MirrorMaker on its own cluster: it writes the copies (and only it does), its
    herders' internal topics, group and (exactly-once) transactional ids."""
    mirror = mirror_principal(member)
    found: list[Grant] = []
    for flow in fed.flows_into(member):
        found += [g for name in flow.topics for g in topic(mirror, flow.mirrored(name), "create", "write",
                                                              "describe")]
        found += [g for name in internal_topics(flow.source)
                  for g in topic(mirror, name, "create", "read", "write", "describe")]
        found.append(Grant(mirror, "group", worker_group(flow.source), "literal", "read"))
        leader, tasks = transactional_ids(flow.source)
        found += [Grant(mirror, "transactional_id", leader, "literal", op) for op in ("write", "describe")]
        found += [Grant(mirror, "transactional_id", tasks, "prefixed", op) for op in ("write", "describe")]
    return found


def services(fed: Federation, member: str) -> list[Grant]:
    """The router, tracker (and on the secretariat's cluster the monitor) of one member."""
    router, tracker, monitor = access.ROUTER, access.DEADLINES, access.MONITOR
    found = [
        *topic(router, f"{names.OUT_PREFIX}{member}.", "read", "describe", pattern="prefixed"),
        *topic(router, f"{names.IN_PREFIX}{member}.", "write", "describe", pattern="prefixed"),
        *[g for name in fed.incoming_corridors(member) for g in topic(router, name, "read", "describe")],
        *[g for name in fed.outgoing_corridors(member) for g in topic(router, name, "write", "describe")],
        *topic(router, names.AUDIT, "write", "describe"),
        *topic(router, names.QUARANTINE, "write", "describe"),
        *topic(router, names.ROUTER_STATE, "read", "write", "describe"),
        *[Grant(router, "transactional_id", f"{access.app_id(router)}-", "prefixed", op)
          for op in ("write", "describe")],
        *topic(tracker, names.AUDIT, "read", "write", "describe"),
        *topic(tracker, names.DEADLINES_STATE, "read", "write", "describe"),
        *[Grant(tracker, "transactional_id", f"{access.app_id(tracker)}-", "prefixed", op)
          for op in ("write", "describe")],
        *topic(tracker, f"{names.IN_PREFIX}{member}.", "write", "describe", pattern="prefixed"),
    ]
    for principal in (router, tracker):  # their consumer groups; the trust topics
        found.append(Grant(principal, "group", access.app_id(principal), "literal", "read"))
        found += [g for name in access.SHARED_READ for g in topic(principal, name, "read", "describe")]
    if member == REGION:
        audits = (names.AUDIT, *fed.mirrored_audits())
        found += [g for name in audits for g in topic(monitor, name, "read", "describe")]
        found += access.own_app(monitor)
    return found


def principals(fed: Federation, member: str, participants: Sequence[str]) -> list[str]:
    """The Kafka users of ``member``'s cluster: whoever a grant there names."""
    return sorted({g.principal for g in grants(fed, member, participants)})
