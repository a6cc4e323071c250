#!/usr/bin/env python3
"""Deploy and rotation on a fleet, the way an AWX job runs them: git store backend, a throwaway clone, N hosts.

    python bench/fleet_scale/run.py [--hosts 10,100] [--repeat 3] [--forks 5,25,50] [--serial SPEC]... [--label NAME]

What it does (all in a temp dir; nothing of the repository is touched):

1. a throwaway PostgreSQL (scripts/demo/postgres); a bare git repository holding the project (the working tree's
   tracked files and a bench catalog: 3 PostgreSQL secrets, alternating_users, each consumed by every fleet host);
   an audit key and a vault password outside the clones, as AWX's credentials would be;
2. for each fleet size N: an inventory of N local-connection hosts host001..hostNNN (each with its own
   keywarden_env_dir <tmp>/srv-N/<host>) in group `app`, plus `dbhost` in `db`; a job clone made as AWX makes one
   (shallow, on a temporary branch, pull on, the remote by URL); setup, untimed: site.yml (store created and pushed,
   logins, every host's .env);
3. timed, interleaved (the order rotates each repetition), R times each, with every fork count of --forks:
   noop     one play on all hosts, gather_facts false, one ansible.builtin.ping (what any play pays per host);
   deploy   playbooks/deploy.yml (the steady state: every .env already right, changed=0);
   rotate   playbooks/rotate.yml -e keywarden_rotate_only=<one secret>: plan/decide/finish pushed to the remote,
            the new value distributed to all N hosts in serial batches (keywarden_rotate_serial, --serial);
   every rotation is verified: version +1, no pending, no lock, 3 sampled hosts' .env hold the store's current
   login (SHA-256 compare), and that login gets in over TCP. No value is printed;
4. writes results/<stamp>-<label>.json and .md: samples, medians, the ratios deploy/noop and rotate/noop per N and
   forks, the cost per host (t(N2) - t(N1)) / (N2 - N1) of each, and how the ratio grows from N1 to N2.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import itertools
import json
import os
import platform
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg2
import yaml
from ansible.parsing.vault import VaultSecret
from ansible.release import __version__ as ANSIBLE_VERSION

from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import Store

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ENV = "production"
STORE_REL = f"inventories/{ENV}/store"
SECRETS = ("fleet_a", "fleet_b", "fleet_c")
ROTATED = "fleet_a"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def catalog() -> dict[str, Any]:
    entries = {}
    for index, name in enumerate(SECRETS):
        entries[name] = {
            "kind": "postgresql",
            "description": f"fleet bench login {name}",
            "environments": [ENV],
            "target": {"group": "db", "database": "orders", "role": name},
            "policy": {"max_age_days": 30, "length": 32, "charset": "alnum", "strategy": "alternating_users"},
            "consumers": [
                {"group": "app", "service": "app", "env": {f"DB{index}_USER": "username", f"DB{index}_PASSWORD": "password", f"DB{index}_NAME": "database"}}
            ],
        }
    return {"keywarden_catalog_version": 1, "secrets": entries}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = Path(tempfile.mkdtemp(prefix="keywarden-fleet-", dir="/tmp"))
        os.chmod(self.root, 0o755)  # noqa: S103 - the postgres user traverses it to its data dir; nothing secret here
        self.creds = self.root / "credentials"
        self.creds.mkdir(mode=0o700)
        (self.creds / "vault-pass").mkdir(mode=0o700)
        fd = os.open(self.creds / "vault-pass" / ENV, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
        self.bare = self.root / "remote.git"
        self.samples: list[dict[str, Any]] = []

    # ---- setup ---------------------------------------------------------------------------------------
    def start(self) -> None:
        subprocess.run([str(REPO / "scripts" / "demo" / "postgres"), "start", str(self.root)], check=True, capture_output=True, timeout=180)
        self.pg_vars = yaml.safe_load((self.root / "postgres.yml").read_text())
        seed = self.root / "seed"
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
        for name in filter(None, (f.decode() for f in files)):
            if (REPO / name).is_file():
                (seed / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, seed / name)
        (seed / "config" / "secrets" / "catalog.yml").write_text("---\n" + yaml.safe_dump(catalog(), sort_keys=False))
        git(self.root, "init", "--quiet", "--bare", "--initial-branch=main", str(self.bare))
        git(seed, "init", "--quiet", "--initial-branch=main")
        git(seed, "add", ".")
        git(seed, "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "commit", "--quiet", "-m", "project")
        git(seed, "push", "--quiet", str(self.bare), "main")
        shutil.rmtree(seed)

    def stop(self) -> None:
        subprocess.run([str(REPO / "scripts" / "demo" / "postgres"), "stop", str(self.root)], capture_output=True, timeout=120, check=False)
        if not self.args.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def fleet(self, n: int) -> tuple[Path, Path]:
        """(job clone, inventory) for a fleet of n hosts, provisioned and delivered (untimed)."""
        hosts = [f"host{i:03d}" for i in range(1, n + 1)]
        srv = self.root / f"srv-{n}"
        inventory = self.root / f"inventory-{n}.yml"
        local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
        data = {
            "all": {
                "vars": {
                    "keywarden_environment": ENV,
                    "keywarden_env_owner": "",
                    "keywarden_env_group": "",
                    "keywarden_env_dir_owner": "",
                    "keywarden_env_manage_services": False,
                    **self.pg_vars,
                },
                "children": {
                    "db": {"hosts": {"dbhost": {**local, "keywarden_env_dir": str(srv / "dbhost")}}},
                    "app": {"hosts": {host: {**local, "keywarden_env_dir": str(srv / host)} for host in hosts}},
                },
            }
        }
        inventory.write_text("---\n" + yaml.safe_dump(data, sort_keys=False))
        clone = self.root / f"job-{n}"
        git(self.root, "clone", "--quiet", "--depth=1", "--branch=main", f"file://{self.bare}", str(clone))
        git(clone, "checkout", "--quiet", "-b", f"awx_internal/{uuid.uuid4()}")
        first = not self.store_exists()
        result = self.play(clone, inventory, "playbooks/site.yml", 25, *(["-e", "keywarden_store_create=true"] if first else []))
        if result["rc"] != 0:
            raise SystemExit(f"setup of {n} hosts failed:\n{result['tail']}")
        return clone, inventory

    def store_exists(self) -> bool:
        return bool(
            subprocess.run(["git", "cat-file", "-e", f"main:{STORE_REL}/secrets.vault"], cwd=self.bare, capture_output=True, check=False).returncode == 0
        )

    # ---- runs ------------------------------------------------------------------------------------------
    def play(self, clone: Path, inventory: Path, playbook: str, forks: int, *extra: str) -> dict[str, Any]:
        extravars = {
            "awx_job_id": 1,
            "awx_project_scm_branch": "main",
            "keywarden_store_backend": "git",
            "keywarden_store_git_remote": f"file://{self.bare}",
            "keywarden_store_git_pull": True,
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "KEYWARDEN_"))}
        env.update(
            ANSIBLE_CONFIG=str(clone / "ansible.cfg"),
            ANSIBLE_NOCOLOR="1",
            KEYWARDEN_VAULT_PASSWORD_DIR=str(self.creds / "vault-pass"),
            KEYWARDEN_AUDIT_KEY_FILE=str(self.creds / "audit.key"),
            PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
            JOB_ID="1",
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        client = clone / "scripts" / "secrets" / "vault-password-client"
        cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), playbook, "-f", str(forks)]
        cmd += ["--vault-id", f"{ENV}@{client}", "-e", json.dumps(extravars), *extra]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        proc = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True, check=False)
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return {"rc": proc.returncode, "wall": round(wall, 3), "cpu": round(cpu, 3), "tail": proc.stdout[-3000:]}

    def noop_playbook(self) -> Path:
        path = self.root / "noop.yml"
        path.write_text(
            "---\n" + yaml.safe_dump([{"name": "noop", "hosts": "all", "gather_facts": False, "tasks": [{"name": "ping", "ansible.builtin.ping": None}]}])
        )
        return path

    def store(self) -> dict[str, Any]:
        raw = subprocess.run(["git", "cat-file", "blob", f"main:{STORE_REL}/secrets.vault"], cwd=self.bare, capture_output=True, check=True).stdout
        password = (self.creds / "vault-pass" / ENV).read_text().strip()
        return Store._decrypt(Store(str(self.root), ENV, [(ENV, VaultSecret(password.encode()))]), raw, "remote")

    def verify_rotation(self, n: int, version: int) -> None:
        data = self.store()
        entry = data["secrets"][ROTATED]
        if entry["current"]["version"] != version or entry.get("pending") or data.get("rotation_lock"):
            raise SystemExit(f"rotation at {n} hosts did not settle (version {entry['current']['version']}, want {version})")
        user, password = entry["current"]["fields"]["username"], entry["current"]["fields"]["password"]
        want = hashlib.sha256(f"{user}\0{password}".encode()).hexdigest()
        for host in ("host001", f"host{n // 2:03d}", f"host{n:03d}"):
            values = dict(
                line.split("=", 1) for line in (self.root / f"srv-{n}" / host / "app.env").read_text().splitlines() if "=" in line and not line.startswith("#")
            )
            got = hashlib.sha256(f"{values['DB0_USER']}\0{values['DB0_PASSWORD']}".encode()).hexdigest()
            if got != want:
                raise SystemExit(f"{host} of {n} does not hold the store's current login after the rotation")
        conn = psycopg2.connect(host="127.0.0.1", port=int(self.pg_vars["keywarden_target_postgresql_port"]), user=user, password=password, dbname="orders")
        conn.close()

    def run(self) -> dict[str, Any]:
        sizes = [int(x) for x in self.args.hosts.split(",")]
        forks_list = [int(x) for x in self.args.forks.split(",")]
        serials = self.args.serial or [""]
        noop = self.noop_playbook()
        version = 1
        setup = {}
        for n in sizes:
            started = time.monotonic()
            clone, inventory = self.fleet(n)
            setup[n] = round(time.monotonic() - started, 1)
            kinds = [("noop", str(noop), ""), ("deploy", "playbooks/deploy.yml", "")] + [("rotate", "playbooks/rotate.yml", s) for s in serials]
            for forks in forks_list:
                for rep in range(self.args.repeat):
                    order = kinds[rep % len(kinds) :] + kinds[: rep % len(kinds)]
                    for kind, playbook, serial in order:
                        extra = []
                        if kind == "rotate":
                            extra = ["-e", f"keywarden_rotate_only={ROTATED}"]
                            if serial:
                                extra += ["-e", json.dumps({"keywarden_rotate_serial": json.loads(serial)})]
                        result = self.play(clone, inventory, playbook, forks, *extra)
                        if result["rc"] != 0:
                            raise SystemExit(f"{kind} on {n} hosts (forks {forks}) failed:\n{result['tail']}")
                        if kind == "rotate":
                            version += 1
                            self.verify_rotation(n, version)
                        sample = {
                            "hosts": n,
                            "forks": forks,
                            "kind": kind,
                            "serial": serial or "default [1, '50%']",
                            "rep": rep,
                            "wall": result["wall"],
                            "cpu": result["cpu"],
                        }
                        self.samples.append(sample)
                        print(json.dumps(sample), flush=True)  # noqa: T201 - progress
        return {"setup_s": setup, "sizes": sizes, "forks": forks_list, "serials": serials}


def summarize(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    key = lambda s: (s["hosts"], s["forks"], s["kind"], s["serial"])  # noqa: E731
    for (hosts, forks, kind, serial), grouped in itertools.groupby(sorted(samples, key=key), key=key):
        group = list(grouped)
        rows.append(
            {
                "hosts": hosts,
                "forks": forks,
                "kind": kind,
                "serial": serial,
                "wall": statistics.median(s["wall"] for s in group),
                "cpu": statistics.median(s["cpu"] for s in group),
                "n": len(group),
            }
        )
    noop = {(r["hosts"], r["forks"]): r for r in rows if r["kind"] == "noop"}
    for row in rows:
        base = noop[(row["hosts"], row["forks"])]
        # per repetition: the ratio to the noop run of the same repetition, then the median
        reps = [
            s["wall"] / n["wall"]
            for s in samples
            for n in samples
            if n["kind"] == "noop"
            and (s["hosts"], s["forks"], s["kind"], s["serial"], s["rep"]) == (row["hosts"], row["forks"], row["kind"], row["serial"], n["rep"])
            and (n["hosts"], n["forks"]) == (row["hosts"], row["forks"])
        ]
        row["ratio"] = round(statistics.median(reps), 2) if reps else round(row["wall"] / base["wall"], 2)
        row["cpu_ratio"] = round(row["cpu"] / base["cpu"], 2)
    return rows


def render(result: dict[str, Any]) -> str:
    rows = result["summary"]
    lines = [f"# Fleet scale: {result['label']} ({result['when']})", ""]
    lines += [f"- machine: {result['machine']}", f"- load average before: {result['load_before']}, after: {result['load_after']}"]
    lines += [f"- code: {result['code']}", f"- setup (site.yml, untimed) seconds per fleet size: {result['setup_s']}", ""]
    lines += ["| hosts | forks | run | serial | median wall s | ratio to noop | median CPU s | CPU ratio |"]
    lines += ["| ---: | ---: | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        serial = r["serial"] if r["kind"] == "rotate" else ""
        cells = [r["hosts"], r["forks"], r["kind"], serial, f"{r['wall']:.2f}", f"{r['ratio']:.2f}x", f"{r['cpu']:.2f}", f"{r['cpu_ratio']:.2f}x"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    sizes = result["sizes"]
    if len(sizes) >= 2:
        small, big = sizes[0], sizes[-1]
        lines += ["", f"Cost per extra host, (t({big}) - t({small})) / {big - small}, and the ratio to noop at {small} and {big} hosts:", ""]
        lines += ["| run | forks | serial | s per host (wall) | s per host (CPU) | noop s per host (wall) | ratio |"]
        lines += ["| --- | ---: | --- | ---: | ---: | ---: | --- |"]
        by = {(r["hosts"], r["forks"], r["kind"], r["serial"]): r for r in rows}
        noop_key = "default [1, '50%']"
        for r in rows:
            low = by.get((small, r["forks"], r["kind"], r["serial"]))
            noop_low, noop_big = by.get((small, r["forks"], "noop", noop_key)), by.get((big, r["forks"], "noop", noop_key))
            if r["hosts"] != big or low is None or noop_low is None or noop_big is None:
                continue
            span = big - small
            per, per_cpu = (r["wall"] - low["wall"]) / span, (r["cpu"] - low["cpu"]) / span
            noop_per = (noop_big["wall"] - noop_low["wall"]) / span
            serial = r["serial"] if r["kind"] == "rotate" else ""
            cells = [r["kind"], r["forks"], serial, f"{per:.3f}", f"{per_cpu:.3f}", f"{noop_per:.3f}", f"{low['ratio']:.2f}x -> {r['ratio']:.2f}x"]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--hosts", default="10,100", help="fleet sizes, comma-separated")
    parser.add_argument("--forks", default="5", help="fork counts, comma-separated (every size is run with each)")
    parser.add_argument("--serial", action="append", help="keywarden_rotate_serial as JSON (repeatable), e.g. '[1, \"50%%\"]' or '[\"100%%\"]'")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--label", default="local")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--render", help="only rewrite the .md beside this results .json")
    args = parser.parse_args()
    if args.render:
        path = Path(args.render)
        path.with_suffix(".md").write_text(render(json.loads(path.read_text())))
        return 0
    bench = Bench(args)
    load_before = os.getloadavg()
    try:
        bench.start()
        meta = bench.run()
    finally:
        bench.stop()
    head = git(REPO, "rev-parse", "--short", "HEAD")
    dirty = " + uncommitted changes" if git(REPO, "status", "--porcelain", "--untracked-files=no") else ""
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = {
        "label": args.label,
        "when": when,
        "machine": f"{os.cpu_count()} cores, {platform.platform()}; ansible-core {ANSIBLE_VERSION}, python {platform.python_version()}",
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "code": f"{head}{dirty}",
        **meta,
        "samples": bench.samples,
        "summary": summarize(bench.samples),
    }
    out = HERE / "results" / f"{when.replace(':', '').replace('-', '')[:13]}-{args.label}"
    out.parent.mkdir(exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(render(result))
    print(render(result))  # noqa: T201 - the report
    return 0


if __name__ == "__main__":
    sys.exit(main())
