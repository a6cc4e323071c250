"""The secret lookup: through real ansible-playbook runs on a temp inventory, and called directly.

Values are compared as SHA-256 digests of what a task wrote to a 0600 file and of what the store holds.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleError
from ansible.parsing.dataloader import DataLoader
from ansible.parsing.vault import VaultSecret
from ansible.plugins.loader import lookup_loader
from ansible.template import Templar

from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import get_field

REPO = Path(__file__).resolve().parents[4]
LOOKUP = "keywarden.secrets.secret"


def sha(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _write_task(name: str, expression: str, dest: str) -> dict[str, Any]:
    return {
        "name": name,
        "ansible.builtin.copy": {"content": "{{ " + expression + " }}", "dest": "{{ out_dir }}/" + dest, "mode": "0600"},
        "no_log": True,
        "diff": False,
    }


def _probe_task(name: str, expression: str, register: str) -> dict[str, Any]:
    return {
        "name": name,
        "ansible.builtin.set_fact": {"__probe": "{{ " + expression + " }}"},
        "register": register,
        "ignore_errors": True,
        "no_log": True,
    }


PROBES = {
    "unknown_secret": f"lookup('{LOOKUP}', 'no_such_secret.password')",
    "unknown_field": f"lookup('{LOOKUP}', 'app_db.pasword')",
    "pending_absent": f"lookup('{LOOKUP}', 'app_db.password', stage='pending')",
    "previous_absent": f"lookup('{LOOKUP}', 'app_redis', stage='previous')",
}


@pytest.fixture(scope="module")
def run(make_workspace: Callable[..., Any], initialized: Any) -> Any:
    """One playbook run that writes values to 0600 files and records the lookup's failures (messages only)."""
    ws = make_workspace("lookup")
    ws.clone_store(initialized)
    out_dir = ws.root / "out"
    out_dir.mkdir(mode=0o700)
    tasks = [
        _write_task("Write the app_db password", f"lookup('{LOOKUP}', 'app_db.password')", "app_db.password"),
        _write_task("Write the app_db username via the field option", f"lookup('{LOOKUP}', 'app_db', field='username')", "app_db.username"),
        _write_task("Write two values at once", f"lookup('{LOOKUP}', 'app_redis', 'payments_api_key.value', wantlist=True) | to_json", "two.json"),
    ]
    tasks += [_probe_task(f"Probe {key}", expression, f"__{key}") for key, expression in PROBES.items()]
    # messages and flags only: the probes failed, so they hold no value
    report = "{{ {" + ", ".join(f"'{k}': {{'failed': __{k}.failed | default(false), 'msg': __{k}.msg | default('')}}" for k in PROBES) + "} | to_json }}"
    tasks.append({"name": "Save the probe results", "ansible.builtin.copy": {"content": report, "dest": "{{ out_dir }}/probes.json", "mode": "0600"}})
    playbook = ws.write_playbook(
        "lookup.yml", [{"name": "Read secrets", "hosts": "localhost", "gather_facts": False, "vars": {"out_dir": str(out_dir)}, "tasks": tasks}]
    )
    result = ws.run(playbook)
    assert result.returncode == 0, result.explain()
    leaked = ws.leaks(result.output)
    assert not leaked, "a secret value appeared in the playbook output"
    return ws, out_dir, result


def _stored(ws: Any, name: str, field: str) -> str:
    return get_field(ws.store().read(), name, field)


def test_lookup_returns_the_stored_value(run: Any) -> None:
    ws, out_dir, _ = run
    written = out_dir / "app_db.password"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    written_digest, stored_digest = sha(written.read_bytes()), sha(_stored(ws, "app_db", "password"))
    assert written_digest == stored_digest
    # the login name is not secret: compared as is (alternating_users: the first login is <role>_a)
    assert (out_dir / "app_db.username").read_text() == _stored(ws, "app_db", "username") == "app_a"


def test_lookup_several_terms_and_default_field(run: Any) -> None:
    ws, out_dir, _ = run
    values = json.loads((out_dir / "two.json").read_text())
    got = [sha(v) for v in values]
    wanted = [sha(_stored(ws, "app_redis", "password")), sha(_stored(ws, "payments_api_key", "value"))]
    assert got == wanted


@pytest.mark.parametrize(
    ("probe", "fragments"),
    [
        pytest.param(
            "unknown_secret", ["secret 'no_such_secret' is not in", "add it to config/secrets/catalog.yml", "run playbooks/init.yml"], id="unknown-secret"
        ),
        pytest.param("unknown_field", ["secret 'app_db' has no field 'pasword'", "its fields are: password, username"], id="unknown-field"),
        pytest.param("pending_absent", ["secret 'app_db' has no pending value"], id="pending-absent"),
        pytest.param("previous_absent", ["secret 'app_redis' has no previous value"], id="previous-absent"),
    ],
)
def test_lookup_failure_says_what_to_fix(run: Any, probe: str, fragments: list[str]) -> None:
    ws, out_dir, _ = run
    result = json.loads((out_dir / "probes.json").read_text())[probe]
    assert result["failed"] is True
    assert "\n" not in result["msg"]
    assert str(ws.store_dir / "secrets.vault") in result["msg"] or probe == "unknown_field"
    for fragment in fragments:
        assert fragment in result["msg"]


