# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side helpers shared by keywarden's action and lookup plugins."""

from __future__ import annotations

import json
import os
from typing import Any

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase
from ansible.plugins.loader import lookup_loader

from ansible_collections.keywarden.secrets.plugins.module_utils.specs import ARGUMENT_SPECS
from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import AuditError, AuditLog, Auditor, actor, default_key_file, load_key
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import CatalogError, load_catalog
from ansible_collections.keywarden.secrets.plugins.plugin_utils.git_store import GitStore
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import Store, StoreError, get_field, resolve_stage, staged_version


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


# The settings are the options of the `secret` lookup (doc fragment keywarden.secrets.settings): each has a play
# variable, an environment variable and an ansible.cfg key. Actions resolve them through that plugin's
# configuration, so a setting means the same thing, from the same sources, in every plugin.
_SETTINGS_PLUGIN = "keywarden.secrets.secret"
SETTINGS = (
    "environment",
    "store_dir",
    "store_backend",
    "store_git_remote",
    "store_git_branch",
    "store_git_pull",
    "catalog_path",
    "store_keep_versions",
    "store_lock_timeout",
    "audit_log",
    "audit_key_file",
    "audit_syslog",
    "audit_syslog_server",
)


def project_root(variables: dict[str, Any]) -> str:
    """The project: the directory above `playbooks/` (AWX and ansible-runner run the project's playbooks from there)."""
    playbook_dir = os.path.abspath(str(variables.get("playbook_dir") or os.getcwd()))
    return os.path.dirname(playbook_dir) if os.path.basename(playbook_dir) == "playbooks" else playbook_dir


def settings(variables: dict[str, Any], templar: Any, loader: Any, direct: dict[str, Any] | None = None, plugin: Any = None) -> dict[str, Any]:
    """Every keywarden setting for this task: explicit (``direct``), play variable, environment, ansible.cfg, default.

    ``plugin`` is an already configured `secret` lookup (the lookup passes itself); else one is loaded and given the
    play variables the settings name, templated. Paths default to the project's layout.
    """
    if plugin is None:
        plugin = lookup_loader.get(_SETTINGS_PLUGIN, loader=loader, templar=templar)
        definitions = [C.config.get_configuration_definition(option, "lookup", plugin._load_name) or {} for option in SETTINGS]
        names = {entry["name"] for definition in definitions for entry in definition.get("vars", [])}
        var_options = {name: templar.template(variables[name]) for name in names if name in variables}
        plugin.set_options(var_options=var_options, direct={k: v for k, v in (direct or {}).items() if v not in (None, "")})
    out = {option: plugin.get_option(option) for option in SETTINGS}
    if out["environment"] in (None, ""):
        raise AnsibleError(
            "keywarden_environment is not set: give it in the inventory's group_vars (e.g. inventories/<env>/group_vars/all/keywarden.yml), "
            "or set KEYWARDEN_ENVIRONMENT"
        )
    out["environment"] = str(out["environment"])
    root = project_root(variables)
    out["store_dir"] = os.path.expanduser(str(out["store_dir"] or os.path.join(root, "inventories", out["environment"], "store")))
    out["catalog_path"] = os.path.expanduser(str(out["catalog_path"] or os.path.join(root, "config", "secrets", "catalog.yml")))
    out["audit_log"] = os.path.expanduser(str(out["audit_log"] or os.path.join(out["store_dir"], "audit.log")))
    out["audit_key_file"] = os.path.expanduser(str(out["audit_key_file"] or default_key_file(out["environment"])))
    # an AWX job's checkout is on a temporary branch; the project's branch is an extra var of every job
    out["store_git_branch"] = out["store_git_branch"] or variables.get("awx_project_scm_branch") or None
    return out


def store_for(
    variables: dict[str, Any],
    templar: Any,
    loader: Any,
    environment: Any = None,
    store_dir: Any = None,
    holder: str = "",
    audit_options: dict[str, Any] | None = None,
    plugin: Any = None,
    audited: bool = True,
) -> Store:
    """The environment's store, its writes and reads audited. Explicit arguments win over the settings.

    ``audited=False``: no auditor (and no audit key loaded): for a caller that records its own events (a restore).
    """
    direct = {"environment": environment, "store_dir": store_dir, **{f"audit_{k}": v for k, v in (audit_options or {}).items()}}
    conf = settings(variables, templar, loader, direct, plugin)
    vault = getattr(loader, "_vault", None)
    auditor = auditor_for(variables, conf) if audited else None
    common = {"keep": int(conf["store_keep_versions"]), "lock_timeout": float(conf["store_lock_timeout"]), "holder": holder, "audit": auditor}
    if conf["store_backend"] == "git":
        return GitStore(
            conf["store_dir"],
            conf["environment"],
            getattr(vault, "secrets", None),
            remote=str(conf["store_git_remote"] or "origin"),
            branch=str(conf["store_git_branch"]) if conf["store_git_branch"] else None,
            pull=bool(conf["store_git_pull"]),
            **common,
        )
    return Store(conf["store_dir"], conf["environment"], getattr(vault, "secrets", None), **common)


def auditor_for(variables: dict[str, Any], conf: dict[str, Any]) -> Auditor:
    """The environment's audit log with its key, for the actor and host of this task."""
    try:
        key = load_key(conf["audit_key_file"])
    except AuditError as exc:
        raise AnsibleError(f"{exc}: refusing to go on without an audit record (fail closed)") from None
    host = variables.get("inventory_hostname")
    log = AuditLog(conf["audit_log"], key, syslog=bool(conf["audit_syslog"]), syslog_server=conf.get("audit_syslog_server") or None)
    return Auditor(log, conf["environment"], actor(variables), host=str(host) if host else None)


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


def catalog_for(variables: dict[str, Any], templar: Any, path: Any = None, loader: Any = None) -> dict[str, Any]:
    """The validated catalog: an explicit path, else the catalog_path setting (default: the project's)."""
    catalog_path = path or settings(variables, templar, loader)["catalog_path"]
    try:
        return load_catalog(os.path.expanduser(str(catalog_path)))
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
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPECS[name])
        return json.loads(json.dumps(args))


class TargetAction(ControllerAction):
    """Base of keywarden's action plugins that resolve values on the controller, then run a module on the host."""

    _requires_connection = True

    def start(self, tmp: Any, task_vars: dict[str, Any] | None, name: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
        """(result, task_vars, arguments) of a task that will carry secret values to a host; arguments None and a failed
        result when Ansible keeps module files on the hosts (they would keep the values)."""
        result = super().run(tmp, task_vars)
        if C.DEFAULT_KEEP_REMOTE_FILES:
            result.update(
                failed=True,
                msg=(
                    "ANSIBLE_KEEP_REMOTE_FILES (keep_remote_files in ansible.cfg) is on: it would leave this task's module arguments, "
                    "secret values among them, in ~/.ansible/tmp on the host; unset it to run tasks that deliver secrets"
                ),
            )
            return result, task_vars or {}, None
        return result, task_vars or {}, self.arguments(name)
