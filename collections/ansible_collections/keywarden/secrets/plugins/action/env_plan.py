# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Work out, from the catalog, which service files a host receives and which variables each holds.

Returns names and sources only, never values: rendering reads values through the secret lookup.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleError

from ansible_collections.keywarden.secrets.plugins.module_utils.catalog import env_plan
from ansible_collections.keywarden.secrets.plugins.module_utils.store import StoreError, get_field
from ansible_collections.keywarden.secrets.plugins.plugin_utils.context import ControllerAction, catalog_for, required_var, store_for


class ActionModule(ControllerAction):
    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self.arguments("env_plan")
        try:
            catalog = catalog_for(task_vars, self._templar, args["catalog_path"])
            environment = str(required_var(task_vars, self._templar, "keywarden_environment", args["environment"]))
        except AnsibleError as exc:
            return {**result, "failed": True, "msg": str(exc)}
        groups = args["groups"] if args["groups"] is not None else list(task_vars.get("group_names", []))
        services = env_plan(catalog, environment, groups)
        if services:
            # all or nothing: every value this host's files need must be readable before the first file is written
            try:
                data = store_for(task_vars, self._templar, self._loader, environment=environment).read()
                for service in services:
                    for var in service["vars"]:
                        if "secret" in var:
                            get_field(data, var["secret"], var["field"], "live", source=f"the {environment} store")
            except (StoreError, AnsibleError) as exc:
                return {**result, "failed": True, "msg": str(exc)}
        return {**result, "changed": False, "services": services}
