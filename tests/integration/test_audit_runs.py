"""The audit log in real runs: reads fail closed, deliveries are recorded, and a deploy + rotation run through
ansible-runner (as AWX runs it) leaves the expected sequence of events with the AWX actor fields.

Values never reach an assertion: records are compared by event, name, field, version and actor only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import runner_run

from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import load_key, value_hmac, verify

REPO = Path(__file__).resolve().parents[2]

CLIENT = REPO / "scripts" / "secrets" / "vault-password-client"
VERIFY = REPO / "scripts" / "audit" / "verify-log"
LOOKUP = "keywarden.secrets.secret"


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def read_playbook(ws: Any) -> Path:
    return ws.write_playbook(
        "read.yml",
        [
            {
                "name": "Read one secret",
                "hosts": "all",
                "gather_facts": False,
                "tasks": [
                    {
                        "name": "Write it to a file",
                        "ansible.builtin.copy": {"content": "{{ lookup('" + LOOKUP + "', 'app_db.password') }}", "dest": str(ws.root / "out"), "mode": "0600"},
                        "no_log": True,
                        "diff": False,
                    }
                ],
            }
        ],
    )


def test_a_read_is_recorded_with_an_hmac_and_the_chain_verifies(ready: Any) -> None:
    result = ready.run(read_playbook(ready))
    assert result.returncode == 0, result.explain()
    reads = [r for r in records(ready.audit_log) if r["event"] == "read"]
    assert [(r["secret"], r["field"], r["stage"], r["version"], r["host"], r["outcome"]) for r in reads] == [
        ("app_db", "password", "current", 1, "localhost", "ok")
    ]
    key = load_key(str(ready.audit_key), create=False)
    assert reads[0]["value_hmac"] == value_hmac(key, (ready.root / "out").read_text())
    assert reads[0]["actor"]["user"]
    assert reads[0]["actor"]["git_commit"] is None  # this playbook lives in a temp dir, outside any git work tree
    assert not ready.leaks(ready.audit_log.read_text())
    out = subprocess.run([sys.executable, str(VERIFY), "--key-file", str(ready.audit_key), str(ready.audit_log)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(
    ("log", "reason"),
    [
        pytest.param("/dev/full", "No space left on device", id="disk-full"),
        pytest.param("{root}", "Is a directory", id="not-writable"),
    ],
)
def test_a_read_fails_closed_when_the_audit_log_cannot_be_written(ready: Any, log: str, reason: str) -> None:
    result = ready.run(read_playbook(ready), "-e", f"keywarden_audit_log={log.format(root=ready.root)}")
    assert result.returncode != 0
    line = result.error_line("secret read refused", "fail closed")
    assert line is not None, result.explain()
    assert reason in line
    assert not (ready.root / "out").exists()
    assert not ready.leaks(result.output)


def test_a_lost_audit_key_is_not_made_anew_for_the_log_in_place(ready: Any) -> None:
    """Issue 10 item 2: the key gone (or KEYWARDEN_AUDIT_KEY_FILE mistyped) with a log in place stops the run."""
    first = ready.run(read_playbook(ready))
    assert first.returncode == 0, first.explain()
    (ready.root / "out").unlink()
    log_before = ready.audit_log.read_bytes()
    for key_file in (ready.audit_key, ready.root / "typo.key"):
        if key_file == ready.audit_key:
            key_file.rename(ready.root / "saved.key")
        result = ready.run(read_playbook(ready), "-e", f"keywarden_audit_key_file={key_file}")
        assert result.returncode != 0, result.explain()
        line = result.error_line("[ERROR]", f"audit key {key_file} does not exist, but audit log {ready.audit_log} does")
        assert line is not None, result.explain()
        assert "restore the key file" in line and "KEYWARDEN_AUDIT_KEY_FILE" in line
        assert not key_file.exists()
        assert not (ready.root / "out").exists()
        assert ready.audit_log.read_bytes() == log_before


def test_deploy_records_each_delivered_field(ready: Any) -> None:
    result = ready.run("playbooks/deploy.yml")
    assert result.returncode == 0, result.explain()
    deploys = [r for r in records(ready.audit_log) if r["event"] == "deploy"]
    delivered = {(r["detail"]["service"], r["detail"]["var"], r["secret"], r["field"], r["version"]) for r in deploys}
    assert ("app", "DB_PASSWORD", "app_db", "password", 1) in delivered
    assert ("worker", "DB_PASSWORD", "app_db", "password", 1) in delivered
    assert all(r["detail"]["changed"] for r in deploys)
    assert all(r["detail"]["file"].startswith(str(ready.env_dir)) for r in deploys)
    # a second run delivers nothing new: the records say unchanged, the recap says changed=0
    again = ready.run("playbooks/deploy.yml")
    assert again.recap().get("changed") == 0, again.explain()
    assert not any(r["detail"]["changed"] for r in records(ready.audit_log)[len(records(ready.audit_log)) - len(deploys) :] if r["event"] == "deploy")
    assert verify(str(ready.audit_log), load_key(str(ready.audit_key), create=False))[1] is None


# ---- ansible-runner, as AWX runs a job ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def awx_runs(make_workspace: Callable[..., Any], postgres: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    """site.yml then a rotation of app_db, each as an ansible-runner job carrying AWX's job fields."""
    ws = make_workspace("awx")
    ws.set_password("local")
    (ws.inventory / "group_vars" / "all" / "postgres.yml").write_text(postgres.vars_file.read_text())
    data_dir = tmp_path_factory.mktemp("runner")
    runs = {}
    jobs = (("site", "playbooks/site.yml", {"keywarden_store_create": True}), ("rotate", "playbooks/rotate.yml", {"keywarden_rotate_only": "app_db"}))
    for name, playbook, extravars in jobs:
        start = len(records(ws.audit_log)) if ws.audit_log.exists() else 0
        run = runner_run(ws, playbook, data_dir / name, extravars=extravars)
        assert run.rc == 0, ws.redact(run.stdout.read()[-4000:])
        runs[name] = {"records": records(ws.audit_log)[start:], "artifacts": Path(run.config.artifact_dir)}
    return ws, runs


