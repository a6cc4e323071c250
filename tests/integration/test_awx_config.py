"""AWX configuration as code (awx/configure.yml, awx/keywarden.yml) without an AWX server: what can be proven here.

- the playbook parses (ansible-playbook --syntax-check);
- every task, for every item of its loop, passes the awx.awx module's own argument validation: the playbook runs for
  real against a controller address where nothing listens, each task made to go on after its failure, and every
  task and item must fail at the connection (the module validated its arguments and went on to call the API), never
  at an argument. Made with generated stand-ins for the credentials' secrets;
- the definitions hold what issue 11 asks for: five job templates per environment, the schedules, a vault
  credential per environment (vault ID = environment), failure notifications.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from ansible.parsing.dataloader import DataLoader
from awx_helpers import free_port

REPO = Path(__file__).resolve().parents[2]
CONFIGURE = REPO / "awx" / "configure.yml"
DEFINITIONS = REPO / "awx" / "keywarden.yml"


class _Dumper(yaml.SafeDumper):
    """Dumps strings Ansible must not template (loaded as !unsafe) as !unsafe again."""


def _unsafe_values(path: Path) -> set[str]:
    """The scalars of a YAML file tagged !unsafe."""
    found = set()
    nodes = [yaml.compose(path.read_text(), Loader=yaml.SafeLoader)]
    while nodes:
        node = nodes.pop()
        if isinstance(node, yaml.ScalarNode) and node.tag == "!unsafe":
            found.add(node.value)
        elif isinstance(node, yaml.SequenceNode):
            nodes.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            nodes.extend(value for pair in node.value for value in pair)
    return found


_UNSAFE = _unsafe_values(CONFIGURE)


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_scalar("!unsafe" if str(value) in _UNSAFE else "tag:yaml.org,2002:str", str(value))


_Dumper.add_multi_representer(str, _str)
# Ansible's loader gives tagged subclasses of dict and list
_Dumper.add_multi_representer(dict, lambda dumper, value: dumper.represent_dict(dict(value)))
_Dumper.add_multi_representer(list, lambda dumper, value: dumper.represent_list(list(value)))
_Dumper.add_multi_representer(int, lambda dumper, value: dumper.represent_int(int(value)))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "CONTROLLER_", "TOWER_"))}
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        CONTROLLER_HOST=f"https://127.0.0.1:{free_port()}",
        CONTROLLER_OAUTH_TOKEN=secrets.token_hex(16),
        CONTROLLER_VERIFY_SSL="false",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return env


def _tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def test_the_configuration_playbook_parses() -> None:
    proc = subprocess.run([_tool("ansible-playbook"), "--syntax-check", str(CONFIGURE)], capture_output=True, text=True, env=_env(), cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_task_and_item_passes_the_awx_modules_argument_validation(tmp_path: Path) -> None:
    plays = DataLoader().load_from_file(str(CONFIGURE))
    play = dict(plays[0])
    play["vars_files"] = [str(DEFINITIONS)]
    tasks = []
    for number, task in enumerate(play["tasks"]):
        checked = dict(task)
        # the stand-in secrets below are generated for this run; the messages are what is checked
        checked.update(ignore_errors=True, register=f"__checked_{number}", no_log=False)
        tasks.append(checked)
    results = tmp_path / "results.json"
    registered = ", ".join(f"__checked_{number}" for number in range(len(tasks)))
    tasks.append({"name": "Keep the results", "ansible.builtin.copy": {"content": f"{{{{ [{registered}] | to_json }}}}", "dest": str(results), "mode": "0600"}})
    play["tasks"] = tasks
    playbook = tmp_path / "configure-check.yml"
    playbook.write_text("---\n" + yaml.dump([play], Dumper=_Dumper, sort_keys=False))
    environments = DataLoader().load_from_file(str(DEFINITIONS))["keywarden_awx_environments"]
    stand_ins = {
        "keywarden_awx_vault_passwords": {env: secrets.token_urlsafe(24) for env in environments},
        "keywarden_awx_audit_keys": {env: secrets.token_hex(32) for env in environments},
        "keywarden_awx_backup_identities": {env: "AGE-SECRET-KEY-1" + secrets.token_hex(29).upper() for env in environments},
        "keywarden_awx_push_key": "stand-in " + secrets.token_hex(8),
        "keywarden_awx_push_known_hosts": "git.example.invalid ssh-ed25519 " + secrets.token_hex(8),
        "keywarden_awx_backup_key": "stand-in " + secrets.token_hex(8),
        "keywarden_awx_backup_known_hosts": "backup.example.invalid ssh-ed25519 " + secrets.token_hex(8),
        "keywarden_awx_scm_key": "stand-in " + secrets.token_hex(8),
    }
    extra = tmp_path / "stand-ins.json"
    extra.write_text(json.dumps(stand_ins))
    proc = subprocess.run([_tool("ansible-playbook"), str(playbook), "-e", f"@{extra}"], capture_output=True, text=True, env=_env(), cwd=REPO, check=False)
    assert proc.returncode == 0 and results.exists(), proc.stdout[-4000:] + proc.stderr[-2000:]
    checked: list[dict[str, Any]] = json.loads(results.read_text())
    seen = []
    for task, result in zip(play["tasks"], checked, strict=False):
        module = next(key for key in task if key.startswith("awx.awx."))
        items = result.get("results") or [result]
        assert items, f"{task['name']}: no item ran"
        for item in items:
            message = str(item.get("msg", ""))
            assert item.get("failed") and "trying to connect to https://127.0.0.1:" in message and "/api/v2/" in message, f"{task['name']}: {message}"
            seen.append(module)
    assert set(seen) == {
        "awx.awx.credential_type",
        "awx.awx.credential",
        "awx.awx.execution_environment",
        "awx.awx.project",
        "awx.awx.inventory",
        "awx.awx.inventory_source",
        "awx.awx.notification_template",
        "awx.awx.job_template",
        "awx.awx.schedule",
    }
    # every environment: five job templates, four schedules, three credentials of its own
    assert seen.count("awx.awx.job_template") == 5 * len(environments)
    assert seen.count("awx.awx.schedule") == 4 * len(environments)


def test_the_definitions_hold_every_template_schedule_and_credential_issue_11_asks_for() -> None:
    definitions = DataLoader().load_from_file(str(DEFINITIONS))
    templates = {t["name"]: t for t in definitions["keywarden_awx_job_templates"]}
    assert set(templates) == {"deploy", "rotate", "report", "backup", "restore drill"}
    assert {s["template"] for s in definitions["keywarden_awx_schedules"]} >= {"rotate", "report", "backup"}
    for template in templates.values():
        assert (REPO / template["playbook"]).exists(), template["playbook"]
        assert "vault" in template["credentials"] and "audit key" in template["credentials"]
    # the rotation's lease outlives the job's timeout: a lock left by a job AWX stopped is provably stale once it runs out
    assert int(templates["rotate"]["extra_vars"]["keywarden_rotate_lease"]) > int(templates["rotate"]["timeout"])
    assert templates["rotate"]["job_slice_count"] == 1
    assert definitions["keywarden_awx_job_vars"]["keywarden_store_backend"] == "git"
