"""MirrorMaker 2 in dedicated mode, run by the receiving cluster's owner: pull, never push.

One MM2 JVM per receiving cluster (``--clusters <own>``) consumes the partners' corridor topics
and produces them into its own cluster. Nothing is written into a source cluster: no offset
syncs, checkpoints, heartbeats, ACL or config syncs, and the source consumer joins no group (MM2
assigns partitions and keeps its positions in its own cluster). The source consumer reads
``read_committed`` and the target side runs with exactly-once source support (KIP-618): a
record reaches the own cluster once, in a transaction that also stores its source offset.

``properties`` is the pure ``mm2.properties`` text; ``start`` / ``stop`` / ``kill`` manage the
process like ``broker`` does the broker's; ``ready`` reads MM2's status topics on the own cluster.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from casebridge.core.federation import SOURCE_CONNECTOR, internal_topics
from casebridge.localkafka import broker
from casebridge.localkafka.broker import Progress

MAIN = "org.apache.kafka.connect.mirror.MirrorMaker"
IDENTITY_POLICY = "org.apache.kafka.connect.mirror.IdentityReplicationPolicy"
PREFIX_POLICY = "org.apache.kafka.connect.mirror.DefaultReplicationPolicy"

# every client, worker and connector prints its whole configuration at INFO
LOG4J2_CONFIG = broker.log4j2_config({
    **{name: "WARN" for name in (
        "org.apache.kafka.clients", "org.apache.kafka.common",
        "org.apache.kafka.connect.runtime.distributed.DistributedConfig",
        "org.apache.kafka.connect.runtime.ConnectorConfig",
        "org.apache.kafka.connect.runtime.SourceConnectorConfig",
        "org.apache.kafka.connect.runtime.TaskConfig", "org.apache.kafka.connect.runtime.isolation",
        "org.apache.kafka.connect.mirror.MirrorMakerConfig",
        "org.apache.kafka.connect.mirror.MirrorSourceConfig",
        "org.apache.kafka.connect.mirror.MirrorCheckpointConfig",
        "org.apache.kafka.connect.mirror.MirrorHeartbeatConfig",
        "org.apache.kafka.connect.mirror.MirrorSourceTaskConfig", "org.apache.kafka.connect.json")},
    "org.reflections": "ERROR",
})


class MirrorError(broker.BrokerError):
    """MirrorMaker 2 cannot be had or does not replicate; the message names its log."""

    code = "mirror_failed"


@dataclass(frozen=True)
class Source:
    """A partner cluster MM2 pulls from, as its MM2 principal there."""

    alias: str  # cluster alias, e.g. "TH"
    bootstrap: str
    topics: tuple[str, ...]  # topic names or regular expressions
    username: str = ""  # SCRAM-SHA-512 user on the source cluster ("" = no authentication)
    password: str = field(default="", repr=False)


@dataclass(frozen=True)
class MirrorSpec:
    """One MM2 node writing into its own cluster ``own`` from ``sources``."""

    own: str  # alias of the target cluster
    bootstrap: str
    sources: tuple[Source, ...]
    state_dir: Path  # mm2.properties, mirror.log, mirror.pid
    cache_dir: Path
    pom: Path
    username: str = ""  # the MM2 principal on its own cluster
    password: str = field(default="", repr=False)
    prefixed: bool = False  # True: "TH.cb.xb.TH.KH" (DefaultReplicationPolicy); False: same name
    heap: tuple[str, ...] = ("-Xms64m", "-Xmx256m")
    exactly_once: bool = True  # KIP-618 on the own cluster: needs READ_COMMITTED at the source

    def target_topic(self, source: str, topic: str) -> str:
        """The name ``topic`` of cluster ``source`` has in the own cluster."""
        return f"{source}.{topic}" if self.prefixed else topic


# --- configuration -------------------------------------------------------------------------


def _client(alias: str, bootstrap: str, username: str, password: str) -> dict[str, str]:
    props = {f"{alias}.bootstrap.servers": bootstrap}
    if not username:
        return props
    for value in (username, password):
        if any(c in value for c in '"\\\n\r'):
            raise MirrorError(f"the SCRAM user or password for {alias} holds a quote, backslash "
                              "or line break, which a JAAS line cannot carry")
    jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required '
            f'username="{username}" password="{password}";')
    return props | {f"{alias}.security.protocol": "SASL_PLAINTEXT",
                    f"{alias}.sasl.mechanism": broker.SCRAM, f"{alias}.sasl.jaas.config": jaas}


def _flow(spec: MirrorSpec, source: Source) -> dict[str, str]:
    flow = f"{source.alias}->{spec.own}"
    return {
        f"{flow}.enabled": "true",
        f"{flow}.topics": ",".join(source.topics),
        # aborted records of the partner's transactions are never mirrored
        f"{source.alias}.consumer.isolation.level": "read_committed",
    }


def _own(spec: MirrorSpec) -> dict[str, str]:
    """Worker settings of the herders writing into the own cluster."""
    own = spec.own
    props = {
        # a restarted node takes the dead one's tasks at once, not after 5 minutes
        f"{own}.scheduled.rebalance.max.delay.ms": "0",
        f"{own}.session.timeout.ms": "6000",  # the broker's group.min.session.timeout.ms
        f"{own}.heartbeat.interval.ms": "2000",
        f"{own}.offset.flush.interval.ms": "1000",
        # MM2's plugins have ServiceLoader manifests: no classpath scan (seconds per herder)
        f"{own}.plugin.discovery": "service_load",
    }
    if spec.exactly_once:
        props[f"{own}.exactly.once.source.support"] = "enabled"
    return props


COMMON = {
    # nothing is written into a source cluster
    "emit.offset-syncs.enabled": "false",
    "emit.checkpoints.enabled": "false",
    "sync.group.offsets.enabled": "false",
    "emit.heartbeats.enabled": "false",
    "sync.topic.acls.enabled": "false",
    "sync.topic.configs.enabled": "false",
    "refresh.groups.enabled": "false",
    # a corridor topic made after the start is mirrored within seconds
    "refresh.topics.interval.seconds": "5",
    # single-node clusters
    "replication.factor": "1",
    "offset.storage.replication.factor": "1",
    "status.storage.replication.factor": "1",
    "config.storage.replication.factor": "1",
    "offset.storage.partitions": "1",
    "status.storage.partitions": "1",
    "tasks.max": "1",
    "plugin.discovery": "service_load",
    "dedicated.mode.enable.internal.rest": "false",  # one node: the leader fences its own zombies
}


def properties(spec: MirrorSpec) -> str:
    """The ``mm2.properties`` of ``spec`` (it holds passwords: write it mode 0600)."""
    if not spec.sources:
        raise MirrorError("a mirror needs at least one source cluster")
    aliases = [spec.own, *(s.alias for s in spec.sources)]
    if len(set(aliases)) != len(aliases):
        raise MirrorError(f"cluster aliases repeat: {aliases}")
    props = {"clusters": ",".join(aliases),
             **_client(spec.own, spec.bootstrap, spec.username, spec.password)}
    for source in spec.sources:
        props |= _client(source.alias, source.bootstrap, source.username, source.password)
        props |= _flow(spec, source)
    props |= _own(spec) | COMMON
    props["replication.policy.class"] = PREFIX_POLICY if spec.prefixed else IDENTITY_POLICY
    return "".join(f"{key}={value}\n" for key, value in props.items())


# --- the process ---------------------------------------------------------------------------


def _path(spec: MirrorSpec, name: str) -> Path:
    return spec.state_dir / name


def pid_of(spec: MirrorSpec) -> int | None:
    """The pid of the running MM2 node, or None (a stale pid file is removed)."""
    path = _path(spec, "mirror.pid")
    if not path.exists():
        return None
    pid = int(path.read_text().strip() or 0)
    cmdline = Path(f"/proc/{pid}/cmdline")
    if pid > 0 and broker.alive(pid) and (not cmdline.exists() or MAIN.encode() in cmdline.read_bytes()):
        return pid
    path.unlink(missing_ok=True)
    return None


def _write_private(path: Path, text: str) -> None:
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    path.write_text(text)


def command(java: str, spec: MirrorSpec, libs: Path) -> list[str]:
    log_config = _path(spec, "log4j2.yaml").resolve()
    return [java, *spec.heap, *broker.JVM_FLAGS,
            f"-Dlog4j2.configurationFile={log_config}", "-cp", broker.classpath(libs), MAIN,
            str(_path(spec, "mm2.properties").resolve()), "--clusters", spec.own]


def start(spec: MirrorSpec, progress: Progress) -> int:
    """Start the MM2 node (idempotent); its pid. ``ready`` says when it replicates."""
    running = pid_of(spec)
    if running is not None:
        progress(f"MirrorMaker 2 already running (pid {running})")
        return running
    java = broker.check_java()
    libs = broker.resolve_jars(broker.BrokerSpec(spec.state_dir, spec.cache_dir, spec.pom), progress)
    spec.state_dir.mkdir(parents=True, exist_ok=True)
    _path(spec, "log4j2.yaml").write_text(LOG4J2_CONFIG)
    _write_private(_path(spec, "mm2.properties"), properties(spec))
    _path(spec, "mirror.started").write_text(str(int(time.time() * 1000)))
    log = _path(spec, "mirror.log").open("ab")
    sources = ", ".join(s.alias for s in spec.sources)
    progress(f"starting MirrorMaker 2: {sources} -> {spec.own} ({spec.bootstrap}) ...")
    process = subprocess.Popen(command(java, spec, libs), stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    _path(spec, "mirror.pid").write_text(str(process.pid))
    return process.pid


def stop(spec: MirrorSpec, progress: Progress, timeout: float = 30.0) -> bool:
    """Stop the node (SIGTERM, SIGKILL after ``timeout``); whether one was running."""
    pid = pid_of(spec)
    if pid is None:
        return False
    broker._signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while broker.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if broker.alive(pid):
        broker._signal_group(pid, signal.SIGKILL)
    _path(spec, "mirror.pid").unlink(missing_ok=True)
    progress("stopped MirrorMaker 2")
    return True


def kill(spec: MirrorSpec) -> None:
    """SIGKILL the node (fault tests); ``start`` runs a new one."""
    pid = pid_of(spec)
    if pid is None:
        return
    broker._signal_group(pid, signal.SIGKILL)
    while broker.alive(pid):
        time.sleep(0.05)
    _path(spec, "mirror.pid").unlink(missing_ok=True)


def log_tail(spec: MirrorSpec, lines: int = 20) -> str:
    """The last ERROR lines of the node's log, then its last ``lines`` lines."""
    path = _path(spec, "mirror.log")
    if not path.exists():
        return "(no log)"
    text = path.read_text(errors="replace").splitlines()
    errors = [line for line in text if "] ERROR " in line][-3:]
    return "\n".join([*errors, "...", *text[-lines:]] if errors else text[-lines:])


