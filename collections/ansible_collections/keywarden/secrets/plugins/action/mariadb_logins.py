# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Set or test a host's MariaDB logins in one module run (see plugin_utils/logins.py and the module)."""

from __future__ import annotations

from typing import Any

from ansible_collections.keywarden.secrets.plugins.plugin_utils.logins import LoginsAction


class ActionModule(LoginsAction):
    KIND = "mariadb"

    def login(self, name: str, entry: dict[str, Any], user: str, password: str) -> dict[str, Any]:
        # each login (both alternating ones) holds the database's privileges itself
        return {"name": name, "user": user, "password": password, "database": entry["target"]["database"]}
