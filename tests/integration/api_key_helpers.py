"""Shared helpers of the API-key tests: a throwaway nginx (scripts/demo/nginx), an issuer's HTTP API on loopback
(`Issuer`), catalog entries per provider, and what each place holds (store, consumer .env, the API's answer).

Keys never reach an assertion: the store's keys are compared by fingerprint (SHA-256), the issuer keeps only
digests, and the API's answers are statuses.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from rotation_helpers import read_env, run_playbook, stored

from ansible_collections.keywarden.secrets.plugins.module_utils.api_key import parse_map

REPO = Path(__file__).resolve().parents[2]
NGINX_SCRIPT = REPO / "scripts" / "demo" / "nginx"
ADMIN = "issuer_admin"


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# ---- nginx ---------------------------------------------------------------------------------------------------
class Nginx:
    """A throwaway nginx checking the keys of ``names`` (one map file and the locations /<name>/ and /<name>/slow each)."""

    def __init__(self, names: Iterable[str]) -> None:
        # under /tmp and traversable: nginx's workers (user nobody) read the slow location's file
        self.root = Path(tempfile.mkdtemp(prefix="keywarden-nginx-", dir="/tmp"))
        os.chmod(self.root, 0o755)  # noqa: S103 - nothing secret lives here but the key files (0600 in a 0700 dir)
        started = subprocess.run([str(NGINX_SCRIPT), "start", str(self.root), *names], capture_output=True, text=True, timeout=60, check=False)
        assert started.returncode == 0, f"scripts/demo/nginx start failed:\n{started.stdout}\n{started.stderr}"
        self.vars_file = self.root / "nginx.yml"
        settings = yaml.safe_load(self.vars_file.read_text())
        self.base = settings["keywarden_target_api_key_nginx_url"]
        self.conf = settings["keywarden_target_api_key_nginx_conf"]
        self.pid_file = Path(settings["keywarden_target_api_key_nginx_pid_file"])
        self.keys_dir = Path(settings["keywarden_target_api_key_nginx_keys_dir"])

    def url(self, name: str, slow: bool = False) -> str:
        return f"{self.base}/{name}/" + ("slow" if slow else "")

    def key_ids(self, name: str) -> list[str]:
        """The key ids the secret's key file lists (what nginx accepts after its next reload)."""
        path = self.keys_dir / f"{name}.map"
        return [key_id for _pattern, key_id in parse_map(path.read_text())] if path.exists() else []

    def master(self) -> int:
        return int(self.pid_file.read_text().strip())

    def stop(self) -> None:
        subprocess.run([str(NGINX_SCRIPT), "stop", str(self.root)], capture_output=True, timeout=60, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def status(url: str, key: str | None, header: str = "X-API-Key", scheme: str = "", timeout: float = 10) -> int:
    """What the API answers a GET with this key (no key: no header)."""
    headers = {header: f"{scheme} {key}" if scheme else key} if key is not None else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - a loopback URL of the test
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


# ---- an issuer's HTTP API ------------------------------------------------------------------------------------
@dataclass
class IssuedKey:
    digest: str
    name: str
    active: bool = True


@dataclass
class Issuer:
    """An API-key issuer on loopback, as a SaaS might run one (http.server in a thread):

    - ``POST /v1/keys`` {id, key, name} with ``Authorization: Bearer <admin token>``: 201 created; 200 when that id
      already holds that key and is active; 409 when the id exists otherwise;
    - ``DELETE /v1/keys/<id>`` (admin): 204, or 404 when unknown or revoked already;
    - ``GET /v1/whoami`` with ``X-API-Key: <key>``: 200 for an active key, 401 otherwise.

    It keeps digests only. ``fail`` maps (operation, secret name) to a status it answers instead to create or revoke
    requests of that secret, a number of times; ``on_create`` runs after a key was created (a crash injected there).
    """

    admin_digest: str = ""
    keys: dict[str, IssuedKey] = field(default_factory=dict)
    events: list[tuple[str, str, int]] = field(default_factory=list)  # (operation, key id, status)
    fail: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # (operation, secret) -> (status, how many more times)
    on_create: Callable[[str], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Issuer:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
                pass

            def _answer(self, code: int, body: dict[str, Any] | None = None) -> None:
                data = json.dumps(body or {}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _admin(self) -> bool:
                given = self.headers.get("Authorization", "")
                return bool(issuer.admin_digest) and given.startswith("Bearer ") and digest(given[7:]) == issuer.admin_digest

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                if self.path != "/v1/keys":
                    return self._answer(404)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                code = issuer.create(body) if self._admin() else 401
                self._answer(code)
                if code == 201 and issuer.on_create is not None:
                    issuer.on_create(str(body.get("id")))

            def do_DELETE(self) -> None:  # noqa: N802
                if not self.path.startswith("/v1/keys/"):
                    return self._answer(404)
                self._answer(issuer.revoke(self.path.rsplit("/", 1)[1]) if self._admin() else 401)

            def do_GET(self) -> None:  # noqa: N802
                if self.path != "/v1/whoami":
                    return self._answer(404)
                code, key_id = issuer.whoami(self.headers.get("X-API-Key"))
                self._answer(code, {"id": key_id} if key_id else None)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _fault(self, operation: str, name: str) -> int | None:
        code, times = self.fail.get((operation, name), (0, 0))
        if times <= 0:
            return None
        self.fail[(operation, name)] = (code, times - 1)
        return code

    def create(self, body: dict[str, Any]) -> int:
        key_id, key = str(body.get("id") or ""), str(body.get("key") or "")
        with self.lock:
            code = self._fault("create", str(body.get("name") or ""))
            if code is None:
                if not key_id or len(key) < 16:
                    code = 400
                elif key_id in self.keys:
                    have = self.keys[key_id]
                    code = 200 if have.active and have.digest == digest(key) else 409
                else:
                    self.keys[key_id] = IssuedKey(digest(key), str(body.get("name") or ""))
                    code = 201
            self.events.append(("create", key_id, code))
            return code

    def revoke(self, key_id: str) -> int:
        with self.lock:
            code = self._fault("revoke", self.keys[key_id].name if key_id in self.keys else "")
            if code is None:
                have = self.keys.get(key_id)
                code = 404 if have is None or not have.active else 204
                if code == 204:
                    have.active = False
            self.events.append(("revoke", key_id, code))
            return code

    def whoami(self, key: str | None) -> tuple[int, str | None]:
        with self.lock:
            for key_id, have in self.keys.items():
                if key and have.active and have.digest == digest(key):
                    return 200, key_id
            return 401, None

    def active(self, name: str | None = None) -> set[str]:
        """Ids of the keys that work now (of secret ``name``)."""
        with self.lock:
            return {key_id for key_id, have in self.keys.items() if have.active and (name is None or have.name == name)}

    def kill_run_on_create(self) -> Callable[[int], None]:
        """An ``on_start`` for run_playbook: the run is SIGKILLed (all its processes) right after the issuer created a
        key for it, before the module that asked could report anything. The hook disarms itself when it fires."""

        def arm(pgid: int) -> None:
            def kill(_key_id: str) -> None:
                self.on_create = None
                os.killpg(pgid, signal.SIGKILL)

            self.on_create = kill

        return arm


@contextlib.contextmanager
def started(nginx_names: Iterable[str]) -> Iterator[tuple[Nginx, Issuer]]:
    """A throwaway nginx checking the keys of ``nginx_names``, and an issuer: a test module's two providers."""
    nginx = Nginx(nginx_names)
    try:
        issuer = Issuer().start()
        try:
            yield nginx, issuer
        finally:
            issuer.stop()
    finally:
        nginx.stop()


# ---- catalog entries -----------------------------------------------------------------------------------------
def _consumers(name: str, service: str = "app") -> list[dict[str, Any]]:
    return [{"group": "app", "service": service, "env": {f"{name.upper()}_KEY": "value", f"{name.upper()}_KEY_ID": "key_id"}}]


def nginx_key(name: str, strategy: str = "overlap", overlap_hours: int = 0, header: str = "X-API-Key", service: str = "app") -> dict[str, Any]:
    policy: dict[str, Any] = {"max_age_days": 30, "length": 40, "charset": "urlsafe", "strategy": strategy}
    if strategy == "overlap":
        policy["overlap_hours"] = overlap_hours
    return {
        "kind": "api_key",
        "description": f"test key {name} behind nginx",
        "environments": ["local"],
        "target": {"group": "api", "provider": {"type": "nginx", "header": header, "test_path": f"/{name}/"}},
        "policy": policy,
        "consumers": _consumers(name, service),
    }


def http_key(name: str, issuer: Issuer, overlap_hours: int = 0) -> dict[str, Any]:
    return {
        "kind": "api_key",
        "description": f"test key {name} from the loopback issuer",
        "environments": ["local"],
        "target": {
            "group": "api",
            "provider": {
                "type": "http",
                "base_url": issuer.base_url,
                "admin_token": ADMIN,
                "create": {"path": "/keys"},
                "revoke": {"path": "/keys/{key_id}"},
                "test_path": "/whoami",
            },
        },
        "policy": {"max_age_days": 30, "length": 40, "charset": "alnum", "strategy": "overlap", "overlap_hours": overlap_hours},
        "consumers": _consumers(name),
    }


def admin_entry() -> dict[str, Any]:
    return {
        "kind": "api_key",
        "description": "admin token of the loopback issuer (keywarden is its only user)",
        "environments": ["local"],
        "target": {"provider": {"type": "manual", "steps": "ask the issuer's operators for a new admin token"}},
        "consumers": [],
    }


def manual_key(name: str, steps: str) -> dict[str, Any]:
    return {
        "kind": "api_key",
        "description": f"test key {name} issued by hand",
        "environments": ["local"],
        "target": {"provider": {"type": "manual", "steps": steps}},
        "policy": {"max_age_days": 30, "length": 32, "charset": "alnum"},
        "consumers": _consumers(name),
    }


# ---- workspaces ----------------------------------------------------------------------------------------------
def api_workspace(
    make_workspace: Callable[..., Any], name: str, catalog_data: dict[str, Any], nginx: Nginx | None, groups: tuple[str, ...] = ("api", "app")
) -> Any:
    """A conftest Workspace with this catalog, and the throwaway nginx's settings in its group_vars."""
    ws = make_workspace(name, groups=groups)
    ws.catalog.write_text("---\n" + yaml.safe_dump(catalog_data, sort_keys=False))
    if nginx is not None:
        (ws.inventory / "group_vars" / "all" / "nginx.yml").write_text(nginx.vars_file.read_text())
    return ws


def site(ws: Any, issuer: Issuer | None = None, create: bool = True) -> Any:
    """init (the store made on purpose), the issuer told the admin token init generated, then site.yml."""
    if not (ws.password_dir / "local").exists():
        ws.set_password("local")
    extra = ("-e", "keywarden_store_create=true") if create else ()
    init = run_playbook(ws, "playbooks/init.yml", *extra)
    assert init.returncode == 0, init.explain()
    if issuer is not None and ADMIN in ws.store().read()["secrets"]:
        issuer.admin_digest = digest(stored(ws, ADMIN)["current"]["fields"]["value"])
    result = run_playbook(ws, "playbooks/site.yml")
    assert result.returncode == 0, result.explain()
    return result


def clone_api(make_workspace: Callable[..., Any], template: Any, name: str, nginx: Nginx | None, groups: tuple[str, ...] = ("api", "app")) -> Any:
    """A fresh workspace with copies of the template's catalog, store, vault password and delivered .env files."""
    ws = api_workspace(make_workspace, name, yaml.safe_load(template.catalog.read_text()), nginx, groups)
    ws.clone_store(template, env_dir=True)
    return ws


# ---- where a key lives ---------------------------------------------------------------------------------------
def store_key(ws: Any, name: str, stage: str = "current") -> tuple[str, str] | None:
    """(key id, key) of a stage of the store, or None (compare fingerprints, never print)."""
    staged = stored(ws, name).get(stage)
    if not staged:
        return None
    return staged["fields"].get("key_id", ""), staged["fields"]["value"]


def env_key(ws: Any, name: str, service: str = "app") -> str:
    """The key the consumer holds: <NAME>_KEY of <env_dir>/<service>.env, read afresh."""
    return read_env(ws.env_dir / f"{service}.env")[f"{name.upper()}_KEY"]


def random_key() -> str:
    return secrets.token_urlsafe(30)
