# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Make one encrypted backup of the environment on the controller (plugin_utils/backup.py); needs no vault password."""

from __future__ import annotations

import os
from typing import Any

from ansible.errors import AnsibleError

from ansible_collections.keywarden.secrets.plugins.plugin_utils.backup import BackupError, create_backup, read_recipients
from ansible_collections.keywarden.secrets.plugins.plugin_utils.backup_action import BackupAction


class ActionModule(BackupAction):
    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self.arguments("backup")
        recipients_file = os.path.abspath(os.path.expanduser(args["recipients_file"]))
        try:
            sources = self.sources(task_vars, args)
            backup_dir = self.backup_dir(args, sources.environment)
            if self._task.check_mode:
                recipients = read_recipients(recipients_file)
                return {**result, "changed": True, "msg": f"check mode: would back up '{sources.environment}' to {backup_dir} for {len(recipients)} recipients"}
            made = create_backup(
                sources,
                recipients_file,
                backup_dir,
                self.who(task_vars),
                keep_count=args["keep_count"],
                keep_days=args["keep_days"],
                remote=args["remote"] or None,
                ssh_args=args["ssh_args"],
                lock_timeout=float(args["lock_timeout"]),
                host=task_vars.get("inventory_hostname"),
            )
        except (BackupError, AnsibleError) as exc:
            return {**result, "failed": True, "msg": str(exc)}
        where = f", copied to {made['remote']}" if made["remote"] else ""
        return {
            **result,
            "changed": True,
            **made,
            "msg": f"backup {made['archive']} ({made['size']} bytes, {made['files']} files){where}; audit chain {made['audit_chain']}",
        }
