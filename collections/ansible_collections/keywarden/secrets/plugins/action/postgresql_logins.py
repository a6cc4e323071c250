# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Resolve the PostgreSQL logins of many secrets from the store (one read, every read audited), then run the
postgresql_logins module once on the target host with them.

Returns what the module returns: counts and secret names, never a value.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleError

from ansible_collections.keywarden.secrets.plugins.module_utils.audit import AuditError
from ansible_collections.keywarden.secrets.plugins.module_utils.catalog import secrets_for_environment
from ansible_collections.keywarden.secrets.plugins.module_utils.specs import POSTGRESQL_LOGINS_OPTIONS
from ansible_collections.keywarden.secrets.plugins.module_utils.store import StoreError
from ansible_collections.keywarden.secrets.plugins.plugin_utils.context import TargetAction, audited_reads, catalog_for, store_for


class ActionModule(TargetAction):
    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self.arguments("postgresql_logins")
        names = list(dict.fromkeys(args["names"]))
        if not names:
            return {**result, "changed": False, "msg": "no logins given"}
        try:
            store = store_for(task_vars, self._templar, self._loader)
            entries = secrets_for_environment(catalog_for(task_vars, self._templar), store.environment)
            wrong = [name for name in names if (entries.get(name) or {}).get("kind") != "postgresql"]
            if wrong:
                return {
                    **result,
                    "failed": True,
                    "msg": f"not PostgreSQL secrets of environment '{store.environment}' in the catalog: {', '.join(wrong)}",
                }
            data = store.read()
            values = audited_reads(
                store, data, [(name, field) for name in names for field in ("username", "password")], args["stage"], purpose=f"postgresql {args['state']}"
            )
        except AuditError as exc:
            return {**result, "failed": True, "msg": f"secret read refused: {exc}"}
        except (StoreError, AnsibleError) as exc:
            return {**result, "failed": True, "msg": str(exc)}
        logins = []
        for index, name in enumerate(names):
            target = entries[name]["target"]
            alternating = entries[name]["policy"]["strategy"] == "alternating_users"
            logins.append(
                {
                    "name": name,
                    "user": values[2 * index],
                    "password": values[2 * index + 1],
                    "group": target.get("role") if alternating else None,
                    "database": target.get("database"),
                }
            )
        module_args = {key: args[key] for key in POSTGRESQL_LOGINS_OPTIONS if args[key] is not None}
        module_args["logins"] = logins
        out = self._execute_module(module_name="keywarden.secrets.postgresql_logins", module_args=module_args, task_vars=task_vars)
        return {**result, **out}
