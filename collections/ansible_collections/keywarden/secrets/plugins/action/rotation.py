# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of a rotation run: plan, run lock, and the store transitions of each step.

Each transition is one atomic store write for all the secrets of the run. Returns names, versions,
steps and durations, never values.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from ansible.errors import AnsibleError

from ansible_collections.keywarden.secrets.plugins.plugin_utils import rotation
from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import AuditError
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import secrets_for_environment
from ansible_collections.keywarden.secrets.plugins.plugin_utils.context import ControllerAction, catalog_for, store_for
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import StoreError

_AUDIT_EVENTS = {"begin": "rotate.create", "mark": "rotate.mark", "promote": "rotate.finish", "abandon": "rotate.rollback"}


def _crash_point(point: str) -> None:
    """Crash tests: KEYWARDEN_FAULT_INJECT=<point> kills the whole ansible-playbook run (SIGKILL) here."""
    if os.environ.get("KEYWARDEN_FAULT_INJECT") == point:
        os.kill(os.getppid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)


class ActionModule(ControllerAction):
    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self.arguments("rotation")
        op = args["op"]
        # the ansible-playbook process: workers are its children; it owns the run lock
        owner = os.getppid()
        try:
            catalog = catalog_for(task_vars, self._templar)
            store = store_for(task_vars, self._templar, self._loader, holder=f"playbook rotate ({op})")
            catalog_env = secrets_for_environment(catalog, store.environment)
            if op == "plan":
                planned = rotation.plan(catalog_env, store.read(), args["only"])
                msg = f"{len(planned)} to rotate"
                # with something to rotate, op=lock takes a dead run's lock over; with nothing, it would stay
                stale = None if planned or self._task.check_mode else rotation.clear_stale_run_lock(store.dir)
                if stale:
                    msg += f"; removed the run lock of a run that is gone (pid {stale.get('pid')}, since {stale.get('since')})"
                return {**result, "changed": bool(stale), "rotations": planned, "msg": msg}
            if self._task.check_mode:
                return {**result, "changed": bool(args["names"]) or op in ("lock", "unlock"), "msg": f"check mode: {op} not performed"}
            if op == "lock":
                info = rotation.acquire_run_lock(store.dir, store.environment, owner, "playbook rotate")
                taken = info.get("taken_over")
                msg = f"rotation lock of {store.environment} held by pid {owner}"
                if taken:
                    msg += f" (taken over from a run that is gone: pid {taken.get('pid')}, since {taken.get('since')})"
                store.audit.record("rotate.lock", pid=owner, taken_over=bool(taken))
                _crash_point("rotate-after-lock")
                return {**result, "changed": True, "msg": msg, "taken_over": bool(taken)}
            if op == "unlock":
                released = rotation.release_run_lock(store.dir, owner)
                if released:
                    store.audit.record("rotate.unlock", pid=owner)
                return {**result, "changed": released, "msg": "rotation lock released" if released else "rotation lock was not ours"}
            names = args["names"]
            # each transition is audited per secret by the store write (rotate.create/mark/finish/rollback)
            with store.update(event=_AUDIT_EVENTS[op]) as data:
                if op == "begin":
                    out: Any = rotation.begin(data, catalog_env, names)
                elif op == "mark":
                    if not args["step"]:
                        raise StoreError("op=mark needs step")
                    out = rotation.mark(data, names, args["step"])
                elif op == "promote":
                    out = rotation.promote(data, names)
                else:
                    out = rotation.abandon(data, names)
            _crash_point(f"rotate-after-{op}" + (f"-{args['step']}" if op == "mark" else ""))
        except (StoreError, AnsibleError, AuditError) as exc:
            return {**result, "failed": True, "msg": str(exc)}
        return {**result, "changed": bool(out), "result": out, "revision": data.get("revision")}