# --- readiness -----------------------------------------------------------------------------


def _auth(spec: MirrorSpec) -> dict[str, Any]:
    if not spec.username:
        return {}
    return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": broker.SCRAM,
            "sasl_plain_username": spec.username, "sasl_plain_password": spec.password}


async def _partitions(spec: MirrorSpec, topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=spec.bootstrap, request_timeout_ms=5000, **_auth(spec))
    try:
        await admin.start()
        (found,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return [TopicPartition(topic, p["partition"]) for p in found["partitions"]]


async def _latest(spec: MirrorSpec, topic: str) -> dict[str, tuple[dict[str, Any] | None, int]]:
    """Key -> (last value, its timestamp) of a status topic ({} while it does not exist)."""
    latest: dict[str, tuple[dict[str, Any] | None, int]] = {}
    parts = await _partitions(spec, topic)
    if not parts:
        return latest
    consumer = AIOKafkaConsumer(bootstrap_servers=spec.bootstrap, group_id=None,
                                enable_auto_commit=False, request_timeout_ms=5000, **_auth(spec))
    try:
        await consumer.start()
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for r in records:
                    value = json.loads(r.value) if r.value else None
                    latest[(r.key or b"").decode()] = (value, r.timestamp)
    finally:
        await consumer.stop()
    return latest


def _state(latest: dict[str, tuple[dict[str, Any] | None, int]], key: str, since: int) -> str:
    value, stamp = latest.get(key, (None, 0))
    if value is None or stamp < since:
        return "UNASSIGNED"
    if value.get("state") == "FAILED":
        raise MirrorError(f"{key} FAILED: {str(value.get('trace'))[:800]}")
    return str(value.get("state"))


def replicating(spec: MirrorSpec, source: str) -> bool:
    """True once this run's source connector and its task report RUNNING for ``source``."""
    since = int(_path(spec, "mirror.started").read_text())
    latest = asyncio.run(_latest(spec, internal_topics(source)[1]))
    keys = (f"status-connector-{SOURCE_CONNECTOR}", f"status-task-{SOURCE_CONNECTOR}-0")
    return all(_state(latest, key, since) == "RUNNING" for key in keys)


def ready(spec: MirrorSpec, timeout: float = 90.0) -> None:
    """Wait until every source's flow replicates (its task runs; it needs a matching topic at
    the source); ``MirrorError`` naming the log when MM2 exits, fails or takes longer."""
    log = _path(spec, "mirror.log")
    deadline = time.monotonic() + timeout
    waiting = [s.alias for s in spec.sources]
    while waiting:
        if pid_of(spec) is None:
            raise MirrorError(f"MirrorMaker 2 exited; its log ({log}):\n{log_tail(spec)}")
        try:
            waiting = [alias for alias in waiting if not replicating(spec, alias)]
        except MirrorError as exc:
            raise MirrorError(f"{exc}\nits log ({log}):\n{log_tail(spec)}") from exc
        except Exception:  # noqa: S110 - the own cluster does not answer yet: ask again
            pass
        if waiting and time.monotonic() > deadline:
            raise MirrorError(f"MirrorMaker 2 did not replicate from {', '.join(waiting)} within "
                              f"{timeout:.0f}s; its log ({log}):\n{log_tail(spec)}")
        if waiting:
            time.sleep(0.5)

