# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side helpers shared by keywarden's action and lookup plugins."""

from __future__ import annotations

import configparser
import json
import os
from typing import Any

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase

from ansible_collections.keywarden.secrets.plugins.module_utils.specs import ARGUMENT_SPECS
from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import AuditError, AuditLog, Auditor, actor, default_key_file, load_key
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import CatalogError, load_catalog
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import DEFAULT_KEEP, Store, StoreError, get_field, resolve_stage, staged_version


def resolve_var(variables: dict[str, Any], templar: Any, name: str, override: Any = None) -> Any:
    """An explicit option wins; else the (templated) play variable; else None."""
    if override not in (None, ""):
        return templar.template(override) if isinstance(override, str) and "{{" in override else override
    if name not in variables:
        return None
    value = variables[name]
    return templar.template(value) if isinstance(value, str) else value


def required_var(variables: dict[str, Any], templar: Any, name: str, override: Any = None) -> Any:
    value = resolve_var(variables, templar, name, override)
    if value in (None, ""):
        raise AnsibleError(f"{name} is not set: give it in the inventory's group_vars (e.g. inventories/<env>/group_vars/all/main.yml)")
    return value


def store_for(
    variables: dict[str, Any],
    templar: Any,
    loader: Any,
    environment: Any = None,
    store_dir: Any = None,
    holder: str = "",
    audit_options: dict[str, Any] | None = None,
) -> Store:
    env = str(required_var(variables, templar, "keywarden_environment", environment))
    directory = str(required_var(variables, templar, "keywarden_store_dir", store_dir))
    keep = resolve_var(variables, templar, "keywarden_store_keep_versions") or DEFAULT_KEEP
    timeout = resolve_var(variables, templar, "keywarden_store_lock_timeout") or 0
    vault = getattr(loader, "_vault", None)
    auditor = auditor_for(variables, templar, env, directory, audit_options)
    return Store(directory, env, getattr(vault, "secrets", None), keep=int(keep), lock_timeout=float(timeout), holder=holder, audit=auditor)


# Audit settings: (play variable, environment variable, ansible.cfg [keywarden] key). The secret lookup documents
# the same three sources for each option; action plugins, which have no options of their own, read them here.
AUDIT_SETTINGS = {
    "log": ("keywarden_audit_log", "KEYWARDEN_AUDIT_LOG", "audit_log"),
    "key_file": ("keywarden_audit_key_file", "KEYWARDEN_AUDIT_KEY_FILE", "audit_key_file"),
    "syslog": ("keywarden_audit_syslog", "KEYWARDEN_AUDIT_SYSLOG", "audit_syslog"),
}


def _ini(key: str) -> str | None:
    path = getattr(C, "CONFIG_FILE", None)
    if not path:
        return None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
        return parser.get("keywarden", key, fallback=None)
    except (OSError, configparser.Error):
        return None


def audit_setting(variables: dict[str, Any], templar: Any, option: str, override: Any = None) -> Any:
    """An audit option: explicit value, else play variable, else environment variable, else ansible.cfg."""
    var, env, ini = AUDIT_SETTINGS[option]
    value = resolve_var(variables, templar, var, override)
    if value in (None, ""):
        value = os.environ.get(env) or _ini(ini)
    return value


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def auditor_for(variables: dict[str, Any], templar: Any, environment: str, store_dir: str, options: dict[str, Any] | None = None) -> Auditor:
    """The environment's audit log (default <store dir>/audit.log) with its key (default ~/.config/keywarden/audit-<env>.key)."""
    options = options or {}
    log_path = audit_setting(variables, templar, "log", options.get("log")) or os.path.join(store_dir, "audit.log")
    key_file = audit_setting(variables, templar, "key_file", options.get("key_file")) or default_key_file(environment)
    syslog = _truthy(audit_setting(variables, templar, "syslog", options.get("syslog")) or False)
    try:
        key = load_key(os.path.expanduser(str(key_file)))
    except AuditError as exc:
        raise AnsibleError(f"{exc}: refusing to go on without an audit record (fail closed)") from None
    host = variables.get("inventory_hostname")
    return Auditor(AuditLog(str(log_path), key, syslog=syslog), environment, actor(variables), host=str(host) if host else None)


def audited_reads(store: Store, data: dict[str, Any], fields: list[tuple[str, str]], stage: str, **detail: Any) -> list[str]:
    """The values of (secret, field) pairs at a stage, each read recorded in the audit log first.

    Every read is recorded, a refused one too; when the records cannot be written no value is returned (fail closed).
    """
    values = []
    entries = []
    for name, field in fields:
        try:
            value = get_field(data, name, field, stage, source=store.path)
        except StoreError:
            store.audit.record("read", secret=name, field=field, stage=stage, outcome="error", **detail)
            raise
        values.append(value)
        stored_stage = resolve_stage(data["secrets"][name], stage)
        entries.append(
            store.audit.entry("read", secret=name, field=field, stage=stored_stage, version=staged_version(data, name, stored_stage), value=value, **detail)
        )
    store.audit.record_many(entries)
    return values


def catalog_for(variables: dict[str, Any], templar: Any, path: Any = None) -> dict[str, Any]:
    catalog_path = str(required_var(variables, templar, "keywarden_catalog_path", path))
    try:
        return load_catalog(os.path.expanduser(catalog_path))
    except CatalogError as exc:
        raise AnsibleError(str(exc)) from None


class ControllerAction(ActionBase):
    """Base of keywarden's action plugins: they run on the controller, need no connection, support check mode."""

    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    def arguments(self, name: str) -> dict[str, Any]:
        """The task's arguments, validated against ARGUMENT_SPECS[name] (defaults filled in), as plain data.

        Plain: ansible-core 2.19 tags templated strings, and the store is dumped with yaml.safe_dump.
        """
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPECS[name])
        return json.loads(json.dumps(args))


class TargetAction(ControllerAction):
    """Base of keywarden's action plugins that resolve values on the controller, then run a module on the host."""

    _requires_connection = True
