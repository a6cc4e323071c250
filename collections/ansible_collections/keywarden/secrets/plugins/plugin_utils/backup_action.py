# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the backup and restore action plugins share: where an environment's material lives, from play variables."""

from __future__ import annotations

import os
from typing import Any

from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import actor
from ansible_collections.keywarden.secrets.plugins.plugin_utils.backup import Sources, default_backup_dir
from ansible_collections.keywarden.secrets.plugins.plugin_utils.context import ControllerAction, settings


class BackupAction(ControllerAction):
    """Base of keywarden.secrets.backup and keywarden.secrets.restore."""

    def sources(self, task_vars: dict[str, Any], args: dict[str, Any]) -> Sources:
        """Environment, store, catalog and CA directory from the task's options, else keywarden's settings (a play
        variable, an environment variable, ansible.cfg: see the doc fragment keywarden.secrets.settings)."""
        conf = settings(
            task_vars, self._templar, self._loader, {"environment": args["environment"], "store_dir": args["store_dir"], "catalog_path": args["catalog_path"]}
        )
        env, log, key_file = conf["environment"], conf["audit_log"], conf["audit_key_file"]
        store_dir, catalog = os.path.abspath(conf["store_dir"]), os.path.abspath(conf["catalog_path"])
        return Sources(
            environment=env,
            store_dir=store_dir,
            catalog=catalog,
            audit_log=os.path.abspath(os.path.expanduser(str(log))),
            audit_key_file=os.path.abspath(os.path.expanduser(str(key_file))),
            ca_dir=os.path.abspath(os.path.expanduser(args["ca_dir"])) if args["ca_dir"] else None,
            audit_syslog_server=conf["audit_syslog_server"] or None,
        )

    @staticmethod
    def backup_dir(args: dict[str, Any], environment: str) -> str:
        return os.path.abspath(os.path.expanduser(args["backup_dir"])) if args["backup_dir"] else default_backup_dir(environment)

    @staticmethod
    def who(task_vars: dict[str, Any]) -> dict[str, Any]:
        return actor(task_vars)
