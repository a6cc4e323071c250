"""playbooks/rotate.yml against a real PostgreSQL (scripts/demo/postgres), after init + provision + deploy.

A rotation moves the store (pending -> current -> previous), the consumers' .env files and the logins the
server accepts together; alternating users keeps the outgoing login working until the next rotation,
single_user retires the old password at once. A run with nothing due changes nothing, --check writes
nothing, bad input fails with one line that says what is wrong and leaves the store alone, and the run lock
keeps a second run out while its holder lives. Values are compared as SHA-256 fingerprints only.

Each test rotates its own secret (its own logins on the server) in its own copy of a provisioned store, so
the playbook runs of all tests are started together, four at a time, when the module starts (`scenarios`);
each test then waits for its own and checks what it left.
"""

from __future__ import annotations

import datetime
import getpass
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from rotation_helpers import admin_query, catalog, clone, login, observe, pg_secret, provisioned, rotate, run_playbook, stored

from ansible_collections.keywarden.secrets.plugins.plugin_utils import rotation

CATALOG = catalog(
    {
        "app_db": pg_secret("app", consumers=[("app", "app", "DB"), ("worker", "worker", "DB")]),
        "ledger_db": pg_secret("ledger", "single_user", consumers=[("app", "app", "LEDGER_DB")]),
        "due_db": pg_secret("due", consumers=[("app", "app", "DUE_DB")]),
        "lock_db": pg_secret("lockr", consumers=[("app", "app", "LOCK_DB")]),
        "fail_db": pg_secret("failr", consumers=[("app", "app", "FAIL_DB")]),
        "fail_one_db": pg_secret("failone", "single_user", consumers=[("app", "app", "FAIL_ONE_DB")]),
        "healthy_db": pg_secret("healthy", consumers=[("app", "app", "HEALTHY_DB")]),
    }
)
GROUPS = ("db", "app", "worker")
APP_DB_CONSUMERS = (("app", "DB"), ("worker", "DB"))
FAILURES = {
    "unreachable-alternating": ("target-unreachable", "fail_db"),
    "wrong-admin-alternating": ("wrong-admin", "fail_db"),
    "wrong-admin-single_user": ("wrong-admin", "fail_one_db"),
}


def _consumers(name: str) -> tuple[tuple[str, str], ...]:
    return APP_DB_CONSUMERS if name == "app_db" else (("app", name.upper()),)


def _versions(ws: Any) -> dict[str, int]:
    return {name: entry["current"]["version"] for name, entry in ws.store().read()["secrets"].items()}


def _files(ws: Any) -> dict[str, Any]:
    """Modes and digests of the store (file, rollback copies, locks) and the .env files; the audit log aside."""
    return {path: state for path, state in ws.snapshot().items() if not Path(path).name.startswith("audit.log")}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_lock(ws: Any, pid: int) -> None:
    """A rotation lock (the lease record in the store) held by process ``pid`` of this host, its lease not run out."""
    with ws.store().update() as data:
        data["rotation_lock"] = {
            **rotation.run_identity(pid),
            "since": "2026-01-01T00:00:00Z",
            "lease_until": "2999-01-01T00:00:00Z",
        }


# ---- what each test runs (in the background): the runs and the states in between ---------------------------
def _alternating(ws: Any, port: int) -> dict[str, Any]:
    states = [observe(ws, port, "app_db", APP_DB_CONSUMERS)]
    runs = []
    for _ in range(2):
        runs.append(rotate(ws, only="app_db"))
        states.append(observe(ws, port, "app_db", APP_DB_CONSUMERS))
    return {"runs": runs, "states": states}


def _rotate_once(name: str, *extra: str, plain: bool = False) -> Callable[[Any, int], dict[str, Any]]:
    def act(ws: Any, port: int) -> dict[str, Any]:
        before, files = observe(ws, port, name, _consumers(name)), _files(ws)
        run = rotate(ws, *extra) if plain else rotate(ws, *extra, only=name)
        return {"run": run, "before": before, "files_before": files, "after": observe(ws, port, name, _consumers(name)), "files_after": _files(ws)}

    return act


def _due(ws: Any, port: int) -> dict[str, Any]:
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=400)
    with ws.store().update() as data:
        data["secrets"]["due_db"]["current"]["created"] = old.strftime("%Y-%m-%dT%H:%M:%SZ")
    return _rotate_once("due_db", plain=True)(ws, port)


