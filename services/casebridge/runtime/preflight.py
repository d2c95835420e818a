"""Before a service starts on a secured cluster: can it log in, and may it do what it must?

A faust worker whose principal lacks a right does not stop: its consumer retries an authorization
error quietly, or its producer times out much later. So each ``… run`` command asks the brokers
first (confluent-kafka: ``describe_topics`` with the operations the caller is authorized for) and
stops at once with one clear line: ``kafka_auth_failed`` (wrong user or password),
``kafka_not_authorized`` (the topics and operations missing) or ``kafka_unreachable``. What a
service needs is the policy ``core.access`` applies with ``acl sync``, for the principal the
service acts as.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AclOperation, AdminClient

from casebridge.core import access
from casebridge.core.errors import CaseBridgeError
from casebridge.runtime.settings import Settings

OPERATIONS = {"read": AclOperation.READ, "write": AclOperation.WRITE, "describe": AclOperation.DESCRIBE}


class KafkaAuthFailed(CaseBridgeError, PermissionError):
    """The brokers refused the SASL login (wrong user name or password)."""

    code = "kafka_auth_failed"


class KafkaNotAuthorized(CaseBridgeError, PermissionError):
    """Logged in, but the principal lacks an operation the service needs on a topic."""

    code = "kafka_not_authorized"


def needs(acting_as: str, topics: Iterable[str], participants: Iterable[str],
          policy: Iterable[access.Grant] | None = None) -> dict[str, set[str]]:
    """Topic -> operations that ``acting_as`` is granted by the policy (default: the shared
    cluster's, ``access.grants_for``), over the network's ``topics`` (prefixed grants expanded; the
    app's own internal topics left out)."""
    names = sorted(set(topics))
    internal = f"{access.app_id(acting_as)}-"
    wanted: dict[str, set[str]] = {}
    for grant in access.grants_for(participants) if policy is None else policy:
        if grant.principal != acting_as or grant.resource != "topic" or grant.operation not in OPERATIONS:
            continue
        if grant.pattern == "literal":
            matched = [grant.name]
        elif grant.name == internal:
            continue
        else:
            matched = [n for n in names if n.startswith(grant.name)]
        for name in matched:
            wanted.setdefault(name, set()).add(grant.operation)
    return wanted


class KafkaUnreachable(CaseBridgeError, ConnectionError):
    """No broker answered in time."""

    code = "kafka_unreachable"


AUTH_ERRORS = (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED)


def admin_config(settings: Settings, errors: list[KafkaError]) -> dict[str, Any]:
    """librdkafka reports a refused login only to ``error_cb`` (the request itself times out)."""
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        **settings.librdkafka_auth,
        "socket.timeout.ms": 10_000,
        "error_cb": errors.append,
        "log_level": 0,
    }


def check(settings: Settings, acting_as: str, wanted: dict[str, set[str]], timeout: float = 20.0) -> None:
    """Raise ``KafkaAuthFailed``, ``KafkaNotAuthorized`` or ``KafkaUnreachable`` unless the logged-in
    principal may do every operation of ``wanted``; on an unsecured broker, only that it answers."""
    if not settings.sasl_username or not wanted:
        reachable(settings, min(timeout, 10.0))
        return
    errors: list[KafkaError] = []
    client = AdminClient(admin_config(settings, errors))
    missing: list[str] = []
    futures = client.describe_topics(
        TopicCollection(sorted(wanted)), request_timeout=timeout, include_authorized_operations=True
    )
    for name, future in futures.items():
        try:
            granted = future.result().authorized_operations or []
            allowed = {op for op, code in OPERATIONS.items() if code in granted}
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            client.poll(1.0)  # serves error_cb
            if error.code() in AUTH_ERRORS or any(e.code() in AUTH_ERRORS for e in errors):
                raise auth_failed(settings) from None
            if error.code() != KafkaError.TOPIC_AUTHORIZATION_FAILED:
                raise KafkaUnreachable(
                    f"no answer from the brokers at {settings.bootstrap_servers} within {timeout:.0f}s "
                    f"({error.str()})"
                ) from None
            allowed = set()
        missing += [f"{op} {name}" for op in sorted(wanted[name] - allowed)]
    if missing:
        raise KafkaNotAuthorized(
            f"{settings.sasl_username!r} may not do what {acting_as} needs: {', '.join(missing)} "
            f"(run `casebridge acl sync`, or log in as {acting_as})"
        )


def auth_failed(settings: Settings) -> KafkaAuthFailed:
    return KafkaAuthFailed(
        f"the brokers at {settings.bootstrap_servers} refused the login of "
        f"{settings.sasl_username!r}: check CASEBRIDGE_SASL_USERNAME and CASEBRIDGE_SASL_PASSWORD"
    )


def reachable(settings: Settings, timeout: float = 10.0) -> None:
    """``KafkaUnreachable`` (one line, no traceback) unless a broker answers a metadata request."""
    errors: list[KafkaError] = []
    client = AdminClient(admin_config(settings, errors))
    try:
        client.list_topics(timeout=timeout)
    except KafkaException as exc:
        error: KafkaError = exc.args[0]
        if error.code() in AUTH_ERRORS or any(e.code() in AUTH_ERRORS for e in errors):
            raise auth_failed(settings) from None
        raise KafkaUnreachable(
            f"no answer from the brokers at {settings.bootstrap_servers} within {timeout:.0f}s: is the "
            "broker running, and does KAFKA_BOOTSTRAP_SERVERS name it? (`casebridge broker start` "
            "prints the address to export)"
        ) from None


def check_service(
    settings: Settings, acting_as: str, topics: Sequence[str], participants: Iterable[str],
    policy: Iterable[access.Grant] | None = None,
) -> None:
    """``check`` with what the policy grants ``acting_as`` over the network's topics."""
    check(settings, acting_as, needs(acting_as, topics, list(participants), policy))
