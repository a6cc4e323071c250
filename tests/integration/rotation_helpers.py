"""Shared helpers of the rotation integration tests (test_rotation_*.py): catalogs, playbook runs with a
fault injected or a kill from outside, and the three places a credential lives (store, consumer .env, the
PostgreSQL server).

Values never reach an assertion: credentials are compared by fingerprint (SHA-256), and a `Creds` shows
only its user and database in a repr, so pytest's assertion introspection cannot print a password.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import yaml
from support import PlaybookResult

REPO = Path(__file__).resolve().parents[2]
CLIENT = REPO / "scripts" / "secrets" / "vault-password-client"
DATABASE = "orders"  # created by scripts/demo/postgres
ROTATE = "playbooks/rotate.yml"
_RECAP_RE = re.compile(r"^localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# ---- catalogs -----------------------------------------------------------------------------------------
def pg_secret(role: str, strategy: str = "alternating_users", consumers: Iterable[tuple[str, str, str]] = (("app", "app", "DB"),)) -> dict[str, Any]:
    """A PostgreSQL catalog entry on the `orders` database; each consumer is (group, service, variable prefix):
    the service's .env gets <prefix>_USER, <prefix>_PASSWORD and <prefix>_NAME."""
    return {
        "kind": "postgresql",
        "description": f"rotation test login {role}",
        "environments": ["local"],
        "target": {"group": "db", "database": DATABASE, "role": role},
        "policy": {"max_age_days": 30, "length": 32, "charset": "alnum", "strategy": strategy},
        "consumers": [
            {"group": group, "service": service, "env": {f"{prefix}_USER": "username", f"{prefix}_PASSWORD": "password", f"{prefix}_NAME": "database"}}
            for group, service, prefix in consumers
        ],
    }


def catalog(secrets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"keywarden_catalog_version": 1, "secrets": secrets}


# ---- workspaces ---------------------------------------------------------------------------------------
def setup_workspace(make_workspace: Any, name: str, catalog_data: dict[str, Any], postgres: Any, groups: tuple[str, ...] = ("db", "app")) -> Any:
    """A conftest Workspace with this catalog and the throwaway server's socket and port in its group_vars."""
    ws = make_workspace(name, groups=groups)
    ws.catalog.write_text("---\n" + yaml.safe_dump(catalog_data, sort_keys=False))
    (ws.inventory / "group_vars" / "all" / "postgres.yml").write_text(postgres.vars_file.read_text())
    return ws


def provisioned(make_workspace: Any, name: str, catalog_data: dict[str, Any], postgres: Any, groups: tuple[str, ...] = ("db", "app")) -> Any:
    """init + provision + deploy (playbooks/site.yml) once: the template that tests clone."""
    ws = setup_workspace(make_workspace, name, catalog_data, postgres, groups)
    ws.set_password("local")
    result = run_playbook(ws, "playbooks/site.yml", "-e", "keywarden_store_create=true")
    assert result.returncode == 0, result.explain()
    return ws


def clone(make_workspace: Any, template: Any, name: str, postgres: Any) -> Any:
    """A fresh workspace with copies of the template's catalog, store, vault password and delivered .env files."""
    groups = tuple(yaml.safe_load((template.inventory / "hosts.yml").read_text())["all"]["children"])
    ws = setup_workspace(make_workspace, name, yaml.safe_load(template.catalog.read_text()), postgres, groups)
    ws.clone_store(template, env_dir=True)
    return ws


# ---- running ansible-playbook -------------------------------------------------------------------------
# one playbook runner for every test: support.Workspace.run (crash injection and outside kills included)
Run = PlaybookResult


def run_playbook(
    ws: Any,
    playbook: str,
    *extra: str,
    crash: str | None = None,
    kill_on: str | None = None,
    timeout: float = 300,
    on_start: Callable[[int], None] | None = None,
) -> Run:
    """ansible-playbook against the workspace: Workspace.run, optionally crashed (``crash``), killed (``kill_on``), or
    handed to ``on_start`` (its process group id: a fault injected elsewhere, e.g. by a test server, may kill it)."""
    return ws.run(playbook, *extra, crash=crash, kill_on=kill_on, timeout=timeout, on_start=on_start)


def rotate(
    ws: Any, *extra: str, only: str | None = None, crash: str | None = None, kill_on: str | None = None, on_start: Callable[[int], None] | None = None
) -> Run:
    return run_playbook(ws, ROTATE, *(("-e", f"keywarden_rotate_only={only}") if only else ()), *extra, crash=crash, kill_on=kill_on, on_start=on_start)


# ---- credentials: store, .env, server -----------------------------------------------------------------
@dataclass(frozen=True)
class Creds:
    """A login. The password is left out of repr and of comparisons: compare ``fingerprint``s."""

    user: str
    password: str = field(repr=False, compare=False)
    database: str = DATABASE

    @property
    def fingerprint(self) -> str:
        return digest(f"{self.user}\0{self.password}\0{self.database}")


def stored(ws: Any, name: str) -> dict[str, Any]:
    """The store entry of one secret (read it, never print it)."""
    return ws.store().read()["secrets"][name]


