"""The local Apache Kafka launcher: KRaft brokers from Maven Central jars, no Docker needed.

``resolve_jars`` asks Maven for the artifacts pinned in ``deploy/kafka/pom.xml`` (once; they are
cached), ``start`` formats KRaft storage and runs one combined broker+controller JVM per node on
127.0.0.1, waiting until every node answers a metadata request; ``stop`` leaves no process behind.
Every failure names its fix.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

from casebridge.core import limits
from casebridge.core.errors import CaseBridgeError
from casebridge.localkafka import tls

Progress = Callable[[str], None]


def progress_to_stderr(message: str) -> None:
    """The ``Progress`` of the commands: one ``casebridge broker:`` line on stderr."""
    print(f"casebridge broker: {message}", file=sys.stderr, flush=True)

def log4j2_config(quieter: Mapping[str, str]) -> str:
    """A log4j2 YAML configuration: INFO to stdout, each logger of ``quieter`` at its level."""
    loggers = "".join(f"      - {{name: {name}, level: {level}}}\n" for name, level in quieter.items())
    return ("Configuration:\n  Appenders:\n    Console:\n      name: STDOUT\n      PatternLayout:\n"
            '        pattern: "[%d] %p %m (%c)%n"\n  Loggers:\n    Logger:\n' + loggers +
            "    Root:\n      level: INFO\n      AppenderRef:\n        - ref: STDOUT\n")


LOG4J2_CONFIG = log4j2_config({"kafka.request.logger": "WARN", "org.apache.kafka.storage": "WARN"})


class BrokerError(CaseBridgeError, RuntimeError):
    """The local broker cannot be had; ``code`` says why and the message names the fix."""

    code = "broker_failed"


class JavaMissing(BrokerError):
    code = "java_missing"


class MavenMissing(BrokerError):
    code = "maven_missing"


class PortTaken(BrokerError):
    code = "port_taken"


class StateMismatch(BrokerError):
    """The state folder holds a broker made with other options (nodes, port, SASL, TLS)."""

    code = "broker_state_mismatch"


@dataclass(frozen=True)
class BrokerSpec:
    """Where and how the local cluster runs."""

    state_dir: Path
    cache_dir: Path
    pom: Path
    nodes: int = 1
    host: str = "127.0.0.1"
    base_port: int = 9092
    heap: tuple[str, ...] = ("-Xms128m", "-Xmx384m")
    start_timeout: float = 90.0
    secure: bool = False  # SASL/SCRAM-SHA-512 for clients, StandardAuthorizer, deny by default
    tls: bool = False  # with ``secure``: SASL_SSL, certificates from a local CA (localkafka.tls)

    @property
    def listener(self) -> str:
        """The security protocol (and listener name) of the client and inter-broker listener."""
        if not self.secure:
            return "PLAINTEXT"
        return "SASL_SSL" if self.tls else "SASL_PLAINTEXT"

    def client_port(self, node: int) -> int:
        return self.base_port + 2 * (node - 1)

    def controller_port(self, node: int) -> int:
        return self.base_port + 2 * (node - 1) + 1

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{self.host}:{self.client_port(n)}" for n in self.node_ids)

    @property
    def node_ids(self) -> range:
        return range(1, self.nodes + 1)

    def node_dir(self, node: int) -> Path:
        return self.state_dir / f"node-{node}"


# --- prerequisites -------------------------------------------------------------------------


def java_major(version_output: str) -> int | None:
    """The major version in ``java -version`` output (``"17.0.15"`` -> 17, ``"1.8.0"`` -> 8)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def check_java() -> str:
    """The path of a Java >= 17, or ``JavaMissing`` naming the fix."""
    java = shutil.which("java")
    if java is None:
        raise JavaMissing("java not found on PATH: install a JDK 17+ (e.g. apt-get install default-jdk)")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    major = java_major(out.stderr + out.stdout)
    if major is None or major < 17:
        raise JavaMissing(
            f"Kafka 4 needs Java 17 or newer, found {major}: install a JDK 17+ and put it first on PATH"
        )
    return java


# --- jars ----------------------------------------------------------------------------------


