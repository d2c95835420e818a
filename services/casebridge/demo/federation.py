"""A federation on this machine: one secured single-node cluster per member (the secretariat and
each country), one MirrorMaker 2 per member pulling from its partners, and each member's router,
deadline tracker and nodes on its own cluster (the monitor on the secretariat's).

``up`` starts it all and notes the processes in ``<home>/federation.json``; ``down`` (also from
another process: ``casebridge federation down``) stops every process it started, brokers and
MirrorMakers included, and leaves no Java process behind. Every Kafka user exists only on the
clusters where a grant names it; passwords are one per principal, kept under ``<home>/trust``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from casebridge.core import access, federation
from casebridge.core.model import REGION, country_of
from casebridge.demo import localnet
from casebridge.localkafka import broker, mirror
from casebridge.runtime import acl
from casebridge.runtime.settings import Settings
from casebridge.runtime.topics import cluster_topics, sync_topics
from casebridge.runtime.world import World, bootstrap_network

Progress = Callable[[str], None]
STATE_FILE = "federation.json"
MEMBERS = (REGION, "TH", "KH")


@dataclass
class Cluster:
    member: str
    spec: broker.BrokerSpec
    settings: Settings  # the cluster's admin, for setting it up and for counting its records
    mirror: mirror.MirrorSpec | None = None

    @property
    def env(self) -> dict[str, str]:
        """What a service on this cluster is told (its own user and password are added by LocalNet)."""
        return {"KAFKA_BOOTSTRAP_SERVERS": self.settings.bootstrap_servers,
                "CASEBRIDGE_COUNTRY": self.member}


@dataclass
class Federation:
    """The running federation: its clusters and one LocalNet of every service process."""

    fed: federation.Federation
    clusters: dict[str, Cluster]
    net: localnet.LocalNet
    home: Path
    nodes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def cluster_of(self, participant: str) -> Cluster:
        return self.clusters[country_of(participant)]

    def stop(self, progress: Progress) -> None:
        self.net.stop()
        for cluster in self.clusters.values():
            if cluster.mirror is not None:
                mirror.stop(cluster.mirror, progress)
        for cluster in self.clusters.values():
            broker.stop(cluster.spec, progress)
        (self.home / STATE_FILE).unlink(missing_ok=True)


def cluster_spec(home: Path, settings: Settings, member: str, base_port: int) -> broker.BrokerSpec:
    return broker.BrokerSpec(
        state_dir=home / "clusters" / member, cache_dir=settings.kafka_cache, pom=settings.kafka_pom,
        base_port=base_port, secure=True, heap=("-Xms96m", "-Xmx256m"),
    )


def start_clusters(home: Path, settings: Settings, members: Sequence[str], progress: Progress
                   ) -> dict[str, Cluster]:
    """One secured KRaft cluster per member, started side by side, on free loopback ports."""
    specs: dict[str, broker.BrokerSpec] = {}
    taken: set[int] = set()
    for member in members:
        port = broker.free_base_port()
        while port in taken or port + 1 in taken:
            port = broker.free_base_port()
        taken |= {port, port + 1}
        specs[member] = cluster_spec(home, settings, member, port)
    broker.resolve_jars(next(iter(specs.values())), progress)
    for spec in specs.values():
        broker.stop(spec, lambda _m: None)

    def start(member: str) -> Cluster:
        spec = specs[member]
        bootstrap = broker.start(spec, prefixed_progress(progress, member))
        admin = replace(settings, bootstrap_servers=bootstrap, sasl_username=broker.ADMIN,
                        sasl_password=broker.admin_password(spec), country=member,
                        federation=tuple(members))
        return Cluster(member, spec, admin)

    with ThreadPoolExecutor(len(members)) as pool:
        return {c.member: c for c in pool.map(start, members)}


def prepare(fed: federation.Federation, clusters: Mapping[str, Cluster], world: World, home: Path,
            partitions: int, progress: Progress) -> None:
    """Each cluster's topics (corridors and mirrored copies made first, co-partitioned), users and ACLs."""
    participants = list(world.directory.participants)
    for member, cluster in clusters.items():
        specs = cluster_topics(fed, member, participants, partitions)
        asyncio.run(sync_topics(cluster.settings, specs, 1))
        report = acl.sync(cluster.settings.bootstrap_servers, cluster.settings.sasl_password, home,
                          federation.grants(fed, member, participants),
                          federation.principals(fed, member, participants))
        progress(f"{member}: {len(specs)} topics, {report.users} users, {report.created} ACLs")


def mirror_spec(fed: federation.Federation, clusters: Mapping[str, Cluster], member: str,
                home: Path, settings: Settings) -> mirror.MirrorSpec:
    """``member``'s MirrorMaker: from each partner, the topics meant for ``member``."""
    principal = federation.mirror_principal(member)
    password = acl.password_of(home, principal)
    sources = tuple(
        mirror.Source(flow.source, clusters[flow.source].settings.bootstrap_servers, flow.topics,
                      principal, password)
        for flow in fed.flows_into(member)
    )
    own = clusters[member]
    return mirror.MirrorSpec(
        own=member, bootstrap=own.settings.bootstrap_servers, sources=sources,
        state_dir=home / "mirrors" / member, cache_dir=settings.kafka_cache, pom=settings.kafka_pom,
        username=principal, password=password, prefixed=federation.prefixed(member),
    )


