"""Helpers of the Redis and RabbitMQ tests: catalog entries, and logins with the libraries applications use (redis-py,
pika), never with keywarden's own RESP and AMQP code. Values never reach an assertion: a `Login` leaves its password
out of repr and comparisons (compare ``fingerprint``s).
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import redis as redis_py
import yaml
from rotation_helpers import read_env, stored

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


def redis_secret(
    username: str,
    strategy: str = "dual_password",
    consumers: Iterable[tuple[str, str, str]] = (("app", "app", "REDIS"),),
    admin: str | None = None,
    acl: str | None = None,
) -> dict[str, Any]:
    """A Redis catalog entry; each consumer is (group, service, prefix): <prefix>_USER and <prefix>_PASSWORD."""
    target: dict[str, Any] = {"group": "cache", "username": username}
    if admin:
        target["admin"] = admin
    if acl:
        target["acl"] = acl
    return {
        "kind": "redis",
        "description": f"Redis user {username}",
        "environments": ["local"],
        "target": target,
        "policy": {"max_age_days": 30, "length": 32, "charset": "alnum", "strategy": strategy},
        "consumers": [{"group": g, "service": s, "env": {f"{p}_USER": "username", f"{p}_PASSWORD": "password"}} for g, s, p in consumers],
    }


def rabbitmq_secret(
    role: str,
    strategy: str = "alternating_users",
    consumers: Iterable[tuple[str, str, str]] = (("app", "app", "AMQP"),),
    admin: str | None = None,
    tags: list[str] | None = None,
    vhost: str = "orders",
) -> dict[str, Any]:
    """A RabbitMQ catalog entry; each consumer gets <prefix>_USER, <prefix>_PASSWORD and <prefix>_VHOST."""
    target: dict[str, Any] = {"group": "broker", "role": role, "vhost": vhost}
    if admin:
        target["admin"] = admin
    if tags:
        target["tags"] = tags
    return {
        "kind": "rabbitmq",
        "description": f"RabbitMQ users of {role}",
        "environments": ["local"],
        "target": target,
        "policy": {"max_age_days": 30, "length": 32, "charset": "alnum", "strategy": strategy},
        "consumers": [
            {"group": g, "service": s, "env": {f"{p}_USER": "username", f"{p}_PASSWORD": "password", f"{p}_VHOST": "vhost"}} for g, s, p in consumers
        ],
    }


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


def env_login(ws: Any, service: str, prefix: str) -> Login:
    """What a consumer holds: <prefix>_USER/_PASSWORD of <env_dir>/<service>.env, read afresh."""
    values = read_env(Path(ws.env_dir) / f"{service}.env")
    return Login(values[f"{prefix}_USER"], values[f"{prefix}_PASSWORD"])


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


def redis_accepts(server: Any, login: Login, tls: bool = True) -> bool:
    """AUTH + PING with these credentials (what the load client does)."""
    client = redis_client(server, login, tls)
    try:
        return bool(client.ping())
    except (redis_py.AuthenticationError, redis_py.ResponseError):
        return False
    finally:
        client.close()


def redis_open(server: Any) -> bool:
    """Whether a client without any password gets in (the `default` user is nopass)."""
    client = redis_client(server, None, tls=False)
    try:
        return bool(client.ping())
    except (redis_py.AuthenticationError, redis_py.ResponseError):
        return False
    finally:
        client.close()


def redis_user(server: Any, admin: Login, user: str) -> dict[str, Any] | None:
    """ACL GETUSER as the admin: flags and password digests (never a password)."""
    client = redis_client(server, admin)
    try:
        return client.acl_getuser(user)
    finally:
        client.close()


# ---- RabbitMQ -----------------------------------------------------------------------------------------
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
