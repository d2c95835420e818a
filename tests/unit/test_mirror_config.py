"""The MirrorMaker 2 properties of a receiving cluster: pull only, nothing into the source."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from casebridge.localkafka import mirror


def spec(**changes: object) -> mirror.MirrorSpec:
    th = mirror.Source("TH", "th:9092", ("cb.xb.TH.KH",), "KH.MIRROR", "s3cret-th")
    base = mirror.MirrorSpec(own="KH", bootstrap="kh:9092", sources=(th,), state_dir=Path("s"),
                             cache_dir=Path("c"), pom=Path("p"), username="KH.MIRROR", password="s3cret-kh")
    return replace(base, **changes)  # type: ignore[arg-type]


def parsed(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_only_flows_into_the_own_cluster_and_nothing_is_written_into_a_source() -> None:
    """One enabled flow per source into ``own``; offset syncs, checkpoints, heartbeats, ACL and
    config syncs all off; the source consumer reads committed records only."""
    props = parsed(mirror.properties(spec()))
    assert props["clusters"] == "KH,TH"
    assert {k for k, v in props.items() if k.endswith(".enabled") and v == "true"} == {"TH->KH.enabled"}
    assert props["TH->KH.topics"] == "cb.xb.TH.KH"
    for off in ("emit.offset-syncs.enabled", "emit.checkpoints.enabled", "sync.group.offsets.enabled",
                "emit.heartbeats.enabled", "sync.topic.acls.enabled", "sync.topic.configs.enabled"):
        assert props[off] == "false"
    assert props["TH.consumer.isolation.level"] == "read_committed"
    assert props["KH.exactly.once.source.support"] == "enabled"
    assert props["replication.policy.class"].endswith("IdentityReplicationPolicy")
    assert props["replication.factor"] == "1"


@pytest.mark.parametrize("alias", ["KH", "TH"])
def test_each_cluster_gets_its_own_scram_login(alias: str) -> None:
    """Per cluster: SASL_PLAINTEXT, SCRAM-SHA-512 and a JAAS line with that cluster's password."""
    props = parsed(mirror.properties(spec()))
    assert props[f"{alias}.security.protocol"] == "SASL_PLAINTEXT"
    assert props[f"{alias}.sasl.mechanism"] == "SCRAM-SHA-512"
    assert f'password="s3cret-{alias.lower()}";' in props[f"{alias}.sasl.jaas.config"]


def test_prefixed_names_and_no_auth() -> None:
    """``prefixed`` names the target topic after its source; no user means no SASL settings."""
    plain = spec(prefixed=True, username="", password="", sources=(mirror.Source("TH", "th:1", ("x",)),))
    props = parsed(mirror.properties(plain))
    assert props["replication.policy.class"].endswith("DefaultReplicationPolicy")
    assert not [k for k in props if "sasl" in k or "security" in k]
    assert plain.target_topic("TH", "cb.xb.TH.KH") == "TH.cb.xb.TH.KH"


def test_passwords_stay_out_of_repr_and_a_quote_is_refused() -> None:
    """Passwords never show in ``repr``; one a JAAS line cannot carry is refused by name."""
    assert "s3cret" not in repr(spec())
    with pytest.raises(mirror.MirrorError, match="JAAS"):
        mirror.properties(spec(password='a"b'))
