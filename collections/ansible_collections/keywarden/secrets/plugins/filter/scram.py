# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SCRAM-SHA-256 verifiers (RFC 5802/7677, PostgreSQL's rolpassword format).

Sending PostgreSQL a verifier instead of the password keeps the password out of server logs and
pg_stat_statements; checking a password against the stored verifier makes the login task idempotent
(community.postgresql#301) without a network login.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Any

from ansible.errors import AnsibleFilterError

_ITERATIONS = 4096  # PostgreSQL's default scram_iterations


def _keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return hashlib.sha256(client_key).digest(), server_key


def scram_sha256_verifier(password: Any, iterations: int = _ITERATIONS) -> str:
    """A fresh verifier (random salt) for ``password``."""
    salt = os.urandom(16)
    stored, server = _keys(str(password), salt, int(iterations))
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored).decode()}:{b64(server).decode()}"


def scram_sha256_matches(verifier: Any, password: Any) -> bool:
    """True when ``verifier`` (a rolpassword) was made from ``password``. False for anything else, None included."""
    if not isinstance(verifier, str) or not verifier.startswith("SCRAM-SHA-256$"):
        return False
    try:
        head, keys = verifier[len("SCRAM-SHA-256$") :].split("$", 1)
        iterations, salt = head.split(":", 1)
        stored_b64, server_b64 = keys.split(":", 1)
        stored, server = _keys(str(password), base64.b64decode(salt), int(iterations))
    except (ValueError, TypeError):
        raise AnsibleFilterError("scram_sha256_matches: the stored verifier is malformed") from None
    return hmac.compare_digest(stored, base64.b64decode(stored_b64)) and hmac.compare_digest(server, base64.b64decode(server_b64))


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"scram_sha256_verifier": scram_sha256_verifier, "scram_sha256_matches": scram_sha256_matches}
