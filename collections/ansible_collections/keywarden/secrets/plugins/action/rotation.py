# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller's phases of a rotation run: plan, decide, finish (plugin_utils/rotation.py decides; this persists).

Each phase is at most one atomic store write per audit event for all the secrets of the run, and returns names,
hosts, versions and reasons, never values. The target hosts' part is `keywarden.secrets.target`.
"""

from __future__ import annotations

import os
from typing import Any

from ansible.errors import AnsibleError

from ansible_collections.keywarden.secrets.plugins.plugin_utils import rotation
from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import AuditError
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import secrets_for_environment
from ansible_collections.keywarden.secrets.plugins.plugin_utils.context import ControllerAction, audited_reads, catalog_for, store_for
from ansible_collections.keywarden.secrets.plugins.plugin_utils.drivers import driver_for
from ansible_collections.keywarden.secrets.plugins.plugin_utils.journal import Journal
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import Store, StoreError


def _hosts(groups: dict[str, list[str]], names: list[str]) -> list[str]:
    return sorted({host for name in names for host in groups.get(name, [])})


def _rules(data: dict[str, Any]) -> dict[str, Any]:
    """The plan's two questions, answered by each kind's driver over this store's data: can it rotate, is it due."""

    def can_rotate(entry: dict[str, Any], stored: dict[str, Any]) -> str | None:
        driver = driver_for(entry["kind"])
        if driver is None:
            return f"no rotation driver for kind {entry['kind']} in this release: rotate it by hand (docs/security/secrets/rotation.md)"
        return driver.rotatable(entry, stored, data)

    def due(entry: dict[str, Any], stored: dict[str, Any], now: float) -> bool:
        driver = driver_for(entry["kind"])
        return driver.due(entry, stored, data, now) if driver else rotation.age_due(entry, stored, now)

    return {"can_rotate": can_rotate, "due": due}