def _no_consumers(ws: Any, port: int) -> dict[str, Any]:
    data = yaml.safe_load(ws.catalog.read_text())
    del data["secrets"]["app_db"]["consumers"]
    ws.catalog.write_text("---\n" + yaml.safe_dump(data, sort_keys=False))
    return _rotate_once("app_db")(ws, port)


def _failure(case: str) -> Callable[[Any, int], dict[str, Any]]:
    how, name = FAILURES[case]

    def act(ws: Any, port: int) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as nowhere:
            # unreachable: a socket directory with no server in it and a port nothing listens on
            bad = {
                "target-unreachable": [
                    *("-e", f"keywarden_target_postgresql_port={_free_port()}"),
                    *("-e", f"keywarden_target_postgresql_login_unix_socket={nowhere}"),
                ],
                "wrong-admin": ["-e", "keywarden_target_postgresql_login_user=nosuchadmin"],
            }[how]
            seen = _rotate_once(name, *bad)(ws, port)
        if name == "fail_one_db":
            # the rotation kept its pending value: a plain run resumes it
            seen["resumed"] = rotate(ws)
            seen["resumed_state"] = observe(ws, port, name, _consumers(name))
        return seen

    return act


def _one_broken(ws: Any, port: int) -> dict[str, Any]:
    """A healthy secret and a new one whose database does not exist, rotated in the same run."""
    data = yaml.safe_load(ws.catalog.read_text())
    data["secrets"]["billing_db"] = pg_secret("billing", consumers=[("app", "app", "BILLING_DB")])
    data["secrets"]["billing_db"]["target"]["database"] = "no_such_billing"
    ws.catalog.write_text("---\n" + yaml.safe_dump(data, sort_keys=False))
    init = run_playbook(ws, "playbooks/init.yml")
    assert init.returncode == 0, init.explain()
    before, files = observe(ws, port, "healthy_db", _consumers("healthy_db")), _files(ws)
    run = rotate(ws, only="healthy_db,billing_db")
    return {
        "run": run,
        "before": before,
        "files_before": files,
        "after": observe(ws, port, "healthy_db", _consumers("healthy_db")),
        "billing": stored(ws, "billing_db"),
    }


def _live_lock(ws: Any, port: int) -> dict[str, Any]:
    # a live process of this host holds the lock
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        _write_lock(ws, holder.pid)
        return {"pid": holder.pid, **_rotate_once("lock_db")(ws, port)}
    finally:
        holder.kill()
        holder.wait()


def _dead_lock(ws: Any, port: int) -> dict[str, Any]:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _write_lock(ws, gone.pid)
    return _rotate_once("lock_db")(ws, port)


SCENARIOS: dict[str, Callable[[Any, int], dict[str, Any]]] = {
    "alternating": _alternating,
    "single_user": _rotate_once("ledger_db"),
    "nothing_due": _rotate_once("app_db", plain=True),
    "check": _rotate_once("app_db", "--check"),
    "due": _due,
    "unknown": _rotate_once("app_db", "-e", "keywarden_rotate_only=app_db,nosuch_db", plain=True),
    "no_consumers": _no_consumers,
    **{case: _failure(case) for case in FAILURES},
    "one_broken": _one_broken,
    "live_lock": _live_lock,
    "dead_lock": _dead_lock,
}


@pytest.fixture(scope="module")
def scenarios(make_workspace: Callable[..., Any], postgres: Any) -> Iterator[dict[str, Future[tuple[Any, dict[str, Any]]]]]:
    """init + provision + deploy once, then every scenario in its own copy of the store and .env files."""
    template = provisioned(make_workspace, "rotation-template", CATALOG, postgres, GROUPS)

    def start(key: str) -> tuple[Any, dict[str, Any]]:
        ws = clone(make_workspace, template, f"rotation-{key}", postgres)
        return ws, SCENARIOS[key](ws, postgres.port)

    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="rotation") as pool:
        yield {key: pool.submit(start, key) for key in SCENARIOS}


def _done(scenarios: dict[str, Future[tuple[Any, dict[str, Any]]]], key: str) -> tuple[Any, dict[str, Any]]:
    return scenarios[key].result(timeout=900)


