"""Fixtures shared by the test suites: workspaces (an isolated keywarden setup each), an initialized and a delivered
store, throwaway servers, crash injection. What they are built from lives in support.py."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import (
    FAULTS,
    MARIADB_DECOY_DATABASE,
    MARIADB_SCRIPT,
    MARIADB_SECRETS,
    PG_SCRIPT,
    MariaDB,
    PlaybookResult,
    Postgres,
    Redis,
    Workspace,
    start_redis,
    stop_redis,
)


@pytest.fixture
def crash_env(tmp_path: Path) -> Callable[[str], dict[str, str]]:
    """Environment variables that make a child process die at a point of its n-th store write or audit append:
    crash_env("store-after-rename:1"). The product has no fault hooks: tests/faults/sitecustomize.py wraps the OS calls."""

    def make(spec: str) -> dict[str, str]:
        counter = tmp_path / f"crash-counter-{secrets.token_hex(4)}"
        return {"KEYWARDEN_TEST_CRASH": spec if ":" in spec else f"{spec}:1", "KEYWARDEN_TEST_CRASH_COUNTER": str(counter), "PYTHONPATH": str(FAULTS)}

    return make


@pytest.fixture
def workspace(tmp_path: Path) -> Callable[..., Workspace]:
    """Factory: workspace(name="ws", environment="local", groups=ALL_GROUPS, store_dir=None)."""

    def make(name: str = "ws", **kwargs: Any) -> Workspace:
        return Workspace(tmp_path / name, **kwargs)

    return make


@pytest.fixture(scope="session")
def make_workspace(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Workspace]:
    """Factory for workspaces shared by several tests (module or session scoped fixtures)."""

    def make(name: str = "shared", **kwargs: Any) -> Workspace:
        return Workspace(tmp_path_factory.mktemp(name), **kwargs)

    return make


@pytest.fixture(scope="session")
def initialized(make_workspace: Callable[..., Workspace]) -> Workspace:
    """A local store made once by playbooks/init.yml; tests take copies of it (see `ready`)."""
    ws = make_workspace("initialized")
    ws.set_password("local")
    result = ws.run("playbooks/init.yml", "-e", "keywarden_store_create=true")
    assert result.returncode == 0, result.explain()
    return ws


@pytest.fixture
def ready(workspace: Callable[..., Workspace], initialized: Workspace) -> Workspace:
    """A fresh workspace holding a copy of the initialized local store and its vault password."""
    ws = workspace("ready")
    ws.clone_store(initialized)
    return ws


@pytest.fixture(scope="session")
def deployed_template(make_workspace: Callable[..., Workspace], initialized: Workspace) -> tuple[Workspace, PlaybookResult]:
    """The initialized store delivered once by playbooks/deploy.yml; the run's result is kept for the deploy tests."""
    ws = make_workspace("deployed")
    ws.clone_store(initialized)
    result = ws.run("playbooks/deploy.yml")
    assert result.returncode == 0, result.explain()
    return ws, result


@pytest.fixture
def deployed(workspace: Callable[..., Workspace], deployed_template: tuple[Workspace, PlaybookResult]) -> Workspace:
    """A fresh workspace holding copies of an initialized store and of the .env files delivered from it."""
    ws = workspace("deployed")
    ws.clone_store(deployed_template[0], env_dir=True)
    return ws


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL (scripts/demo/postgres): local socket trusts, TCP 127.0.0.1 wants scram-sha-256."""
    if not glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"):
        pytest.skip("PostgreSQL server binaries are not installed (/usr/lib/postgresql/*/bin)")
    # under /tmp and traversable: as root, the script runs the server as the postgres user
    root = Path(tempfile.mkdtemp(prefix="keywarden-pg-", dir="/tmp"))
    os.chmod(root, 0o755)  # noqa: S103 - the postgres user must traverse it; nothing secret lives here
    try:
        started = subprocess.run([str(PG_SCRIPT), "start", str(root)], capture_output=True, text=True, timeout=180, check=False)
        assert started.returncode == 0, f"scripts/demo/postgres start failed:\n{started.stdout}\n{started.stderr}"
        yield Postgres(root)
    finally:
        subprocess.run([str(PG_SCRIPT), "stop", str(root)], capture_output=True, timeout=120, check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def mariadb() -> Iterator[MariaDB]:
    """A throwaway MariaDB per test module (scripts/demo/mariadb); its databases exist before keywarden provisions logins."""
    if not (shutil.which("mariadbd") or Path("/usr/sbin/mariadbd").exists()):
        pytest.fail("MariaDB server binaries are not installed (mariadbd): scripts/dev/bootstrap test installs mariadb-server")
    # short (a socket path fits 107 bytes) and traversable: as root, the script runs the server as mysql
    root = Path(tempfile.mkdtemp(prefix="kw-mariadb-", dir="/tmp"))
    os.chmod(root, 0o755)  # noqa: S103 - the mysql user must traverse it; nothing secret lives here
    try:
        started = subprocess.run([str(MARIADB_SCRIPT), "start", str(root)], capture_output=True, text=True, timeout=60, check=False)
        assert started.returncode == 0, f"scripts/demo/mariadb start failed:\n{started.stdout}\n{started.stderr}"
        server = MariaDB(root)
        # the teams own their databases: they exist before keywarden provisions logins on them
        server.admin_sql(f"CREATE DATABASE IF NOT EXISTS {MARIADB_SECRETS['ledger_db'][0]}", f"CREATE DATABASE IF NOT EXISTS {MARIADB_DECOY_DATABASE}")
        yield server
    finally:
        subprocess.run([str(MARIADB_SCRIPT), "stop", str(root)], capture_output=True, timeout=60, check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis() -> Iterator[Redis]:
    """A throwaway Redis on free loopback ports, its `default` user open (nopass) as Redis ships it."""
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed: scripts/dev/bootstrap test installs it")
    root = Path(tempfile.mkdtemp(prefix="keywarden-redis-", dir="/tmp"))
    try:
        yield start_redis(root)
    finally:
        stop_redis(root)
        shutil.rmtree(root, ignore_errors=True)
