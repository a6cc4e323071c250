"""The disaster-recovery drill, on real containers: back up, lose the controller's state and the hosts' .env files,
restore from the backup host, and the consumers log in again with an audit chain that verifies across the restore.

The consumers are two containers (app, worker) reached through the docker connection; they share the host's network
so that they log in to the throwaway PostgreSQL on 127.0.0.1 from inside, with the .env files keywarden delivered
there. The backup host is an sshd container. Values are never compared or printed: digests and login names only.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from backup_helpers import BackupHost, age_keygen, archives, backup_host, configure, ensure_image, sha, verify_log

from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import read_records

APP_IMAGE = "localhost/keywarden-app:bookworm"
ENV_DIR = "/srv/keywarden"
# runs inside a consumer container: log in with its delivered .env, print the login's name (never a value)
LOGIN = r"""
import sys, psycopg2
env = {}
for line in open(sys.argv[1]):
    line = line.strip()
    if line and not line.startswith("#") and "=" in line:
        name, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[name] = value
try:
    conn = psycopg2.connect(host="127.0.0.1", port=int(sys.argv[2]), dbname=env["DB_NAME"], user=env["DB_USER"],
                            password=env["DB_PASSWORD"], connect_timeout=5, sslmode="require")
    with conn.cursor() as cur:
        cur.execute("SELECT current_user")
        print(cur.fetchone()[0])
except Exception as exc:
    print(type(exc).__name__, file=sys.stderr)
    sys.exit(1)
"""


class Consumer:
    def __init__(self, service: str) -> None:
        self.service = service
        self.name = f"kwbackup-{service}-{secrets.token_hex(4)}"
        subprocess.run(["docker", "run", "-d", "--network", "host", "--name", self.name, APP_IMAGE, "sleep", "infinity"], check=True, capture_output=True)

    def exec(self, *argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["docker", "exec", "-i", self.name, *argv], input=stdin, capture_output=True, timeout=60, check=False)

    @property
    def env_file(self) -> str:
        return f"{ENV_DIR}/{self.service}.env"

    def env_digest(self) -> str | None:
        proc = self.exec("cat", self.env_file)
        return sha(proc.stdout) if proc.returncode == 0 else None

    def login(self, port: int) -> str:
        """The PostgreSQL user the consumer logs in as with its .env, or the error's type."""
        proc = self.exec("python3", "-", self.env_file, str(port), stdin=LOGIN.encode())
        return proc.stdout.decode().strip() if proc.returncode == 0 else f"failed: {proc.stderr.decode().strip()[-200:]}"

    def remove(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True, check=False)


@pytest.fixture(scope="module")
def consumers() -> Iterator[dict[str, Consumer]]:
    ensure_image(APP_IMAGE)
    made: dict[str, Consumer] = {}
    try:
        for service in ("app", "worker"):
            made[service] = Consumer(service)
        yield made
    finally:
        for consumer in made.values():
            consumer.remove()


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackupHost]:
    with backup_host(tmp_path_factory.mktemp("dr-backup-host")) as made:
        yield made


def _inventory(ws: Any, consumers: dict[str, Consumer]) -> None:
    """The controller (db over the local socket) and the two consumer containers (no `cache`: see conftest ALL_GROUPS)."""
    container = {"ansible_connection": "community.docker.docker", "ansible_python_interpreter": "/usr/bin/python3", "keywarden_env_dir": ENV_DIR}
    hosts = {
        "all": {
            "hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}},
            "children": {
                "db": {"hosts": {"localhost": None}},
                "app": {"hosts": {consumers["app"].name: container}},
                "worker": {"hosts": {consumers["worker"].name: container}},
            },
        }
    }
    (ws.inventory / "hosts.yml").write_text("---\n" + yaml.safe_dump(hosts, sort_keys=False))


