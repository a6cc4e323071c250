"""scripts/secrets/report and playbooks/report.yml on real stores: backdated secrets of every kind (and a certificate made
at test time) are overdue and fail the run, a fresh store passes; the textfile parses with prometheus_client and a real
prometheus-node-exporter serves it; a local webhook receiver gets the alert; headless Chromium renders the status page;
no stored value appears in any output.

Values are never printed: leaks are checked with Workspace.leaks (a bool), tokens compared by SHA-256.
"""

from __future__ import annotations

import hashlib
import html.parser
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from report_helpers import DAY, EXTRA_CATALOG, backdate, free_port, now, tls_entry
from support import REPO, Workspace

from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import AuditLog, Auditor, actor, load_key
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import CHARSETS, load_catalog, secrets_for_environment
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import generate_fields, new_entry

REPORT = REPO / "scripts" / "secrets" / "report"
KINDS = {"postgresql", "mariadb", "redis", "rabbitmq", "api_key", "generic", "tls_cert"}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1200,900",
]


def run_report(ws: Workspace, *args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "KEYWARDEN_"))}
    env.update(
        KEYWARDEN_VAULT_PASSWORD_DIR=str(ws.password_dir),
        KEYWARDEN_AUDIT_LOG=str(ws.audit_log),
        KEYWARDEN_AUDIT_KEY_FILE=str(ws.audit_key),
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
    )
    env.update(env_extra or {})
    cmd = [sys.executable, str(REPORT), "-e", ws.environment, "--catalog", str(ws.catalog), "--store-dir", str(ws.store_dir), *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)


def _audited(ws: Workspace) -> Any:
    store = ws.store()
    store.audit = Auditor(AuditLog(str(ws.audit_log), load_key(str(ws.audit_key))), ws.environment, actor())
    return store


def _rotation(store: Any, name: str, event: str) -> None:
    """One rotation attempt of a secret as the audit log records it (create, then finish or rollback)."""
    with store.update("rotate.create") as data:
        entry = data["secrets"][name]
        fields = {**entry["current"]["fields"], "password": os.urandom(16).hex()}
        entry["pending"] = {"version": entry["current"]["version"] + 1, "created": entry["current"]["created"], "step": "created", "fields": fields}
    with store.update(event) as data:
        entry = data["secrets"][name]
        if event == "rotate.finish":
            entry["pending"].pop("step")
            entry["previous"], entry["current"], entry["pending"] = entry["current"], entry["pending"], None
            entry["version"] = entry["current"]["version"]
        else:
            entry["pending"] = None


def make_backdated(ws: Workspace) -> Workspace:
    """Every kind in the catalog and the store, each past its limit; a certificate with 5 of 105 days left."""
    raw = yaml.safe_load(ws.catalog.read_text())
    raw["secrets"].update(EXTRA_CATALOG)
    ws.catalog.write_text("---\n" + yaml.safe_dump(raw, sort_keys=False))
    catalog_env = secrets_for_environment(load_catalog(str(ws.catalog)), ws.environment)
    store = _audited(ws)
    with store.update("store") as data:
        for name, entry in catalog_env.items():
            if name not in data["secrets"]:
                data["secrets"][name] = new_entry(entry["kind"], generate_fields(entry, CHARSETS))
        data["secrets"]["webhook_token"] = new_entry("api_key", {"value": os.urandom(24).hex()})
    # rotation history of app_db: a rollback, a success, a rollback
    for event in ("rotate.rollback", "rotate.finish", "rotate.rollback"):
        _rotation(store, "app_db", event)
    with ws.store().update() as data:
        for name in catalog_env:
            backdate(data["secrets"][name], 400)
        data["secrets"]["web_tls"] = tls_entry(now() - 100 * DAY, now() + 5 * DAY, created=None)
    return ws


@pytest.fixture(scope="module")
def backdated(make_workspace: Callable[..., Workspace], initialized: Workspace) -> Workspace:
    ws = make_workspace("backdated")
    ws.clone_store(initialized)
    return make_backdated(ws)


