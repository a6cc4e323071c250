"""Encrypted backups and their verified restore, through the real scripts, playbooks, age and an sshd container.

What a backup holds and that Debian's stock age CLI restores it; every refusal of a restore, with the store, the audit
log and the catalog unchanged byte for byte; a restore after a rekey; retention by count and age here and on the
backup host; two backups at once; the playbooks. Tests compare digests, never values.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyrage
import pytest
from ansible.parsing.vault import VaultSecret
from backup_helpers import (
    BACKUP,
    RESTORE,
    BackupHost,
    age_keygen,
    archives,
    backup_host,
    configure,
    one_line_error,
    run_script,
    script_env,
    sha,
    state,
    verify_log,
)

from ansible_collections.keywarden.secrets.plugins.plugin_utils import backup, rotation
from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import AuditLog, Auditor, actor, load_key, read_records
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import Store, new_entry

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Keys:
    ops: Path  # identity of the first recipient
    escrow: Path  # identity of the second recipient
    other: Path  # an identity that is no recipient
    recipients: Path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    root = tmp_path_factory.mktemp("age-keys")
    ops, escrow, other = root / "ops.key", root / "escrow.key", root / "other.key"
    public = [age_keygen(ops), age_keygen(escrow)]
    age_keygen(other)
    recipients = root / "recipients.txt"
    recipients.write_text("# who may read the backups\n" + "\n".join(public) + "\n")
    return Keys(ops, escrow, other, recipients)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackupHost]:
    with backup_host(tmp_path_factory.mktemp("backup-host")) as made:
        yield made


def make_backup(ws: Any, keys: Keys, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_script(BACKUP, ws, "--recipients", str(keys.recipients), "--json", *args, env=env)


def last_archive(ws: Any) -> Path:
    found = archives(ws.root / "backups" / ws.environment)
    assert found, "no archive was made"
    return found[-1]


def vault(ws: Any) -> list[tuple[str, VaultSecret]]:
    return [(ws.environment, VaultSecret(ws.password(ws.environment).encode()))]


def write_store(ws: Any) -> int:
    """One store write through the store code, audited like every write (a new secret): returns the new revision."""
    key = load_key(str(ws.audit_key), create=not ws.audit_log.exists())
    store = Store(str(ws.store_dir), ws.environment, vault(ws), audit=Auditor(AuditLog(str(ws.audit_log), key), ws.environment, actor()))
    with store.update() as data:
        data["secrets"][f"extra_{len(data['secrets'])}"] = new_entry("generic", {"value": os.urandom(16).hex()})
    return int(store.read()["revision"])


@pytest.fixture
def made(ready: Any, keys: Keys) -> Any:
    """A workspace with a store at revision 2 (one rollback copy), its audit log, a CA directory, and one backup."""
    assert write_store(ready) == 2
    ca = ready.root / "ca"
    (ca / "private").mkdir(parents=True)
    (ca / "ca.crt").write_bytes(os.urandom(64))
    (ca / "private" / "ca.key").write_bytes(os.urandom(64))
    os.chmod(ca / "private" / "ca.key", 0o600)
    proc = make_backup(ready, keys)
    assert proc.returncode == 0, proc.stderr
    return ready


def protected(ws: Any) -> dict[str, str]:
    """Everything a refused restore must leave as it was."""
    return state(ws.store_dir, ws.audit_dir, ws.catalog, ws.root / "ca")


# ---- what a backup holds ---------------------------------------------------------------------------
def test_backup_holds_store_catalog_audit_and_ca_and_stock_age_restores_it(made: Any, keys: Keys, tmp_path: Path) -> None:
    ws = made
    archive = last_archive(ws)
    assert oct(archive.stat().st_mode & 0o777) == "0o600"
    manifest = json.loads(Path(f"{archive}{backup.MANIFEST_SUFFIX}").read_text())
    assert manifest["environment"] == "local"
    assert manifest["archive"] == {"file": archive.name, "sha256": sha(archive.read_bytes()), "size": archive.stat().st_size}
    expected = {
        "store/secrets.vault": ws.store_dir / "secrets.vault",
        "store/versions/secrets.r000001.vault": ws.store_dir / "versions" / "secrets.r000001.vault",
        "catalog/catalog.yml": ws.catalog,
        "audit/audit.log": ws.audit_log,
        "audit/audit.log.head": Path(f"{ws.audit_log}.head"),
        "ca/ca.crt": ws.root / "ca" / "ca.crt",
        "ca/private/ca.key": ws.root / "ca" / "private" / "ca.key",
    }
    files = manifest["files"]
    assert set(files) == set(expected)
    # the audit log grew by the backup's own event since; the rest are as they were
    assert {p: files[p]["sha256"] for p in expected if not p.startswith("audit/")} == {
        p: sha(path.read_bytes()) for p, path in expected.items() if not p.startswith("audit/")
    }
    assert files["ca/private/ca.key"]["mode"] == "0600"

    # Debian's age CLI and tar alone, with the second recipient's identity: no keywarden code involved
    out = tmp_path / "extracted"
    out.mkdir()
    age = subprocess.Popen(["age", "-d", "-i", str(keys.escrow), str(archive)], stdout=subprocess.PIPE)
    untar = subprocess.run(["tar", "x", "-C", str(out)], stdin=age.stdout, capture_output=True, check=False)
    assert age.wait() == 0 and untar.returncode == 0, untar.stderr
    top = out / archive.name.removesuffix(".tar.age")
    sums = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=top, capture_output=True, text=True, check=False)
    assert sums.returncode == 0, sums.stdout + sums.stderr
    assert sorted(line.split(": ")[0] for line in sums.stdout.splitlines()) == sorted(expected)
    # usable files: the store opens with the environment's vault password and holds what the store in place holds
    restored = Store(str(top / "store"), "local", [("local", VaultSecret(ws.password("local").encode()))])
    assert sha(json.dumps(restored.read(), sort_keys=True).encode()) == sha(json.dumps(ws.store().read(), sort_keys=True).encode())
    verified = verify_log(top / "audit" / "audit.log", ws.audit_key)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # the decrypted archive holds no value in clear: the store in it is still vault-encrypted
    plain = b"".join(p.read_bytes() for p in top.rglob("*") if p.is_file()).decode("latin-1")
    leaked = ws.leaks(plain)
    assert not leaked

    # every backup is in the audit log: its archive's digest, never a value
    last = read_records(str(ws.audit_log))[-1]
    assert (last["event"], last["outcome"], last["detail"]["archive_sha256"]) == ("backup", "ok", sha(archive.read_bytes()))


def test_backup_needs_no_vault_password_and_never_decrypts(ready: Any, keys: Keys) -> None:
    env = script_env(ready, KEYWARDEN_VAULT_PASSWORD_DIR=str(ready.root / "no-passwords"))
    proc = make_backup(ready, keys, env=env)
    assert proc.returncode == 0, proc.stderr
    leaked = ready.leaks(proc.stdout + proc.stderr)
    assert not leaked


@pytest.mark.parametrize(
    ("problem", "fragment"),
    [
        ("no-recipients", "lists no recipient"),
        ("private-key-as-recipient", "holds a private key"),
        ("no-store", "does not exist: nothing to back up"),
    ],
)
def test_backup_refuses_bad_input_and_makes_nothing(ready: Any, keys: Keys, tmp_path: Path, problem: str, fragment: str) -> None:
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(keys.recipients.read_text())
    if problem == "no-recipients":
        recipients.write_text("# nobody yet\n")
    elif problem == "private-key-as-recipient":
        recipients.write_text(keys.other.read_text())
    else:
        shutil.rmtree(ready.store_dir)
    before = protected(ready)
    proc = run_script(BACKUP, ready, "--recipients", str(recipients))
    assert one_line_error(proc, "backup: ", fragment), proc.stderr
    assert protected(ready) == before
    assert archives(ready.root / "backups" / "local") == []


# ---- the refusals of a restore ------------------------------------------------------------------------
def _tampered_copy(archive: Path, dest: Path, change: Callable[[bytes], bytes]) -> Path:
    dest.mkdir(exist_ok=True)
    copy = dest / archive.name
    copy.write_bytes(change(archive.read_bytes()))
    shutil.copyfile(f"{archive}{backup.MANIFEST_SUFFIX}", f"{copy}{backup.MANIFEST_SUFFIX}")
    return copy


def _forged(archive: Path, dest: Path, keys: Keys) -> Path:
    """What a holder of a backup identity (not of the audit key) could make: another catalog, every digest redone."""
    manifest = json.loads(Path(f"{archive}{backup.MANIFEST_SUFFIX}").read_text())
    top = manifest["name"]
    with tarfile.open(fileobj=io.BytesIO(pyrage.decrypt(archive.read_bytes(), backup.read_identities(str(keys.ops))))) as tar:
        members = {m.name: (m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar}
    catalog = members[f"{top}/catalog/catalog.yml"][1] + b"# forged\n"
    manifest["files"]["catalog/catalog.yml"].update(sha256=sha(catalog), size=len(catalog))
    inner = {k: v for k, v in manifest.items() if k != "archive"}
    members[f"{top}/catalog/catalog.yml"] = (members[f"{top}/catalog/catalog.yml"][0], catalog)
    members[f"{top}/manifest.json"] = (members[f"{top}/manifest.json"][0], json.dumps(inner).encode())
    members[f"{top}/SHA256SUMS"] = (members[f"{top}/SHA256SUMS"][0], "".join(f"{m['sha256']}  {p}\n" for p, m in sorted(inner["files"].items())).encode())
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members.values():
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    blob = pyrage.encrypt(buffer.getvalue(), [pyrage.x25519.Recipient.from_str(r) for r in manifest["recipients"]])
    dest.mkdir(exist_ok=True)
    copy = dest / archive.name
    copy.write_bytes(blob)
    manifest["archive"].update(sha256=sha(blob), size=len(blob))
    Path(f"{copy}{backup.MANIFEST_SUFFIX}").write_text(json.dumps(manifest))
    return copy


def _other_environment_archive(workspace: Callable[..., Any], keys: Keys, dest: Path) -> Path:
    dev = workspace("development", environment="development")
    dev.set_password("development")
    key = load_key(str(dev.audit_key), create=True)
    auditor = Auditor(AuditLog(str(dev.audit_log), key), "development", actor())
    with Store(str(dev.store_dir), "development", vault(dev), audit=auditor).update() as data:
        data["secrets"]["app_db"] = new_entry("generic", {"value": os.urandom(16).hex()})
    proc = make_backup(dev, keys)
    assert proc.returncode == 0, proc.stderr
    archive = last_archive(dev)
    dest.mkdir(exist_ok=True)
    for suffix in ("", backup.MANIFEST_SUFFIX):
        shutil.copyfile(f"{archive}{suffix}", dest / f"{archive.name}{suffix}")
    return dest / archive.name


REFUSALS = [
    ("corrupted", "is corrupted"),
    ("truncated", "is truncated"),
    ("another-key", "is encrypted to another key"),
    ("another-environment", "is a backup of environment 'development', not 'local'"),
    ("older-than-store", "holds store revision 2, older than the store in place (revision 3)"),
    ("forged-by-a-recipient", "manifest MAC does not match under the audit key"),
    ("manifest-edited", "the manifest inside differs from"),
    ("no-audit-key", "a restore needs the audit key"),
    ("another-audit-key", "was made under audit key"),
    ("rotation-running", "is already running"),
]


@pytest.mark.parametrize(("problem", "fragment"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_restore_refuses_and_changes_nothing(made: Any, keys: Keys, workspace: Callable[..., Any], tmp_path: Path, problem: str, fragment: str) -> None:
    ws = made
    archive = last_archive(ws)
    identity = keys.ops
    env = script_env(ws)
    holder = None
    if problem == "corrupted":
        archive = _tampered_copy(archive, tmp_path / "c", lambda b: b[:200] + bytes([b[200] ^ 1]) + b[201:])
    elif problem == "truncated":
        archive = _tampered_copy(archive, tmp_path / "c", lambda b: b[: len(b) // 2])
    elif problem == "another-key":
        identity = keys.other
    elif problem == "another-environment":
        archive = _other_environment_archive(workspace, keys, tmp_path / "c")
    elif problem == "older-than-store":
        assert write_store(ws) == 3
    elif problem == "forged-by-a-recipient":
        archive = _forged(archive, tmp_path / "c", keys)
    elif problem == "manifest-edited":
        archive = _tampered_copy(archive, tmp_path / "c", lambda b: b)
        path = Path(f"{archive}{backup.MANIFEST_SUFFIX}")
        path.write_text(path.read_text().replace('"lines": ', '"lines": 1'))
    elif problem == "no-audit-key":
        env = script_env(ws, KEYWARDEN_AUDIT_KEY_FILE=str(tmp_path / "missing.key"))
    elif problem == "another-audit-key":
        other = tmp_path / "other.key"
        # a key file of another environment (a fresh key is only written with a new log's first line)
        fd = os.open(other, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(os.urandom(32).hex() + "\n")
        env = script_env(ws, KEYWARDEN_AUDIT_KEY_FILE=str(other))
    elif problem == "rotation-running":
        # a live rotation run on this host holds the lock (a lease record in the store); the archive is as new
        holder = subprocess.Popen(["sleep", "60"])
        with ws.store().update() as data:
            data["rotation_lock"] = {**rotation.run_identity(holder.pid), "since": "2026-01-01T00:00:00Z", "lease_until": "2999-01-01T00:00:00Z"}
        assert make_backup(ws, keys).returncode == 0
        archive = last_archive(ws)
    before = protected(ws)
    try:
        proc = run_script(RESTORE, ws, "--identity", str(identity), str(archive), env=env)
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
    assert one_line_error(proc, "restore: ", fragment), proc.stderr
    after = protected(ws)
    assert after == before
    leaked = ws.leaks(proc.stdout + proc.stderr)
    assert not leaked


def test_restore_of_an_older_archive_with_force_keeps_the_replaced_store(made: Any, keys: Keys) -> None:
    ws = made
    archive = last_archive(ws)
    archived_store = sha((ws.store_dir / "secrets.vault").read_bytes())
    write_store(ws)
    newer = sha((ws.store_dir / "secrets.vault").read_bytes())
    proc = run_script(RESTORE, ws, "--identity", str(keys.ops), "--force", "--json", str(archive))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["store_revision"], result["replaced_revision"], result["forced"]) == (2, 3, True)
    assert sha((ws.store_dir / "secrets.vault").read_bytes()) == archived_store
    assert sha((Path(result["replaced_kept_in"]) / "secrets.vault").read_bytes()) == newer
    # the restore event chains onto the log in place, which already continued the archived one
    assert result["audit_log"] == "kept: it continues the archived log"
    last = read_records(str(ws.audit_log))[-1]
    assert (last["event"], last["detail"]["replaced_revision"], last["detail"]["forced"]) == ("restore", 3, True)
    verified = verify_log(ws.audit_log, ws.audit_key)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_restore_after_a_rekey_needs_the_password_in_effect_at_backup_time(made: Any, keys: Keys, tmp_path: Path) -> None:
    ws = made
    archive = last_archive(ws)
    old = tmp_path / "old-password"
    new = tmp_path / "new-password"
    old.write_text(ws.password("local"))
    new.write_text(os.urandom(18).hex())
    ansible_vault = str(Path(sys.executable).parent / "ansible-vault")
    rekey = subprocess.run(
        [ansible_vault, "rekey", "--vault-id", f"local@{old}", "--new-vault-id", f"local@{new}", str(ws.store_dir / "secrets.vault")],
        env={**script_env(ws), "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert rekey.returncode == 0, rekey.stderr
    ws.set_password("local", new.read_text())
    shutil.rmtree(ws.store_dir)  # the store is lost after the rekey

    before = protected(ws)
    refused = run_script(RESTORE, ws, "--identity", str(keys.ops), str(archive))
    assert one_line_error(refused, "its store does not open", "give the vault password in effect on"), refused.stderr
    assert protected(ws) == before

    ws.set_password("local", old.read_text())  # the runbook: the password in effect when the backup was made
    proc = run_script(RESTORE, ws, "--identity", str(keys.ops), str(archive))
    assert proc.returncode == 0, proc.stderr
    assert ws.store().read()["revision"] == 2


# ---- retention, concurrency, the backup host ---------------------------------------------------------
def _aged_copy(archive: Path, days: float, put: Callable[[str, bytes], None]) -> str:
    """An archive and manifest under the name a backup made `days` ago would have (retention reads the name)."""
    created = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days)
    name = backup.archive_name("local", created)
    put(name, archive.read_bytes())
    put(name + backup.MANIFEST_SUFFIX, Path(f"{archive}{backup.MANIFEST_SUFFIX}").read_bytes())
    return name


def test_retention_by_count_and_by_age_here_and_on_the_backup_host(ready: Any, keys: Keys, host: BackupHost) -> None:
    ws = ready
    remote = ["--remote", host.remote("local"), "--ssh-args", " ".join(host.ssh_args)]
    first = make_backup(ws, keys, *remote)
    assert first.returncode == 0, first.stderr
    archive = last_archive(ws)
    local_dir = ws.root / "backups" / "local"
    old = []
    for days in (40, 50):  # older than keep_days: dropped by age
        name = _aged_copy(archive, days, lambda n, b: (local_dir / n).write_bytes(b))
        _aged_copy(archive, days, lambda n, b: host.exec("sh", "-c", f"cat > /srv/keywarden-backups/local/{n}", stdin=b))
        old.append(name)
    made = [archive.name]
    for _ in range(3):
        proc = make_backup(ws, keys, "--keep-count", "3", "--keep-days", "35", *remote)
        assert proc.returncode == 0, proc.stderr
        made.append(json.loads(proc.stdout)["name"])
    kept = sorted(made)[-3:]  # by count: the three newest
    expected = sorted([*kept, *(n + backup.MANIFEST_SUFFIX for n in kept)])
    assert sorted(p.name for p in local_dir.glob("keywarden-*")) == expected
    assert [n for n in host.names("local") if n.startswith("keywarden-")] == expected
    for name in kept:  # the copies on the backup host are the archives made here, byte for byte
        assert sha(host.read("local", name)) == sha((local_dir / name).read_bytes())


def test_two_backups_at_once_both_complete_and_neither_is_corrupted(ready: Any, keys: Keys, host: BackupHost) -> None:
    ws = ready
    argv = [sys.executable, str(BACKUP), "-e", "local", "--store-dir", str(ws.store_dir), "--catalog", str(ws.catalog), "--recipients", str(keys.recipients)]
    argv += ["--remote", host.remote("local-concurrent"), "--ssh-args", " ".join(host.ssh_args), "--json"]
    runs = [subprocess.Popen(argv, env=script_env(ws), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], [err for _, err in outputs]
    names = sorted(json.loads(out)["name"] for out, _ in outputs)
    assert len(set(names)) == 3
    local_dir = ws.root / "backups" / "local"
    assert sorted(p.name for p in local_dir.iterdir() if p.name != backup.LOCK_FILE) == sorted([*names, *(n + backup.MANIFEST_SUFFIX for n in names)])
    key = load_key(str(ws.audit_key), create=False)
    for name in names:
        checked = backup.verify_archive(str(local_dir / name), str(keys.ops), "local", key)
        assert checked.manifest["store"]["sha256"] == sha((ws.store_dir / "secrets.vault").read_bytes())
    remote_names = host.names("local-concurrent")
    assert [n for n in remote_names if n.startswith("keywarden-")] == sorted([*names, *(n + backup.MANIFEST_SUFFIX for n in names)])
    assert not [n for n in remote_names if n.endswith(".part") or ".part." in n]
    events = [r for r in read_records(str(ws.audit_log)) if r["event"] == "backup"]
    assert sorted(e["detail"]["archive"] for e in events) == names


# ---- the playbooks ---------------------------------------------------------------------------------
def test_playbooks_back_up_to_the_backup_host_verify_in_check_mode_and_refuse_another_key(ready: Any, keys: Keys, host: BackupHost) -> None:
    ws = ready
    configure(
        ws,
        keywarden_backup_recipients_file=str(keys.recipients),
        keywarden_backup_dir=str(ws.root / "backups" / "local"),
        keywarden_backup_remote=host.remote("local-playbook"),
        keywarden_backup_ssh_args=host.ssh_args,
        keywarden_restore_backup_dir=str(ws.root / "fetched"),
        keywarden_restore_remote=host.remote("local-playbook"),
        keywarden_restore_ssh_args=host.ssh_args,
        keywarden_restore_archive="latest",
        keywarden_backup_ca_dir=str(ws.root / "ca"),
        keywarden_restore_ca_dir=str(ws.root / "ca"),
    )
    made = ws.run("playbooks/backup.yml", vault_ids=())  # no vault password: a backup never decrypts
    assert made.returncode == 0, made.explain()
    assert made.recap()["changed"] == 1
    name = last_archive(ws).name
    assert f"{name}{backup.MANIFEST_SUFFIX}" in host.names("local-playbook")

    before = protected(ws)
    checked = ws.run("playbooks/restore.yml", "--check", "-e", f"keywarden_restore_identity_file={keys.ops}")
    assert checked.returncode == 0, checked.explain()
    assert f"check mode: {name} verified" in checked.output
    assert protected(ws) == before

    refused = ws.run("playbooks/restore.yml", "-e", f"keywarden_restore_identity_file={keys.other}")
    assert refused.returncode != 0
    assert refused.error_line("[ERROR]", "is encrypted to another key") is not None, refused.explain()
    assert protected(ws) == before
    leaked = ws.leaks(made.output + checked.output + refused.output)
    assert not leaked
