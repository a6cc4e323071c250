#!/usr/bin/python
# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ensure, or test, many RabbitMQ users in one module run, through the management HTTP API (standard library).

community.rabbitmq's modules run rabbitmqctl once per user and step (about a second each: an Erlang VM starts every
time) and put the password on its command line. Here one HTTP connection reads every user and permission with three
requests and changes only what differs; the password reaches the node as its salted hash (``password_hash``).
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: rabbitmq_logins
short_description: Ensure or test many RabbitMQ users (password, tags, permissions on one virtual host) in one call
description:
  - With O(state=present), for each login makes sure the user exists with the password, exactly the tags of the login,
    and the C(configure)/C(write)/C(read) permissions on its virtual host as its only permissions. A login with
    C(sibling) (alternating users) also gives the other user of the pair the same tags and permissions, keeping its password.
  - The password reaches the node as a salted SHA-256 hash (C(password_hash), C(rabbit_password_hashing_sha256)),
    never in clear; a user whose stored hash already matches the password is left alone (idempotent).
  - The virtual host must exist (keywarden manages users, not virtual hosts).
  - The admin session logs in to the management API as O(login_user). On a fresh node, where that user does not exist
    yet, and with O(bootstrap_guest), the module works through RabbitMQ's default C(guest) account (loopback only),
    then removes C(guest) once the admin login works.
  - With O(state=tested), logs in over AMQP once per login (PLAIN, then opens its virtual host), over TLS when the node
    has an C(amqp/ssl) listener.
  - One login's failure does not stop the others; the module then fails naming each failed secret in RV(failures).
  - keywarden's rotation engine runs it through the C(rabbitmq) driver of C(keywarden.secrets.target), which reads
    O(logins) and the admin login from the store; call it directly only with values from a vault, with C(no_log).
version_added: 0.5.0
author: keywarden contributors (@keywarden)
attributes:
  check_mode:
    support: full
    description: O(state=present) reads users and permissions and changes nothing.
  diff_mode:
    support: none
    description: Results hold names and counts, never values.
options:
  logins:
    description: The logins to set or test.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Name of the secret in the catalog (what messages and C(failures) name).
        type: str
        required: true
      user:
        description: RabbitMQ user name.
        type: str
        required: true
      password:
        description: Its password (never logged; sent as a salted hash except in the test login).
        type: str
        required: true
      vhost:
        description: Virtual host of the permissions and of the test login.
        type: str
        default: /
      tags:
        description: User tags (C(management), C(administrator), ...); exactly these.
        type: list
        elements: str
        default: []
      configure:
        description: Configure permission (regular expression).
        type: str
        default: .*
      write:
        description: Write permission (regular expression).
        type: str
        default: .*
      read:
        description: Read permission (regular expression).
        type: str
        default: .*
      sibling:
        description: The other user of an alternating pair; gets the same tags and permissions, its password is kept.
        type: str
  state:
    description: C(present) sets the users; C(tested) logs in with each over AMQP.
    type: str
    default: present
    choices: [present, tested]
  login_user:
    description: Management API user (tag C(administrator)).
    type: str
    required: true
  login_password:
    description: Its password.
    type: str
    required: true
  api_url:
    description: Base URL of the management API.
    type: str
    default: http://127.0.0.1:15672
  api_ca_file:
    description: CA certificate that checks an C(https) API's certificate; without it an C(https) API is not authenticated.
    type: path
  bootstrap_guest:
    description: On a node where O(login_user) is refused, work through the default C(guest) account and remove it afterwards.
    type: bool
    default: true
  test_host:
    description: Address the AMQP test logins connect to.
    type: str
    default: 127.0.0.1
  amqp_port:
    description: Plain AMQP port (used when the node has no C(amqp/ssl) listener, or O(tls=disable)).
    type: int
    default: 5672
  tls:
    description: C(prefer) tests over the node's C(amqp/ssl) listener when it has one, C(require) fails without one, C(disable) never uses it.
    type: str
    default: prefer
    choices: [disable, prefer, require]
  tls_ca_file:
    description: CA certificate that checks the AMQP server's certificate; without it the test logins are encrypted but the server unauthenticated.
    type: path
  connect_timeout:
    description: Seconds to wait for each connection.
    type: int
    default: 10
"""

EXAMPLES = r"""
- name: Set the standby user of a pair (the rotation engine passes the values it read from the store)
  keywarden.secrets.rabbitmq_logins:
    logins:
      - name: orders_broker
        user: orders_b
        password: "{{ vault_orders_broker_password }}"
        vhost: orders
        sibling: orders_a
    login_user: keywarden_admin_a
    login_password: "{{ vault_rabbitmq_admin_password }}"
  no_log: true
"""

RETURN = r"""
changed_names:
  description: Secrets whose user (or its sibling) was changed (or would be, in check mode).
  type: list
  elements: str
  returned: state=present
tested:
  description: How many logins were accepted.
  type: int
  returned: state=tested
tls:
  description: Whether the test logins used TLS.
  type: bool
  returned: state=tested
