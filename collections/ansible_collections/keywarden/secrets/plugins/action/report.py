# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Expiry report of the environment's secrets on the controller: table, JSON, Prometheus textfile, HTML, webhook.

Returns names, kinds, versions, dates and statuses, never a value; a webhook token read from the store is audited
first (no record, no value). Writes nothing and notifies nobody in check mode.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ansible.errors import AnsibleError

from ansible_collections.keywarden.secrets.plugins.plugin_utils import report
from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import AuditError, load_key
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import secrets_for_environment
from ansible_collections.keywarden.secrets.plugins.plugin_utils.context import ControllerAction, audited_reads, catalog_for, settings, store_for
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import StoreError


class ActionModule(ControllerAction):
    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self.arguments("report")
        try:
            catalog = catalog_for(task_vars, self._templar, args["catalog_path"], loader=self._loader)
            store = store_for(task_vars, self._templar, self._loader, args["environment"], args["store_dir"], holder="playbook report")
            env = store.environment
            data = store.read()
            conf = settings(task_vars, self._templar, self._loader, {"environment": args["environment"], "store_dir": args["store_dir"]})
            log_path, key_file = os.path.abspath(conf["audit_log"]), conf["audit_key_file"]
            # never created here: a fresh key would make every MAC of an existing log fail
            key = load_key(key_file, create=False) if os.path.exists(key_file) else None
            audit_info, records = report.audit_state(log_path, key)
            built = report.build(env, secrets_for_environment(catalog, env), data, audit_info, records, time.time(), args["alert_days"])
            files = self._outputs(built, args, env)
            webhook = self._notify(built, args, store, data)
        except (report.ReportError, StoreError, AuditError, AnsibleError) as exc:
            return {**result, "failed": True, "msg": str(exc)}
        changed = any(files.values())
        return {
            **result,
            "changed": changed,
            "report": built,
            "alert": built["alert"],
            "alerts": built["alerts"],
            "problems": built["problems"],
            "table": report.render_table(built).splitlines(),
            "files": sorted(files),
            "textfile": next((path for path in files if path.endswith(".prom")), None),
            "webhook": webhook,
            "msg": built["alerts"] and f"{len(built['alerts'])} secret(s) need attention: {', '.join(built['alerts'])}" or "every secret is within policy",
        }

    def _outputs(self, built: dict[str, Any], args: dict[str, Any], env: str) -> dict[str, bool]:
        """{path: changed} of the files written (none in check mode)."""
        wanted = {
            "table": (os.path.join(args["dest"], f"keywarden_secrets_{env}.txt"), report.render_table),
            "json": (os.path.join(args["dest"], f"keywarden_secrets_{env}.json"), report.render_json),
            "html": (os.path.join(args["dest"], f"keywarden_secrets_{env}.html"), report.render_html),
            "prometheus": (os.path.join(args["textfile_dir"] or args["dest"], f"keywarden_secrets_{env}.prom"), report.render_prometheus),
        }
        files = {}
        for fmt in args["formats"]:
            path, render = wanted[fmt]
            files[path] = False if self._task.check_mode else report.write_atomic(path, render(built), 0o644)
        return files

    def _notify(self, built: dict[str, Any], args: dict[str, Any], store: Any, data: dict[str, Any]) -> dict[str, Any]:
        url = args["webhook_url"]
        if not url or args["webhook_on"] == "never" or (args["webhook_on"] == "alert" and not built["alert"]):
            return {"sent": False}
        if self._task.check_mode:
            return {"sent": False, "msg": "check mode: not notified"}
        token = None
        if args["webhook_token_secret"]:
            name, _sep, field = args["webhook_token_secret"].partition(".")
            if not name or not field:
                raise report.ReportError(f"webhook_token_secret '{args['webhook_token_secret']}' must be NAME.FIELD, e.g. alert_webhook.value")
            token = audited_reads(store, data, [(name, field)], "current", purpose="report webhook")[0]
        return {"sent": True, "status": report.notify(url, report.webhook_payload(built), token)}
