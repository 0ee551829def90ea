"""The local stack's credentials: a CA, a server certificate and one password per identity,
generated once per state dir under ``secrets/`` (directory 0700, files 0600).

Only paths leave this module: every process reads its password from a file (as prod mounts it
from a Secret), so no password is ever on a command line, in an environment or in stack.json.
Generated on first ``up`` (about 50 ms: EC P-256 keys); later ``up``s reuse them, so data
written with one identity stays readable.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from opsctl.local._config import CASSANDRA_NODE_HOSTS, HOST
from opsctl.stack import _names as n
from opsctl.stack._redis import REDIS_ACL

# Cassandra's roles locally: prod's, plus ``admin``, the superuser opsctl sets them up with
# (the default ``cassandra`` superuser is dropped once it exists).
CASSANDRA_ROLES = ("admin", n.CASSANDRA_MIGRATE_ROLE, *n.CASSANDRA_APP_ROLES)

if TYPE_CHECKING:
    from cryptography import x509

SECRETS_DIR = "secrets"
CA_NAME = "opsctl-local CA"
# Long enough that a state dir never outlives its CA; the server certificate is re-issued
# from the same CA when it is missing or within RENEW_BEFORE of its end.
CA_DAYS = 3650
SERVER_DAYS = 365
RENEW_BEFORE = datetime.timedelta(days=7)


@dataclass(frozen=True)
class LocalSecrets:
    """Where the local stack's credentials live (paths only, never the values)."""

    root: Path

    @classmethod
    def of(cls, state_dir: Path) -> LocalSecrets:
        return cls(state_dir / SECRETS_DIR)

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    def redis_password_file(self, user: str) -> Path:
        if user not in REDIS_ACL:
            raise KeyError(f"no Redis user '{user}' (users: {', '.join(REDIS_ACL)})")
        return self.root / f"redis-{user}.password"

    def redis_password(self, user: str) -> str:
        return self.redis_password_file(user).read_text(encoding="utf-8").strip()

    def cassandra_password_file(self, role: str) -> Path:
        if role not in CASSANDRA_ROLES:
            raise KeyError(f"no Cassandra role '{role}' (roles: {', '.join(CASSANDRA_ROLES)})")
        return self.root / f"cassandra-{role}.password"

    def cassandra_password(self, role: str) -> str:
        return self.cassandra_password_file(role).read_text(encoding="utf-8").strip()

    @property
    def server_pem(self) -> Path:
        """The server's key and certificate in one PEM (Cassandra's PEMBasedSslContextFactory
        reads it as its keystore: no keystore password to keep)."""
        return self.root / "server-combined.pem"

    def ensure(self) -> None:
        """Create whatever is missing (idempotent)."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for user in REDIS_ACL:
            _write_new(self.redis_password_file(user), secrets.token_urlsafe(32))
        for role in CASSANDRA_ROLES:
            _write_new(self.cassandra_password_file(role), secrets.token_urlsafe(32))
        if not (self.ca_cert.is_file() and self.ca_key.is_file()):
            self._new_ca()
        if not self._server_cert_valid():
            self._new_server_cert()
        if not self.server_pem.is_file():
            _write_replace(
                self.server_pem, self.server_key.read_bytes() + self.server_cert.read_bytes()
            )

    def values(self) -> list[str]:
        """Every secret value (the grep tests look for them in output and logs)."""
        values = [self.redis_password(user) for user in REDIS_ACL]
        return values + [self.cassandra_password(role) for role in CASSANDRA_ROLES]

    def _new_ca(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        _write_key(self.ca_key, key)
        _write_replace(self.ca_cert, _pem(cert))
        # A new CA invalidates the server certificate it did not sign.
        self.server_cert.unlink(missing_ok=True)

    def _server_cert_valid(self) -> bool:
        if not (self.server_cert.is_file() and self.server_key.is_file()):
            return False
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(self.server_cert.read_bytes())
        ca = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        return cert.issuer == ca.subject and cert.not_valid_after_utc - RENEW_BEFORE > _now()

    def _new_server_cert(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ca = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        # Every address a local component listens on (the Cassandra nodes' loopback aliases).
        addresses = dict.fromkeys([HOST, *CASSANDRA_NODE_HOSTS])
        names: list[x509.GeneralName] = [x509.DNSName("localhost")]
        names += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "opsctl-local")]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(self.server_key, key)
        _write_replace(self.server_cert, _pem(cert))
        self.server_pem.unlink(missing_ok=True)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _ca_usage() -> x509.KeyUsage:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _pem(cert: object) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    assert isinstance(cert, x509.Certificate)
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_key(path: Path, key: object) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    assert isinstance(key, ec.EllipticCurvePrivateKey)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_replace(path, pem)


def _write_new(path: Path, text: str) -> None:
    """Write a secret once: an existing file is kept (0600 from the start, never wider)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _write_replace(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    tmp.replace(path)
