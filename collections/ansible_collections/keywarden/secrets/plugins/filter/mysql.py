# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``mysql_native_password`` filter; the work is in module_utils/mysql.py."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.keywarden.secrets.plugins.module_utils import mysql


def mysql_native_password(password: Any) -> str:
    """The ``mysql_native_password`` hash of ``password`` (UTF-8), as the server's ``PASSWORD()`` computes it."""
    try:
        return mysql.native_password(password)
    except ValueError as exc:
        raise AnsibleFilterError(f"mysql_native_password: {exc}") from None


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"mysql_native_password": mysql_native_password}
