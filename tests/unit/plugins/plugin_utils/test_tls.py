"""Certificates of an internal CA (plugin_utils/tls.py, drivers tls_ca and tls_cert, their catalog rows): issuing with
community.crypto's backends, what is due, the monotonic and CA-bounded lifetime, and the catalog's checks.

Keys are generated at test time and only ever checked against their certificates; messages are checked for names,
never for values.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

from ansible_collections.keywarden.secrets.plugins.plugin_utils import rotation, tls
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import CatalogError, env_plan, env_template, validate_catalog
from ansible_collections.keywarden.secrets.plugins.plugin_utils.deploy import render_bundles, render_env_file, secret_fields
from ansible_collections.keywarden.secrets.plugins.plugin_utils.drivers import driver_for
from ansible_collections.keywarden.secrets.plugins.plugin_utils.report import build
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import StoreError, generate_fields, new_entry

DAY = 86400.0
RAW: dict[str, Any] = {
    "keywarden_catalog_version": 1,
    "secrets": {
        "int_ca": {
            "kind": "tls_ca",
            "environments": ["dev", "prod"],
            "target": {"common_name": "unit CA"},
            "consumers": [{"group": "clients", "service": "client", "env": {"CA_FILE": "trust_bundle"}}],
        },
        "web_tls": {
            "kind": "tls_cert",
            "environments": ["dev"],
            "target": {"ca": "int_ca", "common_name": "web.test", "dns_names": ["web.test"], "ip_addresses": ["127.0.0.1", "::1"]},
            "consumers": [
                {"group": "web", "service": "nginx", "env": {"TLS_CERT": "certificate", "TLS_KEY": "private_key"}, "reload_command": "nginx -s reload"}
            ],
        },
    },
}


def _catalog(raw: dict[str, Any] | None = None) -> dict[str, Any]:
    return validate_catalog(copy.deepcopy(raw or RAW))["secrets"]


CATALOG = _catalog()


def _ca(now: float | None = None, current: dict[str, str] | None = None, **policy: Any) -> dict[str, str]:
    entry = copy.deepcopy(CATALOG["int_ca"])
    entry["policy"].update(policy)
    return tls.issue_ca(entry, current, time.time() if now is None else now, "test CA")


def _leaf(ca: dict[str, str], now: float | None = None, current: dict[str, str] | None = None, **policy: Any) -> dict[str, str]:
    entry = copy.deepcopy(CATALOG["web_tls"])
    entry["policy"].update(policy)
    return tls.issue_certificate(entry, ca, current, time.time() if now is None else now, "test")


def _cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificates(pem.encode())[0]


def _matches(key: str, pem: str) -> bool:
    spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return bool(load_pem_private_key(key.encode(), None).public_key().public_bytes(*spki) == _cert(pem).public_key().public_bytes(*spki))


@pytest.fixture(scope="module")
def ca() -> dict[str, str]:
    return _ca()


# ---- issuing ----------------------------------------------------------------------------------------------
def test_a_ca_is_self_signed_constrained_and_its_own_bundle(ca: dict[str, str]) -> None:
    cert = _cert(ca["certificate"])
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    cert.verify_directly_issued_by(cert)
    assert _matches(ca["private_key"], ca["certificate"])
    assert ca["trust_bundle"] == ca["certificate"].strip() + "\n"
    assert round(tls.info(ca["certificate"])["lifetime"] / DAY) == 3650


def test_a_rotated_ca_bundles_the_one_it_replaces_while_that_is_valid(ca: dict[str, str]) -> None:
    rotated = _ca(current=ca)
    assert [tls.fingerprint(p) for p in _pems(rotated["trust_bundle"])] == [tls.fingerprint(rotated["certificate"]), tls.fingerprint(ca["certificate"])]
    # never the same subject twice: clients with both in their bundle pick the issuer by name
    assert _cert(rotated["certificate"]).subject != _cert(ca["certificate"]).subject
    expired = _ca(now=time.time() - 3700 * DAY)
    assert len(_pems(_ca(current=expired)["trust_bundle"])) == 1


def _pems(bundle: str) -> list[str]:
    return [cert.public_bytes(Encoding.PEM).decode() for cert in x509.load_pem_x509_certificates(bundle.encode())]


def test_a_certificate_carries_its_chain_names_and_key(ca: dict[str, str]) -> None:
    leaf = _leaf(ca)
    presented, issuer = x509.load_pem_x509_certificates(leaf["certificate"].encode())
    assert tls.fingerprint(issuer.public_bytes(Encoding.PEM).decode()) == tls.fingerprint(leaf["chain"]) == tls.fingerprint(ca["certificate"])
    presented.verify_directly_issued_by(_cert(ca["certificate"]))
    assert _matches(leaf["private_key"], leaf["certificate"])
    info = tls.info(leaf["certificate"])
    assert (info["common_name"], info["names"], info["key_type"]) == ("web.test", ["DNS:web.test", "IP:127.0.0.1", "IP:::1"], "ecdsa_p256")
    assert not presented.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = presented.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {oid._name for oid in usage} == {"serverAuth", "clientAuth"}
    assert info["not_before"] <= time.time() - 59 and round(info["lifetime"] / DAY, 2) == 90.0


@pytest.mark.parametrize("key_type", ["ecdsa_p384", "rsa_2048"])
def test_key_types(ca: dict[str, str], key_type: str) -> None:
    leaf = _leaf(ca, key_type=key_type)
    assert tls.info(leaf["certificate"])["key_type"] == key_type and _matches(leaf["private_key"], leaf["certificate"])


def test_a_name_only_certificate_gets_its_common_name_as_its_name(ca: dict[str, str]) -> None:
    raw = copy.deepcopy(RAW)
    raw["secrets"]["web_tls"]["target"] = {"ca": "int_ca", "common_name": "only.test"}
    leaf = tls.issue_certificate(_catalog(raw)["web_tls"], ca, None, time.time(), "test")
    assert tls.info(leaf["certificate"])["names"] == ["DNS:only.test"]


def test_a_renewal_never_ends_before_the_certificate_it_replaces(ca: dict[str, str]) -> None:
    first = _leaf(ca)
    shorter = _leaf(ca, current=first, lifetime_days=10)
    assert tls.info(shorter["certificate"])["not_after"] == tls.info(first["certificate"])["not_after"]
    longer = _leaf(ca, current=first, lifetime_days=200)
    assert tls.info(longer["certificate"])["not_after"] > tls.info(first["certificate"])["not_after"]


def test_a_certificate_never_outlives_its_ca() -> None:
    # a CA with 30 days left issues a 90-day certificate: it ends with the CA
    ca = _ca(now=time.time() - 3620 * DAY)
    leaf = _leaf(ca)
    assert tls.info(leaf["certificate"])["not_after"] == tls.info(ca["certificate"])["not_after"]


def test_what_a_ca_cannot_issue_is_said_not_done() -> None:
    entry = CATALOG["web_tls"]
    now = time.time()
    assert "is not in the store: run playbooks/init.yml" in str(tls.cannot_issue(entry, None, None, now))
    expired = _ca(now=now - 3700 * DAY)
    why = tls.cannot_issue(entry, None, expired["certificate"], now)
    assert why and "its CA 'int_ca' expired on" in why and "keywarden_rotate_only=int_ca" in why
    with pytest.raises(tls.TLSError) as caught:
        tls.issue_certificate(entry, expired, None, now, "secret 'web_tls'")
    assert str(caught.value).startswith("secret 'web_tls': its CA 'int_ca' expired on")
    # the CA ends before the current certificate: a renewal would shorten it
    long_lived = _ca()
    current = _leaf(long_lived, lifetime_days=3000)
    short_ca = _ca(now=now - 3600 * DAY)
    why = tls.cannot_issue(entry, current, short_ca["certificate"], now)
    assert why and "would shorten its validity" in why
    assert tls.cannot_issue(entry, None, "not a certificate", now) is not None


def test_an_issued_certificate_is_checked(ca: dict[str, str]) -> None:
    leaf = _leaf(ca)
    other = _leaf(_ca())
    entry = CATALOG["web_tls"]
    with pytest.raises(tls.TLSError, match="does not match its key"):
        tls.check_certificate(entry, {**leaf, "private_key": other["private_key"]}, time.time(), "test")
    with pytest.raises(tls.TLSError, match="not signed by its CA"):
        tls.check_certificate(
            entry,
            {
                **leaf,
                "certificate": leaf["certificate"].split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n" + other["chain"],
                "chain": other["chain"],
            },
            time.time(),
            "test",
        )
    with pytest.raises(tls.TLSError, match="does not carry its chain"):
        tls.check_certificate(entry, {**leaf, "chain": other["chain"]}, time.time(), "test")


def test_errors_never_hold_a_key(ca: dict[str, str]) -> None:
    broken = {"certificate": ca["certificate"], "private_key": ca["private_key"].replace("A", "B", 5)}
    with pytest.raises(tls.TLSError) as caught:
        _leaf(broken)
    assert ca["private_key"] not in str(caught.value) and broken["private_key"] not in str(caught.value)
    assert str(caught.value).startswith("test: ")


# ---- due -----------------------------------------------------------------------------------------------
def test_due_by_remaining_lifetime_names_key_type_and_issuer(ca: dict[str, str]) -> None:
    entry = CATALOG["web_tls"]
    leaf = _leaf(ca)
    now = time.time()
    assert not tls.due(entry, leaf, ca["certificate"], now)
    assert not tls.due(entry, leaf, ca["certificate"], now + 59 * DAY)
    assert tls.due(entry, leaf, ca["certificate"], now + 61 * DAY)  # less than a third of 90 days left
    assert tls.due(entry, leaf, ca["certificate"], now + 100 * DAY)  # expired
    policy = {**entry, "policy": {**entry["policy"], "renew_before_days": 10}}
    assert not tls.due(policy, leaf, ca["certificate"], now + 61 * DAY) and tls.due(policy, leaf, ca["certificate"], now + 81 * DAY)
    assert tls.due({**entry, "policy": {**entry["policy"], "key_type": "rsa_2048"}}, leaf, ca["certificate"], now)
    assert tls.due({**entry, "target": {**entry["target"], "dns_names": ["other.test"]}}, leaf, ca["certificate"], now)
    assert tls.due(entry, leaf, _ca(current=ca)["certificate"], now)  # the CA rotated
    assert tls.due(entry, {"certificate": "garbage"}, ca["certificate"], now)


def test_the_drivers_answer_the_engine(ca: dict[str, str]) -> None:
    driver = driver_for("tls_cert")
    assert driver is not None and driver.needs(CATALOG["web_tls"]) == [("int_ca", "certificate"), ("int_ca", "private_key")]
    leaf = _leaf(ca)
    data = {"environment": "dev", "secrets": {"int_ca": new_entry("tls_ca", ca), "web_tls": new_entry("tls_cert", leaf)}}
    stored = data["secrets"]["web_tls"]
    now = time.time()
    assert not driver.due(CATALOG["web_tls"], stored, data, now) and driver.due(CATALOG["web_tls"], stored, data, now + 91 * DAY)
    assert driver.rotatable(CATALOG["web_tls"], stored, data) is None
    renewed = driver.new_fields(CATALOG["web_tls"], leaf, {("int_ca", "certificate"): ca["certificate"], ("int_ca", "private_key"): ca["private_key"]})
    assert tls.fingerprint(renewed["certificate"]) != tls.fingerprint(leaf["certificate"]) and _matches(renewed["private_key"], renewed["certificate"])
    with pytest.raises(StoreError, match="its CA 'int_ca'"):
        driver.new_fields(CATALOG["web_tls"], leaf, {})
    # no CA in the store: blocked, but a pending certificate (issued already) is resumed
    no_ca = {"environment": "dev", "secrets": {"web_tls": stored}}
    assert "not in the store" in str(driver.rotatable(CATALOG["web_tls"], stored, no_ca))
    assert driver.rotatable(CATALOG["web_tls"], {**stored, "pending": {"step": "created"}}, no_ca) is None
    ca_driver = driver_for("tls_ca")
    assert ca_driver is not None and ca_driver.needs(CATALOG["int_ca"]) == [] and not ca_driver.holds(CATALOG["int_ca"])
    assert ca_driver.retire_after(CATALOG["int_ca"]) is None


def test_the_plan_asks_the_driver_what_is_due(ca: dict[str, str]) -> None:
    data = {"environment": "dev", "secrets": {"int_ca": new_entry("tls_ca", ca), "web_tls": new_entry("tls_cert", _leaf(ca))}}
    catalog = {name: CATALOG[name] for name in ("int_ca", "web_tls")}

    def can(entry: dict[str, Any], stored: dict[str, Any]) -> str | None:
        return driver_for(entry["kind"]).rotatable(entry, stored, data)  # type: ignore[union-attr]

    def due(entry: dict[str, Any], stored: dict[str, Any], now: float) -> bool:
        return driver_for(entry["kind"]).due(entry, stored, data, now)  # type: ignore[union-attr]

    assert rotation.plan(catalog, data, [], can, due=due) == ([], [])
    # 61 days on, by age alone (max_age_days 90) nothing is due; by remaining lifetime the certificate is
    assert rotation.plan(catalog, data, [], can, now=time.time() + 61 * DAY) == ([], [])
    rotations, blocked = rotation.plan(catalog, data, [], can, now=time.time() + 61 * DAY, due=due)
    assert [(r["name"], r["reason"]) for r in rotations] == [("web_tls", "due")] and blocked == []


# ---- store and catalog -------------------------------------------------------------------------------------
def test_generate_fields_makes_a_ca_and_a_certificate_it_issues() -> None:
    ca = generate_fields(CATALOG["int_ca"], {}, name="int_ca")
    leaf = generate_fields(CATALOG["web_tls"], {}, issuer=ca, name="web_tls")
    assert sorted(ca) == ["certificate", "private_key", "trust_bundle"] and sorted(leaf) == ["certificate", "chain", "private_key"]
    with pytest.raises(StoreError, match="secret 'web_tls': its CA 'int_ca' is not in the store"):
        generate_fields(CATALOG["web_tls"], {}, name="web_tls")


def test_catalog_defaults_for_certificates() -> None:
    assert CATALOG["web_tls"]["policy"] == {"max_age_days": 90, "strategy": "reissue", "lifetime_days": 90, "renew_before_days": None, "key_type": "ecdsa_p256"}
    assert CATALOG["int_ca"]["policy"]["lifetime_days"] == 3650 and CATALOG["int_ca"]["policy"]["max_age_days"] == 3650


def _mutated(path: str, value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(RAW)
    *parents, last = path.split(".")
    node: Any = raw
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[last] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value", "fragments"),
    [
        ("secrets.web_tls.target.ca", "nope", ["secrets.web_tls.target.ca", "'nope' is not a tls_ca entry", "tls_ca entries: int_ca"]),
        ("secrets.web_tls.environments", ["dev", "staging"], ["secrets.web_tls.target.ca", "not in environment(s) staging"]),
        ("secrets.web_tls.target.dns_names", ["bad name!"], ["secrets.web_tls.target.dns_names", "'bad name!' is not a DNS name"]),
        ("secrets.web_tls.target.dns_names", "web.test", ["secrets.web_tls.target.dns_names", "must be a list of strings"]),
        ("secrets.web_tls.target.ip_addresses", ["300.1.1.1"], ["secrets.web_tls.target.ip_addresses", "'300.1.1.1' is not an IP address"]),
        ("secrets.web_tls.target.common_name", "x" * 65, ["secrets.web_tls.target.common_name", "1 to 64 characters"]),
        ("secrets.web_tls.target.role", "app", ["secrets.web_tls.target.role", "allowed for kind tls_cert: ca, common_name"]),
        ("secrets.web_tls.policy", {"length": 32}, ["secrets.web_tls.policy.length", "unknown field for kind tls_cert"]),
        ("secrets.web_tls.policy", {"lifetime_days": 30, "renew_before_days": 30}, ["secrets.web_tls.policy.renew_before_days", "1 to 29"]),
        ("secrets.web_tls.policy", {"key_type": "dsa"}, ["secrets.web_tls.policy.key_type", "'dsa' is not one of ecdsa_p256"]),
        ("secrets.web_tls.policy", {"strategy": "single_user"}, ["secrets.web_tls.policy.strategy", "for kind tls_cert"]),
        ("secrets.int_ca.policy", {"lifetime_days": 4000}, ["secrets.int_ca.policy.lifetime_days", "1 to 3650"]),
        (
            "secrets.app_db",
            {"kind": "postgresql", "policy": {"lifetime_days": 9}},
            ["secrets.app_db.policy.lifetime_days", "unknown field for kind postgresql"],
        ),
        (
            "secrets.int_ca.consumers",
            [{"group": "clients", "service": "client", "env": {"CA_KEY": "private_key"}}],
            ["secrets.int_ca.consumers[0].env.CA_KEY", "a CA's private key never leaves the store"],
        ),
        ("secrets.web_tls.consumers.0.reload_command", "", ["secrets.web_tls.consumers[0].reload_command", "non-empty string"]),
    ],
)
def test_catalog_errors_name_the_entry_and_field(path: str, value: Any, fragments: list[str]) -> None:
    raw = _mutated(path, value)
    if path == "secrets.app_db":
        raw["secrets"]["app_db"].update({"environments": ["dev"], "target": {"group": "db", "role": "a", "database": "d"}})
        raw["secrets"]["app_db"]["consumers"] = [{"group": "app", "service": "app", "env": {"P": "password"}}]
    with pytest.raises(CatalogError) as caught:
        validate_catalog(raw)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_env_plan_delivers_files_and_their_paths() -> None:
    catalog = validate_catalog(copy.deepcopy(RAW))
    (nginx,) = env_plan(catalog, "dev", ["web"])
    assert nginx["bundles"] == [{"name": "nginx.web_tls", "secret": "web_tls", "fields": ["certificate", "chain", "private_key"]}]
    assert nginx["vars"] == [{"name": "TLS_CERT", "path": "nginx.web_tls/certificate.pem"}, {"name": "TLS_KEY", "path": "nginx.web_tls/private_key.pem"}]
    assert nginx["reload_command"] == "nginx -s reload"
    (client,) = env_plan(catalog, "prod", ["clients", "web"])  # web_tls is not in prod
    assert client["bundles"] == [{"name": "client.int_ca", "secret": "int_ca", "fields": ["certificate", "trust_bundle"]}]
    assert secret_fields([nginx, client]) == [
        ("int_ca", "certificate"),
        ("int_ca", "trust_bundle"),
        ("web_tls", "certificate"),
        ("web_tls", "chain"),
        ("web_tls", "private_key"),
    ]
    values = {pair: f"<{pair[0]}.{pair[1]}>" for pair in secret_fields([nginx])}
    text = render_env_file(nginx, values, "dev", dest_dir="/srv/keywarden")
    assert text.splitlines()[-2:] == ["TLS_CERT=/srv/keywarden/nginx.web_tls/certificate.pem", "TLS_KEY=/srv/keywarden/nginx.web_tls/private_key.pem"]
    assert render_bundles([nginx], values) == {
        "nginx.web_tls": {"certificate.pem": "<web_tls.certificate>", "chain.pem": "<web_tls.chain>", "private_key.pem": "<web_tls.private_key>"}
    }
    assert "# web_tls.certificate (tls_cert file path; dev)" in env_template(catalog)


def test_the_report_uses_the_policys_renew_before(ca: dict[str, str]) -> None:
    leaf = _leaf(ca)
    catalog = {"web_tls": {**CATALOG["web_tls"], "policy": {**CATALOG["web_tls"]["policy"], "renew_before_days": 10}}}
    data = {"environment": "dev", "secrets": {"web_tls": new_entry("tls_cert", leaf)}}
    audit = {"state": "missing", "message": "none"}
    assert build("dev", catalog, data, audit, [], time.time() + 77 * DAY)["secrets"][0]["status"] == "expiring"  # 13 d left: not overdue yet
    item = build("dev", catalog, data, audit, [], time.time() + 81 * DAY)["secrets"][0]
    assert item["status"] == "overdue" and "(< 10 d)" in " ".join(item["reasons"])