# ---- rotations ------------------------------------------------------------------------------------------
def test_alternating_users_rotation_flips_the_login_and_keeps_the_old_one(scenarios: Any, postgres: Any) -> None:
    ws, seen = _done(scenarios, "alternating")
    first, second = seen["runs"]
    v1, s1, s2 = seen["states"]
    assert (v1.current.user, v1.version, v1.current_login) == ("app_a", 1, "app_a")

    assert first.returncode == 0, first.explain()
    assert first.says("rotating app_db (postgresql, alternating_users): requested, v1 -> v2")
    assert first.says("app_db alternating_users v1->v2 1 host"), first.explain()
    assert not first.says("v1->v2 1 hosts"), first.explain()
    assert first.says("rotated (requested)")
    leaked = ws.leaks(first.output)
    assert not leaked
    assert (s1.version, s1.previous_version, s1.pending_step, s1.lock) == (2, 1, None, False)
    assert s1.previous is not None and s1.previous.fingerprint == v1.current.fingerprint
    assert s1.current.user == "app_b"
    assert s1.consumers_hold(s1.current), "the app's and the worker's .env do not hold the new value"
    assert s1.current_login == "app_b"
    # the outgoing login keeps working until the next rotation: consumers not yet restarted lose nothing
    assert s1.previous_login == "app_a"

    assert second.returncode == 0, second.explain()
    assert (s2.version, s2.previous_version, s2.pending_step, s2.lock) == (3, 2, None, False)
    assert s2.previous is not None and s2.previous.fingerprint == s1.current.fingerprint
    assert s2.current.user == "app_a"
    assert s2.current.fingerprint != v1.current.fingerprint
    assert s2.consumers_hold(s2.current), "the app's and the worker's .env do not hold the new value"
    assert (s2.current_login, s2.previous_login) == ("app_a", "app_b")
    v1_login = login(postgres.port, v1.current)
    assert v1_login is None, "the first value still logs in after its login was rotated again"
    assert admin_query(postgres, "SELECT pg_has_role('app_a', 'app', 'MEMBER'), pg_has_role('app_b', 'app', 'MEMBER')") == [(True, True)]


def test_single_user_rotation_retires_the_old_password(scenarios: Any, postgres: Any) -> None:
    ws, seen = _done(scenarios, "single_user")
    run, before, after = seen["run"], seen["before"], seen["after"]
    assert run.returncode == 0, run.explain()
    assert (before.current.user, after.current.user, after.version, after.pending_step) == ("ledger", "ledger", 2, None)
    assert after.consumers_hold(after.current)
    assert after.current_login == "ledger"
    old_login = login(postgres.port, before.current)
    assert old_login is None, "the old password still logs in"
    assert _versions(ws) == {"app_db": 1, "ledger_db": 2, "due_db": 1, "lock_db": 1, "fail_db": 1, "fail_one_db": 1, "healthy_db": 1}


def test_nothing_due_changes_nothing(scenarios: Any) -> None:
    _, seen = _done(scenarios, "nothing_due")
    run = seen["run"]
    assert run.returncode == 0, run.explain()
    assert run.recap()["changed"] == 0, run.explain()
    assert run.says("nothing to rotate")
    assert seen["files_after"] == seen["files_before"]


def test_check_mode_says_what_would_rotate_and_writes_nothing(scenarios: Any) -> None:
    _, seen = _done(scenarios, "check")
    run = seen["run"]
    assert run.returncode == 0, run.explain()
    assert run.says("would rotate app_db (postgresql, alternating_users): requested, v1 -> v2")
    assert seen["files_after"] == seen["files_before"]
    assert not seen["after"].lock


def test_a_secret_past_its_max_age_is_rotated_by_a_plain_run(scenarios: Any) -> None:
    ws, seen = _done(scenarios, "due")
    run, after = seen["run"], seen["after"]
    assert run.returncode == 0, run.explain()
    assert run.says("rotating due_db (postgresql, alternating_users): due, v1 -> v2")
    assert _versions(ws) == {"app_db": 1, "ledger_db": 1, "due_db": 2, "lock_db": 1, "fail_db": 1, "fail_one_db": 1, "healthy_db": 1}
    assert after.current.user == "due_b"
    assert after.consumers_hold(after.current)
    assert (after.current_login, after.previous_login) == ("due_b", "due_a")


# ---- bad input: one line that says what is wrong, a non-zero exit, the store as it was ------------------
def test_unknown_secret_name_is_refused(scenarios: Any) -> None:
    _, seen = _done(scenarios, "unknown")
    run = seen["run"]
    assert run.returncode != 0
    line = run.error_line("keywarden_rotate_only names nosuch_db, not in the catalog for environment 'local'")
    assert line, run.explain()
    assert "app_db" in line  # the names it knows
    assert seen["files_after"] == seen["files_before"]


