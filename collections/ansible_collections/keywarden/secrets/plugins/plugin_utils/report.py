# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Expiry monitoring: age, due date, certificate lifetime and rotation history of every secret of an environment.

Guarantees:
- no stored value ever reaches a report: a secret is described by its name, kind, version, timestamps and the
  dates of its certificate (parsed here, never copied); every renderer (table, JSON, Prometheus textfile, HTML,
  webhook body) takes only the report built by ``build``;
- rotation history is taken from the audit log only as far as its hash chain verifies (with MACs when the key is
  at hand); a log that does not verify is an alert, and the report says where it breaks;
- files are written atomically (temp file in the same directory, fsync, rename), so node_exporter's textfile
  collector and a browser never see a torn file.

What "needs attention" means, per kind (docs/security/secrets/monitoring.md):
- every kind: ``overdue`` once the current value is older than ``policy.max_age_days``; ``due soon`` (a warning,
  not an alert) within the alert window before that;
- a secret holding a ``certificate`` field (kind ``tls_cert``, or any kind that stores one): also ``overdue`` once
  less than a third of its lifetime remains (cert-manager's renewal rule), ``expiring`` within the alert window
  before ``not_after``, ``expired`` after it, ``error`` when the field does not parse;
- ``missing``: in the catalog for the environment but not in the store.
"""

from __future__ import annotations

import calendar
import datetime
import html
import json
import os
import re
import urllib.error
import urllib.parse
from typing import Any

from ansible.module_utils.urls import open_url

from ansible_collections.keywarden.secrets.plugins.plugin_utils import audit
from ansible_collections.keywarden.secrets.plugins.plugin_utils.files import atomic_write

DAY = 86400.0
DEFAULT_ALERT_DAYS = 14
# cert-manager renews a certificate when a third of its lifetime remains
RENEW_FRACTION = 1.0 / 3.0
SUCCESS_EVENTS = ("rotate.finish",)
FAILURE_EVENTS = ("rotate.rollback",)
# run-level rotation events (the run lock): neither a success nor a failure of one secret
_RUN_EVENTS = ("rotate.lock", "rotate.unlock")
# worst first: the status of a secret is the worst that applies
STATUSES = ("missing", "error", "expired", "overdue", "expiring", "due_soon", "ok")
ALERT_STATUSES = ("missing", "error", "expired", "overdue", "expiring")
FORMATS = ("table", "json", "prometheus", "html")
WEBHOOK_ON = ("alert", "always", "never")
WEBHOOK_TIMEOUT = 10.0
_STAMP_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?Z$")


class ReportError(Exception):
    """A report problem. One line, names what to fix; never a value."""


# ---- time ----------------------------------------------------------------------------------------------
def epoch(stamp: Any) -> float | None:
    """Seconds since the epoch of a keywarden UTC stamp (``2024-01-31T12:00:00Z``, optionally with µs), else None."""
    if not isinstance(stamp, str):
        return None
    match = _STAMP_RE.match(stamp)
    if not match:
        return None
    seconds = calendar.timegm(datetime.datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").timetuple())
    return seconds + (float(match.group(2)) if match.group(2) else 0.0)


def stamp(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _day(seconds: float | None) -> str:
    return stamp(seconds)[:10] if seconds is not None else "-"


# ---- certificates -------------------------------------------------------------------------------------
def parse_certificate(pem: Any) -> dict[str, Any]:
    """Validity of the first (leaf) certificate of a PEM text: not_before, not_after (epoch seconds), lifetime."""
    from cryptography import x509  # noqa: PLC0415 - only secrets holding a certificate need it

    try:
        certificate = x509.load_pem_x509_certificates(str(pem).encode())[0]
    except (ValueError, TypeError, IndexError):
        # the library's message could quote the input: never pass it on
        raise ReportError("field 'certificate' is not a PEM X.509 certificate") from None
    not_before = certificate.not_valid_before_utc.timestamp()
    not_after = certificate.not_valid_after_utc.timestamp()
    return {"not_before": not_before, "not_after": not_after, "lifetime": max(0.0, not_after - not_before)}


# ---- audit history ------------------------------------------------------------------------------------
def audit_state(log_path: str, key: bytes | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Verify the audit log, then return (its state, the records of the part that verified)."""
    state: dict[str, Any] = {"path": log_path, "macs_checked": key is not None, "lines": 0, "first_bad_line": None}
    head = log_path + audit.HEAD_SUFFIX
    if not os.path.exists(log_path):
        if os.path.exists(head):
            # the head records lines that are gone: the log was removed or replaced
            return {**state, "state": "broken", "message": f"audit log {log_path} is missing but its head file {head} records lines"}, []
        return {**state, "state": "missing", "message": f"audit log {log_path} does not exist: no rotation history"}, []
    try:
        count, bad, message = audit.verify(log_path, key)
        records = audit.read_records(log_path)
    except audit.AuditError as exc:
        return {**state, "state": "broken", "message": str(exc)}, []
    if bad is not None:
        # lines before the first bad one chained from the genesis: those are still evidence
        trusted = records[: max(0, bad - 1)]
        return {
            **state,
            "state": "broken",
            "lines": count,
            "first_bad_line": bad,
            "message": f"audit log {log_path} does not verify: {message}; rotation history is taken from lines 1-{bad - 1} only",
        }, trusted
    records = records[:count]  # appended after verify: not verified, not used
    return {**state, "state": "verified", "lines": count, "message": f"audit log {log_path}: {message}"}, records


def rotation_history(records: list[dict[str, Any]], environment: str) -> dict[str, dict[str, Any]]:
    """Per secret: last success, last failure, failures counted, and the last outcome.

    A store write records one line per field and stage, so consecutive lines of one secret with the same event are
    one occurrence (one rotation finished, one rolled back). Any other ``rotate.*`` line whose outcome is not ``ok``
    is a failure too, so a driver that reports failures its own way is counted.
    """
    history: dict[str, dict[str, Any]] = {}
    last_event: dict[str, str] = {}
    for record in records:
        name = record.get("secret")
        event = str(record.get("event") or "")
        if not name or record.get("environment") not in (None, environment) or not event.startswith("rotate.") or event in _RUN_EVENTS:
            continue
        if event in SUCCESS_EVENTS and record.get("outcome", "ok") == "ok":
            outcome = "success"
        elif event in FAILURE_EVENTS or record.get("outcome", "ok") != "ok":
            outcome = "failure"
        else:
            last_event[name] = event
            continue
        key = f"{event}:{outcome}"
        when = epoch(record.get("time"))
        item = history.setdefault(name, {"last_success": None, "last_failure": None, "failures_total": 0, "last": None})
        if last_event.get(name) != key:
            if outcome == "failure":
                item["failures_total"] += 1
            item["last"] = {"time": when, "outcome": outcome, "event": event, "version": record.get("version")}
        last_event[name] = key
        item[f"last_{outcome}"] = when
    return history


# ---- the report ---------------------------------------------------------------------------------------
def _certificate_entry(
    fields: dict[str, Any], now: float, alert_days: float, policy: dict[str, Any] | None = None
) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
    if "certificate" not in fields:
        return None, []
    try:
        cert = parse_certificate(fields["certificate"])
    except ReportError as exc:
        return {"error": str(exc)}, [("error", str(exc))]
    # the rotation engine's rule (plugin_utils/tls.py renew_before): the policy's renew_before_days, else a third
    renew_days = (policy or {}).get("renew_before_days")
    renew_at = cert["not_after"] - (renew_days * DAY if renew_days else cert["lifetime"] * RENEW_FRACTION)
    rule = f"< {renew_days} d" if renew_days else "< 1/3"
    remaining = cert["not_after"] - now
    entry = {
        "not_before": stamp(cert["not_before"]),
        "not_after": stamp(cert["not_after"]),
        "not_after_ts": cert["not_after"],
        "lifetime_days": round(cert["lifetime"] / DAY, 2),
        "remaining_days": round(remaining / DAY, 2),
        "renew_at": stamp(renew_at),
        "renew_at_ts": renew_at,
    }
    problems: list[tuple[str, str]] = []
    if remaining <= 0:
        problems.append(("expired", f"certificate expired on {entry['not_after']}"))
    else:
        if now >= renew_at:
            problems.append(
                ("overdue", f"certificate has {remaining / DAY:.1f} d of {cert['lifetime'] / DAY:.1f} d left ({rule}): renewal was due {entry['renew_at']}")
            )
        if remaining <= alert_days * DAY:
            problems.append(("expiring", f"certificate expires {entry['not_after']}, within the {alert_days:g} d alert window"))
    return entry, problems


def _secret_entry(
    name: str, kind: str, policy: dict[str, Any] | None, stored: dict[str, Any] | None, history: dict[str, Any], now: float, alert_days: float
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "secret": name,
        "kind": kind,
        "in_catalog": policy is not None,
        "in_store": stored is not None,
        "version": None,
        "created": None,
        "current_since": None,
        "rotated": None,
        "age_seconds": None,
        "age_days": None,
        "max_age_days": (policy or {}).get("max_age_days"),
        "due": None,
        "due_ts": None,
        "due_in_days": None,
        "certificate": None,
        "pending": None,
        "last_rotation": None,
        "last_success": stamp(history.get("last_success")),
        "last_success_ts": history.get("last_success"),
        "failures_total": int(history.get("failures_total") or 0),
    }
    last = history.get("last")
    if last:
        item["last_rotation"] = {**last, "time": stamp(last["time"])}
    problems: list[tuple[str, str]] = []
    if stored is None:
        problems.append(("missing", "in the catalog but not in the store: run playbooks/init.yml"))
        return _finish(item, problems)
    current = stored.get("current") or {}
    since = epoch(current.get("created"))
    item["version"] = current.get("version", stored.get("version"))
    item["created"] = stored.get("created") or current.get("created")
    item["current_since"] = current.get("created")
    if since is None:
        problems.append(("error", "the store holds no creation time for the current value"))
        return _finish(item, problems)
    # a rotation is known from the audit log, else from the store (a version past 1 was rotated in)
    rotated = history.get("last_success") or (since if int(item["version"] or 1) > 1 else None)
    item["rotated"] = stamp(rotated)
    age = max(0.0, now - since)
    item["age_seconds"] = round(age, 3)
    item["age_days"] = round(age / DAY, 2)
    pending = stored.get("pending")
    if pending:
        item["pending"] = {"version": pending.get("version"), "step": pending.get("step"), "since": pending.get("started") or pending.get("created")}
    dues = []
    if item["max_age_days"] is not None:
        due = since + item["max_age_days"] * DAY
        dues.append(due)
        if now > due:
            problems.append(("overdue", f"age {age / DAY:.1f} d > max_age_days {item['max_age_days']}: rotation was due {stamp(due)}"))
        elif due - now <= alert_days * DAY:
            problems.append(("due_soon", f"due {stamp(due)}, within the {alert_days:g} d alert window"))
    cert, cert_problems = _certificate_entry(current.get("fields") or {}, now, alert_days, policy)
    if cert is not None:
        item["certificate"] = cert
        problems.extend(cert_problems)
        if "renew_at_ts" in cert:
            dues.append(cert["renew_at_ts"])
    if dues:
        item["due_ts"] = min(dues)
        item["due"] = stamp(item["due_ts"])
        item["due_in_days"] = round((item["due_ts"] - now) / DAY, 2)
    if not item["in_catalog"]:
        problems.append(("note", f"not in the catalog for this environment: no max_age_days (kind {kind})"))
    return _finish(item, problems)


def _finish(item: dict[str, Any], problems: list[tuple[str, str]]) -> dict[str, Any]:
    found = [status for status, _text in problems if status in STATUSES]
    item["status"] = min(found, key=STATUSES.index) if found else "ok"
    item["alert"] = item["status"] in ALERT_STATUSES
    item["overdue"] = any(status in ("overdue", "expired") for status in found)
    item["reasons"] = [text for _status, text in problems]
    return item


def build(
    environment: str,
    catalog_env: dict[str, Any],
    data: dict[str, Any],
    audit_info: dict[str, Any],
    records: list[dict[str, Any]],
    now: float,
    alert_days: float = DEFAULT_ALERT_DAYS,
) -> dict[str, Any]:
    """The report of one environment: every catalog secret, and every stored secret the catalog does not list."""
    if alert_days < 0:
        raise ReportError(f"alert window {alert_days} is negative: give a number of days, e.g. {DEFAULT_ALERT_DAYS}")
    history = rotation_history(records, environment)
    stored_all = data.get("secrets") or {}
    items = []
    for name in sorted(set(catalog_env) | {n for n, s in stored_all.items() if isinstance(s, dict) and "current" in s}):
        entry = catalog_env.get(name)
        stored = stored_all.get(name)
        kind = entry["kind"] if entry else str((stored or {}).get("kind") or "unknown")
        items.append(_secret_entry(name, kind, entry["policy"] if entry else None, stored, history.get(name, {}), now, alert_days))
    alerts = [item["secret"] for item in items if item["alert"]]
    problems = []
    if audit_info["state"] == "broken":
        problems.append(audit_info["message"])
    counts = {status: sum(1 for item in items if item["status"] == status) for status in STATUSES}
    return {
        "keywarden_report_format": 1,
        "environment": environment,
        "generated": stamp(now),
        "generated_ts": now,
        "alert_days": alert_days,
        "audit": audit_info,
        "secrets": items,
        "alerts": alerts,
        "problems": problems,
        "alert": bool(alerts or problems),
        "summary": {"secrets": len(items), "alerts": len(alerts), **counts},
    }


# ---- renderers ----------------------------------------------------------------------------------------
def render_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True) + "\n"


