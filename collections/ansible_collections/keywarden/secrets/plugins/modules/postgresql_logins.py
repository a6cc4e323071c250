#!/usr/bin/python
# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ensure, or test, many PostgreSQL logins in one module run.

Hand-written SQL on purpose. community.postgresql does each step (group role, verifier check, password,
membership, test login) as one module run per login: 5 module runs per credential, about 1 s each, was
80% of a 50-credential rotation (bench/rotation_scale). Its postgresql_user also reports `changed` on every
run with SCRAM passwords (community.postgresql#301). Here one admin connection reads every verifier with
one query and applies what differs in one transaction.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: postgresql_logins
short_description: Ensure or test many PostgreSQL logins (password, group role membership) in one call
description:
  - With O(state=present), for each login in O(logins) makes sure the role exists with LOGIN and the password,
    and, when the login has a C(group), that the NOLOGIN group role exists and the login is a member of it.
    Everything is read with one query and changed in one transaction.
  - The password reaches the server as a SCRAM-SHA-256 verifier, never in clear (server logs,
    C(pg_stat_statements)). A login whose stored verifier already matches is left alone, so the module is idempotent.
  - With O(state=tested), logs in over TCP once per login with its password (TLS as O(ssl_mode) says) and checks
    C(current_user). Fails naming the logins that were refused.
  - One login's failure does not stop the others; the module then fails naming each failed secret in RV(failures).
  - keywarden's rotation engine runs it through the C(postgresql) driver of C(keywarden.secrets.target), which reads O(logins)
    from the store; call it directly only with values from a vault, in a task with C(no_log) set.
version_added: 0.1.0
author: keywarden contributors (@keywarden)
extends_documentation_fragment: [keywarden.secrets.logins]
options:
  login_unix_socket:
    description: Socket directory of the server for the admin connection (O(state=present)). Wins over O(login_host).
    type: str
  login_host:
    description: Host of the server for the admin connection when no socket is given.
    type: str
  login_port:
    description: Port of the server.
    type: int
    default: 5432
  login_user:
    description: Admin role for O(state=present) (peer, trust, or C(~/.pgpass) authentication).
    type: str
    default: postgres
  login_db:
    description: Database of the admin connection.
    type: str
    default: postgres
  ssl_mode:
    description: libpq sslmode of the test logins. C(prefer) uses TLS when the server offers it.
    type: str
    default: prefer
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
requirements: [psycopg2]
"""

EXAMPLES = r"""
- name: Set a login (the rotation engine passes the values it read from the store)
  keywarden.secrets.postgresql_logins:
    logins:
      - name: app_db
        user: app_b
        password: "{{ vault_app_db_password }}"
        group: app
        database: orders
    login_unix_socket: /var/run/postgresql
  become: true
  become_user: postgres
  no_log: true

- name: Log in with it over TCP
  keywarden.secrets.postgresql_logins:
    logins:
      - name: app_db
        user: app_b
        password: "{{ vault_app_db_password }}"
        database: orders
    state: tested
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

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keywarden.secrets.plugins.module_utils import scram
from ansible_collections.keywarden.secrets.plugins.module_utils.logins import argument_spec, reason, run
from ansible_collections.keywarden.secrets.plugins.module_utils.specs import POSTGRESQL_LOGINS_OPTIONS

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # pragma: no cover - reported by main()
    psycopg2 = None

ARGUMENT_SPEC = argument_spec(POSTGRESQL_LOGINS_OPTIONS)


def _admin_connection(params: dict) -> object:
    where = params["login_unix_socket"] or params["login_host"]
    kwargs = {"user": params["login_user"], "dbname": params["login_db"], "port": params["login_port"], "connect_timeout": params["connect_timeout"]}
    if where:
        kwargs["host"] = where
    try:
        return psycopg2.connect(**kwargs)
    except psycopg2.Error as exc:
        raise RuntimeError(
            f"cannot connect to PostgreSQL at {where or 'the default socket'}:{params['login_port']} as {params['login_user']}: {reason(exc)}; "
            "check keywarden_target_postgresql_login_* and keywarden_target_postgresql_become_user"
        ) from None


def ensure_present(params: dict, logins: list[dict], check_mode: bool) -> tuple[list[str], dict[str, str]]:
    """Apply what differs in one transaction, each login under a savepoint: a login the server refuses is rolled back
    alone. Returns the names of the secrets whose login changed, and the failed ones with the server's reason."""
    conn = _admin_connection(params)
    changed: list[str] = []
    failures: dict[str, str] = {}
    try:
        with conn.cursor() as cur:
            roles = sorted({x["user"] for x in logins} | {x["group"] for x in logins if x.get("group")})
            cur.execute("SELECT rolname, rolpassword, rolcanlogin FROM pg_authid WHERE rolname = ANY(%s)", (roles,))
            have = {name: (password, can_login) for name, password, can_login in cur.fetchall()}
            cur.execute(
                "SELECT g.rolname, m.rolname FROM pg_auth_members am"
                " JOIN pg_roles g ON g.oid = am.roleid JOIN pg_roles m ON m.oid = am.member WHERE m.rolname = ANY(%s)",
                (roles,),
            )
            members = set(cur.fetchall())
            cur.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", (sorted({x["database"] for x in logins if x.get("database")}),))
            databases = {row[0] for row in cur.fetchall()}
            for login in logins:
                if login.get("database") and login["database"] not in databases:
                    # the login would be created, and every consumer's connection refused: say so now, not at rotation time
                    failures[login["name"]] = f"database {login['database']} does not exist on this server; create it (keywarden manages logins, not databases)"
                    continue
                before = (dict(have), set(members))
                statements = _statements(login, have, members)
                if not statements:
                    continue
                cur.execute("SAVEPOINT keywarden_login")
                try:
                    for statement, args in statements:
                        cur.execute(statement, args)
                except psycopg2.Error as exc:
                    cur.execute("ROLLBACK TO SAVEPOINT keywarden_login")
                    have, members = before
                    failures[login["name"]] = f"PostgreSQL refused the change: {reason(exc)}"
                    continue
                cur.execute("RELEASE SAVEPOINT keywarden_login")
                changed.append(login["name"])
        if check_mode:
            conn.rollback()
        else:
            conn.commit()
    except psycopg2.Error as exc:
        conn.rollback()
        raise RuntimeError(f"PostgreSQL refused a change, nothing was applied: {reason(exc)}") from None
    finally:
        conn.close()
    return changed, failures


def _statements(login: dict, have: dict, members: set) -> list[tuple[object, tuple | None]]:
    """What makes one login right: group role, login role and password (SCRAM verifier), membership. Updates
    ``have`` and ``members`` as if the statements ran (a later login of the same group sees them)."""
    group, user = login.get("group"), login["user"]
    statements: list[tuple[object, tuple | None]] = []
    if group and group not in have:
        statements.append((sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(group)), None))
        have[group] = (None, False)
    elif group and have[group][1]:
        # the group role holds the privileges; only its members log in
        statements.append((sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(group)), None))
        have[group] = (have[group][0], False)
    if user not in have:
        statements.append((sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(user)), (scram.verifier(login["password"]),)))
        have[user] = (None, True)
    elif not have[user][1] or not scram.matches(have[user][0], login["password"]):
        statements.append((sql.SQL("ALTER ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(user)), (scram.verifier(login["password"]),)))
    if group and (group, user) not in members:
        statements.append((sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(user)), None))
        members.add((group, user))
    return statements


def log_in(params: dict, login: dict) -> str:
    """A TCP login with the login's password; the user the server says we are."""
    conn = psycopg2.connect(
        host=params["test_host"],
        port=params["login_port"],
        user=login["user"],
        password=login["password"],
        dbname=login.get("database") or params["login_db"],
        sslmode=params["ssl_mode"],
        connect_timeout=params["connect_timeout"],
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_user")
            return str(cur.fetchone()[0])
    finally:
        conn.close()


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    if psycopg2 is None:
        module.fail_json(msg="keywarden.secrets.postgresql_logins needs psycopg2 on the target host: install python3-psycopg2")
    run(module, ensure_present, log_in, (psycopg2.Error,))


if __name__ == "__main__":
    main()
