"""Throwaway AWX-style jobs on this machine: a bare git repository plays the project's remote, each job runs in a
fresh shallow clone of it made the way AWX makes a job's project (a temporary ``awx_internal/<uuid>`` branch, an
``origin`` that points at AWX's cache), with the job's environment (JOB_ID, …) and extra vars (awx_*), and is
deleted afterwards. A real rsyslog receives the audit lines over TCP on loopback: the durable sink.

The managed "host" (consumers' .env files, the throwaway PostgreSQL) and the credentials AWX would inject (vault
password, audit key) live outside the jobs, as they do under AWX. Values never reach an assertion.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from ansible.parsing.vault import VaultSecret
from rotation_helpers import Run

from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import Store, StoreError

REPO = Path(__file__).resolve().parents[2]
ENV = "production"
STORE_REL = f"inventories/{ENV}/store"
FAULTS = REPO / "tests" / "faults"


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    if proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} in {cwd}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Rsyslog:
    """rsyslogd in the foreground (-n) with its own config: imtcp on a free loopback port, keywarden's lines to a file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "work").mkdir(exist_ok=True)
        self.port = free_port()
        self.path = root / "trail.log"
        self.conf = root / "rsyslog.conf"
        self.conf.write_text(
            f'global(workDirectory="{root / "work"}" maxMessageSize="64k")\n'
            'module(load="imtcp")\n'
            f'input(type="imtcp" address="127.0.0.1" port="{self.port}" ruleset="keywarden")\n'
            'ruleset(name="keywarden") {\n'
            f'  if $programname == "keywarden-audit" then action(type="omfile" file="{self.path}" template="RSYSLOG_FileFormat")\n'
            "}\n"
        )
        binary = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
        self.proc = subprocess.Popen(
            [binary, "-n", "-f", str(self.conf), "-i", str(root / "rsyslogd.pid")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise AssertionError(f"rsyslogd did not listen on 127.0.0.1:{self.port}: {out}")
            time.sleep(0.1)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def lines(self) -> list[str]:
        return self.path.read_text().splitlines() if self.path.exists() else []

    def settle(self, timeout: float = 15) -> int:
        """Wait until rsyslog has written what it received (the file stops growing); the line count."""
        deadline, last, still = time.monotonic() + timeout, -1, 0
        while time.monotonic() < deadline:
            count = len(self.lines())
            still = still + 1 if count == last else 0
            if still >= 5:
                break
            last = count
            time.sleep(0.1)
        return len(self.lines())

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Site:
    """What outlives every job: the remote (a bare repository), the managed host's files, the injected credentials."""

    def __init__(self, root: Path, catalog: dict[str, Any], postgres: Any, sink: Rsyslog | None) -> None:
        self.root = root
        self.bare = root / "remote.git"
        self.env_dir = root / "host" / "srv"
        self.env_dir.mkdir(parents=True)
        self.creds = root / "credentials"
        self.creds.mkdir(mode=0o700)
        self.password_dir = self.creds / "vault-pass"
        self.password_dir.mkdir(mode=0o700)
        self.audit_key = self.creds / "audit.key"
        self.sink = sink
        self.postgres = postgres
        self.next_job = 1
        password = uuid.uuid4().hex + uuid.uuid4().hex
        fd = os.open(self.password_dir / ENV, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        # AWX's generated inventory: hosts and the environment only; paths come from the project
        self.inventory = root / "inventory" / "hosts.yml"
        self.inventory.parent.mkdir()
        pg = yaml.safe_load(postgres.vars_file.read_text())
        host_vars = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
        variables = {
            "keywarden_environment": ENV,
            "keywarden_env_dir": str(self.env_dir),
            "keywarden_env_owner": "",
            "keywarden_env_group": "",
            "keywarden_env_dir_owner": "",
            "keywarden_env_manage_services": False,
            **pg,
        }
        self.inventory.write_text(
            "---\n"
            + yaml.safe_dump(
                {
                    "all": {
                        "hosts": {"localhost": host_vars},
                        "vars": variables,
                        "children": {"db": {"hosts": {"localhost": None}}, "app": {"hosts": {"localhost": None}}},
                    }
                }
            )
        )
        # the project: the working tree's files (what is being tested), with this site's catalog, pushed to the remote
        seed = root / "seed"
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
        for name in filter(None, (f.decode() for f in files)):
            source = REPO / name
            if source.is_file():
                (seed / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, seed / name)
        (seed / "config" / "secrets" / "catalog.yml").write_text("---\n" + yaml.safe_dump(catalog, sort_keys=False))
        git(root, "init", "--quiet", "--bare", "--initial-branch=main", str(self.bare))
        git(seed, "init", "--quiet", "--initial-branch=main")
        git(seed, "-c", "user.name=ops", "-c", "user.email=ops@example.invalid", "add", ".")
        git(seed, "-c", "user.name=ops", "-c", "user.email=ops@example.invalid", "commit", "--quiet", "-m", "project")
        git(seed, "push", "--quiet", str(self.bare), "main")
        shutil.rmtree(seed)

    def copy(self, name: str) -> Site:
        """Another site starting from this one's state (remote and host files; the same PostgreSQL and sink)."""
        other = object.__new__(Site)
        other.__dict__.update(self.__dict__)
        other.root = self.root.parent / name
        other.root.mkdir()
        other.bare = other.root / "remote.git"
        shutil.copytree(self.bare, other.bare)
        return other

    @property
    def remote_url(self) -> str:
        return f"file://{self.bare}"

    def job(self, name: str | None = None, laptop: bool = False) -> Job:
        number = self.next_job
        self.next_job += 1
        return Job(self, name or f"job{number}", 1000 + number + abs(hash(self.root.name)) % 1000 * 10, laptop=laptop)

    def seen_values(self) -> list[str]:
        """Every value any store revision on the remote ever held (current, pending, previous), for leak checks only."""
        values = set()
        for commit in git(self.bare, "rev-list", "main", "--", STORE_REL + "/secrets.vault").split():
            raw = subprocess.run(["git", "cat-file", "blob", f"{commit}:{STORE_REL}/secrets.vault"], cwd=self.bare, capture_output=True, check=True).stdout
            data = Store._decrypt(Store(str(self.root), ENV, [(ENV, self.vault_secret())]), raw, commit)
            for entry in data["secrets"].values():
                for stage in ("current", "pending", "previous"):
                    values |= {str(v) for v in ((entry.get(stage) or {}).get("fields") or {}).values() if len(str(v)) >= 8}
        return sorted(values)

    def vault_secret(self) -> VaultSecret:
        return VaultSecret((self.password_dir / ENV).read_text().strip().encode())

    def store(self) -> dict[str, Any]:
        """The store as the remote holds it now (read from a fresh clone, never printed)."""
        fresh = self.root / f"check-{uuid.uuid4().hex[:8]}"
        git(self.root, "clone", "--quiet", "--depth=1", self.remote_url, str(fresh))
        try:
            return Store(str(fresh / STORE_REL), ENV, [(ENV, self.vault_secret())]).read()
        finally:
            shutil.rmtree(fresh)

    def history(self) -> list[str]:
        """Subjects of the remote's store commits, oldest first."""
        return [s for s in git(self.bare, "log", "--reverse", "--format=%s", "main").splitlines() if s.startswith("keywarden store")]

    def values(self) -> list[str]:
        values: list[str] = []
        try:
            data = self.store()
        except StoreError:  # no store yet: nothing to redact
            return values
        for entry in data["secrets"].values():
            for stage in ("current", "pending", "previous"):
                values += [str(v) for v in ((entry.get(stage) or {}).get("fields") or {}).values() if len(str(v)) >= 8]
        return values

    def redact(self, text: str) -> str:
        for value in self.values():
            text = text.replace(value, "<redacted>")
        return text


class Job:
    """One AWX job: a fresh shallow clone in a new directory, deleted with ``remove``. ``laptop``: an operator's
    full clone instead (on main, origin the remote), run by hand with the git backend on and no pull."""

    def __init__(self, site: Site, name: str, job_id: int, laptop: bool = False) -> None:
        self.site = site
        self.name = name
        self.id = job_id
        self.laptop = laptop
        self.dir = site.root / "jobs" / name
        self.project = self.dir / "project"
        self.dir.mkdir(parents=True)
        if laptop:
            git(self.dir, "clone", "--quiet", str(site.bare), str(self.project))
        else:
            git(self.dir, "clone", "--quiet", "--depth=1", "--branch=main", site.remote_url, str(self.project))
            git(self.project, "checkout", "--quiet", "-b", f"awx_internal/{uuid.uuid4()}")
            git(self.project, "remote", "set-url", "origin", str(site.root / "awx-projects-cache" / "_8__keywarden"))
        self.revision = git(self.project, "rev-parse", "HEAD")

    def extravars(self, template: str, **extra: Any) -> dict[str, Any]:
        """What AWX writes to env/extravars for a job of this template (awx_meta_vars), with the template's extra vars."""
        if self.laptop:
            return extra
        meta = {
            "awx_job_id": self.id,
            "awx_job_launch_type": "scheduled",
            "awx_job_template_id": 7,
            "awx_job_template_name": template,
            "awx_project_revision": self.revision,
            "awx_project_scm_branch": "main",
            "awx_user_id": 1,
            "awx_user_name": "admin",
            "awx_inventory_id": 3,
            "awx_inventory_name": f"keywarden {ENV}",
        }
        meta.update({key.replace("awx_", "tower_", 1): value for key, value in meta.items()})
        settings = {
            "keywarden_store_backend": "git",
            "keywarden_store_git_remote": self.site.remote_url,
            "keywarden_store_git_pull": True,
        }
        if self.site.sink is not None:
            settings["keywarden_audit_syslog_server"] = self.site.sink.address
        return {**meta, **settings, **extra}

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "KEYWARDEN_", "JOB_ID", "AWX_"))}
        if self.laptop:
            env.update(KEYWARDEN_STORE_BACKEND="git")
        else:
            env.update(JOB_ID=str(self.id), INVENTORY_ID="3", PROJECT_REVISION=self.revision, AWX_HOST="https://awx.example.invalid")
        env.update(
            ANSIBLE_RETRY_FILES_ENABLED="False",
            ANSIBLE_CONFIG=str(self.project / "ansible.cfg"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
            # the credentials AWX injects: the vault password (here through the client), the audit key as a file
            KEYWARDEN_VAULT_PASSWORD_DIR=str(self.site.password_dir),
            KEYWARDEN_AUDIT_KEY_FILE=str(self.site.audit_key),
            PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        return env

    def run(self, playbook: str, template: str, *extra_args: str, crash: str | None = None, timeout: float = 300, **extra: Any) -> Run:
        """ansible-playbook in the job's project, as AWX runs it (its own process group: a kill takes every worker)."""
        extravars = self.dir / "extravars.json"
        extravars.write_text(json.dumps(self.extravars(template, **extra)))
        env = self.environ()
        if crash:
            counter = self.dir / "crash-counter"
            env.update(KEYWARDEN_TEST_CRASH=crash, KEYWARDEN_TEST_CRASH_COUNTER=str(counter), PYTHONPATH=str(FAULTS))
        client = self.project / "scripts" / "secrets" / "vault-password-client"
        args = ["-i", str(self.site.inventory), f"playbooks/{playbook}", "--vault-id", f"{ENV}@{client}", "-e", f"@{extravars}", *extra_args]
        beside = Path(sys.executable).parent / "ansible-playbook"
        started = time.monotonic()
        proc = subprocess.Popen(
            [str(beside), *args],
            cwd=self.project,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
        timer.start()
        try:
            output, _ = proc.communicate()
        finally:
            timer.cancel()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        return Run(self.site, args, proc.returncode, output, time.monotonic() - started, False)

    def remove(self) -> None:
        shutil.rmtree(self.dir)
