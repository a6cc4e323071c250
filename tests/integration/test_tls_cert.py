"""Certificates from an internal CA (kinds tls_ca and tls_cert) through the real playbooks: init issues them, deploy
delivers them as files (key 0600, certificate with its chain) with their paths in the .env, rotate renews what is due
and never shortens a validity, report.yml names a backdated or expired certificate and fails, a failed health check
puts the previous files back.

Certificates are compared by fingerprint; keys only against their certificates. No output may hold a stored value.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from tls_helpers import ca_entry, cert_entry, certs, fingerprint, key_matches, not_after, read_env, stored_fields, write_catalog

from ansible_collections.keywarden.secrets.plugins.plugin_utils import tls
from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import read_records
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import load_catalog, secrets_for_environment, validate_catalog

DAY = 86400.0
GROUPS = ("web", "clients")
SECRETS = {"int_ca": ca_entry(), "web_tls": cert_entry("nginx", "web", "web.test")}


def _catalog(ws: Any) -> dict[str, Any]:
    return secrets_for_environment(load_catalog(str(ws.catalog)), ws.environment)


def _ok(ws: Any, result: Any) -> None:
    assert result.returncode == 0, result.explain()
    assert not ws.leaks(result.output), "a stored value appears in the output"


@pytest.fixture(scope="module")
def template(make_workspace: Callable[..., Any]) -> Any:
    """A store with a CA and one certificate, made by playbooks/init.yml (tests deliver from copies of it)."""
    ws = make_workspace("tls-template", groups=GROUPS)
    write_catalog(ws, SECRETS)
    ws.set_password("local")
    _ok(ws, ws.run("playbooks/init.yml", "-e", "keywarden_store_create=true"))
    return ws


@pytest.fixture
def deployed(workspace: Callable[..., Any], template: Any) -> Any:
    """A copy of the template's store and catalog, delivered by playbooks/deploy.yml."""
    ws = workspace("tls", groups=GROUPS)
    ws.catalog.write_text(template.catalog.read_text())
    ws.clone_store(template)
    _ok(ws, ws.run("playbooks/deploy.yml"))
    return ws


def _bundle(ws: Any, name: str = "nginx.web_tls") -> Path:
    return ws.env_dir / name


def _delivered(ws: Any, name: str = "nginx.web_tls", field: str = "certificate") -> str:
    return (_bundle(ws, name) / f"{field}.pem").read_text()


def _versions(ws: Any, name: str = "nginx.web_tls") -> list[str]:
    return sorted(p.name for p in ws.env_dir.iterdir() if p.name.startswith(f".{name}@"))


# ---- issue and deliver -------------------------------------------------------------------------------------
def test_init_issues_the_ca_and_a_certificate_it_signed(template: Any) -> None:
    ca, leaf = stored_fields(template, "int_ca"), stored_fields(template, "web_tls")
    ca_cert = certs(ca["certificate"])[0]
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert key_matches(ca["private_key"], ca["certificate"])
    assert [fingerprint(c.public_bytes(Encoding.DER)) for c in certs(ca["trust_bundle"])] == [fingerprint(ca["certificate"])]
    # the certificate field carries its chain; the chain is the CA; the CA signed it; the key is its own
    presented, *chain = certs(leaf["certificate"])
    assert [fingerprint(c.public_bytes(Encoding.DER)) for c in chain] == [fingerprint(leaf["chain"])] == [fingerprint(ca["certificate"])]
    presented.verify_directly_issued_by(ca_cert)
    assert key_matches(leaf["private_key"], leaf["certificate"])
    info = tls.info(leaf["certificate"])
    assert info["common_name"] == "web.test" and info["names"] == ["DNS:localhost", "DNS:web.test", "IP:127.0.0.1"]
    assert info["key_type"] == "ecdsa_p256" and round(info["lifetime"] / DAY) == 90
    # the public CA material next to the store (what the backup archives as inventories/<env>/ca); never the key
    ca_dir = template.store_dir.parent / "ca"
    assert sorted(p.name for p in ca_dir.iterdir()) == ["int_ca.crt", "int_ca.trust.pem"]
    assert fingerprint((ca_dir / "int_ca.crt").read_text()) == fingerprint(ca["certificate"])
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in ca_dir.iterdir())
    assert not any(ca["private_key"] in p.read_text() for p in ca_dir.iterdir())
    # issuing read the CA key: on the audit record, as every read
    reads = [r for r in read_records(str(template.audit_log)) if r.get("event") == "read" and r.get("secret") == "int_ca"]
    assert {r["field"] for r in reads} == {"certificate", "private_key"}
    assert all(r["detail"]["purpose"] == "issue web_tls" for r in reads)


