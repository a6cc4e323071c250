"""Redis ACL users on a real server (scripts/demo/redis, started by the tests): provisioning, dual-password rotation,
rollback before distribution, `--check`, persistence across a restart, the `default` user and `requirepass`, TLS.

The admin login comes from the store: `kw_admin` (user `kwadmin`) administers the other entries (`target.admin`)
and itself. The server starts as Redis ships: the `default` user takes no password, so the first provisioning creates
`kwadmin` through it and then gives `default` a password (entry `cache_default`). Clients are redis-py, over the
server's TLS port (client certificates), as an application would connect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kind_helpers import (
    Login,
    current_login,
    env_login,
    has_pending,
    holds,
    kind_clone,
    kind_provisioned,
    kind_server,
    redis_accepts,
    redis_open,
    redis_secret,
    redis_user,
    retirement,
    store_login,
    versions,
)
from rotation_helpers import catalog, rotate, run_playbook

ADMIN = "kw_admin"
SECRETS = {
    ADMIN: redis_secret("kwadmin", acl="~* &* +@all", consumers=[("cache", "redis-admin", "ADMIN")]),
    "cache_app": redis_secret("app", admin=ADMIN, acl="~app:* &* +@all -@dangerous", consumers=[("app", "app", "APP"), ("worker", "worker", "APP")]),
    "cache_default": redis_secret("default", admin=ADMIN, consumers=[("app", "legacy", "DEFAULT")]),
    "cache_single": redis_secret("single", "single_user", admin=ADMIN, consumers=[("app", "single", "SINGLE")]),
}
CONSUMERS = {
    ADMIN: [("redis-admin", "ADMIN")],
    "cache_app": [("app", "APP"), ("worker", "APP")],
    "cache_default": [("legacy", "DEFAULT")],
    "cache_single": [("single", "SINGLE")],
}
GROUPS = ("cache", "app", "worker")


def consumers_hold(ws: Any, name: str, login: Login) -> bool:
    return holds(ws, CONSUMERS[name], login)


def admin(ws: Any) -> Login:
    return current_login(ws, ADMIN)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """This module's own Redis (its ACL changes, it restarts): fresh, `default` open."""
    with kind_server("redis", tmp_path_factory.mktemp("redis-server")) as redis:
        yield redis


@pytest.fixture(scope="module")
def provisioned(make_workspace: Callable[..., Any], server: Any) -> tuple[Any, Any]:
    return kind_provisioned(make_workspace, "redis-site", "redis", SECRETS, server, ADMIN)


def test_provisioning_creates_the_admin_and_every_user_through_the_open_default_user(provisioned: tuple[Any, Any], server: Any) -> None:
    ws, first = provisioned
    assert first.returncode == 0, first.explain()
    # the fresh server let keywarden in without a password, and said so
    assert first.says("worked through the default user, which takes no password"), first.explain()
    for name in SECRETS:
        login = store_login(ws, name)
        assert login is not None
        assert redis_accepts(server, login), f"{name}: the store's value is refused over TLS"
        assert redis_accepts(server, login, tls=False), f"{name}: the store's value is refused over plain TCP"
        assert consumers_hold(ws, name, login)
    # `default` has a password now: nobody gets in without one
    assert not redis_open(server)
    app = redis_user(server, admin(ws), "app")
    assert app is not None and len(app["passwords"]) == 1 and "~app:*" in app["keys"]


def test_provisioning_again_changes_nothing_and_uses_the_stored_admin_login(provisioned: tuple[Any, Any]) -> None:
    ws, first = provisioned
    assert first.returncode == 0
    again = run_playbook(ws, "playbooks/provision.yml")
    # `default` has a password since the first run: only the stored admin login gets in now
    assert again.returncode == 0, again.explain()
    assert again.recap()["changed"] == 0, again.explain()
    assert not again.says("worked through the default user")


