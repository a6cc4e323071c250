# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""MySQL/MariaDB ``mysql_native_password`` hashes: ``'*'`` + upper-case hex of SHA1(SHA1(password)).

Sending the server this hash (``IDENTIFIED BY PASSWORD '*…'``, community.mysql.mysql_user with
``encrypted: true``) keeps the password out of its general and slow query logs. The hash has no salt:
the same password always gives the same hash, the one the server stores, so the login task can compare
and stay idempotent.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ansible.errors import AnsibleFilterError


def mysql_native_password(password: Any) -> str:
    """The ``mysql_native_password`` hash of ``password`` (UTF-8), as the server's ``PASSWORD()`` computes it."""
    data = password if isinstance(password, bytes) else b"" if password is None else str(password).encode("utf-8")
    if not data:
        # the server takes '' as "no password": an account anyone could use; refuse rather than create it
        raise AnsibleFilterError("mysql_native_password: the password is empty")
    return "*" + hashlib.sha1(hashlib.sha1(data).digest()).hexdigest().upper()  # noqa: S324 - the server's scheme, not our choice


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"mysql_native_password": mysql_native_password}