def test_deploy_delivers_files_and_their_paths(deployed: Any) -> None:
    ws = deployed
    leaf, ca = stored_fields(ws, "web_tls"), stored_fields(ws, "int_ca")
    env = read_env(ws.env_dir / "nginx.env")
    assert sorted(env) == ["TLS_CERT_FILE", "TLS_KEY_FILE"]
    assert env["TLS_CERT_FILE"] == str(_bundle(ws) / "certificate.pem") and env["TLS_KEY_FILE"] == str(_bundle(ws) / "private_key.pem")
    assert fingerprint(Path(env["TLS_CERT_FILE"]).read_text()) == fingerprint(leaf["certificate"])
    assert Path(env["TLS_CERT_FILE"]).read_text() == leaf["certificate"]  # the chain too
    assert key_matches(Path(env["TLS_KEY_FILE"]).read_bytes(), leaf["certificate"])
    # a link to one directory: the key, the certificate and its chain change together, by one rename
    assert _bundle(ws).is_symlink() and _versions(ws) == [os.readlink(_bundle(ws))]
    version = ws.env_dir / os.readlink(_bundle(ws))
    assert stat.S_IMODE(version.stat().st_mode) == 0o700
    assert sorted(p.name for p in version.iterdir()) == ["certificate.pem", "chain.pem", "private_key.pem"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in version.iterdir())
    # the CA's consumers get its certificate and trust bundle, never its key
    client = read_env(ws.env_dir / "client.env")
    assert Path(client["CA_FILE"]).read_text() == ca["trust_bundle"]
    assert sorted(p.name for p in _bundle(ws, "client.int_ca").resolve().iterdir()) == ["certificate.pem", "trust_bundle.pem"]
    assert not any(ca["private_key"] in p.read_text() for p in ws.env_dir.rglob("*") if p.is_file())
    # one deploy line per delivered file, with its path
    deploys = [r for r in read_records(str(ws.audit_log)) if r.get("event") == "deploy" and r.get("secret") == "web_tls"]
    assert sorted((r["field"], r["detail"]["file"]) for r in deploys) == sorted(
        (field, str(_bundle(ws) / f"{field}.pem")) for field in ("certificate", "chain", "private_key")
    )


def test_a_second_deploy_changes_nothing(deployed: Any) -> None:
    before = deployed.snapshot()
    again = deployed.run("playbooks/deploy.yml")
    _ok(deployed, again)
    assert again.recap()["changed"] == 0
    assert deployed.snapshot() == before


def test_something_at_the_bundle_path_that_is_not_its_link_is_refused(workspace: Callable[..., Any], template: Any) -> None:
    ws = workspace("tls-refused", groups=GROUPS)
    ws.catalog.write_text(template.catalog.read_text())
    ws.clone_store(template)
    _bundle(ws).mkdir(parents=True)
    result = ws.run("playbooks/deploy.yml")
    assert result.returncode != 0
    assert result.error_line(f"{_bundle(ws)} exists and is not a symbolic link", "nothing written"), result.explain()
    assert sorted(p.name for p in ws.env_dir.iterdir()) == ["nginx.web_tls"]


# ---- renew ----------------------------------------------------------------------------------------------
def test_renewal_swaps_the_files_keeps_the_previous_ones_and_never_shortens(deployed: Any) -> None:
    ws = deployed
    old = stored_fields(ws, "web_tls")
    first_version = os.readlink(_bundle(ws))
    _ok(ws, ws.run("playbooks/rotate.yml", "-e", "keywarden_rotate_only=web_tls"))
    new = stored_fields(ws, "web_tls")
    assert fingerprint(new["certificate"]) != fingerprint(old["certificate"])
    assert stored_fields(ws, "web_tls", "previous")["certificate"] == old["certificate"]
    assert not_after(new["certificate"]) >= not_after(old["certificate"])
    assert _delivered(ws) == new["certificate"] and key_matches(_delivered(ws, field="private_key"), new["certificate"])
    # the previous files stay on disk (a failed health check puts them back) until the next delivery replaces them
    assert _versions(ws) == sorted([first_version, os.readlink(_bundle(ws))])
    assert (ws.env_dir / first_version / "certificate.pem").read_text() == old["certificate"]
    _ok(ws, ws.run("playbooks/rotate.yml", "-e", "keywarden_rotate_only=web_tls"))
    assert first_version not in _versions(ws) and len(_versions(ws)) == 2


