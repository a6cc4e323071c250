#!/usr/bin/python
# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ensure, or test, many MariaDB logins in one module run.

Hand-written SQL on purpose. community.mysql's mysql_user and mysql_query take one login per module run:
set and test were two module runs per credential, about 1 s each on a busy 2-core machine, which made the
cost of a rotation grow by about 2 s per credential (bench/rotation_scale measures the same shape on
PostgreSQL). Here one admin connection reads every login with one query and changes only what differs,
with the semantics the role had with mysql_user: the password arrives as its mysql_native_password hash
(`encrypted: true`), and `priv: <db>.*:ALL` is the whole grant (privileges elsewhere are revoked).
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: mariadb_logins
short_description: Ensure or test many MariaDB logins (password, privileges on one database) in one call
description:
  - With O(state=present), for each login makes sure C('user'@'host_pattern') exists, has the password, and holds
    C(ALL PRIVILEGES) on its database and nothing else. Logins that already match are left alone (idempotent).
  - The password reaches the server as its C(mysql_native_password) hash (C(IDENTIFIED BY PASSWORD '*…')), never in
    clear, so the general and slow query logs never hold it.
  - C(_) and C(%) in a database name are escaped in the grant, so it covers that database only.
  - With O(state=tested), logs in over TCP once per login (TLS when the server offers it and PyMySQL supports the
    preferred mode) and checks C(CURRENT_USER()). Fails naming the logins that were refused.
  - One login's failure does not stop the others; the module then fails naming each failed secret in RV(failures).
  - keywarden's rotation engine runs it through the C(mariadb) driver of C(keywarden.secrets.target), which reads O(logins)
    from the store; call it directly only with values from a vault, in a task with C(no_log) set.
version_added: 0.1.0
author: keywarden contributors (@keywarden)
extends_documentation_fragment: [keywarden.secrets.logins]
options:
  login_unix_socket:
    description: Socket of the server for the admin connection (O(state=present)). Wins over O(login_host).
    type: str
  login_host:
    description: Host of the server for the admin connection when no socket is given.
    type: str
    default: localhost
  login_port:
    description: Port of the server.
    type: int
    default: 3306
  login_user:
    description: Admin account (unix_socket authentication through the socket, or the password of O(config_file)).
    type: str
    default: root
  config_file:
    description: Client option file read for the admin connection when it exists (as community.mysql does).
    type: path
    default: ~/.my.cnf
  host_pattern:
    description: Host part of each login (C('user'@'<pattern>')), where the consumers connect from.
    type: str
    default: "%"
requirements: [PyMySQL]
"""

EXAMPLES = r"""
- name: Set a login (the rotation engine passes the values it read from the store)
  keywarden.secrets.mariadb_logins:
    logins:
      - name: shop_db
        user: shop_a
        password: "{{ vault_shop_db_password }}"
        database: shop
    login_unix_socket: /run/mysqld/mysqld.sock
  no_log: true
"""

RETURN = r"""
changed_names:
  description: Secrets whose login was changed (or would be, in check mode).
  type: list
  elements: str
  returned: state=present
tested:
  description: How many logins were accepted.
  type: int
  returned: state=tested
failed_names:
  description: Secrets whose login was refused.
  type: list
  elements: str
  returned: failure with state=tested
failures:
  description:
    - Secret name -> why its login could not be set (O(state=present)) or was refused (O(state=tested)). The other
      logins of the call are applied and tested all the same; the module fails when this is not empty.
  type: dict
  returned: failure
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keywarden.secrets.plugins.module_utils.logins import argument_spec, reason, run
from ansible_collections.keywarden.secrets.plugins.module_utils.mysql import native_password
from ansible_collections.keywarden.secrets.plugins.module_utils.specs import MARIADB_LOGINS_OPTIONS

try:
    import pymysql
    from pymysql.constants import CLIENT
except ImportError:  # pragma: no cover - reported by main()
    pymysql = None

ARGUMENT_SPEC = argument_spec(MARIADB_LOGINS_OPTIONS)


def database_grant(database: str) -> str:
    """`db`.* with `_` and `%` escaped (wildcards in a database-level grant, as the role's mysql_user `priv` had them) and backticks doubled."""
    escaped = database.replace("_", "\\_").replace("%", "\\%").replace("`", "``")
    return f"`{escaped}`.*"


def _grant_head(line: str) -> str:
    """`GRANT … ON … TO 'u'@'h' …` without its account part and options, for comparing."""
    return line.split(" TO ", 1)[0].strip()


def _admin_connection(params: dict) -> object:
    kwargs = {"user": params["login_user"], "connect_timeout": params["connect_timeout"], "autocommit": True}
    if params["login_unix_socket"]:
        kwargs["unix_socket"] = params["login_unix_socket"]
    else:
        kwargs.update(host=params["login_host"], port=params["login_port"])
    config = params["config_file"] or ""  # type path: already expanded
    if config and os.path.isfile(config):
        kwargs["read_default_file"] = config
    where = params["login_unix_socket"] or f"{params['login_host']}:{params['login_port']}"
    try:
        return pymysql.connect(**kwargs)
    except pymysql.Error as exc:
        raise RuntimeError(f"cannot connect to MariaDB at {where} as {params['login_user']}: {reason(exc)}; check keywarden_target_mariadb_login_*") from None


