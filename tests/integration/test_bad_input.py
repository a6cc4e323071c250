"""Bad input stops a real ansible-playbook run with a one-line error that names what to fix, and changes nothing on disk.

Every test snapshots (mode + SHA-256) everything under the workspace's store dir and env dir before the
run and compares after it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml


def _assert_refused(ws: Any, result: Any, before: dict[str, Any], *fragments: str) -> None:
    # the snapshot covers a real store and delivered .env files, so "unchanged" means something
    assert str(ws.store_dir / "secrets.vault") in before
    assert str(ws.env_dir / "app.env") in before
    assert result.returncode != 0, result.explain()
    line = result.error_line("[ERROR]", *fragments)
    assert line is not None, result.explain()
    if os.environ.get("KEYWARDEN_TEST_SHOW_ERRORS"):
        print(f"\n{line}")
    leaked = ws.leaks(result.output)
    assert not leaked, "a secret value appeared in the playbook output"
    after = ws.snapshot()
    assert after == before


@pytest.mark.parametrize("how", ["no-password-file", "no-vault-id-given"])
def test_missing_vault_password(deployed: Any, how: str) -> None:
    ws = deployed
    before = ws.snapshot()
    if how == "no-password-file":
        password = ws.password("local")
        (ws.password_dir / "local").unlink()
        try:
            result = ws.run("playbooks/init.yml")
        finally:
            ws.set_password("local", password)
        _assert_refused(ws, result, before, "no vault password for vault ID 'local'", "KEYWARDEN_VAULT_PASSWORD_LOCAL", str(ws.password_dir / "local"))
    else:
        result = ws.run("playbooks/init.yml", vault_ids=())
        _assert_refused(ws, result, before, "no vault password for vault ID 'local'", "--vault-id local@")


def test_wrong_vault_password(deployed: Any) -> None:
    # the lookup's path (deploy) meets the same Store.read: covered by tests/unit/plugins/lookup/test_secret.py
    ws = deployed
    password = ws.password("local")
    before = ws.snapshot()
    ws.set_password("local", "not-the-right-password")
    try:
        result = ws.run("playbooks/init.yml")
    finally:
        ws.set_password("local", password)
    _assert_refused(ws, result, before, "cannot be decrypted with the vault password for 'local'", "wrong password")


def _flip(raw: bytes) -> bytes:
    header, _, body = raw.partition(b"\n")
    index = len(body) // 3
    while not body[index : index + 1].isalnum():
        index += 1
    return header + b"\n" + body[:index] + (b"0" if body[index : index + 1] != b"0" else b"1") + body[index + 1 :]


@pytest.mark.parametrize(
    ("corrupt", "fragments"),
    [
        pytest.param(_flip, ["cannot be decrypted", "corrupted", "versions"], id="flipped-byte"),
        pytest.param(lambda raw: raw[: len(raw) // 2], ["secrets.vault"], id="truncated"),
        pytest.param(lambda raw: b"app_db: hunter2\n", ["is not an ansible-vault file", "restore a copy from"], id="plain-text"),
    ],
)
def test_corrupted_store(deployed: Any, corrupt: Any, fragments: list[str]) -> None:
    ws = deployed
    store_file = ws.store_dir / "secrets.vault"
    store_file.write_bytes(corrupt(store_file.read_bytes()))
    before = ws.snapshot()
    result = ws.run("playbooks/init.yml")
    _assert_refused(ws, result, before, str(store_file), *fragments)


@pytest.mark.parametrize(
    ("break_catalog", "fragments"),
    [
        pytest.param(
            lambda data: data["secrets"]["app_redis"]["policy"].update(charset="emoji") or yaml.safe_dump(data),
            ["secrets.app_redis.policy.charset", "'emoji'"],
            id="schema-error",
        ),
        pytest.param(
            lambda data: yaml.safe_dump(data).replace("kind: redis", "kind: [redis"),
            ["is not valid YAML", "line "],
            id="yaml-syntax-error",
        ),
        # issue 10 item 10: a second app_db entry (the last one would win silently)
        pytest.param(
            lambda data: yaml.safe_dump(data, sort_keys=False).replace("  app_redis:", "  app_db:\n    kind: generic\n  app_redis:", 1),
            ["duplicate key 'app_db' (first at line 3)", "keep one of them"],
            id="duplicate-entry",
        ),
        # issue 10 item 7: an unknown key under target:
        pytest.param(
            lambda data: data["secrets"]["app_db"]["target"].update(port=5432) or yaml.safe_dump(data),
            ["secrets.app_db.target.port: unknown field; allowed for kind postgresql: group, role, database"],
            id="unknown-target-key",
        ),
    ],
)
def test_malformed_catalog(deployed: Any, break_catalog: Any, fragments: list[str]) -> None:
    ws = deployed
    ws.catalog.write_text(break_catalog(yaml.safe_load(ws.catalog.read_text())))
    before = ws.snapshot()
    result = ws.run("playbooks/init.yml")
    _assert_refused(ws, result, before, f"catalog {ws.catalog}", *fragments)


def test_unknown_secret_referenced_by_deploy(deployed: Any) -> None:
    """The catalog names a secret the store lacks (init not run since): deploy refuses and says to run init."""
    ws = deployed
    data = yaml.safe_load(ws.catalog.read_text())
    data["secrets"]["mail_api_key"] = {
        "kind": "generic",
        "environments": ["local"],
        "consumers": [{"group": "app", "service": "app", "env": {"MAIL_API_KEY": "value"}}],
    }
    ws.catalog.write_text(yaml.safe_dump(data))
    before = ws.snapshot()
    result = ws.run("playbooks/deploy.yml")
    _assert_refused(ws, result, before, "secret 'mail_api_key' is not in", "add it to config/secrets/catalog.yml", "run playbooks/init.yml")


def test_unknown_secret_referenced_by_a_task(deployed: Any) -> None:
    ws = deployed
    out = ws.root / "out"
    playbook = ws.write_playbook(
        "unknown.yml",
        [
            {
                "name": "Use a secret nobody created",
                "hosts": "localhost",
                "gather_facts": False,
                "tasks": [
                    {
                        "name": "Render it",
                        "ansible.builtin.copy": {"content": "{{ lookup('keywarden.secrets.secret', 'ghost_token.value') }}", "dest": str(out), "mode": "0600"},
                        "no_log": True,
                        "diff": False,
                    }
                ],
            }
        ],
    )
    before = ws.snapshot()
    result = ws.run(playbook)
    _assert_refused(ws, result, before, "secret 'ghost_token' is not in", "run playbooks/init.yml")
    assert not Path(out).exists()


# ---- a missing store (issue 10 item 8) ---------------------------------------------------------------------------
PLAYBOOKS = ["playbooks/init.yml", "playbooks/provision.yml", "playbooks/deploy.yml", "playbooks/site.yml", "playbooks/rotate.yml"]


@pytest.fixture
def store_lost(deployed: Any) -> tuple[Any, str]:
    """A deployed workspace whose store had two revisions and is then deleted; the latest revision kept in versions/."""
    ws = deployed
    with ws.store().update() as data:
        data["secrets"]["app_db"]["current"]["created"] = "2026-01-01T00:00:00Z"
    (ws.store_dir / "secrets.vault").unlink()
    latest = ws.store().versions()[-1]
    assert latest.endswith("secrets.r000001.vault")
    return ws, latest


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_a_deleted_store_stops_every_playbook_naming_the_latest_revision_and_the_runbook(store_lost: tuple[Any, str], playbook: str) -> None:
    ws, latest = store_lost
    before = ws.snapshot()
    result = ws.run(playbook)
    assert result.returncode != 0, result.explain()
    line = result.error_line("[ERROR]", f"store {ws.store_dir / 'secrets.vault'} of environment 'local' does not exist")
    assert line is not None, result.explain()
    for fragment in (f"latest revision in versions/: {latest}", "docs/security/secrets/backup.md", "playbooks/restore.yml", "keywarden_store_create=true"):
        assert fragment in line
    assert ws.snapshot() == before
    assert not (ws.store_dir / "secrets.vault").exists()


def test_a_first_store_is_created_only_on_request(workspace: Any) -> None:
    ws = workspace("new-env")
    ws.set_password("local")
    refused = ws.run("playbooks/init.yml")
    assert refused.returncode != 0
    line = refused.error_line("[ERROR]", "does not exist (no revision in", "ansible-playbook playbooks/init.yml -e keywarden_store_create=true")
    assert line is not None, refused.explain()
    assert not (ws.store_dir / "secrets.vault").exists()
    created = ws.run("playbooks/init.yml", "-e", "keywarden_store_create=true")
    assert created.returncode == 0, created.explain()
    assert sorted(ws.store().read()["secrets"]) == ["app_db", "app_redis", "payments_api_key"]


# ---- a catalog group that matches no host (issue 10 item 7) -------------------------------------------------------
def test_a_consumer_group_missing_from_the_inventory_is_warned_about(workspace: Any, initialized: Any) -> None:
    ws = workspace("no-worker", groups=("db", "cache", "app"))
    ws.clone_store(initialized)
    result = ws.run("playbooks/deploy.yml")
    assert result.returncode == 0, result.explain()
    flat = " ".join(result.output.split())  # the warning may be wrapped
    assert (
        f"[WARNING]: catalog {ws.catalog}: secrets.app_db.consumers[1].group: group 'worker' matches no host in the inventory: "
        "no host receives app_db for service worker"
    ) in flat, result.explain()
    assert sorted(p.name for p in ws.env_dir.iterdir()) == ["app.env"]
