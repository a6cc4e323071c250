# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verify a backup, then restore the environment's store from it (plugin_utils/backup.py); check mode only verifies."""

from __future__ import annotations

import os
from typing import Any

from ansible.errors import AnsibleError

from ansible_collections.keywarden.secrets.plugins.plugin_utils.backup import BackupError, fetch_latest, latest_backup, restore
from ansible_collections.keywarden.secrets.plugins.plugin_utils.backup_action import BackupAction
from ansible_collections.keywarden.secrets.plugins.plugin_utils.context import store_for
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import StoreError, pick_secret


class ActionModule(BackupAction):
    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self.arguments("restore")
        try:
            sources = self.sources(task_vars, args)
            env = sources.environment
            vault_secrets = getattr(getattr(self._loader, "_vault", None), "secrets", None)
            pick_secret(vault_secrets, env)  # no password for this vault ID: say so before anything else
            archive = args["archive"]
            if archive == "latest":
                backup_dir = self.backup_dir(args, env)
                if args["remote"]:
                    archive = fetch_latest(args["remote"], args["ssh_args"], env, backup_dir)
                else:
                    latest = latest_backup(backup_dir, env)
                    if latest is None:
                        raise BackupError(f"no backup of '{env}' in {backup_dir}: set keywarden_restore_remote (the backup host) or give the archive's path")
                    archive = latest["archive"]
            # the store's backend (the local file, or git: then the restore is a commit pushed to the remote)
            holder = f"restore of {os.path.basename(archive)}"
            store = store_for(task_vars, self._templar, self._loader, environment=env, store_dir=sources.store_dir, holder=holder, audited=False)
            store.lock_timeout = float(args["lock_timeout"])
            done = restore(
                os.path.abspath(os.path.expanduser(archive)),
                os.path.abspath(os.path.expanduser(args["identity_file"])),
                sources,
                vault_secrets,
                self.who(task_vars),
                force=args["force"],
                lock_timeout=float(args["lock_timeout"]),
                host=task_vars.get("inventory_hostname"),
                check_only=self._task.check_mode,
                store=store,
            )
        except (BackupError, StoreError, AnsibleError) as exc:
            return {**result, "failed": True, "msg": str(exc)}
        if self._task.check_mode:
            return {
                **result,
                "changed": True,
                **done,
                "msg": f"check mode: {done['archive']} verified; would restore store revision {done['store_revision']} into {done['store']}",
            }
        return {
            **result,
            "changed": done["store_changed"] or bool(done["restored"]),
            "failed": not done["audit_chain_ok"],
            **done,
            "msg": (
                f"restored {done['store']} (revision {done['store_revision']}, {done['store_backend']}) from {done['archive']}; "
                f"audit chain: {done['audit_chain']}"
            ),
        }
