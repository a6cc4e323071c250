"""Scheduled rotation under throwaway jobs (issue 11): the store's durable home is the project's git remote.

A bare repository on this machine plays the remote; every job is a fresh clone in a new directory (awx_helpers.Job,
made as AWX makes a job's project), deleted once the job is over. A rotation job is killed at each step boundary
(right after it pushed `created`, after set/test before `distributing` was pushed, right after `distributing`,
after the consumers got the value before `promoted` was pushed, right after `promoted`); the next job, in a new
clone, resumes and finishes. Then the consumers log in with the new value and the remote's history shows each step.
Contention: two jobs at once (one refused by the lock, nothing lost), and a stale clone refused with a message to
pull. The audit lines of every job reach a real rsyslog over TCP, and the combined trail verifies end to end.
"""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from awx_helpers import ENV, REPO, STORE_REL, Rsyslog, Site, git, pg_entry, rsyslog_sink
from rotation_helpers import Creds, catalog, login, read_env

CASES = {
    # case: (fault, where the remote's store stands once the job is dead)
    "created": ("git-after-push:1", "pending created"),
    "set-tested": ("git-before-push:2", "pending created"),
    "distributing": ("git-after-push:2", "pending distributing"),
    "distributed": ("git-before-push:3", "pending distributing"),
    "promoted": ("git-after-push:3", "v2 current"),
}
SECRETS = {case: f"awx_{case.replace('-', '_')}" for case in CASES}
CONTENDED = ("awx_contended_a", "awx_contended_b")
TRAIL = "awx_trail"
RESTORED = "awx_restored"


sink = pytest.fixture(scope="module")(rsyslog_sink)


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory, postgres: Any, sink: Rsyslog) -> Site:
    """The project on its remote, its first store made and delivered by a first job (site.yml), that job gone."""
    site = Site(
        tmp_path_factory.mktemp("awx-site"), catalog({name: pg_entry(name) for name in [*SECRETS.values(), *CONTENDED, TRAIL, RESTORED]}), postgres, sink
    )
    job = site.job("provision")
    result = job.run("site.yml", "keywarden site", keywarden_store_create=True)
    assert result.returncode == 0, result.explain()
    job.remove()
    return site


def _creds(entry: dict[str, Any], stage: str = "current") -> Creds | None:
    staged = entry.get(stage)
    return Creds(staged["fields"]["username"], staged["fields"]["password"]) if staged else None


def _consumer(site: Site, name: str) -> Creds:
    values = read_env(site.env_dir / f"{name}.env")
    return Creds(values["DB_USER"], values["DB_PASSWORD"], values["DB_NAME"])


def _settled(site: Site, name: str) -> dict[str, Any]:
    """The end state of one secret: versions, who holds what (fingerprints), what logs in, the lock."""
    data = site.store()
    entry = data["secrets"][name]
    current, previous = _creds(entry), _creds(entry, "previous")
    assert current is not None
    port = site.postgres.port
    return {
        "version": entry["current"]["version"],
        "pending": entry.get("pending"),
        "lock": bool(data.get("rotation_lock")),
        "consumer_holds_current": _consumer(site, name).fingerprint == current.fingerprint,
        "current_logs_in": login(port, current) == current.user,
        "previous_logs_in": previous is not None and login(port, previous) == previous.user,
    }


@pytest.mark.parametrize("case", list(CASES))
def test_a_job_killed_at_a_step_boundary_is_finished_by_the_next_job_in_a_new_clone(provisioned: Site, case: str) -> None:
    fault, left = CASES[case]
    name = SECRETS[case]
    site = provisioned.copy(f"site-{case}")
    start = len(site.history())
    first = site.job(f"{case}-killed")
    killed = first.run("rotate.yml", "keywarden rotate", keywarden_rotate_only=name, crash=fault)
    assert killed.returncode != 0 and "PLAY RECAP" not in killed.output, killed.explain()
    first.remove()
    entry = site.store()["secrets"][name]
    where = f"v{entry['current']['version']} current" if not entry.get("pending") else f"pending {entry['pending']['step']}"
    assert where == left
    second = site.job(f"{case}-resumes")
    resumed = second.run("rotate.yml", "keywarden rotate")
    assert resumed.returncode == 0, resumed.explain()
    second.remove()
    assert _settled(site, name) == {
        "version": 2,
        "pending": None,
        "lock": False,
        "consumer_holds_current": True,
        "current_logs_in": True,
        "previous_logs_in": True,
    }
    steps = [subject.split(": ", 1)[1] for subject in site.history()[start:]]
    # the second job's plan takes the dead job's lock over (a commit of its own, naming no secret); a lease renewal is
    # no change worth a line
    assert [step for step in steps if name in step] == [
        f"rotate.create ({name} pending created; rotation_lock set by AWX job {first.id})",
        f"rotate.mark ({name} pending distributing)",
        f"rotate.finish ({name} v2 current; rotation_lock cleared)",
    ]
    if case in ("created", "set-tested"):
        assert f"rotate.create (rotation_lock set by AWX job {second.id})" in steps