def _last_text(item: dict[str, Any]) -> str:
    last = item["last_rotation"]
    return f"{last['time'][:16]} {last['outcome']}" if last else "-"


def render_table(report: dict[str, Any]) -> str:
    header = ("SECRET", "KIND", "VER", "AGE d", "MAX d", "DUE", "NOT AFTER", "LAST ROTATION", "FAILS", "STATUS")
    rows = [header]
    for item in report["secrets"]:
        cert = item["certificate"] or {}
        rows.append(
            (
                item["secret"],
                item["kind"],
                str(item["version"] if item["version"] is not None else "-"),
                f"{item['age_days']:.1f}" if item["age_days"] is not None else "-",
                str(item["max_age_days"] if item["max_age_days"] is not None else "-"),
                (item["due"] or "-")[:10],
                (cert.get("not_after") or ("invalid" if "error" in cert else "-"))[:10],
                _last_text(item),
                str(item["failures_total"]),
                item["status"].upper().replace("_", " ") if item["status"] != "ok" else "ok",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.append("")
    for item in report["secrets"]:
        for reason in item["reasons"]:
            lines.append(f"{item['secret']}: {reason}")
    lines.append(report["audit"]["message"])
    summary = report["summary"]
    verdict = "ALERT" if report["alert"] else "OK"
    lines.append(
        f"{verdict}: environment {report['environment']}, {summary['secrets']} secrets, {summary['alerts']} need attention"
        + (f" ({', '.join(report['alerts'])})" if report["alerts"] else "")
        + ("; the audit log does not verify" if report["problems"] else "")
        + f"; alert window {report['alert_days']:g} d; generated {report['generated']}"
    )
    return "\n".join(lines) + "\n"


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# (name, type, help, value of an item or None to skip); labelled environment, secret, kind
_SECRET_METRICS: tuple[tuple[str, str, str, Any], ...] = (
    ("keywarden_secret_age_seconds", "gauge", "Age of the secret's current value.", lambda i: i["age_seconds"]),
    ("keywarden_secret_version", "gauge", "Version number of the secret's current value.", lambda i: i["version"]),
    (
        "keywarden_secret_max_age_seconds",
        "gauge",
        "Maximum age of the secret by its catalog policy (max_age_days).",
        lambda i: i["max_age_days"] * DAY if i["max_age_days"] is not None else None,
    ),
    ("keywarden_secret_due_timestamp_seconds", "gauge", "When the secret is next due for rotation or renewal (Unix time).", lambda i: i["due_ts"]),
    (
        "keywarden_secret_expiry_timestamp_seconds",
        "gauge",
        "Certificate not_after (Unix time), for secrets that hold a certificate.",
        lambda i: (i["certificate"] or {}).get("not_after_ts"),
    ),
    (
        "keywarden_rotation_last_success_timestamp_seconds",
        "gauge",
        "Time of the secret's last successful rotation in the verified audit log (Unix time).",
        lambda i: i["last_success_ts"],
    ),
    (
        "keywarden_rotation_failures_total",
        "counter",
        "Rotations of the secret rolled back or failed, in the verified audit log.",
        lambda i: i["failures_total"],
    ),
    ("keywarden_secret_overdue", "gauge", "1 when the secret is overdue (past max age, past its renewal point, or expired).", lambda i: int(i["overdue"])),
    ("keywarden_secret_alert", "gauge", "1 when the secret needs attention (overdue, expiring, expired, missing or unreadable).", lambda i: int(i["alert"])),
)
METRIC_NAMES = (
    *(metric[0] for metric in _SECRET_METRICS),
    "keywarden_report_audit_verified",
    "keywarden_report_alerts",
    "keywarden_report_generated_timestamp_seconds",
)


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def render_prometheus(report: dict[str, Any]) -> str:
    """Text exposition format for node_exporter's textfile collector; labels name the secret, never a value."""
    env = _label(report["environment"])
    lines: list[str] = []
    for name, kind, help_text, value_of in _SECRET_METRICS:
        samples = []
        for item in report["secrets"]:
            value = value_of(item)
            if value is None:
                continue
            pairs = (("environment", report["environment"]), ("secret", item["secret"]), ("kind", item["kind"]))
            labels = ",".join(f'{key}="{_label(text)}"' for key, text in pairs)
            samples.append(f"{name}{{{labels}}} {_number(value)}")
        if samples:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]
    verified = 1 if report["audit"]["state"] == "verified" else 0
    lines += [
        "# HELP keywarden_report_audit_verified 1 when the audit log's hash chain verified (0: broken or missing).",
        "# TYPE keywarden_report_audit_verified gauge",
        f'keywarden_report_audit_verified{{environment="{env}"}} {verified}',
        "# HELP keywarden_report_alerts Secrets of the environment that need attention.",
        "# TYPE keywarden_report_alerts gauge",
        f'keywarden_report_alerts{{environment="{env}"}} {len(report["alerts"])}',
        "# HELP keywarden_report_generated_timestamp_seconds When the report was made (Unix time).",
        "# TYPE keywarden_report_generated_timestamp_seconds gauge",
        f'keywarden_report_generated_timestamp_seconds{{environment="{env}"}} {_number(round(report["generated_ts"], 3))}',
    ]
    return "\n".join(lines) + "\n"


def webhook_payload(report: dict[str, Any]) -> dict[str, Any]:
    """The webhook body: names, kinds, statuses, dates and reasons. ``text`` suits Slack/Mattermost incoming webhooks."""
    needing = [item for item in report["secrets"] if item["alert"]]
    alerts = [
        {
            "secret": item["secret"],
            "kind": item["kind"],
            "status": item["status"],
            "version": item["version"],
            "age_days": item["age_days"],
            "max_age_days": item["max_age_days"],
            "due": item["due"],
            "not_after": (item["certificate"] or {}).get("not_after"),
            "reasons": item["reasons"],
        }
        for item in needing
    ]
    head = f"keywarden {report['environment']}: " + (
        f"{len(alerts)} secret(s) need attention: " + ", ".join(f"{a['secret']} ({a['status']})" for a in alerts) if alerts else "all secrets within policy"
    )
    if report["problems"]:
        head += "; " + "; ".join(report["problems"])
    return {
        "source": "keywarden",
        "environment": report["environment"],
        "status": "alert" if report["alert"] else "ok",
        "generated": report["generated"],
        "alert_days": report["alert_days"],
        "summary": report["summary"],
        "audit": {"state": report["audit"]["state"], "message": report["audit"]["message"]},
        "alerts": alerts,
        "text": head,
    }


def notify(url: str, payload: dict[str, Any], token: str | None = None, timeout: float = WEBHOOK_TIMEOUT) -> int:
    """POST the payload as JSON; the token goes in an Authorization header. Returns the HTTP status.

    Errors name the scheme, host and port only: a webhook URL's path often is a credential (Slack, Mattermost).
    """
    parts = urllib.parse.urlsplit(url)
    where = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "") if parts.hostname else "(no host)"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ReportError(f"webhook URL must be http:// or https:// with a host (got {parts.scheme or 'no scheme'}://...)")
    headers = {"Content-Type": "application/json", "User-Agent": "keywarden-report"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        # Ansible's own HTTP client (TLS verification, proxies as Ansible configures them)
        response = open_url(url, data=json.dumps(payload).encode(), headers=headers, method="POST", timeout=timeout, http_agent="keywarden-report")
        with response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        raise ReportError(f"webhook {where} answered HTTP {exc.code}: the alert was not delivered") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ReportError(
            f"webhook {where} cannot be reached ({getattr(reason, 'strerror', None) or type(reason).__name__}): the alert was not delivered"
        ) from None


def write_atomic(path: str, text: str, mode: int = 0o644) -> bool:
    """files.atomic_write of text, skipped when the file already holds it. Returns whether it changed.

    The temp file has a dot name: node_exporter's textfile collector reads *.prom only, never a half-written file."""
    path = os.path.abspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read() == text:
                os.chmod(path, mode)
                return False
    except (OSError, UnicodeDecodeError):
        pass
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, text.encode("utf-8"), mode)
    except OSError as exc:
        raise ReportError(f"cannot write {path} ({exc.strerror}): fix the directory's permissions or choose another output path") from None
    return True


