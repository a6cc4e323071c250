"""Expiry report (plugin_utils/report.py): statuses per kind, certificate rules, rotation history from a real audit log,
audit chain states, the Prometheus text (parsed by prometheus_client), the Grafana dashboard, the plugin's documentation.

Stores and audit logs are real files; certificates are generated at test time. No value is ever printed.
"""

from __future__ import annotations

import datetime
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.parsing.vault import VaultSecret
from prometheus_client.parser import text_string_to_metric_families
from report_helpers import EXTRA_CATALOG, certificate, tls_entry

from ansible_collections.keywarden.secrets.plugins.module_utils.specs import ARGUMENT_SPECS
from ansible_collections.keywarden.secrets.plugins.modules import report as report_doc
from ansible_collections.keywarden.secrets.plugins.plugin_utils import audit, report
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import CHARSETS, load_catalog, secrets_for_environment, validate_catalog
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import Store, generate_fields, new_entry

REPO = Path(__file__).resolve().parents[4]
KEY = bytes.fromhex("22" * 32)
NOW = time.time()


def _catalog() -> dict[str, Any]:
    raw = yaml.safe_load((REPO / "config" / "secrets" / "catalog.yml").read_text())
    raw["secrets"].update(EXTRA_CATALOG)
    return secrets_for_environment(validate_catalog(raw), "local")


def _with_tls(catalog_env: dict[str, Any], max_age_days: int = 365) -> dict[str, Any]:
    """The catalog as it will be once tls_cert is accepted (the check refuses it today)."""
    return {
        **catalog_env,
        "web_tls": {"kind": "tls_cert", "environments": ["local"], "target": {}, "consumers": [], "policy": {"max_age_days": max_age_days}},
    }


def _data(catalog_env: dict[str, Any], age_days: float = 0.0) -> dict[str, Any]:
    secrets = {}
    for name, entry in catalog_env.items():
        if entry["kind"] == "tls_cert":
            continue
        stored = new_entry(entry["kind"], generate_fields(entry, CHARSETS))
        stored["current"]["created"] = report.stamp(NOW - age_days * 86400)
        secrets[name] = stored
    return {"keywarden_store_format": 1, "environment": "local", "revision": 1, "secrets": secrets}


def _build(catalog_env: dict[str, Any], data: dict[str, Any], records: list[dict[str, Any]] | None = None, alert_days: float = 14) -> dict[str, Any]:
    info = {"state": "verified", "message": "test", "path": "-", "lines": 0, "macs_checked": True, "first_bad_line": None}
    return report.build("local", catalog_env, data, info, records or [], NOW, alert_days)


def _by_name(built: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["secret"]: item for item in built["secrets"]}


