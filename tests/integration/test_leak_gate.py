"""Leak gate: every playbook of the project runs at -vvvv with --diff, and no secret value of the store (nor its
base64 or URL-encoded forms, nor the vault password or the audit key) appears in what the run leaves behind:
stdout, stderr, the Ansible log file, the audit log, ansible-runner artifacts, and the command lines and
environments of the ansible processes while they run. A planted leak proves the gate can fail.

Hits are reported as (where, which form, which secret name): never the value.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_audit_runs import runner_run

REPO = Path(__file__).resolve().parents[2]
CLIENT = REPO / "scripts" / "secrets" / "vault-password-client"
# known order (each needs the one before); any other playbook that appears in playbooks/ runs after them
ORDER = [
    # the first two make the environment's store on purpose (a missing store stops every playbook otherwise)
    ("catalog.yml", ("-e", "keywarden_store_create=true")),
    ("init.yml", ("-e", "keywarden_store_create=true")),
    ("provision.yml", ()),
    ("deploy.yml", ()),
    ("site.yml", ()),
    ("rotate.yml", ("-e", "keywarden_rotate_only=app_db")),
    ("rotate.yml", ("--check",)),
]


def forms(value: str) -> dict[str, str]:
    raw = value.encode()
    return {
        "plain": value,
        "base64": base64.b64encode(raw).decode(),
        "base64url": base64.urlsafe_b64encode(raw).decode(),
        "url": urllib.parse.quote(value, safe=""),
        "url+": urllib.parse.quote_plus(value),
    }


class Sampler:
    """Collects the command lines and environments of every ansible process while a run lasts (what `ps e` shows)."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if b"ansible" not in cmdline:
                        continue
                    environ = Path(f"/proc/{pid}/environ").read_bytes()
                except OSError:
                    continue
                self.seen[f"/proc/{pid}/cmdline"] = cmdline.replace(b"\0", b" ").decode(errors="replace")
                self.seen[f"/proc/{pid}/environ"] = environ.replace(b"\0", b"\n").decode(errors="replace")


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
                    if len(str(value)) >= 8 and field != "username":
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
    (ws.inventory / "group_vars" / "all" / "postgres.yml").write_text(postgres.vars_file.read_text())
    yield LeakGate(ws)


def test_every_playbook_at_vvvv_with_diff_leaks_nothing(gate: LeakGate, tmp_path_factory: pytest.TempPathFactory) -> None:
    known = {name for name, _ in ORDER}
    others = sorted(p.name for p in (REPO / "playbooks").glob("*.yml") if p.name not in known)
    for index, (name, extra) in enumerate([*ORDER, *[(o, ()) for o in others]]):
        proc = gate.run(f"{index}:{name}", REPO / "playbooks" / name, *extra)
        if name in known:
            assert proc.returncode == 0, f"{name} rc {proc.returncode}: " + gate.ws.redact(proc.stdout[-3000:])
    # the same as AWX runs it: ansible-runner job events and artifacts
    data_dir = tmp_path_factory.mktemp("leak-runner")
    run = runner_run(gate.ws, "playbooks/deploy.yml", data_dir, "--diff", verbosity=4)
    assert run.rc == 0
    gate.collect_secrets()
    gate.files(data_dir / "artifacts", gate.ws.root / "ansible.log", gate.ws.audit_log)
    assert (gate.ws.root / "ansible.log").stat().st_size > 0
    assert any(p.name == "job_events" for p in (data_dir / "artifacts").rglob("*"))
    rotated = sum(1 for name in gate.secrets.values() if name == "app_db.password")  # an int: an assertion never shows values
    assert rotated >= 2  # v1 and v2 of the rotated password are both searched for
    assert gate.hits() == []


def test_the_gate_catches_a_planted_leak_in_each_form(gate: LeakGate) -> None:
    ws = gate.ws
    if not (ws.store_dir / "secrets.vault").exists():
        assert gate.run("plant-init", REPO / "playbooks" / "init.yml", "-e", "keywarden_store_create=true").returncode == 0
    lookup = "lookup('keywarden.secrets.secret', 'app_redis.password')"
    planted = ws.write_playbook(
        "planted.yml",
        [
            {
                "name": "A careless play",
                "hosts": "all",
                "gather_facts": False,
                "tasks": [
                    {"name": "Print it", "ansible.builtin.debug": {"msg": "{{ " + lookup + " }}"}},
                    {"name": "Print it encoded", "ansible.builtin.debug": {"msg": "{{ " + lookup + " | b64encode }}"}},
                    {"name": "Print it in a URL", "ansible.builtin.debug": {"msg": "https://x/?p={{ " + lookup + " | urlencode }}"}},
                ],
            }
        ],
    )
    before = dict(gate.captured)
    gate.captured.clear()
    try:
        assert gate.run("planted", planted).returncode == 0
        hits = gate.hits()
    finally:
        gate.captured = before
    assert {(form, name) for where, form, name in hits if where == "planted stdout"} >= {("plain", "app_redis.password"), ("base64", "app_redis.password")}
    assert any(form.startswith("url") and name == "app_redis.password" for _, form, name in hits)