def test_disaster_recovery_drill(workspace: Callable[..., Any], postgres: Any, consumers: dict[str, Consumer], host: BackupHost, tmp_path: Path) -> None:
    ws = workspace("dr", environment="development")
    ws.set_password("development")
    _inventory(ws, consumers)
    offline = tmp_path / "offline"  # what the runbook keeps away from the controller: the backup identity
    offline.mkdir(mode=0o700)
    identity = offline / "backup-development.key"
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(age_keygen(identity) + "\n")
    controller_backups = ws.root / "backups"
    configure(
        ws,
        keywarden_backup_recipients_file=str(recipients),
        keywarden_backup_dir=str(controller_backups),
        keywarden_backup_remote=host.remote("development"),
        keywarden_backup_ssh_args=host.ssh_args,
        keywarden_backup_ca_dir=str(ws.root / "ca"),
        keywarden_restore_archive="latest",
        keywarden_restore_identity_file=str(identity),
        keywarden_restore_remote=host.remote("development"),
        keywarden_restore_ssh_args=host.ssh_args,
        keywarden_restore_backup_dir=str(ws.root / "fetched"),
        keywarden_restore_ca_dir=str(ws.root / "ca"),
    )

    # ---- a working environment: store, logins, .env files in the consumer containers
    site = ws.run("playbooks/site.yml", "-e", f"@{postgres.vars_file}", "-e", "keywarden_store_create=true")
    assert site.returncode == 0, site.explain()
    logins = {service: c.login(postgres.port) for service, c in consumers.items()}
    assert set(logins.values()) <= {"app_a", "app_b"}, logins
    delivered = {service: c.env_digest() for service, c in consumers.items()}

    # ---- the nightly backup, then life goes on (a deploy: reads the disaster will take out of the log)
    made = ws.run("playbooks/backup.yml", "-vvvv", "--diff", vault_ids=())
    assert made.returncode == 0, made.explain()
    store_at_backup = sha((ws.store_dir / "secrets.vault").read_bytes())
    archive = archives(controller_backups)[-1].name
    assert f"{archive}.manifest.json" in host.names("development")
    later = ws.run("playbooks/deploy.yml")
    assert later.returncode == 0, later.explain()

    # ---- the disaster: the controller's store, audit log and local backups, and every host's .env file
    shutil.rmtree(ws.store_dir)
    ws.audit_log.unlink()
    Path(f"{ws.audit_log}.head").unlink()
    shutil.rmtree(controller_backups)
    for consumer in consumers.values():
        assert consumer.exec("rm", "-f", consumer.env_file).returncode == 0
        assert consumer.login(postgres.port).startswith("failed")

    # ---- the recovery, from the backup host, with the offline identity, the vault password and the escrowed audit key
    started = time.monotonic()
    restored = ws.run("playbooks/restore.yml", "-e", "keywarden_restore_deploy=true", "-vvvv", "--diff")
    rto = time.monotonic() - started
    assert restored.returncode == 0, restored.explain()
    print(f"\nDR drill: restore.yml (fetch, verify, restore, deploy to 2 containers) took {rto:.1f} s")  # noqa: T201 - the RTO, shown with -s
    assert sha((ws.store_dir / "secrets.vault").read_bytes()) == store_at_backup
    assert {service: c.env_digest() for service, c in consumers.items()} == delivered
    assert {service: c.login(postgres.port) for service, c in consumers.items()} == logins

    # the audit chain verifies across the restore: the archived lines, the restore event, the deploy after it
    verified = verify_log(ws.audit_log, ws.audit_key)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    records = read_records(str(ws.audit_log))
    events = [r["event"] for r in records]
    restore_at = events.index("restore")
    assert "read" in events[:restore_at] and "backup" not in events[:restore_at]  # archived before its own event was written
    assert events.count("restore") == 1
    redelivered = {r["host"] for r in records[restore_at + 1 :] if r["event"] == "deploy"}
    assert redelivered == {c.name for c in consumers.values()}
    record = records[restore_at]
    assert (record["detail"]["archive"], record["detail"]["audit_log"]) == (archive, "restored from the archive")
    # at -vvvv --diff: no value of the store, nor the vault password, the audit key or the backup identity
    output = site.output + made.output + later.output + restored.output
    leaked = ws.leaks(output)
    assert not leaked
    keys = [ws.password("development"), ws.audit_key.read_text().strip(), identity.read_text().split("AGE-SECRET-KEY-")[1].strip()]
    shown = [k in output for k in keys]  # booleans: an assertion never shows a key
    assert shown == [False, False, False]