def test_the_acl_survives_a_restart(provisioned: tuple[Any, Any], server: Any) -> None:
    ws, first = provisioned
    assert first.returncode == 0
    server.restart()
    for name in SECRETS:
        login = store_login(ws, name)
        assert login is not None and redis_accepts(server, login), f"{name} is refused after a restart"
    assert not redis_open(server)


@pytest.fixture
def clone(workspace: Callable[..., Any], provisioned: tuple[Any, Any], server: Any) -> Any:
    """A copy of the provisioned store; the server's ACL is brought back to it and the server restarted."""
    return kind_clone(workspace, "redis-rotate", "redis", provisioned, server)


@pytest.mark.parametrize("name", ["cache_app", "cache_default", ADMIN])
def test_dual_password_rotation_adds_then_retires_after_distribution(clone: Any, server: Any, name: str) -> None:
    ws = clone
    old = store_login(ws, name)
    assert old is not None
    run = rotate(ws, only=name)
    assert run.returncode == 0, run.explain()
    new = store_login(ws, name)
    assert new is not None and new.user == old.user and new.fingerprint != old.fingerprint
    assert versions(ws, name) == (2, 1)
    # retired in the same run's cleanup play, after the consumers switched
    assert retirement(ws, name) == "retired", "the outgoing password was not recorded as retired"
    assert consumers_hold(ws, name, new)
    assert redis_accepts(server, new)
    assert not redis_accepts(server, old), "the outgoing password still works after the rotation"
    user = redis_user(server, admin(ws), new.user)
    assert user is not None and len(user["passwords"]) == 1
    # what was saved is what a restart brings back
    server.restart()
    assert redis_accepts(server, new) and not redis_accepts(server, old)
    assert run.says(f"{name}: previous value retired")


def test_single_user_rotation_replaces_the_password(clone: Any, server: Any) -> None:
    ws = clone
    old = store_login(ws, "cache_single")
    run = rotate(ws, only="cache_single")
    assert run.returncode == 0, run.explain()
    new = store_login(ws, "cache_single")
    assert old is not None and new is not None and new.fingerprint != old.fingerprint
    assert redis_accepts(server, new) and not redis_accepts(server, old)
    assert consumers_hold(ws, "cache_single", new)
    assert not retirement(ws, "cache_single"), "single_user has nothing to retire"


def test_a_failed_set_is_rolled_back_alone_before_distribution(clone: Any, server: Any) -> None:
    ws = clone
    data = yaml.safe_load(ws.catalog.read_text())
    data["secrets"]["cache_app"]["target"]["acl"] = "~app:* +nosuchcommand"  # the server refuses this rule
    ws.catalog.write_text("---\n" + yaml.safe_dump(data, sort_keys=False))
    before = {name: store_login(ws, name) for name in ("cache_app", "cache_default")}
    run = rotate(ws, only="cache_app,cache_default")
    assert run.returncode != 0
    assert run.says("rotation failed for cache_app"), run.explain()
    assert run.says("rolled back (consumers keep their current value): cache_app"), run.explain()
    app = store_login(ws, "cache_app")
    assert app is not None and app.fingerprint == before["cache_app"].fingerprint  # type: ignore[union-attr]
    assert not has_pending(ws, "cache_app")
    assert consumers_hold(ws, "cache_app", app) and redis_accepts(server, app)
    assert len(redis_user(server, admin(ws), "app")["passwords"]) == 1  # type: ignore[index]
    # the other secret of the run rotated
    default = store_login(ws, "cache_default")
    assert default is not None and default.fingerprint != before["cache_default"].fingerprint  # type: ignore[union-attr]
    assert redis_accepts(server, default)


def test_a_failed_test_login_removes_the_pending_password_again(clone: Any, server: Any) -> None:
    ws = clone
    old = store_login(ws, "cache_app")
    # Redis listens on 127.0.0.1 only: every test login is refused, after `set` added the pending password
    run = rotate(ws, "-e", "keywarden_target_redis_test_host=127.0.0.2", only="cache_app")
    assert run.returncode != 0 and run.says("rolled back (consumers keep their current value): cache_app"), run.explain()
    assert not has_pending(ws, "cache_app")
    user = redis_user(server, admin(ws), "app")
    assert user is not None and len(user["passwords"]) == 1, "the pending password was left on the user"
    assert old is not None and redis_accepts(server, old) and consumers_hold(ws, "cache_app", old)


