"""The backup engine's parts: names and retention, latest backup, recipients and identities, leftovers of a crash, and
the backup/restore plugins' documentation against their argument specs.

Real files, real age keys (Debian's age-keygen, ssh-keygen) and real encryption. No value is ever printed.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import pyrage
import pytest
import yaml
from ansible.parsing.vault import VaultSecret

from ansible_collections.keywarden.secrets.plugins.module_utils.specs import ARGUMENT_SPECS
from ansible_collections.keywarden.secrets.plugins.modules import backup as backup_doc
from ansible_collections.keywarden.secrets.plugins.modules import restore as restore_doc
from ansible_collections.keywarden.secrets.plugins.plugin_utils import backup
from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import AuditLog, Auditor, actor, load_key
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import Store, new_entry

NOW = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)


def names_aged(*days: float, environment: str = "local", manifest: bool = True) -> list[str]:
    names = []
    for age in days:
        name = backup.archive_name(environment, NOW - datetime.timedelta(days=age))
        names += [name, name + backup.MANIFEST_SUFFIX] if manifest else [name]
    return names


# ---- names and retention ---------------------------------------------------------------------------
def test_archive_names_round_trip_and_sort_by_time() -> None:
    name = backup.archive_name("prod-eu", NOW)
    assert name == "keywarden-prod-eu-20261130T120000.000000Z.tar.age"
    assert backup.parse_name(name) == ("prod-eu", NOW)
    assert backup.parse_name(name + backup.MANIFEST_SUFFIX) is None
    assert backup.parse_name("keywarden-local-yesterday.tar.age") is None


def test_retention_by_count_keeps_the_newest() -> None:
    names = names_aged(0, 1, 2, 3, 4)
    doomed = backup.to_prune(names, "local", NOW, keep_count=3, keep_days=0)
    assert doomed == [n for n in names_aged(3, 4) if n.endswith(".age")]


def test_retention_by_age_drops_the_old_but_never_the_newest() -> None:
    names = names_aged(1, 10, 40)
    assert backup.to_prune(names, "local", NOW, keep_count=10, keep_days=35) == [names_aged(40)[0]]
    # nothing made for a long time: the newest stays, however old, so a broken schedule never leaves no backup
    old = names_aged(50, 60)
    assert backup.to_prune(old, "local", NOW, keep_count=10, keep_days=35) == [names_aged(60)[0]]


def test_retention_ignores_other_environments_and_incomplete_backups() -> None:
    names = names_aged(0, 1, 2) + names_aged(3, environment="production") + names_aged(4, manifest=False)
    assert backup.to_prune(names, "local", NOW, keep_count=1, keep_days=0) == [n for n in names_aged(1, 2) if n.endswith(".age")]
    with pytest.raises(backup.BackupError, match="keep at least 1 backup"):
        backup.to_prune(names, "local", NOW, keep_count=0, keep_days=0)


def test_latest_backup_is_the_newest_complete_one(tmp_path: Path) -> None:
    for name in names_aged(2, 5) + names_aged(1, manifest=False):  # the newest never got its manifest (a crash)
        (tmp_path / name).write_bytes(b"")
    latest = backup.latest_backup(str(tmp_path), "local")
    assert latest is not None and latest["name"] == names_aged(2)[0]
    assert latest["created"] == "2026-11-28T12:00:00Z"
    assert backup.latest_backup(str(tmp_path), "production") is None
    hint = backup.latest_backup_hint("local", str(tmp_path))
    assert hint.startswith(f"latest backup: {tmp_path / names_aged(2)[0]} (2026-11-28T12:00:00Z)") and "playbooks/restore.yml" in hint
    assert backup.latest_backup_hint("production", str(tmp_path)).startswith(f"no backup of 'production' in {tmp_path}")


def test_remote_must_name_host_and_directory() -> None:
    assert backup.split_remote("kw@backup1:/srv/b") == ("kw@backup1", "/srv/b")
    for bad in ("backup1", ":/srv", "backup1:", "-oProxyCommand=x:/srv"):
        with pytest.raises(backup.BackupError, match="is not \\[user@\\]host:/directory"):
            backup.split_remote(bad)


# ---- keys --------------------------------------------------------------------------------------------
def _age_key(path: Path) -> str:
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    return subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True).stdout.strip()


def test_recipients_file_lists_public_keys_and_refuses_a_private_one(tmp_path: Path) -> None:
    public = _age_key(tmp_path / "id.txt")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "ssh")], check=True)
    ssh_public = (tmp_path / "ssh.pub").read_text().strip()
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"# operations\n{public}\n\n# escrow, an ssh key\n{ssh_public}\n")
    assert backup.read_recipients(str(recipients)) == [public, ssh_public]
    recipients.write_text((tmp_path / "id.txt").read_text())
    with pytest.raises(backup.BackupError, match="line 3 holds a private key"):
        backup.read_recipients(str(recipients))
    recipients.write_text(f"{public}\nage1notakey\n")
    with pytest.raises(backup.BackupError, match="line 2 is not an age recipient"):
        backup.read_recipients(str(recipients))
    with pytest.raises(backup.BackupError, match="does not exist"):
        backup.read_recipients(str(tmp_path / "missing.txt"))


def test_identities_from_age_keygen_and_from_an_openssh_key_decrypt(tmp_path: Path) -> None:
    public = _age_key(tmp_path / "id.txt")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "ssh")], check=True)
    secret = os.urandom(32)
    for identity, recipient in ((tmp_path / "id.txt", public), (tmp_path / "ssh", (tmp_path / "ssh.pub").read_text().strip())):
        blob = pyrage.encrypt(secret, [backup._recipient(recipient, "test")])
        assert pyrage.decrypt(blob, backup.read_identities(str(identity))) == secret
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(backup.BackupError, match="holds no age identity"):
        backup.read_identities(str(tmp_path / "empty.txt"))


# ---- a crash's leftovers ---------------------------------------------------------------------------
def test_a_backup_removes_what_a_crashed_backup_left_and_never_counts_it(tmp_path: Path) -> None:
    password = VaultSecret(os.urandom(16).hex().encode())
    key_file = tmp_path / "audit.key"
    key = load_key(str(key_file), create=True)
    sources = backup.Sources("local", str(tmp_path / "store"), str(tmp_path / "catalog.yml"), str(tmp_path / "audit.log"), str(key_file))
    Path(sources.catalog).write_text("---\nsecrets: {}\n")
    auditor = Auditor(AuditLog(sources.audit_log, key), "local", actor())
    with Store(sources.store_dir, "local", [("local", password)], audit=auditor).update() as data:
        data["secrets"]["one"] = new_entry("generic", {"value": os.urandom(16).hex()})
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(_age_key(tmp_path / "id.txt") + "\n")
    backups = tmp_path / "backups"
    backups.mkdir()
    crashed = names_aged(-1, manifest=False)[0]  # renamed into place, but its manifest never landed: not a backup
    (backups / crashed).write_bytes(b"partial")
    (backups / f".{crashed}.tmp.4242").write_bytes(b"partial")
    made = backup.create_backup(sources, str(recipients), str(backups), actor())
    assert sorted(made["leftovers_removed"]) == sorted([crashed, f".{crashed}.tmp.4242"])
    assert sorted(p.name for p in backups.iterdir()) == sorted([backup.LOCK_FILE, made["name"], made["name"] + backup.MANIFEST_SUFFIX])


# ---- documentation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "doc"), [("backup", backup_doc.DOCUMENTATION), ("restore", restore_doc.DOCUMENTATION)])
def test_documented_options_match_the_argument_spec(name: str, doc: str) -> None:
    options = yaml.safe_load(doc)["options"]
    spec = ARGUMENT_SPECS[name]
    assert sorted(options) == sorted(spec)
    for option, entry in spec.items():
        documented = options[option]
        assert (documented["type"], documented.get("required", False), documented.get("default")) == (
            entry["type"],
            entry.get("required", False),
            entry.get("default"),
        ), option
        assert documented.get("elements") == entry.get("elements"), option


@pytest.mark.parametrize("name", ["backup", "restore"])
def test_ansible_doc_renders(name: str) -> None:
    tool = Path(sys.executable).parent / "ansible-doc"
    proc = subprocess.run([str(tool), "-t", "module", f"keywarden.secrets.{name}"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and "[ERROR]" not in proc.stderr, proc.stderr
    assert f"keywarden.secrets.{name}" in proc.stdout
