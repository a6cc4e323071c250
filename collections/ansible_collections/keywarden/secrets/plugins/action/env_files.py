# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Deliver a host's .env files in one task: plan, read the store once, render, one module call, audit.

1. Plan the host's files from the catalog (``module_utils.catalog.env_plan`` on ``group_names``).
2. Read the store once; check that every secret field the files need exists at stage ``live`` (all or nothing: a
   missing one fails the task, naming file, variable, secret and field, before anything is read out or written).
3. Record every value read in the audit log (``read``), then render the files (``plugin_utils.deploy``), each value
   quoted so that every consumer of the file's format (option ``formats``, default ``portable``) reads it back byte
   for byte; a value the format cannot carry fails the task, naming file, variable and secret, before anything is
   written. No record, no value: the task fails closed when the log cannot be written.
4. Run the ``keywarden.secrets.env_files`` module on the host once: directory, then each file that differs.
5. Not in check mode: record one ``deploy`` line per delivered secret field (as the audit action does), with
   ``changed`` per service; fail closed.

Kinds delivered as files (certificates: catalog.KIND_FILE_FIELDS) go to the same module call as ``bundles``: each a
directory of files swapped in by one rename of a link (``<service>.<secret>``); the .env file holds their paths.

Returns ``services`` and ``results`` shaped like the register of a template task looping over the services, so the
role's handlers, report and health check select on ``item.item`` and ``item.changed`` (``item.restart`` and
``item.reload`` say which of the two a changed service needs). Never returns a value; every
failure is raised with a message built from names only, so that it shows even on a ``no_log`` task.
"""

from __future__ import annotations

import os
from typing import Any

from ansible.errors import AnsibleActionFail, AnsibleError

from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import AuditError
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import env_plan
from ansible_collections.keywarden.secrets.plugins.plugin_utils.context import (
    TargetAction,
    audited_reads,
    catalog_for,
    required_var,
    resolve_var,
    store_for,
)
from ansible_collections.keywarden.secrets.plugins.plugin_utils.deploy import (
    DEFAULT_FORMAT,
    DEFAULT_MANAGED,
    check_fields,
    check_formats,
    deploy_entries,
    env_file_name,
    render_bundles,
    render_env_file,
    secret_fields,
)
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import StoreError

STAGE = "live"
MODULE = "keywarden.secrets.env_files"


def _bundles_written(service: dict[str, Any], written: list[str]) -> list[str]:
    return [str(bundle["name"]) for bundle in service.get("bundles") or [] if bundle["name"] in written]


def _changed(service: dict[str, Any], written: list[str]) -> bool:
    return env_file_name(service) in written or bool(_bundles_written(service, written))


def _result(service: dict[str, Any], written: list[str], previous: dict[str, Any], directory: str) -> dict[str, Any]:
    """One service's item: ``changed``; ``restart`` (its .env changed, or its files and it has no reload_command) or
    ``reload`` (only its files changed); ``previous``: the link and directory each changed bundle had before, for the
    role to put back when the consumer's health check fails."""
    env_changed = env_file_name(service) in written
    bundles = _bundles_written(service, written)
    reload = bool(bundles) and not env_changed and bool(service.get("reload_command"))
    return {
        "item": service,
        "changed": env_changed or bool(bundles),
        "restart": env_changed or (bool(bundles) and not reload),
        "reload": reload,
        "previous": [{"link": os.path.join(directory, name), "target": previous[name]} for name in bundles if previous.get(name)],
        "dest": os.path.join(directory, env_file_name(service)),
    }


class ActionModule(TargetAction):
    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result, task_vars, args = self.start(tmp, task_vars, "env_files")
        if args is None:
            return result
        try:
            catalog = catalog_for(task_vars, self._templar)
            environment = str(required_var(task_vars, self._templar, "keywarden_environment"))
            formats = check_formats(args.pop("formats"), {str(c["service"]) for entry in catalog["secrets"].values() for c in entry["consumers"]})
        except (AnsibleError, StoreError) as exc:
            raise AnsibleActionFail(str(exc)) from None
        services = env_plan(catalog, environment, [str(group) for group in task_vars.get("group_names", [])])
        if not services:
            return {**result, "changed": False, "services": [], "results": [], "recorded": 0, "msg": "this host consumes no .env file"}

        try:
            store = store_for(task_vars, self._templar, self._loader, environment=environment)
            data = store.read()
            check_fields(data, services, STAGE, f"the {environment} store")
            pairs = secret_fields(services)
            values = dict(zip(pairs, audited_reads(store, data, pairs, STAGE, purpose="env_files"), strict=True))
            managed = str(resolve_var(task_vars, self._templar, "ansible_managed") or DEFAULT_MANAGED)
            files = {
                env_file_name(service): render_env_file(service, values, environment, managed, formats.get(service["service"], DEFAULT_FORMAT), args["dir"])
                for service in services
            }
            bundles = render_bundles(services, values)
        except AuditError as exc:
            raise AnsibleActionFail(f"secret read refused: {exc}") from None
        except (StoreError, AnsibleError) as exc:
            raise AnsibleActionFail(str(exc)) from None

        try:
            out = self._execute_module(module_name=MODULE, module_args={**args, "files": files, "bundles": bundles}, task_vars=task_vars)
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)  # noqa: SLF001 - as ansible's own action plugins do
        written = sorted(str(name) for name in out.get("changed_files") or [])
        changed_services = [service["service"] for service in services if _changed(service, written)]

        if out.get("failed"):
            # the module stops at the first file it cannot write: the ones it wrote before are on the record too
            msg = str(out.get("msg") or "the module failed")
            if written:
                msg += f" (written before the failure: {', '.join(written)})"
            recorded = 0
            if not self._task.check_mode and changed_services:
                try:
                    recorded = self._record(store, data, [s for s in services if s["service"] in changed_services], changed_services, args["dir"])
                except AnsibleActionFail as exc:
                    msg += f"; {exc.message}"
            raise AnsibleActionFail(msg, result={"changed": bool(out.get("changed")), "changed_files": written, "recorded": recorded})

        recorded = 0 if self._task.check_mode else self._record(store, data, services, changed_services, args["dir"])
        previous = out.get("previous") or {}
        results = [_result(service, written, previous, args["dir"]) for service in services]
        verb = "would be written" if self._task.check_mode else "written"
        return {
            **result,
            "changed": bool(out.get("changed")),
            "dir": args["dir"],
            "dir_changed": bool(out.get("dir_changed")),
            "changed_files": written,
            "services": services,
            "results": results,
            "recorded": recorded,
            "msg": f"{len(written)} of {len(services)} .env files {verb} in {args['dir']}" + (f": {', '.join(written)}" if written else ""),
        }

    @staticmethod
    def _record(store: Any, data: dict[str, Any], services: list[dict[str, Any]], changed: list[str], dest_dir: str) -> int:
        """One deploy line per delivered secret field of these services (fail closed)."""
        try:
            entries = deploy_entries(store.audit, data, services, changed, dest_dir, STAGE, source=store.path)
            store.audit.record_many(entries)
        except AuditError as exc:
            delivered = f"changed: {', '.join(changed)}" if changed else "none changed"
            raise AnsibleActionFail(f"{exc} (the .env files were delivered, {delivered})") from None
        except StoreError as exc:
            raise AnsibleActionFail(str(exc)) from None
        return len(entries)
