"""Delivery to docker compose consumers, on a real Docker engine with the repository's docker-compose.yml.

Needs a running Docker engine, the locally built image localhost/keywarden-app:bookworm and a compose
CLI (`make test` provides all three). Values are compared as sha256 hashes only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import Store, VaultSecret

REPO = Path(__file__).resolve().parents[2]

COMPOSE = shutil.which("docker-compose")
APP_VARS = {"DB_NAME", "DB_PASSWORD", "DB_USER", "PAYMENTS_API_KEY", "REDIS_PASSWORD"}
WORKER_VARS = {"DB_NAME", "DB_PASSWORD", "DB_USER"}
ENVIRONMENT = "development"


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    assert COMPOSE, "docker-compose is not installed: make test installs it (scripts/dev/bootstrap test)"
    assert subprocess.run(["docker", "image", "inspect", "localhost/keywarden-app:bookworm"], capture_output=True, check=False).returncode == 0, (
        "image localhost/keywarden-app:bookworm missing: run scripts/ci/build-images"
    )
    base = tmp_path_factory.mktemp("compose")
    project = base / f"kwcompose{os.getpid()}"
    project.mkdir()
    shutil.copy(REPO / "docker-compose.yml", project / "docker-compose.yml")
    (base / "pass").mkdir(mode=0o700)
    password_file = base / "pass" / ENVIRONMENT
    password_file.write_text(os.urandom(24).hex() + "\n")
    password_file.chmod(0o600)
    inventory = base / "inventory"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(
        "---\nall:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
        '      ansible_python_interpreter: "{{ ansible_playbook_python }}"\n'
        "  children:\n    app:\n      hosts:\n        localhost:\n    worker:\n      hosts:\n        localhost:\n"
    )
    (inventory / "group_vars" / "all" / "main.yml").write_text(
        "---\n"
        f"keywarden_environment: {ENVIRONMENT}\n"
        f"keywarden_store_dir: {base / 'store'}\n"
        f"keywarden_catalog_path: {REPO / 'config' / 'secrets' / 'catalog.yml'}\n"
        f"keywarden_env_dir: {base / 'srv'}\n"
        f"keywarden_env_compose_project_dir: {project}\n"
        "keywarden_env_compose_command: docker-compose\n"
    )
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "KEYWARDEN_VAULT_PASSWORD_DIR": str(base / "pass"),
        "KEYWARDEN_AUDIT_LOG": str(base / "audit" / "audit.log"),
        "KEYWARDEN_AUDIT_KEY_FILE": str(base / "audit" / "audit.key"),
    }

    def playbook(name: str, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                "ansible-playbook",
                "-i",
                str(inventory),
                str(REPO / "playbooks" / name),
                "--vault-id",
                f"{ENVIRONMENT}@{REPO}/scripts/secrets/vault-password-client",
                *extra,
            ],
            env=env,
            check=False,
            capture_output=True,
            text=True,
            cwd=REPO,
        )

    def compose(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [COMPOSE, "--project-directory", str(project), *args],
            env={**env, "KEYWARDEN_ENV_DIR": str(base / "srv")},
            capture_output=True,
            text=True,
            check=False,
        )

    store = Store(str(base / "store"), ENVIRONMENT, [(ENVIRONMENT, VaultSecret(password_file.read_text().strip().encode()))])
    init = playbook("init.yml", "-e", "keywarden_store_create=true")
    assert init.returncode == 0, init.stdout[-2000:]
    yield {"playbook": playbook, "compose": compose, "store": store, "env_dir": base / "srv", "project": project}
    compose("down", "--remove-orphans", "--timeout", "1")


def container_env(compose, service: str) -> tuple[str, dict[str, str]]:
    ids = compose("ps", "-q", service).stdout.split()
    assert len(ids) == 1, f"expected one running {service} container, got {len(ids)}"
    info = json.loads(subprocess.run(["docker", "inspect", ids[0]], capture_output=True, text=True, check=True).stdout)[0]
    assert info["State"]["Running"], f"{service} container is not running"
    return ids[0], dict(item.split("=", 1) for item in info["Config"]["Env"])


def test_deploy_starts_compose_consumers_with_exactly_their_variables(stack):
    run = stack["playbook"]("deploy.yml")
    assert run.returncode == 0, run.stdout[-2000:]
    data = stack["store"].read()
    _, app = container_env(stack["compose"], "app")
    _, worker = container_env(stack["compose"], "worker")
    assert APP_VARS <= set(app)
    assert WORKER_VARS <= set(worker)
    assert not ({"REDIS_PASSWORD", "PAYMENTS_API_KEY"} & set(worker)), "the worker received variables it does not consume"
    stored = data["secrets"]["app_db"]["current"]["fields"]["password"]
    assert sha(app["DB_PASSWORD"]) == sha(stored)
    assert sha(worker["DB_PASSWORD"]) == sha(stored)


def test_unchanged_env_leaves_containers_alone_and_a_change_recreates_them(stack):
    first = stack["playbook"]("deploy.yml")
    assert first.returncode == 0, first.stdout[-2000:]
    app_id, _ = container_env(stack["compose"], "app")
    again = stack["playbook"]("deploy.yml")
    assert again.returncode == 0 and "changed=0" in again.stdout, "a deploy with nothing new changed something"
    assert container_env(stack["compose"], "app")[0] == app_id, "an unchanged .env restarted the app"

    with stack["store"].update() as data:
        data["secrets"]["payments_api_key"]["current"]["fields"]["value"] = os.urandom(24).hex()
    new_value = stack["store"].read()["secrets"]["payments_api_key"]["current"]["fields"]["value"]
    changed = stack["playbook"]("deploy.yml")
    assert changed.returncode == 0, changed.stdout[-2000:]
    new_id, app = container_env(stack["compose"], "app")
    assert new_id != app_id, "the app was not recreated after its .env changed"
    assert sha(app["PAYMENTS_API_KEY"]) == sha(new_value)


def test_missing_variable_stops_the_consumer_with_a_message(stack):
    env_file = stack["env_dir"] / "app.env"
    kept = env_file.read_text()
    try:
        env_file.write_text("".join(line for line in kept.splitlines(keepends=True) if not line.startswith("REDIS_PASSWORD=")))
        run = stack["compose"]("run", "--rm", "--no-deps", "-T", "app")
        assert run.returncode != 0, "the app started without REDIS_PASSWORD"
        assert "REDIS_PASSWORD: missing from app.env: run playbooks/deploy.yml" in run.stderr + run.stdout
    finally:
        env_file.write_text(kept)


def test_compose_refuses_to_run_without_the_env_directory(stack):
    config = subprocess.run(
        [COMPOSE, "--project-directory", str(stack["project"]), "config"], capture_output=True, text=True, check=False, env={"PATH": os.environ["PATH"]}
    )
    assert config.returncode != 0
    assert "set KEYWARDEN_ENV_DIR" in config.stderr
