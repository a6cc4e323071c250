"""RabbitMQ users on a real node (scripts/demo/rabbitmq, started by the tests): provisioning through the management
API, alternating-users rotation, rollback before distribution, `--check`, TLS test logins.

The admin login comes from the store: `mq_admin` (users `kwadmin_a`/`kwadmin_b`, tag administrator) administers the
other entries (`target.admin`) and itself. The node starts fresh, with RabbitMQ's default `guest` account: the first
provisioning creates the admin users through it and then removes it. Clients are pika (connect + publish), as an
application would connect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from kind_helpers import (
    Login,
    amqp_publish,
    current_login,
    has_pending,
    holds,
    kind_clone,
    kind_provisioned,
    kind_server,
    rabbitmq_api,
    rabbitmq_secret,
    retirement,
    store_login,
)
from rotation_helpers import rotate, run_playbook

ADMIN = "mq_admin"
SECRETS = {
    ADMIN: rabbitmq_secret("kwadmin", tags=["administrator"], vhost="/", consumers=[("broker", "rabbitmq-admin", "ADMIN")]),
    "orders_mq": rabbitmq_secret("orders", admin=ADMIN, tags=["management"], consumers=[("app", "app", "AMQP"), ("worker", "worker", "AMQP")]),
    "audit_mq": rabbitmq_secret("audit", "single_user", admin=ADMIN, consumers=[("app", "audit", "AUDIT")]),
}
CONSUMERS = {ADMIN: [("rabbitmq-admin", "ADMIN")], "orders_mq": [("app", "AMQP"), ("worker", "AMQP")], "audit_mq": [("audit", "AUDIT")]}
VHOST = {ADMIN: "/", "orders_mq": "orders", "audit_mq": "orders"}
GROUPS = ("broker", "app", "worker")


def consumers_hold(ws: Any, name: str, login: Login) -> bool:
    return holds(ws, CONSUMERS[name], login)


def grants(node: Any, admin: Login, user: str) -> tuple[list[str], list[tuple[str, str, str, str]]]:
    """A user's tags and its permissions (vhost, configure, write, read)."""
    info = rabbitmq_api(node, admin, f"/users/{user}")
    perms = rabbitmq_api(node, admin, f"/users/{user}/permissions")
    return sorted(info["tags"]), sorted((p["vhost"], p["configure"], p["write"], p["read"]) for p in perms)


def admin(ws: Any) -> Login:
    return current_login(ws, ADMIN)


@pytest.fixture(scope="module")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """This module's own node: fresh (guest), and its users end with this module's store."""
    with kind_server("rabbitmq", tmp_path_factory.mktemp("rabbitmq-node")) as node:
        yield node


@pytest.fixture(scope="module")
def provisioned(make_workspace: Callable[..., Any], rabbitmq: Any) -> tuple[Any, Any]:
    return kind_provisioned(make_workspace, "mq-site", "rabbitmq", SECRETS, rabbitmq, ADMIN)


def test_provisioning_creates_every_user_through_guest_then_removes_guest(provisioned: tuple[Any, Any], rabbitmq: Any) -> None:
    ws, first = provisioned
    assert first.returncode == 0, first.explain()
    for name in SECRETS:
        login = store_login(ws, name)
        assert login is not None and consumers_hold(ws, name, login)
        assert amqp_publish(rabbitmq, login, VHOST[name]), f"{name}: the store's value is refused"
        assert amqp_publish(rabbitmq, login, VHOST[name], tls=True), f"{name}: the store's value is refused over TLS"
    assert not amqp_publish(rabbitmq, Login("guest", "guest"), "/"), "the default guest account is still there"
    users = {user["name"] for user in rabbitmq_api(rabbitmq, admin(ws), "/users")}
    assert "guest" not in users and {"kwadmin_a", "orders_a", "audit"} <= users
    assert grants(rabbitmq, admin(ws), "orders_a") == (["management"], [("orders", ".*", ".*", ".*")])


def test_provisioning_again_changes_nothing(provisioned: tuple[Any, Any]) -> None:
    ws, first = provisioned
    assert first.returncode == 0
    again = run_playbook(ws, "playbooks/provision.yml")
    assert again.returncode == 0, again.explain()
    assert again.recap()["changed"] == 0, again.explain()


@pytest.fixture
def clone(workspace: Callable[..., Any], provisioned: tuple[Any, Any], rabbitmq: Any) -> Any:
    """A copy of the provisioned store; the node is brought back to it (a rotation of another test moved it on)."""
    return kind_clone(workspace, "mq-rotate", "rabbitmq", provisioned, rabbitmq)