def test_a_shorter_lifetime_policy_never_shortens_a_renewal(deployed: Any) -> None:
    ws = deployed
    old = stored_fields(ws, "web_tls")
    write_catalog(ws, {**SECRETS, "web_tls": cert_entry("nginx", "web", "web.test", lifetime_days=30)})
    _ok(ws, ws.run("playbooks/rotate.yml", "-e", "keywarden_rotate_only=web_tls"))
    new = stored_fields(ws, "web_tls")
    assert fingerprint(new["certificate"]) != fingerprint(old["certificate"])
    assert not_after(new["certificate"]) == not_after(old["certificate"])


def _backdate(ws: Any, name: str, days: float) -> str:
    """Replace a certificate's current value by one its CA issued ``days`` ago (the product's own issuing code)."""
    entry = _catalog(ws)[name]
    ca = stored_fields(ws, "int_ca")
    then = time.time() - days * DAY
    fields = tls.issue_certificate(entry, {"certificate": ca["certificate"], "private_key": ca["private_key"]}, None, then, "test")
    with ws.store().update() as data:
        data["secrets"][name]["current"]["fields"] = fields
    return fields["certificate"]


def _report(ws: Any, out: Path) -> tuple[Any, dict[str, Any]]:
    result = ws.run("playbooks/report.yml", "-e", f"keywarden_report_dir={out}")
    report = json.loads((out / f"keywarden_secrets_{ws.environment}.json").read_text())
    return result, {item["secret"]: item for item in report["secrets"]}


def test_a_backdated_certificate_is_overdue_and_fails_the_report(deployed: Any, tmp_path: Path) -> None:
    ws = deployed
    _backdate(ws, "web_tls", 70)  # 20 of 90 days left: below a third
    result, items = _report(ws, tmp_path / "report")
    assert result.returncode != 0 and result.error_line("need attention", "web_tls"), result.explain()
    assert not ws.leaks(result.output)
    assert items["web_tls"]["status"] == "overdue" and items["web_tls"]["alert"]
    assert items["int_ca"]["status"] == "ok"
    # the engine agrees with the report: a plain scheduled run renews it
    rotated = ws.run("playbooks/rotate.yml")
    _ok(ws, rotated)
    assert rotated.error_line("rotating web_tls (tls_cert, reissue): due"), rotated.explain()


def test_an_expired_certificate_is_reported_and_renewed(deployed: Any, tmp_path: Path) -> None:
    ws = deployed
    expired = _backdate(ws, "web_tls", 100)
    assert not_after(expired) < time.time()
    result, items = _report(ws, tmp_path / "before")
    assert result.returncode != 0, result.explain()
    assert items["web_tls"]["status"] == "expired" and any("expired" in reason for reason in items["web_tls"]["reasons"])
    rotated = ws.run("playbooks/rotate.yml")
    _ok(ws, rotated)
    assert rotated.error_line("rotating web_tls (tls_cert, reissue): due"), rotated.explain()
    renewed = stored_fields(ws, "web_tls")["certificate"]
    assert not_after(renewed) > time.time() + 89 * DAY and _delivered(ws) == renewed
    after, items = _report(ws, tmp_path / "after")
    assert after.returncode == 0 and items["web_tls"]["status"] == "ok", after.explain()


def test_a_certificate_that_no_longer_matches_the_catalog_is_reissued(deployed: Any) -> None:
    ws = deployed
    write_catalog(
        ws, {**SECRETS, "web_tls": {**cert_entry("nginx", "web", "web.test"), "target": {"ca": "int_ca", "common_name": "web.test", "dns_names": ["www.test"]}}}
    )
    rotated = ws.run("playbooks/rotate.yml")
    _ok(ws, rotated)
    assert rotated.error_line("rotating web_tls (tls_cert, reissue): due"), rotated.explain()
    assert tls.info(_delivered(ws))["names"] == ["DNS:www.test"]
    again = ws.run("playbooks/rotate.yml")
    _ok(ws, again)
    assert again.error_line("nothing to rotate"), again.explain()


