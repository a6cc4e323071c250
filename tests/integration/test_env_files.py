"""keywarden.secrets.env_files through role keywarden_env, in real ansible-playbook runs without facts.

Real files, modes, owners and inodes in a temp workspace; the audit log checked with scripts/audit/verify-log.
Values never reach an assertion: files are compared by SHA-256 digest, records by names, versions and HMACs.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import secrets
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import REPO, Workspace, digest

from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import load_key, value_hmac
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import get_field

VERIFY = REPO / "scripts" / "audit" / "verify-log"
# service -> its variables; variable -> (secret, field) in the store (DB_NAME is the catalog's literal)
SERVICES = {
    "app": ("DB_NAME", "DB_PASSWORD", "DB_USER", "PAYMENTS_API_KEY", "REDIS_PASSWORD"),
    "worker": ("DB_NAME", "DB_PASSWORD", "DB_USER"),
}
SOURCES = {
    "DB_USER": ("app_db", "username"),
    "DB_PASSWORD": ("app_db", "password"),
    "REDIS_PASSWORD": ("app_redis", "password"),
    "PAYMENTS_API_KEY": ("payments_api_key", "value"),
}
DELIVER = [
    {
        "name": "Deliver .env files without facts",
        "hosts": "all",
        "gather_facts": False,
        "roles": [{"role": "keywarden_env"}],
    }
]


def deliver(ws: Workspace, *extra: str) -> Any:
    """Run role keywarden_env on the workspace (no facts); the output never holds a value."""
    playbook = ws.playbook_dir / "deliver.yml"
    if not playbook.exists():
        ws.write_playbook("deliver.yml", DELIVER)
    result = ws.run(playbook, *extra)
    leaked = ws.leaks(result.output)
    assert not leaked, "a secret value appeared in the playbook output"
    assert "Gathering Facts" not in result.output
    return result


def expected_digest(ws: Workspace, service: str) -> str:
    """SHA-256 of <service>.env as the role renders it from the store today (written out here, not by the plugin)."""
    data = ws.store().read()
    lines = ["#", "# Ansible managed", "#", f"# {service}: rendered by keywarden from the {ws.environment} store. Mode 0600."]
    for var in SERVICES[service]:
        value = "orders" if var == "DB_NAME" else get_field(data, *SOURCES[var], stage="live")
        lines.append(f"{var}={value}")
    return digest("\n".join(lines) + "\n")


def identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def records(ws: Workspace, event: str | None = None) -> list[dict[str, Any]]:
    if not ws.audit_log.exists():
        return []
    lines = [json.loads(line) for line in ws.audit_log.read_text().splitlines()]
    return [r for r in lines if event is None or r["event"] == event]


def set_value(ws: Workspace, secret: str, field: str) -> None:
    with ws.store().update() as data:
        data["secrets"][secret]["current"]["fields"][field] = secrets.token_urlsafe(32)


def assert_refused(ws: Workspace, result: Any, *fragments: str) -> None:
    assert result.returncode != 0, result.explain()
    line = result.error_line("[ERROR]", *fragments)
    assert line is not None, result.explain()


# ---- delivery ----------------------------------------------------------------------------------------------------
def test_files_are_0600_owned_as_configured_and_hold_the_store_values(ready: Workspace) -> None:
    result = deliver(ready)
    assert result.returncode == 0, result.explain()
    assert result.recap()["changed"] == 1
    assert sorted(p.name for p in ready.env_dir.iterdir()) == ["app.env", "worker.env"]
    dir_st = ready.env_dir.stat()
    assert (stat.S_IMODE(dir_st.st_mode), dir_st.st_uid, dir_st.st_gid) == (0o750, 0, os.getegid())
    for service in SERVICES:
        path = ready.env_dir / f"{service}.env"
        st = path.stat()
        # owner and group empty: the account the play runs as
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, os.geteuid(), os.getegid())
        assert digest(path.read_bytes()) == expected_digest(ready, service)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another account needs root")
def test_files_are_given_to_the_configured_account(ready: Workspace) -> None:
    account = pwd.getpwnam("nobody")
    group = grp.getgrgid(account.pw_gid).gr_name
    result = deliver(ready, "-e", "keywarden_env_owner=nobody", "-e", f"keywarden_env_group={group}")
    assert result.returncode == 0, result.explain()
    assert (ready.env_dir.stat().st_uid, ready.env_dir.stat().st_gid) == (0, account.pw_gid)
    for service in SERVICES:
        st = (ready.env_dir / f"{service}.env").stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, account.pw_uid, account.pw_gid)
    # numbers work as well as names, and are the same account: nothing to change
    again = deliver(ready, "-e", f"keywarden_env_owner={account.pw_uid}", "-e", f"keywarden_env_group={account.pw_gid}")
    assert again.returncode == 0, again.explain()
    assert again.recap()["changed"] == 0, again.explain()
    # back to the default of the workspace (the account the play runs as): re-owned
    back = deliver(ready)
    assert back.returncode == 0, back.explain()
    assert back.recap()["changed"] == 1
    assert (ready.env_dir / "app.env").stat().st_uid == os.geteuid()


def test_second_run_changes_nothing_and_rewrites_nothing(deployed: Workspace) -> None:
    before = deployed.snapshot()
    identities = {p.name: identity(p) for p in deployed.env_dir.iterdir()}
    start = len(records(deployed))
    result = deliver(deployed)
    assert result.returncode == 0, result.explain()
    assert result.recap()["changed"] == 0
    delivered = {(r["detail"]["service"], r["detail"]["changed"]) for r in records(deployed)[start:] if r["event"] == "deploy"}
    assert delivered == {("app", False), ("worker", False)}
    assert {p.name: identity(p) for p in deployed.env_dir.iterdir()} == identities
    after = deployed.snapshot()
    assert after == before


def test_a_changed_value_rewrites_only_the_files_that_hold_it(deployed: Workspace) -> None:
    worker = deployed.env_dir / "worker.env"
    worker_before, app_before = identity(worker), identity(deployed.env_dir / "app.env")
    set_value(deployed, "app_redis", "password")  # consumed by app only
    start = len(records(deployed))
    result = deliver(deployed)
    assert result.returncode == 0, result.explain()
    assert result.recap()["changed"] == 1
    assert identity(deployed.env_dir / "app.env") != app_before
    assert digest((deployed.env_dir / "app.env").read_bytes()) == expected_digest(deployed, "app")
    assert identity(worker) == worker_before
    assert digest(worker.read_bytes()) == expected_digest(deployed, "worker")
    changed = {(r["detail"]["service"], r["detail"]["changed"]) for r in records(deployed)[start:] if r["event"] == "deploy"}
    assert changed == {("app", True), ("worker", False)}


def test_a_mode_drifted_file_is_fixed(deployed: Workspace) -> None:
    app, worker = deployed.env_dir / "app.env", deployed.env_dir / "worker.env"
    os.chmod(app, 0o644)
    os.chmod(deployed.env_dir, 0o700)
    worker_before = identity(worker)
    result = deliver(deployed)
    assert result.returncode == 0, result.explain()
    assert result.recap()["changed"] == 1
    assert stat.S_IMODE(app.stat().st_mode) == 0o600
    assert stat.S_IMODE(deployed.env_dir.stat().st_mode) == 0o750
    assert digest(app.read_bytes()) == expected_digest(deployed, "app")
    assert identity(worker) == worker_before


def test_a_symlink_in_place_of_a_file_is_replaced_not_followed(deployed: Workspace) -> None:
    decoy = deployed.root / "decoy"
    decoy.write_text("decoy\n")
    app = deployed.env_dir / "app.env"
    app.unlink()
    app.symlink_to(decoy)
    result = deliver(deployed)
    assert result.returncode == 0, result.explain()
    assert not app.is_symlink()
    assert digest(app.read_bytes()) == expected_digest(deployed, "app")
    assert decoy.read_text() == "decoy\n"


# ---- check mode --------------------------------------------------------------------------------------------------
def test_check_mode_writes_nothing(ready: Workspace) -> None:
    result = deliver(ready, "--check")
    assert result.returncode == 0, result.explain()
    assert result.recap()["changed"] == 1
    assert not ready.env_dir.exists()
    assert records(ready, "deploy") == []


def test_check_mode_reports_a_change_and_writes_nothing(deployed: Workspace) -> None:
    set_value(deployed, "app_db", "password")
    before = deployed.snapshot()
    deploys = len(records(deployed, "deploy"))
    result = deliver(deployed, "--check")
    assert result.returncode == 0, result.explain()
    assert result.recap()["changed"] == 1
    after = deployed.snapshot()
    assert after == before
    assert len(records(deployed, "deploy")) == deploys
    # the values compared on the host were read: on the record as reads
    assert {(r["secret"], r["field"]) for r in records(deployed, "read")} >= {("app_db", "password"), ("app_db", "username")}


# ---- refusals: one line naming what to fix, nothing written --------------------------------------------------------
def test_a_missing_field_fails_before_anything_is_written(deployed: Workspace) -> None:
    set_value(deployed, "app_db", "password")  # worker.env would change too: all or nothing
    with deployed.store().update() as data:
        del data["secrets"]["app_redis"]["current"]["fields"]["password"]
    before = deployed.snapshot()
    deploys = len(records(deployed, "deploy"))
    result = deliver(deployed)
    assert_refused(deployed, result, "app.env REDIS_PASSWORD: secret 'app_redis' has no field 'password'", "no .env file was written")
    after = deployed.snapshot()
    assert after == before
    assert len(records(deployed, "deploy")) == deploys


def test_a_missing_secret_fails_before_anything_is_written(ready: Workspace) -> None:
    with ready.store().update() as data:
        del data["secrets"]["payments_api_key"]
    result = deliver(ready)
    assert_refused(ready, result, "app.env PAYMENTS_API_KEY: secret 'payments_api_key' is not in the local store", "run playbooks/init.yml")
    assert not ready.env_dir.exists()


@pytest.mark.parametrize(
    ("variable", "fragments"),
    [
        pytest.param("keywarden_env_owner", ["owner (keywarden_env_owner) 'kw-no-such-account' is not a user on this host"], id="owner"),
        pytest.param("keywarden_env_group", ["group (keywarden_env_group) 'kw-no-such-account' is not a group on this host"], id="group"),
    ],
)
def test_an_unknown_account_fails_with_nothing_written(ready: Workspace, deployed: Workspace, variable: str, fragments: list[str]) -> None:
    # nothing there yet: no directory appears
    result = deliver(ready, "-e", f"{variable}=kw-no-such-account")
    assert_refused(ready, result, *fragments, "nothing written")
    assert not ready.env_dir.exists()
    # delivered before, and a value changed since: the files stay as they were, no delivery is recorded
    set_value(deployed, "app_db", "password")
    before = deployed.snapshot()
    deploys = len(records(deployed, "deploy"))
    result = deliver(deployed, "-e", f"{variable}=kw-no-such-account")
    assert_refused(deployed, result, *fragments)
    after = deployed.snapshot()
    assert after == before
    assert len(records(deployed, "deploy")) == deploys


def test_a_write_failure_keeps_no_temp_file_and_records_what_was_written(deployed: Workspace) -> None:
    set_value(deployed, "app_db", "password")  # both files change
    worker = deployed.env_dir / "worker.env"
    worker.unlink()
    worker.mkdir()
    (worker / "keep").write_text("x\n")  # a directory in the way of worker.env: its rename fails
    start = len(records(deployed))
    result = deliver(deployed)
    assert_refused(deployed, result, f"{worker} cannot be written (Is a directory)", "written before the failure: app.env")
    assert sorted(p.name for p in deployed.env_dir.iterdir()) == ["app.env", "worker.env"]  # no temp file left
    assert digest((deployed.env_dir / "app.env").read_bytes()) == expected_digest(deployed, "app")
    delivered = {(r["detail"]["service"], r["detail"]["changed"]) for r in records(deployed)[start:] if r["event"] == "deploy"}
    assert delivered == {("app", True)}


# ---- audit -------------------------------------------------------------------------------------------------------
def test_the_delivery_is_on_the_audit_log(ready: Workspace) -> None:
    result = deliver(ready)
    assert result.returncode == 0, result.explain()
    key = load_key(str(ready.audit_key), create=False)
    data = ready.store().read()
    deploys = records(ready, "deploy")
    got = sorted((r["detail"]["service"], r["detail"]["var"], r["secret"], r["field"], r["stage"], r["version"], r["value_hmac"]) for r in deploys)
    wanted = sorted(
        (service, var, *SOURCES[var], "current", 1, value_hmac(key, get_field(data, *SOURCES[var])))
        for service, variables in SERVICES.items()
        for var in variables
        if var in SOURCES
    )
    assert got == wanted
    assert all(r["detail"]["changed"] and r["detail"]["file"] == str(ready.env_dir / f"{r['detail']['service']}.env") for r in deploys)
    assert all(r["host"] == "localhost" and r["outcome"] == "ok" for r in deploys)
    # every value sent to the host was read on the record first, once per host
    reads = [(r["secret"], r["field"]) for r in records(ready, "read")]
    assert sorted(reads) == sorted(set(SOURCES.values()))
    assert max(r["seq"] for r in records(ready, "read")) < min(r["seq"] for r in deploys)
    assert not ready.leaks(ready.audit_log.read_text())
    out = subprocess.run([sys.executable, str(VERIFY), "--key-file", str(ready.audit_key), str(ready.audit_log)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_an_unwritable_audit_log_stops_the_delivery_before_any_value_leaves(ready: Workspace) -> None:
    result = deliver(ready, "-e", f"keywarden_audit_log={ready.root}")  # a directory: cannot be written
    assert_refused(ready, result, "secret read refused", "fail closed")
    assert not ready.env_dir.exists()


# ---- quoting: values from migration or providers, not only from the generator ---------------------------------------
def read_back(path: Path) -> dict[str, dict[str, str]]:
    """{reader: {name: sha256(value)}} of an .env file as python-dotenv and bash `set -a; . FILE` read it."""
    from dotenv import dotenv_values  # noqa: PLC0415 - only these tests need it

    digest_env = "import hashlib, json, os\nprint(json.dumps({k: hashlib.sha256(os.fsencode(v)).hexdigest() for k, v in os.environ.items()}))\n"
    shell = subprocess.run(
        ["bash", "-c", 'set -a; . "$1"; exec "$2" -c "$3"', "bash", str(path), sys.executable, digest_env], capture_output=True, text=True, check=False
    )
    assert shell.returncode == 0, shell.stderr[-500:]
    return {"dotenv": {k: digest(v or "") for k, v in dotenv_values(path).items()}, "bash": json.loads(shell.stdout)}


def set_exact(ws: Workspace, secret: str, field: str, value: str) -> None:
    with ws.store().update() as data:
        data["secrets"][secret]["current"]["fields"][field] = value


def test_a_value_with_quotes_spaces_and_dollars_reads_back_exactly(deployed: Workspace) -> None:
    # what a migrated or provider-issued key may hold: every character the old unquoted writer lost
    value = f'{secrets.token_hex(6)} #"x\\y$z`w;&|<>(){{}}*?~ {secrets.token_hex(6)}'
    set_exact(deployed, "payments_api_key", "value", value)
    result = deliver(deployed)
    assert result.returncode == 0, result.explain()
    for reader, got in read_back(deployed.env_dir / "app.env").items():
        assert got["PAYMENTS_API_KEY"] == digest(value), reader
        assert got["DB_PASSWORD"] == digest(get_field(deployed.store().read(), "app_db", "password", stage="live")), reader
    assert deliver(deployed).recap()["changed"] == 0  # the quoting is stable: a second run rewrites nothing


def test_a_value_the_format_cannot_carry_is_refused_with_nothing_written(deployed: Workspace) -> None:
    value = f"{secrets.token_hex(8)}$'{secrets.token_hex(8)}"  # a '$' with a single quote: no quoting every consumer reads
    set_exact(deployed, "payments_api_key", "value", value)
    before = deployed.snapshot()
    deploys = len(records(deployed, "deploy"))
    result = deliver(deployed)
    assert_refused(
        deployed,
        result,
        "app.env PAYMENTS_API_KEY: secret 'payments_api_key' field 'value' holds what the portable .env format",
        "keywarden_env_formats for service 'app'",
        "no .env file was written",
    )
    assert value not in result.output and value.split("$", maxsplit=1)[0] not in result.output
    assert deployed.snapshot() == before
    assert len(records(deployed, "deploy")) == deploys
    # the one consumer that reads the file carries it
    shell = deliver(deployed, "-e", json.dumps({"keywarden_env_formats": {"app": "shell"}}))
    assert shell.returncode == 0, shell.explain()
    assert read_back(deployed.env_dir / "app.env")["bash"]["PAYMENTS_API_KEY"] == digest(value)


@pytest.mark.parametrize(
    ("formats", "fragment"),
    [
        pytest.param({"ap": "compose"}, "keywarden_env_formats: 'ap' is not a service of the catalog (services: app, worker)", id="service"),
        pytest.param({"app": "yaml"}, "keywarden_env_formats.app: 'yaml' is not one of portable, compose, dotenv, systemd, shell", id="format"),
    ],
)
def test_a_bad_format_setting_is_refused(ready: Workspace, formats: dict[str, str], fragment: str) -> None:
    result = deliver(ready, "-e", json.dumps({"keywarden_env_formats": formats}))
    assert_refused(ready, result, fragment)
    assert not ready.env_dir.exists()
