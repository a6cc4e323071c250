"""Rotation state machine and run lock (module_utils/rotation.py), on plain data and real files/processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from ansible_collections.keywarden.secrets.plugins.plugin_utils import rotation
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import validate_catalog
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import StoreError, new_entry

CATALOG = validate_catalog(
    {
        "keywarden_catalog_version": 1,
        "secrets": {
            "db": {
                "kind": "postgresql",
                "environments": ["dev"],
                "target": {"group": "db", "role": "app", "database": "orders"},
                "policy": {"max_age_days": 30},
                "consumers": [{"group": "app", "service": "app", "env": {"DB_PASSWORD": "password"}}],
            },
            "solo": {
                "kind": "mariadb",
                "environments": ["dev"],
                "target": {"group": "db", "role": "solo", "database": "orders"},
                "policy": {"strategy": "single_user"},
                "consumers": [{"group": "app", "service": "app", "env": {"SOLO_PASSWORD": "password"}}],
            },
            "key": {"kind": "api_key", "environments": ["dev"], "consumers": [{"group": "app", "service": "app", "env": {"KEY": "value"}}]},
        },
    }
)["secrets"]


def _data() -> dict:
    return {
        "environment": "dev",
        "secrets": {
            "db": new_entry("postgresql", {"username": "app_a", "password": "x" * 32}),
            "solo": new_entry("mariadb", {"username": "solo", "password": "y" * 32}),
            "key": new_entry("api_key", {"value": "z" * 32}),
        },
    }


def test_plan_selects_due_requested_and_resumed_only():
    data = _data()
    assert rotation.plan(CATALOG, data, []) == []
    now = time.time() + 31 * 86400
    assert [p["name"] for p in rotation.plan(CATALOG, data, [], now=now)] == ["db"]  # solo: 90 days; api_key not rotatable
    assert [p["reason"] for p in rotation.plan(CATALOG, data, ["solo"])] == ["requested"]
    rotation.begin(data, CATALOG, ["db"])
    assert [(p["name"], p["reason"], p["step"]) for p in rotation.plan(CATALOG, data, [])] == [("db", "resume", "created")]


@pytest.mark.parametrize(("only", "fragment"), [(["nope"], "nope, not in the catalog"), (["key"], "of kind api_key")])
def test_plan_refuses_bad_names(only, fragment):
    with pytest.raises(StoreError) as caught:
        rotation.plan(CATALOG, _data(), only)
    assert fragment in str(caught.value)


def test_alternating_users_flip_and_single_user_keeps_its_login():
    data = _data()
    assert rotation.begin(data, CATALOG, ["db", "solo"]) == ["db", "solo"]
    assert rotation.begin(data, CATALOG, ["db"]) == []  # a pending value is never replaced
    assert data["secrets"]["db"]["pending"]["fields"]["username"] == "app_b"
    assert data["secrets"]["solo"]["pending"]["fields"]["username"] == "solo"
    assert data["secrets"]["db"]["pending"]["fields"]["password"] != data["secrets"]["db"]["current"]["fields"]["password"]


def test_promote_needs_distribution_and_shifts_the_stages():
    data = _data()
    rotation.begin(data, CATALOG, ["db"])
    pending_password = data["secrets"]["db"]["pending"]["fields"]["password"]
    with pytest.raises(StoreError):
        rotation.promote(data, ["db"])
    rotation.mark(data, ["db"], "distributing")
    with pytest.raises(StoreError):
        rotation.abandon(data, ["db"])  # past the point of no return
    done = rotation.promote(data, ["db"])
    entry = data["secrets"]["db"]
    assert done["db"]["from_version"] == 1 and done["db"]["to_version"] == 2
    assert entry["current"]["fields"]["password"] == pending_password
    assert entry["previous"]["version"] == 1 and entry["pending"] is None and "step" not in entry["current"]


def test_abandon_drops_pending_before_distribution():
    data = _data()
    rotation.begin(data, CATALOG, ["solo"])
    assert rotation.abandon(data, ["solo"]) == ["solo"]
    assert data["secrets"]["solo"]["pending"] is None and data["secrets"]["solo"]["current"]["version"] == 1


def _holder(tmp_path, pid: int) -> None:
    (tmp_path / "rotation.lock").write_text(json.dumps({"pid": pid, "user": "ops", "host": socket.gethostname(), "since": "t", "what": "playbook rotate"}))


def test_live_holder_is_named_and_a_dead_one_is_taken_over(tmp_path):
    # a live process whose command line says ansible, as a real run's would
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "ansible-playbook"])
    try:
        _holder(tmp_path, live.pid)
        with pytest.raises(StoreError) as caught:
            rotation.acquire_run_lock(str(tmp_path), "dev", os.getpid(), "playbook rotate")
        assert f"pid {live.pid}" in str(caught.value) and "user ops" in str(caught.value)
        assert rotation.clear_stale_run_lock(str(tmp_path)) is None  # alive: kept
    finally:
        live.kill()
        live.wait()
    info = rotation.acquire_run_lock(str(tmp_path), "dev", os.getpid(), "playbook rotate")
    assert info["taken_over"]["pid"] == live.pid
    assert json.loads((tmp_path / "rotation.lock").read_text())["pid"] == os.getpid()
    assert rotation.release_run_lock(str(tmp_path), os.getpid())
    assert not (tmp_path / "rotation.lock").exists()


def test_stale_lock_is_cleared_when_nothing_is_due(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _holder(tmp_path, dead.pid)
    assert rotation.clear_stale_run_lock(str(tmp_path))["pid"] == dead.pid
    assert not (tmp_path / "rotation.lock").exists()
