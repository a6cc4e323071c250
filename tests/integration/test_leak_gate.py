"""Leak gate: every playbook of the project runs at -vvvv with --diff (each must succeed: a failed run proves
nothing), and no secret value of the store (nor its base64 or URL-encoded forms, nor the vault password or the
audit key) appears in what the run leaves behind: stdout, stderr, the Ansible log file, the audit log,
ansible-runner artifacts, audit.yml's scan reports, and the command lines and environments of every process on the
machine while the run lasts (a module's child process included). A leak planted in each of those channels proves
the gate catches it there.

Hits are reported as (where, which form, which secret name): never the value.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyrage
import pytest
import yaml
from support import forms, runner_run

REPO = Path(__file__).resolve().parents[2]
CLIENT = REPO / "scripts" / "secrets" / "vault-password-client"
# known order (each needs the one before); any other playbook that appears in playbooks/ runs after them
# audit.yml scans the workspace (not the host's /etc and /srv) as the account the tests run as
AUDIT_ARGS = ("-e", "keywarden_audit_scan_become=false")
ORDER = [
    # the first two make the environment's store on purpose (a missing store stops every playbook otherwise)
    ("catalog.yml", ("-e", "keywarden_store_create=true")),
    ("init.yml", ("-e", "keywarden_store_create=true")),
    ("provision.yml", ()),
    ("deploy.yml", ()),
    ("site.yml", ()),
    ("rotate.yml", ("-e", "keywarden_rotate_only=app_db,web_tls,int_ca")),
    ("rotate.yml", ("--check",)),
    ("audit.yml", AUDIT_ARGS),
]


class Sampler:
    """Collects the command lines and environments of every process on the machine while a run lasts (what `ps e`
    shows), each distinct text once: a module's child process shows up as well as ansible's own."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}
        self._texts: dict[str, str] = {}  # text -> where it was first seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for index, (text, where) in enumerate(self._texts.items()):
            self.seen[f"{where} [{index}]"] = text

    def _loop(self) -> None:
        while True:
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                for name, sep in (("cmdline", " "), ("environ", "\n")):
                    try:
                        raw = Path(f"/proc/{pid}/{name}").read_bytes()
                    except OSError:  # gone, or a kernel thread
                        continue
                    self._texts.setdefault(raw.replace(b"\0", sep.encode()).decode(errors="replace"), f"/proc/{pid}/{name}")
            if self._stop.wait(0.1):
                return


