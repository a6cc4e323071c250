# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The only writer of the encrypted store. Runs on the controller, whatever host the task targets."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleError
from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import AuditError
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import CHARSETS, secrets_for_environment
from ansible_collections.keywarden.secrets.plugins.plugin_utils.context import ControllerAction, audited_reads, catalog_for, resolve_var, store_for
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import Store, StoreError, generate_fields, missing_store_message, new_entry


def _issuer(store: Store, data: dict[str, Any], entry: dict[str, Any], name: str) -> dict[str, str] | None:
    """A certificate's CA (current certificate and key), each field read recorded in the audit log; None for other kinds."""
    if entry["kind"] != "tls_cert" or entry["target"]["ca"] not in data["secrets"]:
        return None
    fields = ("certificate", "private_key")
    values = audited_reads(store, data, [(entry["target"]["ca"], field) for field in fields], "current", purpose=f"issue {name}")
    return dict(zip(fields, values, strict=True))


def _publish(store: Store, data: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The public certificate and trust bundle of each CA, next to the store (plugin_utils/tls.py publish_ca)."""
    cas = [name for name, entry in wanted.items() if entry["kind"] == "tls_ca"]
    if not cas:
        return []
    from ansible_collections.keywarden.secrets.plugins.plugin_utils.tls import TLSError, publish_ca  # noqa: PLC0415 - only CAs need it

    try:
        return publish_ca(store.dir, data, cas)
    except TLSError as exc:
        raise StoreError(f"{exc}; the store itself was written") from None


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
                # a CA before the certificates it issues
                for name in sorted(missing, key=lambda name: (wanted[name]["kind"] == "tls_cert", name)):
                    fields = generate_fields(wanted[name], CHARSETS, _issuer(store, data, wanted[name], name), name)
                    data["secrets"][name] = new_entry(wanted[name]["kind"], fields)
            revision = data.get("revision", 0)
            published = _publish(store, data, wanted)
        except AuditError as exc:
            return {**result, "failed": True, "msg": f"secret read refused: {exc}"}
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
            "published": published,
            "msg": f"store {store.path}: {len(missing)} created, {len(wanted) - len(missing)} already present",
        }
