"""Helpers of the Redis and RabbitMQ tests: catalog entries, a module's own server and the store it provisions there,
and logins with the libraries applications use (redis-py, pika), never with keywarden's own RESP and AMQP code.
Values never reach an assertion: a `Login` leaves its password out of repr and comparisons (compare
``fingerprint``s).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import ssl
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pika
import redis as redis_py
import yaml
from rotation_helpers import Run, catalog, read_env, run_playbook, stored
from support import start_rabbitmq, start_redis, stop_rabbitmq, stop_redis

KIND_GROUP = {"redis": "cache", "rabbitmq": "broker"}  # the target group of each kind's test entries


def kind_workspace(make: Any, name: str, kind: str, catalog_data: dict[str, Any], server: Any, consumers: Iterable[str] = ("app", "worker")) -> Any:
    """A conftest Workspace (the kind's target group and the consumer groups) with this catalog and the server's settings."""
    ws = make(name, groups=(KIND_GROUP[kind], *consumers))
    ws.catalog.write_text("---\n" + yaml.safe_dump(catalog_data, sort_keys=False))
    (ws.inventory / "group_vars" / "all" / f"{kind}.yml").write_text(server.vars_file.read_text())
    return ws


def holds(ws: Any, consumers: Iterable[tuple[str, str]], login: Login) -> bool:
    """Whether each (service, prefix) consumer's .env holds this login."""
    return all(env_login(ws, service, prefix).fingerprint == login.fingerprint for service, prefix in consumers)


# where the kinds' entries differ: the target field that names the login and the target's own defaults, the
# default strategy, the default consumer's variable prefix, and what a consumer's .env gets (<prefix>_<suffix>: field)
_ENTRY: dict[str, dict[str, Any]] = {
    "redis": {
        "login": "username",
        "target": {},
        "description": "Redis user {}",
        "strategy": "dual_password",
        "prefix": "REDIS",
        "env": {"USER": "username", "PASSWORD": "password"},
    },
    "rabbitmq": {
        "login": "role",
        "target": {"vhost": "orders"},
        "description": "RabbitMQ users of {}",
        "strategy": "alternating_users",
        "prefix": "AMQP",
        "env": {"USER": "username", "PASSWORD": "password", "VHOST": "vhost"},
    },
}


def kind_secret(
    kind: str,
    login: str,
    strategy: str | None = None,
    consumers: Iterable[tuple[str, str, str]] | None = None,
    admin: str | None = None,
    acl: str | None = None,
    tags: list[str] | None = None,
    vhost: str | None = None,
) -> dict[str, Any]:
    """A catalog entry for a Redis user or RabbitMQ role ``login``, with the target fields that are set (``acl`` is
    Redis's; ``tags`` and ``vhost``, default orders, RabbitMQ's). Each consumer is (group, service, prefix):
    <prefix>_USER and <prefix>_PASSWORD, and for RabbitMQ <prefix>_VHOST."""
    shape = _ENTRY[kind]
    entry_target: dict[str, Any] = {"group": KIND_GROUP[kind], shape["login"]: login, **shape["target"]}
    entry_target.update({name: value for name, value in {"admin": admin, "acl": acl, "tags": tags, "vhost": vhost}.items() if value})
    return {
        "kind": kind,
        "description": shape["description"].format(login),
        "environments": ["local"],
        "target": entry_target,
        "policy": {"max_age_days": 30, "length": 32, "charset": "alnum", "strategy": strategy or shape["strategy"]},
        "consumers": [
            {"group": g, "service": s, "env": {f"{p}_{suffix}": name for suffix, name in shape["env"].items()}}
            for g, s, p in (consumers if consumers is not None else (("app", "app", shape["prefix"]),))
        ],
    }


redis_secret = partial(kind_secret, "redis")
rabbitmq_secret = partial(kind_secret, "rabbitmq")


@dataclass(frozen=True)
class Login:
    user: str
    password: str = field(repr=False, compare=False)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.user}\0{self.password}".encode()).hexdigest()


def store_login(ws: Any, name: str, stage: str = "current") -> Login | None:
    staged = stored(ws, name).get(stage)
    if not staged:
        return None
    return Login(staged["fields"]["username"], staged["fields"]["password"])


def has_pending(ws: Any, name: str) -> bool:
    return bool(stored(ws, name).get("pending"))


def versions(ws: Any, name: str) -> tuple[int, int | None]:
    entry = stored(ws, name)
    return entry["current"]["version"], (entry.get("previous") or {}).get("version")


def retirement(ws: Any, name: str) -> str:
    """What the store says of the previous value's retirement: 'retired', 'scheduled', or '' (never); no value."""
    previous = stored(ws, name).get("previous") or {}
    return "retired" if previous.get("retired") else "scheduled" if previous.get("retire_after") else ""


def current_login(ws: Any, name: str) -> Login:
    """The store's current login of an entry that must have one (an admin entry)."""
    login = store_login(ws, name)
    assert login is not None, f"{name} has no current value in the store"
    return login


def env_login(ws: Any, service: str, prefix: str) -> Login:
    """What a consumer holds: <prefix>_USER/_PASSWORD of <env_dir>/<service>.env, read afresh."""
    values = read_env(Path(ws.env_dir) / f"{service}.env")
    return Login(values[f"{prefix}_USER"], values[f"{prefix}_PASSWORD"])


# ---- a test module's own server and the store it provisions there -------------------------------------------
_SERVER = {"redis": (start_redis, stop_redis), "rabbitmq": (start_rabbitmq, stop_rabbitmq)}


