"""API-key rotations killed at every step boundary, then run again: nothing half done, no key the store does not know.

The companion of test_rotation_crash.py for kind api_key, with both providers that keywarden drives: nginx (the key
file and a graceful reload) and an issuer's HTTP API on loopback. Each case rotates its own key (overlap 0: the old
key is revoked in the same run) in a fresh copy of a provisioned store, crashes the run, checks that the key the
consumer holds still works right after the crash, and runs a plain `playbooks/rotate.yml`. Every case must end with:
the store's `current` key == what the consumer's .env holds == a key the provider accepts; the outgoing key refused;
the provider knowing no other key of that secret (nginx's key file lists only `current`, the issuer has only
`current` active); the key a provider accepted (pending at the crash) is the one that ends as `current`, never a fresh
one; no `pending`; no run lock.

Crashes: the whole run killed right after each of its three store writes (plan, decide, finish: run-after-write:N);
the store writer killed mid-write and after the rename of plan's write, and mid-write of finish's (consumers already
hold the new key); ansible-playbook killed from outside once the .env files are rendered, and once the clean-up
revoked the old key (before finish promotes); nginx: killed between writing the key file and the reload (the rerun
must see that nginx never loaded it); issuer: killed right after the issuer created the key, before the module that
asked could answer (the store had the key first: the rerun finds it, reuses it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from api_key_helpers import ADMIN, Issuer, Nginx, admin_entry, api_workspace, clone_api, digest, env_key, http_key, nginx_key, site, started, status, store_key
from rotation_helpers import Run, assert_crashed_as_meant, catalog, locked, rotate, stored

from ansible_collections.keywarden.secrets.plugins.plugin_utils import rotation
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import load_catalog, secrets_for_environment
from ansible_collections.keywarden.secrets.plugins.plugin_utils.drivers import driver_for
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import StoreError


@dataclass(frozen=True)
class Case:
    provider: str  # nginx or http
    crash: str | None = None  # tests/faults point:n
    kill_on: str | None = None  # SIGKILL the process group when a line of output holds this
    before: str | None = None  # pending step to leave in the store first (an earlier run that died)
    hook: str | None = None  # issuer-create: the issuer kills the run that asked it for a key
    version: int = 2  # 1: the crash came before the pending key was persisted


_KINDS: dict[str, Case] = {
    "run-after-plan": Case("", crash="run-after-write:1"),
    "run-after-decide": Case("", crash="run-after-write:2"),
    "run-after-finish": Case("", crash="run-after-write:3"),
    "store-mid-write@plan": Case("", crash="store-mid-write:1", version=1),
    "store-after-rename@plan": Case("", crash="store-after-rename:1"),
    "store-mid-write@finish": Case("", crash="store-mid-write:3", before="distributing"),
    "kill@env-rendered": Case("", kill_on="TASK [keywarden_env : Report the delivered files]"),
    "kill@revoked": Case("", kill_on="TASK [keywarden_rotate : finish | Promote"),
}
CASES: dict[str, Case] = {
    **{f"{provider}:{key}": dataclasses.replace(case, provider=provider) for provider in ("nginx", "http") for key, case in _KINDS.items()},
    "nginx:kill@key-file-written": Case("nginx", crash="keyfile-replaced:1"),
    "http:kill@issuer-created": Case("http", hook="issuer-create"),
}
SECRETS = {case_id: f"{case.provider[0]}crash{index:02d}" for index, (case_id, case) in enumerate(CASES.items())}
NGINX_NAMES = [name for case_id, name in SECRETS.items() if CASES[case_id].provider == "nginx"]


@dataclass
class Outcome:
    """What a case saw: the two runs, right after the crash, and the end (fingerprints and statuses, no values)."""

    crash: Run = field(repr=False)
    store_opens_after_crash: bool
    consumer_after_crash: str  # fingerprint of what the consumer holds
    consumer_accepted_after_crash: bool
    pending_after_crash: str | None
    current_after_crash: str | None
    hook_fired: bool
    pending_loaded_at_crash: bool | None  # nginx key-file case: whether nginx accepted the pending key right after
    rerun: Run = field(repr=False)
    version: int
    pending_step: str | None
    lock: bool
    current: str
    consumer: str
    current_accepted: bool
    outgoing_accepted: bool | None
    provider_keys: list[str]  # ids the provider knows for the secret
    current_id: str


def _killed_at_key_file(case: Case) -> bool:
    """nginx's key file written, the reload not yet done."""
    return (case.crash or "").startswith("keyfile-replaced:")


def _accepted(provider: str, nginx: Nginx, issuer: Issuer, name: str, key: str) -> bool:
    if provider == "nginx":
        return status(nginx.url(name), key) == 200
    return issuer.whoami(key)[0] == 200