bootstrapped:
  description: Whether the work was done through the default C(guest) account (a fresh node), which was then removed.
  type: bool
  returned: state=present
failures:
  description: Secret name -> why its user could not be set or its login was refused. The module fails when this is not empty.
  type: dict
  returned: failure
"""

import base64
import hashlib
import http.client
import json
import os
import ssl
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keywarden.secrets.plugins.module_utils.amqp import AmqpError, log_in
from ansible_collections.keywarden.secrets.plugins.module_utils.logins import TEST_CONCURRENCY
from ansible_collections.keywarden.secrets.plugins.module_utils.specs import RABBITMQ_LOGINS_OPTIONS

HASHES = {"rabbit_password_hashing_sha256": hashlib.sha256, "rabbit_password_hashing_sha512": hashlib.sha512, "rabbit_password_hashing_md5": hashlib.md5}
ALGORITHM = "rabbit_password_hashing_sha256"
# RabbitMQ's default account: usable from localhost only, and only until the first provisioning replaces it
GUEST = "guest"


class ApiError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text}")
        self.status = status


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's stored form: base64(salt[4] + sha256(salt + password))."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode("utf-8")).digest()).decode("ascii")


def hash_matches(stored: str, algorithm: str, password: str) -> bool:
    try:
        raw = base64.b64decode(stored or "", validate=True)
    except ValueError:
        return False
    digest = HASHES.get(algorithm or ALGORITHM)
    if digest is None or len(raw) < 5:
        return False
    return raw[4:] == digest(raw[:4] + password.encode("utf-8")).digest()


class Api:
    """The management API over one kept-alive HTTP(S) connection."""

    def __init__(self, url: str, ca_file: str | None, timeout: float) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RuntimeError(f"api_url {url!r} is not an http(s) URL; set keywarden_target_rabbitmq_api_url")
        self.base = parts.path.rstrip("/") + "/api"
        self.where = f"{parts.scheme}://{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
        if parts.scheme == "https":
            context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl._create_unverified_context()  # noqa: S323 - prefer-style without a CA
            self.conn: http.client.HTTPConnection = http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=timeout, context=context)
        else:
            self.conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
        self.auth = ""

    def login(self, user: str, password: str) -> bool:
        """Use these credentials from now on if the API accepts them (False on 401)."""
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        try:
            self.call("GET", "/whoami")
        except ApiError as exc:
            if exc.status == 401:
                return False
            raise
        return True

    def call(self, method: str, path: str, body: object | None = None) -> object:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": self.auth, "Content-Type": "application/json"}
        for attempt in (1, 2):
            try:
                self.conn.request(method, self.base + path, body=data, headers=headers)
                response = self.conn.getresponse()
                raw = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.conn.close()  # a kept-alive connection the server closed: reconnect once
                if attempt == 2:
                    raise RuntimeError(f"the RabbitMQ management API at {self.where} closed the connection: {exc}") from None
            except (OSError, http.client.HTTPException) as exc:
                raise RuntimeError(f"cannot reach the RabbitMQ management API at {self.where}: {exc}; check keywarden_target_rabbitmq_api_url") from None
        if response.status >= 300:
            try:
                reason = json.loads(raw).get("reason") or response.reason
            except (ValueError, AttributeError):
                reason = response.reason
            raise ApiError(response.status, str(reason))
        return json.loads(raw) if raw else None


def _q(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _session(params: dict) -> tuple[Api, bool]:
    api = Api(params["api_url"], params["api_ca_file"], params["connect_timeout"])
    if api.login(params["login_user"], params["login_password"]):
        return api, False
    if params["bootstrap_guest"] and params["state"] == "present" and api.login(GUEST, GUEST):
        return api, True
    raise RuntimeError(
        f"the admin login {params['login_user']} was refused by the RabbitMQ management API at {api.where}; "
        "its password comes from the store: the entry named by target.admin (or the entry itself)"
    )


def _present(api: Api, logins: list[dict], check_mode: bool) -> tuple[list[str], dict[str, str]]:
    vhosts = {v["name"] for v in api.call("GET", "/vhosts") or []}
    users = {u["name"]: u for u in api.call("GET", "/users") or []}
    grants: dict[str, dict[str, dict]] = {}
    for grant in api.call("GET", "/permissions") or []:
        grants.setdefault(grant["user"], {})[grant["vhost"]] = grant
    changed: list[str] = []
    failures: dict[str, str] = {}
    for login in logins:
        if login["vhost"] not in vhosts:
            failures[login["name"]] = f"virtual host {login['vhost']} does not exist on this node; create it (keywarden manages users, not virtual hosts)"
            continue
        if not login["password"]:
            failures[login["name"]] = "the stored password is empty; a user without a password is refused"
            continue
        wanted = {"configure": login["configure"], "write": login["write"], "read": login["read"]}
        tags = sorted(set(login["tags"]))
        calls: list[tuple[str, str, object | None]] = []
        have = users.get(login["user"])
        if not have or sorted(_tags(have)) != tags or not hash_matches(have.get("password_hash", ""), have.get("hashing_algorithm", ""), login["password"]):
            body = {"password_hash": password_hash(login["password"]), "hashing_algorithm": ALGORITHM, "tags": ",".join(tags)}
            calls.append(("PUT", f"/users/{_q(login['user'])}", body))
        calls += _grants(login["user"], login["vhost"], wanted, grants.get(login["user"], {}))
        sibling = users.get(login["sibling"] or "")
        if sibling:
            if sorted(_tags(sibling)) != tags:
                # PUT replaces the whole user: its password hash goes back as it was
                keep = {
                    "password_hash": sibling.get("password_hash", ""),
                    "hashing_algorithm": sibling.get("hashing_algorithm") or ALGORITHM,
                    "tags": ",".join(tags),
                }
                calls.append(("PUT", f"/users/{_q(sibling['name'])}", keep))
            calls += _grants(sibling["name"], login["vhost"], wanted, grants.get(sibling["name"], {}))
        if not calls:
            continue
        try:
            if not check_mode:
                for method, path, body in calls:
                    api.call(method, path, body)
        except ApiError as exc:
            failures[login["name"]] = f"RabbitMQ refused the change of user {login['user']}: {exc}"
            continue
        changed.append(login["name"])
    return changed, failures


def _tags(user: dict) -> list[str]:
    tags = user.get("tags") or []
    return [t for t in (tags.split(",") if isinstance(tags, str) else tags) if t]


def _grants(user: str, vhost: str, wanted: dict, have: dict[str, dict]) -> list[tuple[str, str, object | None]]:
    """The permissions on ``vhost`` as the user's only ones."""
    calls: list[tuple[str, str, object | None]] = []
    current = have.get(vhost)
    if not current or any(current.get(key) != value for key, value in wanted.items()):
        calls.append(("PUT", f"/permissions/{_q(vhost)}/{_q(user)}", wanted))
    calls += [("DELETE", f"/permissions/{_q(other)}/{_q(user)}", None) for other in sorted(have) if other != vhost]
    return calls