def ensure_present(params: dict, logins: list[dict], check_mode: bool) -> tuple[list[str], dict[str, str]]:
    """Change what differs, login by login: a login the server refuses is reported and the others go on. Returns the
    names of the secrets whose login changed, and the failed ones with the server's reason."""
    conn = _admin_connection(params)
    host = params["host_pattern"]
    changed: list[str] = []
    failures: dict[str, str] = {}
    try:
        with conn.cursor() as cur:
            users = sorted({x["user"] for x in logins})
            cur.execute("SELECT User, plugin, authentication_string FROM mysql.user WHERE Host = %s AND User IN %s", (host, users))
            have = {user: (plugin, auth) for user, plugin, auth in cur.fetchall()}
            cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN %s", (sorted({x["database"] for x in logins}),))
            databases = {row[0] for row in cur.fetchall()}
            for login in logins:
                if login["database"] not in databases:
                    failures[login["name"]] = f"database {login['database']} does not exist on this server; create it (keywarden manages logins, not databases)"
                    continue
                try:
                    hashed = native_password(login["password"])
                except ValueError:
                    failures[login["name"]] = "the stored password is empty; a login without a password is refused"
                    continue
                try:
                    statements = _statements(cur, login, host, hashed, have)
                    if statements and not check_mode:
                        for statement, args in statements:
                            cur.execute(statement, args)
                except pymysql.Error as exc:
                    failures[login["name"]] = f"MariaDB refused the change: {reason(exc)}"
                    continue
                if statements:
                    changed.append(login["name"])
    except pymysql.Error as exc:
        done = f" (changed before the error: {', '.join(changed)})" if changed and not check_mode else ""
        raise RuntimeError(f"MariaDB refused a change: {reason(exc)}{done}") from None
    finally:
        conn.close()
    return changed, failures


def _statements(cur: object, login: dict, host: str, hashed: str, have: dict) -> list[tuple[str, tuple]]:
    """What makes one login right: the user with its password hash, and the database's privileges as its whole grant."""
    user = login["user"]
    grant = database_grant(login["database"])
    statements = []
    if user not in have:
        statements.append(("CREATE USER %s@%s IDENTIFIED BY PASSWORD %s", (user, host, hashed)))
        grants = []
    else:
        plugin, auth = have[user]
        if plugin not in ("mysql_native_password", "") or auth != hashed:
            statements.append(("ALTER USER %s@%s IDENTIFIED BY PASSWORD %s", (user, host, hashed)))
        cur.execute("SHOW GRANTS FOR %s@%s", (user, host))
        grants = [_grant_head(row[0]) for row in cur.fetchall()]
    wanted = f"GRANT ALL PRIVILEGES ON {grant}"
    extra = [g for g in grants if g not in ("GRANT USAGE ON *.*", wanted)]
    if extra:
        statements.append(("REVOKE ALL PRIVILEGES, GRANT OPTION FROM %s@%s", (user, host)))
    if extra or wanted not in grants:
        # `%` in the identifier is doubled: PyMySQL formats the statement with its arguments
        statements.append((f"GRANT ALL PRIVILEGES ON {grant.replace('%', '%%')} TO %s@%s", (user, host)))
    return statements


# What the first test login of this module run learnt: whether the server offers TLS, and PyMySQL's TLS context.
# PyMySQL's "preferred" mode builds a new SSLContext (about 40 ms: the system CA store) for every connection;
# the later logins reuse the first one's context (TLS offered) or skip TLS (not offered), as preferred would.
_TLS: dict = {}


def log_in(params: dict, login: dict) -> str:
    """A TCP login with the login's password (TLS when the server offers it); the user the server says we are."""
    kwargs = {
        "host": params["test_host"],
        "port": params["login_port"],
        "user": login["user"],
        "password": login["password"],
        "database": login["database"],
        "connect_timeout": params["connect_timeout"],
    }
    if "offered" in _TLS:
        kwargs.update({"ssl": _TLS["context"]} if _TLS["offered"] else {"ssl_disabled": True})
    conn = pymysql.connect(**kwargs)
    if "offered" not in _TLS:
        context = getattr(conn, "ctx", None)
        if context is not None:  # PyMySQL without a preferred mode (before 1.1) keeps its defaults
            _TLS.update(offered=bool(conn.server_capabilities & CLIENT.SSL), context=context)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT CURRENT_USER()")
            return str(cur.fetchone()[0]).rsplit("@", 1)[0]
    finally:
        conn.close()


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    if pymysql is None:
        module.fail_json(msg="keywarden.secrets.mariadb_logins needs PyMySQL on the target host: install python3-pymysql")
    run(module, ensure_present, log_in, (pymysql.Error,))


if __name__ == "__main__":
    main()
