# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the Redis and RabbitMQ drivers share: servers without peer authentication, administered with a login that
is itself a secret of the catalog (not a kind: no ``DRIVER`` here).

The admin login of an entry is the live value of the catalog entry its ``target.admin`` names (same kind, same target
group; the catalog check holds that), or, without ``target.admin``, of the entry itself: an entry that administers
itself. Live is what consumers hold: ``current``, or ``pending`` once it is being distributed, so an admin entry can
rotate itself. All of a host's secrets with the same admin are handled by one module run.
"""

from __future__ import annotations

from typing import Any

from ansible.utils.display import Display

from ansible_collections.keywarden.secrets.plugins.plugin_utils.drivers.base import Driver, Item, Outcomes, Target, module_outcomes


def admin_of(entry: dict[str, Any], name: str) -> str:
    return str(entry["target"].get("admin") or name)


class StoredAdminDriver(Driver):
    module_name = ""
    # module option -> (host variable, default); None and "" values are left out
    settings: dict[str, tuple[str, Any]] = {}

    def login(self, item: Item, fields: dict[str, str]) -> dict[str, Any]:
        raise NotImplementedError

    def rotatable(self, entry: dict[str, Any], stored: dict[str, Any] | None = None, data: dict[str, Any] | None = None) -> str | None:
        if entry["policy"]["strategy"] == "single_user" and not entry["target"].get("admin"):
            # its one password changes at `set`: a rollback would have to log in with the value it replaced
            return (
                f"an entry that administers itself cannot use single_user (a failed rotation could not log in to undo it): "
                f"use {self.zero_downtime}, or name another entry in target.admin"
            )
        return None

    zero_downtime = ""
    # the admin's user name when its stored fields have none (a store made before the kind stored usernames)
    admin_fallback_user = ""

    def run(self, target: Target, items: list[Item], stage: str, state: str, extra: dict[str, Any] | None = None) -> Outcomes:
        """The module once per admin login for these items, with each item's fields at ``stage``."""
        out: Outcomes = {}
        by_admin: dict[str, list[Item]] = {}
        for item in items:
            by_admin.setdefault(admin_of(item.entry, item.name), []).append(item)
        options = {option: target.setting(var, default) for option, (var, default) in self.settings.items()}
        options = {option: value for option, value in options.items() if value not in (None, "")}
        for admin, group in sorted(by_admin.items()):
            try:
                creds = group[0].secret(admin, "live")
            except KeyError:
                creds = {}
            if not creds.get("password"):
                why = f"its admin login {admin} is not in the store: run playbooks/init.yml (target.admin names the entry)"
                out.update({item.name: why for item in group})
                continue
            logins = [self.login(item, item.fields(stage)) for item in group]
            args = {
                **options,
                **(extra or {}),
                "login_user": creds.get("username") or self.admin_fallback_user,
                "login_password": creds["password"],
                "state": state,
                "logins": logins,
            }
            result = target.module(self.module_name, args)
            # the action's result carries the drivers' outcomes only: the module's warnings are shown from here
            for warning in result.get("warnings") or []:
                Display().warning(f"{target.host}: {warning}")
            out.update(module_outcomes(group, result))
        return out