def test_runner_jobs_record_the_awx_actor(awx_runs: tuple[Any, dict[str, Any]]) -> None:
    ws, runs = awx_runs
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    for run in runs.values():
        assert run["records"]
        for record in run["records"]:
            actor = record["actor"]
            assert (actor["awx_job_id"], actor["awx_job_template"], actor["awx_user"], actor["git_commit"]) == ("4242", "keywarden rotate", "ops-alice", commit)
            assert actor["user"]
            assert record["environment"] == "local"
    assert verify(str(ws.audit_log), load_key(str(ws.audit_key), create=False))[1] is None


def test_site_job_records_store_then_reads_then_deploys(awx_runs: tuple[Any, dict[str, Any]]) -> None:
    events = [r["event"] for r in awx_runs[1]["site"]["records"]]
    assert events[0] == "store"
    assert events.index("read") > events.index("store")
    assert "deploy" in events
    assert events.index("deploy") > max(i for i, e in enumerate(events) if e == "store")


def test_rotation_job_records_the_protocol_in_order(awx_runs: tuple[Any, dict[str, Any]]) -> None:
    ws, runs = awx_runs
    rotation = runs["rotate"]["records"]

    def collapse(items: list[dict[str, Any]]) -> list[str]:
        out: list[str] = []
        for r in items:
            label = r["event"] + (f":{r['stage']}" if r["event"] == "read" else "")
            if not out or out[-1] != label:
                out.append(label)
        return out

    sequence = collapse([r for r in rotation if r["secret"] in ("app_db", None)])
    # the lock is taken by the same store write as the pending value: its record follows that write's records
    expected = ["rotate.create", "rotate.lock", "read:pending", "rotate.mark", "read:pending", "deploy", "rotate.finish", "rotate.unlock"]
    positions = [sequence.index(step) if step in sequence else -1 for step in dict.fromkeys(expected)]
    assert -1 not in positions, sequence
    assert sequence.index("rotate.create") < sequence.index("rotate.lock") < sequence.index("rotate.mark") < sequence.index("deploy")
    assert sequence.index("deploy") < sequence.index("rotate.finish") < sequence.index("rotate.unlock")
    created = [r for r in rotation if r["event"] == "rotate.create" and r["field"] == "password"]
    finished = [r for r in rotation if r["event"] == "rotate.finish" and r["stage"] == "current" and r["field"] == "password"]
    assert [(r["secret"], r["version"]) for r in created] == [("app_db", 2)]
    assert [(r["secret"], r["version"]) for r in finished] == [("app_db", 2)]
    # the value that became current is the one created as pending (same HMAC), and the one delivered
    assert created[0]["value_hmac"] == finished[0]["value_hmac"]
    delivered = {r["value_hmac"] for r in rotation if r["event"] == "deploy" and r["secret"] == "app_db" and r["field"] == "password"}  # noqa: S105 - a secret name, not a value
    assert delivered == {created[0]["value_hmac"]}
    marks = [r["detail"].get("step") for r in rotation if r["event"] == "rotate.mark"]
    assert "distributing" in marks
