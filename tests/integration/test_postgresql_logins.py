"""The PostgreSQL driver (keywarden.secrets.target -> module keywarden.secrets.postgresql_logins) against a real
PostgreSQL (scripts/demo/postgres).

The module replaces five per-credential community.postgresql loops with one call per host, so it has to do
what they did: group role NOLOGIN, login with the store's password sent as a SCRAM verifier, membership,
idempotence by verifier compare, check mode, and real TCP test logins. One login's failure (a database that does
not exist) is reported alone. Values are compared through scram.matches and SHA-256 only; outputs are searched
for every stored value.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from rotation_helpers import admin_query, catalog, digest, pg_secret, setup_workspace, target_outcome, target_play

from ansible_collections.keywarden.secrets.plugins.module_utils import scram

CATALOG = catalog(
    {
        "alpha_db": pg_secret("alpha", consumers=[("app", "app", "ALPHA")]),
        "beta_db": pg_secret("beta", consumers=[("app", "app", "BETA")]),
        "gamma_db": pg_secret("gamma", "single_user", consumers=[("app", "app", "GAMMA")]),
    }
)
NAMES = ("alpha_db", "beta_db", "gamma_db")


def _role(postgres: Any, name: str) -> tuple[Any, bool] | None:
    rows = admin_query(postgres, "SELECT rolpassword, rolcanlogin FROM pg_authid WHERE rolname = %s", (name,))
    return (rows[0][0], bool(rows[0][1])) if rows else None


def _member(postgres: Any, group: str, user: str) -> bool:
    return bool(admin_query(postgres, "SELECT pg_has_role(%s, %s, 'MEMBER')", (user, group))[0][0])


def _fields(ws: Any, name: str, stage: str = "current") -> dict[str, str]:
    return ws.store().read()["secrets"][name][stage]["fields"]


def _play(ws: Any, file: str, phase: str = "provision", **variables: Any) -> Any:
    return target_play(ws, phase, file, **variables)


@pytest.fixture(scope="module")
def ws(make_workspace: Any, postgres: Any) -> Iterator[Any]:
    ws = setup_workspace(make_workspace, "pglogins", CATALOG, postgres)
    ws.set_password("local")
    result = ws.run("playbooks/init.yml", "-e", "keywarden_store_create=true")
    assert result.returncode == 0, result.explain()
    yield ws


def test_present_creates_logins_groups_and_memberships_then_is_idempotent(ws: Any, postgres: Any) -> None:
    first = ws.run(_play(ws, "present.yml"))
    assert first.returncode == 0, first.explain()
    assert target_outcome(ws, first) == {
        "changed": True,
        "changed_names": list(NAMES),
        "provisioned": list(NAMES),
        "failures": {},
        "msg": "3 of 3 secrets provisioned on localhost",
    }
    for name, group in (("alpha_db", "alpha"), ("beta_db", "beta")):
        fields = _fields(ws, name)
        verifier, can_login = _role(postgres, fields["username"])
        assert can_login and verifier.startswith("SCRAM-SHA-256$")
        assert scram.matches(verifier, fields["password"]), f"{name}: the server's verifier is not the store's password"
        assert _role(postgres, group) is not None and _role(postgres, group)[1] is False, f"group role {group} must be NOLOGIN"
        assert _member(postgres, group, fields["username"])
    single = _fields(ws, "gamma_db")
    assert scram.matches(_role(postgres, single["username"])[0], single["password"])
    assert single["username"] == "gamma", "a single_user credential logs in as its role itself"
    assert _role(postgres, "gamma_a") is None and _role(postgres, "gamma_b") is None

    again = ws.run(_play(ws, "present.yml"))
    assert again.returncode == 0, again.explain()
    assert target_outcome(ws, again)["changed"] is False, again.explain()
    assert not ws.leaks(first.output + again.output)


def test_drift_is_repaired_for_that_login_only(ws: Any, postgres: Any) -> None:
    assert ws.run(_play(ws, "present.yml")).returncode == 0
    beta = _fields(ws, "beta_db")
    admin_query(postgres, f'ALTER ROLE "{beta["username"]}" PASSWORD %s', (scram.verifier("not-the-stored-one"),))
    admin_query(postgres, 'ALTER ROLE "alpha" LOGIN')
    admin_query(postgres, 'REVOKE "alpha" FROM "{}"'.format(_fields(ws, "alpha_db")["username"]))
    repaired = ws.run(_play(ws, "repair.yml"))
    assert repaired.returncode == 0, repaired.explain()
    assert target_outcome(ws, repaired)["changed_names"] == ["alpha_db", "beta_db"]
    assert scram.matches(_role(postgres, beta["username"])[0], beta["password"])
    assert _role(postgres, "alpha")[1] is False
    assert _member(postgres, "alpha", _fields(ws, "alpha_db")["username"])


def test_check_mode_reports_and_changes_nothing(ws: Any, postgres: Any) -> None:
    assert ws.run(_play(ws, "present.yml")).returncode == 0
    gamma = _fields(ws, "gamma_db")
    admin_query(postgres, f'ALTER ROLE "{gamma["username"]}" PASSWORD %s', (scram.verifier("drifted"),))
    before = digest(str(_role(postgres, gamma["username"])))
    checked = ws.run(_play(ws, "check.yml"), "--check")
    assert checked.returncode == 0, checked.explain()
    assert target_outcome(ws, checked)["changed_names"] == ["gamma_db"]
    assert digest(str(_role(postgres, gamma["username"]))) == before, "check mode changed the server"
    assert ws.run(_play(ws, "present.yml")).returncode == 0


def test_tested_logs_in_over_tcp_and_names_what_is_refused(ws: Any, postgres: Any) -> None:
    assert ws.run(_play(ws, "present.yml")).returncode == 0
    good = ws.run(_play(ws, "tested.yml", "test"))
    assert good.returncode == 0, good.explain()
    assert target_outcome(ws, good) == {
        "changed": False,
        "changed_names": [],
        "tested": list(NAMES),
        "failures": {},
        "msg": "3 of 3 secrets tested on localhost",
    }

    alpha = _fields(ws, "alpha_db")
    admin_query(postgres, f'ALTER ROLE "{alpha["username"]}" PASSWORD %s', (scram.verifier("drifted"),))
    bad = ws.run(_play(ws, "tested.yml", "test"))
    outcome = target_outcome(ws, bad)
    assert list(outcome["failures"]) == ["alpha_db"] and outcome["tested"] == ["beta_db", "gamma_db"]
    assert outcome["msg"].startswith("1 of 3 secrets not tested on localhost: alpha_db: ") and "password authentication failed" in outcome["msg"]
    assert not ws.leaks(bad.output)
    assert ws.run(_play(ws, "present.yml")).returncode == 0


def test_test_logins_use_tls_when_the_server_offers_it(ws: Any, postgres: Any) -> None:
    """The throwaway server offers TLS (scripts/demo/postgres) and logs each connection: every test login says SSL."""
    assert ws.run(_play(ws, "present.yml")).returncode == 0
    log = postgres.root / "pg" / "server.log"
    seen = len(log.read_text(errors="replace").splitlines())
    tested = ws.run(_play(ws, "tested.yml", "test"))
    assert tested.returncode == 0, tested.explain()
    authorized = [line for line in log.read_text(errors="replace").splitlines()[seen:] if "connection authorized:" in line and "database=orders" in line]
    users = sorted(_fields(ws, name)["username"] for name in NAMES)
    assert sorted(line.split("user=", 1)[1].split()[0] for line in authorized) == users
    assert all("SSL enabled" in line for line in authorized), "a test login went without TLS although the server offers it"


def test_a_wrong_admin_names_every_secret_and_what_to_fix(ws: Any) -> None:
    admin = ws.run(_play(ws, "admin.yml", keywarden_target_postgresql_login_user="no_such_admin"))
    failures = target_outcome(ws, admin)["failures"]
    assert sorted(failures) == list(NAMES)
    assert all(why.startswith("cannot connect to PostgreSQL at ") and "as no_such_admin" in why for why in failures.values())
    assert all("check keywarden_target_postgresql_login_*" in why for why in failures.values())


def test_a_missing_database_fails_that_login_only(ws: Any, postgres: Any) -> None:
    """A login whose database does not exist is refused at provisioning time, naming the database; the others are set."""
    data = yaml.safe_load(ws.catalog.read_text())
    data["secrets"]["delta_db"] = pg_secret("delta", consumers=[("app", "app", "DELTA")])
    data["secrets"]["delta_db"]["target"]["database"] = "no_such_database"
    ws.catalog.write_text("---\n" + yaml.safe_dump(data, sort_keys=False))
    try:
        assert ws.run("playbooks/init.yml").returncode == 0
        run = ws.run(_play(ws, "present.yml"))
        outcome = target_outcome(ws, run)
        assert list(outcome["failures"]) == ["delta_db"]
        assert "database no_such_database does not exist on this server" in outcome["failures"]["delta_db"]
        assert outcome["provisioned"] == list(NAMES)
        assert _role(postgres, "delta_a") is None, "a login for a missing database was created"
    finally:
        del data["secrets"]["delta_db"]
        ws.catalog.write_text("---\n" + yaml.safe_dump(data, sort_keys=False))


def test_every_read_is_audited_and_nothing_leaks_at_vvvv(ws: Any) -> None:
    before = ws.audit_log.read_text().count("\n") if ws.audit_log.exists() else 0
    run = ws.run(_play(ws, "present.yml"), "-vvvv", "--diff")
    assert run.returncode == 0, run.explain()
    assert not ws.leaks(run.output)
    records = [json.loads(line) for line in ws.audit_log.read_text().splitlines()[before:]]
    reads = [r for r in records if r["event"] == "read"]
    assert sorted((r["secret"], r["field"]) for r in reads) == sorted((n, f) for n in NAMES for f in ("username", "password"))
    assert {r["detail"]["purpose"] for r in reads} == {"provision on localhost"}
    assert all(r["value_hmac"] for r in reads)
