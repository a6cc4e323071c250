#!/usr/bin/python
# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Add, test or remove passwords of many Redis ACL users in one module run, over one admin connection.

Redis ACL users hold several passwords at once: a rotation adds the new one (state present), consumers switch,
then the old one is removed (state revoked) — nobody holding either value is ever refused. The password reaches
the server as its SHA-256 digest (``#<hex>``), the form ACL GETUSER shows, so idempotence is a compare.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: redis_logins
short_description: Add, test or remove passwords of many Redis ACL users in one call
description:
  - With O(state=present), for each login makes sure the ACL user exists, is C(on), and accepts the password, added
    beside the passwords it already has, or as its only one with C(exclusive). A login with C(acl) gets those rules as
    its whole permissions; a user created without C(acl) gets C(~* &* +@all -@dangerous). Users that already match are
    left alone (idempotent).
  - With O(state=revoked), removes each login's password from its user (the user and its other passwords stay).
  - The password reaches the server as its SHA-256 digest (the hash form of C(ACL SETUSER)), never in clear; only the test
    logins send it, in C(AUTH).
  - Every change is made to survive a restart, with C(ACL SAVE) when the server has an C(aclfile), else C(CONFIG REWRITE)
    (the users go into redis.conf). A server with neither fails naming the fix.
  - The C(default) user is handled like any other. When the server still has C(requirepass) (which resets the
    C(default) user's passwords to that one value whenever it is set, and leaves its plain text in redis.conf),
    setting the C(default) user clears C(requirepass) in the same transaction, keeping the passwords it had.
  - The admin connection logs in as O(login_user). When that login is refused and the server lets clients in without
    a password (a fresh server, whose C(default) user is C(nopass)), the module works through that connection, which
    is how the first provisioning creates the admin user; a warning says the C(default) user is still open.
  - With O(state=tested), logs in once per login with C(AUTH user password) over TLS when the server offers it
    (O(tls_port), or the C(tls-port) the server reports).
  - One login's failure does not stop the others; the module then fails naming each failed secret in RV(failures).
  - keywarden's rotation engine runs it through the C(redis) driver of C(keywarden.secrets.target), which reads
    O(logins) and the admin login from the store; call it directly only with values from a vault, with C(no_log).
version_added: 0.5.0
author: keywarden contributors (@keywarden)
attributes:
  check_mode:
    support: full
    description: O(state=present) and O(state=revoked) read the users and change nothing. ACL rule changes of an existing user are
      only found by a real run.
  diff_mode:
    support: none
    description: Results hold names and counts, never values.
options:
  logins:
    description: The logins to set, test or revoke.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Name of the secret in the catalog (what messages and C(failures) name).
        type: str
        required: true
      user:
        description: ACL user name.
        type: str
        required: true
      password:
        description: The password (never logged; sent as its SHA-256 digest except in the test login).
        type: str
        required: true
      acl:
        description: ACL rules of the user, space-separated (C(~cache:* +@read +@write)); the whole of its permissions when given.
        type: str
      exclusive:
        description: Make this the user's only password (single_user strategy) instead of adding it.
        type: bool
        default: false
  state:
    description: C(present) adds the passwords; C(tested) logs in with each; C(revoked) removes them.
    type: str
    default: present
    choices: [present, tested, revoked]
  login_user:
    description: ACL user of the admin connection (needs C(ACL), C(CONFIG) rights).
    type: str
    default: default
  login_password:
    description: Its password.
    type: str
  login_host:
    description: Address of the server for the admin connection.
    type: str
    default: 127.0.0.1
  login_port:
    description: Plain TCP port of the server.
    type: int
    default: 6379
  login_unix_socket:
    description: Unix socket of the server for the admin connection; wins over O(login_host).
    type: str
  tls:
    description:
      - C(prefer) uses TLS when the server offers it (O(tls_port) given, or a C(tls-port) the server reports to the admin login),
        C(require) fails without it, C(disable) never uses it.
    type: str
    default: prefer
    choices: [disable, prefer, require]
  tls_port:
    description: TLS port of the server; the admin connection uses it from the start. C(0) asks the server.
    type: int
    default: 0
  tls_ca_file:
    description: CA certificate that checks the server's certificate and name; without it the channel is encrypted but the server unauthenticated.
    type: path
  tls_cert_file:
    description: Client certificate, for a server with C(tls-auth-clients yes).
    type: path
  tls_key_file:
    description: Its private key.
    type: path
  test_host:
    description: Address the test logins connect to.
    type: str
    default: 127.0.0.1
  connect_timeout:
    description: Seconds to wait for each connection.
    type: int
    default: 10
"""

EXAMPLES = r"""
- name: Add a password to an ACL user (the rotation engine passes the values it read from the store)
  keywarden.secrets.redis_logins:
    logins:
      - name: cache_app
        user: app
        password: "{{ vault_cache_app_password }}"
        acl: "~cache:* +@read +@write"
    login_user: keywarden
    login_password: "{{ vault_redis_admin_password }}"
  no_log: true
"""

RETURN = r"""
changed_names:
  description: Secrets whose user was changed (or would be, in check mode).
  type: list
  elements: str
  returned: state=present or state=revoked
tested:
  description: How many logins were accepted.
  type: int
  returned: state=tested
tls:
  description: Whether the test logins (and the admin connection, once the server's TLS port is known) used TLS.
  type: bool
  returned: always
persisted:
  description: How the change was saved for a restart (C(ACL SAVE), C(CONFIG REWRITE)), or C(none) when nothing changed.
  type: str
  returned: state=present or state=revoked
failures:
  description: Secret name -> why its login could not be set, removed, or was refused. The module fails when this is not empty.
  type: dict
  returned: failure
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keywarden.secrets.plugins.module_utils.resp import Redis, RespConnectionError, RespError, pairs, password_digest, tls_context
from ansible_collections.keywarden.secrets.plugins.module_utils.specs import REDIS_LOGINS_OPTIONS

DEFAULT_RULES = "~* &* +@all -@dangerous"
# the rules a login's `acl` replaces: all of them (keys, channels, commands, selectors); passwords are kept
_RESET_RULES = ("resetkeys", "resetchannels", "nocommands", "clearselectors")


class _Session:
    """The admin connection, and where and how the test logins connect."""

    def __init__(self, params: dict) -> None:
        self.params = params
        self.warnings: list[str] = []
        mode = params["tls"]
        self.context = None
        if mode != "disable":
            try:
                self.context = tls_context(params["tls_ca_file"], params["tls_cert_file"], params["tls_key_file"])
            except (OSError, ValueError) as exc:
                raise RuntimeError(f"cannot load the TLS files (keywarden_target_redis_tls_*): {exc}") from None
        self.tls_port = params["tls_port"] if mode != "disable" else 0
        self.conn = self._admin()
        if mode != "disable" and not self.conn.tls and not self.tls_port:
            self.tls_port = self._offered_tls_port()
            if self.tls_port and not params["login_unix_socket"]:
                self.conn.close()
                self.conn = self._connect(params["login_host"], self.tls_port, self.context)
                self._authenticate(self.conn)
        self.tls = bool(self.tls_port)
        if mode == "require" and not self.tls:
            raise RuntimeError(f"Redis at {self.conn.where} offers no TLS port (tls: require); set tls-port on the server or keywarden_target_redis_tls_port")

    def _connect(self, host: str, port: int, context: object | None, unix_socket: str | None = None) -> Redis:
        try:
            return Redis(host, port, unix_socket=unix_socket, tls=context, timeout=self.params["connect_timeout"])
        except RespConnectionError as exc:
            raise RuntimeError(f"{exc}; check keywarden_target_redis_port / _tls_port / _login_unix_socket") from None

    def _admin(self) -> Redis:
        params = self.params
        if params["login_unix_socket"]:
            conn = self._connect("", 0, None, unix_socket=params["login_unix_socket"])
        elif self.tls_port:
            try:
                conn = self._connect(params["login_host"], self.tls_port, self.context)
            except RuntimeError:
                if params["tls"] == "require":
                    raise
                self.tls_port = 0  # prefer: the configured TLS port does not answer; plain TCP
                conn = self._connect(params["login_host"], params["login_port"], None)
        else:
            conn = self._connect(params["login_host"], params["login_port"], None)
        self._authenticate(conn)
        return conn

    def _authenticate(self, conn: Redis) -> None:
        params = self.params
        user = params["login_user"]
        try:
            conn.command("AUTH", user, params["login_password"] or "")
            return
        except RespError as exc:
            refused = str(exc)
        except RespConnectionError as exc:
            raise RuntimeError(str(exc)) from None
        # a server whose `default` user takes no password lets this connection in as `default`: a fresh server,
        # whose admin user the first provisioning creates through it
        try:
            conn.command("PING")
        except (RespError, RespConnectionError):
            raise RuntimeError(
                f"the admin login {user} was refused by Redis at {conn.where} ({refused.split('.', maxsplit=1)[0]}); "
                f"its password comes from the store: the entry named by target.admin (or the entry itself)"
            ) from None
        self.warnings.append(
            f"the admin login {user} was refused by Redis at {conn.where}; worked through the default user, which takes no password: "
            "any client gets in until a catalog entry with username default gives it one (or ACL SETUSER default off)"
        )

    def _offered_tls_port(self) -> int:
        try:
            value = pairs(self.conn.command("CONFIG", "GET", "tls-port")).get("tls-port")
        except RespError:
            return 0  # no CONFIG right: keep the plain connection
        return int(value or 0)

    def test_target(self) -> tuple[int, object | None]:
        return (self.tls_port, self.context) if self.tls else (self.params["login_port"], None)


def _user(conn: Redis, user: str) -> dict | None:
    info = pairs(conn.command("ACL", "GETUSER", user))
    if not info:
        return None
    return {
        "flags": [str(flag) for flag in info.get("flags") or []],
        "passwords": [str(p) for p in info.get("passwords") or []],
        "rules": tuple(str(info.get(key)) for key in ("commands", "keys", "channels", "selectors")),
    }


def _present(session: _Session, logins: list[dict], check_mode: bool) -> tuple[list[str], dict[str, str], str]:
    conn = session.conn
    config = pairs(conn.command("CONFIG", "GET", "requirepass"))
    requirepass = bool(config.get("requirepass"))
    changed: list[str] = []
    failures: dict[str, str] = {}
    for login in logins:
        user, digest = login["user"], password_digest(login["password"])
        if not login["password"]:
            failures[login["name"]] = "the stored password is empty; a user without a password is refused"
            continue
        try:
            have = _user(conn, user)
            passwords = (have or {}).get("passwords") or []
            args: list[str] = []
            if not have or "on" not in have["flags"]:
                args.append("on")
            if login["exclusive"]:
                if passwords != [digest] or "nopass" in (have or {}).get("flags", []):
                    args += ["resetpass", f"#{digest}"]
            elif digest not in passwords:
                args.append(f"#{digest}")
            rules = (login["acl"] or "").split() or (DEFAULT_RULES.split() if not have else [])
            if login["acl"]:
                rules = [*_RESET_RULES, *rules]
            # requirepass would reset `default` to its one value whenever it is set again, and keeps it in clear in redis.conf
            clear_requirepass = user == "default" and requirepass
            if not args and not rules and not clear_requirepass:
                continue
            if check_mode:
                if args or not have or clear_requirepass:
                    changed.append(login["name"])
                continue
            if clear_requirepass:
                # CONFIG SET requirepass "" makes `default` nopass: in one transaction with the passwords it had
                keep = [] if login["exclusive"] else [f"#{p}" for p in passwords if p != digest]
                replies = conn.pipeline(
                    [("MULTI",), ("CONFIG", "SET", "requirepass", ""), ("ACL", "SETUSER", user, "on", "resetpass", *keep, f"#{digest}", *rules), ("EXEC",)]
                )
                if not isinstance(replies[-1], list):
                    raise RespError("the transaction was aborted")
                requirepass = False
            else:
                conn.command("ACL", "SETUSER", user, *args, *rules)
            after = _user(conn, user)
            if args or not have or clear_requirepass or (after and after["rules"] != have["rules"]):
                changed.append(login["name"])
        except RespError as exc:
            failures[login["name"]] = f"Redis refused the change of user {user}: {_first(exc)}"
    return changed, failures, ("" if check_mode else _persist(session, changed, failures))


def _revoked(session: _Session, logins: list[dict], check_mode: bool) -> tuple[list[str], dict[str, str], str]:
    conn = session.conn
    changed: list[str] = []
    failures: dict[str, str] = {}
    for login in logins:
        user, digest = login["user"], password_digest(login["password"])
        try:
            have = _user(conn, user)
            if not have or digest not in have["passwords"]:
                continue
            if not check_mode:
                conn.command("ACL", "SETUSER", user, f"!{digest}")
            changed.append(login["name"])
        except RespError as exc:
            failures[login["name"]] = f"Redis refused to remove a password of user {user}: {_first(exc)}"
    return changed, failures, ("" if check_mode else _persist(session, changed, failures))


def _persist(session: _Session, changed: list[str], failures: dict[str, str]) -> str:
    """Save the ACL for a restart: ACL SAVE with an aclfile, else CONFIG REWRITE. On failure every changed login fails
    (its change is live but would be lost at the next restart)."""
    if not changed:
        return "none"
    conn = session.conn
    try:
        aclfile = pairs(conn.command("CONFIG", "GET", "aclfile")).get("aclfile")
        if aclfile:
            conn.command("ACL", "SAVE")
            try:  # a requirepass cleared above must leave redis.conf too; a server without a config file has none there
                conn.command("CONFIG", "REWRITE")
            except RespError:
                pass
            return "ACL SAVE"
        conn.command("CONFIG", "REWRITE")
        return "CONFIG REWRITE"
    except RespError as exc:
        why = (
            f"the change is live but would be lost at the next restart: {_first(exc)}; give the server an aclfile "
            "(or a config file for CONFIG REWRITE) and allow the admin user ACL SAVE and CONFIG REWRITE"
        )
        for name in changed:
            failures[name] = why
        return "failed"


def _log_in(session: _Session, login: dict) -> str | None:
    """None when the login is accepted; else why not."""
    port, context = session.test_target()
    try:
        with Redis(session.params["test_host"], port, tls=context, timeout=session.params["connect_timeout"]) as conn:
            conn.command("AUTH", login["user"], login["password"])
    except RespError as exc:
        return f"login as {login['user']} refused: {_first(exc)}"
    except RespConnectionError as exc:
        return str(exc)
    return None


def _first(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _open_default(session: _Session) -> bool:
    try:
        have = _user(session.conn, "default")
    except RespError:
        return False
    return bool(have and "on" in have["flags"] and "nopass" in have["flags"])


def main() -> None:
    module = AnsibleModule(argument_spec=REDIS_LOGINS_OPTIONS, supports_check_mode=True)
    params = module.params
    logins = params["logins"]
    state = params["state"]
    try:
        session = _Session(params)
    except RuntimeError as exc:
        module.fail_json(msg=str(exc), tls=False)
    try:
        if state == "tested":
            refused = {login["name"]: why for login in logins if (why := _log_in(session, login)) is not None}
            if refused:
                detail = "; ".join(f"{name}: {why}" for name, why in sorted(refused.items()))
                module.fail_json(msg=f"login refused for {len(refused)} of {len(logins)}: {detail}", failures=refused, tls=session.tls)
            module.exit_json(changed=False, tested=len(logins), tls=session.tls, msg=f"{len(logins)} logins accepted", warnings=session.warnings)
        work = _present if state == "present" else _revoked
        try:
            changed, failures, persisted = work(session, logins, module.check_mode)
        except (RespError, RespConnectionError) as exc:
            module.fail_json(msg=f"Redis at {session.conn.where}: {_first(exc)}", tls=session.tls)
        if state == "present" and _open_default(session):
            session.warnings.append(f"the default user of Redis at {session.conn.where} takes no password (nopass): any client gets in")
        result = {"changed": bool(changed), "changed_names": changed, "tls": session.tls, "persisted": persisted, "warnings": session.warnings}
        if failures:
            detail = "; ".join(f"{name}: {why}" for name, why in sorted(failures.items()))
            verb = "set" if state == "present" else "revoked"
            module.fail_json(msg=f"{len(failures)} of {len(logins)} logins not {verb}: {detail}", failures=failures, **result)
        module.exit_json(msg=f"{len(changed)} of {len(logins)} logins changed", **result)
    finally:
        session.conn.close()


if __name__ == "__main__":
    main()