# ---- HTML status page ---------------------------------------------------------------------------------
_STATUS_TEXT = {
    "missing": "MISSING",
    "error": "ERROR",
    "expired": "EXPIRED",
    "overdue": "OVERDUE",
    "expiring": "EXPIRING",
    "due_soon": "due soon",
    "ok": "ok",
}
_CSS = """
:root{--ink:#1d2430;--mute:#5b6576;--line:#d8dde6;--ok:#1f8a4c;--warn:#b26a00;--bad:#c62828;--bg:#f6f7f9;--cert:#6a3fb5;--rot:#1565c0}
*{box-sizing:border-box}
body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--ink);background:var(--bg)}
header{padding:18px 28px;background:#fff;border-bottom:1px solid var(--line)}
h1{margin:0 0 4px;font-size:20px}
.meta{color:var(--mute)}
.chips{margin-top:10px;display:flex;gap:8px;flex-wrap:wrap}
.chip{padding:3px 10px;border-radius:12px;background:#eef1f5;font-weight:600}
.chip.bad{background:#fde7e7;color:var(--bad)}.chip.good{background:#e3f4ea;color:var(--ok)}.chip.warn{background:#fff2dc;color:var(--warn)}
main{padding:16px 28px 32px}
.banner{padding:10px 14px;border-radius:6px;margin-bottom:14px;font-weight:600}
.banner.bad{background:#fde7e7;color:var(--bad);border:1px solid #f3b5b5}
.banner.good{background:#e3f4ea;color:var(--ok);border:1px solid #b5e0c5}
.secret{display:grid;grid-template-columns:230px 1fr 250px;gap:12px;align-items:center;background:#fff;border:1px solid var(--line);
  border-left:6px solid var(--ok);border-radius:6px;padding:10px 14px;margin-bottom:10px}
.secret.due_soon{border-left-color:var(--warn)}
.secret.alert{border-left-color:var(--bad);background:#fff6f6}
.secret.alert .name{color:var(--bad)}
.name{font-weight:700;font-size:15px;word-break:break-all}
.kind{display:inline-block;margin-top:2px;padding:0 6px;border-radius:4px;background:#eef1f5;color:var(--mute);font-size:12px}
.badge{display:inline-block;margin-left:6px;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:700;background:#e3f4ea;color:var(--ok)}
.badge.due_soon{background:#fff2dc;color:var(--warn)}
.badge.alert{background:var(--bad);color:#fff}
.facts{font-size:12.5px;color:var(--mute)}.facts b{color:var(--ink);font-weight:600}.facts b.fail{color:var(--bad)}
.reasons{grid-column:1/-1;margin:0;padding-left:18px;color:var(--bad);font-size:13px}
.reasons.warn{color:var(--warn)}
svg{width:100%;height:auto;display:block}
svg text{font:11px system-ui,"DejaVu Sans",sans-serif;fill:var(--mute)}
.legend{display:flex;gap:6px;color:var(--mute);font-size:12px;margin:4px 0 12px;align-items:center}
.legend svg{width:auto;height:14px;display:inline-block}.legend span{margin-right:12px}
footer{color:var(--mute);font-size:12px;padding:0 28px 24px}
"""
_W, _H, _PAD = 620, 72, 14


