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

The `tls:` cases do the same to certificates (kind tls_cert, issued by a tls_ca of the same store): the consumer's
key and certificate always belong together, and the rerun ends on the certificate the crashed run issued.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from rotation_helpers import (
    Run,
    State,
    assert_crashed_as_meant,
    catalog,
    clone,
    env_creds,
    login,
    observe,
    pg_secret,
    provisioned,
    read_env,
    rotate,
    run_playbook,
    store_creds,
    stored,
)
from tls_helpers import ca_entry, cert_entry, fingerprint, key_matches, write_catalog

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


# ---- certificates (kind tls_cert): no target host; the consumer's files change with one rename of a link -----------
# Same crash points. Right after each crash the consumer holds a key and a certificate that belong together (the old
# pair or the new one, never a mix); the rerun ends with the consumer's files == the store's current certificate, and
# that is the very certificate the crashed run issued (a pending certificate is never reissued).
TLS_CASES: dict[str, Case] = {
    "tls:run-after-plan": Case(crash="run-after-write:1"),
    "tls:run-after-decide": Case(crash="run-after-write:2"),
    "tls:run-after-finish": Case(crash="run-after-write:3"),
    "tls:store-mid-write@plan": Case(crash="store-mid-write:1", version=1),
    "tls:store-after-rename@plan": Case(crash="store-after-rename:1"),
    "tls:kill@env-rendered": Case(kill_on="TASK [keywarden_env : Report the delivered files]"),
}
TLS_SECRETS = {case_id: f"tls{index:02d}" for index, case_id in enumerate(TLS_CASES)}


@dataclass
class TlsOutcome:
    crash: Run = field(repr=False)
    store_opens_after_crash: bool
    pair_after_crash: bool  # the consumer's key belongs to its certificate
    consumer_after_crash: str
    pending_after_crash: str | None
    current_after_crash: str | None
    rerun: Run = field(repr=False)
    pending_at_end: bool
    lock_at_end: bool
    version: int
    current: str
    consumer: str
    pair: bool
    versions_on_disk: int


def _tls_delivered(ws: Any, name: str) -> tuple[str, bool]:
    """(fingerprint of the certificate the consumer's .env points at, whether its key belongs to it)."""
    env = read_env(ws.env_dir / f"svc{name[-2:]}.env")
    cert, key = Path(env["TLS_CERT_FILE"]).read_text(), Path(env["TLS_KEY_FILE"]).read_text()
    return fingerprint(cert), key_matches(key, cert)


def _run_tls_case(make_workspace: Callable[..., Any], template: Any, case_id: str) -> TlsOutcome:
    case, name = TLS_CASES[case_id], TLS_SECRETS[case_id]
    ws = make_workspace(f"crash-{name}", groups=("web", "clients"))
    ws.catalog.write_text(template.catalog.read_text())
    ws.clone_store(template)
    delivered = run_playbook(ws, "playbooks/deploy.yml")
    assert delivered.returncode == 0, delivered.explain()
    crash = rotate(ws, only=name, crash=case.crash, kill_on=case.kill_on)
    try:
        entry = ws.store().read()["secrets"][name]
        opens = True
        pending = fingerprint(entry["pending"]["fields"]["certificate"]) if entry.get("pending") else None
        current: str | None = fingerprint(entry["current"]["fields"]["certificate"])
    except StoreError:
        opens, pending, current = False, None, None
    held, pair = _tls_delivered(ws, name)
    rerun = rotate(ws)
    data = ws.store().read()
    end = data["secrets"][name]
    consumer, end_pair = _tls_delivered(ws, name)
    return TlsOutcome(
        crash=crash,
        store_opens_after_crash=opens,
        pair_after_crash=pair,
        consumer_after_crash=held,
        pending_after_crash=pending,
        current_after_crash=current,
        rerun=rerun,
        pending_at_end=bool(end.get("pending")),
        lock_at_end=bool(data.get("rotation_lock")),
        version=end["current"]["version"],
        current=fingerprint(end["current"]["fields"]["certificate"]),
        consumer=consumer,
        pair=end_pair,
        versions_on_disk=len([p for p in ws.env_dir.iterdir() if p.name.startswith(f".svc{name[-2:]}.{name}@")]),
    )


@pytest.fixture(scope="module")
def tls_template(make_workspace: Callable[..., Any]) -> Any:
    """One store holding a CA and a certificate per case (each its own service), made by playbooks/init.yml."""
    ws = make_workspace("crash-tls-template", groups=("web", "clients"))
    secrets = {"int_ca": ca_entry()}
    for name in TLS_SECRETS.values():
        secrets[name] = cert_entry(f"svc{name[-2:]}", "web", f"{name}.test")
    write_catalog(ws, secrets)
    ws.set_password("local")
    result = ws.run("playbooks/init.yml", "-e", "keywarden_store_create=true")
    assert result.returncode == 0, result.explain()
    return ws


