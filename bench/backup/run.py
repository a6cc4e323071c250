#!/usr/bin/env python3
"""Backup plus verified restore of a 1,000-secret store, against a plain `tar | age` of the same files; and the RTO.

    python bench/backup/run.py [--secrets 1000] [--revisions 10] [--repeat 5] [--rto-repeat 3] [--label NAME]

All in a temp dir (nothing of the repository's inventories or stores is touched):
1. setup (untimed): environment `development`, a store of N secrets (the sample catalog's three plus generic ones)
   written through the store code with the audit log on, then `--revisions` more writes of 10% of the values each,
   so the store carries its rollback copies and the audit log its lines; an age identity (age-keygen);
2. timed, interleaved, R times each (medians reported, every sample kept):
   baseline  `tar c <the same files> | age -r KEY > a.age`, then `age -d -i KEY a.age | tar x` into a new dir;
   keywarden scripts/secrets/backup (snapshot, manifest, age, commit by rename, audit event), then
             scripts/secrets/restore of that archive into a new, empty place (every check: digest, recipient,
             manifest MAC, files, audit chain, vault password, older-than; then the store, log and catalog);
   library   the same two through plugin_utils/backup.py in this process (no interpreter start, no imports);
   every restore is checked: the restored store's bytes are the original's;
3. RTO: the store, audit log and .env files destroyed, `playbooks/restore.yml -e keywarden_restore_deploy=true`
   from the latest local backup on a localhost inventory (deploy renders the sample stack's .env files), timed from
   start to the consumers' files being back (checked by digest);
4. writes results/<stamp>-<label>.json and .md. Goal: backup + verified restore <= 5 s and <= 2x the baseline.
No value is printed.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from ansible.parsing.vault import VaultSecret

from ansible_collections.keywarden.secrets.plugins.plugin_utils import backup
from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import AuditLog, Auditor, actor, load_key
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import CHARSETS, load_catalog, secrets_for_environment
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import Store, generate_fields, new_entry

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CLIENT = REPO / "scripts" / "secrets" / "vault-password-client"
ENV = "development"
FILES = ["store/secrets.vault", "store/versions", "catalog.yml", "audit/audit.log", "audit/audit.log.head"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} {' '.join(argv[1:3])} failed: {proc.stderr[-2000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--secrets", type=int, default=1000)
    parser.add_argument("--revisions", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rto-repeat", type=int, default=3)
    parser.add_argument("--label", default="local")
    args = parser.parse_args()
    for tool in ("age", "age-keygen", "tar"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install age (scripts/dev/bootstrap test installs it)")
    root = Path(tempfile.mkdtemp(prefix="kw-backup-bench-"))
    try:
        return run(root, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def setup(root: Path, count: int, revisions: int) -> dict[str, object]:
    (root / "vault-pass").mkdir(mode=0o700)
    (root / "audit").mkdir(mode=0o700)
    password = secrets.token_urlsafe(24)
    pass_file = root / "vault-pass" / ENV
    pass_file.write_text(password + "\n")
    pass_file.chmod(0o600)
    shutil.copyfile(REPO / "config" / "secrets" / "catalog.yml", root / "catalog.yml")
    key_file = root / "audit" / "audit.key"
    key = load_key(str(key_file), create=True)
    auditor = Auditor(AuditLog(str(root / "audit" / "audit.log"), key), ENV, actor())
    store = Store(str(root / "store"), ENV, [(ENV, VaultSecret(password.encode()))], audit=auditor)
    wanted = secrets_for_environment(load_catalog(str(root / "catalog.yml")), ENV)
    with store.update() as data:
        for name, entry in wanted.items():
            data["secrets"][name] = new_entry(entry["kind"], generate_fields(entry, CHARSETS))
        for i in range(count - len(wanted)):
            data["secrets"][f"bench_{i:05d}"] = new_entry("api_key", {"value": secrets.token_urlsafe(36)})
    generic = sorted(n for n in data["secrets"] if n.startswith("bench_"))
    for revision in range(revisions):
        with store.update() as data:
            for name in generic[revision::10][: max(1, count // 10)]:
                data["secrets"][name]["current"]["fields"]["value"] = secrets.token_urlsafe(36)
    identity = root / "identity.txt"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    public = subprocess.run(["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True).stdout.strip()
    (root / "recipients.txt").write_text(public + "\n")
    size = sum(p.stat().st_size for f in FILES for p in ([root / f] if (root / f).is_file() else (root / f).rglob("*")))
    return {"public": public, "bytes": size, "versions": len(store.versions()), "revision": store.read()["revision"]}


def script_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "KEYWARDEN_"))}
    env.update(
        KEYWARDEN_VAULT_PASSWORD_DIR=str(root / "vault-pass"),
        KEYWARDEN_AUDIT_KEY_FILE=str(root / "audit" / "audit.key"),
        KEYWARDEN_AUDIT_LOG=str(root / "audit" / "audit.log"),
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return env


def run(root: Path, args: argparse.Namespace) -> int:
    info = setup(root, args.secrets, args.revisions)
    env = script_env(root)
    original = sha(root / "store" / "secrets.vault")
    kinds = ("baseline_backup", "baseline_restore", "baseline_checks", "kw_backup", "kw_restore", "lib_backup", "lib_restore")
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    sizes: dict[str, int] = {}
    vault = [(ENV, VaultSecret((root / "vault-pass" / ENV).read_text().strip().encode()))]
    for n in range(args.repeat):
        # baseline: the same files, tar | age and back
        base = root / f"base-{n}.age"
        pipeline = f"set -o pipefail; tar -C {root} -cf - {' '.join(FILES)} | age -r {info['public']} -o {base}"
        samples["baseline_backup"].append(timed(["bash", "-c", pipeline]))
        out = root / f"base-out-{n}"
        out.mkdir()
        samples["baseline_restore"].append(timed(["bash", "-c", f"set -o pipefail; age -d -i {root / 'identity.txt'} {base} | tar -x -C {out}"]))
        assert sha(out / "store" / "secrets.vault") == original
        sizes["baseline"] = base.stat().st_size
        # what the keywarden restore checks beyond that, done by hand: the store opens, the audit chain verifies
        bindir = Path(sys.executable).parent
        view = f"{bindir / 'ansible-vault'} view --vault-id {ENV}@{root / 'vault-pass' / ENV} {out / 'store' / 'secrets.vault'} >/dev/null"
        verify_log = REPO / "scripts" / "audit" / "verify-log"
        verify = f"{sys.executable} {verify_log} --key-file {root / 'audit' / 'audit.key'} {out / 'audit' / 'audit.log'} >/dev/null"
        samples["baseline_checks"].append(timed(["bash", "-c", f"set -e; {view}; {verify}"], env))

        # keywarden, end to end through the scripts
        backups = root / f"backups-{n}"
        samples["kw_backup"].append(
            timed(
                [sys.executable, str(REPO / "scripts" / "secrets" / "backup"), "-e", ENV, "--store-dir", str(root / "store")]
                + ["--catalog", str(root / "catalog.yml"), "--recipients", str(root / "recipients.txt")]
                + ["--backup-dir", str(backups), "--ca-dir", str(root / "ca")],
                env,
            )
        )
        archive = backup.latest_backup(str(backups), ENV)
        assert archive is not None
        sizes["keywarden"] = Path(archive["archive"]).stat().st_size
        target = root / f"restored-{n}"
        samples["kw_restore"].append(
            timed(
                [sys.executable, str(REPO / "scripts" / "secrets" / "restore"), "-e", ENV, "--identity", str(root / "identity.txt"), archive["archive"]]
                + ["--store-dir", str(target / "store"), "--catalog", str(target / "catalog.yml"), "--ca-dir", str(target / "ca")]
                + ["--audit-log", str(target / "audit.log")],
                env,
            )
        )
        assert sha(target / "store" / "secrets.vault") == original

        # the library, in this process
        sources = backup.Sources(ENV, str(root / "store"), str(root / "catalog.yml"), str(root / "audit" / "audit.log"), str(root / "audit" / "audit.key"))
        started = time.perf_counter()
        made = backup.create_backup(sources, str(root / "recipients.txt"), str(root / f"lib-backups-{n}"), actor())
        samples["lib_backup"].append(time.perf_counter() - started)
        lib_target = root / f"lib-restored-{n}"
        into = backup.Sources(ENV, str(lib_target / "store"), str(lib_target / "catalog.yml"), str(lib_target / "audit.log"), sources.audit_key_file)
        started = time.perf_counter()
        backup.restore(made["archive"], str(root / "identity.txt"), into, vault, actor())
        samples["lib_restore"].append(time.perf_counter() - started)
        assert sha(lib_target / "store" / "secrets.vault") == original

    med = {k: statistics.median(v) for k, v in samples.items()}
    base_total = med["baseline_backup"] + med["baseline_restore"]
    checked_total = base_total + med["baseline_checks"]
    kw_total = med["kw_backup"] + med["kw_restore"]
    lib_total = med["lib_backup"] + med["lib_restore"]
    rto = measure_rto(root, env, args.rto_repeat)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    result = {
        "stamp": stamp,
        "label": args.label,
        "commit": commit,
        "secrets": args.secrets,
        "store": info,
        "repeat": args.repeat,
        "samples_s": samples,
        "median_s": med,
        "archive_bytes": sizes,
        "baseline_total_s": base_total,
        "keywarden_total_s": kw_total,
        "library_total_s": lib_total,
        "ratio_keywarden_to_baseline": kw_total / base_total,
        "ratio_library_to_baseline": lib_total / base_total,
        "baseline_with_checks_total_s": checked_total,
        "ratio_keywarden_to_baseline_with_checks": kw_total / checked_total,
        "goal": "keywarden backup + verified restore <= 5 s and <= 2x baseline",
        "goal_met": kw_total <= 5 and kw_total <= 2 * base_total,
        "rto": rto,
        "machine": {"cpus": os.cpu_count(), "load": os.getloadavg(), "python": platform.python_version()},
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{stamp}-{args.label}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{stamp}-{args.label}.md").write_text(report(result))
    sys.stdout.write(report(result))
    return 0


def measure_rto(root: Path, env: dict[str, str], repeat: int) -> dict[str, object]:
    """restore.yml (+ deploy) from the latest local backup after losing the store, the audit log and the .env files."""
    inventory = root / "inventory"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    hosts = {
        "all": {
            "hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}},
            "children": {g: {"hosts": {"localhost": None}} for g in ("db", "cache", "app", "worker")},
        }
    }
    (inventory / "hosts.yml").write_text("---\n" + yaml.safe_dump(hosts))
    group_vars = {
        "keywarden_environment": ENV,
        "keywarden_store_dir": str(root / "store"),
        "keywarden_catalog_path": str(root / "catalog.yml"),
        "keywarden_env_dir": str(root / "srv"),
        "keywarden_env_owner": "",
        "keywarden_env_group": "",
        "keywarden_env_dir_owner": "",
        "keywarden_env_manage_services": False,
        "keywarden_backup_recipients_file": str(root / "recipients.txt"),
        "keywarden_backup_dir": str(root / "rto-backups"),
        "keywarden_backup_ca_dir": str(root / "ca"),
        "keywarden_restore_backup_dir": str(root / "rto-backups"),
        "keywarden_restore_ca_dir": str(root / "ca"),
        "keywarden_restore_archive": "latest",
        "keywarden_restore_identity_file": str(root / "identity.txt"),
    }
    (inventory / "group_vars" / "all" / "main.yml").write_text("---\n" + yaml.safe_dump(group_vars))

    def playbook(name: str, *extra: str) -> float:
        argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), str(REPO / "playbooks" / name), *extra]
        return timed([*argv, "--vault-id", f"{ENV}@{CLIENT}"], env)

    playbook("deploy.yml")
    delivered = {p.name: sha(p) for p in sorted((root / "srv").glob("*.env"))}
    playbook("backup.yml")
    samples = []
    for _ in range(repeat):
        shutil.rmtree(root / "store")
        for path in (root / "audit" / "audit.log", root / "audit" / "audit.log.head"):
            path.unlink()
        shutil.rmtree(root / "srv")
        samples.append(playbook("restore.yml", "-e", "keywarden_restore_deploy=true"))
        assert {p.name: sha(p) for p in sorted((root / "srv").glob("*.env"))} == delivered
    what = "restore.yml -e keywarden_restore_deploy=true, localhost inventory, 2 .env files"
    return {"what": what, "samples_s": samples, "median_s": statistics.median(samples)}


def report(r: dict) -> str:
    m = r["median_s"]
    lines = [
        f"# backup + verified restore, {r['secrets']} secrets, {r['repeat']} repetitions ({r['stamp']}, {r['label']}, {r['commit']})",
        "",
        f"Store: revision {r['store']['revision']}, {r['store']['versions']} rollback copies; {r['store']['bytes']} bytes backed up "
        f"(store, rollback copies, catalog, audit log and head). Archives: keywarden {r['archive_bytes']['keywarden']} bytes, "
        f"baseline {r['archive_bytes']['baseline']} bytes.",
        "",
        "| median s | backup | restore | total | ratio to baseline |",
        "| --- | --- | --- | --- | --- |",
        f"| baseline `tar \\| age` | {m['baseline_backup']:.3f} | {m['baseline_restore']:.3f} | {r['baseline_total_s']:.3f} | 1.00 |",
        f"| baseline + the same checks by hand (`ansible-vault view`, `verify-log`) | {m['baseline_backup']:.3f} "
        f"| {m['baseline_restore'] + m['baseline_checks']:.3f} | {r['baseline_with_checks_total_s']:.3f} "
        f"| {r['baseline_with_checks_total_s'] / r['baseline_total_s']:.2f} |",
        f"| keywarden scripts | {m['kw_backup']:.3f} | {m['kw_restore']:.3f} | {r['keywarden_total_s']:.3f} | {r['ratio_keywarden_to_baseline']:.2f} |",
        f"| keywarden library (in process) | {m['lib_backup']:.3f} | {m['lib_restore']:.3f} | {r['library_total_s']:.3f} "
        f"| {r['ratio_library_to_baseline']:.2f} |",
        "",
        f"Goal ({r['goal']}): {'met' if r['goal_met'] else 'NOT met'}.",
        "",
        f"RTO ({r['rto']['what']}): median {r['rto']['median_s']:.1f} s; samples {', '.join(f'{s:.1f}' for s in r['rto']['samples_s'])}.",
        "",
        f"load average at the end: {', '.join(f'{x:.2f}' for x in r['machine']['load'])}; {r['machine']['cpus']} CPUs",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
