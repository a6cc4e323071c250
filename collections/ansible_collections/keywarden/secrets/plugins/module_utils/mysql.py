# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""MySQL/MariaDB ``mysql_native_password`` hashes: ``'*'`` + upper-case hex of SHA1(SHA1(password)).

Sending the server this hash (``IDENTIFIED BY PASSWORD '*…'``) keeps the password out of its general and slow
query logs. The hash has no salt: the same password always gives the same hash, the one the server stores, so
setting a login can compare and stay idempotent. Used by the filter (controller) and the mariadb_logins module
(target), so it needs nothing beyond the standard library.
"""

from __future__ import annotations

import hashlib


def native_password(password: str | bytes | None) -> str:
    """The hash of ``password`` (UTF-8), as the server's ``PASSWORD()`` computes it; ValueError when it is empty."""
    data = password if isinstance(password, bytes) else b"" if password is None else str(password).encode("utf-8")
    if not data:
        # the server takes '' as "no password": an account anyone could use; refuse rather than create it
        raise ValueError("the password is empty")
    return "*" + hashlib.sha1(hashlib.sha1(data).digest()).hexdigest().upper()  # noqa: S324 - the server's scheme, not our choice
