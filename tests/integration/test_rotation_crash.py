"""A rotation killed at every step boundary and inside its store writes, then run again, leaves nothing half done.

Each case rotates its own secret (its own logins on the shared throwaway PostgreSQL) in a fresh copy of a
provisioned store, crashes it, checks what the consumer holds right after the crash, and runs a plain
`playbooks/rotate.yml` (what a scheduled run does). Every case must end with: store `current` == what the
consumer's .env holds == a login the server accepts; the value the target accepted (and the consumer may already
hold) before the crash is the one that ends as `current`, never a fresh one; `previous` still logging in
(alternating users); no `pending`; no run lock.

A run writes the store three times: plan (lock + pending values), decide (distributing), finish (promote + unlock).
Crashes (tests/faults/sitecustomize.py, no hook in the product): the whole run killed right after each of those
writes; the store writer killed mid-write, before and after the rename of the first write (plan) and mid-write of
the last (finish: the consumers already hold the new value, the store still says `current`); ansible-playbook
killed with its workers from outside once the consumers' .env files are rendered; and a single_user rotation
killed once it is distributing (its old password no longer works until the rerun distributes the new one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from rotation_helpers import Run, State, assert_crashed_as_meant, catalog, clone, env_creds, login, observe, pg_secret, provisioned, rotate, store_creds, stored

from ansible_collections.keywarden.secrets.plugins.plugin_utils import rotation
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import load_catalog, secrets_for_environment
from ansible_collections.keywarden.secrets.plugins.plugin_utils.drivers import driver_for
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import StoreError


@dataclass(frozen=True)
class Case:
    crash: str | None = None  # tests/faults point:n
    kill_on: str | None = None  # SIGKILL the process group when a line of output holds this
    before: str | None = None  # pending step to leave in the store first (an earlier run that died)
    strategy: str = "alternating_users"
    # version `current` ends at: 1 when the crash came before the pending value was persisted (nothing to resume)
    version: int = 2


CASES: dict[str, Case] = {
    "run-after-plan": Case(crash="run-after-write:1"),
    "run-after-decide": Case(crash="run-after-write:2"),
    "run-after-finish": Case(crash="run-after-write:3"),
    # the first store write of a run is plan's: a torn or unrenamed write leaves nothing pending
    "store-mid-write@plan": Case(crash="store-mid-write:1", version=1),
    "store-before-rename@plan": Case(crash="store-before-rename:1", version=1),
    "store-after-rename@plan": Case(crash="store-after-rename:1"),
    # the write that matters most: consumers already hold the pending value, the store still says `current`
    "store-mid-write@finish": Case(crash="store-mid-write:3", before="distributing"),
    "kill@env-rendered": Case(kill_on="TASK [keywarden_env : Report the delivered files]"),
    # single_user: from `set` until the rerun distributes, the consumer's value no longer works
    "single_user:run-after-decide": Case(crash="run-after-write:2", strategy="single_user"),
}
SECRETS = {case_id: f"crash{index:02d}" for index, case_id in enumerate(CASES)}


def _prefix(name: str) -> str:
    return name.upper()


@dataclass
class Outcome:
    """What a case saw: the two runs, right after the crash, and the end state (names, fingerprints, no values)."""

    crash: Run = field(repr=False)
    store_opens_after_crash: bool
    consumer_login_after_crash: str | None
    # fingerprints right after the crash: the pending value (if any) and what the consumer's .env holds
    pending_after_crash: str | None
    consumer_after_crash: str
    current_after_crash: str | None
    rerun: Run = field(repr=False)
    end: State
    leftovers: list[str]  # temp files of a store write that never finished


def _run_case(make_workspace: Callable[..., Any], template: Any, postgres: Any, case_id: str) -> Outcome:
    case, name = CASES[case_id], SECRETS[case_id]
    consumers = (("app", _prefix(name)),)
    ws = clone(make_workspace, template, f"crash-{name}", postgres)
    if case.before:
        # the state a run killed after decide leaves (pending, distributing), made with the engine's own transitions:
        # the run below resumes it; its last store write (finish) is the one that crashes
        catalog_env = secrets_for_environment(load_catalog(str(ws.catalog)), ws.environment)
        driver = driver_for(catalog_env[name]["kind"])
        assert driver is not None
        with ws.store().update() as data:
            rotation.begin(data, [name], lambda secret, current: driver.new_fields(catalog_env[secret], current))
            rotation.mark(data, [name], rotation.DISTRIBUTING)
    crash = rotate(ws, only=name, crash=case.crash, kill_on=case.kill_on)
    try:
        opens = bool(stored(ws, name))
        pending = store_creds(ws, name, "pending")
        current = store_creds(ws, name)
    except StoreError:  # a torn or unreadable store is what this records
        opens, pending, current = False, None, None
    held = env_creds(ws, prefix=_prefix(name))
    consumer = login(postgres.port, held)
    rerun = rotate(ws)
    return Outcome(
        crash=crash,
        store_opens_after_crash=opens,
        consumer_login_after_crash=consumer,
        pending_after_crash=pending.fingerprint if pending else None,
        consumer_after_crash=held.fingerprint,
        current_after_crash=current.fingerprint if current else None,
        rerun=rerun,
        end=observe(ws, postgres.port, name, consumers),
        leftovers=sorted(p.name for p in ws.store_dir.glob(".secrets.vault.tmp.*")),
    )


@pytest.fixture(scope="module")
def crash_template(make_workspace: Callable[..., Any], postgres: Any) -> Any:
    """One store, provisioned and delivered, holding a secret per case (one consumer service, a variable prefix each)."""
    secrets = {
        SECRETS[case_id]: pg_secret(f"cr{SECRETS[case_id][-2:]}", case.strategy, [("app", "app", _prefix(SECRETS[case_id]))]) for case_id, case in CASES.items()
    }
    return provisioned(make_workspace, "crash-template", catalog(secrets), postgres)


@pytest.fixture(scope="module")
def outcomes(make_workspace: Callable[..., Any], postgres: Any, crash_template: Any) -> Iterator[dict[str, Future[Outcome]]]:
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="crash") as pool:
        yield {case_id: pool.submit(_run_case, make_workspace, crash_template, postgres, case_id) for case_id in CASES}


@pytest.mark.parametrize("case_id", list(CASES))
def test_crash_then_rerun_is_consistent(outcomes: dict[str, Future[Outcome]], case_id: str) -> None:
    case = CASES[case_id]
    out = outcomes[case_id].result(timeout=900)

    assert_crashed_as_meant(out.crash, case.crash, case.kill_on)
    assert out.store_opens_after_crash, "the crash left a store that does not open"
    if case.strategy == "alternating_users":
        # zero downtime holds through a crash: what the consumer holds still logs in
        assert out.consumer_login_after_crash is not None, "right after the crash the consumer's credentials were refused"
    else:
        # single_user, killed between `set` and `distribute`: the consumer's value is refused until the rerun
        assert out.consumer_login_after_crash is None

    assert out.rerun.returncode == 0 and out.rerun.recap().get("failed") == 0, out.rerun.explain()
    end = out.end
    assert end.pending_step is None, "a pending value was left after the rerun"
    assert not end.lock, "the run lock was left after the rerun"
    # a crashed writer's temp file (ciphertext, never the store) goes with the next store write
    assert not out.leftovers or case.version == 1, "a store write left its temp file behind"
    assert end.version == case.version
    assert end.consumers_hold(end.current), "the consumer's .env does not hold the store's current value"
    assert end.current_login == end.current.user, "the current value does not log in at the target"
    # nothing regenerated: a value the target accepted (pending at the crash) or the consumer held is the one that ends
    if out.pending_after_crash is not None:
        assert end.current.fingerprint == out.pending_after_crash, "the rerun replaced the pending value the crashed run had set"
    if out.consumer_after_crash != out.current_after_crash:
        assert end.current.fingerprint == out.consumer_after_crash, "the consumer's new value is not the one that ended as current"
    if case.version == 2:
        assert end.previous is not None, "promotion dropped the previous value"
        if case.strategy == "alternating_users":
            # nothing lost: the login the consumers used before the rotation still works until the next one
            assert end.previous.user != end.current.user
            assert end.previous_login == end.previous.user, "the previous value no longer logs in"
