"""No keywarden play gathers facts: facts carry the run's environment (`ansible_env`), so a vault password given as
KEYWARDEN_VAULT_PASSWORD_<ENV> (the README's way for CI and AWX) would land in ansible-runner's fact cache (0644)
and job events.

The runner test runs site.yml and a rotation as AWX does, through ansible-runner, with the vault password in the
job's environment as its only source, then searches everything the jobs left under the private data directory
(artifacts, job events, stdout, fact cache) for the password: plain, base64 and URL-encoded. One file is ansible-runner's
own record of the job's input, `artifacts/<id>/command` (mode 0600): it holds the whole environment the job was
started with, by design; there the password may appear as the value of its own variable and nowhere else.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import REPO, Workspace, forms

CLIENT = REPO / "scripts" / "secrets" / "vault-password-client"
VARIABLE = "KEYWARDEN_VAULT_PASSWORD_LOCAL"


def plays(path: Path) -> list[dict[str, Any]]:
    return [play for play in yaml.safe_load(path.read_text()) or [] if isinstance(play, dict) and "hosts" in play]


def test_every_play_says_it_gathers_no_facts() -> None:
    gathering = []
    for path in sorted((REPO / "playbooks").glob("*.yml")):
        for play in plays(path):
            if play.get("gather_facts") is not False:
                gathering.append(f"{path.name}: {play.get('name')}")
    assert gathering == []


def test_no_role_gathers_facts_itself() -> None:
    calls = []
    for path in sorted((REPO / "roles").rglob("*.yml")):
        text = path.read_text()
        for module in ("ansible.builtin.setup", "ansible.builtin.gather_facts", "\n  setup:", "\n  gather_facts:"):
            if module in text:
                calls.append(f"{path.relative_to(REPO)}: {module.strip()}")
    assert calls == []


def test_ansible_cfg_gathers_only_when_asked() -> None:
    import configparser  # noqa: PLC0415

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "ansible.cfg")
    assert cfg.get("defaults", "gathering") == "explicit"


# ---- through ansible-runner, as AWX runs a job ---------------------------------------------------------------------
def runner_job(ws: Workspace, playbook: str, data_dir: Path, password: str, *extra: str) -> Any:
    import ansible_runner  # noqa: PLC0415 - only the runner tests need it

    data_dir.mkdir(parents=True, exist_ok=True)
    empty = ws.root / "no-password-files"
    empty.mkdir(mode=0o700, exist_ok=True)
    envvars = {
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        # the environment is the only source the password client finds: no file, no keyring
        VARIABLE: password,
        "KEYWARDEN_VAULT_PASSWORD_DIR": str(empty),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        "KEYWARDEN_AUDIT_LOG": str(ws.audit_log),
        "KEYWARDEN_AUDIT_KEY_FILE": str(ws.audit_key),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    return ansible_runner.run(
        private_data_dir=str(data_dir),
        project_dir=str(REPO),
        playbook=str(REPO / playbook),
        inventory=str(ws.inventory),
        envvars=envvars,
        # AWX keeps the job's input out of the private data dir too
        suppress_env_files=True,
        cmdline=" ".join([f"--vault-id local@{CLIENT}", *extra]),
        verbosity=4,
        quiet=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def jobs(
    make_workspace: Callable[..., Workspace], initialized: Workspace, postgres: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Workspace, Path, str]:
    ws = make_workspace("runner-env-password")
    ws.clone_store(initialized)
    (ws.inventory / "group_vars" / "all" / "postgres.yml").write_text(postgres.vars_file.read_text())
    password = ws.password("local")
    for path in ws.password_dir.iterdir():
        path.unlink()
    data_dir = tmp_path_factory.mktemp("runner-env-password")
    for name, playbook, extra in (("site", "playbooks/site.yml", ()), ("rotate", "playbooks/rotate.yml", ("-e", "keywarden_rotate_only=app_db"))):
        run = runner_job(ws, playbook, data_dir / name, password, *extra)
        assert run.rc == 0, f"{playbook}: " + ws.redact(run.stdout.read()[-4000:]).replace(password, "<vault password>")
    return ws, data_dir, password


def test_the_jobs_used_the_password_from_the_environment(jobs: tuple[Workspace, Path, str]) -> None:
    ws, data_dir, _ = jobs
    assert list(ws.password_dir.iterdir()) == []
    assert sorted(p.name for p in ws.env_dir.iterdir()) == ["app.env", "worker.env"]
    assert len(list(data_dir.glob("*/artifacts/*/job_events/*.json"))) > 20


def test_no_fact_is_cached(jobs: tuple[Workspace, Path, str]) -> None:
    _, data_dir, _ = jobs
    cached = [str(p.relative_to(data_dir)) for p in data_dir.glob("*/artifacts/*/fact_cache/**/*") if p.is_file()]
    assert cached == []


def test_the_password_is_nowhere_in_what_the_jobs_left(jobs: tuple[Workspace, Path, str]) -> None:
    _, data_dir, password = jobs
    encoded = forms(password)
    hits = []
    files = sorted(p for p in data_dir.rglob("*") if p.is_file())
    for path in files:
        text = path.read_text(errors="replace")
        if path.name == "command" and path.parent.parent.name == "artifacts":
            # ansible-runner's record of the job's input: the environment it started the job with, readable by its owner only
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            record = json.loads(text)
            assert record["env"].pop(VARIABLE) == password  # noqa: S105 - compared, never shown: a bool assertion
            text = json.dumps(record)
        hits += [(str(path.relative_to(data_dir)), form) for form, value in encoded.items() if value in text]
    assert len(files) > 20
    assert hits == []