def _markers(item: dict[str, Any], now: float) -> list[tuple[str, float]]:
    cert = item["certificate"] or {}
    points = [
        ("created", epoch(item["created"])),
        ("rotated", epoch(item["rotated"])),
        ("due", item["due_ts"]),
        ("expires", cert.get("not_after_ts")),
    ]
    return [(label, float(when)) for label, when in points if when is not None]


def _shape(label: str, x: float, y: float, color: str) -> str:
    if label == "created":
        return f'<circle cx="{x:.1f}" cy="{y}" r="5" fill="#fff" stroke="{color}" stroke-width="2"/>'
    if label == "rotated":
        return f'<path d="M{x:.1f} {y - 6} l6 6 l-6 6 l-6 -6 z" fill="{color}"/>'
    if label == "due":
        return f'<path d="M{x:.1f} {y - 7} l6 11 h-12 z" fill="{color}"/>'
    return f'<rect x="{x - 5:.1f}" y="{y - 5}" width="10" height="10" fill="{color}"/>'


def _labels(labels: list[tuple[float, str, str]]) -> list[str]:
    """Text labels in three lanes (one above the axis, two below): markers that share a day share a label, and a label
    that would overlap the one before it in both lanes moves right of it."""
    merged: list[tuple[float, str, str]] = []
    for px, text, kind in sorted(labels):
        if merged and px - merged[-1][0] < 3 and kind != "now" and merged[-1][2] != "now" and text.split(" ")[1] == merged[-1][1].split(" ")[-1]:
            prev = merged[-1]
            merged[-1] = (prev[0], f"{prev[1].rsplit(' ', 1)[0]} · {text}", prev[2])
            continue
        merged.append((px, text, kind))
    lanes = {12: -1e9, _H - 14: -1e9, _H - 1: -1e9}
    out = []
    for px, text, kind in merged:
        width = 7.0 * len(text)
        left = min(max(px - width / 2, 2.0), _W - 2 - width)
        lane = next((ty for ty, end in lanes.items() if left >= end + 6), None)
        if lane is None:
            lane = min(lanes, key=lambda ty: lanes[ty])
            left = min(lanes[lane] + 6, _W - 2 - width)
        lanes[lane] = left + width
        style = ' style="font-weight:700;fill:#1d2430"' if kind == "now" else ""
        out.append(f'<text x="{left:.1f}" y="{lane}"{style}>{html.escape(text)}</text>')
    return out