def test_two_jobs_at_once_one_is_refused_by_the_lock_and_nothing_is_lost(provisioned: Site) -> None:
    site = provisioned.copy("site-contention")
    start = len(site.history())
    jobs = {name: site.job(f"rotate-{name}") for name in CONTENDED}
    with ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(job.run, "rotate.yml", "keywarden rotate", keywarden_rotate_only=name) for name, job in jobs.items()}
    runs = {name: future.result() for name, future in futures.items()}
    winners = [name for name, run in runs.items() if run.returncode == 0]
    assert len(winners) == 1, [run.explain() for run in runs.values()]
    winner, loser = winners[0], next(name for name in CONTENDED if name not in winners)
    refused = runs[loser]
    # refused by the lock: either it saw the winner's lock, or its push of the lock lost the race to the winner's
    assert refused.says("a rotation of environment 'production' is already running") or (
        refused.says("another run wrote it at the same time") and refused.says("rotation_lock")
    ), refused.explain()
    # before touching any target: the loser's secret is as it was, everywhere
    assert _settled(site, loser) == {**_settled(site, loser), "version": 1, "pending": None, "consumer_holds_current": True, "current_logs_in": True}
    assert _settled(site, winner)["version"] == 2
    assert len([s for s in site.history()[start:] if "rotate.create" in s]) == 1
    # nothing lost: the refused job, run again later, rotates its secret; the winner's rotation stays
    again = site.job("rotate-again").run("rotate.yml", "keywarden rotate", keywarden_rotate_only=loser)
    assert again.returncode == 0, again.explain()
    assert (_settled(site, loser)["version"], _settled(site, winner)["version"]) == (2, 2)
    for job in jobs.values():
        job.remove()


def test_a_stale_clone_is_refused_with_a_message_to_pull(provisioned: Site) -> None:
    site = provisioned.copy("site-stale")
    laptop = site.job("laptop", laptop=True)
    rotated = site.job("rotate").run("rotate.yml", "keywarden rotate", keywarden_rotate_only=CONTENDED[0])
    assert rotated.returncode == 0, rotated.explain()
    delivered = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in site.env_dir.iterdir()}
    history = site.history()
    for playbook in ("deploy.yml", "rotate.yml"):
        refused = laptop.run(playbook, "by hand")
        line = refused.error_line("is behind", "git pull")
        assert refused.returncode != 0 and line is not None, refused.explain()
        here, there = map(int, re.search(r"revision (\d+) here, (\d+) there", line).groups())  # type: ignore[union-attr]
        assert there == here + 3
    assert {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in site.env_dir.iterdir()} == delivered
    assert site.history() == history
    git(laptop.project, "pull", "--quiet")
    again = laptop.run("deploy.yml", "by hand")
    assert again.returncode == 0, again.explain()
    laptop.remove()


def _remote_store_sha(site: Site) -> str:
    blob = subprocess.run(["git", "cat-file", "blob", f"main:{STORE_REL}/secrets.vault"], cwd=site.bare, capture_output=True, check=True).stdout
    return hashlib.sha256(blob).hexdigest()


def _backed_up(site: Site) -> tuple[Path, Path]:
    """A backup job's archive of the remote's store: (the offline age identity, the backup directory)."""
    offline = site.root / "offline"
    offline.mkdir(mode=0o700)
    identity = offline / "backup.key"
    keygen = subprocess.run(["age-keygen", "-o", str(identity)], capture_output=True, text=True, check=True)
    recipients = site.root / "recipients.txt"
    recipients.write_text(re.search(r"age1[0-9a-z]+", keygen.stderr + keygen.stdout).group(0) + "\n")  # type: ignore[union-attr]
    backups = site.root / "backups"
    backup = site.job("backup").run("backup.yml", "keywarden backup", keywarden_backup_recipients_file=str(recipients), keywarden_backup_dir=str(backups))
    assert backup.returncode == 0, backup.explain()
    return identity, backups