# ---- the plugin called directly ---------------------------------------------------------------------
def _lookup(vault_secrets: list[tuple[str, str]]) -> Any:
    loader = DataLoader()
    loader.set_vault_secrets([(vault_id, VaultSecret(password.encode())) for vault_id, password in vault_secrets])
    return lookup_loader.get(LOOKUP, loader=loader, templar=Templar(loader=loader))


@pytest.fixture
def direct(ready: Any) -> Any:
    ws = ready
    variables = {"keywarden_environment": "local", "keywarden_store_dir": str(ws.store_dir)}
    return ws, variables


def test_direct_call_returns_values(direct: Any) -> None:
    ws, variables = direct
    lookup = _lookup([("local", ws.password("local"))])
    values = lookup.run(["app_db.password", "app_db"], variables=variables, field="username")
    got = [sha(v) for v in values]
    wanted = [sha(_stored(ws, "app_db", "password")), sha(_stored(ws, "app_db", "username"))]
    assert got == wanted


def test_direct_call_options_override_play_variables(direct: Any) -> None:
    ws, _ = direct
    lookup = _lookup([("local", ws.password("local"))])
    values = lookup.run(["payments_api_key.value"], variables={}, environment="local", store_dir=str(ws.store_dir))
    got, wanted = sha(values[0]), sha(_stored(ws, "payments_api_key", "value"))
    assert got == wanted


def test_direct_call_unknown_secret(direct: Any) -> None:
    ws, variables = direct
    lookup = _lookup([("local", ws.password("local"))])
    with pytest.raises(AnsibleError) as caught:
        lookup.run(["nope"], variables=variables)
    assert "secret 'nope' is not in" in str(caught.value)


def test_direct_call_without_environment_names_the_variable(direct: Any) -> None:
    ws, _ = direct
    lookup = _lookup([("local", ws.password("local"))])
    with pytest.raises(AnsibleError) as caught:
        lookup.run(["app_db"], variables={"keywarden_store_dir": str(ws.store_dir)})
    assert "keywarden_environment is not set" in str(caught.value)


def test_direct_call_wrong_password(direct: Any) -> None:
    _, variables = direct
    with pytest.raises(AnsibleError) as caught:
        _lookup([("local", "not-the-password")]).run(["app_db"], variables=variables)
    assert "cannot be decrypted with the vault password for 'local'" in str(caught.value)


def test_direct_call_without_password_names_the_vault_id_option(direct: Any) -> None:
    ws, variables = direct
    with pytest.raises(AnsibleError) as caught:
        _lookup([]).run(["app_db"], variables=variables)
    assert "--vault-id local@" in str(caught.value)


@pytest.mark.parametrize("case", ["other-environment", "wrong-password"])
def test_cache_never_bypasses_the_vault_checks(direct: Any, case: str) -> None:
    ws, variables = direct
    _lookup([("local", ws.password("local"))]).run(["app_db"], variables=variables)  # fills the cache
    if case == "other-environment":
        lookup = _lookup([("local", ws.password("local")), ("production", ws.password("local"))])
        variables = {**variables, "keywarden_environment": "production"}
    else:
        lookup = _lookup([("local", "not-the-password")])
    with pytest.raises(AnsibleError):
        lookup.run(["app_db"], variables=variables)


def _stage_pending(ws: Any, step: str) -> str:
    """Put a pending value (at rotation step `step`) on app_redis; returns it for hashing."""
    value = secrets.token_urlsafe(30)
    with ws.store().update() as data:
        data["secrets"]["app_redis"]["pending"] = {"version": 2, "created": "2026-01-01T00:00:00Z", "step": step, "fields": {"password": value}}
    return value


@pytest.mark.parametrize(("step", "serves"), [(None, "current"), ("created", "current"), ("distributing", "pending")])
def test_live_stage_serves_pending_only_once_distribution_started(direct: Any, step: str | None, serves: str) -> None:
    ws, variables = direct
    current = _stored(ws, "app_redis", "password")
    pending = _stage_pending(ws, step) if step else None
    lookup = _lookup([("local", ws.password("local"))])
    got = sha(lookup.run(["app_redis"], variables=variables, stage="live")[0])
    wanted = sha(current if serves == "current" else pending or "")
    assert got == wanted


def test_pending_stage_reads_a_staged_value(direct: Any) -> None:
    ws, variables = direct
    pending = _stage_pending(ws, "created")
    got = sha(_lookup([("local", ws.password("local"))]).run(["app_redis"], variables=variables, stage="pending")[0])
    wanted = sha(pending)
    assert got == wanted


def test_invalid_stage_is_refused(direct: Any) -> None:
    ws, variables = direct
    with pytest.raises(AnsibleError) as caught:
        _lookup([("local", ws.password("local"))]).run(["app_redis"], variables=variables, stage="future")
    assert "future" in str(caught.value)
