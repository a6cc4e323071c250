"""Helpers of the certificate tests (test_tls_*.py): catalogs of a CA and its certificates, an inventory of several
local hosts, what the store and the delivered files hold (fingerprints, never a key), a real nginx, a throwaway
PostgreSQL whose own ssl_cert_file points at the delivered files, and clients that run TLS handshakes against them.

Certificates and keys are compared by SHA-256 fingerprint; a key is only ever checked against its certificate.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

REPO = Path(__file__).resolve().parents[2]
PG_SCRIPT = REPO / "scripts" / "demo" / "postgres"
_RECAP_RE = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)
# PostgreSQL's SSLRequest: length 8, code 1234.5679
_SSL_REQUEST = struct.pack("!ii", 8, 80877103)


# ---- catalogs -----------------------------------------------------------------------------------------
def ca_entry(consumers: list[dict[str, Any]] | None = None, **policy: Any) -> dict[str, Any]:
    return {
        "kind": "tls_ca",
        "description": "internal CA of the tests",
        "environments": ["local"],
        "target": {"common_name": "keywarden test CA"},
        "policy": policy,
        "consumers": consumers or [{"group": "clients", "service": "client", "env": {"CA_FILE": "trust_bundle"}}],
    }


def cert_entry(service: str, group: str, common_name: str, ca: str = "int_ca", consumer: dict[str, Any] | None = None, **policy: Any) -> dict[str, Any]:
    return {
        "kind": "tls_cert",
        "description": f"certificate of {service}",
        "environments": ["local"],
        "target": {"ca": ca, "common_name": common_name, "dns_names": [common_name, "localhost"], "ip_addresses": ["127.0.0.1"]},
        "policy": policy,
        "consumers": [{"group": group, "service": service, "env": {"TLS_CERT_FILE": "certificate", "TLS_KEY_FILE": "private_key"}, **(consumer or {})}],
    }


def write_catalog(ws: Any, secrets: dict[str, dict[str, Any]]) -> None:
    ws.catalog.write_text("---\n" + yaml.safe_dump({"keywarden_catalog_version": 1, "secrets": secrets}, sort_keys=False))


def write_hosts(ws: Any, hosts: dict[str, dict[str, Any]], groups: dict[str, list[str]]) -> None:
    """An inventory of local hosts (each with its own variables, e.g. keywarden_env_dir) in these groups."""
    local = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
    inventory = {
        "all": {
            "hosts": {name: {**local, **variables} for name, variables in hosts.items()},
            "children": {group: {"hosts": dict.fromkeys(members)} for group, members in groups.items()},
        }
    }
    (ws.inventory / "hosts.yml").write_text("---\n" + yaml.safe_dump(inventory, sort_keys=False))


def recap(output: str) -> dict[str, dict[str, int]]:
    """Per host: ok, changed, unreachable, failed of the play recap."""
    return {m[1]: dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m.groups()[1:]), strict=True)) for m in _RECAP_RE.finditer(output)}


# ---- certificates: fingerprints and checks (no key is ever shown) ------------------------------------------
def certs(pem: str | bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem.encode() if isinstance(pem, str) else pem)


def fingerprint(pem_or_der: str | bytes) -> str:
    """SHA-256 of the DER of a certificate (the first of a PEM text, or DER bytes as a TLS peer sends them)."""
    if isinstance(pem_or_der, bytes) and not pem_or_der.startswith(b"-----"):
        return hashlib.sha256(pem_or_der).hexdigest()
    return hashlib.sha256(certs(pem_or_der)[0].public_bytes(Encoding.DER)).hexdigest()


def not_after(pem: str) -> float:
    return certs(pem)[0].not_valid_after_utc.timestamp()


def key_matches(key_pem: str | bytes, cert_pem: str | bytes) -> bool:
    key = load_pem_private_key(key_pem.encode() if isinstance(key_pem, str) else key_pem, password=None)
    spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return bool(key.public_key().public_bytes(*spki) == certs(cert_pem)[0].public_key().public_bytes(*spki))


def stored_fields(ws: Any, name: str, stage: str = "current") -> dict[str, str]:
    """The fields of a secret at a stage (read, never printed)."""
    staged = ws.store().read()["secrets"][name].get(stage) or {}
    return dict(staged.get("fields") or {})


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


# ---- nginx ---------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Nginx:
    """A real nginx on a free loopback port serving TLS from the delivered files (master as this user, daemon off)."""

    def __init__(self, root: Path, cert_file: str, key_file: str) -> None:
        self.root = root
        self.port = free_port()
        scratch = root / "scratch"
        scratch.mkdir(parents=True, exist_ok=True)
        self.conf = root / "nginx.conf"
        temp = " ".join(f"{what}_temp_path {scratch / what};" for what in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        self.conf.write_text(
            f"""worker_processes 2;