@pytest.fixture(scope="module")
def tls_outcomes(make_workspace: Callable[..., Any], tls_template: Any) -> Iterator[dict[str, Future[TlsOutcome]]]:
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="crash-tls") as pool:
        yield {case_id: pool.submit(_run_tls_case, make_workspace, tls_template, case_id) for case_id in TLS_CASES}


@pytest.mark.parametrize("case_id", list(TLS_CASES))
def test_certificate_crash_then_rerun_converges(tls_outcomes: dict[str, Future[TlsOutcome]], case_id: str) -> None:
    case = TLS_CASES[case_id]
    out = tls_outcomes[case_id].result(timeout=900)
    assert_crashed_as_meant(out.crash, case.crash, case.kill_on)
    assert out.store_opens_after_crash, "the crash left a store that does not open"
    # the consumer's files never mix an old key with a new certificate: one rename swaps them
    assert out.pair_after_crash, "right after the crash the consumer's key does not belong to its certificate"
    assert out.consumer_after_crash in {out.current_after_crash, out.pending_after_crash}

    assert out.rerun.returncode == 0 and out.rerun.recap().get("failed") == 0, out.rerun.explain()
    assert not out.pending_at_end and not out.lock_at_end
    assert out.version == case.version
    assert out.consumer == out.current and out.pair, "the consumer's files are not the store's current certificate"
    if out.pending_after_crash is not None:
        assert out.current == out.pending_after_crash, "the rerun reissued the certificate the crashed run had issued"
    if out.consumer_after_crash != out.current_after_crash:
        assert out.current == out.consumer_after_crash, "the consumer's new certificate is not the one that ended as current"
    assert out.versions_on_disk <= 2, "directories of earlier certificates were left behind"


# ---- Redis (dual_password) and RabbitMQ (alternating_users): the same crashes at each step boundary -------------------
# Each case rotates its own user of one shared server per kind, in a fresh copy of a provisioned store. Right after
# the crash the consumer's value still logs in (both strategies are zero-downtime); the rerun converges: store current
# == the consumer's .env == a login the server accepts, and the pending value the crashed run had persisted is the one
# that ends as current. Redis: the outgoing password is gone (retired in the cleanup play, one password left).
# RabbitMQ: the outgoing user still works (alternating users keep it until the next rotation).
KIND_CASES: dict[str, Case] = {
    "run-after-plan": Case(crash="run-after-write:1"),
    "run-after-decide": Case(crash="run-after-write:2"),
    "run-after-finish": Case(crash="run-after-write:3"),
    "kill@env-rendered": Case(kill_on="TASK [keywarden_env : Report the delivered files]"),
    # Redis: the cleanup play has removed the outgoing password; the store still says it is current
    "kill@finish": Case(kill_on="TASK [keywarden_rotate : finish | Promote"),
}
KIND_SECRETS = {case_id: f"kcrash{index:02d}" for index, case_id in enumerate(KIND_CASES)}
KINDS = ("redis", "rabbitmq")


@dataclass
class KindOutcome:
    crash: Run = field(repr=False)
    consumer_accepted_after_crash: bool
    pending_after_crash: str | None
    rerun: Run = field(repr=False)
    pending_left: bool
    lock_left: bool
    consumer_holds_current: bool
    current_accepted: bool
    current: str
    previous_accepted: bool | None
    passwords: int | None  # Redis: passwords left on the user


def _kind_catalog(kind: str) -> dict[str, Any]:
    from kind_helpers import rabbitmq_secret, redis_secret  # noqa: PLC0415

    if kind == "redis":
        secrets = {"crash_admin": redis_secret("kwcrash", acl="~* &* +@all", consumers=[("cache", "redis-admin", "ADMIN")])}
        secrets.update({name: redis_secret(f"c{name[-2:]}", admin="crash_admin", consumers=[("app", "app", name.upper())]) for name in KIND_SECRETS.values()})
    else:
        secrets = {"crash_admin": rabbitmq_secret("kwcrash", tags=["administrator"], vhost="/", consumers=[("broker", "rabbitmq-admin", "ADMIN")])}
        secrets.update(
            {name: rabbitmq_secret(f"c{name[-2:]}", admin="crash_admin", consumers=[("app", "app", name.upper())]) for name in KIND_SECRETS.values()}
        )
    return catalog(secrets)


@pytest.fixture(scope="module")
def kind_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from support import start_rabbitmq, start_redis, stop_rabbitmq, stop_redis  # noqa: PLC0415

    roots = {kind: tmp_path_factory.mktemp(f"crash-{kind}") for kind in KINDS}
    try:
        yield {"redis": start_redis(roots["redis"]), "rabbitmq": start_rabbitmq(roots["rabbitmq"])}
    finally:
        stop_redis(roots["redis"])
        stop_rabbitmq(roots["rabbitmq"])


