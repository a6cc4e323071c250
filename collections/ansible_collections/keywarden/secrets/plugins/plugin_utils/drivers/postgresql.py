# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL logins (module `keywarden.secrets.postgresql_logins`).

alternating_users: the catalog's ``target.role`` is a NOLOGIN group role holding the privileges; the logins
``<role>_a`` and ``<role>_b`` are its members, and a rotation gives the one consumers do not use the new password.
The outgoing login keeps working until the next rotation replaces its password (never revoked): a consumer that
missed the distribution still logs in. single_user: one login, whose password changes in place.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.keywarden.secrets.plugins.plugin_utils.drivers.base import Item, LoginsDriver


class PostgresqlDriver(LoginsDriver):
    kind = "postgresql"
    module_name = "keywarden.secrets.postgresql_logins"
    admin_settings = {
        "login_unix_socket": ("keywarden_target_postgresql_login_unix_socket", "/var/run/postgresql"),
        "login_host": ("keywarden_target_postgresql_login_host", None),
        "login_port": ("keywarden_target_postgresql_port", 5432),
        "login_user": ("keywarden_target_postgresql_login_user", "postgres"),
    }
    # test logins go over TCP, so that the server checks the password (SCRAM); TLS when the server offers it
    test_settings = {
        "test_host": ("keywarden_target_postgresql_test_host", "127.0.0.1"),
        "ssl_mode": ("keywarden_target_postgresql_test_ssl_mode", "prefer"),
    }
    become_setting = "keywarden_target_postgresql_become_user"

    def login(self, item: Item, fields: dict[str, str]) -> dict[str, Any]:
        entry = item.entry
        group = entry["target"]["role"] if entry["policy"]["strategy"] == "alternating_users" else None
        return {**super().login(item, fields), "group": group}


DRIVER = PostgresqlDriver()