def test_a_certificate_whose_ca_expired_is_named_not_skipped(deployed: Any) -> None:
    ws = deployed
    entry = _catalog(ws)["int_ca"]
    with ws.store().update() as data:
        data["secrets"]["int_ca"]["current"]["fields"] = tls.issue_ca(entry, None, time.time() - 3660 * DAY, "test")
    _backdate_leaf_under_the_expired_ca(ws)
    run = ws.run("playbooks/rotate.yml")
    assert run.returncode != 0 and not ws.leaks(run.output)
    line = run.error_line("due but cannot be rotated: web_tls: its CA 'int_ca' expired on")
    assert line and "rotate the CA first" in line and "rotated: int_ca" in line, run.explain()
    # the CA rotated in that run: the next one renews the certificate with it
    _ok(ws, ws.run("playbooks/rotate.yml"))
    leaf = stored_fields(ws, "web_tls")
    assert fingerprint(leaf["chain"]) == fingerprint(stored_fields(ws, "int_ca")["certificate"]) and _delivered(ws) == leaf["certificate"]


def _backdate_leaf_under_the_expired_ca(ws: Any) -> None:
    """The certificate an expired CA issued when it was valid: expired with it."""
    entry = _catalog(ws)["web_tls"]
    ca = stored_fields(ws, "int_ca")
    fields = tls.issue_certificate(entry, ca, None, time.time() - 3600 * DAY, "test")
    with ws.store().update() as data:
        data["secrets"]["web_tls"]["current"]["fields"] = fields


# ---- the old certificate stays until the health check passes -------------------------------------------------
@pytest.mark.parametrize("failing", ["health_check", "reload_command"])
def test_a_failed_reload_or_health_check_puts_the_previous_files_back(deployed: Any, failing: str) -> None:
    ws = deployed
    reloads = ws.root / "reloads"
    (ws.inventory / "host_vars").mkdir(exist_ok=True)
    (ws.inventory / "host_vars" / "localhost.yml").write_text("---\nkeywarden_env_manage_services: true\nkeywarden_env_health_retries: 1\n")
    if failing == "health_check":
        consumer = {"reload_command": f"sh -c 'echo reload >> {reloads}'", "health_check": "false"}
    else:  # the new files do not load: the reload fails, the consumer goes on with what it had
        consumer = {"reload_command": f"sh -c 'echo reload >> {reloads}; test -s {reloads}.fixed'", "health_check": "true"}
    write_catalog(ws, {**SECRETS, "web_tls": cert_entry("nginx", "web", "web.test", consumer=consumer)})
    old = stored_fields(ws, "web_tls")["certificate"]
    run = ws.run("playbooks/rotate.yml", "-e", "keywarden_rotate_only=web_tls")
    assert run.returncode != 0 and not ws.leaks(run.output)
    assert run.error_line("its previous certificate files were put back", "nginx"), run.explain()
    assert ("reloading on them failed too: nginx" in " ".join(run.output.split())) == (failing == "reload_command"), run.explain()
    # the consumer is back on the files it had, reloaded twice (new files, then the old ones again)
    assert _delivered(ws) == old and reloads.read_text().split() == ["reload", "reload"]
    entry = ws.store().read()["secrets"]["web_tls"]
    assert entry["pending"]["step"] == "distributing" and entry["current"]["fields"]["certificate"] == old
    # fixed, the next run rolls forward with the very certificate issued before
    pending = entry["pending"]["fields"]["certificate"]
    write_catalog(ws, {**SECRETS, "web_tls": cert_entry("nginx", "web", "web.test", consumer={**consumer, "health_check": "true"})})
    Path(f"{reloads}.fixed").write_text("fixed\n")
    _ok(ws, ws.run("playbooks/rotate.yml"))
    assert stored_fields(ws, "web_tls")["certificate"] == pending == _delivered(ws)


def test_catalog_yaml_of_the_example_is_valid() -> None:
    """The example catalog of docs/security/secrets/certificates.md validates."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "security" / "secrets" / "certificates.md").read_text()
    block = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    secrets = yaml.safe_load(block)
    validated = validate_catalog({"keywarden_catalog_version": 1, "secrets": secrets})
    assert {entry["kind"] for entry in validated["secrets"].values()} == {"tls_ca", "tls_cert"}
