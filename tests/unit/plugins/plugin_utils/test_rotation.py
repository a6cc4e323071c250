"""The rotation engine's state machine and lease lock (plugin_utils/rotation.py), on plain data and real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from ansible_collections.keywarden.secrets.plugins.plugin_utils import rotation
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import validate_catalog
from ansible_collections.keywarden.secrets.plugins.plugin_utils.drivers import driver_for
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
            # an API key only a person can get: its driver says why the engine cannot rotate it
            "key": {
                "kind": "api_key",
                "environments": ["dev"],
                "target": {"provider": {"type": "manual", "steps": "roll it in the partner's console"}},
                "consumers": [{"group": "app", "service": "app", "env": {"KEY": "value"}}],
            },
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


def _can_rotate(entry: dict, stored: dict) -> str | None:
    driver = driver_for(entry["kind"])
    return driver.rotatable(entry, stored) if driver else f"no driver for {entry['kind']}"


def _new_fields(name: str, current: dict) -> dict:
    entry = CATALOG[name]
    driver = driver_for(entry["kind"])
    assert driver is not None
    return driver.new_fields(entry, current)


def _plan(data: dict, only: list[str], now: float | None = None) -> tuple[list[dict], list[dict]]:
    return rotation.plan(CATALOG, data, only, _can_rotate, now=now)


def test_plan_selects_due_requested_and_resumed_only():
    data = _data()
    assert _plan(data, []) == ([], [])
    later = time.time() + 31 * 86400
    rotations, blocked = _plan(data, [], now=later)
    assert [p["name"] for p in rotations] == ["db"]  # solo: 90 days
    assert blocked == []  # key (api_key, 90 days) is not due yet
    assert [p["reason"] for p in _plan(data, ["solo"])[0]] == ["requested"]
    rotation.begin(data, ["db"], _new_fields)
    assert [(p["name"], p["reason"], p["step"]) for p in _plan(data, [])[0]] == [("db", "resume", "created")]


def test_due_secret_the_engine_cannot_rotate_is_blocked_not_skipped():
    rotations, blocked = _plan(_data(), [], now=time.time() + 91 * 86400)
    assert [p["name"] for p in rotations] == ["db", "solo"]
    assert [(b["name"], b["reason"]) for b in blocked] == [("key", "due")]
    assert "provider manual" in blocked[0]["why"] and "roll it in the partner's console" in blocked[0]["why"]
    rotations, blocked = _plan(_data(), ["key"])
    assert rotations == [] and [b["name"] for b in blocked] == ["key"]


def test_plan_refuses_unknown_names():
    with pytest.raises(StoreError) as caught:
        _plan(_data(), ["nope"])
    assert "nope, not in the catalog" in str(caught.value)


def test_alternating_users_flip_and_single_user_keeps_its_login():
    data = _data()
    assert rotation.begin(data, ["db", "solo"], _new_fields) == ["db", "solo"]
    assert rotation.begin(data, ["db"], _new_fields) == []  # a pending value is never replaced
    assert data["secrets"]["db"]["pending"]["fields"]["username"] == "app_b"
    assert data["secrets"]["solo"]["pending"]["fields"]["username"] == "solo"
    assert data["secrets"]["db"]["pending"]["fields"]["password"] != data["secrets"]["db"]["current"]["fields"]["password"]


def test_promote_needs_distribution_and_shifts_the_stages():
    data = _data()
    rotation.begin(data, ["db"], _new_fields)
    pending_password = data["secrets"]["db"]["pending"]["fields"]["password"]
    with pytest.raises(StoreError):
        rotation.promote(data, ["db"], lambda name: None)
    rotation.mark(data, ["db"], "distributing")
    with pytest.raises(StoreError):
        rotation.abandon(data, ["db"])  # past the point of no return
    done = rotation.promote(data, ["db"], lambda name: None)
    entry = data["secrets"]["db"]
    assert done["db"]["from_version"] == 1 and done["db"]["to_version"] == 2
    same = entry["current"]["fields"]["password"] == pending_password
    assert same
    assert entry["previous"]["version"] == 1 and entry["pending"] is None and "step" not in entry["current"]
    assert "retire_after" not in entry["previous"]


def test_retirement_is_scheduled_at_promotion_and_due_after_the_window():
    data = _data()
    rotation.begin(data, ["db"], _new_fields)
    rotation.mark(data, ["db"], "distributing")
    now = time.time()
    rotation.promote(data, ["db"], lambda name: 3600, now=now)
    assert rotation.due_retirements(data, CATALOG, now=now + 60) == []
    assert rotation.due_retirements(data, CATALOG, now=now + 3601) == ["db"]
    assert rotation.retired(data, ["db"]) == ["db"]
    assert rotation.due_retirements(data, CATALOG, now=now + 3601) == []


def test_abandon_drops_pending_before_distribution():
    data = _data()
    rotation.begin(data, ["solo"], _new_fields)
    assert rotation.abandon(data, ["solo"]) == ["solo"]
    assert data["secrets"]["solo"]["pending"] is None and data["secrets"]["solo"]["current"]["version"] == 1


# ---- decide: per-secret outcomes -------------------------------------------------------------------------
def _item(name: str, step: str = "created", group: str = "db") -> dict:
    return {"name": name, "step": step, "target_group": group, "strategy": "alternating_users"}


def test_decide_distributes_the_tested_and_rolls_back_each_failure_alone():
    groups = {"db": ["db1", "db2"], "db_solo": ["db1"]}
    reports = {
        "db1": {"good": {"ok": True, "holds": False}, "bad": {"ok": True, "holds": True}, "gone": {"ok": False, "reason": "refused", "holds": False}},
        "db2": {"good": {"ok": True, "holds": False}, "bad": {"ok": False, "reason": "no database", "holds": False}},
    }
    rotations = [_item("good"), _item("bad"), _item("gone", group="db_solo"), _item("late", step="distributing", group="db_solo")]
    out = rotation.decide(rotations, groups, reports)
    assert out["distribute"] == ["good"]
    # bad failed on db2 but db1 set it and holds it (single-user): db1 must roll back before it is forgotten
    assert out["rollback"] == {"bad": ["db1"]}
    assert out["abandon"] == ["gone"]
    # past the point of no return, and no report from its host: kept for the next run
    assert out["keep"] == ["late"]
    assert out["failed"]["bad"] == {"db2": "no database"}
    assert "no report from this host" in out["failed"]["late"]["db1"]


def test_decide_keeps_a_rotation_whose_host_never_answered():
    out = rotation.decide([_item("x")], {"db": ["db1", "db2"]}, {"db1": {"x": {"ok": False, "reason": "r", "holds": False}}})
    assert out["keep"] == ["x"] and out["abandon"] == [] and set(out["failed"]["x"]) == {"db1", "db2"}


def test_decide_distributes_a_value_that_no_target_holds():
    out = rotation.decide([_item("session_key", group=None)], {}, {})
    assert out["distribute"] == ["session_key"] and out["failed"] == {}


def test_decide_fails_a_rotation_whose_target_group_is_empty():
    out = rotation.decide([_item("x", group="nowhere")], {}, {})
    assert out["failed"]["x"] == {"group nowhere": "no host in the inventory"}
    assert out["distribute"] == []


# ---- the lease lock -------------------------------------------------------------------------------------
def _run_of(pid: int, **extra: str) -> dict:
    return {**rotation.run_identity(pid, environ={"JOB_ID": "4711"}), **extra}


def test_a_live_holder_is_named_and_keeps_others_out():
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        data = _data()
        assert rotation.take_lock(data, _run_of(live.pid), "dev", 600) is None
        with pytest.raises(StoreError) as caught:
            rotation.take_lock(data, _run_of(os.getpid()), "dev", 600)
        message = str(caught.value)
        assert f"pid {live.pid}" in message and "AWX job 4711" in message and "lease until" in message
    finally:
        live.kill()
        live.wait()


def test_a_dead_holder_on_this_host_is_taken_over_at_once():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    holder = _run_of(dead.pid)  # its start time, read while it lives
    dead.wait()
    data = _data()
    data[rotation.LOCK_KEY] = {**holder, "since": "t", "lease_until": rotation.stamp(time.time() + 3600)}
    me = _run_of(os.getpid())
    taken = rotation.take_lock(data, me, "dev", 600)
    assert taken is not None and taken["pid"] == dead.pid and "process on this host is gone" in taken["gone"]
    rotation.holds_lock(data, me, "dev")
    assert rotation.release_lock(data, me) and data[rotation.LOCK_KEY] is None


def test_a_holder_on_another_host_waits_for_its_lease():
    data = _data()
    other = {"run": "awx-job-pod:7:99", "host": "awx-job-pod", "pid": 7, "started": "99", "user": "awx", "awx_job_id": "12"}
    now = time.time()
    data[rotation.LOCK_KEY] = {**other, "since": "t", "lease_until": rotation.stamp(now + 60)}
    me = _run_of(os.getpid())
    with pytest.raises(StoreError, match="already running"):
        rotation.take_lock(data, me, "dev", 600, now=now)
    taken = rotation.take_lock(data, me, "dev", 600, now=now + 61)
    assert taken is not None and taken["gone"] == "its lease ran out"


def test_a_run_that_lost_its_lock_stops():
    data = _data()
    me = _run_of(os.getpid())
    with pytest.raises(StoreError, match="lost the rotation lock"):
        rotation.holds_lock(data, me, "dev")