@pytest.fixture(scope="module")
def kind_templates(make_workspace: Callable[..., Any], kind_servers: dict[str, Any]) -> dict[str, Any]:
    from kind_helpers import kind_workspace  # noqa: PLC0415
    from rotation_helpers import run_playbook  # noqa: PLC0415

    templates = {}
    for kind in KINDS:
        ws = kind_workspace(make_workspace, f"crash-{kind}-template", kind, _kind_catalog(kind), kind_servers[kind])
        ws.set_password("local")
        site = run_playbook(ws, "playbooks/site.yml", "-e", "keywarden_store_create=true")
        assert site.returncode == 0, site.explain()
        templates[kind] = ws
    return templates


def _accepts(kind: str, server: Any, login: Any) -> bool:
    from kind_helpers import amqp_publish, redis_accepts  # noqa: PLC0415

    return redis_accepts(server, login) if kind == "redis" else amqp_publish(server, login, "orders")


def _run_kind_case(make_workspace: Callable[..., Any], template: Any, server: Any, kind: str, case_id: str) -> KindOutcome:
    import yaml  # noqa: PLC0415
    from kind_helpers import env_login, kind_workspace, redis_user, store_login  # noqa: PLC0415

    case, name = KIND_CASES[case_id], KIND_SECRETS[case_id]
    ws = kind_workspace(make_workspace, f"crash-{kind}-{name}", kind, yaml.safe_load(template.catalog.read_text()), server)
    ws.clone_store(template, env_dir=True)
    crash = rotate(ws, only=name, crash=case.crash, kill_on=case.kill_on)
    pending = store_login(ws, name, "pending")
    consumer_ok = _accepts(kind, server, env_login(ws, "app", name.upper()))
    rerun = rotate(ws)
    entry = stored(ws, name)
    current, previous = store_login(ws, name), store_login(ws, name, "previous")
    assert current is not None
    passwords = None
    if kind == "redis":
        admin = store_login(ws, "crash_admin")
        user = redis_user(server, admin, current.user) if admin else None
        passwords = len(user["passwords"]) if user else None
    return KindOutcome(
        crash=crash,
        consumer_accepted_after_crash=consumer_ok,
        pending_after_crash=pending.fingerprint if pending else None,
        rerun=rerun,
        pending_left=bool(entry.get("pending")),
        lock_left=bool(ws.store().read().get("rotation_lock")),
        consumer_holds_current=env_login(ws, "app", name.upper()).fingerprint == current.fingerprint,
        current_accepted=_accepts(kind, server, current),
        current=current.fingerprint,
        previous_accepted=_accepts(kind, server, previous) if previous else None,
        passwords=passwords,
    )


@pytest.fixture(scope="module")
def kind_outcomes(
    make_workspace: Callable[..., Any], kind_servers: dict[str, Any], kind_templates: dict[str, Any]
) -> Iterator[dict[tuple[str, str], Future[KindOutcome]]]:
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="kind-crash") as pool:
        yield {
            (kind, case_id): pool.submit(_run_kind_case, make_workspace, kind_templates[kind], kind_servers[kind], kind, case_id)
            for kind in KINDS
            for case_id in KIND_CASES
        }


@pytest.mark.parametrize("case_id", list(KIND_CASES))
@pytest.mark.parametrize("kind", KINDS)
def test_a_kind_crashed_at_a_step_boundary_converges_on_rerun(kind_outcomes: dict[tuple[str, str], Future[KindOutcome]], kind: str, case_id: str) -> None:
    case = KIND_CASES[case_id]
    out = kind_outcomes[(kind, case_id)].result(timeout=900)
    if case.kill_on:
        assert out.crash.killed, f"the run never printed {case.kill_on!r}\n{out.crash.explain()}"
    else:
        assert out.crash.returncode == -9, f"{case.crash} did not kill the run\n{out.crash.explain()}"
    assert not out.crash.recap(), f"the run went on after the crash\n{out.crash.explain()}"
    assert out.consumer_accepted_after_crash, "right after the crash the consumer's credentials were refused"
    assert out.rerun.returncode == 0 and out.rerun.recap().get("failed") == 0, out.rerun.explain()
    assert not out.pending_left and not out.lock_left
    assert out.consumer_holds_current, "the consumer's .env does not hold the store's current value"
    assert out.current_accepted, "the current value is refused at the server"
    if out.pending_after_crash is not None:
        assert out.current == out.pending_after_crash, "the rerun replaced the pending value the crashed run had persisted"
    assert out.previous_accepted is not None, "promotion dropped the previous value"
    if kind == "redis":
        assert not out.previous_accepted and out.passwords == 1, "the outgoing Redis password was not retired"
    else:
        assert out.previous_accepted, "the outgoing RabbitMQ user no longer works"
