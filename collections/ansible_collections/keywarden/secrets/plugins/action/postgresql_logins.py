# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Set or test a host's PostgreSQL logins in one module run (see plugin_utils/logins.py and the module)."""

from __future__ import annotations

from typing import Any

from ansible_collections.keywarden.secrets.plugins.plugin_utils.logins import LoginsAction


class ActionModule(LoginsAction):
    KIND = "postgresql"

    def login(self, name: str, entry: dict[str, Any], user: str, password: str) -> dict[str, Any]:
        # alternating users: both logins are members of the NOLOGIN group role holding the privileges
        group = entry["target"].get("role") if entry["policy"]["strategy"] == "alternating_users" else None
        return {"name": name, "user": user, "password": password, "group": group, "database": entry["target"].get("database")}
