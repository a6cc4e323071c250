# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The only writer of the encrypted store. Runs on the controller, whatever host the task targets."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleError
from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import CHARSETS, secrets_for_environment
from ansible_collections.keywarden.secrets.plugins.plugin_utils.context import ControllerAction, catalog_for, resolve_var, store_for
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import StoreError, generate_fields, missing_store_message, new_entry


class ActionModule(ControllerAction):
    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self.arguments("store")
        try:
            catalog = catalog_for(task_vars, self._templar, args["catalog_path"])
            store = store_for(task_vars, self._templar, self._loader, args["environment"], args["store_dir"], holder="playbook init (keywarden.secrets.store)")
            wanted = secrets_for_environment(catalog, store.environment)
            create = boolean(resolve_var(task_vars, self._templar, "keywarden_store_create", args["create"]) or False, strict=False)
            if not create and not store.exists():
                raise StoreError(missing_store_message(store))
            if self._task.check_mode:
                data = store.read(missing_ok=True)
                missing = sorted(set(wanted) - set(data["secrets"]))
                return {
                    **result,
                    "changed": bool(missing),
                    "created": missing,
                    "store": store.path,
                    "revision": data.get("revision", 0),
                    "msg": f"check mode: would create {len(missing)} secrets in {store.path}",
                }
            with store.update(create=create) as data:
                missing = sorted(set(wanted) - set(data["secrets"]))
                for name in missing:
                    data["secrets"][name] = new_entry(wanted[name]["kind"], generate_fields(wanted[name], CHARSETS))
            revision = data.get("revision", 0)
        except (StoreError, AnsibleError) as exc:
            return {**result, "failed": True, "msg": str(exc)}
        unknown = sorted(set(data["secrets"]) - set(wanted))
        return {
            **result,
            "changed": bool(missing),
            "created": missing,
            "not_in_catalog": unknown,
            "store": store.path,
            "revision": revision,
            "msg": f"store {store.path}: {len(missing)} created, {len(wanted) - len(missing)} already present",
        }
