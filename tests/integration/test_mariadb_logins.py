"""The MariaDB driver (keywarden.secrets.target -> module keywarden.secrets.mariadb_logins) against a throwaway MariaDB.

test_target_mariadb.py covers the provision path (TCP logins, database-only grants, idempotence, repair, the
general log). Here: what the role does not show — check mode leaves drift alone, the tested state names the
refused logins, a missing grant is added without touching the password, bad input says what to fix, and every
value read is on the audit log. Values are compared as hashes and digests only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pymysql
import pytest
import yaml
from rotation_helpers import target_outcome, target_play
from support import MARIADB_CATALOG as CATALOG
from support import MariaDB, digest

from ansible_collections.keywarden.secrets.plugins.module_utils.mysql import native_password

NAMES = ("shop_db", "ledger_db")


def _play(ws: Any, server: MariaDB, file: str, phase: str = "provision", **variables: Any) -> Any:
    admin = {
        "keywarden_target_mariadb_login_unix_socket": server.socket,
        "keywarden_target_mariadb_port": server.port,
        "keywarden_target_mariadb_login_user": server.admin,
    }
    return target_play(ws, phase, file, **{**admin, **variables})


def _fields(ws: Any, name: str) -> dict[str, str]:
    return ws.store().read()["secrets"][name]["current"]["fields"]


def _account(server: MariaDB, user: str) -> tuple[str, list[str]]:
    """(digest of the stored hash, grants) of 'user'@'%'."""
    conn = server.connect_admin()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT authentication_string FROM mysql.user WHERE User = %s AND Host = '%%'", (user,))
            row = cur.fetchone()
            cur.execute("SHOW GRANTS FOR %s@'%%'", (user,))
            grants = sorted(r[0].split(" TO ", 1)[0] for r in cur.fetchall())
    finally:
        conn.close()
    return digest(str(row[0]) if row else ""), grants


@pytest.fixture(scope="module")
def ws(make_workspace: Callable[..., Any], mariadb: MariaDB) -> Iterator[Any]:  # noqa: F811
    ws = make_workspace("mariadb-logins", groups=("db", "app", "worker"))
    ws.catalog.write_text("---\n" + yaml.safe_dump(CATALOG, sort_keys=False))
    ws.set_password("local")
    mariadb.admin_sql("CREATE DATABASE IF NOT EXISTS order_log", "CREATE DATABASE IF NOT EXISTS orders")
    init = ws.run("playbooks/init.yml", "-e", "keywarden_store_create=true")
    assert init.returncode == 0, init.explain()
    yield ws


def test_present_sets_hash_and_grant_then_is_idempotent(ws: Any, mariadb: MariaDB) -> None:  # noqa: F811
    first = ws.run(_play(ws, mariadb, "present.yml"))
    assert target_outcome(ws, first)["changed_names"] == sorted(NAMES), first.explain()
    for name, grant in (("shop_db", "GRANT ALL PRIVILEGES ON `orders`.*"), ("ledger_db", "GRANT ALL PRIVILEGES ON `order\\_log`.*")):
        fields = _fields(ws, name)
        stored, grants = _account(mariadb, fields["username"])
        assert stored == digest(native_password(fields["password"])), f"{name}: the server does not hold the store's password hash"
        assert grants == sorted(["GRANT USAGE ON *.*", grant])
    again = ws.run(_play(ws, mariadb, "present.yml"))
    assert target_outcome(ws, again)["changed"] is False, again.explain()
    assert not ws.leaks(first.output + again.output)


def test_check_mode_reports_drift_and_leaves_it(ws: Any, mariadb: MariaDB) -> None:  # noqa: F811
    assert ws.run(_play(ws, mariadb, "present.yml")).returncode == 0
    user = _fields(ws, "shop_db")["username"]
    mariadb.admin_sql(f"REVOKE ALL PRIVILEGES ON `orders`.* FROM '{user}'@'%'")
    before = _account(mariadb, user)
    checked = ws.run(_play(ws, mariadb, "check.yml"), "--check")
    assert target_outcome(ws, checked)["changed_names"] == ["shop_db"], checked.explain()
    assert _account(mariadb, user) == before, "check mode changed the server"
    repaired = ws.run(_play(ws, mariadb, "present.yml"))
    assert target_outcome(ws, repaired)["changed_names"] == ["shop_db"]
    assert _account(mariadb, user)[0] == before[0], "a missing grant must not touch the password"
    assert _account(mariadb, user)[1] == ["GRANT ALL PRIVILEGES ON `orders`.*", "GRANT USAGE ON *.*"]


def test_tested_names_the_refused_login(ws: Any, mariadb: MariaDB) -> None:  # noqa: F811
    assert ws.run(_play(ws, mariadb, "present.yml")).returncode == 0
    good = ws.run(_play(ws, mariadb, "tested.yml", "test"))
    assert target_outcome(ws, good)["tested"] == sorted(NAMES), good.explain()
    user = _fields(ws, "ledger_db")["username"]
    mariadb.admin_sql(f"SET PASSWORD FOR '{user}'@'%' = PASSWORD('drifted-by-hand')")
    bad = ws.run(_play(ws, mariadb, "tested.yml", "test"))
    outcome = target_outcome(ws, bad)
    assert list(outcome["failures"]) == ["ledger_db"] and outcome["tested"] == ["shop_db"]
    assert outcome["failures"]["ledger_db"].startswith("Access denied for user")
    assert not ws.leaks(bad.output)
    assert ws.run(_play(ws, mariadb, "present.yml")).returncode == 0


def _ssl_accepts(server: MariaDB) -> int:
    """TLS handshakes the server has accepted (this connection itself goes without TLS, so it does not count)."""
    conn = pymysql.connect(unix_socket=server.socket, user=server.admin, ssl_disabled=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE 'Ssl_accepts'")
            return int(cur.fetchone()[1])
    finally:
        conn.close()


def test_test_logins_use_tls_when_the_server_offers_it(ws: Any, mariadb: MariaDB) -> None:  # noqa: F811
    """The throwaway server offers TLS (scripts/demo/mariadb): each test login is a TLS handshake, the first one's
    context reused by the next."""
    assert ws.run(_play(ws, mariadb, "present.yml")).returncode == 0
    before = _ssl_accepts(mariadb)
    tested = ws.run(_play(ws, mariadb, "tested.yml", "test"))
    assert len(target_outcome(ws, tested)["tested"]) == len(NAMES), tested.explain()
    assert _ssl_accepts(mariadb) - before == len(NAMES)


def test_a_wrong_admin_names_every_secret_and_what_to_fix(ws: Any, mariadb: MariaDB) -> None:  # noqa: F811
    admin = ws.run(_play(ws, mariadb, "admin.yml", keywarden_target_mariadb_login_user="no_such_admin"))
    failures = target_outcome(ws, admin)["failures"]
    assert sorted(failures) == sorted(NAMES)
    assert all(why.startswith(f"cannot connect to MariaDB at {mariadb.socket} as no_such_admin: ") for why in failures.values())
    assert all(why.endswith("check keywarden_target_mariadb_login_*") for why in failures.values())


def test_every_read_is_audited_and_nothing_leaks_at_vvvv(ws: Any, mariadb: MariaDB) -> None:  # noqa: F811
    before = len(ws.audit_log.read_text().splitlines()) if ws.audit_log.exists() else 0
    run = ws.run(_play(ws, mariadb, "present.yml"), "-vvvv", "--diff")
    assert run.returncode == 0, run.explain()
    assert not ws.leaks(run.output)
    reads = [r for r in map(json.loads, ws.audit_log.read_text().splitlines()[before:]) if r["event"] == "read"]
    assert sorted((r["secret"], r["field"]) for r in reads) == sorted((n, f) for n in NAMES for f in ("username", "password"))
    assert {r["detail"]["purpose"] for r in reads} == {"provision on localhost"}