def start_mirrors(fed: federation.Federation, clusters: Mapping[str, Cluster], home: Path,
                  settings: Settings, progress: Progress) -> None:
    for member, cluster in clusters.items():
        cluster.mirror = mirror_spec(fed, clusters, member, home, settings)
        mirror.stop(cluster.mirror, lambda _m: None)
        mirror.start(cluster.mirror, prefixed_progress(progress, f"{member} mirror"))
    for member, cluster in clusters.items():
        assert cluster.mirror is not None
        mirror.ready(cluster.mirror)
        progress(f"{member} mirror: replicating from {', '.join(fed.partners(member))}")


def prefixed_progress(progress: Progress, who: str) -> Progress:
    return lambda message: progress(f"{who}: {message}")


def start_services(running: Federation, tracker_env: Mapping[str, str] | None = None) -> None:
    """Each member's router and tracker, the nodes on their country's cluster, the monitor on the
    secretariat's; all answering."""
    net = running.net
    members = ",".join(running.fed.members)
    for member, cluster in running.clusters.items():
        env = {**cluster.env, "CASEBRIDGE_FEDERATION": members}
        net.placement[member] = env
        net.spawn(f"router-{member}", ["router", "run"], extra_env=env, principal=access.ROUTER)
        net.spawn(f"deadlines-{member}", ["deadlines", "run"], extra_env={**env, **(tracker_env or {})},
                  principal=access.DEADLINES)
    reg = running.clusters[REGION]
    port = localnet.free_port()
    net.spawn("monitor", ["monitor", "run", "--port", str(port)], port,  # cb.audit and <member>.cb.audit
              extra_env={**reg.env, "CASEBRIDGE_FEDERATION": members}, principal=access.MONITOR)
    for participant in running.nodes:
        net.start_node(participant)
    net.wait_healthy()


def up(settings: Settings, nodes: Sequence[str], progress: Progress, members: Sequence[str] = MEMBERS,
       tracker_env: Mapping[str, str] | None = None) -> Federation:
    """The whole federation under ``settings.home``, answering; ``down`` (or ``stop``) ends it."""
    home = settings.home
    home.mkdir(parents=True, exist_ok=True)
    fed = federation.Federation(tuple(members))
    missing = sorted({country_of(n) for n in nodes} - set(members))
    if missing:
        raise ValueError(f"nodes of {', '.join(missing)} have no cluster in the federation {members}")
    started = time.monotonic()
    clusters = start_clusters(home, settings, members, progress)
    running: Federation | None = None
    try:
        note(home, clusters, None)
        world = bootstrap_network(home, datetime.now(UTC))
        prepare(fed, clusters, world, home, settings.partitions, progress)
        start_mirrors(fed, clusters, home, settings, progress)
        note(home, clusters, None)
        first = clusters[members[1] if len(members) > 1 else members[0]]
        net = localnet.LocalNet(replace(settings, bootstrap_servers=first.settings.bootstrap_servers,
                                        sasl_username=broker.ADMIN,
                                        sasl_password=first.settings.sasl_password), world)
        running = Federation(fed, clusters, net, home, tuple(nodes))
        net.supervise()
        start_services(running, tracker_env)
        note(home, clusters, net)
    except BaseException:
        if running is not None:
            running.stop(lambda _m: None)
        else:
            down(home, lambda _m: None)
        raise
    progress(f"federation of {', '.join(members)} up in {time.monotonic() - started:.0f} s")
    return running


def note(home: Path, clusters: Mapping[str, Cluster], net: localnet.LocalNet | None) -> None:
    """What ``down`` must stop, written as soon as it runs."""
    doc = {
        "brokers": {m: str(c.spec.state_dir) for m, c in clusters.items()},
        "mirrors": {m: str(c.mirror.state_dir) for m, c in clusters.items() if c.mirror is not None},
        "bootstrap": {m: c.settings.bootstrap_servers for m, c in clusters.items()},
        "services": {n: s.process.pid for n, s in net.services.items()} if net is not None else {},
    }
    (home / STATE_FILE).write_text(json.dumps(doc, indent=1) + "\n")


def down(home: Path, progress: Progress, timeout: float = 15.0) -> int:
    """Stop what ``up`` noted under ``home``: services, MirrorMakers, brokers; how many were stopped."""
    path = home / STATE_FILE
    if not path.exists():
        return 0
    doc = json.loads(path.read_text())
    stopped = 0
    pids = [int(p) for p in doc.get("services", {}).values()]
    for pid in pids:
        stopped += _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(broker.alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        _signal(pid, signal.SIGKILL)
    for member, state_dir in doc.get("mirrors", {}).items():
        mm2 = mirror.MirrorSpec(own=member, bootstrap="", sources=(), state_dir=Path(state_dir),
                                cache_dir=Path(), pom=Path())
        stopped += int(mirror.stop(mm2, progress))
    for state_dir in doc.get("brokers", {}).values():
        kafka = broker.BrokerSpec(state_dir=Path(state_dir), cache_dir=Path(), pom=Path())
        stopped += broker.stop(kafka, progress)
    path.unlink()
    return stopped


def _signal(pid: int, sig: int) -> int:
    """Signal a service's process group (it runs in a session of its own); 1 if it was there."""
    try:
        os.killpg(pid, sig)
    except OSError:
        return 0
    return 1


def holdings(running: Federation, topics: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
    """Per cluster: every CaseBridge topic it holds and its number of committed records."""
    from casebridge.runtime import ckafka

    found: dict[str, dict[str, int]] = {}
    for member, cluster in running.clusters.items():
        counts = ckafka.count_committed(cluster.settings, topics)
        found[member] = {t: n for t, n in sorted(counts.items()) if not t.startswith(("mm2-", "__"))}
    return found
