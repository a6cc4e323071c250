"""MariaDB logins provisioned by playbooks/provision.yml against a throwaway server (scripts/demo/mariadb).

The logins the store names accept the stored password over TCP, and only it; each reaches its database and
nothing else; a second run changes nothing; a login changed behind keywarden's back is repaired; and the
server's general log, which records every statement, never holds a stored password.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pymysql
import pytest
import yaml
from support import MARIADB_CATALOG as CATALOG
from support import MARIADB_DECOY_DATABASE as DECOY_DATABASE
from support import MARIADB_SECRETS as SECRETS
from support import MariaDB

from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import get_field

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def provisioned(make_workspace: Callable[..., Any], mariadb: MariaDB) -> tuple[Any, Any]:
    """A workspace whose store holds the two MariaDB secrets, provisioned once; the provision run's result."""
    ws = make_workspace("mariadb", groups=("db", "app", "worker"))
    ws.catalog.write_text("---\n" + yaml.safe_dump(CATALOG, sort_keys=False))
    ws.set_password("local")
    init = ws.run("playbooks/init.yml", "-e", "keywarden_store_create=true")
    assert init.returncode == 0, init.explain()
    first = ws.run("playbooks/provision.yml", "-e", f"@{mariadb.vars_file}")
    assert first.returncode == 0, first.explain()
    return ws, first


def _credentials(ws: Any, name: str) -> tuple[str, str]:
    data = ws.store().read()
    return get_field(data, name, "username", stage="live"), get_field(data, name, "password", stage="live")


def _connect(mariadb: MariaDB, user: str, password: str, database: str | None = None) -> Any:
    return pymysql.connect(host="127.0.0.1", port=mariadb.port, user=user, password=password, database=database, connect_timeout=5)


def _current_user(mariadb: MariaDB, user: str, password: str) -> str:
    conn = _connect(mariadb, user, password)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT CURRENT_USER()")
            return str(cur.fetchone()[0])
    finally:
        conn.close()


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_stored_login_logs_in_over_tcp(provisioned: tuple[Any, Any], mariadb: MariaDB, name: str) -> None:
    ws, first = provisioned
    assert first.recap()["changed"] >= 1
    leaked = ws.leaks(first.output)
    assert not leaked
    user, password = _credentials(ws, name)
    assert user in SECRETS[name][1]
    assert _current_user(mariadb, user, password) == f"{user}@%"


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_wrong_password_is_refused(provisioned: tuple[Any, Any], mariadb: MariaDB, name: str) -> None:
    ws, _ = provisioned
    user, password = _credentials(ws, name)
    with pytest.raises(pymysql.err.OperationalError) as caught:
        _connect(mariadb, user, password + "-wrong")
    assert caught.value.args[0] == 1045  # ER_ACCESS_DENIED_ERROR


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_login_uses_its_database_only(provisioned: tuple[Any, Any], mariadb: MariaDB, name: str) -> None:
    ws, _ = provisioned
    database = SECRETS[name][0]
    user, password = _credentials(ws, name)
    conn = _connect(mariadb, user, password, database=database)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS kw_probe (id INT PRIMARY KEY)")
            cur.execute("REPLACE INTO kw_probe VALUES (1)")
            cur.execute("SELECT COUNT(*) FROM kw_probe")
            assert cur.fetchone() == (1,)
            cur.execute("DROP TABLE kw_probe")
        conn.commit()
    finally:
        conn.close()
    # the grant names its database exactly: `order_log` does not match `orderxlog`, and mysql is out of reach
    for other in (DECOY_DATABASE, "mysql"):
        with pytest.raises(pymysql.err.OperationalError) as caught:
            _connect(mariadb, user, password, database=other)
        assert caught.value.args[0] == 1044  # ER_DBACCESS_DENIED_ERROR


def test_second_run_changes_nothing(provisioned: tuple[Any, Any], mariadb: MariaDB) -> None:
    ws, _ = provisioned
    for extra in ((), ("--check",)):
        again = ws.run("playbooks/provision.yml", "-e", f"@{mariadb.vars_file}", *extra)
        assert again.returncode == 0, again.explain()
        assert again.recap()["changed"] == 0, again.explain()


def test_login_changed_behind_keywarden_is_repaired(provisioned: tuple[Any, Any], mariadb: MariaDB) -> None:
    ws, _ = provisioned
    user, password = _credentials(ws, "ledger_db")
    # someone resets the password and adds a grant by hand: the next provision run puts back the store's
    mariadb.admin_sql(f"SET PASSWORD FOR '{user}'@'%' = PASSWORD('drifted-by-hand')", f"GRANT SELECT ON {DECOY_DATABASE}.* TO '{user}'@'%'")
    with pytest.raises(pymysql.err.OperationalError):
        _connect(mariadb, user, password)
    repaired = ws.run("playbooks/provision.yml", "-e", f"@{mariadb.vars_file}")
    assert repaired.returncode == 0, repaired.explain()
    assert repaired.recap()["changed"] == 1, repaired.explain()
    assert _current_user(mariadb, user, password) == f"{user}@%"
    with pytest.raises(pymysql.err.OperationalError):
        _connect(mariadb, user, password, database=DECOY_DATABASE)


def test_general_log_holds_no_stored_password(provisioned: tuple[Any, Any], mariadb: MariaDB) -> None:
    ws, _ = provisioned
    log = mariadb.general_log.read_text(errors="replace")
    # the log is live and saw the provisioning: a clean log proves something
    assert "CREATE USER" in log
    assert "IDENTIFIED BY PASSWORD '*" in log
    hits = sum(log.count(value) for value in ws.store_values())
    assert hits == 0
