"""Certificate renewal and CA rotation under load, against a real nginx and a real PostgreSQL: zero failed handshakes.

One CA (`int_ca`, kind tls_ca) issues two certificates (kind tls_cert): `web_tls` for an nginx (`nginx -s reload`)
and `pg_tls` for a PostgreSQL whose own ssl_cert_file/ssl_key_file point at the delivered files (`SELECT
pg_reload_conf()`). Clients get the CA's trust bundle through their .env (`CA_FILE`). While clients run full TLS
handshakes in a loop (a new connection each, the chain and the name verified against the bundle the client's .env
names, read afresh each time), playbooks/rotate.yml renews both certificates: every handshake must succeed, at 50/s or
more against each server, and the new certificates must be served after the reloads (fingerprints compared).

Then the CA itself rotates: its consumers get a trust bundle with the new and the old CA, the next plain run finds
every certificate of the CA due (issued by a CA that is no longer current) and reissues it; through both runs no
handshake fails, and at the end the servers present certificates that only the new CA verifies.
"""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from tls_helpers import (
    Load,
    Nginx,
    Postgres,
    ca_entry,
    cert_entry,
    certs,
    fingerprint,
    handshake,
    key_matches,
    loads,
    not_after,
    read_env,
    stored_fields,
    tls_check,
    write_catalog,
    write_hosts,
)

MIN_RATE = 50.0


@dataclass
class Stack:
    ws: Any
    nginx: Nginx
    pg: Postgres
    web_dir: Path
    pg_dir: Path

    @property
    def trust_file(self) -> Path:
        """The trust bundle the client's .env names (a path: the file behind it changes on delivery)."""
        return Path(read_env(self.web_dir / "client.env")["CA_FILE"])

    def served(self, trust: bytes | None = None) -> tuple[str, str]:
        """What nginx and PostgreSQL present now (fingerprints), verified against ``trust`` when given."""
        return handshake(self.nginx.port, "web.test", trust), handshake(self.pg.port, "pg.test", trust, postgres=True)

    def loads(self) -> tuple[Load, Load]:
        return (
            Load("nginx", self.nginx.port, "web.test", self.trust_file),
            Load("postgresql", self.pg.port, "pg.test", self.trust_file, postgres=True),
        )


