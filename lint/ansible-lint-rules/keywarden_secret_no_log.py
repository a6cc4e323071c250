"""ansible-lint rule keywarden-secret-no-log: every task that reads a keywarden secret has no_log: true.

A task "reads a secret" when anything it evaluates (module arguments, loop, when, task vars) calls the
``keywarden.secrets.secret`` lookup, names a variable fed by it (play, block or task vars, set_fact, register of
such a task), or renders a template whose text calls it. ``no_log`` may be set on the task or inherited from
its block or play; it must be literally true (a templated no_log can be false at run time).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ansiblelint.errors import MatchError
from ansiblelint.file_utils import Lintable
from ansiblelint.rules import AnsibleLintRule

LOOKUP_RE = re.compile(r"""(?:lookup|query|q)\(\s*['"]keywarden\.secrets\.secret['"]|with_keywarden\.secrets\.secret""")
# keys of a task that are not evaluated as its action (or that only ever hold names)
_NOT_EVALUATED = {"name", "no_log", "register", "tags", "notify", "listen", "__line__", "__file__", "diff", "changed_when", "failed_when"}
_BLOCK_KEYS = ("block", "rescue", "always")
_TEMPLATE_MODULES = {"template", "ansible.builtin.template", "ansible.legacy.template"}


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k} {_text(v)}" for k, v in value.items() if k not in ("__line__", "__file__"))
    if isinstance(value, list):
        return " ".join(_text(v) for v in value)
    return str(value)


def _uses(text: str, tainted: set[str]) -> bool:
    if LOOKUP_RE.search(text):
        return True
    return any(re.search(rf"(?<![\w.]){re.escape(name)}\b", text) for name in tainted)


def _no_log_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in ("true", "yes"))


class KeywardenSecretNoLogRule(AnsibleLintRule):
    """Tasks reading a keywarden secret must set no_log: true."""

    id = "keywarden-secret-no-log"
    description = (
        "A task that uses lookup('keywarden.secrets.secret', ...), a variable fed by it, or a template calling it "
        "must have no_log: true (on the task, its block or its play); loop items are not masked otherwise."
    )
    severity = "VERY_HIGH"
    tags = ["security", "keywarden"]
    version_changed = "1.0.0"

    def matchyaml(self, file: Lintable) -> list[MatchError]:
        if str(file.kind) not in ("playbook", "tasks", "handlers"):
            return []
        data = file.data
        if not isinstance(data, list):
            return []
        matches: list[MatchError] = []
        tainted: set[str] = set()
        if str(file.kind) == "playbook":
            for play in data:
                if not isinstance(play, dict) or "import_playbook" in play or "ansible.builtin.import_playbook" in play:
                    continue
                scope = set(tainted) | self._vars_tainted(play.get("vars"), tainted)
                for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
                    self._walk(play.get(section) or [], file, scope, _no_log_true(play.get("no_log")), matches)
        else:
            self._walk(data, file, tainted, False, matches)
        return matches

    @staticmethod
    def _vars_tainted(variables: Any, tainted: set[str]) -> set[str]:
        if not isinstance(variables, dict):
            return set()
        return {str(k) for k, v in variables.items() if k not in ("__line__", "__file__") and _uses(_text(v), tainted)}

    def _walk(self, tasks: list[Any], file: Lintable, tainted: set[str], no_log: bool, matches: list[MatchError]) -> None:
        for task in tasks:
            if not isinstance(task, dict):
                continue
            hidden = _no_log_true(task["no_log"]) if "no_log" in task else no_log
            local = tainted | self._vars_tainted(task.get("vars"), tainted)
            if any(key in task for key in _BLOCK_KEYS):
                for key in _BLOCK_KEYS:
                    self._walk(task.get(key) or [], file, local, hidden, matches)
                continue
            evaluated = {k: v for k, v in task.items() if k not in _NOT_EVALUATED}
            uses = _uses(_text(evaluated), local) or self._template_uses(task, file)
            if uses:
                for module in ("ansible.builtin.set_fact", "set_fact"):
                    if isinstance(task.get(module), dict):
                        tainted |= {str(k) for k in task[module] if k not in ("__line__", "__file__", "cacheable")}
                if task.get("register"):
                    tainted.add(str(task["register"]))
                if not hidden:
                    matches.append(
                        self.create_matcherror(
                            message=f"task '{task.get('name', '?')}' reads a keywarden secret without no_log: true",
                            lineno=int(task.get("__line__", 1)),
                            filename=file,
                        )
                    )

    @staticmethod
    def _template_uses(task: dict[str, Any], file: Lintable) -> bool:
        for module in _TEMPLATE_MODULES:
            args = task.get(module)
            if isinstance(args, dict) and isinstance(args.get("src"), str) and "{{" not in args["src"]:
                base = Path(str(file.path)).resolve().parent
                for candidate in (base.parent / "templates" / args["src"], base / "templates" / args["src"], base / args["src"]):
                    if candidate.is_file():
                        return bool(LOOKUP_RE.search(candidate.read_text(encoding="utf-8", errors="replace")))
        return False