def pom_digest(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()[:16]


def jar_dir(spec: BrokerSpec) -> Path:
    return spec.cache_dir / pom_digest(spec.pom) / "libs"


def resolve_jars(spec: BrokerSpec, progress: Progress) -> Path:
    """The folder of Kafka's jars, resolving them with Maven into the cache on first use."""
    libs = jar_dir(spec)
    if (libs / ".complete").exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise MavenMissing(
            "mvn not found on PATH: install Apache Maven (apt-get install maven) or use Docker"
        )
    progress(f"resolving Apache Kafka from Maven Central into {libs} (first run only) ...")
    staging = libs.with_name(f"libs.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    command = [mvn, "-B", "-q", "-f", str(spec.pom), "dependency:copy-dependencies",
               f"-DoutputDirectory={staging}", "-DincludeScope=runtime"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise BrokerError(f"Maven could not resolve Kafka (check network to Maven Central):\n{tail}")
    (staging / ".complete").write_text(pom_digest(spec.pom))
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    progress(f"resolved {sum(1 for _ in libs.glob('*.jar'))} jars")
    return libs


# --- configuration -------------------------------------------------------------------------


ADMIN = "admin"
SCRAM = "SCRAM-SHA-512"


def admin_password(spec: BrokerSpec) -> str:
    """The secured cluster's super user password, made once (file mode 0600, never printed)."""
    path = spec.state_dir / "admin.secret"
    if not path.exists():
        spec.state_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(24))
    return path.read_text().strip()


def client_auth(spec: BrokerSpec) -> dict[str, Any]:
    """aiokafka settings for the launcher's own admin connection ({} when not secured)."""
    if not spec.secure:
        return {}
    auth: dict[str, Any] = {"security_protocol": spec.listener, "sasl_mechanism": SCRAM,
                            "sasl_plain_username": ADMIN, "sasl_plain_password": admin_password(spec)}
    if spec.tls:
        local = tls.ensure_local_ca(spec.state_dir, hosts=(spec.host,))
        auth["ssl_context"] = create_ssl_context(cafile=str(local.ca_cert))
    return auth


def security_properties(spec: BrokerSpec) -> dict[str, str]:
    """SASL/SCRAM on the client and inter-broker listener; the controller listener stays on
    loopback; StandardAuthorizer with no access unless an ACL grants it."""
    jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN}" '
            f'password="{admin_password(spec)}";')
    name = spec.listener
    props = {
        "listener.security.protocol.map": f"{name}:{name},CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": name,
        "sasl.enabled.mechanisms": SCRAM,
        "sasl.mechanism.inter.broker.protocol": SCRAM,
        f"listener.name.{name.lower()}.{SCRAM.lower()}.sasl.jaas.config": jaas,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        # the controller listener is PLAINTEXT on 127.0.0.1: its peers are ANONYMOUS
        "super.users": f"User:{ADMIN};User:ANONYMOUS",
    }
    if spec.tls:  # PEM stores (Kafka 2.7+): the brokers' key and chain, and the CA they trust
        local = tls.ensure_local_ca(spec.state_dir, hosts=(spec.host,))
        props |= {
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(local.server.resolve()),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(local.ca_cert.resolve()),
            "ssl.endpoint.identification.algorithm": "https",
        }
    return props