def _only(value: Any) -> list[str]:
    """keywarden_rotate_only: a list, or a comma-separated string (-e keywarden_rotate_only=a,b)."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    return [str(item).strip() for item in items if str(item).strip()]


class ActionModule(ControllerAction):
    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self.arguments("rotation")
        phase = args["phase"]
        try:
            store = store_for(task_vars, self._templar, self._loader, holder=f"playbook rotate ({phase})")
            catalog_env = secrets_for_environment(catalog_for(task_vars, self._templar, loader=self._loader), store.environment)
            # the ansible-playbook process (workers are its children): the run this lock and journal belong to
            me = rotation.run_identity(os.getppid())
            journal = Journal(store.environment, me["run"])
            groups = {name: list(hosts) for name, hosts in (task_vars.get("groups") or {}).items()}
            context = _Run(store, catalog_env, me, journal, groups, float(args["lease"]), self._task.check_mode)
            out = getattr(context, phase)(args)
        except (StoreError, AnsibleError, AuditError) as exc:
            return {**result, "failed": True, "msg": str(exc)}
        return {**result, **out}


class _Run:
    def __init__(
        self, store: Store, catalog_env: dict[str, Any], me: dict[str, Any], journal: Journal, groups: dict[str, list[str]], lease: float, check: bool
    ) -> None:
        self.store, self.catalog, self.me, self.journal, self.groups, self.lease, self.check = store, catalog_env, me, journal, groups, lease, check

    def _new_fields(self, name: str, current: dict[str, str], data: dict[str, Any]) -> dict[str, str]:
        entry = self.catalog[name]
        driver = driver_for(entry["kind"])
        if driver is None:  # plan() blocks every kind without a driver
            raise StoreError(f"secret '{name}': no rotation driver for kind {entry['kind']}")
        needs = driver.needs(entry)
        # what the new value is made from (a certificate: its CA's key), each read on the audit record
        peers = dict(zip(needs, audited_reads(self.store, data, needs, "current", purpose=f"rotate {name}"), strict=True)) if needs else {}
        try:
            return driver.new_fields(entry, current, peers)
        except StoreError as exc:
            raise StoreError(f"secret '{name}': {exc}; nothing was changed") from None

    def _retire_after(self, name: str) -> float | None:
        entry = self.catalog[name]
        driver = driver_for(entry["kind"])
        return driver.retire_after(entry) if driver else None

    def _publish(self, data: dict[str, Any], promoted: dict[str, Any]) -> None:
        """A rotated CA's public certificate and trust bundle, next to the store (plugin_utils/tls.py publish_ca)."""
        cas = [name for name in promoted if self.catalog[name]["kind"] == "tls_ca"]
        if cas:
            from ansible_collections.keywarden.secrets.plugins.plugin_utils.tls import TLSError, publish_ca  # noqa: PLC0415 - only CAs need it

            try:
                publish_ca(self.store.dir, data, cas)
            except TLSError as exc:
                raise StoreError(f"the rotation finished, but {exc}") from None

    def _targets(self, names: list[str]) -> list[str]:
        return _hosts(self.groups, [self.catalog[name]["target"].get("group") for name in names])

    # ---- plan: what rotates; the lock and the pending values in one write ------------------------------
    def plan(self, args: dict[str, Any]) -> dict[str, Any]:
        only = _only(args["only"])
        retirable = {name: entry for name, entry in self.catalog.items() if driver_for(entry["kind"]) is not None}
        taken_over = None
        if self.check:
            data = self.store.read()
            rotations, blocked = rotation.plan(self.catalog, data, only, **_rules(data))
            retire = rotation.due_retirements(data, retirable)
            if rotations or retire:
                rotation.check_lock(data, self.me, self.store.environment)
        else:
            with self.store.update(event="rotate.create") as data:
                rotations, blocked = rotation.plan(self.catalog, data, only, **_rules(data))
                retire = rotation.due_retirements(data, retirable)
                if rotations or retire:
                    taken_over = rotation.take_lock(data, self.me, self.store.environment, self.lease)
                    rotation.begin(data, [item["name"] for item in rotations], lambda name, current: self._new_fields(name, current, data))
            if rotations or retire:
                self.store.audit.record("rotate.lock", pid=self.me["pid"], run=self.me["run"], taken_over=bool(taken_over))
            self.journal.start()
            self.journal.add("plan", rotations=rotations, blocked=blocked, retire=retire)
        verb = "would rotate" if self.check else "rotating"
        lines = [
            f"{verb} {item['name']} ({item['kind']}, {item['strategy']}): {item['reason']}"
            + (f" from step {item['step']}" if item["reason"] == "resume" else "")
            + f", v{item['from_version']} -> v{item['to_version']}"
            for item in rotations
        ]
        lines += [f"{'would retire' if self.check else 'retiring'} the previous value of {name} (its overlap window is over)" for name in retire]
        lines += [f"CANNOT ROTATE {item['name']} ({item['kind']}, {item['reason']}, {item['age_days']} days old): {item['why']}" for item in blocked]
        if taken_over:
            lines.append(f"took over the rotation lock of a run that is gone ({taken_over['gone']}: {rotation.holder_text(taken_over)})")
        return {
            "changed": bool(rotations or retire) and not self.check,
            "rotations": rotations,
            "blocked": blocked,
            "retire": retire,
            "target_hosts": [] if self.check else self._targets([item["name"] for item in rotations] + retire),
            "lines": lines or ["nothing to rotate"],
        }

    # ---- decide: after set/test on the targets ---------------------------------------------------------
    def decide(self, args: dict[str, Any]) -> dict[str, Any]:
        planned = self.journal.last("plan")
        rotations = planned.get("rotations") or []
        if self.check or not (rotations or planned.get("retire")):
            return {"changed": False, "consumer_hosts": [], "cleanup_hosts": [], "distribute": [], "failures": {}}
        outcome = rotation.decide(rotations, self.groups, self.journal.reports("set_test"))
        retire_now = [name for name in outcome["distribute"] if self._retire_after(name) == 0]
        if outcome["abandon"]:
            with self.store.update(event="rotate.rollback") as data:
                rotation.holds_lock(data, self.me, self.store.environment)
                rotation.abandon(data, outcome["abandon"])
        with self.store.update(event="rotate.mark") as data:
            rotation.holds_lock(data, self.me, self.store.environment)
            rotation.mark(data, outcome["distribute"], rotation.DISTRIBUTING)
            rotation.take_lock(data, self.me, self.store.environment, self.lease)
        self.journal.add("decide", **outcome, retire_now=retire_now)
        consumers = _hosts(self.groups, [group for item in rotations if item["name"] in outcome["distribute"] for group in item["consumer_groups"]])
        cleanup = sorted({host for hosts in outcome["rollback"].values() for host in hosts} | set(self._targets(retire_now + (planned.get("retire") or []))))
        # `failed` would fail the task: the run goes on for the other secrets and fails at its end
        failures = outcome.pop("failed")
        return {"changed": True, **outcome, "failures": failures, "retire_now": retire_now, "consumer_hosts": consumers, "cleanup_hosts": cleanup}

    # ---- finish: promote, abandon what was rolled back, record retirements, release the lock -----------
    def finish(self, args: dict[str, Any]) -> dict[str, Any]:
        planned, decision = self.journal.last("plan"), self.journal.last("decide")
        rotations = planned.get("rotations") or []
        blocked = planned.get("blocked") or []
        if self.check:
            return {"changed": False, "report": ["check mode: nothing was changed"], "failure": ""}
        cleanup = self.journal.reports("cleanup")
        failed: dict[str, Any] = dict(decision.get("failed") or {})

        def done_everywhere(name: str, hosts: list[str], action: str) -> bool:
            reports = [(cleanup.get(host) or {}).get(name) for host in hosts]
            for host, report in zip(hosts, reports, strict=True):
                if not (report and report["action"] == action and report["ok"]):
                    failed.setdefault(name, {})[host] = f"{action} failed: {(report or {}).get('reason') or 'no report from this host'}"
            return all(report and report["ok"] for report in reports)

        rolled_back = [name for name, hosts in (decision.get("rollback") or {}).items() if done_everywhere(name, hosts, "rollback")]
        retire = list(decision.get("retire_now") or []) + list(planned.get("retire") or [])
        retired = [name for name in retire if done_everywhere(name, self._targets([name]), "retire")]
        promoted: dict[str, Any] = {}
        if rolled_back:
            with self.store.update(event="rotate.rollback") as data:
                rotation.holds_lock(data, self.me, self.store.environment)
                rotation.abandon(data, rolled_back)
        if rotations or retire:
            with self.store.update(event="rotate.finish") as data:
                rotation.holds_lock(data, self.me, self.store.environment)
                promoted = rotation.promote(data, list(decision.get("distribute") or []), self._retire_after)
                rotation.retired(data, retired)
                rotation.release_lock(data, self.me)
            self.store.audit.record("rotate.unlock", pid=self.me["pid"], run=self.me["run"])
            self._publish(data, promoted)
        self.journal.remove()
        report = _report(rotations, promoted, failed, set(decision.get("abandon") or []) | set(rolled_back), self.groups)
        report += [f"{name}: previous value retired" for name in retired]
        failure = ""
        if failed or blocked:
            abandoned = sorted(set(decision.get("abandon") or []) | set(rolled_back))
            kept = sorted(set(failed) - set(abandoned) - set(promoted))
            parts = []
            if failed:
                parts.append(
                    "rotation failed for "
                    + "; ".join(f"{name} ({', '.join(f'{host}: {why}' for host, why in sorted(hosts.items()))})" for name, hosts in sorted(failed.items()))
                )
                parts.append(f"rolled back (consumers keep their current value): {', '.join(abandoned) or 'none'}")
                parts.append(f"the next run resumes: {', '.join(kept) or 'none'}")
            if blocked:
                parts.append("due but cannot be rotated: " + "; ".join(f"{item['name']}: {item['why']}" for item in blocked))
            others = sorted(set(promoted) - set(failed))
            parts.append(f"rotated: {', '.join(others) or 'none'}")
            failure = "; ".join(parts)
        return {"changed": bool(promoted or rolled_back or retired), "promoted": promoted, "report": report, "failure": failure}


def _report(rotations: list[dict[str, Any]], promoted: dict[str, Any], failed: dict[str, Any], abandoned: set[str], groups: dict[str, list[str]]) -> list[str]:
    row = "{:<24} {:<18} {:<9} {:<10} {:<8} {}"
    lines = [row.format("secret", "strategy", "version", "consumers", "time", "outcome")]
    for item in rotations:
        name = item["name"]
        consumers = len(_hosts(groups, item["consumer_groups"]))
        if name in promoted:
            done = promoted[name]
            hosts = f"{consumers} host" + ("" if consumers == 1 else "s")
            version = f"v{done['from_version']}->v{done['to_version']}"
            lines.append(row.format(name, item["strategy"], version, hosts, f"{done['duration_s']}s", f"rotated ({item['reason']})"))
        elif name in abandoned:
            lines.append(row.format(name, item["strategy"], f"v{item['from_version']}", "0 hosts", "-", "FAILED, rolled back"))
        else:
            lines.append(row.format(name, item["strategy"], f"v{item['from_version']}", "0 hosts", "-", "FAILED, pending kept: rerun to resume"))
    if not rotations:
        lines.append("nothing to rotate")
    return lines
