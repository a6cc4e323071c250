"""scripts/audit/scan-secrets as users run it: exit codes, formats, baseline, allow comments, git history, bad input.

Credentials are generated at run time; assertions look at rules, paths, lines and the absence of values.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCAN = REPO / "scripts" / "audit" / "scan-secrets"


def _pw() -> str:
    return "K" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(23))


def scan(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCAN), *args], cwd=cwd, check=False, capture_output=True, text=True, timeout=120)


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, list[str]]:
    values = [_pw() for _ in range(3)]
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text(f"---\napp_db_password: {values[0]}\napp_port: 8080\n")
    (tmp_path / ".env").write_text(f"REDIS_PASSWORD={values[1]}\nAPP_ENV=production\n")
    (tmp_path / "clean.yml").write_text('---\ndb_password: "{{ vault_db_password }}"\n')
    (tmp_path / "app.ini").write_text(f"[db]\npassword = {values[2]}\n")
    return tmp_path, values


def _leaks(proc: subprocess.CompletedProcess[str], values: list[str]) -> bool:
    return any(v in proc.stdout or v in proc.stderr for v in values)


def test_human_json_sarif_and_exit_codes(tree: tuple[Path, list[str]]) -> None:
    root, values = tree
    human = scan(".", cwd=root)
    assert human.returncode == 1, human.stderr
    assert "group_vars/all.yml:2: hardcoded-password (high): app_db_password: ********" in human.stdout
    assert not _leaks(human, values)

    as_json = scan("--format", "json", ".", cwd=root)
    assert as_json.returncode == 1
    findings = json.loads(as_json.stdout)
    assert sorted((f["path"], f["line"], f["rule"]) for f in findings) == [
        ("./.env", 1, "hardcoded-password"),
        ("./app.ini", 2, "hardcoded-password"),
        ("./group_vars/all.yml", 2, "hardcoded-password"),
    ]
    assert all({"path", "line", "rule", "severity", "fingerprint"} <= set(f) for f in findings)
    assert not _leaks(as_json, values)

    sarif = scan("--format", "sarif", ".", cwd=root)
    doc = json.loads(sarif.stdout)
    assert doc["version"] == "2.1.0" and len(doc["runs"][0]["results"]) == 3
    assert not _leaks(sarif, values)

    clean = scan("clean.yml", cwd=root)
    assert clean.returncode == 0 and clean.stdout == ""
    missing = scan("no-such-dir", cwd=root)
    assert missing.returncode == 2 and "no-such-dir" in missing.stderr


def test_baseline_accepts_known_findings_only(tree: tuple[Path, list[str]]) -> None:
    root, values = tree
    made = scan("--update-baseline", ".secrets-baseline.json", ".", cwd=root)
    assert made.returncode == 0, made.stderr
    baseline = (root / ".secrets-baseline.json").read_text()
    assert not any(v in baseline for v in values)
    assert scan("--baseline", ".secrets-baseline.json", "--exclude", ".secrets-baseline.json", ".", cwd=root).returncode == 0
    # the accepted value moving lines stays accepted; a new credential does not
    text = (root / "group_vars" / "all.yml").read_text()
    (root / "group_vars" / "all.yml").write_text("---\n# moved\n" + text[4:] + f"smtp_password: {_pw()}\n")
    again = scan("--format", "json", "--baseline", ".secrets-baseline.json", ".", cwd=root)
    assert again.returncode == 1
    assert [(f["path"], f["line"]) for f in json.loads(again.stdout)] == [("./group_vars/all.yml", 5)]


def test_explain_names_the_rule_without_the_value(tree: tuple[Path, list[str]]) -> None:
    root, values = tree
    plain = scan(".", cwd=root)
    explained = scan("--explain", ".", cwd=root)
    assert explained.returncode == 1
    lines = explained.stdout.splitlines()
    # each finding line is followed by its explanation, which starts with the finding's rule
    assert [line for line in lines if not line.startswith("    why: ")] == plain.stdout.splitlines()
    whys = [(lines[i].split(": ")[1].split(" ")[0], lines[i + 1]) for i in range(0, len(lines), 2)]
    assert len(whys) == 3 and all(why.startswith(f"    why: {rule}: ") for rule, why in whys)
    assert not _leaks(explained, values)
    as_json = json.loads(scan("--format", "json", ".", cwd=root).stdout)
    assert all(f["explain"].startswith(f["rule"] + ": ") for f in as_json)
    sarif = json.loads(scan("--format", "sarif", ".", cwd=root).stdout)
    assert all(r["properties"]["explain"] for r in sarif["runs"][0]["results"])


def test_allow_comment(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(f"---\ntest_password: {_pw()}  # keywarden: allow (fixture for the login test)\n")
    assert scan("a.yml", cwd=tmp_path).returncode == 0


def test_git_files_and_git_history(tmp_path: Path) -> None:
    value = _pw()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("ignored.env\n")
    (tmp_path / "ignored.env").write_text(f"DB_PASSWORD={_pw()}\n")
    (tmp_path / "app.yml").write_text(f"---\nname: app\napi_token: {value}\n")
    subprocess.run([*git, "-C", str(tmp_path), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(tmp_path), "commit", "-qm", "add"], check=True)
    (tmp_path / "app.yml").write_text('---\nname: app\napi_token: "{{ vault_api_token }}"\n')
    subprocess.run([*git, "-C", str(tmp_path), "commit", "-qam", "fix"], check=True)

    assert scan("--git-files", ".", cwd=tmp_path).returncode == 0  # ignored.env is not scanned, app.yml is clean now
    assert scan(".", cwd=tmp_path).returncode == 1  # without --git-files the ignored file is
    history = scan("--git-files", "--git-history", "--format", "json", ".", cwd=tmp_path)
    assert history.returncode == 1
    found = json.loads(history.stdout)
    assert [(f["path"].split(":", 1)[1], f["line"], f["rule"]) for f in found] == [("app.yml", 3, "hardcoded-token")]
    assert value not in history.stdout


def test_bad_input_warns_and_scans_the_rest(tmp_path: Path) -> None:
    value = _pw()
    (tmp_path / "good.env").write_text(f"DB_PASSWORD={value}\n")
    (tmp_path / "binary.bin").write_bytes(b"\x00\x01password=" + os.urandom(64))
    (tmp_path / "latin1.ini").write_bytes(b"[x]\nname = caf\xe9\npassword = " + _pw().encode() + b"\n")  # keywarden: allow (generated)
    (tmp_path / "huge.yml").write_bytes(b"a: b\n" * 300_000)
    # a file whose read fails even for root (tests run as root in CI): /proc/self/mem at offset 0 gives EIO
    (tmp_path / "unreadable.env").symlink_to("/proc/self/mem")
    (tmp_path / "loop").mkdir()
    (tmp_path / "loop" / "self").symlink_to(tmp_path / "loop")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    proc = scan("--format", "json", "--follow-symlinks", "--max-file-size", "1000000", ".", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    found = sorted((f["path"], f["line"]) for f in json.loads(proc.stdout))
    assert found == [("./good.env", 1), ("./latin1.ini", 3)]
    assert "binary.bin: binary file: skipped" in proc.stderr
    assert "huge.yml: 1500000 bytes, over the 1000000-byte limit: skipped" in proc.stderr
    assert "latin1.ini: not valid UTF-8" in proc.stderr
    assert "symlink loop" in proc.stderr
    assert "dangling" in proc.stderr
    assert "unreadable.env: cannot be read" in proc.stderr
    assert value not in proc.stdout + proc.stderr


def test_repository_self_scan_is_clean() -> None:
    proc = scan("--git-files", ".", cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