def server_properties(spec: BrokerSpec, node: int) -> str:
    """The ``server.properties`` of one combined broker+controller node."""
    replication = min(spec.nodes, 3)
    voters = ",".join(f"{n}@{spec.host}:{spec.controller_port(n)}" for n in spec.node_ids)
    lines = {
        "process.roles": "broker,controller",
        "node.id": str(node),
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{spec.host}:{spec.client_port(node)},"
        f"CONTROLLER://{spec.host}:{spec.controller_port(node)}",
        "advertised.listeners": f"PLAINTEXT://{spec.host}:{spec.client_port(node)}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str((spec.node_dir(node) / "data").resolve()),
        "num.partitions": "3",
        "default.replication.factor": str(replication),
        "min.insync.replicas": str(2 if replication >= 3 else 1),
        "unclean.leader.election.enable": "false",
        "offsets.topic.replication.factor": str(replication),
        "offsets.topic.num.partitions": "5",
        "transaction.state.log.replication.factor": str(replication),
        "transaction.state.log.min.isr": str(2 if replication >= 3 else 1),
        "share.coordinator.state.topic.replication.factor": str(replication),
        "share.coordinator.state.topic.min.isr": str(2 if replication >= 3 else 1),
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "log.retention.hours": "168",
        # the record limit every node checks before queueing (core/limits.py); + 12: batch header
        "message.max.bytes": str(limits.KAFKA_MESSAGE_BYTES + 12),
    }
    if spec.secure:
        client = f"{spec.listener}://{spec.host}:{spec.client_port(node)}"
        lines |= security_properties(spec)
        lines["listeners"] = f"{client},CONTROLLER://{spec.host}:{spec.controller_port(node)}"
        lines["advertised.listeners"] = client
        lines["auto.create.topics.enable"] = "false"
    return "".join(f"{key}={value}\n" for key, value in lines.items())


def new_cluster_id() -> str:
    """A random cluster id as Kafka's own ``Uuid.randomUuid()`` makes it.

    The id is URL-safe base64 of a UUID; one in 16 of those starts with ``-``, which Kafka's
    command-line tools read as an option ("argument --cluster-id: expected one argument"), so,
    like Kafka, draw again until it does not.
    """
    while True:
        raw = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not raw.startswith("-"):
            return raw


def cluster_id(spec: BrokerSpec) -> str:
    """The cluster's id, made once and kept in the state folder."""
    path = spec.state_dir / "cluster.id"
    if not path.exists():
        path.write_text(new_cluster_id())
    return path.read_text().strip()


def classpath(libs: Path) -> str:
    return os.pathsep.join(str(jar) for jar in sorted(libs.glob("*.jar")))


# The JVM of every local broker and MirrorMaker: small heaps, the serial collector, and only the
# C1 compiler (no C2). On 2 cores a broker's C2 compiler threads took 142-222 us of CPU per
# envelope the router routed (326-332 us with six recipients), still after 40,000 records of
# warm-up; C1 only: 20-43 us, the whole broker 413-613 -> 205-338 us an envelope, 755-981 -> 347-440
# with six recipients (bench/README.md, 2026-12-02, fifth session). Peak speed matters less than
# the cores here: the brokers share them with everything they serve.
JVM_FLAGS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true")


def java_command(java: str, spec: BrokerSpec, libs: Path, main: str, *args: str) -> list[str]:
    log_config = spec.state_dir / "log4j2.yaml"
    return [java, *spec.heap, *JVM_FLAGS,
            f"-Dlog4j2.configurationFile={log_config.resolve()}",
            "-cp", classpath(libs), main, *args]


def prepare_node(java: str, spec: BrokerSpec, libs: Path, node: int) -> Path:
    """Write the node's properties and format its storage once; the properties path."""
    folder = spec.node_dir(node)
    folder.mkdir(parents=True, exist_ok=True)
    props = folder / "server.properties"
    props.write_text(server_properties(spec, node))
    if (folder / "data" / "meta.properties").exists():
        return props
    scram = ["--add-scram", f"{SCRAM}=[name={ADMIN},password={admin_password(spec)}]"] if spec.secure else []
    command = java_command(java, spec, libs, "kafka.tools.StorageTool",
                           "format", f"--cluster-id={cluster_id(spec)}", "-c", str(props), *scram)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BrokerError(f"formatting KRaft storage of node {node} failed:\n{done.stdout}{done.stderr}")
    return props


# --- processes -----------------------------------------------------------------------------


def pid_of(spec: BrokerSpec, node: int) -> int | None:
    """The pid of a live node, or None (a stale pid file is removed)."""
    path = spec.node_dir(node) / "broker.pid"
    if not path.exists():
        return None
    pid = int(path.read_text().strip() or 0)
    if pid > 0 and alive(pid) and _is_kafka(pid):
        return pid
    path.unlink(missing_ok=True)
    return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