def _amqp_target(api: Api, params: dict) -> tuple[int, ssl.SSLContext | None]:
    if params["tls"] == "disable":
        return params["amqp_port"], None
    listeners = (api.call("GET", "/overview") or {}).get("listeners") or []
    tls_ports = sorted({int(item["port"]) for item in listeners if item.get("protocol") == "amqp/ssl"})
    if not tls_ports:
        if params["tls"] == "require":
            raise RuntimeError("the RabbitMQ node has no amqp/ssl listener (tls: require); configure listeners.ssl on the node")
        return params["amqp_port"], None
    if params["tls_ca_file"]:
        context = ssl.create_default_context(cafile=params["tls_ca_file"])
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return tls_ports[0], context


def main() -> None:
    module = AnsibleModule(argument_spec=RABBITMQ_LOGINS_OPTIONS, supports_check_mode=True)
    params = module.params
    logins = params["logins"]
    try:
        api, bootstrapped = _session(params)
        if params["state"] == "tested":
            port, context = _amqp_target(api, params)

            def attempt(login: dict) -> str | None:
                try:
                    log_in(params["test_host"], port, login["user"], login["password"], login["vhost"], context, params["connect_timeout"])
                except AmqpError as exc:
                    return f"login as {login['user']} to virtual host {login['vhost']} refused: {exc}"
                return None

            # an AMQP handshake waits on the node most of its time: a few at once (each its own connection)
            with ThreadPoolExecutor(max_workers=min(TEST_CONCURRENCY, max(1, len(logins)))) as pool:
                outcomes = list(pool.map(attempt, logins))
            refused = {login["name"]: why for login, why in zip(logins, outcomes) if why}  # noqa: B905 - Python 3.8 targets
            if refused:
                detail = "; ".join(f"{name}: {why}" for name, why in sorted(refused.items()))
                module.fail_json(msg=f"login refused for {len(refused)} of {len(logins)}: {detail}", failures=refused, tls=context is not None)
            module.exit_json(changed=False, tested=len(logins), tls=context is not None, msg=f"{len(logins)} logins accepted")
        changed, failures = _present(api, logins, module.check_mode)
        warnings = []
        if bootstrapped and not module.check_mode:
            admin = Api(params["api_url"], params["api_ca_file"], params["connect_timeout"])
            if admin.login(params["login_user"], params["login_password"]):
                api.call("DELETE", f"/users/{GUEST}")
            else:
                warnings.append(f"worked through the default guest account; the admin login {params['login_user']} is still refused, so guest was kept")
    except (RuntimeError, ApiError) as exc:
        module.fail_json(msg=f"RabbitMQ: {exc}")
    result = {"changed": bool(changed), "changed_names": changed, "bootstrapped": bootstrapped, "warnings": warnings}
    if failures:
        detail = "; ".join(f"{name}: {why}" for name, why in sorted(failures.items()))
        module.fail_json(msg=f"{len(failures)} of {len(logins)} logins not set: {detail}", failures=failures, **result)
    module.exit_json(msg=f"{len(changed)} of {len(logins)} logins changed", **result)


if __name__ == "__main__":
    main()