def _run_case(make_workspace: Callable[..., Any], template: Any, nginx: Nginx, issuer: Issuer, case_id: str) -> Outcome:
    case, name = CASES[case_id], SECRETS[case_id]
    ws = clone_api(make_workspace, template, f"crash-{name}", nginx)
    if case.before:
        # the state a run killed after decide leaves (pending, distributing), made with the engine's own transitions
        catalog_env = secrets_for_environment(load_catalog(str(ws.catalog)), ws.environment)
        driver = driver_for("api_key")
        assert driver is not None
        with ws.store().update() as data:
            rotation.begin(data, [name], lambda secret, current: driver.new_fields(catalog_env[secret], current))
            rotation.mark(data, [name], rotation.DISTRIBUTING)
    old = store_key(ws, name)
    assert old is not None
    on_start = issuer.kill_run_on_create() if case.hook == "issuer-create" else None
    crash = rotate(ws, only=name, crash=case.crash, kill_on=case.kill_on, on_start=on_start)
    fired = False
    if case.hook == "issuer-create":
        fired, issuer.on_create = issuer.on_create is None, None  # the hook disarms itself when it fires
    try:
        opens = bool(stored(ws, name))
        pending, current = store_key(ws, name, "pending"), store_key(ws, name)
    except StoreError:
        opens, pending, current = False, None, None
    held = env_key(ws, name)
    loaded = _accepted("nginx", nginx, issuer, name, pending[1]) if _killed_at_key_file(case) and pending else None
    accepted_after_crash = _accepted(case.provider, nginx, issuer, name, held)
    rerun = rotate(ws)
    end = store_key(ws, name)
    assert end is not None
    entry = stored(ws, name)
    return Outcome(
        crash=crash,
        store_opens_after_crash=opens,
        consumer_after_crash=digest(held),
        consumer_accepted_after_crash=accepted_after_crash,
        pending_after_crash=digest(pending[1]) if pending else None,
        current_after_crash=digest(current[1]) if current else None,
        hook_fired=fired,
        pending_loaded_at_crash=loaded,
        rerun=rerun,
        version=entry["current"]["version"],
        pending_step=(entry.get("pending") or {}).get("step"),
        lock=locked(ws),
        current=digest(end[1]),
        consumer=digest(env_key(ws, name)),
        current_accepted=_accepted(case.provider, nginx, issuer, name, end[1]),
        outgoing_accepted=_accepted(case.provider, nginx, issuer, name, old[1]) if digest(old[1]) != digest(end[1]) else None,
        provider_keys=sorted(nginx.key_ids(name) if case.provider == "nginx" else issuer.active(name)),
        current_id=end[0],
    )


@pytest.fixture(scope="module")
def providers() -> Iterator[tuple[Nginx, Issuer]]:
    with started(NGINX_NAMES) as both:
        yield both


@pytest.fixture(scope="module")
def crash_template(make_workspace: Callable[..., Any], providers: tuple[Nginx, Issuer]) -> Any:
    nginx, issuer = providers
    secrets: dict[str, Any] = {ADMIN: admin_entry()}
    for case_id, name in SECRETS.items():
        secrets[name] = nginx_key(name) if CASES[case_id].provider == "nginx" else http_key(name, issuer)
    ws = api_workspace(make_workspace, "api-crash-template", catalog(secrets), nginx)
    site(ws, issuer)
    return ws


@pytest.fixture(scope="module")
def outcomes(make_workspace: Callable[..., Any], providers: tuple[Nginx, Issuer], crash_template: Any) -> Iterator[dict[str, Future[Outcome]]]:
    nginx, issuer = providers
    # the issuer's crash hook kills the run that created a key: that case runs alone, after the others
    alone = [case_id for case_id, case in CASES.items() if case.hook == "issuer-create"]
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="api-crash") as pool:
        futures = {case_id: pool.submit(_run_case, make_workspace, crash_template, nginx, issuer, case_id) for case_id in CASES if case_id not in alone}
        for future in futures.values():
            future.exception(timeout=1800)
        for case_id in alone:
            futures[case_id] = pool.submit(_run_case, make_workspace, crash_template, nginx, issuer, case_id)
        yield futures


@pytest.mark.parametrize("case_id", list(CASES))
def test_crash_then_rerun_converges(outcomes: dict[str, Future[Outcome]], case_id: str) -> None:
    case = CASES[case_id]
    out = outcomes[case_id].result(timeout=1800)

    crash = out.crash
    if case.hook:
        assert out.hook_fired, f"the {case.hook} crash never fired\n{crash.explain()}"
        assert not crash.recap(), f"the run went on after the crash\n{crash.explain()}"
    else:
        assert_crashed_as_meant(crash, case.crash, case.kill_on)
    assert out.store_opens_after_crash, "the crash left a store that does not open"
    # zero downtime holds through a crash: the consumer's key still works
    assert out.consumer_accepted_after_crash, "right after the crash the provider refused the consumer's key"
    if _killed_at_key_file(case):
        # killed between the write and the reload: nginx never loaded the pending key; the rerun must reload it
        assert out.pending_loaded_at_crash is False, "the kill came after the reload: this case proved nothing"

    rerun = out.rerun
    assert rerun.returncode == 0 and rerun.recap().get("failed") == 0, rerun.explain()
    assert out.pending_step is None, "a pending key was left after the rerun"
    assert not out.lock, "the run lock was left after the rerun"
    assert out.version == case.version
    assert out.consumer == out.current, "the consumer's .env does not hold the store's current key"
    assert out.current_accepted, "the provider refuses the current key"
    # no key the store does not know: the provider has the current key only (overlap 0: the old one is revoked)
    assert out.provider_keys == [out.current_id], f"the provider knows other keys of this secret: {len(out.provider_keys)} keys"
    if case.version == 2:
        assert out.outgoing_accepted is False, "the outgoing key still works"
    # nothing regenerated: a key the provider accepted (pending at the crash) or the consumer held ends as current
    if out.pending_after_crash is not None:
        assert out.current == out.pending_after_crash, "the rerun replaced the pending key the crashed run had made"
    if out.consumer_after_crash != out.current_after_crash:
        assert out.current == out.consumer_after_crash, "the consumer's new key is not the one that ended as current"