def store_creds(ws: Any, name: str, stage: str = "current") -> Creds | None:
    staged = stored(ws, name).get(stage)
    if not staged:
        return None
    return Creds(staged["fields"]["username"], staged["fields"]["password"])


def read_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key] = value
    return values


def env_creds(ws: Any, service: str = "app", prefix: str = "DB") -> Creds:
    """What the consumer holds: <prefix>_USER/_PASSWORD/_NAME of <env_dir>/<service>.env, read afresh."""
    values = read_env(ws.env_dir / f"{service}.env")
    return Creds(values[f"{prefix}_USER"], values[f"{prefix}_PASSWORD"], values[f"{prefix}_NAME"])


def login(port: int, creds: Creds, timeout: int = 5) -> str | None:
    """The role a TCP login (scram-sha-256) with these credentials gets, or None when it is refused."""
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=port, user=creds.user, password=creds.password, dbname=creds.database, connect_timeout=timeout)
    except psycopg2.OperationalError:
        return None
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_user")
            return str(cur.fetchone()[0])
    finally:
        conn.close()


def connects(port: int, creds: Creds, timeout: int = 5) -> bool:
    """Whether the server accepts a TCP login with these credentials (a bare connect: the load client's probe)."""
    try:
        psycopg2.connect(host="127.0.0.1", port=port, user=creds.user, password=creds.password, dbname=creds.database, connect_timeout=timeout).close()
    except psycopg2.OperationalError:
        return False
    return True


def admin_query(postgres: Any, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """A statement as the administrator through the server's socket (trust), committed; the rows it returns."""
    conn = psycopg2.connect(host=postgres.socket_dir, port=postgres.port, user="postgres", dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def locked(ws: Any) -> bool:
    """Whether the store holds a rotation lock (the run's lease record)."""
    return bool(ws.store().read().get("rotation_lock"))


@dataclass(frozen=True)
class State:
    """One secret everywhere at one moment: versions, fingerprints and which logins the server accepts (no values)."""

    version: int
    previous_version: int | None
    pending_step: str | None
    current: Creds
    previous: Creds | None
    env: dict[str, str]  # "<service>.env <prefix>" -> fingerprint of the credentials it holds
    current_login: str | None
    previous_login: str | None
    lock: bool

    def consumers_hold(self, creds: Creds) -> bool:
        return bool(self.env) and set(self.env.values()) == {creds.fingerprint}


def observe(ws: Any, port: int, name: str, consumers: Iterable[tuple[str, str]] = (("app", "DB"),)) -> State:
    """The state of secret ``name``: its store entry, what each (service, prefix) consumer holds, what logs in."""
    entry = stored(ws, name)
    current = store_creds(ws, name)
    previous = store_creds(ws, name, "previous")
    assert current is not None
    return State(
        version=entry["current"]["version"],
        previous_version=(entry.get("previous") or {}).get("version"),
        pending_step=(entry.get("pending") or {}).get("step"),
        current=current,
        previous=previous,
        env={f"{service}.env {prefix}": env_creds(ws, service, prefix).fingerprint for service, prefix in consumers},
        current_login=login(port, current),
        previous_login=login(port, previous) if previous else None,
        lock=locked(ws),
    )


# ---- keywarden.secrets.target, run directly ------------------------------------------------------------------
def target_play(ws: Any, phase: str, file: str, **variables: Any) -> Path:
    """A play running keywarden.secrets.target on the db host (with these host variables); what it registered
    (names, counts, messages: no value) goes to <workspace>/outcome.json for target_outcome."""
    keep = "['changed', 'changed_names', 'provisioned', 'tested', 'failures', 'msg']"
    tasks = [
        {"name": "target", "keywarden.secrets.target": {"phase": phase}, "register": "out", "ignore_errors": True, "vars": variables},
        {
            "name": "outcome",
            "ansible.builtin.copy": {
                "content": f"{{{{ out | dict2items | selectattr('key', 'in', {keep}) | items2dict | to_json }}}}",
                "dest": str(ws.root / "outcome.json"),
                "mode": "0600",
            },
            "check_mode": False,
        },
    ]
    return ws.write_playbook(file, [{"hosts": "db", "gather_facts": False, "tasks": tasks}])


def target_outcome(ws: Any, result: Any) -> dict[str, Any]:
    path = ws.root / "outcome.json"
    assert path.exists(), result.explain()
    outcome = json.loads(path.read_text())
    path.unlink()
    return outcome


# ---- crashes -------------------------------------------------------------------------------------------------
def assert_crashed_as_meant(crash: Run, point: str | None, kill_on: str | None) -> None:
    """The crash happened where it was meant to: the run died before its recap."""
    if kill_on:
        assert crash.killed, f"the run never printed {kill_on!r}\n{crash.explain()}"
    elif point and point.startswith("store-"):
        # the store writer is the worker: ansible-playbook stops the whole run when it dies
        assert crash.returncode != 0 and crash.says("A worker was found in a dead state"), crash.explain()
    else:
        assert crash.returncode == -9, f"{point} did not kill the run\n{crash.explain()}"
    assert not crash.recap(), f"the run went on after the crash\n{crash.explain()}"
