"""Helpers of the report tests: certificates made at test time, backdated stores of every kind, a free port.

Nothing here holds a value: certificates and keys are generated on each call, store values by the store's generator.
"""

from __future__ import annotations

import datetime
import socket
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import utcnow

DAY = datetime.timedelta(days=1)
# entries of the kinds the sample catalog lacks: with postgresql, redis and api_key, every kind the catalog accepts
EXTRA_CATALOG: dict[str, Any] = {
    "shop_db": {
        "kind": "mariadb",
        "description": "Login of the shop on its MariaDB database",
        "environments": ["local"],
        "target": {"group": "db", "role": "shop", "database": "shop"},
        "policy": {"max_age_days": 60},
        "consumers": [{"group": "app", "service": "shop", "env": {"SHOP_DB_USER": "username", "SHOP_DB_PASSWORD": "password"}}],
    },
    "events_mq": {
        "kind": "rabbitmq",
        "description": "Login of the worker on RabbitMQ",
        "environments": ["local"],
        "target": {"group": "cache", "role": "events"},
        "policy": {"max_age_days": 45},
        "consumers": [{"group": "worker", "service": "worker", "env": {"MQ_USER": "username", "MQ_PASSWORD": "password"}}],
    },
    "session_secret": {
        "kind": "generic",
        "description": "Signing key of the app's sessions",
        "environments": ["local"],
        "policy": {"max_age_days": 365},
        "consumers": [{"group": "app", "service": "app", "env": {"SESSION_SECRET": "value"}}],
    },
}


def certificate(not_before: datetime.datetime, not_after: datetime.datetime, name: str = "svc.keywarden.test") -> tuple[str, str]:
    """A self-signed certificate and its key (PEM), generated now."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def stamp(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def backdate(entry: dict[str, Any], days: float) -> None:
    """Make a store entry's current value ``days`` old (and its first creation older)."""
    when = stamp(now() - days * DAY)
    entry["current"]["created"] = when
    entry["created"] = stamp(now() - (days + 30) * DAY)


def tls_entry(not_before: datetime.datetime, not_after: datetime.datetime, created: str | None = None) -> dict[str, Any]:
    """A store entry of kind tls_cert as the certificate driver will write it (current fields certificate, private_key)."""
    cert, key = certificate(not_before, not_after)
    created = created or utcnow()
    return {
        "kind": "tls_cert",
        "version": 1,
        "created": created,
        "current": {"version": 1, "created": created, "fields": {"certificate": cert, "private_key": key}},
        "pending": None,
        "previous": None,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
