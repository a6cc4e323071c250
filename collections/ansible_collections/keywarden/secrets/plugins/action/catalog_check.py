# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Validate the catalog on the controller; fail with the entry and field to fix."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleError

from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import login_names, secrets_for_environment
from ansible_collections.keywarden.secrets.plugins.plugin_utils.context import ControllerAction, catalog_for, required_var


class ActionModule(ControllerAction):
    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self.arguments("catalog_check")
        try:
            catalog = catalog_for(task_vars, self._templar, args["path"])
            environment = str(required_var(task_vars, self._templar, "keywarden_environment", args["environment"]))
        except AnsibleError as exc:
            return {**result, "failed": True, "msg": str(exc)}
        in_env = secrets_for_environment(catalog, environment)
        return {
            **result,
            "changed": False,
            "catalog": catalog,
            "environment": environment,
            "secrets": sorted(in_env),
            # what roles act on, per secret of this environment (no values: the catalog holds none)
            "entries": [
                {"name": name, "kind": e["kind"], "target": e["target"], "policy": e["policy"], "logins": list(login_names(e)) if "role" in e["target"] else []}
                for name, e in sorted(in_env.items())
            ],
            "msg": f"catalog valid: {len(catalog['secrets'])} secrets, {len(in_env)} in environment {environment}",
        }
