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
import re
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


def rsyslog_sink(tmp_path_factory: Any) -> Any:
    """A module fixture body (``sink = pytest.fixture(scope="module")(rsyslog_sink)``): a real rsyslog for the module."""
    server = Rsyslog(tmp_path_factory.mktemp("rsyslog"))
    try:
        yield server
    finally:
        server.stop()


def pg_entry(name: str) -> dict[str, Any]:
    """A PostgreSQL catalog entry of this environment, consumed by group app through service ``name``."""
    from rotation_helpers import pg_secret  # noqa: PLC0415 - the rotation tests' catalog helper

    entry = pg_secret(name, consumers=(("app", name, "DB"),))
    entry["environments"] = [ENV]
    return entry


class Site:
    """What outlives every job: the remote (a bare repository), the managed host's files, the injected credentials."""

    def __init__(self, root: Path, catalog: dict[str, Any], postgres: Any, sink: Rsyslog | None, extra_files: dict[str, str] | None = None) -> None:
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
        for name, text in (extra_files or {}).items():
            (seed / name).parent.mkdir(parents=True, exist_ok=True)
            (seed / name).write_text(text)
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

    def ee_job(self, image: str, mounts: list[Path], name: str | None = None) -> EEJob:
        number = self.next_job
        self.next_job += 1
        return EEJob(self, name or f"ee-job{number}", 2000 + number + abs(hash(self.root.name)) % 1000 * 10, image, mounts)

    def seen_values(self) -> list[str]:
        """Every value any store revision on the remote ever held (current, pending, previous), for leak checks only."""
        values = set()
        for commit in git(self.bare, "rev-list", "main", "--", STORE_REL + "/secrets.vault").split():
            raw = subprocess.run(["git", "cat-file", "blob", f"{commit}:{STORE_REL}/secrets.vault"], cwd=self.bare, capture_output=True, check=True).stdout
            data = Store._decrypt(Store(str(self.root), ENV, [(ENV, self.vault_secret())]), raw, commit)
            for entry in data["secrets"].values():
                for stage in ("current", "pending", "previous"):
                    fields = (entry.get(stage) or {}).get("fields") or {}
                    # a login name is no secret (the catalog names it)
                    values |= {str(v) for k, v in fields.items() if k != "username" and len(str(v)) >= 8}
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
        return Run(args, proc.returncode, output, self.site.redact, time.monotonic() - started, False)

    def remove(self) -> None:
        shutil.rmtree(self.dir)


# ---- jobs in the execution environment, the way AWX runs them ------------------------------------------------
def build_ee() -> str:
    """The EE image (scripts/ci/build-ee: built once per content hash, then reused)."""
    proc = subprocess.run([str(REPO / "scripts" / "ci" / "build-ee")], capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"scripts/ci/build-ee failed:\n{proc.stderr[-4000:]}")
    return proc.stdout.strip().splitlines()[-1]


def definitions() -> dict[str, Any]:
    """awx/keywarden.yml, as Ansible loads it (AWX's own templates stay as written)."""
    from ansible.parsing.dataloader import DataLoader  # noqa: PLC0415 - Ansible's loader keeps !unsafe strings

    return DataLoader().load_from_file(str(REPO / "awx" / "keywarden.yml"))


def render(value: Any, context: dict[str, Any]) -> Any:
    """Jinja over strings, lists and dicts (what Ansible does to awx/keywarden.yml, or AWX to an injector)."""
    import jinja2  # noqa: PLC0415

    if isinstance(value, str):
        # plain text out (YAML data, file contents), as Ansible and AWX render these: no HTML escaping
        environment = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701
        return environment.from_string(str(value)).render(**context) if "{{" in value else str(value)
    if isinstance(value, list):
        return [render(item, context) for item in value]
    if isinstance(value, dict):
        return {str(key): render(item, context) for key, item in value.items()}
    return value


