# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""MariaDB logins (module `keywarden.secrets.mariadb_logins`).

MariaDB 10.11 has no dual passwords (no RETAIN CURRENT PASSWORD): alternating_users gives each of ``<role>_a`` and
``<role>_b`` the database's privileges, and a rotation changes the password of the one consumers do not use. The
outgoing login keeps working until the next rotation (never revoked). single_user: one login, changed in place.
"""

from __future__ import annotations

from ansible_collections.keywarden.secrets.plugins.plugin_utils.drivers.base import LoginsDriver


class MariadbDriver(LoginsDriver):
    kind = "mariadb"
    module_name = "keywarden.secrets.mariadb_logins"
    admin_settings = {
        "login_unix_socket": ("keywarden_target_mariadb_login_unix_socket", "/run/mysqld/mysqld.sock"),
        "login_port": ("keywarden_target_mariadb_port", 3306),
        "login_user": ("keywarden_target_mariadb_login_user", "root"),
        "host_pattern": ("keywarden_target_mariadb_login_host_pattern", "%"),
    }
    test_settings = {"test_host": ("keywarden_target_mariadb_test_host", "127.0.0.1")}


DRIVER = MariadbDriver()