def test_a_restore_is_a_commit_pushed_to_the_remote_and_a_stale_clone_cannot_restore(provisioned: Site) -> None:
    site = provisioned.copy("site-restore")
    identity, backups = _backed_up(site)
    archived = _remote_store_sha(site)
    laptop = site.job("laptop", laptop=True)  # an operator's clone, stale once the rotation below is pushed
    rotated = site.job("rotate").run("rotate.yml", "keywarden rotate", keywarden_rotate_only=RESTORED)
    assert rotated.returncode == 0, rotated.explain()
    assert site.store()["secrets"][RESTORED]["current"]["version"] == 2
    rotated_sha, history = _remote_store_sha(site), site.history()
    restore = {"keywarden_restore_archive": "latest", "keywarden_restore_identity_file": str(identity), "keywarden_restore_backup_dir": str(backups)}
    # the stale clone is refused before anything is compared or written: its store is not the remote's
    laptop_store = laptop.project / STORE_REL / "secrets.vault"
    before = hashlib.sha256(laptop_store.read_bytes()).hexdigest()
    refused = laptop.run("restore.yml", "by hand", "-e", "keywarden_restore_force=true", **restore)
    assert refused.returncode != 0 and refused.error_line("is behind", "git pull") is not None, refused.explain()
    assert (hashlib.sha256(laptop_store.read_bytes()).hexdigest(), _remote_store_sha(site), site.history()) == (before, rotated_sha, history)
    # a job sees the remote's store (revision 3 newer than the archive's): an older archive needs force
    older = site.job("restore-unforced").run("restore.yml", "keywarden restore", **restore)
    assert older.returncode != 0 and older.error_line("older than the store in place", "force") is not None, older.explain()
    assert (_remote_store_sha(site), site.history()) == (rotated_sha, history)
    # forced: the archived store is a commit on the remote, the next job's checkout holds it
    job = site.job("restore")
    done = job.run("restore.yml", "keywarden restore", keywarden_restore_force=True, **restore)
    assert done.returncode == 0 and done.says("git (file://"), done.explain()
    assert _remote_store_sha(site) == archived
    subject = site.history()[-1]
    assert site.history()[:-1] == history and subject.startswith("keywarden store production r") and ": restore (from keywarden-production-" in subject, subject
    assert site.store()["secrets"][RESTORED]["current"]["version"] == 1
    assert hashlib.sha256((job.project / STORE_REL / "secrets.vault").read_bytes()).hexdigest() == archived
    # the jobs after it work from the restored store
    after = site.job("deploy-after").run("deploy.yml", "keywarden deploy")
    assert after.returncode == 0, after.explain()
    for each in (job, laptop):
        each.remove()


