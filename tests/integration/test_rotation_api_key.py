"""API keys (kind api_key) against real providers: a throwaway nginx (scripts/demo/nginx) and an issuer's HTTP API on
loopback (api_key_helpers.Issuer), after init + provision + deploy (playbooks/site.yml).

Provisioning makes the provider accept what the consumers hold, and a second run changes nothing (nginx is not even
reloaded). A rotation keeps both keys working during its overlap window and revokes the old one when the window is
over (0 hours: in the same run); single_user swaps the key at once; --check changes nothing; a secret whose test
fails is rolled back alone (its pending key revoked, the consumers' key still accepted) while the others rotate; a
request in flight during the reloads is served to its end. A manual key that is due fails the run naming it and its
steps while the others rotate, and playbooks/record.yml records a key a person got, audited. Keys are compared by
fingerprint; the API's answers are statuses.

The catalog holds a secret per scenario (its own key file in the one nginx, its own keys at the issuer); each scenario
runs in its own copy of the provisioned store, four at a time, started together when the module starts.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from api_key_helpers import (
    ADMIN,
    Issuer,
    Nginx,
    admin_entry,
    api_workspace,
    clone_api,
    digest,
    env_key,
    http_key,
    manual_key,
    nginx_key,
    random_key,
    site,
    started,
    status,
    store_key,
)
from rotation_helpers import catalog, rotate, run_playbook, stored

from ansible_collections.keywarden.secrets.plugins.module_utils.api_key import children
from ansible_collections.keywarden.secrets.plugins.plugin_utils import rotation

NGINX_NAMES = ["o24", "o0", "su", "chk", "bad", "good", "fl", "mg", "rec_nginx", "drift"]
HTTP_NAMES = ["h24", "h0", "hf"]
MANUAL_STEPS = "Partner console -> Developers -> API keys -> Roll key; then send the new key to the ops vault"


def _catalog(issuer: Issuer) -> dict[str, Any]:
    secrets: dict[str, Any] = {name: nginx_key(name) for name in NGINX_NAMES}
    secrets["o24"] = nginx_key("o24", overlap_hours=24)
    secrets["su"] = nginx_key("su", strategy="single_user")
    secrets["bad"] = nginx_key("bad", header="X-Other-Key")  # the nginx map reads X-API-Key: every test request is refused
    secrets.update({name: http_key(name, issuer) for name in HTTP_NAMES})
    secrets["h24"] = http_key("h24", issuer, overlap_hours=24)
    secrets[ADMIN] = admin_entry()
    secrets["m"] = manual_key("m", MANUAL_STEPS)
    secrets["m2"] = manual_key("m2", "ask the partner")
    return catalog(secrets)


def _backdate(ws: Any, name: str, stage: str, field: str) -> None:
    old = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=400)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with ws.store().update() as data:
        data["secrets"][name][stage][field] = old


def _workers(nginx: Nginx) -> set[int]:
    return children(nginx.master())


def _fp(key: tuple[str, str] | None) -> str | None:
    return digest(key[1]) if key else None


def _answers(url: str, keys: dict[str, tuple[str, str] | None]) -> dict[str, int | None]:
    return {stage: status(url, key[1]) if key else None for stage, key in keys.items()}


# ---- scenarios (each in its own copy of the provisioned store) ------------------------------------------------
def _rotate_nginx(name: str, *extra: str, backdate_retirement: bool = False) -> Callable[..., dict[str, Any]]:
    def act(ws: Any, nginx: Nginx, issuer: Issuer) -> dict[str, Any]:
        old = store_key(ws, name)
        map_before = (nginx.keys_dir / f"{name}.map").read_bytes()
        run = rotate(ws, *extra, only=name)
        new = store_key(ws, name, "current")
        seen: dict[str, Any] = {
            "run": run,
            "old": _fp(old),
            "new": _fp(new),
            "pending": _fp(store_key(ws, name, "pending")),
            "env": digest(env_key(ws, name)),
            "answers": _answers(nginx.url(name), {"old": old, "new": new}),
            "ids": nginx.key_ids(name),
            "old_id": old[0] if old else None,
            "new_id": new[0] if new else None,
            "previous": stored(ws, name).get("previous"),
            "map_unchanged": (nginx.keys_dir / f"{name}.map").read_bytes() == map_before,
        }
        if backdate_retirement:
            _backdate(ws, name, "previous", "retire_after")
            seen["retire_run"] = rotate(ws)
            seen["after_retirement"] = _answers(nginx.url(name), {"old": old, "new": new})
            seen["ids_after_retirement"] = nginx.key_ids(name)
            seen["previous_after_retirement"] = stored(ws, name).get("previous")
        return seen

    return act


def _one_fails(ws: Any, nginx: Nginx, issuer: Issuer) -> dict[str, Any]:
    """`bad` (its test request uses a header nginx does not read) and `good`, rotated by one run."""
    bad, good = store_key(ws, "bad"), store_key(ws, "good")
    run = rotate(ws, only="bad,good")
    return {
        "run": run,
        "bad_entry": stored(ws, "bad"),
        "bad_ids": nginx.key_ids("bad"),
        "bad_id": bad[0] if bad else None,
        "bad_env": status(nginx.url("bad"), env_key(ws, "bad")),
        "good_version": stored(ws, "good")["current"]["version"],
        "good_env": status(nginx.url("good"), env_key(ws, "good")),
        "good_old": status(nginx.url("good"), good[1]) if good else None,
    }


def _in_flight(ws: Any, nginx: Nginx, issuer: Issuer) -> dict[str, Any]:
    """Slow downloads (1 MiB at 256 KiB/s) with the consumer's key, two at a time, re-reading it from the .env before
    each, while the key rotates (overlap 0: a reload to add the new key, one to revoke the old). The worker sets
    are sampled to find the reloads."""
    stop = threading.Event()
    downloads: list[tuple[float, float, int, int]] = []
    generations: list[tuple[float, frozenset[int]]] = []
    lock = threading.Lock()

    def download() -> None:
        while not stop.is_set():
            request = urllib.request.Request(nginx.url("fl", slow=True), headers={"X-API-Key": env_key(ws, "fl")})  # noqa: S310 - loopback
            started = time.monotonic()
            try:
                with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                    code, size = int(response.status), len(response.read())
            except Exception as exc:  # noqa: BLE001 - a dropped request is what this counts; name only its type
                code, size = -1, len(type(exc).__name__)
            with lock:
                downloads.append((started, time.monotonic(), code, size))

    def sample() -> None:
        while not stop.is_set():
            generations.append((time.monotonic(), frozenset(_workers(nginx))))
            time.sleep(0.02)

    threads = [threading.Thread(target=download, daemon=True) for _ in range(2)] + [threading.Thread(target=sample, daemon=True)]
    threads[0].start()
    time.sleep(2)
    for thread in threads[1:]:
        thread.start()
    run = rotate(ws, only="fl")
    stop.set()
    for thread in threads:
        thread.join(timeout=90)
    # a reload: workers appear that were not there a sample before
    reloads = [when for (when, now), (_then, before) in zip(generations[1:], generations, strict=False) if now - before]
    spanning = [d for d in downloads if any(d[0] < when < d[1] for when in reloads)]
    return {"run": run, "downloads": downloads, "reloads": reloads, "spanning": spanning}


def _provision_drift(ws: Any, nginx: Nginx, issuer: Issuer) -> dict[str, Any]:
    """Someone emptied the key file of `drift` and reloaded nginx: provision.yml --check says so and changes nothing,
    provision.yml puts the key back."""
    # this copy's catalog holds `drift` alone: its provisioning must not touch the keys the other scenarios rotate
    data = yaml.safe_load(ws.catalog.read_text())
    data["secrets"] = {"drift": data["secrets"]["drift"]}
    ws.catalog.write_text("---\n" + yaml.safe_dump(data, sort_keys=False))
    path = nginx.keys_dir / "drift.map"
    path.write_text(path.read_text().splitlines()[0] + "\n")
    subprocess.run(["/usr/sbin/nginx", "-c", nginx.conf, "-s", "reload"], capture_output=True, check=True, timeout=60)
    time.sleep(1)  # the reload takes effect (the module waits for it; a person's reload here does not)
    before = path.read_bytes()
    check = run_playbook(ws, "playbooks/provision.yml", "--check")
    checked = {"unchanged": path.read_bytes() == before, "answer": status(nginx.url("drift"), env_key(ws, "drift"))}
    fixed = run_playbook(ws, "playbooks/provision.yml")
    return {"check": check, "checked": checked, "fixed": fixed, "answer": status(nginx.url("drift"), env_key(ws, "drift"))}


def _rotate_http(name: str, *, fail: tuple[str, int] | None = None, backdate_retirement: bool = False) -> Callable[..., dict[str, Any]]:
    def act(ws: Any, nginx: Nginx, issuer: Issuer) -> dict[str, Any]:
        old = store_key(ws, name)
        if fail:
            issuer.fail[(fail[0], name)] = (fail[1], 1)
        run = rotate(ws, only=name)
        new = store_key(ws, name)
        seen: dict[str, Any] = {
            "run": run,
            "old_id": old[0] if old else None,
            "new_id": new[0] if new else None,
            "entry": stored(ws, name),
            "active": issuer.active(name),
            "env": issuer.whoami(env_key(ws, name))[0],
            "events": [event for event in issuer.events if event[1] in {old[0] if old else "", new[0] if new else ""}],
        }
        if backdate_retirement:
            _backdate(ws, name, "previous", "retire_after")
            seen["retire_run"] = rotate(ws)
            seen["active_after_retirement"] = issuer.active(name)
        return seen

    return act


def _manual_due(ws: Any, nginx: Nginx, issuer: Issuer) -> dict[str, Any]:
    """The manual key `m` and the nginx key `mg`, both overdue: a plain scheduled run."""
    before = store_key(ws, "m")
    for name in ("m", "mg"):
        _backdate(ws, name, "current", "created")
    check = rotate(ws, "--check")
    run = rotate(ws)
    return {"check": check, "run": run, "m_before": _fp(before), "m_after": _fp(store_key(ws, "m")), "m_entry": stored(ws, "m"), "mg": stored(ws, "mg")}


def _record(ws: Any, nginx: Nginx, issuer: Issuer) -> dict[str, Any]:
    value = random_key()
    before = store_key(ws, "m2")
    path = ws.root / "record.yml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(yaml.safe_dump({"keywarden_record_value": value}))
    record = ["playbooks/record.yml", "-e", "keywarden_record_secret=m2", "-e", f"@{path}"]
    first = run_playbook(ws, *record)
    after = store_key(ws, "m2")
    again = run_playbook(ws, *record)
    refused = run_playbook(ws, "playbooks/record.yml", "-e", "keywarden_record_secret=rec_nginx", "-e", f"@{path}")
    with open(path, "w") as handle:
        handle.write(yaml.safe_dump({"keywarden_record_value": f"{value[:10]} {value[10:]}"}))
    bad_value = run_playbook(ws, *record)
    audit = [json.loads(line) for line in ws.audit_log.read_text().splitlines()]
    return {
        "value": digest(value),
        "first": first,
        "again": again,
        "refused": refused,
        "bad_value": bad_value,
        "before": _fp(before),
        "after": _fp(after),
        "entry": stored(ws, "m2"),
        "env": digest(env_key(ws, "m2")),
        "final": _fp(store_key(ws, "m2")),
        "records": [line for line in audit if line.get("event") == "record" and line.get("secret") == "m2"],
        "leaked": ws.leaks(first.output + again.output + bad_value.output) or value[:10] in bad_value.output,
    }


SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    "overlap_window": _rotate_nginx("o24", backdate_retirement=True),
    "overlap_now": _rotate_nginx("o0"),
    "single_user": _rotate_nginx("su"),
    "check": _rotate_nginx("chk", "--check"),
    "one_fails": _one_fails,
    "provision_drift": _provision_drift,
    "in_flight": _in_flight,
    "http_overlap_now": _rotate_http("h0"),
    "http_overlap_window": _rotate_http("h24", backdate_retirement=True),
    "http_issuer_fails": _rotate_http("hf", fail=("create", 500)),
    "manual_due": _manual_due,
    "record": _record,
}


@pytest.fixture(scope="module")
def providers() -> Iterator[tuple[Nginx, Issuer]]:
    with started(NGINX_NAMES) as both:
        yield both


@pytest.fixture(scope="module")
def template(make_workspace: Callable[..., Any], providers: tuple[Nginx, Issuer]) -> dict[str, Any]:
    """init + provision + deploy, then site.yml once more (it must change nothing, nginx not even reloaded)."""
    nginx, issuer = providers
    ws = api_workspace(make_workspace, "api-key-template", _catalog(issuer), nginx)
    first = site(ws, issuer)
    workers = _workers(nginx)
    created = len(issuer.events)
    second = run_playbook(ws, "playbooks/site.yml")
    return {"ws": ws, "first": first, "second": second, "reloaded": _workers(nginx) != workers, "issuer_calls": issuer.events[created:]}


@pytest.fixture(scope="module")
def scenarios(make_workspace: Callable[..., Any], providers: tuple[Nginx, Issuer], template: dict[str, Any]) -> Iterator[dict[str, Future[dict[str, Any]]]]:
    nginx, issuer = providers

    def start(key: str) -> dict[str, Any]:
        ws = clone_api(make_workspace, template["ws"], f"api-key-{key}", nginx)
        return {**SCENARIOS[key](ws, nginx, issuer), "ws": ws}

    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="api-key") as pool:
        yield {key: pool.submit(start, key) for key in SCENARIOS}


def _result(scenarios: dict[str, Future[dict[str, Any]]], key: str) -> dict[str, Any]:
    return scenarios[key].result(timeout=900)


# ---- provisioning ----------------------------------------------------------------------------------------------
def test_provisioning_makes_each_provider_accept_what_the_consumers_hold(template: dict[str, Any], providers: tuple[Nginx, Issuer]) -> None:
    nginx, issuer = providers
    ws = template["ws"]
    for name in NGINX_NAMES:
        key = store_key(ws, name)
        assert key is not None and digest(env_key(ws, name)) == digest(key[1])
        assert nginx.key_ids(name) == [key[0]]
        assert status(nginx.url(name), env_key(ws, name)) == 200
    assert status(nginx.url("o0"), random_key()) == 401 and status(nginx.url("o0"), None) == 401
    mode = (nginx.keys_dir / "o0.map").stat().st_mode & 0o777
    assert mode == 0o600
    for name in HTTP_NAMES:
        key = store_key(ws, name)
        assert key is not None and issuer.active(name) == {key[0]}
        assert issuer.whoami(env_key(ws, name))[0] == 200
    # the admin token and the manual keys have no target: nothing was sent anywhere for them
    assert not issuer.active(ADMIN) and not issuer.active("m")


def test_a_second_provisioning_changes_nothing(template: dict[str, Any]) -> None:
    second = template["second"]
    assert second.returncode == 0, second.explain()
    assert second.recap()["changed"] == 0, second.explain()
    assert not template["reloaded"], "nginx was reloaded although no key file changed"
    # the issuer was asked again (creates are idempotent) and answered that it has each key: nothing created
    assert {code for op, _id, code in template["issuer_calls"]} <= {200}, template["issuer_calls"]


# ---- nginx -----------------------------------------------------------------------------------------------------
def test_overlap_keeps_both_keys_until_the_window_is_over(scenarios: dict[str, Future[dict[str, Any]]]) -> None:
    out = _result(scenarios, "overlap_window")
    assert out["run"].returncode == 0, out["run"].explain()
    assert out["new"] != out["old"] and out["env"] == out["new"] and out["pending"] is None
    assert out["answers"] == {"old": 200, "new": 200}, "during the overlap window both keys must work"
    assert sorted(out["ids"]) == sorted([out["old_id"], out["new_id"]])
    due = rotation.epoch(out["previous"]["retire_after"]) - time.time()
    assert 23 * 3600 < due <= 24 * 3600 and not out["previous"].get("retired")
    # a later run, once the window is over, revokes the old key and proves nginx refuses it
    retire = out["retire_run"]
    assert retire.returncode == 0, retire.explain()
    assert retire.says("retiring the previous value of o24 (its overlap window is over)")
    assert out["after_retirement"] == {"old": 401, "new": 200}
    assert out["ids_after_retirement"] == [out["new_id"]]
    assert out["previous_after_retirement"].get("retired")


@pytest.mark.parametrize("key", ["overlap_now", "single_user"])
def test_the_old_key_is_refused_after_the_run(scenarios: dict[str, Future[dict[str, Any]]], key: str) -> None:
    out = _result(scenarios, key)
    assert out["run"].returncode == 0, out["run"].explain()
    assert out["answers"] == {"old": 401, "new": 200}
    assert out["ids"] == [out["new_id"]] and out["env"] == out["new"] != out["old"]


def test_check_mode_changes_nothing(scenarios: dict[str, Future[dict[str, Any]]]) -> None:
    out = _result(scenarios, "check")
    run = out["run"]
    assert run.returncode == 0, run.explain()
    assert run.says("would rotate chk (api_key, overlap): requested, v1 -> v2")
    assert out["new"] == out["old"] and out["pending"] is None
    # (nginx's workers are not compared: the other scenarios reload the same nginx meanwhile)
    assert out["map_unchanged"], "--check touched the key file"
    assert out["answers"]["old"] == 200


def test_provisioning_repairs_a_key_file_and_check_mode_only_says_so(scenarios: dict[str, Future[dict[str, Any]]]) -> None:
    out = _result(scenarios, "provision_drift")
    check, fixed = out["check"], out["fixed"]
    assert check.returncode == 0 and check.recap()["changed"] >= 1, check.explain()
    assert out["checked"] == {"unchanged": True, "answer": 401}, "--check touched the key file"
    assert fixed.returncode == 0 and fixed.recap()["changed"] >= 1, fixed.explain()
    assert out["answer"] == 200


def test_a_failed_test_rolls_back_that_key_alone(scenarios: dict[str, Future[dict[str, Any]]]) -> None:
    out = _result(scenarios, "one_fails")
    run = out["run"]
    assert run.returncode != 0
    assert run.says("rotation failed for bad (localhost: nginx answered 401 to the key at"), run.explain()
    assert run.says("rolled back (consumers keep their current value): bad"), run.explain()
    assert run.says("rotated: good"), run.explain()
    # bad: the store kept v1 and no pending value, nginx lists the current key only, the consumer still gets in
    assert out["bad_entry"]["current"]["version"] == 1 and not out["bad_entry"].get("pending")
    assert out["bad_ids"] == [out["bad_id"]]
    assert out["bad_env"] == 200
    # good rotated in the same run
    assert out["good_version"] == 2 and out["good_env"] == 200 and out["good_old"] == 401


def test_requests_in_flight_survive_the_reloads(scenarios: dict[str, Future[dict[str, Any]]]) -> None:
    out = _result(scenarios, "in_flight")
    assert out["run"].returncode == 0, out["run"].explain()
    assert len(out["reloads"]) >= 2, "the rotation did not reload nginx twice (add the new key, revoke the old one)"
    bad = [(code, size) for _start, _end, code, size in out["downloads"] if code != 200 or size != 1 << 20]
    assert not bad, f"downloads cut short or refused: {bad}"
    assert out["spanning"], "no download was in flight during a reload: the test proved nothing"


# ---- an issuer's HTTP API --------------------------------------------------------------------------------------
def test_issuer_rotation_creates_tests_and_revokes(scenarios: dict[str, Future[dict[str, Any]]]) -> None:
    out = _result(scenarios, "http_overlap_now")
    assert out["run"].returncode == 0, out["run"].explain()
    assert out["active"] == {out["new_id"]} and out["env"] == 200
    assert ("create", out["new_id"], 201) in out["events"] and ("revoke", out["old_id"], 204) in out["events"]


def test_issuer_overlap_keeps_the_old_key_until_a_later_run(scenarios: dict[str, Future[dict[str, Any]]]) -> None:
    out = _result(scenarios, "http_overlap_window")
    assert out["run"].returncode == 0, out["run"].explain()
    assert out["active"] == {out["old_id"], out["new_id"]}
    assert out["retire_run"].returncode == 0, out["retire_run"].explain()
    assert out["active_after_retirement"] == {out["new_id"]}


def test_issuer_failure_rolls_back_and_leaves_no_key_behind(scenarios: dict[str, Future[dict[str, Any]]]) -> None:
    out = _result(scenarios, "http_issuer_fails")
    run = out["run"]
    assert run.returncode != 0
    assert run.says("rotation failed for hf (localhost: creating the key (POST): the issuer answered 500"), run.explain()
    assert run.says("rolled back (consumers keep their current value): hf"), run.explain()
    assert out["entry"]["current"]["version"] == 1 and not out["entry"].get("pending")
    assert out["active"] == {out["old_id"]} and out["env"] == 200


# ---- keys only a person can get ---------------------------------------------------------------------------------
def test_a_due_manual_key_fails_the_run_naming_it_and_its_steps(scenarios: dict[str, Future[dict[str, Any]]]) -> None:
    out = _result(scenarios, "manual_due")
    check, run = out["check"], out["run"]
    assert check.returncode == 0, check.explain()
    assert check.says("CANNOT ROTATE m (api_key, due,"), check.explain()
    assert run.returncode != 0
    assert run.says(f"due but cannot be rotated: m: its issuer has no API keywarden can call (provider manual): {MANUAL_STEPS}"), run.explain()
    assert run.says("playbooks/record.yml -e keywarden_record_secret=<name>"), run.explain()
    assert run.says("rotated: mg"), run.explain()
    assert out["mg"]["current"]["version"] == 2 and not out["mg"].get("pending")
    assert out["m_after"] == out["m_before"] and out["m_entry"]["current"]["version"] == 1


def test_record_a_key_issued_by_hand(scenarios: dict[str, Future[dict[str, Any]]]) -> None:
    out = _result(scenarios, "record")
    first = out["first"]
    assert first.returncode == 0, first.explain()
    assert first.says("m2: recorded v2 (v1 kept as previous"), first.explain()
    assert out["after"] == out["value"] == out["env"] == out["final"]
    assert out["entry"]["previous"]["version"] == 1 and digest(out["entry"]["previous"]["fields"]["value"]) == out["before"]
    assert "retire_after" not in out["entry"]["previous"]  # its issuer revokes it, not keywarden
    assert {(line["field"], line["version"]) for line in out["records"]} >= {("value", 2), ("key_id", 2)}
    again = out["again"]
    assert again.returncode == 0 and again.says("m2: that value is already current"), again.explain()
    refused = out["refused"]
    assert refused.returncode != 0
    assert refused.says("rec_nginx is rotated by keywarden (api_key, provider nginx): run playbooks/rotate.yml -e keywarden_rotate_only=rec_nginx")
    bad = out["bad_value"]
    assert bad.returncode != 0 and bad.says("keywarden_record_value for m2: must be 8 to 4096 characters"), bad.explain()
    assert not out["leaked"], "a recorded value appeared in the playbook output"


def test_the_rotation_runs_leave_no_value_in_their_output(scenarios: dict[str, Future[dict[str, Any]]], template: dict[str, Any]) -> None:
    for key, future in scenarios.items():
        seen = future.result(timeout=900)
        for name, value in seen.items():
            if hasattr(value, "output"):
                assert not seen["ws"].leaks(value.output), f"a stored value appeared in the output of {key}/{name}"
    ws = template["ws"]
    assert not ws.leaks(template["first"].output + template["second"].output)


def test_nginx_files_hold_nothing_but_keywarden_lines(providers: tuple[Nginx, Issuer], scenarios: dict[str, Future[dict[str, Any]]]) -> None:
    nginx, _issuer = providers
    for future in scenarios.values():
        future.result(timeout=900)
    assert not list(nginx.keys_dir.glob(".keywarden.*")), "a key file write left its temp file"
    assert {path.stat().st_mode & 0o777 for path in Path(nginx.keys_dir).glob("*.map")} == {0o600}