pid {root}/nginx.pid;
error_log {root}/error.log notice;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    {temp}
    server {{
        listen 127.0.0.1:{self.port} ssl;
        ssl_certificate {cert_file};
        ssl_certificate_key {key_file};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""
        )
        self.base = ["nginx", "-p", str(root), "-e", str(root / "error.log"), "-c", str(self.conf)]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def reload_command(self) -> str:
        return " ".join([*self.base, "-s", "reload"])

    def start(self) -> None:
        self.proc = subprocess.Popen([*self.base, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.1)
        raise AssertionError(f"nginx did not listen on {self.port}: {(self.root / 'error.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)


# ---- PostgreSQL with its own ssl_cert_file ----------------------------------------------------------------
def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    assert found, "PostgreSQL server binaries are not installed (/usr/lib/postgresql/*/bin)"
    return found[-1]


class Postgres:
    """A throwaway PostgreSQL (scripts/demo/postgres) in a traversable /tmp directory: TLS on its TCP port."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="keywarden-tls-pg-", dir="/tmp"))
        os.chmod(self.root, 0o755)  # noqa: S103 - the postgres user must traverse it; nothing secret lives here
        started = subprocess.run([str(PG_SCRIPT), "start", str(self.root)], capture_output=True, text=True, timeout=180, check=False)
        assert started.returncode == 0, f"scripts/demo/postgres start failed:\n{started.stdout}\n{started.stderr}"
        settings = yaml.safe_load((self.root / "postgres.yml").read_text())
        self.port = int(settings["keywarden_target_postgresql_port"])
        self.socket_dir = settings["keywarden_target_postgresql_login_unix_socket"]

    @property
    def reload_command(self) -> str:
        """The consumer's graceful reload: SELECT pg_reload_conf() through the socket (trust)."""
        return f"{_pg_bin('psql')} -h {self.socket_dir} -p {self.port} -U postgres -d postgres -Atqc 'SELECT pg_reload_conf()'"

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        conn = psycopg2.connect(host=self.socket_dir, port=self.port, user="postgres", dbname="postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def use_certificate(self, cert_file: str, key_file: str) -> None:
        """Point the server's own ssl_cert_file/ssl_key_file at the delivered files and reload; fail on a bad setting."""
        self.query(f"ALTER SYSTEM SET ssl_cert_file = '{cert_file}'")
        self.query(f"ALTER SYSTEM SET ssl_key_file = '{key_file}'")
        self.query("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.query("SHOW ssl_cert_file") == [(cert_file,)]:
                errors = self.query("SELECT name, error FROM pg_file_settings WHERE error IS NOT NULL")
                assert not errors, f"PostgreSQL refused the settings: {errors}"
                return
            time.sleep(0.2)
        raise AssertionError("PostgreSQL did not take the new ssl_cert_file")

    def stop(self) -> None:
        subprocess.run([str(PG_SCRIPT), "stop", str(self.root)], capture_output=True, timeout=120, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


# ---- TLS handshakes --------------------------------------------------------------------------------------
def handshake(port: int, server_name: str, trust: bytes | None, postgres: bool = False, timeout: float = 5.0) -> str:
    """One full TLS handshake on a new TCP connection (PostgreSQL: after its SSLRequest), verifying the server's chain
    against ``trust`` (PEM) and its name; returns the SHA-256 fingerprint of the certificate it presented."""
    context = _context(trust)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        if postgres:
            sock.sendall(_SSL_REQUEST)
            if sock.recv(1) != b"S":
                raise ssl.SSLError("the server does not offer TLS")
        with context.wrap_socket(sock, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return fingerprint(der)


_CONTEXTS: dict[bytes | None, ssl.SSLContext] = {}
_CONTEXTS_LOCK = threading.Lock()


def _context(trust: bytes | None) -> ssl.SSLContext:
    with _CONTEXTS_LOCK:
        if trust not in _CONTEXTS:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            if trust is None:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            else:
                context.load_verify_locations(cadata=trust.decode())
            _CONTEXTS[trust] = context
        return _CONTEXTS[trust]


@dataclass
class Load:
    """Clients running handshakes in a loop against one server until stopped: each a new connection, verifying the
    chain against the trust file the client's .env names (read afresh each time: a client that follows its bundle)."""

    label: str
    port: int
    server_name: str
    trust_file: Path
    postgres: bool = False
    threads: int = 2
    done: list[tuple[float, str]] = field(default_factory=list)
    failed: list[tuple[float, str]] = field(default_factory=list)
    started: float = 0.0
    stopped: float = 0.0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _loop(self) -> None:
        while not self._stop.is_set():
            at = time.monotonic()
            try:
                seen = handshake(self.port, self.server_name, self.trust_file.read_bytes(), self.postgres)
            except (OSError, ssl.SSLError, AssertionError) as exc:
                with self._lock:
                    self.failed.append((at, f"{type(exc).__name__}: {str(exc)[:200]}"))
                continue
            with self._lock:
                self.done.append((at, seen))

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        self._workers = [threading.Thread(target=self._loop, name=f"{self.label}-{i}", daemon=True) for i in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)
        self.stopped = time.monotonic()

    @property
    def rate(self) -> float:
        return len(self.done) / max(1e-6, self.stopped - self.started)

    def seen(self) -> list[str]:
        """The distinct certificates served, in the order they first appeared."""
        return list(dict.fromkeys(fp for _at, fp in sorted(self.done)))

    def summary(self) -> str:
        seconds = self.stopped - self.started
        return f"{self.label}: {len(self.done)} handshakes in {seconds:.1f}s ({self.rate:.0f}/s), {len(self.failed)} failed {self.failed[:3]}"


@contextlib.contextmanager
def loads(*items: Load) -> Iterator[tuple[Load, ...]]:
    with contextlib.ExitStack() as stack:
        yield tuple(stack.enter_context(item) for item in items)


def tls_check(port: int, cert_file: str, server_name: str, postgres: bool = False) -> str:
    """A consumer's health check (catalog `health_check`): the server presents the certificate of the delivered file
    (after a reload: the new one). openssl only, as docs/security/secrets/certificates.md shows it."""
    starttls = "-starttls postgres " if postgres else ""
    served = f"openssl s_client {starttls}-connect 127.0.0.1:{port} -servername {server_name} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
    return f"bash -c 'cmp -s <({served}) <(openssl x509 -in {cert_file} -noout -fingerprint -sha256)'"
