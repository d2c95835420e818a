"""Apply ``core.access`` to a secured cluster: SCRAM credentials per principal, ACLs reconciled.

aiokafka has no ACL or SCRAM admin API; confluent-kafka's AdminClient has both. Reconciling
means: create the bindings that are missing, delete those no rule asks for (a participant removed
from the directory loses its access), upsert a SCRAM credential per principal and delete the
credentials of principals that no longer exist. Passwords are made once per principal and kept
in ``<home>/trust/kafka/<principal>.secret`` (mode 0600); they never reach a log.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from casebridge.core.access import Grant

ADMIN = "admin"
OPERATIONS = {"read": AclOperation.READ, "write": AclOperation.WRITE,
              "describe": AclOperation.DESCRIBE, "create": AclOperation.CREATE,
              # MirrorMaker 2 copies a source topic's settings onto the topic it creates
              "describe_configs": AclOperation.DESCRIBE_CONFIGS}
RESOURCES = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP,
             "transactional_id": ResourceType.TRANSACTIONAL_ID}
PATTERNS = {"literal": ResourcePatternType.LITERAL, "prefixed": ResourcePatternType.PREFIXED}


@dataclass(frozen=True)
class Report:
    created: int
    deleted: int
    users: int
    users_deleted: int


def secret_path(home: Path, principal: str) -> Path:
    return home / "trust" / "kafka" / f"{principal}.secret"


def password_of(home: Path, principal: str) -> str:
    """The principal's SCRAM password, made once (0600)."""
    path = secret_path(home, principal)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(24))
    return path.read_text().strip()


def admin_client(bootstrap: str, admin_password: str, ca: str = "") -> AdminClient:
    """The admin's client; ``ca``: the CA certificate to trust on a TLS listener."""
    tls = {"security.protocol": "SASL_SSL", "ssl.ca.location": ca} if ca else {}
    return AdminClient({"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT",
                        "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": ADMIN,
                        "sasl.password": admin_password, **tls})


def binding(grant: Grant) -> AclBinding:
    return AclBinding(RESOURCES[grant.resource], grant.name, PATTERNS[grant.pattern],
                      f"User:{grant.principal}", "*", OPERATIONS[grant.operation],
                      AclPermissionType.ALLOW)


def key(b: AclBinding) -> tuple[Any, ...]:
    return (b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation,
            b.permission_type)


def wait(futures: Mapping[Any, Any] | Iterable[Any]) -> None:
    for future in futures.values() if isinstance(futures, Mapping) else futures:
        future.result(timeout=30)


def sync_acls(admin: AdminClient, grants: Iterable[Grant]) -> tuple[int, int]:
    """(created, deleted) after reconciling the cluster's ACLs with ``grants``."""
    wanted = {key(b): b for b in map(binding, grants)}
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    existing = {key(b): b for b in admin.describe_acls(everything).result(timeout=30)}
    missing = [b for k, b in wanted.items() if k not in existing]
    extra = [b for k, b in existing.items() if k not in wanted and b.principal != f"User:{ADMIN}"]
    if missing:
        wait(admin.create_acls(missing))
    if extra:
        wait(admin.delete_acls([AclBindingFilter(*key(b)) for b in extra]))
    return len(missing), len(extra)


def sync_users(admin: AdminClient, home: Path, principals: Iterable[str]) -> tuple[int, int]:
    """(upserted, deleted) SCRAM-SHA-512 users: one per principal, no one else but the admin."""
    names = sorted(set(principals))
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    wait(admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion(n, info, password_of(home, n).encode()) for n in names]))
    described = admin.describe_user_scram_credentials().result(timeout=30)
    stale = [u for u in described if u not in names and u != ADMIN]
    if stale:
        wait(admin.alter_user_scram_credentials(
            [UserScramCredentialDeletion(u, ScramMechanism.SCRAM_SHA_512) for u in stale]))
    return len(names), len(stale)


def sync(bootstrap: str, admin_password: str, home: Path, grants: Iterable[Grant],
         principals: Iterable[str], ca: str = "") -> Report:
    admin = admin_client(bootstrap, admin_password, ca)
    users, users_deleted = sync_users(admin, home, principals)
    created, deleted = sync_acls(admin, grants)
    return Report(created, deleted, users, users_deleted)
