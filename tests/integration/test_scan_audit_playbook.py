"""playbooks/audit.yml on this machine (local connection): findings and loose secret files fail the host, the
report on the controller holds no value, and --check runs the same read-only scan."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import string
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, scan_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    inventory = tmp_path / "hosts"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    extra_vars = {
        "keywarden_audit_scan_paths": [str(scan_dir)],
        "keywarden_audit_scan_report_dir": str(tmp_path / "reports"),
        "keywarden_audit_scan_owners": [pwd.getpwuid(os.getuid()).pw_name],
        "keywarden_audit_scan_become": False,
    }
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    playbook = str(REPO / "playbooks" / "audit.yml")
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), playbook, "-e", json.dumps(extra_vars), *extra]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def test_audit_reports_findings_and_loose_modes_without_values(tmp_path: Path) -> None:
    value = "P" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(23))
    stack = tmp_path / "srv" / "app"
    stack.mkdir(parents=True)
    env_file = stack / ".env"
    env_file.write_text(f"DB_PASSWORD={value}\n")
    env_file.chmod(0o644)
    good = stack / "worker.env"
    good.write_text("DB_PASSWORD=${DB_PASSWORD:?}\n")
    good.chmod(0o600)

    result = _run(tmp_path, tmp_path / "srv")
    assert result.returncode != 0
    assert "1 hardcoded credentials and 1 loosely protected secret files" in result.stdout
    assert value not in result.stdout + result.stderr
    report_text = (tmp_path / "reports" / "localhost.json").read_text()
    assert value not in report_text
    report = json.loads(report_text)
    assert [(f["path"], f["line"], f["rule"]) for f in report["findings"]] == [(str(env_file), 1, "hardcoded-password")]
    assert report["permission_problems"] == [{"path": str(env_file), "problems": ["mode 0644 is wider than 0640"]}]
    assert oct((tmp_path / "reports" / "localhost.json").stat().st_mode & 0o777) == "0o600"

    checked = _run(tmp_path, tmp_path / "srv", "--check")
    assert checked.returncode != 0 and "1 hardcoded credentials" in checked.stdout

    # moved into a reference and tightened: the host passes
    env_file.write_text("DB_PASSWORD=${DB_PASSWORD:?}\n")
    env_file.chmod(0o600)
    clean = _run(tmp_path, tmp_path / "srv")
    assert clean.returncode == 0, clean.stdout[-2000:]
    assert json.loads((tmp_path / "reports" / "localhost.json").read_text())["findings"] == []
