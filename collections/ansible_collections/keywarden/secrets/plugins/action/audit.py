# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Record deliveries (and, once they exist, backups and restores) in the environment's audit log.

Per delivered secret field: name, field, stage, version, host, file, actor and an HMAC of the value under the audit
key. Reads the store only to compute versions and HMACs; returns counts, never values. Fails closed.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleError

from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import AuditError
from ansible_collections.keywarden.secrets.plugins.plugin_utils.context import ControllerAction, store_for
from ansible_collections.keywarden.secrets.plugins.plugin_utils.deploy import deploy_entries
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import StoreError, resolve_stage, staged_version


class ActionModule(ControllerAction):
    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self.arguments("audit")
        if self._task.check_mode:
            return {**result, "changed": False, "recorded": 0, "msg": "check mode: nothing delivered, nothing recorded"}
        try:
            store = store_for(task_vars, self._templar, self._loader)
            data = store.read()
            audit = store.audit
            if args["event"] == "deploy":
                entries = deploy_entries(audit, data, args["services"], args["changed"], args["dest_dir"], args["stage"], args["outcome"], source=store.path)
            else:
                entries = []
                for secret in args["secrets"] or sorted(data["secrets"]):
                    stage = resolve_stage(data["secrets"].get(secret) or {}, args["stage"])
                    entries.append(
                        audit.entry(
                            args["event"], secret=secret, stage=stage, version=staged_version(data, secret, stage), outcome=args["outcome"], **args["detail"]
                        )
                    )
            audit.record_many(entries)
        except AuditError as exc:
            return {**result, "failed": True, "msg": f"{exc}"}
        except (StoreError, AnsibleError) as exc:
            return {**result, "failed": True, "msg": str(exc)}
        return {**result, "changed": False, "recorded": len(entries), "log": audit.log.path, "msg": f"{len(entries)} audit records in {audit.log.path}"}
