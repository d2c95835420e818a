"""Configuration: one frozen object, read once from the environment in the entry point."""

from __future__ import annotations

import os
import ssl
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from casebridge.core.topics import DEFAULT_PARTITIONS
from casebridge.core.vault import VaultError, parse_master_key

PROJECT_ROOT = Path(__file__).resolve().parents[3]
"""The source tree (``services/casebridge/runtime`` is three levels below it)."""


@dataclass(frozen=True)
class Settings:
    """Everything a CaseBridge process needs to know about its surroundings."""

    bootstrap_servers: str = "127.0.0.1:9092"
    home: Path = Path(".casebridge")  # local state: broker data, keys, outbox databases
    project_root: Path = PROJECT_ROOT
    kafka_cache: Path = Path.home() / ".cache" / "casebridge" / "kafka"
    log_format: str = "auto"  # auto (console on a TTY, JSON otherwise), console, json
    log_level: str = "info"
    sasl_username: str = ""  # SCRAM-SHA-512 user (a participant id) on a secured cluster
    sasl_password: str = field(default="", repr=False)  # never printed
    kafka_ca: str = ""  # CA certificate (PEM) to trust: the listener is then SASL_SSL (TLS)
    deadline_scale: float = 1.0  # < 1 shortens every deadline clock (demonstrations only)
    replication: int = 1  # replicas of every topic CaseBridge creates (3 on a 3-node cluster)
    instance_id: str = ""  # static group membership: a restarted worker takes its place back
    partitions: int = DEFAULT_PARTITIONS  # of every cb.out.* / cb.in.* topic and the router's state
    country: str = ""  # a federation's country whose cluster this process uses ("": one shared cluster)
    federation: tuple[str, ...] = ()  # the members of the federation (REG and countries), with ``country``
    http_host: str = "127.0.0.1"  # where the node API and the monitor listen
    http_tls_cert: str = ""  # PEM certificate chain: the node API and the monitor speak HTTPS
    http_tls_key: str = field(default="", repr=False)  # its private key (a path; never printed)
    master_key: bytes = field(default=b"", repr=False)  # a node's at-rest master key; never printed

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read ``CASEBRIDGE_*`` and ``KAFKA_BOOTSTRAP_SERVERS``; unset keys keep their default."""
        env = os.environ if env is None else env
        base = cls()
        return cls(
            bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS", base.bootstrap_servers),
            home=Path(env.get("CASEBRIDGE_HOME", str(base.home))),
            project_root=Path(env.get("CASEBRIDGE_ROOT", str(base.project_root))),
            kafka_cache=Path(env.get("CASEBRIDGE_KAFKA_CACHE", str(base.kafka_cache))),
            log_format=env.get("CASEBRIDGE_LOG_FORMAT", base.log_format),
            log_level=env.get("CASEBRIDGE_LOG_LEVEL", base.log_level),
            sasl_username=env.get("CASEBRIDGE_SASL_USERNAME", ""),
            sasl_password=env.get("CASEBRIDGE_SASL_PASSWORD", ""),
            kafka_ca=env.get("CASEBRIDGE_KAFKA_CA", ""),
            deadline_scale=float(env.get("CASEBRIDGE_DEADLINE_SCALE", base.deadline_scale)),
            replication=int(env.get("CASEBRIDGE_REPLICATION", base.replication)),
            instance_id=env.get("CASEBRIDGE_INSTANCE_ID", ""),
            partitions=int(env.get("CASEBRIDGE_PARTITIONS", base.partitions)),
            country=env.get("CASEBRIDGE_COUNTRY", ""),
            federation=tuple(m for m in env.get("CASEBRIDGE_FEDERATION", "").split(",") if m),
            http_host=env.get("CASEBRIDGE_HTTP_HOST", base.http_host),
            http_tls_cert=env.get("CASEBRIDGE_HTTP_TLS_CERT", ""),
            http_tls_key=env.get("CASEBRIDGE_HTTP_TLS_KEY", ""),
            master_key=master_key_from(env),
        )

    @property
    def security_protocol(self) -> str:
        if not self.sasl_username:
            return "PLAINTEXT"
        return "SASL_SSL" if self.kafka_ca else "SASL_PLAINTEXT"

    def ssl_context(self) -> ssl.SSLContext | None:
        """A TLS context trusting ``kafka_ca`` (and nothing else), or None without TLS."""
        return ssl.create_default_context(cafile=self.kafka_ca) if self.kafka_ca else None

    @property
    def kafka_auth(self) -> dict[str, Any]:
        """aiokafka SASL (and TLS) settings, or {} on an unsecured (loopback development) broker."""
        if not self.sasl_username:
            return {}
        auth: dict[str, Any] = {
            "security_protocol": self.security_protocol, "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": self.sasl_username, "sasl_plain_password": self.sasl_password}
        if self.kafka_ca:
            auth["ssl_context"] = self.ssl_context()
        return auth

    @property
    def librdkafka_auth(self) -> dict[str, Any]:
        """The same for confluent-kafka (librdkafka) clients."""
        if not self.sasl_username:
            return {}
        auth: dict[str, Any] = {
            "security.protocol": self.security_protocol, "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": self.sasl_username, "sasl.password": self.sasl_password}
        if self.kafka_ca:
            auth["ssl.ca.location"] = self.kafka_ca
        return auth

    @property
    def kafka_pom(self) -> Path:
        return self.project_root / "deploy" / "kafka" / "pom.xml"

    @property
    def broker_dir(self) -> Path:
        return self.home / "broker"


def master_key_from(env: Mapping[str, str]) -> bytes:
    """``CASEBRIDGE_MASTER_KEY`` (base64 or hex), else the 0600 ``CASEBRIDGE_MASTER_KEY_FILE``, else
    b"" (a node then uses the generated key file in its own folder)."""
    if env.get("CASEBRIDGE_MASTER_KEY"):
        return parse_master_key(env["CASEBRIDGE_MASTER_KEY"])
    if env.get("CASEBRIDGE_MASTER_KEY_FILE"):
        return read_key_file(Path(env["CASEBRIDGE_MASTER_KEY_FILE"]))
    return b""


def read_key_file(path: Path) -> bytes:
    """A master key file, refused unless only its owner may read it (mode 0600 or stricter)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise VaultError(f"{path} must be readable by its owner only (mode {mode:o}, want 600)")
    return parse_master_key(path.read_text())