@pytest.mark.parametrize("name", ["orders_mq", ADMIN])
def test_alternating_rotation_moves_consumers_to_the_standby_user(clone: Any, rabbitmq: Any, name: str) -> None:
    ws = clone
    old = store_login(ws, name)
    run = rotate(ws, only=name)
    assert run.returncode == 0, run.explain()
    new = store_login(ws, name)
    assert old is not None and new is not None
    assert new.user != old.user and {old.user[-2:], new.user[-2:]} == {"_a", "_b"}
    assert consumers_hold(ws, name, new)
    assert amqp_publish(rabbitmq, new, VHOST[name]) and amqp_publish(rabbitmq, new, VHOST[name], tls=True)
    # the rule of alternating users: the outgoing user keeps working until the next rotation gives it a new password
    assert amqp_publish(rabbitmq, old, VHOST[name]), "the outgoing user was refused right after the rotation"
    assert not retirement(ws, name), "an alternating user was scheduled for retirement"
    # identical tags and permissions on both users of the pair
    assert grants(rabbitmq, admin(ws), old.user) == grants(rabbitmq, admin(ws), new.user)
    # the next rotation replaces the old user's password
    again = rotate(ws, only=name)
    assert again.returncode == 0, again.explain()
    third = store_login(ws, name)
    assert third is not None and third.user == old.user and amqp_publish(rabbitmq, third, VHOST[name])
    assert not amqp_publish(rabbitmq, old, VHOST[name]), "the next rotation left the old password working"
    assert amqp_publish(rabbitmq, new, VHOST[name])


def test_single_user_rotation_changes_the_password_in_place(clone: Any, rabbitmq: Any) -> None:
    ws = clone
    old = store_login(ws, "audit_mq")
    run = rotate(ws, only="audit_mq")
    assert run.returncode == 0, run.explain()
    new = store_login(ws, "audit_mq")
    assert old is not None and new is not None and new.user == old.user == "audit"
    assert amqp_publish(rabbitmq, new, "orders") and not amqp_publish(rabbitmq, old, "orders")
    assert consumers_hold(ws, "audit_mq", new)


@pytest.mark.parametrize("name", ["orders_mq", "audit_mq"])
def test_a_failed_test_login_is_rolled_back_before_distribution(clone: Any, rabbitmq: Any, name: str) -> None:
    ws = clone
    old = store_login(ws, name)
    # the node listens on 127.0.0.1 only: every AMQP test login is refused, after `set`
    run = rotate(ws, "-e", "keywarden_target_rabbitmq_test_host=127.0.0.2", only=name)
    assert run.returncode != 0
    assert run.says(f"rolled back (consumers keep their current value): {name}"), run.explain()
    assert not has_pending(ws, name)
    assert old is not None and consumers_hold(ws, name, old)
    # single_user got its current password back; alternating never touched the login in use
    assert amqp_publish(rabbitmq, old, "orders")


def test_a_missing_virtual_host_fails_that_secret_alone(clone: Any, rabbitmq: Any) -> None:
    ws = clone
    data = yaml.safe_load(ws.catalog.read_text())
    data["secrets"]["orders_mq"]["target"]["vhost"] = "nosuchvhost"
    ws.catalog.write_text("---\n" + yaml.safe_dump(data, sort_keys=False))
    before = store_login(ws, "audit_mq")
    run = rotate(ws, only="audit_mq,orders_mq")
    assert run.returncode != 0
    assert run.says("virtual host nosuchvhost does not exist on this node"), run.explain()
    assert run.says("rotated: audit_mq"), run.explain()
    after = store_login(ws, "audit_mq")
    assert before is not None and after is not None and after.fingerprint != before.fingerprint and amqp_publish(rabbitmq, after, "orders")
    assert not has_pending(ws, "orders_mq")


def test_check_mode_changes_nothing(clone: Any, rabbitmq: Any) -> None:
    ws = clone
    before = ws.snapshot()
    users = rabbitmq_api(rabbitmq, admin(ws), "/users")
    run = rotate(ws, "--check", only="orders_mq")
    assert run.returncode == 0, run.explain()
    assert run.says("would rotate orders_mq (rabbitmq, alternating_users)"), run.explain()
    assert ws.snapshot() == before
    assert rabbitmq_api(rabbitmq, admin(ws), "/users") == users


def test_test_logins_use_tls_where_the_node_offers_it(clone: Any) -> None:
    # the plain AMQP port is open too: with `require` the run succeeds only if the module found the amqp/ssl listener
    run = run_playbook(clone, "playbooks/provision.yml", "-v", "-e", "keywarden_target_rabbitmq_tls=require", "-e", "keywarden_target_phase=test")
    assert run.returncode == 0, run.explain()
    assert run.says("3 of 3 secrets tested"), run.explain()
