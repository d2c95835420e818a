"""The launcher's local CA and the TLS listener's properties (no broker needed)."""

from __future__ import annotations

import ipaddress
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from casebridge.localkafka import broker, tls
from casebridge.runtime.settings import Settings


def test_the_server_certificate_names_loopback_and_chains_to_the_ca(tmp_path: Path) -> None:
    made = tls.ensure_local_ca(tmp_path, datetime(2026, 11, 28, tzinfo=UTC))
    blob = made.server.read_bytes()
    server, ca_in_chain = x509.load_pem_x509_certificates(blob)
    ca = x509.load_pem_x509_certificate(made.ca_cert.read_bytes())
    assert ca_in_chain == ca
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    server.verify_directly_issued_by(ca)  # raises if the signature does not verify
    assert b"BEGIN PRIVATE KEY" in blob  # PKCS#8, as Kafka's PEM keystore wants it
    for private in (made.server, made.ca_key):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_the_ca_is_made_once_and_reused(tmp_path: Path) -> None:
    first = tls.ensure_local_ca(tmp_path).ca_cert.read_bytes()
    assert tls.ensure_local_ca(tmp_path).ca_cert.read_bytes() == first


def spec(tmp_path: Path, **kw: bool) -> broker.BrokerSpec:
    return broker.BrokerSpec(state_dir=tmp_path, cache_dir=tmp_path, pom=tmp_path / "pom.xml", **kw)


def test_a_tls_broker_listens_sasl_ssl_with_pem_stores(tmp_path: Path) -> None:
    text = broker.server_properties(spec(tmp_path, secure=True, tls=True), 1)
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["listeners"].startswith("SASL_SSL://127.0.0.1:9092,CONTROLLER://127.0.0.1:")
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT"
    assert "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config" in props
    assert props["ssl.keystore.type"] == props["ssl.truststore.type"] == "PEM"
    assert Path(props["ssl.keystore.location"]) == tls.paths(tmp_path).server.resolve()
    assert Path(props["ssl.truststore.location"]) == tls.paths(tmp_path).ca_cert.resolve()


def test_tls_without_the_secured_listener_is_refused(tmp_path: Path) -> None:
    with pytest.raises(broker.BrokerError, match="--secure"):
        broker.start(spec(tmp_path, tls=True), print)


def test_clients_speak_sasl_ssl_when_given_a_ca(tmp_path: Path) -> None:
    ca = str(tls.ensure_local_ca(tmp_path).ca_cert)
    settings = Settings(sasl_username="KH.MOSVY", sasl_password="x", kafka_ca=ca)
    assert settings.kafka_auth["security_protocol"] == "SASL_SSL"
    assert settings.kafka_auth["ssl_context"] is not None
    assert settings.librdkafka_auth["ssl.ca.location"] == ca
    plain = Settings(sasl_username="KH.MOSVY", sasl_password="x")
    assert plain.kafka_auth["security_protocol"] == "SASL_PLAINTEXT" and "ssl_context" not in plain.kafka_auth
