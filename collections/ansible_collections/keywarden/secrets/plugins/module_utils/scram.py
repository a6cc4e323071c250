# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SCRAM-SHA-256 verifiers (RFC 5802/7677, PostgreSQL's rolpassword format).

Sending PostgreSQL a verifier instead of the password keeps the password out of server logs and
pg_stat_statements; checking a password against the stored verifier makes setting a login idempotent
(community.postgresql#301) without a network login. Used on the controller (filters) and on targets
(the postgresql_logins module), so it needs nothing beyond the standard library.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

ITERATIONS = 4096  # PostgreSQL's default scram_iterations
PREFIX = "SCRAM-SHA-256$"


def _keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return hashlib.sha256(client_key).digest(), server_key


def verifier(password: str, iterations: int = ITERATIONS) -> str:
    """A fresh verifier (random salt) for ``password``."""
    salt = os.urandom(16)
    stored, server = _keys(str(password), salt, int(iterations))
    b64 = base64.b64encode
    return f"{PREFIX}{iterations}:{b64(salt).decode()}${b64(stored).decode()}:{b64(server).decode()}"


def matches(stored_verifier: object, password: str) -> bool:
    """True when ``stored_verifier`` (a rolpassword) was made from ``password``; False for anything else, None included.

    Raises ValueError for a SCRAM verifier that cannot be parsed.
    """
    if not isinstance(stored_verifier, str) or not stored_verifier.startswith(PREFIX):
        return False
    try:
        head, keys = stored_verifier[len(PREFIX) :].split("$", 1)
        iterations, salt = head.split(":", 1)
        stored_b64, server_b64 = keys.split(":", 1)
        stored, server = _keys(str(password), base64.b64decode(salt), int(iterations))
        want_stored, want_server = base64.b64decode(stored_b64), base64.b64decode(server_b64)
    except (ValueError, TypeError):
        raise ValueError("the stored SCRAM verifier is malformed") from None
    return hmac.compare_digest(stored, want_stored) and hmac.compare_digest(server, want_server)
