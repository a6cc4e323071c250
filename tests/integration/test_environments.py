"""Environments end to end, through real ansible-playbook runs on temp inventories.

One environment's store or password never serves another; init and deploy are idempotent; deploy delivers
exactly the consumed variables, mode 0600; site.yml against a throwaway PostgreSQL yields .env credentials
that log in over TCP (scram-sha-256).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import get_field

APP_VARS = {"DB_NAME", "DB_PASSWORD", "DB_USER", "PAYMENTS_API_KEY", "REDIS_PASSWORD"}
DB_VARS = {"DB_NAME", "DB_PASSWORD", "DB_USER"}
# .env variable -> (secret, field) in the store
SOURCES = {
    "DB_USER": ("app_db", "username"),
    "DB_PASSWORD": ("app_db", "password"),
    "REDIS_PASSWORD": ("app_redis", "password"),
    "PAYMENTS_API_KEY": ("payments_api_key", "value"),
}


def sha(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def read_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name] = value
    return values


def _refused(result: Any, *fragments: str) -> None:
    assert result.returncode != 0, result.explain()
    assert result.error_line("[ERROR]", *fragments) is not None, result.explain()


# ---- one environment's store and password never serve another ----------------------------------------
@pytest.fixture(scope="module")
def development_store(make_workspace: Callable[..., Any]) -> Any:
    dev = make_workspace("development", environment="development")
    dev.set_password("development")
    result = dev.run("playbooks/init.yml", "-e", "keywarden_store_create=true")
    assert result.returncode == 0, result.explain()
    assert (dev.store_dir / "secrets.vault").read_bytes().startswith(b"$ANSIBLE_VAULT;1.2;AES256;development\n")
    return dev


@pytest.mark.parametrize("playbook", ["playbooks/init.yml", "playbooks/deploy.yml"])
def test_development_store_used_as_production_store_is_refused(workspace: Callable[..., Any], development_store: Any, playbook: str) -> None:
    prod = workspace("production", environment="production")
    prod.clone_store(development_store)  # the development store, placed where production's should be
    prod.set_password("production")
    before = prod.snapshot()
    result = prod.run(playbook, vault_ids=("development", "production"))
    _refused(result, "encrypted under vault ID 'development', not 'production'", "refusing")
    after = prod.snapshot()
    # deploy may create the (empty) .env directory before its first lookup; no file may appear in it
    delivered = sorted(prod.env_dir.glob("*.env")) if prod.env_dir.exists() else []
    assert {k: v for k, v in after.items() if not k.startswith(str(prod.env_dir))} == before
    assert delivered == []
    leaked = prod.leaks(result.output)
    assert not leaked


@pytest.fixture(scope="module")
def production_store(make_workspace: Callable[..., Any]) -> Any:
    prod = make_workspace("production", environment="production")
    prod.set_password("production")
    result = prod.run("playbooks/init.yml", "-e", "keywarden_store_create=true")
    assert result.returncode == 0, result.explain()
    return prod


@pytest.mark.parametrize("how", ["only-the-development-vault-id", "development-password-as-production"])
def test_development_password_cannot_open_production(workspace: Callable[..., Any], production_store: Any, how: str) -> None:
    prod = workspace("production", environment="production")
    prod.clone_store(production_store)
    dev_password = prod.set_password("development")
    before = prod.snapshot()
    if how == "only-the-development-vault-id":
        result = prod.run("playbooks/init.yml", vault_ids=("development",))
        _refused(result, "no vault password for vault ID 'production' (passwords given for: development)", "--vault-id production@")
    else:
        prod.set_password("production", dev_password)
        result = prod.run("playbooks/init.yml", vault_ids=("production",))
        _refused(result, "cannot be decrypted with the vault password for 'production'")
    after = prod.snapshot()
    assert after == before


# ---- init --------------------------------------------------------------------------------------------
def test_init_twice_changes_nothing_the_second_time(workspace: Callable[..., Any]) -> None:
    ws = workspace()
    ws.set_password("local")
    first = ws.run("playbooks/init.yml", "-e", "keywarden_store_create=true")
    assert first.returncode == 0, first.explain()
    assert first.recap()["changed"] == 1
    store_file = ws.store_dir / "secrets.vault"
    assert stat.S_IMODE(store_file.stat().st_mode) == 0o600
    assert store_file.read_bytes().startswith(b"$ANSIBLE_VAULT;1.2;AES256;local\n")
    before = ws.snapshot()

    second = ws.run("playbooks/init.yml")
    assert second.returncode == 0, second.explain()
    assert second.recap() == {"ok": second.recap()["ok"], "changed": 0, "unreachable": 0, "failed": 0}
    after = ws.snapshot()
    assert after == before
    data = ws.store().read()
    assert data["revision"] == 1
    names = sorted(data["secrets"])
    assert names == ["app_db", "app_redis", "payments_api_key"]
    assert ws.store().versions() == []
    leaked = ws.leaks(first.output + second.output)
    assert not leaked


def test_init_check_mode_writes_nothing(workspace: Callable[..., Any]) -> None:
    ws = workspace()
    ws.set_password("local")
    result = ws.run("playbooks/init.yml", "--check", "-e", "keywarden_store_create=true")
    assert result.returncode == 0, result.explain()
    assert result.recap()["changed"] == 1
    assert not (ws.store_dir / "secrets.vault").exists()


# ---- deploy ------------------------------------------------------------------------------------------
def _assert_env_file(ws: Any, name: str, expected: set[str]) -> None:
    path = ws.env_dir / f"{name}.env"
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    values = read_env(path)
    names = set(values)
    assert names == expected
    assert values["DB_NAME"] == "orders"  # not secret: the catalog's target.database
    data = ws.store().read()
    got = {var: sha(values[var]) for var in sorted(expected & set(SOURCES))}
    wanted = {var: sha(get_field(data, *SOURCES[var])) for var in sorted(expected & set(SOURCES))}
    assert got == wanted


def test_deploy_renders_env_files_0600_with_exactly_the_consumed_variables(deployed_template: Any) -> None:
    ws, result = deployed_template
    assert result.recap()["failed"] == 0
    assert sorted(p.name for p in ws.env_dir.iterdir()) == ["app.env", "worker.env"]
    assert stat.S_IMODE(ws.env_dir.stat().st_mode) == 0o750
    _assert_env_file(ws, "app", APP_VARS)
    _assert_env_file(ws, "worker", DB_VARS)
    assert "TASK [keywarden_env : Deliver this host's .env files]" in result.output
    assert f"{ws.env_dir}/app.env (" in result.output and f"{ws.env_dir}/worker.env (" in result.output
    leaked = ws.leaks(result.output)
    assert not leaked


def test_deploy_least_privilege_worker_only_host(workspace: Callable[..., Any], initialized: Any) -> None:
    ws = workspace("worker", groups=("worker",))
    ws.clone_store(initialized)
    result = ws.run("playbooks/deploy.yml")
    assert result.returncode == 0, result.explain()
    assert sorted(p.name for p in ws.env_dir.iterdir()) == ["worker.env"]
    _assert_env_file(ws, "worker", DB_VARS)


# ---- everything, against a real PostgreSQL -----------------------------------------------------------
def _login(port: int, env: dict[str, str], password: str | None = None) -> tuple[str, str, bool]:
    """(current_user, current_database, member of the group role `app`) of a TCP login with the .env's credentials."""
    conn = psycopg2.connect(
        host="127.0.0.1",
        port=port,
        dbname=env["DB_NAME"],
        user=env["DB_USER"],
        password=env["DB_PASSWORD"] if password is None else password,
        connect_timeout=5,
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_user, current_database(), pg_has_role(current_user, 'app', 'MEMBER')")
            user, database, member = cur.fetchone()
    finally:
        conn.close()
    return user, database, member


def test_site_against_postgresql(workspace: Callable[..., Any], postgres: Any) -> None:
    ws = workspace("site")
    ws.set_password("local")
    first = ws.run("playbooks/site.yml", "-e", f"@{postgres.vars_file}", "-e", "keywarden_store_create=true")
    assert first.returncode == 0, first.explain()
    leaked = ws.leaks(first.output)
    assert not leaked

    for service, expected in (("app", APP_VARS), ("worker", DB_VARS)):
        _assert_env_file(ws, service, expected)
        env = read_env(ws.env_dir / f"{service}.env")
        # alternating_users: the login is <role>_a or <role>_b, a member of the NOLOGIN group role <role>
        user = env["DB_USER"]
        assert user in ("app_a", "app_b")
        login = _login(postgres.port, env)  # a failed assert on the call would print its arguments: the .env values
        assert login == (user, "orders", True)
    # TCP wants the password: the login above proves the delivered one
    with pytest.raises(psycopg2.OperationalError) as caught:
        _login(postgres.port, read_env(ws.env_dir / "app.env"), password=secrets.token_urlsafe(24))
    assert "password authentication failed" in str(caught.value)

    # the second run (init, provision and deploy again) changes nothing: store, .env files and logins stay
    before = ws.snapshot()
    second = ws.run("playbooks/site.yml", "-e", f"@{postgres.vars_file}")
    assert second.returncode == 0, second.explain()
    assert second.recap()["changed"] == 0
    after = ws.snapshot()
    assert after == before
    env = read_env(ws.env_dir / "app.env")
    user, login = env["DB_USER"], _login(postgres.port, env)
    assert login == (user, "orders", True)
