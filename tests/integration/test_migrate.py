"""scripts/secrets/migrate: dry run (masked diff, nothing changed), --apply (store + catalog + rewrite), clean re-scan,
originals recoverable from the store, idempotent rerun, crash between store write and rewrite, bad input.

Credentials are generated at test time; tests compare SHA-256 digests and never show a value.
"""

from __future__ import annotations

import os
import secrets
import stat
import string
import subprocess
import sys
from pathlib import Path

import yaml
from support import REPO, Workspace, digest

MIGRATE = REPO / "scripts" / "secrets" / "migrate"
SCAN = REPO / "scripts" / "audit" / "scan-secrets"
LOOKUP = "{{ lookup('keywarden.secrets.secret', 'legacy_db_password.value') }}"

from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import load_catalog  # noqa: E402


def _value() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(20)) + "a1B2"


class Legacy:
    """A repository with credentials hardcoded in compose, .env, ini, properties and group_vars."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.values = {name: _value() for name in ("db", "token", "url", "ini", "props")}
        v = self.values
        files = {
            "docker-compose.yml": (
                "services:\n  app:\n    image: example/app\n    environment:\n"
                f"      DB_PASSWORD: {v['db']}\n"
                "  worker:\n    image: example/worker\n    environment:\n"
                f"      - API_TOKEN={v['token']}\n"
            ),
            ".env": f"# app settings\nDB_PASSWORD={v['db']}\nDATABASE_URL=postgres://app:{v['url']}@db:5432/orders\nLOG_LEVEL=info\n",
            "app.ini": f"[database]\nhost = db\npassword = {v['ini']}\n",
            "app.properties": f"spring.datasource.url=jdbc:postgresql://db/orders\nspring.datasource.password={v['props']}\n",
            "group_vars/all/main.yml": f"---\ndb_password: {v['db']}\napi:\n  token: '{v['token']}'\nlog_level: info\n",
        }
        for rel, text in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        os.chmod(root / "app.ini", 0o640)
        self.originals = {rel: digest(text) for rel, text in files.items()}

    def state(self) -> dict[str, tuple[str, str]]:
        return {str(p.relative_to(self.root)): (f"{stat.S_IMODE(p.stat().st_mode):04o}", digest(p.read_bytes())) for p in self.root.rglob("*") if p.is_file()}

    def leaks(self, text: str) -> bool:
        return any(value in text for value in self.values.values())


def _run(ws: Workspace, repo: Path, *args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "KEYWARDEN_"))}
    env.update(
        KEYWARDEN_VAULT_PASSWORD_DIR=str(ws.password_dir),
        KEYWARDEN_AUDIT_LOG=str(ws.audit_log),
        KEYWARDEN_AUDIT_KEY_FILE=str(ws.audit_key),
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
        **(env_extra or {}),
    )
    cmd = [sys.executable, str(MIGRATE), "-e", ws.environment, "--group", "app", "--service", "legacy"]
    cmd += ["--catalog", str(ws.catalog), "--store-dir", str(ws.store_dir), *args]
    return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=120, check=False)


def _setup(workspace) -> tuple[Workspace, Legacy]:  # noqa: ANN001 - the conftest factory
    ws = workspace()
    ws.set_password(ws.environment)
    return ws, Legacy(ws.root / "legacy")


def _stored_digests(ws: Workspace) -> dict[str, str]:
    return {name: digest(entry["current"]["fields"]["value"]) for name, entry in ws.store().read()["secrets"].items() if entry["kind"] == "generic"}


def test_dry_run_apply_rescan_rerun(workspace) -> None:  # noqa: ANN001
    ws, legacy = _setup(workspace)
    before = legacy.state()
    catalog_before = digest(ws.catalog.read_bytes())

    dry = _run(ws, legacy.root, ".")
    assert dry.returncode == 0, dry.stderr
    assert not legacy.leaks(dry.stdout + dry.stderr), "a value reached the dry-run output"
    assert legacy.state() == before and digest(ws.catalog.read_bytes()) == catalog_before
    assert not ws.store().exists()
    assert "-DB_PASSWORD=********" in dry.stdout and "+      DB_PASSWORD: ${DB_PASSWORD:?set by keywarden}" in dry.stdout
    assert f'+db_password: "{LOOKUP}"' in dry.stdout
    assert "+  legacy_db_password:" in dry.stdout  # the catalog diff

    applied = _run(ws, legacy.root, "--apply", ".")
    assert applied.returncode == 0, applied.stderr
    assert not legacy.leaks(applied.stdout + applied.stderr + ws.catalog.read_text()), "a value reached the output or the catalog"

    # re-scan is clean; no file holds a value any more; modes kept
    scan = subprocess.run([sys.executable, str(SCAN), str(legacy.root)], capture_output=True, text=True, timeout=60, check=False)
    assert scan.returncode == 0, scan.stdout + scan.stderr
    assert not any(legacy.leaks(p.read_text()) for p in legacy.root.rglob("*") if p.is_file()), "a value is still in a source file"
    after = legacy.state()
    assert {rel: mode for rel, (mode, _) in after.items()} == {rel: mode for rel, (mode, _) in before.items()}

    # the references
    compose = yaml.safe_load((legacy.root / "docker-compose.yml").read_text())
    compose_ref = "${DB_PASSWORD:?set by keywarden}"
    assert compose["services"]["app"]["environment"]["DB_PASSWORD"] == compose_ref
    assert compose["services"]["worker"]["environment"] == ["API_TOKEN=${API_TOKEN:?set by keywarden}"]
    group_vars = yaml.safe_load((legacy.root / "group_vars/all/main.yml").read_text())
    assert group_vars["db_password"] == LOOKUP
    assert group_vars["api"]["token"] == LOOKUP.replace("db_password", "api_token").replace("'", '"')
    env_lines = (legacy.root / ".env").read_text().splitlines()
    assert "LOG_LEVEL=info" in env_lines and not any(line.startswith("DB_PASSWORD=") for line in env_lines)
    assert "DATABASE_URL=postgres://app:${DATABASE_URL_PASSWORD}@db:5432/orders" in env_lines
    assert "password = ${DATABASE_PASSWORD}" in (legacy.root / "app.ini").read_text()
    assert "spring.datasource.password=${SPRING_DATASOURCE_PASSWORD}" in (legacy.root / "app.properties").read_text()

    # every value is in the store, once (the compose/.env/group_vars copies of one value are one secret)
    stored = _stored_digests(ws)
    assert sorted(stored.values()) == sorted(digest(v) for v in legacy.values.values())
    expected = {"legacy_db_password", "legacy_api_token", "legacy_database_url_password", "legacy_database_password", "legacy_spring_datasource_password"}
    assert set(stored) == expected
    assert stored["legacy_db_password"] == digest(legacy.values["db"])

    # the catalog validates and lists them for the service
    catalog = load_catalog(str(ws.catalog))
    assert expected <= set(catalog["secrets"])
    assert catalog["secrets"]["legacy_db_password"]["consumers"] == [{"group": "app", "service": "legacy", "env": {"DB_PASSWORD": "value"}}]
    assert catalog["secrets"]["legacy_api_token"]["consumers"][0]["env"] == {"API_TOKEN": "value", "TOKEN": "value"}
    assert all(catalog["secrets"][name]["environments"] == [ws.environment] for name in expected)
    assert "app_db" in catalog["secrets"]  # the existing entries stay

    # originals recoverable from the store
    data = ws.store().read()
    backups = {Path(b["path"]).relative_to(legacy.root.resolve()).as_posix(): b for b in data["migration_backups"]}
    assert {rel: digest(b["original_text"]) for rel, b in backups.items()} == legacy.originals
    assert all(b["sha256"] == legacy.originals[rel] for rel, b in backups.items())
    assert ws.audit_log.exists() and ws.audit_log.stat().st_size > 0

    # a rerun finds nothing and changes nothing
    revision = data["revision"]
    catalog_after = digest(ws.catalog.read_bytes())
    again = _run(ws, legacy.root, "--apply", ".")
    assert again.returncode == 1, again.stderr
    assert "nothing to migrate" in again.stderr
    assert legacy.state() == after and digest(ws.catalog.read_bytes()) == catalog_after
    assert ws.store().read()["revision"] == revision


def test_crash_after_store_write_resumes(workspace, crash_env) -> None:  # noqa: ANN001
    ws, legacy = _setup(workspace)
    before = legacy.state()
    crashed = _run(ws, legacy.root, "--apply", ".", env_extra=crash_env("store-after-rename"))
    assert crashed.returncode == -9, crashed.stderr
    # the store holds the values and the originals; catalog and sources are untouched
    assert sorted(_stored_digests(ws).values()) == sorted(digest(v) for v in legacy.values.values())
    assert len(ws.store().read()["migration_backups"]) == len(before)
    assert legacy.state() == before

    resumed = _run(ws, legacy.root, "--apply", ".")
    assert resumed.returncode == 0, resumed.stderr
    assert "0 new in the store" in resumed.stderr
    data = ws.store().read()
    assert len(data["secrets"]) == len(legacy.values) and len(data["migration_backups"]) == len(before)
    assert set(_stored_digests(ws)) <= set(load_catalog(str(ws.catalog))["secrets"])
    scan = subprocess.run([sys.executable, str(SCAN), str(legacy.root)], capture_output=True, text=True, timeout=60, check=False)
    assert scan.returncode == 0, scan.stdout + scan.stderr


def test_bad_input_changes_nothing(workspace) -> None:  # noqa: ANN001
    ws, legacy = _setup(workspace)
    (legacy.root / "settings.py").write_text(f"API_TOKEN = '{legacy.values['token']}'\n")
    before = legacy.state()
    catalog_before = digest(ws.catalog.read_bytes())
    cases = [
        (("--apply", "settings.py"), "migrate it by hand"),
        (("--apply", "missing.env"), "no such file"),
        (("--apply", "--service", "Bad Name", "."), "--service"),
    ]
    for args, fragment in cases:
        result = _run(ws, legacy.root, *args)
        assert result.returncode == 2, args
        assert len(result.stderr.strip().splitlines()) == 1 and fragment in result.stderr, result.stderr
    (ws.password_dir / ws.environment).unlink()
    result = _run(ws, legacy.root, "--apply", ".")
    assert result.returncode == 2 and "no vault password" in result.stderr, result.stderr
    assert not legacy.leaks(result.stdout + result.stderr)
    assert legacy.state() == before and digest(ws.catalog.read_bytes()) == catalog_before
    assert not ws.store().exists()
