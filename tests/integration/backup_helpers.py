"""Helpers of the backup tests: age keys made by Debian's age-keygen, a backup host container with sshd, the scripts.

Nothing here prints a value: the stores' values stay vault-encrypted in every file these helpers touch.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
BACKUP = REPO / "scripts" / "secrets" / "backup"
RESTORE = REPO / "scripts" / "secrets" / "restore"
VERIFY_LOG = REPO / "scripts" / "audit" / "verify-log"
BACKUP_HOST_IMAGE = "localhost/keywarden-backuphost:bookworm"
REMOTE_DIR = "/srv/keywarden-backups"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def age_keygen(path: Path) -> str:
    """A new age identity in path (mode 0600, by Debian's age-keygen); returns its public key."""
    assert shutil.which("age-keygen"), "Debian's age package is missing: apt-get install age (scripts/dev/bootstrap test installs it)"
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    os.chmod(path, 0o600)
    return subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True).stdout.strip()


def state(*paths: Path) -> dict[str, str]:
    """{path: mode and sha256} of every file and directory under paths (what "nothing changed" compares)."""
    found: dict[str, str] = {}
    for base in paths:
        if not base.exists():
            continue
        for path in sorted([base, *base.rglob("*")] if base.is_dir() else [base]):
            st = path.lstat()
            found[str(path)] = f"{stat.filemode(st.st_mode)} {sha(path.read_bytes()) if stat.S_ISREG(st.st_mode) else ''}"
    return found


def script_env(ws: Any, **extra: str) -> dict[str, str]:
    """The scripts' environment for a workspace: its vault passwords, audit log and key, backup dir; no keyring."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "KEYWARDEN_"))}
    env.update(
        KEYWARDEN_VAULT_PASSWORD_DIR=str(ws.password_dir),
        KEYWARDEN_AUDIT_LOG=str(ws.audit_log),
        KEYWARDEN_AUDIT_KEY_FILE=str(ws.audit_key),
        KEYWARDEN_BACKUP_DIR=str(ws.root / "backups"),
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
    )
    env.update(extra)
    return env


def run_script(script: Path, ws: Any, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """scripts/secrets/backup or restore for a workspace (its store dir, catalog and CA dir)."""
    argv = [sys.executable, str(script), "-e", ws.environment, "--store-dir", str(ws.store_dir), "--catalog", str(ws.catalog), "--ca-dir", str(ws.root / "ca")]
    return subprocess.run([*argv, *args], env=env or script_env(ws), capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)


def verify_log(log: Path, key_file: Path) -> subprocess.CompletedProcess[str]:
    """scripts/audit/verify-log with the audit key: the chain, the head and every line's MAC."""
    return subprocess.run([sys.executable, str(VERIFY_LOG), "--key-file", str(key_file), str(log)], capture_output=True, text=True, timeout=60, check=False)


def one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> bool:
    """True when the run failed with exactly one line on stderr holding every fragment (and stdout empty)."""
    lines = proc.stderr.strip().splitlines()
    return proc.returncode == 2 and not proc.stdout.strip() and len(lines) == 1 and all(f in lines[0] for f in fragments)


def configure(ws: Any, **variables: Any) -> None:
    """Extra group_vars for the workspace's inventory (backup and restore settings)."""
    path = ws.inventory / "group_vars" / "all" / "backup.yml"
    current = yaml.safe_load(path.read_text()) if path.exists() else {}
    current.update(variables)
    path.write_text("---\n" + yaml.safe_dump(current, sort_keys=False))


def archives(directory: Path) -> list[Path]:
    return sorted(directory.glob("keywarden-*.tar.age"))


# ---- the backup host ----------------------------------------------------------------------------------
def _docker(*args: str, stdin: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["docker", *args], input=stdin, capture_output=True, timeout=120, check=check)


def ensure_image(image: str) -> None:
    """Build the local images (scripts/ci/build-images: idempotent, nothing pulled) when this one is missing."""
    if _docker("image", "inspect", image, check=False).returncode != 0:
        built = subprocess.run([str(REPO / "scripts" / "ci" / "build-images")], capture_output=True, text=True, timeout=900, check=False)
        assert built.returncode == 0, f"scripts/ci/build-images failed:\n{built.stdout[-3000:]}\n{built.stderr[-3000:]}"


class BackupHost:
    """A container from the backup host image: sshd on a loopback port, key-only login as keywarden-backup."""

    def __init__(self, root: Path) -> None:
        ensure_image(BACKUP_HOST_IMAGE)
        self.name = f"kwbackup-host-{secrets.token_hex(4)}"
        root.mkdir(parents=True, exist_ok=True)
        self.key = root / "ssh_key"
        self.known_hosts = root / "known_hosts"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "keywarden-backup-test", "-f", str(self.key)], check=True)
        _docker("run", "-d", "--name", self.name, "-p", "127.0.0.1::22", BACKUP_HOST_IMAGE)
        deadline = time.monotonic() + 60
        while b"Server listening" not in _docker("logs", self.name, check=False).stderr:
            assert time.monotonic() < deadline, f"sshd in {self.name} did not start: {_docker('logs', self.name, check=False).stderr.decode()[-2000:]}"
            time.sleep(0.2)
        self.port = int(_docker("port", self.name, "22/tcp").stdout.decode().splitlines()[0].rsplit(":", 1)[1])
        host_key = _docker("exec", self.name, "cat", "/etc/ssh/ssh_host_ed25519_key.pub").stdout.decode().strip()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_key}\n")
        self.exec(
            "sh",
            "-c",
            "cat >/home/keywarden-backup/.ssh/authorized_keys && chown keywarden-backup: /home/keywarden-backup/.ssh/authorized_keys "
            "&& chmod 0600 /home/keywarden-backup/.ssh/authorized_keys",
            stdin=self.key.with_suffix(".pub").read_bytes(),
        )
        self.ssh_args = ["-i", str(self.key), "-p", str(self.port), "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "IdentitiesOnly=yes"]

    def remote(self, environment: str) -> str:
        return f"keywarden-backup@127.0.0.1:{REMOTE_DIR}/{environment}"

    def exec(self, *argv: str, stdin: bytes | None = None) -> bytes:
        return _docker("exec", "-i", "-u", "keywarden-backup", self.name, *argv, stdin=stdin).stdout

    def names(self, environment: str) -> list[str]:
        return sorted(self.exec("sh", "-c", f"ls -1a {REMOTE_DIR}/{environment} 2>/dev/null || true").decode().split())

    def read(self, environment: str, name: str) -> bytes:
        return self.exec("cat", f"{REMOTE_DIR}/{environment}/{name}")

    def remove(self) -> None:
        _docker("rm", "-f", self.name, check=False)


@contextmanager
def backup_host(root: Path) -> Iterator[BackupHost]:
    host = BackupHost(root)
    try:
        yield host
    finally:
        host.remove()