@pytest.fixture(scope="module")
def stack(make_workspace: Callable[..., Any]) -> Iterator[Stack]:
    pg = Postgres()
    # under /tmp and traversable: the postgres user reads its key there
    root = Path(tempfile.mkdtemp(prefix="keywarden-tls-load-", dir="/tmp"))
    root.chmod(0o755)
    web_dir, pg_dir = root / "web", root / "pg"
    nginx = Nginx(root / "nginx", f"{web_dir}/nginx.web_tls/certificate.pem", f"{web_dir}/nginx.web_tls/private_key.pem")
    ws = make_workspace("tls-load")
    secrets = {
        "int_ca": ca_entry(),
        "web_tls": cert_entry(
            "nginx",
            "web",
            "web.test",
            consumer={"reload_command": nginx.reload_command, "health_check": tls_check(nginx.port, f"{web_dir}/nginx.web_tls/certificate.pem", "web.test")},
        ),
        "pg_tls": cert_entry(
            "postgres",
            "pgsrv",
            "pg.test",
            consumer={
                "reload_command": pg.reload_command,
                "health_check": tls_check(pg.port, f"{pg_dir}/postgres.pg_tls/certificate.pem", "pg.test", postgres=True),
            },
        ),
    }
    write_catalog(ws, secrets)
    managed = {"keywarden_env_manage_services": True, "keywarden_env_health_retries": 10, "keywarden_env_health_delay": 1}
    write_hosts(
        ws,
        {
            "web1": {"keywarden_env_dir": str(web_dir), **managed},
            # PostgreSQL reads its key only when the postgres user owns it (mode 0600)
            "pg1": {"keywarden_env_dir": str(pg_dir), "keywarden_env_owner": "postgres", "keywarden_env_group": "postgres", **managed},
        },
        {"web": ["web1"], "clients": ["web1"], "pgsrv": ["pg1"]},
    )
    ws.set_password("local")
    try:
        # the first delivery: the servers are started on the files afterwards (nothing to reload yet)
        first = ws.run("playbooks/site.yml", "-e", "keywarden_store_create=true", "-e", "keywarden_env_manage_services=false")
        assert first.returncode == 0, first.explain()
        nginx.start()
        pg.use_certificate(f"{pg_dir}/postgres.pg_tls/certificate.pem", f"{pg_dir}/postgres.pg_tls/private_key.pem")
        yield Stack(ws, nginx, pg, web_dir, pg_dir)
    finally:
        nginx.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def _assert_no_failed_handshake(case: str, *items: Load) -> None:
    lines = [f"{case}: {load.summary()}" for load in items]
    print("\n".join(lines))  # noqa: T201 - the figures, for `pytest -s`
    results = os.environ.get("KEYWARDEN_RESULTS_DIR")
    if results:  # make test keeps them with the other results
        with open(os.path.join(results, "tls-load.txt"), "a", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
    for load in items:
        assert not load.failed, load.summary()
        assert load.rate >= MIN_RATE, load.summary()


def test_the_servers_present_the_delivered_certificates(stack: Stack) -> None:
    web, pg = stack.served(stack.trust_file.read_bytes())
    assert web == fingerprint(stored_fields(stack.ws, "web_tls")["certificate"])
    assert pg == fingerprint(stored_fields(stack.ws, "pg_tls")["certificate"])
    # the key PostgreSQL reads is 0600 and the postgres user's, as it demands
    key = (stack.pg_dir / "postgres.pg_tls" / "private_key.pem").resolve()
    assert (key.stat().st_mode & 0o777, key.owner()) == (0o600, "postgres")


def test_renewal_under_load_fails_no_handshake(stack: Stack) -> None:
    ws = stack.ws
    before = {name: stored_fields(ws, name)["certificate"] for name in ("web_tls", "pg_tls")}
    with loads(*stack.loads()) as (web, pg):
        time.sleep(2)
        run = ws.run("playbooks/rotate.yml", "-e", "keywarden_rotate_only=web_tls,pg_tls")
        time.sleep(2)
    assert run.returncode == 0, run.explain()
    assert "Reload consumers whose certificate files changed" in run.output
    _assert_no_failed_handshake("renewal", web, pg)
    after = {name: stored_fields(ws, name) for name in ("web_tls", "pg_tls")}
    for name, load in (("web_tls", web), ("pg_tls", pg)):
        old, new = fingerprint(before[name]), fingerprint(after[name]["certificate"])
        assert old != new
        # the old certificate until the reload, the new one after it: nothing else, and no way back
        assert load.seen() == [old, new], load.summary()
        assert not_after(after[name]["certificate"]) >= not_after(before[name])
        assert key_matches(after[name]["private_key"], after[name]["certificate"])
    # what the servers present now is the store's current certificate, verified against the clients' bundle
    assert stack.served(stack.trust_file.read_bytes()) == (fingerprint(after["web_tls"]["certificate"]), fingerprint(after["pg_tls"]["certificate"]))


def test_ca_rotation_with_an_overlapping_trust_bundle(stack: Stack) -> None:
    ws = stack.ws
    old_ca = stored_fields(ws, "int_ca")["certificate"]
    old_leaves = {name: stored_fields(ws, name)["certificate"] for name in ("web_tls", "pg_tls")}
    with loads(*stack.loads()) as (web, pg):
        time.sleep(1)
        rotated_ca = ws.run("playbooks/rotate.yml", "-e", "keywarden_rotate_only=int_ca")
        assert rotated_ca.returncode == 0, rotated_ca.explain()
        new_ca = stored_fields(ws, "int_ca")["certificate"]
        bundle = stack.trust_file.read_bytes()
        # the clients' bundle: the new CA, then the old one, which still verifies what the servers present
        assert [fingerprint(c.public_bytes(Encoding.DER)) for c in certs(bundle)] == [fingerprint(new_ca), fingerprint(old_ca)]
        # without the overlap a client that trusts only the new CA would fail now: the servers still present the old CA's certificates
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(stack.nginx.port, "web.test", new_ca.encode())
        time.sleep(1)
        # a plain scheduled run: every certificate of the CA is due (issued by a CA that is no longer current)
        reissued = ws.run("playbooks/rotate.yml")
        time.sleep(1)
    assert reissued.returncode == 0, reissued.explain()
    for name in ("web_tls", "pg_tls"):
        assert reissued.error_line(f"rotating {name} (tls_cert, reissue): due"), reissued.explain()
    _assert_no_failed_handshake("CA rotation", web, pg)
    for name, load in (("web_tls", web), ("pg_tls", pg)):
        current = stored_fields(ws, name)
        assert fingerprint(current["chain"]) == fingerprint(new_ca)
        assert load.seen() == [fingerprint(old_leaves[name]), fingerprint(current["certificate"])], load.summary()
    # the servers' certificates now verify against the new CA alone, and no longer against the old one alone
    assert stack.served(new_ca.encode()) == (fingerprint(stored_fields(ws, "web_tls")["certificate"]), fingerprint(stored_fields(ws, "pg_tls")["certificate"]))
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(stack.nginx.port, "web.test", old_ca.encode())
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(stack.pg.port, "pg.test", old_ca.encode(), postgres=True)
