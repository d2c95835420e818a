"""Factory helpers shared by the test suites (plain functions, no fixtures-of-fixtures)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from casebridge.localkafka import broker, tls
from casebridge.runtime.settings import Settings


def fresh_name(kind: str) -> str:
    """A topic or consumer-group name no other test uses (dots only, as our topic names)."""
    return f"test.{kind}.{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class KafkaHandle:
    """A running broker the tests may use: its address and where it came from."""

    bootstrap: str
    source: str  # "env", "testcontainers" or "launcher"
    spec: broker.BrokerSpec | None = None

    @property
    def settings(self) -> Settings:
        """Client settings; on a secured launcher broker, as its admin (a super user)."""
        if self.spec is not None and self.spec.secure:
            return Settings(
                bootstrap_servers=self.bootstrap,
                sasl_username=broker.ADMIN,
                sasl_password=broker.admin_password(self.spec),
                kafka_ca=str(tls.paths(self.spec.state_dir).ca_cert) if self.spec.tls else "",
            )
        return Settings(bootstrap_servers=self.bootstrap)

    def env(self) -> dict[str, str]:
        """Environment for a CaseBridge process that should talk to this broker (as its admin)."""
        settings = self.settings
        extra = (
            {
                "CASEBRIDGE_SASL_USERNAME": settings.sasl_username,
                "CASEBRIDGE_SASL_PASSWORD": settings.sasl_password,
                "CASEBRIDGE_KAFKA_CA": settings.kafka_ca,
            }
            if settings.sasl_username
            else {}
        )
        return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, **extra}


def free_base_port() -> int:
    return broker.free_base_port()


def docker_engine_answers() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    done = subprocess.run([docker, "info"], capture_output=True, check=False, timeout=20)
    return done.returncode == 0


def launcher_broker(
    state_dir: Path, secure: bool = False, tls: bool = False, nodes: int = 1
) -> Iterator[KafkaHandle]:
    """A broker (or a ``nodes``-node cluster) of the project's launcher on free ports; ``secure``:
    SASL/SCRAM + ACLs; ``tls``: over TLS with a local CA."""
    settings = Settings.from_env()
    spec = broker.BrokerSpec(
        state_dir=state_dir,
        cache_dir=settings.kafka_cache,
        pom=settings.kafka_pom,
        nodes=nodes,
        base_port=broker.free_base_port(nodes=nodes),
        secure=secure,
        tls=tls,
    )
    bootstrap = broker.start(spec, lambda msg: print(f"[kafka] {msg}", file=sys.stderr))
    try:
        yield KafkaHandle(bootstrap, "launcher", spec)
    finally:
        broker.stop(spec, lambda msg: None)


def container_broker() -> Iterator[KafkaHandle]:
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer(image=f"apache/kafka:{pom_kafka_version()}").with_kraft() as container:
        yield KafkaHandle(container.get_bootstrap_server(), "testcontainers")


def pom_kafka_version() -> str:
    text = Settings().kafka_pom.read_text()
    return text.split("<kafka.version>", 1)[1].split("<", 1)[0]


def canaried(value: Any, canary: str, placeholder: str = "x") -> Any:
    """A JSON value with every ``placeholder`` string replaced by ``canary`` (for leak searches)."""
    if isinstance(value, dict):
        return {k: canaried(v, canary, placeholder) for k, v in value.items()}
    if isinstance(value, list):
        return [canaried(v, canary, placeholder) for v in value]
    return canary if value == placeholder else value
