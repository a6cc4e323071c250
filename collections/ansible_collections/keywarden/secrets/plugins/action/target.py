# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One target host's part of provisioning and rotation, for every kind at once, through the kinds' drivers.

The values are read on the controller (each read audited) and reach the host only as module arguments of the
kind's module (never in the task's own arguments); results hold names, counts and reasons, never a value.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.plugins.loader import become_loader

from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import AuditError
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import secrets_for_environment
from ansible_collections.keywarden.secrets.plugins.plugin_utils.context import TargetAction, audited_reads, catalog_for, store_for
from ansible_collections.keywarden.secrets.plugins.plugin_utils.drivers import driver_for
from ansible_collections.keywarden.secrets.plugins.plugin_utils.drivers.base import Driver, Item, Outcomes
from ansible_collections.keywarden.secrets.plugins.plugin_utils.journal import Journal
from ansible_collections.keywarden.secrets.plugins.plugin_utils.rotation import run_identity
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import DISTRIBUTING, StoreError, resolve_stage


class _Host:
    """The `Target` a driver sees: this task's host, its variables, and module runs on it."""

    def __init__(self, action: ActionModule, task_vars: dict[str, Any]) -> None:
        self._action = action
        self._vars = task_vars
        self.host = str(task_vars.get("inventory_hostname"))
        self.check_mode = bool(action._task.check_mode)
        self.changed = False
        self.changed_names: set[str] = set()

    def setting(self, name: str, default: Any = None) -> Any:
        if name not in self._vars:
            return default
        value = self._action._templar.template(self._vars[name])
        return default if value is None else value

    def module(self, name: str, args: dict[str, Any], become_user: str | None = None) -> dict[str, Any]:
        with self._action.become(become_user, self._vars):
            result = self._action._execute_module(module_name=name, module_args=args, task_vars=self._vars)
        self.changed = self.changed or bool(result.get("changed"))
        self.changed_names.update(result.get("changed_names") or [])
        return result


def _reported(journal: Journal, phase: str, host: str, reports: dict[str, dict[str, Any]], done: str) -> dict[str, Any]:
    """Report a host's outcomes to the run (the journal) and in the task's result: a warning per failed secret, no
    task failure (the host stays in the run for its other secrets; the run fails at its end, naming them)."""
    journal.add(phase, host, reports=reports)
    bad = sorted(name for name, report in reports.items() if not report["ok"])
    out: dict[str, Any] = {"reports": reports, "msg": f"{len(reports) - len(bad)} of {len(reports)} {done} on {host}"}
    if bad:
        out["warnings"] = [f"{reports[name].get('action', phase)} of {name} failed on {host}: {reports[name]['reason']}" for name in bad]
    return out


class _Reads:
    """A secret's fields at a stage, read once per task and recorded in the audit log before they are used: one
    audit append for a whole batch (``prefetch``), however many drivers and steps use the values afterwards."""

    def __init__(self, store: Any, data: dict[str, Any], purpose: str) -> None:
        self._store, self._data, self._purpose = store, data, purpose
        self._cache: dict[tuple[str, str], dict[str, str]] = {}

    def prefetch(self, names: list[str], stage: str) -> None:
        pairs: list[tuple[str, str]] = []
        wanted: list[tuple[str, list[str]]] = []
        for name in names:
            entry = self._data["secrets"].get(name) or {}
            staged = entry.get(resolve_stage(entry, stage)) or {}
            if (name, stage) in self._cache or not staged:
                continue
            fields = sorted(staged.get("fields") or {})
            pairs += [(name, field) for field in fields]
            wanted.append((name, fields))
        if not pairs:
            return
        values = iter(audited_reads(self._store, self._data, pairs, stage, purpose=self._purpose))
        for name, fields in wanted:
            self._cache[(name, stage)] = {field: next(values) for field in fields}

    def __call__(self, name: str, stage: str) -> dict[str, str]:
        """The fields at ``stage``; empty when the secret has no value there (no previous yet: the driver decides).
        A secret the store does not hold at all raises the StoreError that names it."""
        if name not in self._data["secrets"]:
            audited_reads(self._store, self._data, [(name, "value")], stage, purpose=self._purpose)
        if (name, stage) not in self._cache:
            self.prefetch([name], stage)
        return self._cache.get((name, stage), {})


