"""Logins under load during a rotation: what a busy consumer sees.

A client logs in to the throwaway PostgreSQL over TCP (scram-sha-256) as fast as it can, from a few threads,
re-reading the consumer's .env before every login (as a consumer restarted by the rotation would), while
playbooks/rotate.yml rotates the credential. alternating_users must cost no login at all; single_user has a
window, from `set` at the server to `distribute` of the .env, where the consumer's value is refused: that
count is recorded, not asserted. Each run prints one summary line; with KEYWARDEN_BENCH_RESULTS=<dir> it is
also written to <dir>/load-<strategy>.json.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from load_helpers import MIN_RATE, LoadClient, LoadResult, rotate_under_load
from rotation_helpers import Run, catalog, clone, connects, env_creds, login, pg_secret, provisioned, store_creds

SECRETS = {"alternating_users": "load_alt", "single_user": "load_single"}
PREFIX = {"alternating_users": "ALT", "single_user": "SINGLE"}
ROLES = {"alternating_users": "ldalt", "single_user": "ldsingle"}


class Client(LoadClient):
    """THREADS threads logging in with the .env's credentials, re-read before each login."""

    def __init__(self, ws: Any, port: int, prefix: str) -> None:
        super().__init__()
        self.ws, self.port, self.prefix = ws, port, prefix

    def read(self) -> Any:
        return env_creds(self.ws, "load", self.prefix)

    def attempt(self, creds: Any) -> bool:
        return connects(self.port, creds)

    def operation(self) -> tuple[str, bool]:
        creds = self.read()
        return (creds.user, True) if self.attempt(creds) else ("refused", False)


@pytest.fixture(scope="module")
def template(make_workspace: Callable[..., Any], postgres: Any) -> Any:
    secrets = {name: pg_secret(ROLES[strategy], strategy, [("app", "load", PREFIX[strategy])]) for strategy, name in SECRETS.items()}
    return provisioned(make_workspace, "load-template", catalog(secrets), postgres)


def _record(client: LoadClient, run: Run, strategy: str, capsys: pytest.CaptureFixture[str], record_property: Callable[[str, Any], None]) -> LoadResult:
    users = dict(sorted(client.successes.items()))
    result = LoadResult.of(client, run, {"strategy": strategy}, "logins", {"users": users})
    result.record(strategy, f"logins by user {users}", capsys, record_property)
    return result


@pytest.mark.parametrize("strategy", ["alternating_users", "single_user"])
def test_logins_during_a_rotation(
    workspace: Callable[..., Any],
    template: Any,
    postgres: Any,
    strategy: str,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, Any], None],
) -> None:
    ws = clone(workspace, template, "load", postgres)
    name, prefix = SECRETS[strategy], PREFIX[strategy]
    client = Client(ws, postgres.port, prefix)
    run = rotate_under_load(client, ws, name)
    result = _record(client, run, strategy, capsys, record_property)

    assert result.rate >= MIN_RATE, f"the client managed {result.rate}/s, below {MIN_RATE}/s: the run proves nothing"
    new = store_creds(ws, name)
    assert new is not None and env_creds(ws, "load", prefix).fingerprint == new.fingerprint
    assert login(postgres.port, new) == new.user
    if strategy == "alternating_users":
        # the consumer moved from one login to the other while logging in, and not one login failed
        assert set(client.successes) == {"ldalt_a", "ldalt_b"}
        assert result.failed == 0, f"{result.failed} logins failed during an alternating_users rotation"


# ---- Redis (AUTH + PING) and RabbitMQ (connect + publish): 0 failed operations ------------------------------
KIND_SECRET = {"redis": "load_redis", "rabbitmq": "load_mq"}


class KindClient(Client):
    """THREADS threads doing one operation each time with the .env's credentials, re-read before each one:
    Redis: a new TCP connection, AUTH, PING; RabbitMQ: a new AMQP connection, publish one message."""

    def __init__(self, ws: Any, kind: str, server: Any) -> None:
        super().__init__(ws, 0, "LOAD")
        self.kind, self.server = kind, server

    def read(self) -> Any:
        from kind_helpers import env_login  # noqa: PLC0415

        return env_login(self.ws, "load", "LOAD")

    def attempt(self, creds: Any) -> bool:
        from kind_helpers import amqp_publish, redis_accepts  # noqa: PLC0415

        # plain TCP: redis-py builds a TLS context per connection (~100 ms here), which would cap the rate below the goal
        return redis_accepts(self.server, creds, tls=False) if self.kind == "redis" else amqp_publish(self.server, creds, "orders")


@pytest.fixture(scope="module")
def kind_load(make_workspace: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Per kind: its own throwaway server, and a provisioned store holding an admin entry and the loaded secret."""
    from kind_helpers import kind_server, kind_workspace, rabbitmq_secret, redis_secret  # noqa: PLC0415
    from rotation_helpers import run_playbook  # noqa: PLC0415

    with contextlib.ExitStack() as running:
        servers = {kind: running.enter_context(kind_server(kind, tmp_path_factory.mktemp(f"load-{kind}"))) for kind in KIND_SECRET}
        secrets = {
            "redis": {
                "load_admin": redis_secret("kwload", acl="~* &* +@all", consumers=[("cache", "redis-admin", "ADMIN")]),
                KIND_SECRET["redis"]: redis_secret("loader", admin="load_admin", consumers=[("app", "load", "LOAD")]),
            },
            "rabbitmq": {
                "load_admin": rabbitmq_secret("kwload", tags=["administrator"], vhost="/", consumers=[("broker", "rabbitmq-admin", "ADMIN")]),
                KIND_SECRET["rabbitmq"]: rabbitmq_secret("loader", admin="load_admin", consumers=[("app", "load", "LOAD")]),
            },
        }
        templates = {}
        for kind, server in servers.items():
            ws = kind_workspace(make_workspace, f"load-{kind}-template", kind, catalog(secrets[kind]), server)
            ws.set_password("local")
            site = run_playbook(ws, "playbooks/site.yml", "-e", "keywarden_store_create=true")
            assert site.returncode == 0, site.explain()
            templates[kind] = ws
        yield {"servers": servers, "templates": templates}


@pytest.mark.parametrize("kind", list(KIND_SECRET))
def test_operations_during_a_rotation(
    kind_load: dict[str, Any], kind: str, capsys: pytest.CaptureFixture[str], record_property: Callable[[str, Any], None]
) -> None:
    from kind_helpers import env_login, store_login  # noqa: PLC0415

    ws, server, name = kind_load["templates"][kind], kind_load["servers"][kind], KIND_SECRET[kind]
    old = store_login(ws, name)
    client = KindClient(ws, kind, server)
    run = rotate_under_load(client, ws, name)
    strategy = "dual_password" if kind == "redis" else "alternating_users"
    result = _record(client, run, f"{kind}-{strategy}", capsys, record_property)
    assert result.rate >= MIN_RATE, f"the client managed {result.rate}/s, below {MIN_RATE}/s: the run proves nothing"
    new = store_login(ws, name)
    assert old is not None and new is not None and new.fingerprint != old.fingerprint
    assert env_login(ws, "load", "LOAD").fingerprint == new.fingerprint
    if kind == "rabbitmq":
        assert set(client.successes) == {"loader_a", "loader_b"}, "the consumer did not move to the standby user while publishing"
    assert result.failed == 0, f"{result.failed} operations failed during a {kind} rotation"
