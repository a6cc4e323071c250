# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Record a value a person got by hand (an API key of provider manual) as the secret's current value.

The outgoing value becomes `previous` (keywarden cannot revoke it: its issuer does, on its own schedule). The write
goes through Store.update (lock, audit records with an HMAC of the new value first, atomic write). Only for entries the
rotation engine cannot rotate: a key keywarden rotates itself would no longer match its provider.
"""

from __future__ import annotations

import os
import re
from typing import Any

from ansible.errors import AnsibleError

from ansible_collections.keywarden.secrets.plugins.plugin_utils import rotation
from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import AuditError
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import secrets_for_environment
from ansible_collections.keywarden.secrets.plugins.plugin_utils.context import ControllerAction, catalog_for, store_for
from ansible_collections.keywarden.secrets.plugins.plugin_utils.drivers import driver_for
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import StoreError, generate_key_id, utcnow

# what every .env format carries unquoted (plugin_utils/deploy.py); issuers' keys are within it (base64 too)
_VALUE_RE = re.compile(r"^[A-Za-z0-9_@%+=:,./~-]{8,4096}$")
_KEY_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
RECORDABLE = ("api_key", "generic")


def _new_fields(kind: str, value: str, key_id: str | None) -> dict[str, str]:
    return {"value": value, "key_id": key_id or generate_key_id()} if kind == "api_key" else {"value": value}


class ActionModule(ControllerAction):
    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self.arguments("record")
        name, value, key_id = args["secret"], args["value"] or "", args["key_id"] or None
        try:
            store = store_for(task_vars, self._templar, self._loader, holder="playbook record (keywarden.secrets.record)")
            catalog_env = secrets_for_environment(catalog_for(task_vars, self._templar, loader=self._loader), store.environment)
            entry = catalog_env.get(name)
            if entry is None:
                raise StoreError(
                    f"keywarden_record_secret names '{name}', not in the catalog for environment '{store.environment}'; "
                    f"known: {', '.join(sorted(catalog_env)) or 'none'}"
                )
            driver = driver_for(entry["kind"])
            if entry["kind"] not in RECORDABLE:
                raise StoreError(f"{name} is of kind {entry['kind']}: playbooks/record.yml records values of kind {' or '.join(RECORDABLE)}")
            if driver is not None and driver.rotatable(entry) is None:
                raise StoreError(
                    f"{name} is rotated by keywarden ({entry['kind']}, provider {entry['target'].get('provider', {}).get('type', 'none')}): "
                    f"run playbooks/rotate.yml -e keywarden_rotate_only={name}; record.yml is for keys only a person can get (provider manual)"
                )
            if not _VALUE_RE.match(value):
                raise StoreError(
                    f"keywarden_record_value for {name}: must be 8 to 4096 characters from A-Z a-z 0-9 and _@%+=:,./~- "
                    f"(no spaces or quotes; got {len(value)} characters); check what was pasted"
                )
            if key_id is not None and not _KEY_ID_RE.match(key_id):
                raise StoreError(f"keywarden_record_key_id for {name}: must be 1 to 128 characters from A-Z a-z 0-9 . _ -")
            me = rotation.run_identity(os.getppid())
            if self._task.check_mode:
                data = store.read()
                self._check(data, name, me, store.environment)
                same = (data["secrets"][name]["current"]["fields"].get("value") or "") == value
                return {**result, "changed": not same, "secret": name, "msg": f"check mode: would record a new value of {name}" if not same else "unchanged"}
            with store.update(event="record") as data:
                self._check(data, name, me, store.environment)
                stored = data["secrets"][name]
                current = stored["current"]
                if current["fields"].get("value") == value and (key_id is None or current["fields"].get("key_id") == key_id):
                    return {**result, "changed": False, "secret": name, "version": current["version"], "msg": f"{name}: that value is already current"}
                version = int(stored["version"]) + 1
                stored["previous"] = dict(current)
                stored["current"] = {"version": version, "created": utcnow(), "fields": _new_fields(entry["kind"], value, key_id)}
                stored["version"] = version
        except (StoreError, AnsibleError, AuditError) as exc:
            return {**result, "failed": True, "msg": str(exc)}
        return {
            **result,
            "changed": True,
            "secret": name,
            "from_version": version - 1,
            "version": version,
            "msg": f"{name}: recorded v{version} (v{version - 1} kept as previous; revoke it at its issuer when its consumers have moved)",
        }

    @staticmethod
    def _check(data: dict[str, Any], name: str, me: dict[str, Any], environment: str) -> None:
        stored = data["secrets"].get(name)
        if stored is None:
            raise StoreError(f"secret '{name}' is not in the store yet; run playbooks/init.yml first")
        if stored.get("pending"):
            raise StoreError(f"secret '{name}' has a rotation in progress (a pending value); finish it with playbooks/rotate.yml first")
        rotation.check_lock(data, me, environment)
