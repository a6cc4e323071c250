"""Rotation of MariaDB logins (playbooks/rotate.yml) against a throwaway server.

alternating_users: the standby login gets the new password, consumers move to it, the old login keeps
working until the next rotation, which gives it a new password. single_user: the one login's password
changes, the old value stops working at once. Values are compared as digests only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pymysql
import pytest
import yaml
from support import MARIADB_CATALOG as CATALOG
from support import MariaDB, digest

from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import get_field


def _logs_in(server: MariaDB, user: str, password: str) -> bool:
    try:
        pymysql.connect(host="127.0.0.1", port=server.port, user=user, password=password, connect_timeout=5).close()
    except pymysql.err.OperationalError as exc:
        assert exc.args[0] == 1045, f"unexpected MariaDB error {exc.args[0]}"
        return False
    return True


def _stage(ws: Any, name: str, stage: str) -> tuple[str, str, int]:
    data = ws.store().read()
    entry = data["secrets"][name][stage]
    return get_field(data, name, "username", stage), get_field(data, name, "password", stage), int(entry["version"])


def _env_value(ws: Any, service: str, var: str) -> str:
    for line in (ws.env_dir / f"{service}.env").read_text().splitlines():
        if line.startswith(f"{var}="):
            return line.split("=", 1)[1]
    raise AssertionError(f"{var} missing from {service}.env")


@pytest.fixture(scope="module")
def rotated_once(make_workspace: Callable[..., Any], mariadb: MariaDB) -> tuple[Any, dict[str, Any], Any]:  # noqa: F811
    ws = make_workspace("mariadb-rotation", groups=("db", "app", "worker"))
    ws.catalog.write_text("---\n" + yaml.safe_dump(CATALOG, sort_keys=False))
    ws.set_password("local")
    mariadb.admin_sql("CREATE DATABASE IF NOT EXISTS order_log")
    for playbook in ("playbooks/init.yml", "playbooks/provision.yml", "playbooks/deploy.yml"):
        run = ws.run(playbook, "-e", f"@{mariadb.vars_file}", *(("-e", "keywarden_store_create=true") if playbook.endswith("init.yml") else ()))
        assert run.returncode == 0, run.explain()
    before = {name: _stage(ws, name, "current") for name in ("shop_db", "ledger_db")}
    run = ws.run("playbooks/rotate.yml", "-e", f"@{mariadb.vars_file}", "-e", "keywarden_rotate_only=shop_db,ledger_db")
    assert run.returncode == 0, run.explain()
    assert not ws.leaks(run.output)
    return ws, before, run


def test_report_names_both_rotations(rotated_once: tuple[Any, dict[str, Any], Any]) -> None:
    _, _, run = rotated_once
    assert "shop_db" in run.output and "alternating_users  v1->v2" in run.output
    assert "ledger_db" in run.output and "single_user" in run.output


def test_alternating_users_moves_to_the_standby_login_and_keeps_the_old_one(rotated_once: tuple[Any, dict[str, Any], Any], mariadb: MariaDB) -> None:  # noqa: F811
    ws, before, _ = rotated_once
    old_user, old_password, old_version = before["shop_db"]
    user, password, version = _stage(ws, "shop_db", "current")
    assert (old_user, user) == ("shop_a", "shop_b")
    assert version == old_version + 1
    assert _stage(ws, "shop_db", "previous")[2] == old_version
    assert ws.store().read()["secrets"]["shop_db"]["pending"] is None
    assert _logs_in(mariadb, user, password)
    assert _logs_in(mariadb, old_user, old_password), "the previous login stopped working before the next rotation"
    assert _env_value(ws, "shop", "DB_USER") == "shop_b"
    assert digest(_env_value(ws, "shop", "DB_PASSWORD")) == digest(password)


def test_single_user_changes_the_password_and_the_old_one_stops(rotated_once: tuple[Any, dict[str, Any], Any], mariadb: MariaDB) -> None:  # noqa: F811
    ws, before, _ = rotated_once
    old_user, old_password, _ = before["ledger_db"]
    user, password, _ = _stage(ws, "ledger_db", "current")
    assert user == old_user == "ledger"
    assert digest(password) != digest(old_password)
    assert _logs_in(mariadb, user, password)
    assert not _logs_in(mariadb, user, old_password)
    assert digest(_env_value(ws, "ledger", "LEDGER_DB_PASSWORD")) == digest(password)


def test_second_rotation_returns_to_the_first_login_with_a_new_password(rotated_once: tuple[Any, dict[str, Any], Any], mariadb: MariaDB) -> None:  # noqa: F811
    ws, before, _ = rotated_once
    _, first_password, _ = before["shop_db"]
    run = ws.run("playbooks/rotate.yml", "-e", f"@{mariadb.vars_file}", "-e", "keywarden_rotate_only=shop_db")
    assert run.returncode == 0, run.explain()
    user, password, version = _stage(ws, "shop_db", "current")
    assert user == "shop_a" and version == 3
    assert _logs_in(mariadb, user, password)
    assert not _logs_in(mariadb, "shop_a", first_password), "v1 of shop_a still works after shop_a got v3"
    assert _logs_in(mariadb, *_stage(ws, "shop_db", "previous")[:2]), "v2 (shop_b) must keep working until the next rotation"


def test_nothing_due_changes_nothing(rotated_once: tuple[Any, dict[str, Any], Any], mariadb: MariaDB) -> None:  # noqa: F811
    ws, _, _ = rotated_once
    before = ws.snapshot()
    run = ws.run("playbooks/rotate.yml", "-e", f"@{mariadb.vars_file}")
    assert run.returncode == 0, run.explain()
    assert run.recap()["changed"] == 0
    assert "nothing to rotate" in run.output
    assert ws.snapshot() == before
