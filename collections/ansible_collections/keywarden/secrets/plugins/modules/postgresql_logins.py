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
  - Use through the C(keywarden.secrets.postgresql_logins) action, which resolves O(logins) from the store by secret
    name (option C(names), C(stage)); the values never appear in a task's arguments.
version_added: 0.1.0
author: keywarden contributors
options:
  names:
    description:
      - Names of PostgreSQL secrets of the catalog (this environment). The action reads their C(username) and
        C(password) at O(stage) from the store, records each read in the audit log, and passes them as O(logins).
    type: list
    elements: str
  stage:
    description: Which stored value the logins get (C(live) is C(pending) while a rotation distributes it, else C(current)).
    type: str
    default: live
    choices: [current, pending, previous, live]
  logins:
    description:
      - The logins, as the action resolved them from O(names). Set by the action; a task gives O(names).
    type: list
    elements: dict
    suboptions:
      name:
        description: The secret's name, used in messages.
        type: str
        required: true
      user:
        description: The login role.
        type: str
        required: true
      password:
        description: Its password.
        type: str
        required: true
      group:
        description: NOLOGIN group role the login is a member of (alternating-users credentials).
        type: str
      database:
        description: Database of the test login (O(state=tested)); default O(login_db).
        type: str
  state:
    description: C(present) sets the logins; C(tested) logs in with each.
    type: str
    default: present
    choices: [present, tested]
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
  test_host:
    description: Address the logins are tested on (O(state=tested)); TCP so that the server checks the password.
    type: str
    default: 127.0.0.1
  ssl_mode:
    description: libpq sslmode of the test logins. C(prefer) uses TLS when the server offers it.
    type: str
    default: prefer
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  connect_timeout:
    description: Seconds to wait for each connection.
    type: int
    default: 10
requirements: [psycopg2]
"""

EXAMPLES = r"""
- name: Set every login of this host from the store's pending values
  keywarden.secrets.postgresql_logins:
    names: [app_db, reports_db]
    stage: pending
    login_unix_socket: /var/run/postgresql
  become: true
  become_user: postgres

- name: Log in with each of them over TCP
  keywarden.secrets.postgresql_logins:
    names: [app_db, reports_db]
    stage: pending
    state: tested
"""

RETURN = r"""
changed_names:
  description: Secrets whose login, password or membership was changed (or would be, in check mode).
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
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keywarden.secrets.plugins.module_utils import scram
from ansible_collections.keywarden.secrets.plugins.module_utils.specs import POSTGRESQL_LOGINS_OPTIONS

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # pragma: no cover - reported by main()
    psycopg2 = None

# no_log on the password only: Ansible masks every string of a no_log value in the output, and the names,
# users and databases must stay readable in messages.
LOGIN_OPTIONS = {
    "name": {"type": "str", "required": True},
    "user": {"type": "str", "required": True},
    "password": {"type": "str", "required": True, "no_log": True},
    "group": {"type": "str"},
    "database": {"type": "str"},
}
ARGUMENT_SPEC = {"logins": {"type": "list", "elements": "dict", "required": True, "options": LOGIN_OPTIONS}, **POSTGRESQL_LOGINS_OPTIONS}


def _reason(exc: Exception) -> str:
    """First line of a server or libpq message: names users and hosts, never a password."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _admin_connection(params: dict) -> object:
    where = params["login_unix_socket"] or params["login_host"]
    kwargs = {"user": params["login_user"], "dbname": params["login_db"], "port": params["login_port"], "connect_timeout": params["connect_timeout"]}
    if where:
        kwargs["host"] = where
    try:
        return psycopg2.connect(**kwargs)
    except psycopg2.Error as exc:
        raise RuntimeError(
            f"cannot connect to PostgreSQL at {where or 'the default socket'}:{params['login_port']} as {params['login_user']}: {_reason(exc)}; "
            "check keywarden_target_postgresql_login_* and keywarden_target_postgresql_become_user"
        ) from None


def ensure_present(params: dict, logins: list[dict], check_mode: bool) -> list[str]:
    """Apply what differs in one transaction; return the names of the secrets whose login changed."""
    conn = _admin_connection(params)
    changed = []
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
            for login in logins:
                group, user = login.get("group"), login["user"]
                statements = []
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
                for statement, args in statements:
                    cur.execute(statement, args)
                if statements:
                    changed.append(login["name"])
        if check_mode:
            conn.rollback()
        else:
            conn.commit()
    except psycopg2.Error as exc:
        conn.rollback()
        raise RuntimeError(f"PostgreSQL refused a change, nothing was applied: {_reason(exc)}") from None
    finally:
        conn.close()
    return changed


def test_logins(params: dict, logins: list[dict]) -> list[tuple[str, str]]:
    """Log in with each login over TCP; return (name, reason) for each refused one."""
    refused = []
    for login in logins:
        try:
            conn = psycopg2.connect(
                host=params["test_host"],
                port=params["login_port"],
                user=login["user"],
                password=login["password"],
                dbname=login.get("database") or params["login_db"],
                sslmode=params["ssl_mode"],
                connect_timeout=params["connect_timeout"],
            )
        except psycopg2.Error as exc:
            refused.append((login["name"], _reason(exc)))
            continue
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT current_user")
                if cur.fetchone()[0] != login["user"]:
                    refused.append((login["name"], "logged in as another user"))
        finally:
            conn.close()
    return refused


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    if psycopg2 is None:
        module.fail_json(msg="keywarden.secrets.postgresql_logins needs psycopg2 on the target host: install python3-psycopg2")
    params = module.params
    logins = params["logins"]
    if params["state"] == "present":
        try:
            changed = ensure_present(params, logins, module.check_mode)
        except RuntimeError as exc:
            module.fail_json(msg=str(exc))
        module.exit_json(changed=bool(changed), changed_names=changed, msg=f"{len(changed)} of {len(logins)} logins changed")
    refused = test_logins(params, logins)
    if refused:
        detail = "; ".join(f"{name}: {reason}" for name, reason in refused)
        module.fail_json(msg=f"login refused for {len(refused)} of {len(logins)}: {detail}", failed_names=[name for name, _ in refused])
    module.exit_json(changed=False, tested=len(logins), msg=f"{len(logins)} logins accepted")


if __name__ == "__main__":
    main()