@contextmanager
def kind_server(kind: str, root: Path, *options: str) -> Iterator[Any]:
    """A throwaway server of this kind in ``root`` (scripts/demo/<kind>; ``options`` go to its start), stopped on the
    way out whether it started or not."""
    start, stop = _SERVER[kind]
    try:
        yield start(root, *options)
    finally:
        stop(root)


def kind_provisioned(make: Any, name: str, kind: str, secrets: dict[str, dict[str, Any]], server: Any, admin: str) -> tuple[Any, Run]:
    """The template of a module's tests: a store provisioned by site.yml on the module's fresh server, and that run.
    The server's users as the run left them (digests or hashes, no value) are kept beside the store, read as the
    ``admin`` entry where the server needs a login for it (RabbitMQ's definitions), for ``kind_clone`` to restore."""
    ws = kind_workspace(make, name, kind, catalog(secrets), server)
    ws.set_password("local")
    first = run_playbook(ws, "playbooks/site.yml", "-e", "keywarden_store_create=true")
    if first.returncode == 0:
        if kind == "redis":
            shutil.copy2(server.dir / "users.acl", ws.root / "users.acl.template")
        else:
            definitions = ws.root / "definitions.json"
            definitions.touch(mode=0o600)
            definitions.write_text(json.dumps(rabbitmq_api(server, current_login(ws, admin), "/definitions")))
    return ws, first


def kind_clone(make: Any, name: str, kind: str, provisioned: tuple[Any, Run], server: Any) -> Any:
    """A copy of the template's store and delivered .env files; the server's users are brought back to the
    template's (a rotation of another test moved them on)."""
    template, first = provisioned
    assert first.returncode == 0, first.explain()
    ws = kind_workspace(make, name, kind, yaml.safe_load(template.catalog.read_text()), server)
    ws.clone_store(template, env_dir=True)
    if kind == "redis":
        shutil.copy2(template.root / "users.acl.template", server.dir / "users.acl")
        server.restart()
    else:
        server.ctl("import_definitions", str(template.root / "definitions.json"))
    return ws


# ---- Redis --------------------------------------------------------------------------------------------
def redis_client(server: Any, login: Login | None = None, tls: bool = True, timeout: float = 5) -> redis_py.Redis:
    kwargs: dict[str, Any] = {"host": "127.0.0.1", "socket_timeout": timeout, "socket_connect_timeout": timeout}
    if login is not None:
        kwargs.update(username=login.user, password=login.password)
    if tls:
        kwargs.update(
            port=server.tls_port,
            ssl=True,
            ssl_ca_certs=server.vars["keywarden_target_redis_tls_ca_file"],
            ssl_certfile=server.vars["keywarden_target_redis_tls_cert_file"],
            ssl_keyfile=server.vars["keywarden_target_redis_tls_key_file"],
        )
    else:
        kwargs["port"] = server.port
    return redis_py.Redis(**kwargs)


def redis_accepts(server: Any, login: Login | None, tls: bool = True) -> bool:
    """AUTH + PING with these credentials (what the load client does); with none, a bare PING."""
    client = redis_client(server, login, tls)
    try:
        return bool(client.ping())
    except (redis_py.AuthenticationError, redis_py.ResponseError):
        return False
    finally:
        client.close()


def redis_open(server: Any) -> bool:
    """Whether a client without any password gets in (the `default` user is nopass)."""
    return redis_accepts(server, None, tls=False)


def redis_user(server: Any, admin: Login, user: str) -> dict[str, Any] | None:
    """ACL GETUSER as the admin: flags and password digests (never a password)."""
    client = redis_client(server, admin)
    try:
        return client.acl_getuser(user)
    finally:
        client.close()


# ---- RabbitMQ -----------------------------------------------------------------------------------------
def rabbitmq_api(node: Any, login: Login, path: str) -> Any:
    """GET on the management API as this login; the JSON (users carry password hashes: compare, never print)."""
    request = urllib.request.Request(f"{node.api_url}/api{path}")  # noqa: S310 - a loopback http URL the test made
    request.add_header("Authorization", "Basic " + base64.b64encode(f"{login.user}:{login.password}".encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - a loopback http URL the test made
        return json.loads(response.read())


def amqp_params(server: Any, login: Login, vhost: str = "orders", tls: bool = False) -> pika.ConnectionParameters:
    options: dict[str, Any] = {}
    if tls:
        context = ssl.create_default_context(cafile=server.vars["keywarden_target_rabbitmq_tls_ca_file"])
        options["ssl_options"] = pika.SSLOptions(context, "127.0.0.1")
    return pika.ConnectionParameters(
        host="127.0.0.1",
        port=server.tls_port if tls else server.port,
        virtual_host=vhost,
        credentials=pika.PlainCredentials(login.user, login.password),
        connection_attempts=1,
        socket_timeout=5,
        blocked_connection_timeout=5,
        **options,
    )


def amqp_publish(server: Any, login: Login, vhost: str = "orders", tls: bool = False) -> bool:
    """Connect and publish one message to the default exchange (what the load client does); False when refused."""
    try:
        connection = pika.BlockingConnection(amqp_params(server, login, vhost, tls))
    except pika.exceptions.AMQPError:
        return False
    try:
        channel = connection.channel()
        channel.basic_publish(exchange="", routing_key="keywarden-load", body=b"ping")
        return True
    except pika.exceptions.AMQPError:
        return False
    finally:
        try:
            connection.close()
        except pika.exceptions.AMQPError:
            pass