@pytest.fixture(scope="module")
def outputs(backdated: Workspace, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run of the script with every output, on the backdated store."""
    out = tmp_path_factory.mktemp("report-out")
    table = run_report(backdated, "--json", str(out / "report.json"), "--html", str(out / "status.html"), "--textfile-dir", str(out / "textfile"))
    as_json = run_report(backdated, "--format", "json")
    return {"dir": out, "table": table, "json": as_json, "report": json.loads(as_json.stdout) if as_json.stdout else {}}


# ---- overdue and exit codes -----------------------------------------------------------------------------
def test_backdated_secrets_of_every_kind_are_overdue_and_fail(outputs: dict[str, Any], backdated: Workspace) -> None:
    table, as_json, report = outputs["table"], outputs["json"], outputs["report"]
    assert table.returncode == 1, backdated.redact(table.stderr)
    assert as_json.returncode == 1
    items = {item["secret"]: item for item in report["secrets"]}
    assert {item["kind"] for item in items.values()} == KINDS
    overdue = {name for name, item in items.items() if item["status"] == "overdue" and item["alert"]}
    assert overdue == set(items) - {"webhook_token"}  # the token is not in the catalog and holds no certificate
    assert sorted(report["alerts"]) == sorted(overdue)
    for name in overdue:
        row = next(line for line in table.stdout.splitlines() if line.startswith(name + " "))
        assert row.endswith("OVERDUE"), row
    assert items["web_tls"]["certificate"]["remaining_days"] == pytest.approx(5, abs=0.01)
    assert items["web_tls"]["certificate"]["lifetime_days"] == pytest.approx(105, abs=0.01)
    assert "1/3" in " ".join(items["web_tls"]["reasons"]) and "alert window" in " ".join(items["web_tls"]["reasons"])
    # history from the verified audit log: two rollbacks, one success, last outcome failure
    db = items["app_db"]
    assert (db["failures_total"], db["last_rotation"]["outcome"], db["version"]) == (2, "failure", 2)
    assert db["last_success"] is not None
    assert report["audit"]["state"] == "verified" and report["audit"]["macs_checked"] is True
    assert "ALERT: environment local" in table.stdout


def test_a_fresh_store_exits_0(ready: Workspace, tmp_path: Path) -> None:
    result = run_report(ready, "--html", str(tmp_path / "s.html"), "--textfile-dir", str(tmp_path))
    assert result.returncode == 0, ready.redact(result.stdout + result.stderr)
    assert "OK: environment local, 3 secrets, 0 need attention" in result.stdout
    # no audit log in this copy: said, not an alert
    assert "does not exist: no rotation history" in result.stdout


def test_bad_input_is_one_line_and_exit_2(ready: Workspace, tmp_path: Path) -> None:
    result = run_report(ready, "--alert-days", "-3")
    assert (result.returncode, result.stderr.strip()) == (2, "report: error: alert window -3.0 is negative: give a number of days, e.g. 14")
    result = run_report(ready, env_extra={"KEYWARDEN_VAULT_PASSWORD_DIR": str(tmp_path)})
    assert result.returncode == 2 and result.stderr.startswith("report: error: no vault password for 'local'") and result.stdout == ""


def test_an_audit_log_that_does_not_verify_is_an_alert(workspace: Callable[..., Workspace], initialized: Workspace) -> None:
    ws = workspace("tampered")
    ws.clone_store(initialized)
    store = _audited(ws)
    _rotation(store, "app_db", "rotate.rollback")
    lines = ws.audit_log.read_bytes().splitlines()
    record = json.loads(lines[0])
    record["outcome"] = "edited"
    lines[0] = json.dumps(record, separators=(",", ":")).encode()
    ws.audit_log.write_bytes(b"".join(line + b"\n" for line in lines))
    result = run_report(ws, "--format", "json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["audit"]["state"] == "broken" and report["alerts"] == []
    assert report["problems"][0].endswith(
        "line 1: MAC does not match under the audit key (the line was edited, or the chain rebuilt without the key); "
        "rotation history is taken from lines 1-0 only"
    )
    assert all(item["failures_total"] == 0 for item in report["secrets"])


# ---- Prometheus -----------------------------------------------------------------------------------------
def _families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_textfile_parses_and_node_exporter_serves_it(outputs: dict[str, Any], tmp_path: Path) -> None:
    textfile_dir = outputs["dir"] / "textfile"
    [prom] = list(textfile_dir.iterdir())
    assert prom.name == "keywarden_secrets_local.prom" and stat.S_IMODE(prom.stat().st_mode) == 0o644
    written = _families(prom.read_text())
    for name in ("keywarden_secret_age_seconds", "keywarden_secret_expiry_timestamp_seconds", "keywarden_rotation_last_success_timestamp_seconds"):
        assert name in written
    assert written["keywarden_rotation_failures"].type == "counter"
    exporter = shutil.which("prometheus-node-exporter")
    assert exporter, "install the Debian package prometheus-node-exporter (scripts/dev/bootstrap test does)"
    port = free_port()
    proc = subprocess.Popen(
        [
            exporter,
            "--collector.disable-defaults",
            "--collector.textfile",
            f"--collector.textfile.directory={textfile_dir}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        body = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    body = response.read().decode()
            except OSError:
                assert proc.poll() is None, f"node exporter exited: {proc.stderr.read() if proc.stderr else ''}"
                time.sleep(0.2)
        assert body is not None, "node exporter did not answer within 20 s"
    finally:
        proc.terminate()
        proc.wait(10)
    served = _families(body)
    assert [s.value for s in served["node_textfile_scrape_error"].samples] == [0]
    for name, family in written.items():
        assert sorted((s.name, tuple(sorted(s.labels.items())), s.value) for s in served[name].samples) == sorted(
            (s.name, tuple(sorted(s.labels.items())), s.value) for s in family.samples
        ), name
    ages = {s.labels["secret"]: s.labels for s in served["keywarden_secret_age_seconds"].samples}
    assert {labels["kind"] for labels in ages.values()} == KINDS
    assert all(set(labels) == {"environment", "secret", "kind"} and labels["environment"] == "local" for labels in ages.values())
    assert [s.labels["secret"] for s in served["keywarden_secret_expiry_timestamp_seconds"].samples] == ["web_tls"]
    assert {s.labels["secret"]: s.value for s in served["keywarden_secret_overdue"].samples if s.value}.keys() == set(outputs["report"]["alerts"])


# ---- webhook --------------------------------------------------------------------------------------------
class Receiver:
    """A local HTTP server that keeps what it is sent."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body.decode()})
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_webhook_receives_the_alert_with_a_token_from_the_store(backdated: Workspace, outputs: dict[str, Any]) -> None:
    hook_path = "/hooks/" + os.urandom(8).hex()
    reads_before = sum(1 for line in backdated.audit_log.read_text().splitlines() if '"purpose":"report webhook"' in line)
    with Receiver() as receiver:
        result = run_report(
            backdated,
            "--webhook-token-secret",
            "webhook_token.value",
            env_extra={"KEYWARDEN_REPORT_WEBHOOK_URL": f"http://127.0.0.1:{receiver.port}{hook_path}"},
        )
    assert result.returncode == 1, backdated.redact(result.stderr)
    assert "webhook notified (HTTP 200)" in result.stderr
    [request] = receiver.requests
    assert request["path"] == hook_path and request["headers"]["Content-Type"] == "application/json"
    token = backdated.store().read()["secrets"]["webhook_token"]["current"]["fields"]["value"]
    assert _sha(request["headers"]["Authorization"]) == _sha(f"Bearer {token}")
    body = json.loads(request["body"])
    assert (body["source"], body["environment"], body["status"]) == ("keywarden", "local", "alert")
    assert sorted(a["secret"] for a in body["alerts"]) == sorted(outputs["report"]["alerts"])
    assert {a["kind"] for a in body["alerts"]} == KINDS
    assert all(set(a) == {"secret", "kind", "status", "version", "age_days", "max_age_days", "due", "not_after", "reasons"} for a in body["alerts"])
    assert body["text"].startswith("keywarden local: 7 secret(s) need attention: ")
    assert not backdated.leaks(request["body"])
    # the token's read was audited before it was used
    reads = [line for line in backdated.audit_log.read_text().splitlines() if '"purpose":"report webhook"' in line]
    assert len(reads) == reads_before + 1 and '"secret":"webhook_token"' in reads[-1]


def test_webhook_token_from_env_and_a_failed_delivery(backdated: Workspace, ready: Workspace) -> None:
    token = os.urandom(16).hex()
    with Receiver() as receiver:
        url = f"http://127.0.0.1:{receiver.port}/hook"
        fresh = run_report(ready, env_extra={"KEYWARDEN_REPORT_WEBHOOK_URL": url, "KEYWARDEN_REPORT_WEBHOOK_TOKEN": token})
        assert fresh.returncode == 0 and receiver.requests == []  # nothing to say (--webhook alert)
        always = run_report(ready, "--webhook", "always", env_extra={"KEYWARDEN_REPORT_WEBHOOK_URL": url, "KEYWARDEN_REPORT_WEBHOOK_TOKEN": token})
    assert always.returncode == 0
    [request] = receiver.requests
    assert _sha(request["headers"]["Authorization"]) == _sha(f"Bearer {token}")
    assert json.loads(request["body"])["status"] == "ok"
    secret_path = "/hooks/" + os.urandom(8).hex()
    with Receiver(status=500) as failing:
        failed = run_report(backdated, env_extra={"KEYWARDEN_REPORT_WEBHOOK_URL": f"http://127.0.0.1:{failing.port}{secret_path}"})
    assert failed.returncode == 2
    assert f"report: error: webhook http://127.0.0.1:{failing.port} answered HTTP 500: the alert was not delivered" in failed.stderr
    unreachable = run_report(backdated, env_extra={"KEYWARDEN_REPORT_WEBHOOK_URL": f"http://127.0.0.1:{free_port()}{secret_path}"})
    assert unreachable.returncode == 2 and "cannot be reached" in unreachable.stderr
    # a webhook URL's path may be a credential: never shown
    assert secret_path not in failed.stderr + unreachable.stderr


# ---- status page ----------------------------------------------------------------------------------------
class _Sections(html.parser.HTMLParser):
    """Each <section> of the status page: its attributes and text."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, dict[str, Any]] = {}
        self._current: str | None = None
        self._depth = 0
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        for name in ("src", "href", "srcset", "xlink:href"):
            if name in attributes:
                self.external.append(f"{tag} {name}")
        if tag in ("script", "link", "img", "iframe", "object"):
            self.external.append(tag)
        if tag == "section":
            self._current = attributes.get("id") or ""
            self.sections[self._current] = {"class": (attributes.get("class") or "").split(), "text": ""}
            self._depth = 0
        elif self._current is not None:
            self._depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._current = None

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self.sections[self._current]["text"] += data


def _chromium(*args: str, user_dir: Path) -> subprocess.CompletedProcess[str]:
    chromium = shutil.which("chromium")
    assert chromium, "install the Debian package chromium (scripts/dev/bootstrap test does)"
    return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={user_dir}", *args], capture_output=True, text=True, timeout=120, check=False)


def test_status_page_in_headless_chromium(outputs: dict[str, Any], tmp_path: Path) -> None:
    page = outputs["dir"] / "status.html"
    source = page.read_text()
    for external in ("http://", "https://", "url(", "@import", "<script", "<link"):
        assert external not in source, external
    dom = _chromium("--dump-dom", page.as_uri(), user_dir=tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    parser = _Sections()
    parser.feed(dom.stdout)
    assert parser.external == []
    items = {item["secret"]: item for item in outputs["report"]["secrets"]}
    assert set(parser.sections) == {f"secret-{name}" for name in items}
    for name, item in items.items():
        section = parser.sections[f"secret-{name}"]
        if item["alert"]:
            assert {"alert", "overdue"} <= set(section["class"]), name
            assert "OVERDUE" in section["text"], name
            assert ("1/3" if name == "web_tls" else "max_age_days") in section["text"], name
        else:
            assert "alert" not in section["class"], name
    assert "1/3" in parser.sections["secret-web_tls"]["text"] and "expires 2" in parser.sections["secret-web_tls"]["text"]
    assert "7 secret(s) need attention" in dom.stdout
    # overdue secrets come first
    order = list(parser.sections)
    assert max(order.index(f"secret-{n}") for n in items if items[n]["alert"]) < order.index("secret-webhook_token")
    shot = tmp_path / "status.png"
    taken = _chromium(f"--screenshot={shot}", page.as_uri(), user_dir=tmp_path / "profile-shot")
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    keep = os.environ.get("KEYWARDEN_RESULTS_DIR")
    if keep:  # make test keeps the screenshot with the other results
        shutil.copyfile(shot, Path(keep) / "report-status.png")


# ---- no value anywhere ----------------------------------------------------------------------------------
def test_no_stored_value_in_any_output(outputs: dict[str, Any], backdated: Workspace) -> None:
    texts = {
        "table stdout": outputs["table"].stdout + outputs["table"].stderr,
        "json stdout": outputs["json"].stdout + outputs["json"].stderr,
    }
    for path in outputs["dir"].rglob("*"):
        if path.is_file():
            texts[str(path.relative_to(outputs["dir"]))] = path.read_text()
    assert len(texts) == 5
    assert len(backdated.store_values()) >= 10  # it does compare with something: passwords, keys, the certificate
    leaking = [where for where, text in texts.items() if backdated.leaks(text)]
    assert leaking == []


# ---- the playbook ---------------------------------------------------------------------------------------
def _leaks_secret(ws: Workspace, text: str) -> bool:
    """True when a stored value other than a login name appears in text (a bool: never shows the value)."""
    data = ws.store().read()
    values = [
        str(value)
        for entry in data["secrets"].values()
        for stage in ("current", "pending", "previous")
        for field, value in ((entry.get(stage) or {}).get("fields") or {}).items()
        if field != "username" and len(str(value)) >= 8
    ]
    assert len(values) >= 10
    return any(value in text for value in values)


def test_playbook_fails_on_overdue_secrets_and_delivers_the_textfile(backdated: Workspace, tmp_path: Path) -> None:
    out, remote = tmp_path / "report", tmp_path / "remote-textfile"
    remote.mkdir()
    extra = json.dumps(
        {"keywarden_report_dir": str(out), "keywarden_report_textfile_hosts": ["localhost"], "keywarden_report_textfile_remote_dir": str(remote)}
    )
    check = backdated.run("playbooks/report.yml", "-e", extra, "--check")
    assert not out.exists() and list(remote.iterdir()) == []
    result = backdated.run("playbooks/report.yml", "-e", extra, "-v")
    assert result.returncode == 2 and result.recap()["failed"] == 1, result.explain()
    line = result.error_line("[ERROR]: Task failed", "need attention:")
    assert line and all(name in line for name in ("events_mq", "shop_db", "web_tls", "session_secret")), result.explain()
    assert sorted(p.name for p in out.iterdir()) == [f"keywarden_secrets_local.{ext}" for ext in ("html", "json", "prom", "txt")]
    delivered = remote / "keywarden_secrets_local.prom"
    assert delivered.read_text() == (out / "keywarden_secrets_local.prom").read_text()
    assert stat.S_IMODE(delivered.stat().st_mode) == 0o644
    # the catalog play before the report prints login names (catalog_check's entries): the leak gate's rule, usernames aside
    assert not _leaks_secret(backdated, result.output) and not _leaks_secret(backdated, check.output)
    for path in out.iterdir():
        assert not backdated.leaks(path.read_text()), path.name


def test_playbook_passes_on_a_fresh_store(ready: Workspace, tmp_path: Path) -> None:
    result = ready.run("playbooks/report.yml", "-e", f"keywarden_report_dir={tmp_path}")
    assert result.returncode == 0, result.explain()
    assert result.recap()["failed"] == 0 and "every secret is within policy" in result.output
    assert json.loads((tmp_path / "keywarden_secrets_local.json").read_text())["summary"]["secrets"] == 3
