"""A rotation killed at every step boundary, then run again, leaves nothing half done.

Each case rotates its own secret (its own logins on the shared throwaway PostgreSQL) in a fresh copy of a
provisioned store, crashes it, checks what the consumer holds right after the crash, and runs a plain
`playbooks/rotate.yml` (what a scheduled run does). Every case must end with: store `current` == what the
consumer's .env holds == a login the server accepts; `previous` still logging in (alternating users); no
`pending`; no run lock. The cases run four at a time; each test waits for its own.

Crashes: the engine's fault points (KEYWARDEN_FAULT_INJECT): after the run lock, after the pending value is
persisted, after it is marked distributing, after promotion; a SIGKILL of the store writer mid-write, before
and after the rename of the run's first store write (`begin`), and mid-write of its last (`promote`, when the
consumers already hold the new value); a SIGKILL of ansible-playbook with its workers from outside once the
consumers' .env files are rendered (before promotion); and a single_user rotation killed after `set`.
A store fault kills the worker that writes; ansible-playbook then stops the whole run ("A worker was found in
a dead state"), so every case is a run that died mid-way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from rotation_helpers import ROTATE_FAULTS, STORE_FAULTS, Run, State, catalog, clone, env_creds, login, observe, pg_secret, provisioned, rotate, stored

from ansible_collections.keywarden.secrets.plugins.plugin_utils import rotation
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import load_catalog, secrets_for_environment
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import StoreError


@dataclass(frozen=True)
class Case:
    fault: str | None = None  # KEYWARDEN_FAULT_INJECT
    kill_on: str | None = None  # SIGKILL the process group when a line of output holds this
    before: str | None = None  # pending step to leave in the store first, so that the fault hits a later write
    strategy: str = "alternating_users"
    # version `current` ends at: 1 when the crash came before the pending value was persisted (nothing to resume)
    version: int = 2


CASES: dict[str, Case] = {
    **{fault: Case(fault=fault, version=1 if fault == "rotate-after-lock" else 2) for fault in ROTATE_FAULTS},
    # the first store write of a run is `begin`: a torn or unrenamed write leaves nothing pending
    **{f"{fault}@begin": Case(fault=fault, version=2 if fault == "store-after-rename" else 1) for fault in STORE_FAULTS},
    # the write that matters most: consumers already hold the pending value, the store still says `current`
    "store-mid-write@promote": Case(fault="store-mid-write", before="distributing"),
    "kill@env-rendered": Case(kill_on="TASK [keywarden_env : Report the delivered files]"),
    # single_user: from `set` until the rerun distributes, the consumer's value no longer works
    "single_user:rotate-after-mark-distributing": Case(fault="rotate-after-mark-distributing", strategy="single_user"),
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
    rerun: Run = field(repr=False)
    end: State
    leftovers: list[str]  # temp files of a store write that never finished


def _run_case(make_workspace: Callable[..., Any], template: Any, postgres: Any, case_id: str) -> Outcome:
    case, name = CASES[case_id], SECRETS[case_id]
    consumers = (("app", _prefix(name)),)
    ws = clone(make_workspace, template, f"crash-{name}", postgres)
    if case.before:
        # the state a run killed after `begin` (created) or after `mark` (distributing) leaves, made with the
        # engine's own transitions: the run below then resumes it and its first store write is `mark` or `promote`
        catalog_env = secrets_for_environment(load_catalog(str(ws.catalog)), ws.environment)
        with ws.store().update() as data:
            rotation.begin(data, catalog_env, [name])
            if case.before == "distributing":
                rotation.mark(data, [name], "distributing")
    crash = rotate(ws, only=name, fault=case.fault, kill_on=case.kill_on)
    try:
        opens = bool(stored(ws, name))
    except StoreError:  # a torn or unreadable store is what this records
        opens = False
    consumer = login(postgres.port, env_creds(ws, prefix=_prefix(name)))
    rerun = rotate(ws)
    return Outcome(
        crash=crash,
        store_opens_after_crash=opens,
        consumer_login_after_crash=consumer,
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

    # the crash happened where it was meant to: the run died before its recap
    crash = out.crash
    if case.kill_on:
        assert crash.killed, f"the run never printed {case.kill_on!r}\n{crash.explain()}"
    elif case.fault and case.fault.startswith("store-"):
        # the store writer is the worker: ansible-playbook stops the whole run when it dies
        assert crash.returncode != 0 and crash.says("A worker was found in a dead state"), crash.explain()
    else:
        assert crash.returncode == -9, f"{case.fault} did not kill the run\n{crash.explain()}"
    assert not crash.recap(), f"the run went on after the crash\n{crash.explain()}"
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
    assert end.version == case.version
    assert end.consumers_hold(end.current), "the consumer's .env does not hold the store's current value"
    assert end.current_login == end.current.user, "the current value does not log in at the target"
    if case.strategy == "alternating_users" and end.previous:
        # nothing lost: the login the consumers used before the rotation still works until the next one
        assert end.previous.user != end.current.user
        assert end.previous_login == end.previous.user, "the previous value no longer logs in"
