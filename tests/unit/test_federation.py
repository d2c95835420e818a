"""The federation's topology and per-cluster policy (``casebridge.core.federation``), pure."""

from __future__ import annotations

import pytest
import yaml

from casebridge.core import access, federation, topics
from casebridge.runtime.topics import cluster_topics
from casebridge.runtime.world import PARTICIPANTS

FED = federation.Federation(("REG", "TH", "KH"))
IDS = [p["id"] for p in yaml.safe_load(PARTICIPANTS.read_text())["participants"]]


def test_each_cluster_holds_only_its_own_participants_topics() -> None:
    """KH's cluster has no cb.out.TH.* / cb.in.TH.*; TH's none of KH's; each has its corridors."""
    held = {m: {s.name for s in cluster_topics(FED, m, IDS)} for m in FED.members}
    assert not {t for t in held["KH"] if t.startswith(("cb.out.TH.", "cb.in.TH."))}
    assert not {t for t in held["TH"] if t.startswith(("cb.out.KH.", "cb.in.KH."))}
    assert {"cb.out.TH.MSDHS", "cb.xb.TH.KH", "cb.xb.KH.TH", "cb.xb.TH.REG", "cb.directory"} <= held["TH"]
    assert {"TH.cb.audit", "KH.cb.audit", "TH.cb.xb.TH.REG"} <= held["REG"]


def test_corridors_and_outboxes_are_co_partitioned() -> None:
    """Corridors have the outboxes' partition count: a case stays in partition p end to end."""
    specs = {s.name: s.partitions for s in cluster_topics(FED, "KH", IDS, partitions=4)}
    assert specs["cb.xb.TH.KH"] == specs["cb.xb.KH.TH"] == specs["cb.out.KH.MOSVY"] == 4


def test_a_partners_mirror_may_only_read_the_corridor_meant_for_it() -> None:
    """On KH's cluster TH's MirrorMaker reads cb.xb.KH.TH (and its settings) and nothing else; it
    writes nothing, joins no group, holds no transactional id there."""
    mine = [g for g in federation.grants(FED, "KH", IDS) if g.principal == "TH.MIRROR"]
    assert {(g.resource, g.name, g.operation) for g in mine} == {
        ("topic", "cb.xb.KH.TH", op) for op in ("read", "describe", "describe_configs")}


def test_the_secretariats_mirror_reads_the_audit_and_its_corridor_only() -> None:
    mine = {(g.name, g.operation) for g in federation.grants(FED, "TH", IDS) if g.principal == "REG.MIRROR"}
    assert mine == {(name, op) for name in ("cb.audit", "cb.xb.TH.REG")
                    for op in ("read", "describe", "describe_configs")}


@pytest.mark.parametrize("name", ["cb.xb.TH.KH", "cb.directory", "cb.agreements"])
def test_only_the_own_mirror_writes_the_copies(name: str) -> None:
    """The copies on KH's cluster are written by KH's MirrorMaker alone: not by the router, not by
    the secretariat's participants, not by TH."""
    writers = {g.principal for g in federation.grants(FED, "KH", IDS)
               if g.resource == "topic" and g.operation == "write"
               and (g.name == name or (g.pattern == "prefixed" and name.startswith(g.name)))}
    assert writers == {"KH.MIRROR"}


def test_no_participant_of_another_country_has_a_right_on_a_cluster() -> None:
    principals = set(federation.principals(FED, "KH", IDS))
    assert not {p for p in principals if p.startswith("TH.") and p != "TH.MIRROR"}
    assert {"KH.MOSVY", "KH.MIRROR", access.ROUTER, access.DEADLINES} <= principals
    assert access.MONITOR not in principals  # the monitor runs on the secretariat's cluster


def test_the_router_reads_its_own_outboxes_and_corridors_and_writes_its_inboxes_and_corridors() -> None:
    mine = [g for g in federation.grants(FED, "KH", IDS)
            if g.principal == access.ROUTER and g.resource == "topic"]
    reads = {g.name for g in mine if g.operation == "read"}
    writes = {g.name for g in mine if g.operation == "write"}
    assert reads == {"cb.out.KH.", "cb.xb.TH.KH", "cb.xb.REG.KH", "cb.router.state", "cb.directory",
                     "cb.agreements"}
    assert writes == {"cb.in.KH.", "cb.xb.KH.TH", "cb.xb.KH.REG", "cb.audit", "cb.quarantine",
                      "cb.router.state"}


def test_flows_keep_names_into_countries_and_prefix_them_into_the_secretariat() -> None:
    [into_kh_from_th] = [f for f in FED.flows_into("KH") if f.source == "TH"]
    assert into_kh_from_th.topics == ("cb.xb.TH.KH",)
    assert into_kh_from_th.mirrored("cb.xb.TH.KH") == "cb.xb.TH.KH"
    [into_kh_from_reg] = [f for f in FED.flows_into("KH") if f.source == "REG"]
    assert set(into_kh_from_reg.topics) == {"cb.xb.REG.KH", topics.DIRECTORY, topics.AGREEMENTS}
    [into_reg_from_th] = [f for f in FED.flows_into("REG") if f.source == "TH"]
    assert into_reg_from_th.mirrored(topics.AUDIT) == "TH.cb.audit"
    assert FED.incoming_corridors("REG") == ("TH.cb.xb.TH.REG", "KH.cb.xb.KH.REG")


def test_a_federation_without_the_secretariat_is_refused() -> None:
    with pytest.raises(federation.FederationInvalid, match="secretariat"):
        federation.Federation(("TH", "KH"))
    with pytest.raises(federation.FederationInvalid, match="not a member"):
        FED.member("VN")
