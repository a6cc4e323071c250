# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SCRAM-SHA-256 verifier filters (PostgreSQL's rolpassword format); the work is in module_utils/scram.py."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.keywarden.secrets.plugins.module_utils import scram


def scram_sha256_verifier(password: Any, iterations: int = scram.ITERATIONS) -> str:
    """A fresh verifier (random salt) for ``password``."""
    return scram.verifier(str(password), int(iterations))


def scram_sha256_matches(verifier: Any, password: Any) -> bool:
    """True when ``verifier`` (a rolpassword) was made from ``password``. False for anything else, None included."""
    try:
        return scram.matches(verifier, str(password))
    except ValueError:
        raise AnsibleFilterError("scram_sha256_matches: the stored verifier is malformed") from None


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"scram_sha256_verifier": scram_sha256_verifier, "scram_sha256_matches": scram_sha256_matches}
