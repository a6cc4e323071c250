# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis ACL users (module `keywarden.secrets.redis_logins`).

dual_password (the default): a Redis ACL user holds several passwords at once. `set` adds the pending password
beside the current one, consumers switch to it, and the cleanup play of the same run removes the outgoing one
(``retire_after`` 0) — after distribution, so no consumer ever holds a refused value. A pending password that was
added and will not be distributed is removed again (``holds``: rollback). single_user: the pending password replaces
the user's passwords at `set` (consumers holding the old one are refused until distribution reaches them).

The user is the catalog's ``target.username`` (default ``default``, the user ``requirepass`` sets), stored as the
field ``username``. The admin login comes from the store (``target.admin``, or the entry itself; see stored_admin).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import CHARSETS
from ansible_collections.keywarden.secrets.plugins.plugin_utils.drivers.base import Item, Outcomes, Target
from ansible_collections.keywarden.secrets.plugins.plugin_utils.drivers.stored_admin import StoredAdminDriver
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import generate_value

DEFAULT_USER = "default"


def username(entry: dict[str, Any]) -> str:
    return str(entry["target"].get("username") or DEFAULT_USER)


class RedisDriver(StoredAdminDriver):
    kind = "redis"
    module_name = "keywarden.secrets.redis_logins"
    zero_downtime = "dual_password"
    admin_fallback_user = DEFAULT_USER
    settings = {
        "login_host": ("keywarden_target_redis_login_host", "127.0.0.1"),
        "login_port": ("keywarden_target_redis_port", 6379),
        "login_unix_socket": ("keywarden_target_redis_login_unix_socket", ""),
        "tls": ("keywarden_target_redis_tls", "prefer"),
        "tls_port": ("keywarden_target_redis_tls_port", 0),
        "tls_ca_file": ("keywarden_target_redis_tls_ca_file", ""),
        "tls_cert_file": ("keywarden_target_redis_tls_cert_file", ""),
        "tls_key_file": ("keywarden_target_redis_tls_key_file", ""),
        "test_host": ("keywarden_target_redis_test_host", "127.0.0.1"),
    }

    def logins(self, entry: dict[str, Any]) -> tuple[str, ...]:
        return (username(entry),)

    def new_fields(self, entry: dict[str, Any], current: dict[str, str], peers: Mapping[tuple[str, str], str] | None = None) -> dict[str, str]:
        policy = entry["policy"]
        return {"username": username(entry), "password": generate_value(policy["length"], CHARSETS[policy["charset"]])}

    def holds(self, entry: dict[str, Any]) -> bool:
        return True  # a password that was added (or set) works at the server until it is removed

    def retire_after(self, entry: dict[str, Any]) -> float | None:
        return 0 if entry["policy"]["strategy"] == "dual_password" else None

    def login(self, item: Item, fields: dict[str, str]) -> dict[str, Any]:
        target = item.entry["target"]
        return {
            "name": item.name,
            # a store made before the kind stored usernames has none: the catalog's (requirepass' user by default)
            "user": fields.get("username") or username(item.entry),
            "password": fields.get("password", ""),
            "acl": target.get("acl"),
            "exclusive": item.entry["policy"]["strategy"] == "single_user",
        }

    def set(self, target: Target, items: list[Item], stage: str) -> Outcomes:
        return self.run(target, items, stage, "present") if items else {}

    def test(self, target: Target, items: list[Item], stage: str) -> Outcomes:
        return self.run(target, items, stage, "tested") if items else {}

    def rollback(self, target: Target, items: list[Item]) -> Outcomes:
        dual = [item for item in items if item.entry["policy"]["strategy"] == "dual_password"]
        single = [item for item in items if item not in dual]
        out: Outcomes = {}
        if dual:  # the pending password goes; the current one never left
            out.update(self.run(target, dual, "pending", "revoked"))
        if single:  # the current password comes back as the only one
            out.update(self.run(target, single, "current", "present"))
        return out

    def revoke(self, target: Target, items: list[Item], stage: str) -> Outcomes:
        return self.run(target, items, stage, "revoked") if items else {}


DRIVER = RedisDriver()
