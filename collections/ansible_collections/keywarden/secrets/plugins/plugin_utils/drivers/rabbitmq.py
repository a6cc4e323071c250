# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""RabbitMQ users (module `keywarden.secrets.rabbitmq_logins`, through the management HTTP API).

alternating_users (the default): two users ``<role>_a`` and ``<role>_b`` with the same tags and the same permissions
on the virtual host (every `set` makes the other user of the pair match). A rotation gives the standby user the new
password; consumers reconnect with it. The rule for the outgoing user is the one of every alternating kind: it is
not revoked (``retire_after`` None) and keeps working until the next rotation gives it a new password, so a consumer
that missed the distribution (a host that was down) still connects. single_user: one user, changed in place.

The admin login (tag administrator) comes from the store: ``target.admin``, or the entry itself (see stored_admin).
"""

from __future__ import annotations

from typing import Any

from ansible_collections.keywarden.secrets.plugins.plugin_utils.drivers.base import Item, Outcomes, Target
from ansible_collections.keywarden.secrets.plugins.plugin_utils.drivers.stored_admin import StoredAdminDriver

PERMISSIONS = ("configure", "write", "read")


class RabbitmqDriver(StoredAdminDriver):
    kind = "rabbitmq"
    module_name = "keywarden.secrets.rabbitmq_logins"
    zero_downtime = "alternating_users"
    settings = {
        "api_url": ("keywarden_target_rabbitmq_api_url", "http://127.0.0.1:15672"),
        "api_ca_file": ("keywarden_target_rabbitmq_api_ca_file", ""),
        "bootstrap_guest": ("keywarden_target_rabbitmq_bootstrap_guest", True),
        "test_host": ("keywarden_target_rabbitmq_test_host", "127.0.0.1"),
        "amqp_port": ("keywarden_target_rabbitmq_port", 5672),
        "tls": ("keywarden_target_rabbitmq_tls", "prefer"),
        "tls_ca_file": ("keywarden_target_rabbitmq_tls_ca_file", ""),
    }

    def login(self, item: Item, fields: dict[str, str]) -> dict[str, Any]:
        target = item.entry["target"]
        permissions = target.get("permissions") or {}
        pair = self.logins(item.entry)
        user = fields["username"]
        sibling = next((other for other in pair if other != user), None) if len(pair) == 2 else None
        return {
            "name": item.name,
            "user": user,
            "password": fields["password"],
            "vhost": target.get("vhost") or "/",
            "tags": list(target.get("tags") or []),
            **{key: permissions.get(key, ".*") for key in PERMISSIONS},
            "sibling": sibling,
        }

    def set(self, target: Target, items: list[Item], stage: str) -> Outcomes:
        return self.run(target, items, stage, "present") if items else {}

    def test(self, target: Target, items: list[Item], stage: str) -> Outcomes:
        return self.run(target, items, stage, "tested") if items else {}


DRIVER = RabbitmqDriver()