def _timeline(item: dict[str, Any], now: float) -> str:
    points = _markers(item, now)
    if not points:
        return f'<svg viewBox="0 0 {_W} {_H}" role="img" aria-label="no dates"><text x="{_PAD}" y="{_H / 2}">not in the store</text></svg>'
    cert = item["certificate"] or {}
    since = epoch(item["current_since"])
    times = [when for _label, when in points] + [now] + ([epoch(cert["not_before"])] if cert.get("not_before") else [])
    start, end = min(times), max(times)
    span = max(end - start, DAY)
    start, end = start - span * 0.04, end + span * 0.04

    def x(when: float) -> float:
        return _PAD + (when - start) / (end - start) * (_W - 2 * _PAD)

    y = 26
    parts = [f'<line x1="{_PAD}" y1="{y}" x2="{_W - _PAD}" y2="{y}" stroke="#d8dde6" stroke-width="2"/>']
    if cert.get("not_before") and cert.get("not_after_ts"):
        left, right = x(epoch(cert["not_before"]) or start), x(cert["not_after_ts"])
        parts.append(
            f'<rect x="{left:.1f}" y="{y + 6}" width="{max(1.0, right - left):.1f}" height="3" fill="#6a3fb5" opacity="0.5">'
            "<title>certificate validity</title></rect>"
        )
    if since is not None and item["due_ts"] is not None:
        parts.append(f'<line x1="{x(since):.1f}" y1="{y}" x2="{x(item["due_ts"]):.1f}" y2="{y}" stroke="#1f8a4c" stroke-width="4"/>')
        if now > item["due_ts"]:
            parts.append(
                f'<line class="late" x1="{x(item["due_ts"]):.1f}" y1="{y}" x2="{x(now):.1f}" y2="{y}" stroke="#c62828" stroke-width="6">'
                f"<title>overdue since {stamp(item['due_ts'])}</title></line>"
            )
    parts.append(f'<line x1="{x(now):.1f}" y1="6" x2="{x(now):.1f}" y2="{_H - 24}" stroke="#1d2430" stroke-dasharray="3 2"/>')
    colors = {"created": "#5b6576", "rotated": "#1565c0", "due": "#c62828" if item["due_ts"] and now > item["due_ts"] else "#b26a00", "expires": "#6a3fb5"}
    labels: list[tuple[float, str, str]] = [(x(now), "now", "now")]
    for label, when in points:
        parts.append(f"<g><title>{label} {html.escape(stamp(when) or '')}</title>{_shape(label, x(when), y, colors[label])}</g>")
        labels.append((x(when), f"{label} {_day(when)}", label))
    parts += _labels(labels)
    title = html.escape(f"timeline of {item['secret']}")
    return f'<svg viewBox="0 0 {_W} {_H}" role="img" aria-label="{title}">{"".join(parts)}</svg>'