def test_check_mode_changes_nothing(clone: Any, server: Any) -> None:
    ws = clone
    before = ws.snapshot()
    acl = _acl_list(server, admin(ws))
    run = rotate(ws, "--check", only="cache_app")
    assert run.returncode == 0, run.explain()
    assert run.says("would rotate cache_app (redis, dual_password)"), run.explain()
    assert ws.snapshot() == before
    assert _acl_list(server, admin(ws)) == acl


def test_test_logins_use_tls_where_the_server_offers_it(clone: Any) -> None:
    # the server's plain port is open too: with `require`, a run succeeds only if the module found and used the TLS port
    run = run_playbook(clone, "playbooks/provision.yml", "-v", "-e", "keywarden_target_redis_tls=require", "-e", "keywarden_target_phase=test")
    assert run.returncode == 0, run.explain()
    assert run.says("4 of 4 secrets tested"), run.explain()


def _acl_list(server: Any, login: Login) -> list[str]:
    from kind_helpers import redis_client  # noqa: PLC0415

    client = redis_client(server, login)
    try:
        return sorted(client.acl_list())
    finally:
        client.close()


# ---- requirepass and CONFIG REWRITE ------------------------------------------------------------------------------
def test_requirepass_is_taken_over_and_the_users_go_into_redis_conf(workspace: Callable[..., Any], tmp_path: Path) -> None:
    """A server that uses `requirepass` (no ACL file): its value is the store's `default` entry (what an operator
    imports at onboarding). keywarden manages `default` with ACL passwords from then on: requirepass leaves redis.conf,
    the users are saved there by CONFIG REWRITE, and a rotation's old password is gone after a restart."""
    entry = redis_secret("default", consumers=[("app", "legacy", "DEFAULT")])
    ws = workspace("requirepass", groups=GROUPS)
    ws.catalog.write_text("---\n" + yaml.safe_dump(catalog({"legacy_default": entry}), sort_keys=False))
    ws.set_password("local")
    init = run_playbook(ws, "playbooks/init.yml", "-e", "keywarden_store_create=true")
    assert init.returncode == 0, init.explain()
    onboarded = store_login(ws, "legacy_default")
    assert onboarded is not None
    secret_file = tmp_path / "requirepass-value"
    secret_file.touch(mode=0o600)
    secret_file.write_text(onboarded.password)
    with kind_server("redis", tmp_path / "server", "--config-rewrite", "--requirepass-file", str(secret_file)) as server:
        secret_file.unlink()
        (ws.inventory / "group_vars" / "all" / "redis.yml").write_text(server.vars_file.read_text())
        conf = server.dir / "redis.conf"
        assert _directive(conf, "requirepass") and redis_accepts(server, onboarded)
        site = run_playbook(ws, "playbooks/site.yml")
        assert site.returncode == 0, site.explain()
        assert not _directive(conf, "requirepass"), "requirepass (a password in clear) was left in redis.conf"
        assert _directive(conf, "user default on")
        run = rotate(ws, only="legacy_default")
        assert run.returncode == 0, run.explain()
        new = store_login(ws, "legacy_default")
        assert new is not None and consumers_hold_env(ws, "legacy", "DEFAULT", new)
        server.restart()
        assert redis_accepts(server, new) and not redis_accepts(server, onboarded) and not redis_open(server)


def consumers_hold_env(ws: Any, service: str, prefix: str, login: Login) -> bool:
    return env_login(ws, service, prefix).fingerprint == login.fingerprint


def _directive(conf: Path, start: str) -> bool:
    """Whether a line of the config starts with this (a bool: an assertion never shows the file, which may hold a password)."""
    return any(line.startswith(start) for line in conf.read_text().splitlines())