def _is_kafka(pid: int) -> bool:
    cmdline = Path(f"/proc/{pid}/cmdline")
    return not cmdline.exists() or b"kafka.Kafka" in cmdline.read_bytes()


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def ephemeral_low(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> int:
    """The first port the kernel hands out as a client's source port (32768 when unknown)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(path.read_text().split()[0])
    return 32768


def free_base_port(host: str = "127.0.0.1", nodes: int = 1) -> int:
    """A port p such that p .. p + 2*nodes - 1 are all free on loopback (for tests and the demo).

    Below the kernel's ephemeral range: a port in it, left free while a node is down, can be taken
    as the source port of a client's connection (on loopback even connected to itself: a client
    dialling the dead node's port from that very port), and the node then cannot bind on restart
    (seen in the fault tests: "Address already in use" after all brokers were killed for 30 s).
    """
    top = min(40000, ephemeral_low()) - 2 * nodes
    for _ in range(200):
        base = random.randrange(20000, max(top, 20002), 2)  # noqa: S311 - a port, not a secret
        if all(port_free(host, base + i) for i in range(2 * nodes)):
            return base
    raise PortTaken(f"no free run of {2 * nodes} loopback ports in 20000-{top + 2 * nodes - 1}")


def check_ports(spec: BrokerSpec) -> None:
    for node in spec.node_ids:
        for port in (spec.client_port(node), spec.controller_port(node)):
            if not port_free(spec.host, port):
                raise PortTaken(
                    f"port {spec.host}:{port} is taken by another process: stop it, or start on "
                    f"other ports (casebridge broker start --port N)"
                )


def spawn_node(java: str, spec: BrokerSpec, libs: Path, node: int) -> int:
    props = prepare_node(java, spec, libs, node)
    log = (spec.node_dir(node) / "broker.log").open("ab")
    command = java_command(java, spec, libs, "kafka.Kafka", str(props))
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    (spec.node_dir(node) / "broker.pid").write_text(str(process.pid))
    return process.pid


def log_tail(spec: BrokerSpec, node: int, lines: int = 20) -> str:
    """The node's last ERROR lines, then the last ``lines`` lines of its log."""
    path = spec.node_dir(node) / "broker.log"
    if not path.exists():
        return "(no log)"
    text = path.read_text(errors="replace").splitlines()
    errors = [line for line in text if "] ERROR " in line or "] FATAL " in line][-3:]
    return "\n".join([*errors, "...", *text[-lines:]] if errors else text[-lines:])


async def _cluster_size(bootstrap: str, auth: Mapping[str, Any]) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, **auth)
    try:
        await admin.start()
        description = await admin.describe_cluster()
        return len(description["brokers"])
    finally:
        await admin.close()


def answers(bootstrap: str, nodes: int, auth: Mapping[str, Any] | None = None) -> bool:
    """True once a metadata request lists every node as a broker (call from sync code only)."""
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # refused connections are expected while it boots
    try:
        return asyncio.run(_cluster_size(bootstrap, auth or {})) >= nodes
    except Exception:  # any connection or protocol error means: not up yet
        return False
    finally:
        quiet.setLevel(level)


def wait_until_up(spec: BrokerSpec, pids: dict[int, int], progress: Progress) -> None:
    deadline = time.monotonic() + spec.start_timeout
    while time.monotonic() < deadline:
        for node, pid in pids.items():
            if not alive(pid):
                raise BrokerError(f"broker node {node} exited during start; its log:\n{log_tail(spec, node)}")
        if answers(spec.bootstrap, spec.nodes, client_auth(spec)):
            return
        time.sleep(0.5)
    tails = "\n".join(f"--- node {n}\n{log_tail(spec, n)}" for n in spec.node_ids)
    raise BrokerError(f"broker did not answer within {spec.start_timeout:.0f}s; logs:\n{tails}")