def _facts(item: dict[str, Any]) -> str:
    cert = item["certificate"] or {}
    rows = []
    if item["age_days"] is not None:
        limit = f" of {item['max_age_days']} d" if item["max_age_days"] is not None else ""
        rows.append(f"age <b>{item['age_days']:.1f} d</b>{limit}")
    if item["due"]:
        rows.append(f"due <b>{item['due'][:10]}</b> ({item['due_in_days']:+.1f} d)")
    if cert.get("not_after"):
        rows.append(f"expires <b>{cert['not_after'][:10]}</b> ({cert['remaining_days']:+.1f} d of {cert['lifetime_days']:.0f} d)")
    last = item["last_rotation"]
    failed = ' class="fail"' if last and last["outcome"] == "failure" else ""
    rows.append(f"last rotation <b{failed}>{html.escape(_last_text(item))}</b>" if last else "last rotation <b>none recorded</b>")
    if item["failures_total"]:
        rows.append(f"failed rotations <b>{item['failures_total']}</b>")
    if item["pending"]:
        rows.append(f"rotation in progress: v{item['pending']['version']} ({html.escape(str(item['pending']['step']))})")
    return "<br>".join(rows)


def render_html(report: dict[str, Any]) -> str:
    """A self-contained status page: inline CSS and SVG, no script, no external asset."""
    now = report["generated_ts"]
    items = sorted(report["secrets"], key=lambda i: (STATUSES.index(i["status"]), i["secret"]))
    audit_ok = report["audit"]["state"] == "verified"
    audit_class = "good" if audit_ok else "bad" if report["audit"]["state"] == "broken" else "warn"
    summary = report["summary"]
    chips = [
        f'<span class="chip">{summary["secrets"]} secrets</span>',
        f'<span class="chip {"bad" if summary["alerts"] else "good"}">{summary["alerts"]} need attention</span>',
        f'<span class="chip {audit_class}" id="audit-state">audit log: {html.escape(report["audit"]["state"])}</span>',
        f'<span class="chip">alert window {report["alert_days"]:g} d</span>',
    ]
    if report["alert"]:
        names = ", ".join(html.escape(name) for name in report["alerts"])
        text = f"{len(report['alerts'])} secret(s) need attention: {names}" if report["alerts"] else "no secret needs attention"
        if report["problems"]:
            text += "<br>" + "<br>".join(html.escape(p) for p in report["problems"])
        banner = f'<div class="banner bad" id="verdict">{text}</div>'
    else:
        banner = '<div class="banner good" id="verdict">All secrets are within policy.</div>'
    rows = []
    for item in items:
        level = "alert" if item["alert"] else item["status"]
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in item["reasons"])
        reason_block = f'<ul class="reasons{" warn" if not item["alert"] else ""}">{reasons}</ul>' if reasons else ""
        rows.append(
            f'<section class="secret {level} {item["status"]}" id="secret-{html.escape(item["secret"])}" data-status="{item["status"]}">'
            f'<div><div class="name">{html.escape(item["secret"])}</div><span class="kind">{html.escape(item["kind"])}</span>'
            f'<span class="kind">v{item["version"] if item["version"] is not None else "-"}</span>'
            f'<span class="badge {level}">{_STATUS_TEXT[item["status"]]}</span></div>'
            f"<div>{_timeline(item, now)}</div>"
            f'<div class="facts">{_facts(item)}</div>{reason_block}</section>'
        )
    legend = (
        '<div class="legend">'
        + "".join(
            f'<svg viewBox="{box}">{shape}</svg><span>{text}</span>'
            for box, shape, text in (
                ("0 0 16 16", _shape("created", 8, 8, "#5b6576"), "created"),
                ("0 0 16 16", _shape("rotated", 8, 8, "#1565c0"), "rotated"),
                ("0 0 16 16", _shape("due", 8, 9, "#b26a00"), "due"),
                ("0 0 16 16", _shape("expires", 8, 8, "#6a3fb5"), "certificate expires"),
                ("0 0 30 16", '<line x1="2" y1="8" x2="28" y2="8" stroke="#c62828" stroke-width="6"/>', "overdue"),
            )
        )
        + "</div>"
    )
    env = html.escape(report["environment"])
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>keywarden secrets: {env}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>keywarden secrets &middot; {env}</h1>"
        f'<div class="meta">generated {html.escape(report["generated"])} &middot; {html.escape(report["audit"]["message"])}</div>'
        f'<div class="chips">{"".join(chips)}</div></header>'
        f"<main>{banner}{legend}{''.join(rows)}</main>"
        "<footer>Names, kinds, versions and dates only: no value of the store is on this page. "
        "Made by scripts/secrets/report (playbooks/report.yml).</footer>"
        "</body></html>\n"
    )


