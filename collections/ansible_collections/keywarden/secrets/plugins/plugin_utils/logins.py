# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Base of the `<engine>_logins` action plugins: resolve the logins of many secrets from the store (one read,
every read audited), then run the engine's module once on the target host with them.

Returns what the module returns: counts and secret names, never a value.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleError

from ansible_collections.keywarden.secrets.plugins.module_utils.specs import LOGINS_ACTION_OPTIONS
from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import AuditError
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import secrets_for_environment
from ansible_collections.keywarden.secrets.plugins.plugin_utils.context import TargetAction, audited_reads, catalog_for, store_for
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import StoreError


class LoginsAction(TargetAction):
    KIND = ""  # catalog kind, also the action's and module's name prefix

    def login(self, name: str, entry: dict[str, Any], user: str, password: str) -> dict[str, Any]:
        """The module's view of one login."""
        raise NotImplementedError

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        action = f"{self.KIND}_logins"
        args = self.arguments(action)
        names = list(dict.fromkeys(args["names"]))
        if not names:
            return {**result, "changed": False, "msg": "no logins given"}
        try:
            store = store_for(task_vars, self._templar, self._loader)
            entries = secrets_for_environment(catalog_for(task_vars, self._templar), store.environment)
            wrong = [name for name in names if (entries.get(name) or {}).get("kind") != self.KIND]
            if wrong:
                return {
                    **result,
                    "failed": True,
                    "msg": f"not secrets of kind {self.KIND} for environment '{store.environment}' in the catalog: {', '.join(wrong)}",
                }
            pairs = [(name, field) for name in names for field in ("username", "password")]
            values = audited_reads(store, store.read(), pairs, args["stage"], purpose=f"{self.KIND} {args['state']}")
        except AuditError as exc:
            return {**result, "failed": True, "msg": f"secret read refused: {exc}"}
        except (StoreError, AnsibleError) as exc:
            return {**result, "failed": True, "msg": str(exc)}
        logins = [self.login(name, entries[name], values[2 * i], values[2 * i + 1]) for i, name in enumerate(names)]
        # every other option is the module's, passed through unchanged
        module_args = {key: value for key, value in args.items() if key not in LOGINS_ACTION_OPTIONS and value is not None}
        module_args["logins"] = logins
        out = self._execute_module(module_name=f"keywarden.secrets.{action}", module_args=module_args, task_vars=task_vars)
        return {**result, **out}