def start(spec: BrokerSpec, progress: Progress) -> str:
    """Start the cluster (idempotent) and return its bootstrap address once it answers."""
    if spec.tls and not spec.secure:
        raise BrokerError("TLS is offered with the secured listener only: use --secure with --tls")
    check_layout(spec)
    running = {n: pid for n in spec.node_ids if (pid := pid_of(spec, n)) is not None}
    if len(running) == spec.nodes and answers(spec.bootstrap, spec.nodes, client_auth(spec)):
        progress(f"already running at {spec.bootstrap}")
        return spec.bootstrap
    stop(spec, progress)
    java = check_java()
    spec.state_dir.mkdir(parents=True, exist_ok=True)
    libs = resolve_jars(spec, progress)
    check_ports(spec)
    (spec.state_dir / "log4j2.yaml").write_text(LOG4J2_CONFIG)
    (spec.state_dir / "nodes").write_text(" ".join(str(x) for x in layout_of(spec)) + "\n")
    progress(f"starting {spec.nodes} Kafka node(s) on {spec.bootstrap} ...")
    pids = {node: spawn_node(java, spec, libs, node) for node in spec.node_ids}
    try:
        wait_until_up(spec, pids, progress)
    except BrokerError:
        stop(spec, progress)
        raise
    return spec.bootstrap


def layout_of(spec: BrokerSpec) -> tuple[int, int, int, int]:
    """What a state folder's data is made for: nodes, first port, SASL, TLS (its ``nodes`` file)."""
    return spec.nodes, spec.base_port, int(spec.secure), int(spec.tls)


def describe(layout: tuple[int, ...]) -> str:
    nodes, port, secure, tls = layout
    security = "SASL/SCRAM over TLS" if tls else "SASL/SCRAM" if secure else "no SASL"
    return f"{nodes} node(s) from port {port}, {security}"


def check_layout(spec: BrokerSpec) -> None:
    """Refuse at once to start on data formatted for other options (it would wait and fail):
    ``StateMismatch`` naming ``casebridge broker reset``."""
    saved_file = spec.state_dir / "nodes"
    if not saved_file.exists() or not any(True for _ in _known_nodes(spec)):
        return
    saved = (*(int(x) for x in saved_file.read_text().split()), 0, 0, 0, 0)[:4]
    if saved != layout_of(spec):
        raise StateMismatch(
            f"the broker state in {spec.state_dir} was made for {describe(saved)}, not "
            f"{describe(layout_of(spec))}: start it as before, or run `casebridge broker reset` "
            "(stops it and deletes its data) and start again")


def reset(spec: BrokerSpec, progress: Progress) -> None:
    """Stop the broker and delete its state folder (its data and settings; the jar cache stays)."""
    stop(spec, progress)
    if spec.state_dir.exists():
        shutil.rmtree(spec.state_dir)
        progress(f"deleted {spec.state_dir}")


def stop(spec: BrokerSpec, progress: Progress, timeout: float = 30.0) -> int:
    """Stop every node of the cluster; the number of processes stopped (none left behind)."""
    pids = [pid for n in _known_nodes(spec) if (pid := pid_of(spec, n)) is not None]
    for pid in pids:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        if alive(pid):
            _signal_group(pid, signal.SIGKILL)
    for node in _known_nodes(spec):
        (spec.node_dir(node) / "broker.pid").unlink(missing_ok=True)
    if pids:
        progress(f"stopped {len(pids)} Kafka node(s)")
    return len(pids)


def kill_node(spec: BrokerSpec, node: int, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to one node (fault tests); the pid file stays until ``restart_node``."""
    pid = pid_of(spec, node)
    if pid is not None:
        _signal_group(pid, sig)


def restart_node(spec: BrokerSpec, node: int) -> int:
    """Start one node again after ``kill_node``; its new pid."""
    java = check_java()
    return spawn_node(java, spec, jar_dir(spec), node)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _known_nodes(spec: BrokerSpec) -> Iterator[int]:
    if not spec.state_dir.exists():
        return iter(())
    found = sorted(int(p.name.split("-")[1]) for p in spec.state_dir.glob("node-*") if p.is_dir())
    return iter(found)


def status(spec: BrokerSpec) -> dict[int, int | None]:
    """Node id -> pid of every node known in the state folder (None when not running)."""
    return {node: pid_of(spec, node) for node in _known_nodes(spec)}
