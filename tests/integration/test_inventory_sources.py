"""An inventory that is missing, does not parse, or holds no host stops the run: never a green run that did nothing.

ansible.cfg sets `unparsed_is_failed` and `any_unparsed_is_failed`; playbooks/catalog.yml (imported first by every
playbook) stops an inventory that parses but has no host. Each case runs the real deploy playbook and checks that
nothing was delivered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from support import Workspace


@pytest.fixture
def ws(workspace: Callable[..., Workspace], initialized: Workspace) -> Workspace:
    ready = workspace("inventory")
    ready.clone_store(initialized)
    return ready


def assert_stopped(ws: Workspace, result: Any, *fragments: str) -> None:
    assert result.returncode != 0, result.explain()
    assert result.error_line(*fragments) is not None, result.explain()
    assert not ws.env_dir.exists(), "a .env file was delivered"


def test_a_missing_inventory_path_fails(ws: Workspace) -> None:
    missing = ws.root / "inventories" / "no-such-env"
    ws.inventory = missing
    result = ws.run("playbooks/deploy.yml")
    assert_stopped(ws, result, "[ERROR]", f"Completely failed to parse inventory source {missing}")


def test_one_missing_source_among_several_fails(ws: Workspace) -> None:
    missing = ws.root / "typo-hosts.yml"
    result = ws.run("playbooks/deploy.yml", "-i", str(missing))
    assert_stopped(ws, result, "[ERROR]", f"Completely failed to parse inventory source {missing}")


def test_an_inventory_that_does_not_parse_fails(ws: Workspace) -> None:
    (ws.inventory / "hosts.yml").write_text("---\nall: [this, is, not, an, inventory]\n")
    result = ws.run("playbooks/deploy.yml")
    assert_stopped(ws, result, "[ERROR]")


def test_an_inventory_without_hosts_fails_naming_it(ws: Workspace) -> None:
    # parses fine (groups, group_vars), but lists no host: every play would skip with "no hosts matched"
    (ws.inventory / "hosts.yml").write_text("---\nall:\n  children:\n    app: {}\n    worker: {}\n")
    result = ws.run("playbooks/deploy.yml")
    assert_stopped(ws, result, f"inventory {ws.inventory} has no hosts", "list its hosts in hosts.yml")


def test_the_guard_does_not_stop_an_inventory_with_hosts(ws: Workspace) -> None:
    result = ws.run("playbooks/deploy.yml")
    assert result.returncode == 0, result.explain()
    assert sorted(p.name for p in ws.env_dir.iterdir()) == ["app.env", "worker.env"]
