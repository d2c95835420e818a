"""A local certificate authority for the launcher's TLS listener (``broker start --tls``).

Made once per broker state folder and reused: ``tls/ca.pem`` (what clients trust: give its path
in ``CASEBRIDGE_KAFKA_CA``), ``tls/ca.key`` and ``tls/server.pem`` (the brokers' PKCS#8 key and
certificate chain, the PEM keystore Kafka reads), both 0600. ECDSA P-256: Java's TLS stack does
not offer Ed25519 certificates everywhere. The server certificate names 127.0.0.1 and localhost,
the only addresses the launcher listens on.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = timedelta(days=825)


@dataclass(frozen=True)
class LocalCA:
    ca_cert: Path  # public: clients trust it
    ca_key: Path
    server: Path  # private key and certificate chain (PEM keystore)


def paths(state_dir: Path) -> LocalCA:
    folder = state_dir / "tls"
    return LocalCA(folder / "ca.pem", folder / "ca.key", folder / "server.pem")


def _private(path: Path, data: bytes) -> None:
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_bytes(data)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CaseBridge local broker"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def ensure_local_ca(state_dir: Path, now: datetime | None = None, hosts: tuple[str, ...] = ("127.0.0.1",)
                    ) -> LocalCA:
    """The CA and server certificate of this state folder, made on first use."""
    found = paths(state_dir)
    if found.ca_cert.exists() and found.server.exists():
        return found
    found.ca_cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = now or datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("CaseBridge local CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0])).issuer_name(ca_name)
        .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    _private(found.ca_key, ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    _private(found.server, server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption())
             + server.public_bytes(pem) + ca.public_bytes(pem))
    found.ca_cert.write_bytes(ca.public_bytes(pem))
    return found