class EEJob(Job):
    """A job run by ansible-runner in the EE container: a private data dir holding the project (the job's clone),
    the generated inventory, env/extravars, env/envvars, env/passwords, env/cmdline and the credentials' files, as
    AWX writes them (vault: --vault-id ENV@prompt answered from env/passwords)."""

    def __init__(self, site: Site, name: str, job_id: int, image: str, mounts: list[Path]) -> None:
        super().__init__(site, name, job_id)
        self.image = image
        self.mounts = mounts
        self.pdd = self.dir
        (self.pdd / "inventory").mkdir()
        (self.pdd / "env").mkdir(mode=0o700)

    def inject(self, credential_type: dict[str, Any], inputs: dict[str, str], env: dict[str, str], extravars: dict[str, Any]) -> None:
        """What AWX does with a credential of this type: its files into env/, its env and extra vars rendered."""
        injectors = credential_type["injectors"]
        files = {}
        for key, template in (injectors.get("file") or {}).items():
            path = self.pdd / "env" / f"{credential_type['name'].replace(' ', '_')}{key.removeprefix('template')}"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(render(template, inputs))
            files[key.removeprefix("template").lstrip(".")] = f"/runner/env/{path.name}"
        filename: Any = files.get("", None) or type("Files", (), files)()
        context = {**inputs, "tower": {"filename": filename}}
        env.update(render(injectors.get("env") or {}, context))
        extravars.update(render(injectors.get("extra_vars") or {}, context))

    def run_template(
        self,
        template: dict[str, Any],
        site_values: dict[str, Any],
        credentials: dict[str, dict[str, str]],
        override: dict[str, Any] | None = None,
        crash: str | None = None,
    ) -> RunnerRun:
        defs = definitions()
        context = {**defs, **site_values}
        extravars = {
            **self.extravars(f"keywarden {ENV} {template['name']}"),
            **render(defs["keywarden_awx_job_vars"], context),
            **render(template["extra_vars"], context),
        }
        env = {
            "JOB_ID": str(self.id),
            "INVENTORY_ID": "3",
            "PROJECT_REVISION": self.revision,
            "AWX_HOST": "https://awx.example.invalid",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
        }
        types = {t["name"]: t for t in defs["keywarden_awx_credential_types"]}
        for kind in template["credentials"]:
            if kind == "vault":
                continue
            self.inject(types[f"keywarden {'store push' if kind == 'push' else kind}"], credentials[kind], env, extravars)
        extravars.update(override or {})
        if crash:
            shutil.copytree(FAULTS, self.pdd / "faults")
            env.update(PYTHONPATH="/runner/faults", KEYWARDEN_TEST_CRASH=crash, KEYWARDEN_TEST_CRASH_COUNTER="/runner/crash-counter")
        password = (self.site.password_dir / ENV).read_text().strip()
        (self.pdd / "env" / "extravars").write_text(json.dumps(extravars))
        (self.pdd / "env" / "envvars").write_text(json.dumps(env))
        (self.pdd / "env" / "passwords").write_text(json.dumps({rf"Vault password \({ENV}\):\s*?$": password}))
        (self.pdd / "env" / "cmdline").write_text(f"--vault-id {ENV}@prompt")
        inventory = yaml.safe_load(self.site.inventory.read_text())
        inventory["all"]["hosts"]["localhost"]["ansible_python_interpreter"] = "{{ ansible_playbook_python }}"
        (self.pdd / "inventory" / "hosts.yml").write_text("---\n" + yaml.safe_dump(inventory))
        args = [
            str(Path(sys.executable).parent / "ansible-runner"),
            "run",
            str(self.pdd),
            "-p",
            template["playbook"],
            "--ident",
            f"kwawx-{self.id}",
            "--process-isolation",
            "--process-isolation-executable",
            "docker",
            "--container-image",
            self.image,
            # the job's services are on this machine's loopback; each job container has a hostname of its own, as under AWX
            "--container-option=--network=host",
            f"--container-option=--hostname=kwawx-job-{self.id}",
            *[arg for path in self.mounts for arg in ("--container-volume-mount", f"{path}:{path}:Z")],
        ]
        started = time.monotonic()
        proc = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
        return RunnerRun(self, proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started)


class RunnerRun:
    def __init__(self, job: EEJob, returncode: int, output: str, seconds: float) -> None:
        self.job, self.returncode, self.output, self.seconds = job, returncode, output, seconds
        artifacts = job.pdd / "artifacts" / f"kwawx-{job.id}"
        self.status = (artifacts / "status").read_text().strip() if (artifacts / "status").exists() else "none"
        stdout = (artifacts / "stdout").read_text() if (artifacts / "stdout").exists() else ""
        self.stdout = re.sub(r"\x1b\[[0-9;]*m", "", stdout)

    def says(self, text: str) -> bool:
        return " ".join(text.split()) in " ".join(self.stdout.split())

    def artifacts(self) -> bytes:
        """Every file runner and the job left in the private data dir's artifacts."""
        return b"".join(path.read_bytes() for path in sorted((self.job.pdd / "artifacts").rglob("*")) if path.is_file())

    def explain(self) -> str:
        return (
            f"ansible-runner -> rc {self.returncode}, status {self.status} after {self.seconds:.1f}s\n"
            + self.job.site.redact(self.output + self.stdout)[-6000:]
        )
