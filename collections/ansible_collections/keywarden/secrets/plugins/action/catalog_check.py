# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Validate the catalog on the controller; fail with the entry and field to fix.

Runs first in every playbook (playbooks/catalog.yml), so it also stops a run whose environment has no store
(unless this run creates it on purpose: ``keywarden_store_create``), and warns about catalog groups that match no
inventory host.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleError
from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import login_names, secrets_for_environment, unmatched_groups
from ansible_collections.keywarden.secrets.plugins.plugin_utils.context import ControllerAction, catalog_for, resolve_var, settings
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import Store, missing_store_message


class ActionModule(ControllerAction):
    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self.arguments("catalog_check")
        try:
            explicit = {"catalog_path": args["path"], "environment": args["environment"], "store_dir": args["store_dir"]}
            conf = settings(task_vars, self._templar, self._loader, explicit)
            path, environment, store_dir = conf["catalog_path"], conf["environment"], conf["store_dir"]
            catalog = catalog_for(task_vars, self._templar, path)
            create = boolean(resolve_var(task_vars, self._templar, "keywarden_store_create", args["store_create"]) or False, strict=False)
        except AnsibleError as exc:
            return {**result, "failed": True, "msg": str(exc)}
        store = Store(store_dir, environment, None)
        if not create and not store.exists():
            return {**result, "failed": True, "msg": missing_store_message(store)}
        in_env = secrets_for_environment(catalog, environment)
        warnings = unmatched_groups(catalog, environment, task_vars.get("groups") or {})
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
            "unmatched_groups": warnings,
            # Ansible's convention for a host pattern that matches nothing: a warning, the run goes on
            **({"warnings": [f"catalog {path}: {warning}" for warning in warnings]} if warnings else {}),
            "msg": f"catalog valid: {len(catalog['secrets'])} secrets, {len(in_env)} in environment {environment}",
        }