def _dt(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


# ---- statuses -------------------------------------------------------------------------------------------
def test_every_kind_is_overdue_past_its_max_age_and_ok_before() -> None:
    catalog_env = _catalog()
    assert {e["kind"] for e in catalog_env.values()} == {"postgresql", "mariadb", "redis", "rabbitmq", "api_key", "generic"}
    fresh = _by_name(_build(catalog_env, _data(catalog_env, age_days=0)))
    assert {n: i["status"] for n, i in fresh.items()} == {n: "ok" for n in catalog_env}
    old = _build(catalog_env, _data(catalog_env, age_days=400))
    assert {n: i["status"] for n, i in _by_name(old).items()} == {n: "overdue" for n in catalog_env}
    assert old["alert"] and sorted(old["alerts"]) == sorted(catalog_env)
    for name, item in _by_name(old).items():
        max_age = catalog_env[name]["policy"]["max_age_days"]
        assert item["max_age_days"] == max_age
        assert item["due"] == report.stamp(NOW - 400 * 86400 + max_age * 86400)
        assert item["due_in_days"] < 0 and item["overdue"] and item["alert"]
        assert f"max_age_days {max_age}" in item["reasons"][0]


def test_due_within_the_alert_window_is_a_warning_not_an_alert() -> None:
    catalog_env = {"app_db": _catalog()["app_db"]}  # max_age_days 30
    item = _by_name(_build(catalog_env, _data(catalog_env, age_days=20)))["app_db"]
    assert (item["status"], item["alert"], item["overdue"]) == ("due_soon", False, False)
    assert _build(catalog_env, _data(catalog_env, age_days=20), alert_days=5)["secrets"][0]["status"] == "ok"


def test_a_catalog_secret_missing_from_the_store_is_an_alert() -> None:
    catalog_env = _catalog()
    data = _data(catalog_env)
    del data["secrets"]["app_redis"]
    item = _by_name(_build(catalog_env, data))["app_redis"]
    assert (item["status"], item["alert"], item["in_store"]) == ("missing", True, False)
    assert "playbooks/init.yml" in item["reasons"][0]


@pytest.mark.parametrize(
    ("before_days", "after_days", "status"),
    [
        (-10, 80, "ok"),  # 80 of 90 days left
        (-70, 20, "overdue"),  # 20 of 90 left: less than a third, renewal due (outside the 14 d window)
        (-19, 11, "expiring"),  # 11 of 30 left: more than a third, but within the 14 d window
        (-90, 5, "overdue"),  # both rules; overdue is the worse
        (-90, -1, "expired"),
    ],
)
def test_certificate_rules(before_days: float, after_days: float, status: str) -> None:
    catalog_env = _with_tls({})
    data = _data({})
    not_before, not_after = _dt(NOW + before_days * 86400), _dt(NOW + after_days * 86400)
    data["secrets"]["web_tls"] = tls_entry(not_before, not_after)
    item = _by_name(_build(catalog_env, data))["web_tls"]
    assert item["status"] == status
    assert item["overdue"] == (status in ("overdue", "expired"))
    assert item["certificate"]["not_after"] == report.stamp(not_after.timestamp())
    assert item["certificate"]["lifetime_days"] == pytest.approx(after_days - before_days)
    renew_at = not_after.timestamp() - (not_after - not_before).total_seconds() / 3
    # the next due date is the earlier of max age (365 d here) and the renewal point
    assert item["due"] == report.stamp(renew_at)


def test_a_certificate_field_of_any_kind_is_parsed_and_garbage_is_an_error() -> None:
    catalog_env = {"session_secret": _catalog()["session_secret"]}
    data = _data(catalog_env)
    cert, _ = certificate(_dt(NOW - 5 * 86400), _dt(NOW + 3 * 86400))
    data["secrets"]["session_secret"]["current"]["fields"]["certificate"] = cert
    item = _by_name(_build(catalog_env, data))["session_secret"]
    # 3 of 8 days left: more than a third, within the alert window
    assert item["status"] == "expiring" and item["certificate"]["remaining_days"] == pytest.approx(3, abs=0.01)
    data["secrets"]["session_secret"]["current"]["fields"]["certificate"] = "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"
    item = _by_name(_build(catalog_env, data))["session_secret"]
    assert (item["status"], item["alert"]) == ("error", True)
    assert item["reasons"] == ["field 'certificate' is not a PEM X.509 certificate"]


def test_a_stored_certificate_the_catalog_does_not_list_is_reported_by_its_certificate() -> None:
    data = _data({})
    data["secrets"]["web_tls"] = tls_entry(_dt(NOW - 100 * 86400), _dt(NOW + 5 * 86400))
    item = _by_name(_build({}, data))["web_tls"]
    assert (item["kind"], item["in_catalog"], item["max_age_days"], item["status"]) == ("tls_cert", False, None, "overdue")
    assert any("not in the catalog" in reason for reason in item["reasons"])


def test_a_negative_alert_window_is_refused() -> None:
    with pytest.raises(report.ReportError, match="alert window -1"):
        _build({}, _data({}), alert_days=-1)


# ---- rotation history from a real audit log -------------------------------------------------------------
def _audited_store(tmp_path: Path) -> Store:
    log = audit.AuditLog(str(tmp_path / "audit.log"), KEY)
    auditor = audit.Auditor(log, "local", audit.actor({}), host="localhost")
    return Store(str(tmp_path / "store"), "local", [("local", VaultSecret(b"pw-" + os.urandom(8).hex().encode()))], audit=auditor)


def _rotate(store: Store, name: str, succeed: bool) -> None:
    with store.update("rotate.create") as data:
        current = data["secrets"][name]["current"]
        data["secrets"][name]["pending"] = {**current, "version": current["version"] + 1, "step": "created", "fields": {"password": os.urandom(12).hex()}}
    with store.update("rotate.mark") as data:
        data["secrets"][name]["pending"]["step"] = "tested"
    with store.update("rotate.finish" if succeed else "rotate.rollback") as data:
        entry = data["secrets"][name]
        if succeed:
            entry["previous"], entry["current"], entry["pending"] = entry["current"], {**entry["pending"], "created": report.stamp(time.time())}, None
            entry["current"].pop("step")
            entry["version"] = entry["current"]["version"]
        else:
            entry["pending"] = None


def test_rotation_history_counts_each_rotation_once(tmp_path: Path) -> None:
    store = _audited_store(tmp_path)
    with store.update("store") as data:
        for name in ("a", "b"):
            data["secrets"][name] = new_entry("postgresql", {"username": f"{name}_a", "password": os.urandom(12).hex()})
    _rotate(store, "a", succeed=False)
    _rotate(store, "a", succeed=True)
    _rotate(store, "b", succeed=True)
    _rotate(store, "a", succeed=False)
    _rotate(store, "b", succeed=True)
    info, records = report.audit_state(store.audit.log.path, KEY)
    assert (info["state"], info["macs_checked"]) == ("verified", True)
    history = report.rotation_history(records, "local")
    assert history["a"]["failures_total"] == 2 and history["a"]["last"]["outcome"] == "failure"
    assert history["a"]["last_success"] is not None and history["a"]["last_success"] < history["a"]["last_failure"]
    assert history["b"]["failures_total"] == 0 and history["b"]["last"]["outcome"] == "success" and history["b"]["last"]["version"] == 3
    # a driver that reports a failure through the outcome of another rotate.* line is counted too
    extra = store.audit.entry("rotate.mark", secret="b", outcome="error", step="tested")  # noqa: S106 - a secret name
    store.audit.record_many([extra])
    _, records = report.audit_state(store.audit.log.path, KEY)
    assert report.rotation_history(records, "local")["b"]["failures_total"] == 1
    # another environment's lines do not count
    assert report.rotation_history(records, "production") == {}


def test_only_the_verified_part_of_an_edited_log_is_used(tmp_path: Path) -> None:
    store = _audited_store(tmp_path)
    with store.update("store") as data:
        data["secrets"]["a"] = new_entry("postgresql", {"username": "a_a", "password": os.urandom(12).hex()})
    _rotate(store, "a", succeed=False)
    cut = len(Path(store.audit.log.path).read_bytes().splitlines())
    _rotate(store, "a", succeed=False)
    path = Path(store.audit.log.path)
    lines = path.read_bytes().splitlines()
    edited = json.loads(lines[cut])
    edited["host"] = "elsewhere"
    lines[cut] = json.dumps(edited, separators=(",", ":")).encode()
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    info, records = report.audit_state(str(path), KEY)
    assert (info["state"], info["first_bad_line"]) == ("broken", cut + 1)
    assert f"does not verify: line {cut + 1}" in info["message"] and f"lines 1-{cut}" in info["message"]
    assert len(records) == cut
    assert report.rotation_history(records, "local")["a"]["failures_total"] == 1
    built = report.build("local", {}, store.read(), info, records, NOW)
    assert built["alert"] and built["problems"] == [info["message"]] and built["alerts"] == []


def test_audit_log_states(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    info, records = report.audit_state(str(path), None)
    assert (info["state"], records) == ("missing", [])
    audit.Auditor(audit.AuditLog(str(path), KEY), "local", audit.actor({})).record("read", secret="x", field="value", value="v")  # noqa: S106 - a name
    info, records = report.audit_state(str(path), None)
    assert (info["state"], info["macs_checked"], len(records)) == ("verified", False, 1)
    assert "MACs not checked" in info["message"]
    info, _ = report.audit_state(str(path), bytes.fromhex("33" * 32))
    assert info["state"] == "broken" and "MAC does not match" in info["message"]
    path.unlink()
    info, _ = report.audit_state(str(path), KEY)
    assert info["state"] == "broken" and "head file" in info["message"]


# ---- outputs --------------------------------------------------------------------------------------------
def test_prometheus_text_parses_and_labels_name_secrets_only() -> None:
    catalog_env = _with_tls(_catalog())
    data = _data(catalog_env, age_days=10)
    data["secrets"]["web_tls"] = tls_entry(_dt(NOW - 10 * 86400), _dt(NOW + 80 * 86400))
    records = [
        {"seq": 1, "time": "2024-05-01T10:00:00.000001Z", "event": "rotate.finish", "environment": "local", "secret": "app_db", "outcome": "ok", "version": 2},
        {"seq": 2, "time": "2024-05-02T10:00:00.000001Z", "event": "rotate.rollback", "environment": "local", "secret": "app_db", "outcome": "ok"},
    ]
    built = _build(catalog_env, data, records)
    families = {f.name: f for f in text_string_to_metric_families(report.render_prometheus(built))}
    assert families["keywarden_rotation_failures"].type == "counter"
    names = {s.name for f in families.values() for s in f.samples}
    assert set(report.METRIC_NAMES) == names
    age = {s.labels["secret"]: s for s in families["keywarden_secret_age_seconds"].samples}
    assert set(age) == set(catalog_env)
    assert all(set(s.labels) == {"environment", "secret", "kind"} for s in age.values())
    assert age["web_tls"].labels["kind"] == "tls_cert" and age["app_db"].value == pytest.approx(10 * 86400, abs=1)
    expiry = {s.labels["secret"]: s.value for s in families["keywarden_secret_expiry_timestamp_seconds"].samples}
    assert list(expiry) == ["web_tls"] and expiry["web_tls"] == pytest.approx(NOW + 80 * 86400, abs=1)
    success = {s.labels["secret"]: s.value for s in families["keywarden_rotation_last_success_timestamp_seconds"].samples}
    assert success == {"app_db": report.epoch("2024-05-01T10:00:00.000001Z")}
    failures = {s.labels["secret"]: s.value for s in families["keywarden_rotation_failures"].samples}
    assert failures["app_db"] == 1 and failures["app_redis"] == 0


def test_committed_grafana_dashboard_is_the_generated_one_and_is_valid() -> None:
    path = REPO / "docs" / "security" / "secrets" / "grafana-dashboard.json"
    assert path.read_text() == report.render_dashboard(), "regenerate it: scripts/secrets/report --grafana-dashboard " + str(path.relative_to(REPO))
    board = json.loads(path.read_text())
    for key, kind in (("title", str), ("uid", str), ("schemaVersion", int), ("panels", list), ("templating", dict), ("time", dict)):
        assert isinstance(board[key], kind), key
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert "environment" in variables["environment"]["query"]["query"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    known = set(report.METRIC_NAMES)
    used = set()
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0, panel["title"]
        area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & area, f"panel {panel['title']} overlaps another"
        cells |= area
        assert panel["type"] in {"stat", "table", "bargauge", "timeseries"} and panel["datasource"]["uid"] == "${datasource}"
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")")
            assert '$environment"' in target["expr"]
            metrics = {word.removesuffix("_total") + ("_total" if word.endswith("_total") else "") for word in _metric_words(target["expr"])}
            assert metrics <= known, metrics - known
            used |= metrics
    # every secret metric is on the dashboard
    assert {n for n in known if n.startswith(("keywarden_secret_", "keywarden_rotation_"))} - {"keywarden_secret_version"} <= used


def _metric_words(expr: str) -> set[str]:
    import re  # noqa: PLC0415

    return set(re.findall(r"keywarden_[a-z_]+", expr))


def test_module_documentation_matches_the_argument_spec() -> None:
    doc = yaml.safe_load(report_doc.DOCUMENTATION)["options"]
    spec = ARGUMENT_SPECS["report"]
    assert set(doc) == set(spec)
    for name, option in spec.items():
        assert doc[name]["type"] == option["type"], name
        assert doc[name].get("default") == option.get("default"), name
        assert doc[name].get("choices") == option.get("choices"), name
        assert bool(doc[name].get("required")) == bool(option.get("required")), name
    assert spec["webhook_url"]["no_log"] is True


def test_write_atomic_sets_the_mode_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "keywarden_secrets_local.prom"
    assert report.write_atomic(str(target), "a 1\n", 0o644) is True
    assert stat.S_IMODE(target.stat().st_mode) == 0o644 and target.read_text() == "a 1\n"
    assert report.write_atomic(str(target), "a 1\n", 0o644) is False
    assert report.write_atomic(str(target), "a 2\n", 0o644) is True
    assert [p.name for p in target.parent.iterdir()] == [target.name]
    (tmp_path / "ro").mkdir(mode=0o500)
    if os.geteuid() != 0:  # root writes anywhere
        with pytest.raises(report.ReportError, match="cannot write"):
            report.write_atomic(str(tmp_path / "ro" / "x.prom"), "a 1\n")


def test_sample_catalog_loads() -> None:
    # the report reads the catalog through load_catalog: the sample one stays loadable with the extra kinds
    assert {"app_db", "app_redis", "payments_api_key"} <= set(load_catalog(str(REPO / "config" / "secrets" / "catalog.yml"))["secrets"])
