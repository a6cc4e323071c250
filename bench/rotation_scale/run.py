#!/usr/bin/env python3
"""Rotation at scale: S PostgreSQL (or MariaDB) credentials consumed on N local hosts, timed against a no-op play.

    python bench/rotation_scale/run.py [--kind postgresql|mariadb|tls_cert] [--secrets 50] [--hosts 10] [--repeat 3] [--label NAME]
                                       [--repo PATH] [--ansible-arg ARG]... [--rotate-arg ARG]... [--env K=V]...

What it does (all in a temp dir; nothing of the repository's inventories or stores is touched):

1. starts a throwaway PostgreSQL (scripts/demo/postgres; --kind mariadb: MariaDB, scripts/demo/mariadb) and
   creates the database `bench`; --kind tls_cert starts no server: the secrets are certificates (kind tls_cert)
   issued by one CA `bench_ca` (kind tls_ca), delivered as files (BNN_CERT, BNN_KEY: their paths);
2. writes an inventory of N local hosts host01..hostNN (ansible_connection local, each with its own
   keywarden_env_dir <tmp>/srv/<host>, services not managed) spread over G consumer groups `grpK`
   (N/G hosts each), plus `dbhost` (a second local alias) alone in group `db`; a catalog of S
   PostgreSQL secrets `bench_sNN` (alternating_users, role `bench_rNN`, database `bench`), secret i
   consumed by the i-th of the G*(G-1)/2 pairs of groups (service `svcK` of group grpK gets
   BNN_USER/_PASSWORD/_NAME); a vault password for the environment `bench`;
3. setup, untimed: playbooks/site.yml (init + provision + deploy);
4. timed, interleaved in one run (the order rotates each repetition), R times each:
   noop   one play on all hosts, gather_facts false, one ansible.builtin.ping task;
   rotS   playbooks/rotate.yml -e keywarden_rotate_only=<all S names>;
   rotH   the same with the first H = S/2 names;
   each rotation is verified: every rotated name's current version advanced by one, no pending left,
   nothing else moved; sample consumers' .env files hold the store's current login (SHA-256 compare)
   and that login gets in over TCP (scram-sha-256). No value is printed;
5. every timed run (noop too, so both sides carry the same cost) has ansible.posix.profile_tasks
   enabled: one timestamp line per task, no measurable overhead next to a task's seconds. The report shows
   the top tasks of the S-secret rotation whose time is the median, summed by task name across serial
   batches and includes (--no-profile turns the callback off);
6. writes results/<stamp>-<label>.json and .md: every sample (wall and CPU time: user + sys of
   ansible-playbook and all it ran), medians, the ratio rotS / noop and the marginal cost
   (rotS - rotH) / (S - H) as medians of the per-repetition values, load average, machine, versions,
   and the per-task profile difference rotS - rotH (where the marginal cost goes).
   --render FILE.json only rewrites the .md beside a results file.

--repo runs the playbooks of another checkout (a scratch copy with a trial change); --ansible-arg is
passed to every timed run (noop too, e.g. `-f 10`); --rotate-arg only to the rotations (e.g.
`-e keywarden_rotate_serial=4`); --env sets variables for every run (e.g. ANSIBLE_PIPELINING=1).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import itertools
import json
import os
import platform
import re
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg2
import pymysql
import yaml
from ansible.parsing.vault import VaultSecret
from ansible.release import __version__ as ANSIBLE_VERSION

HERE = Path(__file__).resolve().parent
DEFAULT_REPO = HERE.parents[1]
ENVIRONMENT = "bench"
DATABASE = "bench"
_PROFILE_LINE = re.compile(r"^(?P<name>.+?) -+ +(?P<secs>\d+\.\d\d)s$")


# ---- layout ---------------------------------------------------------------------------------------
def host_names(n: int) -> list[str]:
    return [f"host{i:02d}" for i in range(1, n + 1)]


def group_hosts(hosts: list[str], groups: int) -> dict[str, list[str]]:
    """Consecutive slices of the hosts: grp1 = host01..host02, grp2 = host03..host04, ..."""
    per = max(1, len(hosts) // groups)
    out = {f"grp{k + 1}": hosts[k * per : (k + 1) * per] for k in range(groups)}
    out[f"grp{groups}"] = hosts[(groups - 1) * per :]  # any remainder goes to the last group
    return out


def secret_names(s: int) -> list[str]:
    return [f"bench_s{i:02d}" for i in range(s)]


def consumer_pairs(groups: list[str]) -> list[tuple[str, str]]:
    return list(itertools.combinations(groups, 2)) if len(groups) > 1 else [(groups[0], groups[0])]


KIND_NAMES = {"postgresql": "PostgreSQL", "mariadb": "MariaDB", "redis": "Redis", "rabbitmq": "RabbitMQ", "tls_cert": "TLS certificate"}
STRATEGY = {
    "postgresql": "alternating_users",
    "mariadb": "alternating_users",
    "redis": "dual_password",
    "rabbitmq": "alternating_users",
    "tls_cert": "reissue",
}
CA = "bench_ca"
# the field a consumer's <prefix>_NAME holds (Redis has none)
NAME_FIELD = {"postgresql": "database", "mariadb": "database", "rabbitmq": "vhost"}
ADMIN = "bench_admin"  # Redis and RabbitMQ: the admin login the drivers read from the store (not rotated)


def _target(kind: str, i: int) -> dict[str, Any]:
    if kind == "redis":
        return {"group": "db", "username": f"bench_r{i:02d}", "admin": ADMIN}
    if kind == "rabbitmq":
        return {"group": "db", "role": f"bench_r{i:02d}", "vhost": DATABASE, "admin": ADMIN}
    return {"group": "db", "database": DATABASE, "role": f"bench_r{i:02d}"}


def _admin_entry(kind: str) -> dict[str, Any]:
    target = {"group": "db", "username": "kwbench", "acl": "~* &* +@all"} if kind == "redis" else {"group": "db", "role": "kwbench", "tags": ["administrator"]}
    return {
        "kind": kind,
        "description": "the admin login of the bench server",
        "environments": [ENVIRONMENT],
        "target": target,
        "policy": {"max_age_days": 3650, "length": 32, "charset": "alnum", "strategy": STRATEGY[kind]},
        "consumers": [{"group": "db", "service": "admin", "env": {"ADMIN_USER": "username", "ADMIN_PASSWORD": "password"}}],
    }


def make_catalog(names: list[str], groups: list[str], kind: str = "postgresql") -> dict[str, Any]:
    if kind == "tls_cert":
        return make_tls_catalog(names, groups)
    pairs = consumer_pairs(groups)
    out: dict[str, Any] = {}
    for i, name in enumerate(names):
        prefix = f"B{i:02d}"
        env = {f"{prefix}_USER": "username", f"{prefix}_PASSWORD": "password"}
        if kind in NAME_FIELD:
            env[f"{prefix}_NAME"] = NAME_FIELD[kind]
        consumers = [{"group": g, "service": f"svc{g[3:]}", "env": dict(env)} for g in dict.fromkeys(pairs[i % len(pairs)])]
        out[name] = {
            "kind": kind,
            "description": f"bench login {i}",
            "environments": [ENVIRONMENT],
            "target": _target(kind, i),
            "policy": {"max_age_days": 3650, "length": 32, "charset": "alnum", "strategy": STRATEGY[kind]},
            "consumers": consumers,
        }
    if kind in ("redis", "rabbitmq"):
        out[ADMIN] = _admin_entry(kind)
    return {"keywarden_catalog_version": 1, "secrets": out}


def make_tls_catalog(names: list[str], groups: list[str]) -> dict[str, Any]:
    """A CA (its trust bundle to svc1) and one certificate per name, laid out over the groups as the logins are."""
    pairs = consumer_pairs(groups)
    out: dict[str, Any] = {
        CA: {
            "kind": "tls_ca",
            "description": "bench CA",
            "environments": [ENVIRONMENT],
            "target": {"common_name": "keywarden bench CA"},
            "consumers": [{"group": groups[0], "service": f"svc{groups[0][3:]}", "env": {"BENCH_CA": "trust_bundle"}}],
        }
    }
    for i, name in enumerate(names):
        prefix = f"B{i:02d}"
        out[name] = {
            "kind": "tls_cert",
            "description": f"bench certificate {i}",
            "environments": [ENVIRONMENT],
            "target": {"ca": CA, "common_name": f"s{i:02d}.bench.test", "ip_addresses": ["127.0.0.1"]},
            "consumers": [
                {"group": g, "service": f"svc{g[3:]}", "env": {f"{prefix}_CERT": "certificate", f"{prefix}_KEY": "private_key"}}
                for g in dict.fromkeys(pairs[i % len(pairs)])
            ],
        }
    return {"keywarden_catalog_version": 1, "secrets": out}


def certificate_fingerprint(pem: str) -> str:
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives.serialization import Encoding  # noqa: PLC0415

    return hashlib.sha256(x509.load_pem_x509_certificates(pem.encode())[0].public_bytes(Encoding.DER)).hexdigest()


def key_fits(key_pem: str, cert_pem: str) -> bool:
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key  # noqa: PLC0415

    spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    key = load_pem_private_key(key_pem.encode(), password=None).public_key().public_bytes(*spki)
    return bool(key == x509.load_pem_x509_certificates(cert_pem.encode())[0].public_key().public_bytes(*spki))


# ---- the target server ------------------------------------------------------------------------------
class Server:
    """The throwaway database server of a run: scripts/demo/<kind> start DIR writes DIR/<kind>.yml (group_vars)."""

    SCRIPT = {"postgresql": "postgres", "mariadb": "mariadb", "redis": "redis", "rabbitmq": "rabbitmq", "tls_cert": ""}

    def __init__(self, kind: str, repo: Path, root: Path) -> None:
        self.kind = kind
        self.script = repo / "scripts" / "demo" / self.SCRIPT[kind]
        self.dir = root / "db"
        self.vars_file = self.dir / f"{self.SCRIPT[kind]}.yml"
        self.vars: dict[str, Any] = {}

    def start(self) -> None:
        if self.kind == "tls_cert":
            return  # certificates have no target server
        self.dir.mkdir()
        os.chmod(self.dir, 0o755)  # noqa: S103 - the server's user must traverse it
        extra = [DATABASE] if self.kind == "rabbitmq" else []  # the node's virtual host
        proc = subprocess.run([str(self.script), "start", str(self.dir), *extra], capture_output=True, text=True, timeout=240, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"{self.script} start failed:\n{proc.stdout}\n{proc.stderr}")
        self.vars = yaml.safe_load(self.vars_file.read_text())
        if self.kind in ("redis", "rabbitmq"):
            return  # users only: nothing to create
        if self.kind == "postgresql":
            socket_dir, port = self.vars["keywarden_target_postgresql_login_unix_socket"], self.vars["keywarden_target_postgresql_port"]
            conn = psycopg2.connect(host=socket_dir, port=port, user="postgres", dbname="postgres")
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                if not cur.fetchone():
                    cur.execute(f"CREATE DATABASE {DATABASE}")
        else:
            conn = pymysql.connect(
                unix_socket=self.vars["keywarden_target_mariadb_login_unix_socket"], user=self.vars["keywarden_target_mariadb_login_user"], autocommit=True
            )
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
        conn.close()

    def stop(self) -> None:
        if self.dir.exists():
            subprocess.run([str(self.script), "stop", str(self.dir)], capture_output=True, timeout=120, check=False)

    def login(self, user: str, password: str) -> str | None:
        """The account a TCP login with these credentials gets on database `bench`, or None when refused."""
        if self.kind == "redis":
            import redis  # noqa: PLC0415 - only this kind needs it

            client = redis.Redis(host="127.0.0.1", port=self.vars["keywarden_target_redis_port"], username=user, password=password, socket_timeout=5)
            try:
                return user if client.ping() else None
            except redis.RedisError:
                return None
            finally:
                client.close()
        if self.kind == "rabbitmq":
            import pika  # noqa: PLC0415 - only this kind needs it

            params = pika.ConnectionParameters(
                host="127.0.0.1", port=self.vars["keywarden_target_rabbitmq_port"], virtual_host=DATABASE, credentials=pika.PlainCredentials(user, password)
            )
            try:
                pika.BlockingConnection(params).close()
            except pika.exceptions.AMQPError:
                return None
            return user
        try:
            if self.kind == "postgresql":
                conn = psycopg2.connect(
                    host="127.0.0.1", port=self.vars["keywarden_target_postgresql_port"], user=user, password=password, dbname=DATABASE, connect_timeout=5
                )
                query = "SELECT current_user"
            else:
                conn = pymysql.connect(
                    host="127.0.0.1", port=self.vars["keywarden_target_mariadb_port"], user=user, password=password, database=DATABASE, connect_timeout=5
                )
                query = "SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1)"
        except (psycopg2.OperationalError, pymysql.err.OperationalError):
            return None
        try:
            with conn.cursor() as cur:
                cur.execute(query)
                return str(cur.fetchone()[0])
        finally:
            conn.close()


# ---- the workspace ----------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.repo = Path(args.repo).resolve()
        self.root = Path(tempfile.mkdtemp(prefix="kw-rotation-scale-", dir="/tmp"))
        os.chmod(self.root, 0o755)  # noqa: S103 - the server's user must traverse it; values live only in the vault file
        self.server = Server(args.kind, self.repo, self.root)
        self.inventory = self.root / "inventory"
        self.store_dir = self.root / "store"
        self.env_dir = self.root / "srv"
        self.password_dir = self.root / "vault-pass"
        self.catalog_path = self.root / "catalog.yml"
        self.logs = self.root / "logs"
        self.hosts = host_names(args.hosts)
        self.groups = group_hosts(self.hosts, args.groups)
        self.names = secret_names(args.secrets)
        self.catalog = make_catalog(self.names, list(self.groups), args.kind)
        self.run_count = 0
        self.last_cpu = 0.0

    def write(self) -> None:
        for d in (self.inventory / "group_vars" / "all", self.inventory / "group_vars" / "db", self.logs, self.root / "playbooks"):
            d.mkdir(parents=True, exist_ok=True)
        local = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
        inventory = {
            "all": {
                "hosts": {**{h: dict(local) for h in self.hosts}, "dbhost": dict(local)},
                "children": {"db": {"hosts": {"dbhost": None}}, **{g: {"hosts": dict.fromkeys(hs)} for g, hs in self.groups.items()}},
            }
        }
        (self.inventory / "hosts.yml").write_text("---\n" + yaml.safe_dump(inventory, sort_keys=False))
        group_vars = {
            "keywarden_environment": ENVIRONMENT,
            "keywarden_store_dir": str(self.store_dir),
            "keywarden_catalog_path": str(self.catalog_path),
            "keywarden_env_dir": f"{self.env_dir}/{{{{ inventory_hostname }}}}",
            # empty: the account the play runs as (keywarden_env needs no facts)
            "keywarden_env_owner": "",
            "keywarden_env_group": "",
            "keywarden_env_dir_owner": "",
            "keywarden_env_manage_services": False,
        }
        (self.inventory / "group_vars" / "all" / "keywarden.yml").write_text("---\n" + yaml.safe_dump(group_vars, sort_keys=False))
        if self.server.vars_file.is_file():
            (self.inventory / "group_vars" / "db" / self.server.vars_file.name).write_text(self.server.vars_file.read_text())
        self.catalog_path.write_text("---\n" + yaml.safe_dump(self.catalog, sort_keys=False))
        self.password_dir.mkdir(mode=0o700)
        fd = os.open(self.password_dir / ENVIRONMENT, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(24) + "\n")
        noop = [{"name": "No-op", "hosts": "all", "gather_facts": False, "tasks": [{"name": "Ping", "ansible.builtin.ping": None}]}]
        (self.root / "playbooks" / "noop.yml").write_text("---\n" + yaml.safe_dump(noop, sort_keys=False))

    # -- running
    def playbook(self, label: str, playbook: Path, *extra: str, env_extra: dict[str, str] | None = None, timed: bool = True) -> tuple[float, str]:
        """Run one playbook; returns wall seconds and output. self.last_cpu: CPU seconds (user + sys) of ansible-playbook,
        its workers and the modules they ran (RUSAGE_CHILDREN delta: every descendant is reaped), not of PostgreSQL."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "KEYWARDEN_"))}
        env.update(
            ANSIBLE_CONFIG=str(self.repo / "ansible.cfg"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
            KEYWARDEN_VAULT_PASSWORD_DIR=str(self.password_dir),
            PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        env.update(dict(kv.split("=", 1) for kv in self.args.env))
        if timed and not self.args.no_profile:
            env.update(ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks", PROFILE_TASKS_TASK_OUTPUT_LIMIT="all", PROFILE_TASKS_SORT_ORDER="none")
        env.update(env_extra or {})
        tool = Path(sys.executable).parent / "ansible-playbook"
        argv = [str(tool) if tool.exists() else "ansible-playbook", "-i", str(self.inventory), str(playbook)]
        argv += ["--vault-id", f"{ENVIRONMENT}@{self.repo / 'scripts/secrets/vault-password-client'}"]
        argv += [*(self.args.ansible_arg if timed else []), *extra]
        self.run_count += 1
        log = self.logs / f"{self.run_count:03d}-{label}.log"
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        with log.open("w") as out:
            proc = subprocess.run(argv, cwd=self.repo, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=1800, check=False)
        seconds = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.last_cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
        output = log.read_text()
        if proc.returncode != 0:
            raise SystemExit(f"{label}: ansible-playbook -> rc {proc.returncode} after {seconds:.1f}s\n" + self.redact(output)[-4000:])
        return seconds, output

    def rotate(self, label: str, names: list[str], env_extra: dict[str, str] | None = None) -> tuple[float, str]:
        only = ",".join(names)
        return self.playbook(label, self.repo / "playbooks/rotate.yml", "-e", f"keywarden_rotate_only={only}", *self.args.rotate_arg, env_extra=env_extra)

    # -- the store, read directly (never printed)
    def store_data(self) -> dict[str, Any]:
        # the installed package's Store: the store format is the same in every checkout this bench measures
        from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import Store  # noqa: PLC0415

        password = (self.password_dir / ENVIRONMENT).read_text().strip()
        return Store(str(self.store_dir), ENVIRONMENT, [(ENVIRONMENT, VaultSecret(password.encode()))]).read()

    def versions(self) -> dict[str, int]:
        return {n: e["current"]["version"] for n, e in self.store_data()["secrets"].items()}

    def redact(self, text: str) -> str:
        try:
            data = self.store_data()
        except Exception:  # noqa: BLE001 - nothing to redact when the store does not open
            return text
        for entry in data["secrets"].values():
            for stage in ("current", "pending", "previous"):
                for value in ((entry.get(stage) or {}).get("fields") or {}).values():
                    if len(str(value)) >= 8:
                        text = text.replace(str(value), "<redacted>")
        return text

    def verify(self, before: dict[str, int], rotated: list[str]) -> dict[str, Any]:
        """Versions advanced exactly for the rotated names; sample consumers hold the new login and it works."""
        data = self.store_data()
        problems = []
        for name, entry in data["secrets"].items():
            want = before[name] + (1 if name in rotated else 0)
            if entry["current"]["version"] != want or entry.get("pending"):
                problems.append(f"{name}: version {entry['current']['version']} (want {want}), pending {'set' if entry.get('pending') else 'none'}")
        logins = 0
        for name in {rotated[0], rotated[len(rotated) // 2], rotated[-1]}:
            if self.args.kind == "tls_cert":
                logins += self.verify_certificate(data, name, problems)
                continue
            i = self.names.index(name)
            prefix = f"B{i:02d}"
            fields = data["secrets"][name]["current"]["fields"]
            for group in dict.fromkeys(consumer_pairs(list(self.groups))[i % len(consumer_pairs(list(self.groups)))]):
                host = self.groups[group][-1]
                env_file = self.env_dir / host / f"svc{group[3:]}.env"
                values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line and not line.startswith("#"))
                held = hashlib.sha256(f"{values[prefix + '_USER']}\0{values[prefix + '_PASSWORD']}".encode()).hexdigest()
                stored = hashlib.sha256(f"{fields['username']}\0{fields['password']}".encode()).hexdigest()
                if held != stored or values.get(prefix + "_NAME", DATABASE) != DATABASE:
                    problems.append(f"{env_file}: {prefix}_* do not match the store's current {name}")
                    continue
                got = self.server.login(values[prefix + "_USER"], values[prefix + "_PASSWORD"])
                if got is None:
                    problems.append(f"{env_file}: the {prefix}_* login of {name} is refused")
                    continue
                if got != values[prefix + "_USER"]:
                    problems.append(f"{env_file}: the {name} login got role {got}")
                logins += 1
        if problems:
            raise SystemExit("verification failed:\n  " + "\n  ".join(problems))
        return {"rotated": len(rotated), "logins_checked": logins}

    def verify_certificate(self, data: dict[str, Any], name: str, problems: list[str]) -> int:
        """Each consuming group's files of a certificate: the store's current one, and its key fits it."""
        i = self.names.index(name)
        prefix = f"B{i:02d}"
        fields = data["secrets"][name]["current"]["fields"]
        checked = 0
        pairs = consumer_pairs(list(self.groups))
        for group in dict.fromkeys(pairs[i % len(pairs)]):
            host = self.groups[group][-1]
            env_file = self.env_dir / host / f"svc{group[3:]}.env"
            paths = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line and not line.startswith("#"))
            cert, key = Path(paths[prefix + "_CERT"]).read_text(), Path(paths[prefix + "_KEY"]).read_text()
            if certificate_fingerprint(cert) != certificate_fingerprint(fields["certificate"]) or not key_fits(key, cert):
                problems.append(f"{env_file}: {prefix}_CERT/_KEY are not the store's current {name}")
                continue
            checked += 1
        return checked


# ---- profile ----------------------------------------------------------------------------------------
def parse_profile(output: str, top: int) -> list[dict[str, Any]]:
    """The profile_tasks recap, summed by task name (serial batches and includes repeat a name)."""
    _, _, recap = output.partition("TASKS RECAP")
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    for line in recap.splitlines():
        m = _PROFILE_LINE.match(line.strip())
        if m:
            totals[m["name"]] = totals.get(m["name"], 0.0) + float(m["secs"])
            counts[m["name"]] = counts.get(m["name"], 0) + 1
    rows = sorted(totals.items(), key=lambda kv: kv[1], reverse=True)
    return [{"task": name, "seconds": round(secs, 2), "entries": counts[name]} for name, secs in rows[:top]]


def profile_difference(big: list[dict[str, Any]], small: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task: seconds in the larger rotation minus seconds in the smaller one, largest first."""
    a = {row["task"]: row["seconds"] for row in big}
    b = {row["task"]: row["seconds"] for row in small}
    rows = [{"task": t, "seconds": round(a.get(t, 0.0) - b.get(t, 0.0), 2)} for t in set(a) | set(b)]
    return sorted(rows, key=lambda row: row["seconds"], reverse=True)


# ---- report -----------------------------------------------------------------------------------------
def collection_version(name: str) -> str:
    try:
        out = subprocess.run(["ansible-galaxy", "collection", "list", name], capture_output=True, text=True, timeout=60, check=False).stdout
    except OSError:
        return "unknown"
    m = re.search(rf"^{re.escape(name)}\s+(\S+)", out, re.MULTILINE)
    return m.group(1) if m else "unknown"


def repo_state(repo: Path) -> str:
    """Commit of the checkout and whether its tree differs from it (a scratch copy without .git: 'no git')."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "no git"
    return head + (" + uncommitted changes" if dirty else "")


def markdown(res: dict[str, Any]) -> str:
    s, h = res["layout"]["secrets"], res["layout"]["half"]
    med = res["medians_s"]
    lines = [
        f"# Rotation at scale: {res['label']} ({res['date']})",
        "",
        f"- machine: {res['machine']['nproc']} cores, {res['machine']['platform']}; ansible-core {res['versions']['ansible_core']}, "
        f"community.postgresql {res['versions']['community.postgresql']}, python {res['versions']['python']}",
        f"- load average before: {res['load_before']}, after: {res['load_after']}",
        f"- layout: {res['layout']['hosts']} consumer hosts in {res['layout']['groups']} groups + dbhost; "
        f"{s} {KIND_NAMES[res.get('kind', 'postgresql')]} secrets "
        f"({STRATEGY[res.get('kind', 'postgresql')]}), each consumed by 2 groups ({res['layout']['hosts_per_secret']} hosts)",
        f"- code: {res['repo']} ({res['repo_state']})",
        f"- extra args: ansible {res['ansible_args'] or '-'}, rotate {res['rotate_args'] or '-'}, env {res['env'] or '-'}",
        f"- setup (site.yml, untimed): {res['setup_s']} s",
        "",
        "| run | median wall s | wall samples s | median CPU s | CPU samples s |",
        "| --- | ---: | --- | ---: | --- |",
    ]
    for key in ("noop", f"rotate{s}", f"rotate{h}"):
        cpu = res.get("cpu_samples_s", {}).get(key)
        if not cpu:  # results recorded before CPU time was measured
            lines.append(f"| {key} | {med[key]:.2f} | {', '.join(f'{x:.2f}' for x in res['samples_s'][key])} | - | - |")
            continue
        lines.append(
            f"| {key} | {med[key]:.2f} | {', '.join(f'{x:.2f}' for x in res['samples_s'][key])} | "
            f"{res['cpu_medians_s'][key]:.2f} | {', '.join(f'{x:.2f}' for x in cpu)} |"
        )
    lines += [
        "",
        f"- **ratio rotate{s} / noop: {res['ratio']:.1f}x** (goal <= 3x; median of the per-repetition ratios "
        f"{', '.join(f'{x:.1f}' for x in res['ratio_per_rep'])}; ratio of the medians {res['ratio_of_medians']:.1f}x)",
        f"- **marginal cost per credential (rotate{s} - rotate{h}) / {s - h}: {res['marginal_s']:.3f} s** (goal <= 0.2 s; median of the "
        f"per-repetition values {', '.join(f'{x:.3f}' for x in res['marginal_per_rep'])}; from the medians {res['marginal_of_medians_s']:.3f} s)",
    ]
    if "cpu_ratio" in res:
        lines.append(
            f"- CPU time (user + sys of ansible-playbook and everything it ran; steadier than wall time on a shared machine), "
            f"medians of the per-repetition values: ratio {res['cpu_ratio']:.1f}x, marginal {res['cpu_marginal_s']:.3f} s per credential"
        )
    lines += [
        f"- verified after every rotation: versions +1 for the rotated names only, no pending left, {res['logins_checked']} "
        + ("consumers' certificate and key files (the store's current certificate, key fits)" if res.get("kind") == "tls_cert" else "consumer logins over TCP"),
    ]
    if res.get("profile"):
        lines += [
            "",
            f"Profile of the median rotate{s} run (ansible.posix.profile_tasks, {res['profile_total_s']:.1f} s wall; seconds summed by task name"
            " over serial batches and includes; `entries` = how many times the task started):",
            "",
            "| task | s | entries |",
            "| --- | ---: | ---: |",
        ]
        lines += [f"| {row['task']} | {row['seconds']:.2f} | {row['entries']} |" for row in res["profile"]]
    if res.get("profile_difference"):
        lines += [
            "",
            f"Where the marginal cost goes: seconds per task in the median rotate{s} run minus the median rotate{h} run "
            "(single runs: differences under ~1 s are noise):",
            "",
            f"| task | s (rotate{s} - rotate{h}) |",
            "| --- | ---: |",
        ]
        lines += [f"| {row['task']} | {row['seconds']:.2f} |" for row in res["profile_difference"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=sorted(Server.SCRIPT), default="postgresql", help="the engine of the secrets and the server started")
    parser.add_argument("--secrets", type=int, default=50)
    parser.add_argument("--half", type=int, help="the smaller rotation (default: secrets/2)")
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--groups", type=int, default=5, help="consumer groups the hosts are spread over")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--label", default="baseline")
    parser.add_argument("--repo", default=str(DEFAULT_REPO), help="checkout whose playbooks run (default: this one)")
    parser.add_argument("--ansible-arg", action="append", default=[], help="passed to every timed run, noop too")
    parser.add_argument("--rotate-arg", action="append", default=[], help="passed to the rotations only")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for every run")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs) and leave PostgreSQL running")
    parser.add_argument("--render", metavar="JSON", help="only rewrite the .md beside a results .json, and exit")
    args = parser.parse_args()
    if args.render:
        path = Path(args.render)
        path.with_suffix(".md").write_text(markdown(json.loads(path.read_text())))
        return
    args.half = args.half or args.secrets // 2
    if args.groups < 2 or args.hosts < args.groups:
        parser.error("need at least 2 groups and at least one host per group")

    bench = Bench(args)
    s_key, h_key = f"rotate{args.secrets}", f"rotate{args.half}"
    samples: dict[str, list[float]] = {"noop": [], s_key: [], h_key: []}
    cpu: dict[str, list[float]] = {"noop": [], s_key: [], h_key: []}
    loads: list[list[float]] = []
    outputs: dict[str, list[str]] = {"noop": [], s_key: [], h_key: []}
    logins = 0
    try:
        bench.server.start()
        bench.write()
        print(f"workspace {bench.root}; {len(bench.hosts)} hosts, {args.secrets} secrets", flush=True)
        setup_s, _ = bench.playbook("setup-site", bench.repo / "playbooks/site.yml", "-e", "keywarden_store_create=true", timed=False)
        print(f"setup (site.yml) {setup_s:.1f}s", flush=True)
        load_before = [round(x, 2) for x in os.getloadavg()]
        jobs = [
            ("noop", lambda label: bench.playbook(label, bench.root / "playbooks/noop.yml"), None),
            (s_key, lambda label: bench.rotate(label, bench.names), bench.names),
            (h_key, lambda label: bench.rotate(label, bench.names[: args.half]), bench.names[: args.half]),
        ]
        for rep in range(args.repeat):
            order = jobs[rep % 3 :] + jobs[: rep % 3]
            for key, job, names in order:
                before = bench.versions() if names else None
                loads.append([round(x, 2) for x in os.getloadavg()])
                seconds, output = job(f"{key}-r{rep + 1}")
                samples[key].append(round(seconds, 3))
                cpu[key].append(round(bench.last_cpu, 3))
                outputs[key].append(output)
                if names and before is not None:
                    logins += bench.verify(before, names)["logins_checked"]
                print(f"rep {rep + 1} {key}: {seconds:.2f}s wall, {bench.last_cpu:.2f}s cpu", flush=True)
        load_after = [round(x, 2) for x in os.getloadavg()]
        profiles: dict[str, list[dict[str, Any]]] = {}
        profile_walls: dict[str, float] = {}
        if not args.no_profile:
            for key in (s_key, h_key):
                # the sample whose time is the median (the lower one of an even count)
                ranked = sorted(range(args.repeat), key=lambda r, key=key: samples[key][r])
                rep = ranked[(len(ranked) - 1) // 2]
                profile_walls[key] = samples[key][rep]
                profiles[key] = parse_profile(outputs[key][rep], 10_000)
    finally:
        if not args.keep:
            bench.server.stop()

    medians = {k: round(statistics.median(v), 3) for k, v in samples.items()}
    cpu_medians = {k: round(statistics.median(v), 3) for k, v in cpu.items()}
    ratio_per_rep = [r / n for r, n in zip(samples[s_key], samples["noop"], strict=True)]
    marginal_per_rep = [(a - b) / (args.secrets - args.half) for a, b in zip(samples[s_key], samples[h_key], strict=True)]
    pairs = consumer_pairs(list(bench.groups))
    res = {
        "label": args.label,
        "kind": args.kind,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "repo": str(bench.repo),
        "repo_state": repo_state(bench.repo),
        "machine": {"nproc": os.cpu_count(), "platform": platform.platform()},
        "versions": {
            "ansible_core": ANSIBLE_VERSION,
            "community.postgresql": collection_version("community.postgresql"),
            "python": platform.python_version(),
        },
        "layout": {
            "hosts": len(bench.hosts),
            "groups": len(bench.groups),
            "group_hosts": bench.groups,
            "secrets": args.secrets,
            "half": args.half,
            "hosts_per_secret": sum(len(bench.groups[g]) for g in dict.fromkeys(pairs[0])),
            "consumer_pairs": [list(p) for p in pairs],
            "target": "none (certificates)" if args.kind == "tls_cert" else "dbhost (group db), one throwaway PostgreSQL",
        },
        "ansible_args": " ".join(args.ansible_arg),
        "rotate_args": " ".join(args.rotate_arg),
        "env": " ".join(args.env),
        "repeat": args.repeat,
        "setup_s": round(setup_s, 1),
        "load_before": load_before,
        "load_after": load_after,
        "load_per_sample": loads,
        "samples_s": samples,
        "medians_s": medians,
        # headline figures: medians of the per-repetition values (each from runs adjacent in time, so a load
        # swing between repetitions cancels); the ratio/difference of the medians is kept alongside
        "ratio": round(statistics.median(ratio_per_rep), 2),
        "ratio_of_medians": round(medians[s_key] / medians["noop"], 2),
        "ratio_per_rep": [round(x, 2) for x in ratio_per_rep],
        "marginal_s": round(statistics.median(marginal_per_rep), 4),
        "marginal_of_medians_s": round((medians[s_key] - medians[h_key]) / (args.secrets - args.half), 4),
        "marginal_per_rep": [round(x, 4) for x in marginal_per_rep],
        "cpu_samples_s": cpu,
        "cpu_medians_s": cpu_medians,
        "cpu_ratio": round(statistics.median([r / n for r, n in zip(cpu[s_key], cpu["noop"], strict=True)]), 2),
        "cpu_marginal_s": round(statistics.median([(a - b) / (args.secrets - args.half) for a, b in zip(cpu[s_key], cpu[h_key], strict=True)]), 4),
        "logins_checked": logins,
        "profile_total_s": profile_walls.get(s_key, 0.0),
        "profile": profiles.get(s_key, [])[: args.top],
        # every task of the median rotS and rotH runs, and where the S - H seconds went (the marginal cost)
        "profiles_all": profiles,
        "profile_walls_s": profile_walls,
        "profile_difference": profile_difference(profiles.get(s_key, []), profiles.get(h_key, []))[: args.top],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{res['date'][:16].replace(':', '').replace('-', '')}-{args.label}"
    (out / f"{stem}.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(res))
    print(markdown(res))
    print(f"results: {out / stem}.json and .md")
    if not args.keep:
        shutil.rmtree(bench.root, ignore_errors=True)
    else:
        print(f"kept {bench.root} (logs in {bench.logs}); stop the server with: {bench.server.script} stop {bench.server.dir}")


if __name__ == "__main__":
    main()