# ---- Grafana dashboard --------------------------------------------------------------------------------
DASHBOARD_UID = "keywarden-secrets"
_DS = {"type": "prometheus", "uid": "${datasource}"}
_SEL = '{environment=~"$environment"}'


def _target(expr: str, ref: str, legend: str = "{{secret}}", table: bool = False) -> dict[str, Any]:
    target: dict[str, Any] = {"datasource": _DS, "expr": expr, "refId": ref, "legendFormat": legend}
    if table:
        target.update(format="table", instant=True, range=False)
    return target


def _thresholds(*steps: tuple[float | None, str]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": color, "value": value} for value, color in steps]}


def _panel(pid: int, kind: str, title: str, grid: tuple[int, int, int, int], targets: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    x, y, w, h = grid
    panel = {
        "id": pid,
        "type": kind,
        "title": title,
        "datasource": _DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": targets,
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {},
    }
    for key, value in extra.items():
        if key == "defaults":
            panel["fieldConfig"]["defaults"] = value
        elif key == "overrides":
            panel["fieldConfig"]["overrides"] = value
        else:
            panel[key] = value
    return panel


def grafana_dashboard() -> dict[str, Any]:
    """An importable Grafana dashboard over the textfile metrics (data source and environment are variables)."""
    days = {"unit": "d", "decimals": 1}
    stat_opts = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "background", "graphMode": "none"}
    gauge_opts = {"displayMode": "basic", "orientation": "horizontal", "showUnfilled": True, "reduceOptions": {"calcs": ["lastNotNull"], "values": False}}
    table_rows = [
        ("A", f"keywarden_secret_age_seconds{_SEL} / 86400", "Age (d)"),
        ("B", f"keywarden_secret_max_age_seconds{_SEL} / 86400", "Max age (d)"),
        ("C", f"(keywarden_secret_due_timestamp_seconds{_SEL} - time()) / 86400", "Due in (d)"),
        ("D", f"(keywarden_secret_expiry_timestamp_seconds{_SEL} - time()) / 86400", "Certificate expires in (d)"),
        ("E", f"(time() - keywarden_rotation_last_success_timestamp_seconds{_SEL}) / 86400", "Last rotation (d ago)"),
        ("F", f"keywarden_rotation_failures_total{_SEL}", "Failed rotations"),
        ("G", f"keywarden_secret_version{_SEL}", "Version"),
        ("H", f"keywarden_secret_alert{_SEL}", "Needs attention"),
    ]
    panels = [
        _panel(
            1,
            "stat",
            "Secrets needing attention",
            (0, 0, 6, 4),
            [_target(f"sum(keywarden_report_alerts{_SEL})", "A", "alerts")],
            options=stat_opts,
            defaults={"thresholds": _thresholds((None, "green"), (1, "red")), "unit": "none"},
        ),
        _panel(
            2,
            "stat",
            "Overdue secrets",
            (6, 0, 6, 4),
            [_target(f"sum(keywarden_secret_overdue{_SEL})", "A", "overdue")],
            options=stat_opts,
            defaults={"thresholds": _thresholds((None, "green"), (1, "red")), "unit": "none"},
        ),
        _panel(
            3,
            "stat",
            "Audit log chain",
            (12, 0, 6, 4),
            [_target(f"min(keywarden_report_audit_verified{_SEL})", "A", "audit")],
            options=stat_opts,
            defaults={
                "thresholds": _thresholds((None, "red"), (1, "green")),
                "mappings": [{"type": "value", "options": {"0": {"text": "DOES NOT VERIFY", "color": "red"}, "1": {"text": "verified", "color": "green"}}}],
            },
        ),
        _panel(
            4,
            "stat",
            "Report age",
            (18, 0, 6, 4),
            [_target(f"time() - max(keywarden_report_generated_timestamp_seconds{_SEL})", "A", "age")],
            options=stat_opts,
            description="Time since scripts/secrets/report last wrote the textfile: red after two days (the scheduled job stopped).",
            defaults={"unit": "s", "thresholds": _thresholds((None, "green"), (172800, "red"))},
        ),
        _panel(
            5,
            "table",
            "Secrets",
            (0, 4, 24, 9),
            [_target(expr, ref, table=True) for ref, expr, _title in table_rows],
            transformations=[
                {"id": "merge", "options": {}},
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True, "__name__": True},
                        "indexByName": {"environment": 0, "secret": 1, "kind": 2},
                        "renameByName": {f"Value #{ref}": title for ref, _expr, title in table_rows},
                    },
                },
            ],
            options={"showHeader": True, "sortBy": [{"displayName": "Due in (d)", "desc": False}]},
            defaults={"decimals": 1, "custom": {"align": "auto"}},
            overrides=[
                {
                    "matcher": {"id": "byName", "options": "Due in (d)"},
                    "properties": [
                        {"id": "custom.cellOptions", "value": {"type": "color-background"}},
                        {"id": "thresholds", "value": _thresholds((None, "red"), (0, "orange"), (14, "green"))},
                    ],
                },
                {
                    "matcher": {"id": "byName", "options": "Needs attention"},
                    "properties": [
                        {"id": "custom.cellOptions", "value": {"type": "color-background"}},
                        {
                            "id": "mappings",
                            "value": [{"type": "value", "options": {"0": {"text": "no", "color": "green"}, "1": {"text": "YES", "color": "red"}}}],
                        },
                    ],
                },
            ],
        ),
        _panel(
            6,
            "bargauge",
            "Days until due (rotation or renewal)",
            (0, 13, 12, 9),
            [_target(f"(keywarden_secret_due_timestamp_seconds{_SEL} - time()) / 86400", "A")],
            options=gauge_opts,
            defaults={**days, "min": 0, "thresholds": _thresholds((None, "red"), (0, "orange"), (14, "green"))},
        ),
        _panel(
            7,
            "bargauge",
            "Days until certificate expiry",
            (12, 13, 12, 9),
            [_target(f"(keywarden_secret_expiry_timestamp_seconds{_SEL} - time()) / 86400", "A")],
            options=gauge_opts,
            defaults={**days, "min": 0, "thresholds": _thresholds((None, "red"), (14, "orange"), (30, "green"))},
        ),
        _panel(
            8,
            "timeseries",
            "Age as a share of the maximum age",
            (0, 22, 12, 8),
            [_target(f"keywarden_secret_age_seconds{_SEL} / keywarden_secret_max_age_seconds{_SEL}", "A")],
            defaults={"unit": "percentunit", "min": 0, "thresholds": _thresholds((None, "green"), (1, "red")), "custom": {"thresholdsStyle": {"mode": "line"}}},
        ),
        _panel(
            9,
            "timeseries",
            "Failed rotations (per day)",
            (12, 22, 12, 8),
            [_target(f"increase(keywarden_rotation_failures_total{_SEL}[1d])", "A")],
            defaults={"unit": "none", "min": 0, "custom": {"drawStyle": "bars"}},
        ),
    ]
    return {
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            *({"type": "panel", "id": kind, "name": kind, "version": ""} for kind in ("bargauge", "stat", "table", "timeseries")),
        ],
        "uid": DASHBOARD_UID,
        "title": "keywarden secrets",
        "description": "Age, due dates, certificate expiry and rotation outcomes of keywarden's secrets (scripts/secrets/report textfile metrics).",
        "tags": ["keywarden", "secrets"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "5m",
        "time": {"from": "now-30d", "to": "now"},
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {"type": "datasource", "name": "datasource", "label": "Data source", "query": "prometheus", "current": {}, "hide": 0, "refresh": 1},
                {
                    "type": "query",
                    "name": "environment",
                    "label": "Environment",
                    "datasource": _DS,
                    "definition": "label_values(keywarden_secret_age_seconds, environment)",
                    "query": {"query": "label_values(keywarden_secret_age_seconds, environment)", "refId": "environment"},
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "current": {},
                    "hide": 0,
                    "sort": 1,
                },
            ]
        },
        "panels": panels,
    }


def render_dashboard() -> str:
    return json.dumps(grafana_dashboard(), indent=2, sort_keys=True) + "\n"