def test_catalog_entry_without_consumers_is_refused(scenarios: Any) -> None:
    _, seen = _done(scenarios, "no_consumers")
    run = seen["run"]
    assert run.returncode != 0
    assert run.error_line("app_db", "consumers", "needs at least one consumer"), run.explain()
    assert seen["files_after"] == seen["files_before"]


@pytest.mark.parametrize("case", list(FAILURES))
def test_failure_at_the_target_rolls_back(scenarios: Any, postgres: Any, case: str) -> None:
    _, seen = _done(scenarios, case)
    name = FAILURES[case][1]
    run, before, after = seen["run"], seen["before"], seen["after"]
    assert run.returncode != 0
    if name == "fail_db":
        # nothing to undo at the target (only the standby login was touched): the pending value is dropped
        assert run.says(f"{name} alternating_users v1 0 hosts - FAILED, rolled back"), run.explain()
        assert run.error_line("rotation failed for", name, f"rolled back (consumers keep their current value): {name};"), run.explain()
        assert after.pending_step is None
    else:
        # the single-user rollback could not reach the server either: pending kept, the next run resumes it
        assert run.says(f"{name} single_user v1 0 hosts - FAILED, pending kept: rerun to resume"), run.explain()
        assert run.error_line("rotation failed for", name, f"the next run resumes: {name};"), run.explain()
        assert after.pending_step == "created"
    assert after.version == 1 and after.current.fingerprint == before.current.fingerprint
    delivered_before = {k: v for k, v in seen["files_before"].items() if k.endswith(".env")}
    delivered_after = {k: v for k, v in seen["files_after"].items() if k.endswith(".env")}
    assert delivered_after == delivered_before, "the consumers' .env files changed"
    assert not after.lock
    assert after.current_login == before.current.user
    if name == "fail_one_db":
        resumed, state = seen["resumed"], seen["resumed_state"]
        assert resumed.returncode == 0, resumed.explain()
        assert resumed.says(f"rotating {name} (postgresql, single_user): resume from step created, v1 -> v2")
        assert (state.version, state.pending_step, state.lock) == (2, None, False)
        assert state.consumers_hold(state.current)
        assert state.current_login == "failone"
        old_login = login(postgres.port, before.current)
        assert old_login is None


def test_a_failing_secret_is_rolled_back_alone(scenarios: Any, postgres: Any) -> None:
    """billing_db's database does not exist: it fails and is rolled back, healthy_db rotates in the same run."""
    _, seen = _done(scenarios, "one_broken")
    run, before, after, billing = seen["run"], seen["before"], seen["after"], seen["billing"]
    assert run.returncode != 0, "a run with a failed secret must fail"
    line = run.error_line("rotation failed for billing_db", "database no_such_billing does not exist")
    assert line, run.explain()
    assert "rolled back (consumers keep their current value): billing_db;" in line
    assert "rotated: healthy_db" in line
    assert run.says("billing_db alternating_users v1 0 hosts - FAILED, rolled back"), run.explain()
    # the healthy secret went all the way: store, consumers, server
    assert (after.version, after.pending_step, after.lock) == (2, None, False)
    assert after.consumers_hold(after.current)
    assert after.current_login == after.current.user != before.current.user
    assert after.previous_login == before.current.user
    # the broken one is back where it was, nothing pending
    assert billing["current"]["version"] == 1 and not billing.get("pending")


# ---- the run lock -----------------------------------------------------------------------------------------
def test_a_live_lock_holder_keeps_a_second_run_out(scenarios: Any) -> None:
    _, seen = _done(scenarios, "live_lock")
    run = seen["run"]
    assert run.returncode != 0
    line = run.error_line("a rotation of environment 'local' is already running", f"pid {seen['pid']}")
    assert line, run.explain()
    assert f"user {getpass.getuser()} on {socket.gethostname()}" in line
    assert seen["files_after"] == seen["files_before"]  # the holder's lock and the store as they were


def test_the_lock_of_a_dead_run_is_taken_over(scenarios: Any) -> None:
    _, seen = _done(scenarios, "dead_lock")
    run, after = seen["run"], seen["after"]
    assert run.returncode == 0, run.explain()
    assert (after.version, after.pending_step, after.lock) == (2, None, False)
    assert after.consumers_hold(after.current)
    assert after.current_login == "lockr_b"