class ActionModule(TargetAction):
    @contextlib.contextmanager
    def become(self, user: str | None, task_vars: dict[str, Any]) -> Iterator[None]:
        """Run the next module calls as ``user`` (e.g. peer authentication as the postgres OS user), with the
        host's become method (ansible_become_method, else Ansible's default)."""
        if not user:
            yield
            return
        method = self._templar.template(task_vars.get("ansible_become_method") or C.DEFAULT_BECOME_METHOD)
        plugin = become_loader.get(method)
        if plugin is None:
            raise AnsibleError(f"become method '{method}' (ansible_become_method) was not found")
        plugin.set_options(direct={"become_user": user})
        before = self._connection.become
        self._connection.set_become_plugin(plugin)
        try:
            yield
        finally:
            self._connection.set_become_plugin(before)

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result, task_vars, args = self.start(tmp, task_vars, "target")
        if args is None:
            return result
        phase = args["phase"]
        host = _Host(self, task_vars)
        try:
            store = store_for(task_vars, self._templar, self._loader, holder=f"keywarden.secrets.target ({phase})")
            catalog_env = secrets_for_environment(catalog_for(task_vars, self._templar, loader=self._loader), store.environment)
            data = store.read()
            groups = set(task_vars.get("group_names") or [])
            here = {name: entry for name, entry in catalog_env.items() if entry["target"].get("group") in groups}

            read = _Reads(store, data, f"{phase} on {host.host}")

            if phase in ("provision", "test"):
                read.prefetch([name for name in here if name in data["secrets"]], "live")
                out = self._provision(host, here, data, read, phase)
            else:
                journal = Journal(store.environment, run_identity(os.getppid())["run"])
                out = self._set_test(host, here, data, read, journal) if phase == "set_test" else self._cleanup(host, here, read, journal)
        except AuditError as exc:
            return {**result, "failed": True, "msg": f"secret read refused: {exc}"}
        except (StoreError, AnsibleError) as exc:
            return {**result, "failed": True, "msg": str(exc)}
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return {**result, "changed": host.changed, **out}

    # ---- phases ---------------------------------------------------------------------------------------
    @staticmethod
    def _by_driver(names: list[str], entries: dict[str, Any], read: Any) -> Iterator[tuple[Driver, list[Item]]]:
        kinds: dict[str, list[Item]] = {}
        for name in sorted(names):
            kinds.setdefault(entries[name]["kind"], []).append(Item(name, entries[name], read))
        for kind, items in sorted(kinds.items()):
            driver = driver_for(kind)
            if driver is not None:
                yield driver, items

    def _provision(self, host: _Host, here: dict[str, Any], data: dict[str, Any], read: Any, phase: str) -> dict[str, Any]:
        """provision: make this host's targets accept each secret's live value (what its consumers hold);
        test: log in with each (prove that they do). Every secret is handled; the task fails naming each failure."""
        names = [name for name in here if name in data["secrets"]]
        failures: Outcomes = {}
        done: list[str] = []
        for driver, items in self._by_driver(names, here, read):
            outcome = driver.set(host, items, "live") if phase == "provision" else driver.test(host, items, "live")
            for name, why in outcome.items():
                if why is None:
                    done.append(name)
                else:
                    failures[name] = why
        no_driver = sorted(name for name in names if driver_for(here[name]["kind"]) is None)
        verb = "provisioned" if phase == "provision" else "tested"
        out: dict[str, Any] = {verb: sorted(done), "failures": failures, "changed_names": sorted(host.changed_names)}
        if no_driver:
            out["warnings"] = [f"not {verb} on {host.host}: {', '.join(no_driver)} (no driver for their kind in this release)"]
        if failures:
            detail = "; ".join(f"{name}: {why}" for name, why in sorted(failures.items()))
            return {**out, "failed": True, "msg": f"{len(failures)} of {len(names)} secrets not {verb} on {host.host}: {detail}"}
        return {**out, "msg": f"{len(done)} of {len(names)} secrets {verb} on {host.host}"}

    def _set_test(self, host: _Host, here: dict[str, Any], data: dict[str, Any], read: Any, journal: Journal) -> dict[str, Any]:
        """Set each rotating secret's pending value here, test it, roll back a failure here; report per secret.

        The task does not fail for a secret's failure (the host would then leave the run): the report goes to the
        run's journal, the rotation engine decides, and the run fails at the end naming the secret.
        """
        rotating = {name: entry for name, entry in here.items() if (data["secrets"].get(name) or {}).get("pending")}
        read.prefetch(list(rotating), "pending")
        if host.check_mode:
            return {"msg": f"check mode: would set and test {len(rotating)} pending values on {host.host}", "reports": {}}
        reports: dict[str, dict[str, Any]] = {}
        for driver, items in self._by_driver(list(rotating), rotating, read):
            outcome = driver.set(host, items, "pending")
            tested = [item for item in items if outcome.get(item.name) is None]
            outcome.update(driver.test(host, tested, "pending"))
            failed = [item for item in items if outcome.get(item.name) is not None]
            undo = [item for item in failed if data["secrets"][item.name]["pending"].get("step") != DISTRIBUTING]
            undone = driver.rollback(host, undo) if undo else {}
            for item in items:
                why = outcome.get(item.name)
                holds = driver.holds(item.entry) and (why is None or undone.get(item.name, "not rolled back") is not None)
                reports[item.name] = {"ok": why is None, "reason": why, "holds": holds}
        return _reported(journal, "set_test", host.host, reports, "pending values set and tested")

    def _cleanup(self, host: _Host, here: dict[str, Any], read: Any, journal: Journal) -> dict[str, Any]:
        """After distribution: roll back the failed rotations the engine chose for this host, and revoke outgoing values
        whose retirement is due (now, for strategies like Redis' two passwords; after an overlap window for others)."""
        decision, planned = journal.last("decide"), journal.last("plan")
        if host.check_mode or not decision:
            return {"msg": f"nothing to clean up on {host.host}", "reports": {}}
        rollback = [name for name, hosts in (decision.get("rollback") or {}).items() if host.host in hosts and name in here]
        now = [name for name in decision.get("retire_now") or [] if name in here]
        due = [name for name in planned.get("retire") or [] if name in here]
        reports: dict[str, dict[str, Any]] = {}
        for names, action in ((rollback, "rollback"), (now, "retire"), (due, "retire")):
            stage = "current" if names is now else "previous"
            for driver, items in self._by_driver(names, here, read):
                outcome = driver.rollback(host, items) if action == "rollback" else driver.revoke(host, items, stage)
                for name, why in outcome.items():
                    reports[name] = {"action": action, "ok": why is None, "reason": why}
        return _reported(journal, "cleanup", host.host, reports, "clean-ups done")