def _script(job: Any, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """One of scripts/secrets in an operator's clone, with the clone's environment (the git backend on, no pull)."""
    script = job.project / "scripts" / "secrets" / name
    return subprocess.run([sys.executable, str(script), *args], cwd=job.project, env=job.environ(), capture_output=True, text=True, timeout=300, check=False)


def _backend_in_ansible_cfg(job: Any) -> None:
    """The operator's clone names the git backend in its ansible.cfg instead of the environment (its scripts then run
    with no KEYWARDEN_STORE_* variable: the ansible.cfg that ANSIBLE_CONFIG names is what makes them push)."""
    cfg = job.project / "ansible.cfg"
    cfg.write_text(cfg.read_text() + "\n[keywarden]\nstore_backend = git\n")
    environ = job.environ
    job.environ = lambda: {key: value for key, value in environ().items() if not key.startswith("KEYWARDEN_STORE_")}


def test_the_scripts_write_through_the_git_backend(provisioned: Site) -> None:
    """migrate and restore without Ansible: the git backend (KEYWARDEN_STORE_BACKEND=git in one clone, store_backend
    in the other's ansible.cfg) makes their store writes commits pushed to the remote, and a stale clone is refused,
    as with the playbooks."""
    site = provisioned.copy("site-scripts")
    identity, backups = _backed_up(site)
    archived = _remote_store_sha(site)
    stale, laptop = site.job("stale", laptop=True), site.job("laptop", laptop=True)
    _backend_in_ansible_cfg(laptop)
    # a hardcoded credential in the operator's clone, moved into the store by migrate
    value = hashlib.sha256(site.root.name.encode() + b"legacy").hexdigest()[:28]
    legacy = laptop.project / "legacy" / ".env"
    legacy.parent.mkdir()
    legacy.write_text(f"LEGACY_DB_PASSWORD={value}\nLOG_LEVEL=info\n")
    history = site.history()
    migrated = _script(laptop, "migrate", "-e", ENV, "--group", "app", "--service", "legacy", "--apply", str(legacy))
    assert migrated.returncode == 0, site.redact(migrated.stderr)
    assert value not in legacy.read_text() and value not in migrated.stdout + migrated.stderr
    assert site.history()[:-1] == history and site.history()[-1].endswith(": migrate (legacy_db_password created; migration_backups set)"), site.history()[-1]
    entry = site.store()["secrets"]["legacy_db_password"]
    assert hashlib.sha256(entry["current"]["fields"]["value"].encode()).digest() == hashlib.sha256(value.encode()).digest()
    # the clone made before the migration is stale: refused, nothing changed
    history, before = site.history(), _remote_store_sha(site)
    refused = _script(stale, "restore", "-e", ENV, "--identity", str(identity), "--latest", "--backup-dir", str(backups), "--force")
    assert refused.returncode == 2 and "is behind" in refused.stderr and "git pull" in refused.stderr, refused.stderr
    assert (_remote_store_sha(site), site.history()) == (before, history)
    # the current clone restores the backup (older than the migration: forced); the remote holds the archived store
    restored = _script(laptop, "restore", "-e", ENV, "--identity", str(identity), "--latest", "--backup-dir", str(backups), "--force")
    assert restored.returncode == 0, restored.stderr
    assert _remote_store_sha(site) == archived
    assert site.history()[:-1] == history and ": restore (from keywarden-production-" in site.history()[-1], site.history()[-1]
    assert "legacy_db_password" not in site.store()["secrets"]
    for job in (stale, laptop):
        job.remove()


def test_the_audit_trail_of_three_jobs_verifies_end_to_end_from_the_sink(provisioned: Site, sink: Rsyslog) -> None:
    site = provisioned.copy("site-trail")
    ids = []
    for number in range(3):
        job = site.job(f"trail-{number}")
        result = job.run("rotate.yml", "keywarden rotate", keywarden_rotate_only=TRAIL)
        assert result.returncode == 0, result.explain()
        assert not any(value in result.output for value in site.seen_values())
        ids.append(str(job.id))
        job.remove()
    sink.settle()
    checkout = site.root / "verify"
    git(site.root, "clone", "--quiet", "--depth=1", site.remote_url, str(checkout))
    verify = [sys.executable, str(REPO / "scripts" / "audit" / "verify-log"), "--trail", "--key-file", str(site.audit_key)]
    store = ["--store", str(checkout / STORE_REL), "-e", ENV]
    env = {"KEYWARDEN_VAULT_PASSWORD_DIR": str(site.password_dir), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    ok = subprocess.run([*verify, *store, str(sink.path)], capture_output=True, text=True, env=env, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "trail: OK" in ok.stdout and "holds the anchor" in ok.stdout and all(job_id in ok.stdout for job_id in ids), ok.stdout
    assert not any(value in sink.path.read_text() for value in site.seen_values())
    # one line of the second job gone from the sink: the trail says where
    lines = sink.lines()
    cut = next(i for i, line in enumerate(lines) if f'"awx_job_id":"{ids[1]}"' in line and '"seq":3,' in line)
    tampered = site.root / "tampered.log"
    tampered.write_text("\n".join(lines[:cut] + lines[cut + 1 :]) + "\n")
    bad = subprocess.run([*verify, *store, str(tampered)], capture_output=True, text=True, env=env, check=False)
    assert bad.returncode == 1 and "line 4 follows a line that is not in the trail" in bad.stderr, bad.stdout + bad.stderr
    # the end cut off: the store's anchor is missing from the trail
    short = site.root / "short.log"
    last = max(i for i, line in enumerate(lines) if f'"awx_job_id":"{ids[2]}"' in line and '"event":"rotate.finish"' in line)
    short.write_text("\n".join(lines[:last]) + "\n")
    cut_off = subprocess.run([*verify, *store, str(short)], capture_output=True, text=True, env=env, check=False)
    assert cut_off.returncode == 1 and "is not in the trail" in cut_off.stderr, cut_off.stdout + cut_off.stderr


def test_git_holds_no_secret_value_in_any_form(provisioned: Site) -> None:
    """Every value any revision ever held, raw, base64, hex, SHA-1/SHA-256, is in no git object of any remote;
    only vault ciphertext is committed."""
    bares = sorted(provisioned.root.parent.glob("site-*/remote.git")) + [provisioned.bare]
    assert len(bares) >= 2
    for bare in bares:
        site = provisioned.copy(f"leakcheck-{bare.parent.name}")
        values = site.seen_values()
        assert len(values) >= len(SECRETS)
        objects = subprocess.run(["git", "cat-file", "--batch-all-objects", "--batch"], cwd=bare, capture_output=True, check=True).stdout
        for value in values:
            raw = value.encode()
            forms = (raw, base64.b64encode(raw), raw.hex().encode(), hashlib.sha256(raw).hexdigest().encode(), hashlib.sha1(raw).hexdigest().encode())  # noqa: S324
            assert not any(form in objects for form in forms), f"a stored value is in the git objects of {bare}"
        for path in git(bare, "ls-tree", "-r", "--name-only", "main").splitlines():
            if path.startswith("inventories/") and "/store/" in path:
                assert path == f"{STORE_REL}/secrets.vault"
