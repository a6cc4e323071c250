"""What the tests share besides fixtures (those are in conftest.py): the one playbook runner (Workspace.run),
isolated workspaces for real ansible-playbook runs, digests, the throwaway servers' handles.

Secret values never reach an assertion or an assertion message: tests compare SHA-256 digests, modes and
variable names. Playbook output shown on failure has every value of the workspace's store redacted first.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pymysql
import yaml

REPO = Path(__file__).resolve().parents[1]
COLLECTIONS = REPO / "collections"
# crash injection from outside the product (tests/faults/sitecustomize.py): Workspace.run(crash=...), crash_env
FAULTS = REPO / "tests" / "faults"

from ansible.parsing.vault import VaultSecret
from ansible.plugins.loader import init_plugin_loader

# Ansible's collection loader, as ansible-playbook installs it: plugins then load by FQCN (lookup_loader.get)
# and `ansible_collections.keywarden.secrets...` imports resolve the same way in tests and in real runs.
init_plugin_loader([str(COLLECTIONS)])

from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import Store, StoreError

CLIENT = REPO / "scripts" / "secrets" / "vault-password-client"
CATALOG = REPO / "config" / "secrets" / "catalog.yml"
PG_SCRIPT = REPO / "scripts" / "demo" / "postgres"
REDIS_SCRIPT = REPO / "scripts" / "demo" / "redis"
RABBITMQ_SCRIPT = REPO / "scripts" / "demo" / "rabbitmq"
# `cache` (the sample catalog's Redis target) is left out: provisioning it needs a throwaway Redis (the `redis` fixture),
# and a workspace that lists it without one would reach whatever Redis listens on 127.0.0.1:6379
ALL_GROUPS = ("db", "app", "worker")
_RECAP_RE = re.compile(r"^localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


def digest(data: Any) -> str:
    """SHA-256 of a value (bytes, str, or anything YAML can dump canonically): what tests compare instead of values."""
    if isinstance(data, str):
        data = data.encode()
    elif not isinstance(data, bytes):
        data = yaml.safe_dump(data, sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


class PlaybookResult:
    """One ansible-playbook run: its arguments, exit status, output and time. Never shows a value: explain() redacts."""

    def __init__(self, args: list[str], returncode: int, output: str, redact: Callable[[str], str], seconds: float = 0.0, killed: bool = False) -> None:
        self.args = args
        self.returncode = returncode
        self.output = output
        self._redact = redact
        self.seconds = seconds
        self.killed = killed  # killed from outside (kill_on)

    def recap(self) -> dict[str, int]:
        match = _RECAP_RE.search(self.output)
        if not match:
            return {}
        return dict(zip(("ok", "changed", "unreachable", "failed"), (int(g) for g in match.groups()), strict=True))

    def says(self, text: str) -> bool:
        """Whether the output holds this text, whitespace collapsed (the yaml callback wraps long messages)."""
        return " ".join(text.split()) in " ".join(self.output.split())

    def lines(self, *fragments: str) -> list[str]:
        return [line for line in self.output.splitlines() if all(fragment in line for fragment in fragments)]

    def error_line(self, *fragments: str) -> str | None:
        """The first output line holding every fragment: a one-line error that says what to fix."""
        found = self.lines(*fragments)
        return found[0] if found else None

    def explain(self) -> str:
        """Tail of the output for an assertion message, with every known secret value redacted."""
        return f"ansible-playbook {' '.join(self.args)} -> rc {self.returncode} after {self.seconds:.1f}s\n" + self._redact(self.output)[-6000:]


class Workspace:
    """An isolated keywarden setup in a temp dir: inventory (localhost), catalog copy, vault passwords, store, env dir."""

    def __init__(
        self,
        root: Path,
        environment: str = "local",
        groups: tuple[str, ...] = ALL_GROUPS,
        store_dir: Path | None = None,
    ) -> None:
        self.root = root
        self.environment = environment
        self.inventory = root / "inventory"
        self.store_dir = store_dir or root / "store"
        self.env_dir = root / "srv"
        self.password_dir = root / "vault-pass"
        self.catalog = root / "catalog.yml"
        self.playbook_dir = root / "playbooks"
        # each workspace has its own audit log and key, outside the store dir (snapshots compare that dir)
        self.audit_dir = root / "audit"
        self.audit_log = self.audit_dir / "audit.log"
        self.audit_key = self.audit_dir / "audit.key"
        for directory in (self.inventory / "group_vars" / "all", self.playbook_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.password_dir.mkdir(mode=0o700, exist_ok=True)
        self.audit_dir.mkdir(mode=0o700, exist_ok=True)
        shutil.copyfile(CATALOG, self.catalog)
        hosts = {
            "all": {
                "hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}},
                "children": {group: {"hosts": {"localhost": None}} for group in groups},
            }
        }
        (self.inventory / "hosts.yml").write_text("---\n" + yaml.safe_dump(hosts, sort_keys=False))
        group_vars = {
            "keywarden_environment": environment,
            "keywarden_store_dir": str(self.store_dir),
            "keywarden_catalog_path": str(self.catalog),
            "keywarden_env_dir": str(self.env_dir),
            # empty: the account the play runs as (no facts needed)
            "keywarden_env_owner": "",
            "keywarden_env_group": "",
            "keywarden_env_manage_services": False,
            # in group_vars (not only the environment of Workspace.run) so that every runner of this inventory audits here
            "keywarden_audit_log": str(self.audit_log),
            "keywarden_audit_key_file": str(self.audit_key),
        }
        (self.inventory / "group_vars" / "all" / "keywarden.yml").write_text("---\n" + yaml.safe_dump(group_vars, sort_keys=False))

    # ---- vault passwords ----------------------------------------------------------------------
    def set_password(self, vault_id: str, password: str | None = None) -> str:
        password = password or secrets.token_urlsafe(24)
        path = self.password_dir / vault_id
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        os.chmod(path, 0o600)
        return password

    def password(self, vault_id: str) -> str:
        return (self.password_dir / vault_id).read_text().strip()

    def store(self, environment: str | None = None) -> Store:
        environment = environment or self.environment
        vault_secrets = []
        if (self.password_dir / environment).exists():
            vault_secrets.append((environment, VaultSecret(self.password(environment).encode())))
        return Store(str(self.store_dir), environment, vault_secrets)

    def clone_store(self, other: Workspace, env_dir: bool = False) -> None:
        """Take a copy of another workspace's store and vault passwords (and its delivered .env files): modes kept."""
        pairs = [(other.store_dir, self.store_dir)] + ([(other.env_dir, self.env_dir)] if env_dir else [])
        for source, dest in pairs:
            if dest.exists():
                shutil.rmtree(dest)
            shutil.copytree(source, dest)
            shutil.copystat(source, dest)
        for path in other.password_dir.iterdir():
            shutil.copy2(path, self.password_dir / path.name)

    def store_values(self) -> list[str]:
        """Every value in the store (for redaction and leak checks only; never asserted on)."""
        values: list[str] = []
        for environment in [p.name for p in self.password_dir.iterdir()] if self.password_dir.exists() else []:
            try:
                data = self.store(environment).read()
            except StoreError:  # a store that does not open has nothing to redact
                continue
            for entry in data["secrets"].values():
                for stage in ("current", "pending", "previous"):
                    for value in ((entry.get(stage) or {}).get("fields") or {}).values():
                        if len(str(value)) >= 8:
                            values.append(str(value))
        return values

    def redact(self, text: str) -> str:
        for value in self.store_values():
            text = text.replace(value, "<redacted>")
        return text

    def leaks(self, text: str) -> bool:
        """True when any stored value appears in text. Returns a bool so that an assertion never shows a value."""
        return any(value in text for value in self.store_values())

    # ---- running ---------------------------------------------------------------------------------
    def write_playbook(self, name: str, plays: list[dict[str, Any]]) -> Path:
        path = self.playbook_dir / name
        path.write_text("---\n" + yaml.safe_dump(plays, sort_keys=False))
        return path

    def run(
        self,
        playbook: str | Path,
        *extra: str,
        vault_ids: tuple[str, ...] | None = None,
        timeout: float = 300,
        env_extra: dict[str, str] | None = None,
        crash: str | None = None,
        kill_on: str | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> PlaybookResult:
        """ansible-playbook with the repo's ansible.cfg, this workspace's inventory, password dir and audit log, a clean
        environment: the one way every test runs a playbook.

        ``crash`` = "<point>:<n>" makes the run die inside its n-th store write (tests/faults/sitecustomize.py);
        ``kill_on`` SIGKILLs ansible-playbook with all its workers from outside as soon as an output line holds it.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "KEYWARDEN_"))}
        env.update(
            ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
            KEYWARDEN_VAULT_PASSWORD_DIR=str(self.password_dir),
            KEYWARDEN_AUDIT_LOG=str(self.audit_log),
            KEYWARDEN_AUDIT_KEY_FILE=str(self.audit_key),
            # the OS keyring is the client's third source: keep the caller's keyring out of the tests
            PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        if crash:
            counter = self.root / f"crash-counter-{secrets.token_hex(4)}"
            env.update(KEYWARDEN_TEST_CRASH=crash, KEYWARDEN_TEST_CRASH_COUNTER=str(counter), PYTHONPATH=str(FAULTS))
        env.update(env_extra or {})
        vault_ids = (self.environment,) if vault_ids is None else vault_ids
        path = Path(playbook)
        if not path.is_absolute():
            path = REPO / path
        args = ["-i", str(self.inventory), str(path)]
        for vault_id in vault_ids:
            args += ["--vault-id", f"{vault_id}@{CLIENT}"]
        args += list(extra)
        started = time.monotonic()
        # its own process group: a kill from outside takes the workers too, as a crashed controller would
        proc = subprocess.Popen(
            [_tool("ansible-playbook"), *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        if on_start is not None:
            on_start(proc.pid)
        killed = threading.Event()

        def kill_group() -> None:
            killed.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        watchdog = threading.Timer(timeout, kill_group)
        watchdog.start()
        lines = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if kill_on and kill_on in line and not killed.is_set():
                    kill_group()
            returncode = proc.wait()
        finally:
            watchdog.cancel()
            # a worker orphaned by a crash must not outlive the test
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        return PlaybookResult(args, returncode, "".join(lines), self.redact, time.monotonic() - started, killed.is_set())

    # ---- disk state -------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, tuple[str, str]]:
        """{path: (kind and mode, sha256)} of everything under the store dir and the env dir."""
        state: dict[str, tuple[str, str]] = {}
        for base in (self.store_dir, self.env_dir):
            if not base.exists():
                continue
            for path in sorted([base, *base.rglob("*")]):
                st = path.lstat()
                if stat.S_ISREG(st.st_mode):
                    state[str(path)] = (f"file {stat.S_IMODE(st.st_mode):04o}", digest(path.read_bytes()))
                else:
                    state[str(path)] = (f"{stat.filemode(st.st_mode)}", "")
        return state


class Postgres:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.vars_file = root / "postgres.yml"
        settings = yaml.safe_load(self.vars_file.read_text())
        self.port = int(settings["keywarden_target_postgresql_port"])
        self.socket_dir = settings["keywarden_target_postgresql_login_unix_socket"]


# ---- MariaDB (scripts/demo/mariadb) ----------------------------------------------------------------------
MARIADB_SCRIPT = REPO / "scripts" / "demo" / "mariadb"
# secret -> (database, logins it may use)
MARIADB_SECRETS = {
    "shop_db": ("orders", ("shop_a", "shop_b")),  # alternating_users
    "ledger_db": ("order_log", ("ledger",)),  # single_user; `_` is a wildcard in a database grant
}
# matches `order_log` if the grant's `_` were left unescaped
MARIADB_DECOY_DATABASE = "orderxlog"
MARIADB_CATALOG = {
    "keywarden_catalog_version": 1,
    "secrets": {
        "shop_db": {
            "kind": "mariadb",
            "description": "The shop's login on the orders database",
            "environments": ["local"],
            "target": {"group": "db", "database": "orders", "role": "shop"},
            "policy": {"max_age_days": 30, "length": 32, "charset": "urlsafe", "strategy": "alternating_users"},
            "consumers": [{"group": "app", "service": "shop", "env": {"DB_USER": "username", "DB_PASSWORD": "password", "DB_NAME": "database"}}],
        },
        "ledger_db": {
            "kind": "mariadb",
            "description": "The ledger worker's login on the order log",
            "environments": ["local"],
            "target": {"group": "db", "database": "order_log", "role": "ledger"},
            "policy": {"max_age_days": 30, "length": 24, "charset": "alnum", "strategy": "single_user"},
            "consumers": [{"group": "worker", "service": "ledger", "env": {"LEDGER_DB_USER": "username", "LEDGER_DB_PASSWORD": "password"}}],
        },
    },
}


class MariaDB:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.vars_file = root / "mariadb.yml"
        settings = yaml.safe_load(self.vars_file.read_text())
        self.port = int(settings["keywarden_target_mariadb_port"])
        self.socket = settings["keywarden_target_mariadb_login_unix_socket"]
        self.admin = settings["keywarden_target_mariadb_login_user"]
        self.general_log = root / "mariadb" / "general.log"

    def connect_admin(self) -> Any:
        """The administrator's connection through the socket (unix_socket authentication)."""
        return pymysql.connect(unix_socket=self.socket, user=self.admin, autocommit=True)

    def admin_sql(self, *statements: str) -> None:
        """Run statements as the administrator."""
        conn = self.connect_admin()
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
        finally:
            conn.close()


# ---- ansible-runner, as AWX runs a job ------------------------------------------------------------------
AWX = {"awx_job_id": 4242, "awx_job_template_name": "keywarden rotate", "awx_user_name": "ops-alice"}


def runner_run(ws: Any, playbook: str, data_dir: Path, *extra_cmdline: str, verbosity: int = 0, extravars: dict[str, Any] | None = None) -> Any:
    """One job through ansible-runner with AWX's extra vars and JOB_ID, like an AWX job template launch."""
    import ansible_runner  # noqa: PLC0415 - only the runner tests need it

    data_dir.mkdir(parents=True, exist_ok=True)
    envvars = {
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "KEYWARDEN_VAULT_PASSWORD_DIR": str(ws.password_dir),
        "KEYWARDEN_AUDIT_LOG": str(ws.audit_log),
        "KEYWARDEN_AUDIT_KEY_FILE": str(ws.audit_key),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        "JOB_ID": str(AWX["awx_job_id"]),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    cmdline = " ".join([f"--vault-id local@{CLIENT}", *extra_cmdline])
    return ansible_runner.run(
        private_data_dir=str(data_dir),
        project_dir=str(REPO),
        playbook=str(REPO / playbook),
        inventory=str(ws.inventory),
        extravars={**AWX, **(extravars or {})},
        envvars=envvars,
        cmdline=cmdline,
        verbosity=verbosity,
        quiet=True,
        timeout=600,
    )


# ---- the forms a leaked value takes ----------------------------------------------------------------------
def forms(value: str) -> dict[str, str]:
    raw = value.encode()
    return {
        "plain": value,
        "base64": base64.b64encode(raw).decode(),
        "base64url": base64.urlsafe_b64encode(raw).decode(),
        "url": urllib.parse.quote(value, safe=""),
        "url+": urllib.parse.quote_plus(value),
    }


# ---- Redis and RabbitMQ (scripts/demo/redis, scripts/demo/rabbitmq) ----------------------------------------
class Redis:
    """A throwaway Redis (scripts/demo/redis): TLS offered on a second port (client certificates), users in an ACL file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "redis"
        self.vars_file = root / "redis.yml"
        self.vars = yaml.safe_load(self.vars_file.read_text())
        self.port = int(self.vars["keywarden_target_redis_port"])
        self.tls_port = int((self.dir / "tls_port").read_text())

    def restart(self) -> None:
        done = subprocess.run([str(REDIS_SCRIPT), "restart", str(self.root)], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, f"scripts/demo/redis restart failed:\n{done.stdout}\n{done.stderr}"


def start_redis(root: Path, *options: str) -> Redis:
    started = subprocess.run([str(REDIS_SCRIPT), "start", str(root), *options], capture_output=True, text=True, timeout=120, check=False)
    assert started.returncode == 0, f"scripts/demo/redis start failed:\n{started.stdout}\n{started.stderr}"
    return Redis(root)


def stop_redis(root: Path) -> None:
    subprocess.run([str(REDIS_SCRIPT), "stop", str(root)], capture_output=True, timeout=60, check=False)


class Rabbitmq:
    """A throwaway RabbitMQ node (scripts/demo/rabbitmq): AMQP, AMQP over TLS, the management API; vhost `orders`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "rabbitmq"
        self.vars_file = root / "rabbitmq.yml"
        self.vars = yaml.safe_load(self.vars_file.read_text())
        self.port, self.tls_port, self.api_port = (int(x) for x in (self.dir / "ports").read_text().split())
        self.api_url = self.vars["keywarden_target_rabbitmq_api_url"]

    def ctl(self, *args: str) -> str:
        """rabbitmqctl on this node (Erlang cookie, no password)."""
        done = subprocess.run(
            ["bash", "-c", '. "$1/env.sh" && shift && exec /usr/lib/rabbitmq/bin/rabbitmqctl "$@"', "ctl", str(self.dir), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"rabbitmqctl {args[0]} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout


def start_rabbitmq(root: Path, *vhosts: str) -> Rabbitmq:
    """A fresh node (with RabbitMQ's default guest account) and the virtual hosts (default: `orders`). Each test module
    that provisions RabbitMQ starts its own: the first provisioning replaces guest with that module's admin users."""
    if not os.path.exists("/usr/lib/rabbitmq/bin/rabbitmq-server"):
        raise AssertionError("rabbitmq-server is not installed: scripts/dev/bootstrap test installs it")
    os.chmod(root, 0o755)  # noqa: S103 - nothing secret lives here
    started = subprocess.run([str(RABBITMQ_SCRIPT), "start", str(root), *(vhosts or ("orders",))], capture_output=True, text=True, timeout=240, check=False)
    assert started.returncode == 0, f"scripts/demo/rabbitmq start failed:\n{started.stdout}\n{started.stderr}"
    return Rabbitmq(root)


def stop_rabbitmq(root: Path) -> None:
    subprocess.run([str(RABBITMQ_SCRIPT), "stop", str(root)], capture_output=True, timeout=120, check=False)