class LeakGate:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.captured: dict[str, str] = {}
        self.secrets: dict[str, str] = {}  # value -> name of its secret (or what it is)
        self.collect_secrets()

    def collect_secrets(self) -> None:
        """Every value the store holds now (all stages), the vault password, the audit key; kept across rotations."""
        data = self.ws.store().read() if (self.ws.store_dir / "secrets.vault").exists() else {"secrets": {}}
        for name, entry in data["secrets"].items():
            for stage in ("current", "pending", "previous"):
                for field, value in ((entry.get(stage) or {}).get("fields") or {}).items():
                    # a login name and an API key's id are names, not secrets (nginx logs the id of the key a request used)
                    if len(str(value)) >= 8 and field not in ("username", "key_id"):
                        self.secrets[str(value)] = f"{name}.{field}"
        self.secrets[self.ws.password("local")] = "vault password"
        if self.ws.audit_key.exists():
            self.secrets[self.ws.audit_key.read_text().strip()] = "audit key"

    def run(self, label: str, playbook: str | Path, *extra: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "KEYWARDEN_"))}
        env.update(
            ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_LOG_PATH=str(self.ws.root / "ansible.log"),
            KEYWARDEN_VAULT_PASSWORD_DIR=str(self.ws.password_dir),
            KEYWARDEN_AUDIT_LOG=str(self.ws.audit_log),
            KEYWARDEN_AUDIT_KEY_FILE=str(self.ws.audit_key),
            PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        args = [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(self.ws.inventory),
            str(playbook),
            "--vault-id",
            f"local@{CLIENT}",
            "-vvvv",
            "--diff",
            *extra,
        ]
        with Sampler() as sampler:
            proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
        self.captured[f"{label} stdout"] = proc.stdout
        self.captured[f"{label} stderr"] = proc.stderr
        for where, text in sampler.seen.items():
            self.captured[f"{label} {where}"] = text
        self.collect_secrets()
        return proc

    def files(self, *roots: Path) -> None:
        for root in roots:
            if not root.exists():
                continue
            paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
            for path in paths:
                self.captured[str(path)] = path.read_text(errors="replace")

    def hits(self) -> list[tuple[str, str, str]]:
        found = []
        for value, name in self.secrets.items():
            for form, encoded in forms(value).items():
                for where, text in self.captured.items():
                    if encoded in text:
                        found.append((where, form, name))
        return found


@pytest.fixture(scope="module")
def gate(make_workspace: Callable[..., Any], postgres: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LeakGate]:
    ws = make_workspace("leak")
    ws.set_password("local")
    # a key only a person can get (provider manual): playbooks/record.yml records one for it below
    data = yaml.safe_load(ws.catalog.read_text())
    data["secrets"]["leak_partner_key"] = {
        "kind": "api_key",
        "environments": ["local"],
        "target": {"provider": {"type": "manual", "steps": "roll it in the partner's console"}},
        "consumers": [{"group": "app", "service": "app", "env": {"LEAK_PARTNER_KEY": "value"}}],
    }
    ws.catalog.write_text("---\n" + yaml.safe_dump(data, sort_keys=False))
    (ws.inventory / "group_vars" / "all" / "postgres.yml").write_text(postgres.vars_file.read_text())
    # certificates too: a CA whose key stays in the store, and a certificate delivered as files with its key
    raw = yaml.safe_load(ws.catalog.read_text())
    raw["secrets"].update(
        {
            "int_ca": {
                "kind": "tls_ca",
                "environments": ["local"],
                "target": {"common_name": "leak gate CA"},
                "consumers": [{"group": "worker", "service": "worker", "env": {"TLS_CA_FILE": "trust_bundle"}}],
            },
            "web_tls": {
                "kind": "tls_cert",
                "environments": ["local"],
                "target": {"ca": "int_ca", "common_name": "app.test"},
                "consumers": [{"group": "app", "service": "app", "env": {"TLS_CERT_FILE": "certificate", "TLS_KEY_FILE": "private_key"}}],
            },
        }
    )
    ws.catalog.write_text("---\n" + yaml.safe_dump(raw, sort_keys=False))
    yield LeakGate(ws)


def test_every_playbook_at_vvvv_with_diff_leaks_nothing(gate: LeakGate, tmp_path_factory: pytest.TempPathFactory) -> None:
    known = {name for name, _ in ORDER}
    # record.yml writes the store: before backup.yml, whose archive restore.yml restores (never an older revision)
    others = sorted((p.name for p in (REPO / "playbooks").glob("*.yml") if p.name not in known), key=lambda name: (name != "record.yml", name))
    ws = gate.ws
    audit_vars = {
        # not ws.env_dir: the scanner reports the delivered .env files themselves as hardcoded credentials
        "keywarden_audit_scan_paths": [str(ws.store_dir), str(ws.inventory), str(ws.playbook_dir)],
        "keywarden_audit_scan_owners": [],
        "keywarden_audit_scan_report_dir": str(ws.root / "audit-scan"),
    }
    # backup and restore need keys (an age identity made here, its public key as the recipient) and a place
    keys = tmp_path_factory.mktemp("leak-age")
    identity = pyrage.x25519.Identity.generate()
    (keys / "identity.txt").write_text(str(identity) + "\n")
    (keys / "recipients.txt").write_text(str(identity.to_public()) + "\n")
    backups = str(ws.root / "backups")
    playbook_vars: dict[str, dict[str, Any]] = {
        "audit.yml": audit_vars,
        "backup.yml": {"keywarden_backup_recipients_file": str(keys / "recipients.txt"), "keywarden_backup_dir": backups},
        "restore.yml": {
            "keywarden_restore_archive": "latest",
            "keywarden_restore_identity_file": str(keys / "identity.txt"),
            "keywarden_restore_backup_dir": backups,
        },
        "report.yml": {"keywarden_report_dir": str(ws.root / "report")},
    }
    # record.yml: the key a person got, from a vars file (mode 0600; never on the command line, which the gate reads)
    recorded = keys / "record.yml"
    recorded.write_text(yaml.safe_dump({"keywarden_record_value": secrets.token_urlsafe(32)}))
    recorded.chmod(0o600)
    playbook_args = {"record.yml": ("-e", "keywarden_record_secret=leak_partner_key", "-e", f"@{recorded}")}
    for index, (name, extra) in enumerate([*ORDER, *[(o, playbook_args.get(o, ())) for o in others]]):
        args = (*extra, "-e", json.dumps(playbook_vars[name])) if name in playbook_vars else extra
        proc = gate.run(f"{index}:{name}", REPO / "playbooks" / name, *args)
        # every playbook, the ones added later included: a run that failed proves nothing about leaks
        assert proc.returncode == 0, f"{name} rc {proc.returncode}: " + gate.ws.redact(proc.stdout[-3000:])
    # the same as AWX runs it: ansible-runner job events and artifacts
    data_dir = tmp_path_factory.mktemp("leak-runner")
    run = runner_run(gate.ws, "playbooks/deploy.yml", data_dir, "--diff", verbosity=4)
    assert run.rc == 0
    gate.collect_secrets()
    gate.files(data_dir / "artifacts", gate.ws.root / "ansible.log", gate.ws.audit_log, gate.ws.root / "audit-scan")
    assert (gate.ws.root / "ansible.log").stat().st_size > 0
    assert sorted(p.name for p in (gate.ws.root / "audit-scan").iterdir()) == ["localhost.json"]  # audit.yml scanned the workspace
    assert any(p.name == "job_events" for p in (data_dir / "artifacts").rglob("*"))
    rotated = sum(1 for name in gate.secrets.values() if name == "app_db.password")  # an int: an assertion never shows values
    assert rotated >= 2  # v1 and v2 of the rotated password are both searched for
    keys = sum(1 for name in gate.secrets.values() if name in ("web_tls.private_key", "int_ca.private_key"))
    assert keys >= 4  # both keys of the rotated certificate and of the rotated CA
    assert sum(1 for name in gate.secrets.values() if name == "leak_partner_key.value") >= 2  # the recorded key too
    assert gate.hits() == []


def test_the_gate_catches_a_planted_leak_in_each_channel(gate: LeakGate, tmp_path_factory: pytest.TempPathFactory) -> None:
    """One careless play leaks in each channel the gate watches, each with its own secret or form, so that every
    channel is shown to be caught on its own: stdout (and so the log file and runner artifacts), the command line
    and the environment of a module's child process, the log file alone, the audit log alone."""
    ws = gate.ws
    if not (ws.store_dir / "secrets.vault").exists():
        assert gate.run("plant-init", REPO / "playbooks" / "init.yml", "-e", "keywarden_store_create=true").returncode == 0

    def lookup(name: str) -> str:
        return "lookup('keywarden.secrets.secret', '" + name + "')"

    redis, payments, db = lookup("app_redis.password"), lookup("payments_api_key.value"), lookup("app_db.password")
    log = ws.root / "ansible.log"
    plays = [
        {
            "name": "A careless play",
            "hosts": "all",
            "gather_facts": False,
            "tasks": [
                {"name": "Print it", "ansible.builtin.debug": {"msg": "{{ " + redis + " }}"}},
                {"name": "Print it encoded", "ansible.builtin.debug": {"msg": "{{ " + redis + " | b64encode }}"}},
                {"name": "Print it in a URL", "ansible.builtin.debug": {"msg": "https://x/?p={{ " + redis + " | urlencode }}"}},
                {
                    "name": "Put one on a child's command line for 3 s",
                    "ansible.builtin.command": {"argv": ["/bin/sh", "-c", "sleep 3", "{{ " + payments + " }}"]},
                    "no_log": True,
                    "changed_when": False,
                },
                {
                    "name": "Put one in a child's environment for 3 s",
                    "ansible.builtin.command": {
                        "argv": ["/usr/bin/env", "-u", "PLANTED", "/bin/sh", "-c", 'PLANTED="$0"; export PLANTED; sleep 3', "{{ " + db + " }}"]
                    },
                    "no_log": True,
                    "changed_when": False,
                },
                # a module writes them (lineinfile), so that they reach no other channel: no argv, no environment
                {
                    "name": "Write one into the log file",
                    "ansible.builtin.lineinfile": {"path": str(log), "line": "{{ " + payments + " | b64encode }}"},
                    "no_log": True,
                    "diff": False,
                },
                {
                    "name": "Write one into the audit log",
                    "ansible.builtin.lineinfile": {"path": str(ws.audit_log), "line": "{{ " + db + " | b64encode }}"},
                    "no_log": True,
                    "diff": False,
                },
            ],
        }
    ]
    planted = ws.write_playbook("planted.yml", plays)
    printing = ws.write_playbook("planted-print.yml", [{**plays[0], "tasks": plays[0]["tasks"][:3]}])
    before = dict(gate.captured)
    gate.captured.clear()
    try:
        # through ansible-runner first: once the audit log holds a planted line, every read fails closed
        data_dir = tmp_path_factory.mktemp("leak-planted-runner")
        assert runner_run(ws, str(printing), data_dir).rc == 0
        assert gate.run("planted", planted).returncode == 0
        gate.files(log, ws.audit_log, data_dir / "artifacts")
        hits = gate.hits()
    finally:
        gate.captured = before

    def caught(channel: Callable[[str], bool]) -> set[tuple[str, str]]:
        return {(form, name) for where, form, name in hits if channel(where)}

    assert caught(lambda where: where == "planted stdout") >= {("plain", "app_redis.password"), ("base64", "app_redis.password")}
    assert any(form.startswith("url") for form, name in caught(lambda where: where == "planted stdout") if name == "app_redis.password")
    assert ("plain", "payments_api_key.value") in caught(lambda where: where.startswith("planted /proc/") and "/cmdline" in where)
    assert ("plain", "app_db.password") in caught(lambda where: where.startswith("planted /proc/") and "/environ" in where)
    assert ("base64", "payments_api_key.value") in caught(lambda where: where == str(log))
    assert ("base64", "app_db.password") in caught(lambda where: where == str(ws.audit_log))
    assert ("plain", "app_redis.password") in caught(lambda where: where.startswith(str(data_dir / "artifacts")))
    # each of the last four only reached its own channel: the gate saw it there, not somewhere else first
    assert ("base64", "payments_api_key.value") not in caught(lambda where: where != str(log))
    assert ("base64", "app_db.password") not in caught(lambda where: where != str(ws.audit_log))
