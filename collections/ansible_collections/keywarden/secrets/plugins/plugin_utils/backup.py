# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Encrypted backups of one environment, and their verified restore.

Guarantees:
- one archive per run: a tar of the store with its revisions, the catalog, the audit log with its head and the
  CA directory (when it exists), encrypted with age to the environment's recipients (public keys in the
  repository): the host that makes or keeps backups cannot read them. Making one needs no vault password;
- a SHA-256 manifest travels inside the archive (``manifest.json`` and ``SHA256SUMS``, which ``sha256sum -c``
  reads) and beside it (``<archive>.manifest.json``, plus the archive's own digest). The manifest carries a MAC
  under the environment's audit key, which is never in the archive: whoever holds a backup identity still cannot
  forge an archive or rewrite the audit trail it holds;
- two backups never corrupt each other: they take turns on a lock in the backup directory and each commits by
  renaming (archive first, its manifest last: an archive without a manifest is not a backup);
- a restore checks everything before it changes anything: manifest, digest (corrupted or truncated), recipient
  (another key), environment, manifest MAC, every file's digest, the archived audit chain, that the archived store
  opens with the vault password and that it is not older than the store in place (unless forced). It then replaces
  the store in one rename (the store it replaces is kept beside), restores the audit log, catalog and CA files
  only where they are missing, and appends a ``restore`` event that chains onto the log in place;
- values never appear in messages: the store stays vault-encrypted inside the archive, and nothing here decrypts it
  except to check that it opens and to compare revisions.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import hmac
import io
import json
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

try:
    import pyrage
except ImportError:  # reported by _age() where a backup or restore needs it
    pyrage = None

from ansible_collections.keywarden.secrets.plugins.plugin_utils import audit as _audit
from ansible_collections.keywarden.secrets.plugins.plugin_utils.files import LockedError, atomic_write, exclusive_lock, fsync_dir

FORMAT = "keywarden-backup/1"
ARCHIVE_SUFFIX = ".tar.age"
MANIFEST_SUFFIX = ".manifest.json"
STORE_FILE = "secrets.vault"
VERSIONS_DIR = "versions"
LOCK_FILE = ".backup.lock"
DEFAULT_KEEP_COUNT = 14
DEFAULT_KEEP_DAYS = 35
DEFAULT_LOCK_TIMEOUT = 600.0
RUNBOOK = "docs/security/secrets/backup.md"
AUDIT_LOG = "audit/audit.log"
AUDIT_HEAD = AUDIT_LOG + _audit.HEAD_SUFFIX
_STAMP = "%Y%m%dT%H%M%S.%fZ"
_NAME_RE = re.compile(r"^keywarden-(?P<env>[a-z][a-z0-9_-]*)-(?P<stamp>\d{8}T\d{6}\.\d{6}Z)\.tar\.age$")
_VERSION_RE = re.compile(r"^secrets\.r(\d{6,})\.vault$")
_ENV_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
_SSH_TIMEOUT = 600


class BackupError(Exception):
    """A backup or restore problem: one line, names the file and what to do; never a value."""


@dataclass
class Sources:
    """Where an environment's backed-up material lives on the controller."""

    environment: str
    store_dir: str
    catalog: str
    audit_log: str
    audit_key_file: str
    ca_dir: str | None = None
    # HOST:PORT of the audit trail's syslog sink (keywarden_audit_syslog_server), where the log does not outlive the run
    audit_syslog_server: str | None = None


def sources_for(
    environment: str,
    root: str,
    inventory: str | None = None,
    store_dir: str | None = None,
    catalog: str | None = None,
    ca_dir: str | None = None,
    audit_log: str | None = None,
    audit_key_file: str | None = None,
) -> Sources:
    """The repository's layout for the command-line tools, like the inventories' group_vars: the store in
    ``inventories/<env>/store``, the CA files in ``inventories/<env>/ca``, the catalog in ``config/secrets``; the audit
    log and key from KEYWARDEN_AUDIT_LOG / KEYWARDEN_AUDIT_KEY_FILE as for the plugins."""
    inventory = inventory or os.path.join(root, "inventories", environment)
    store_dir = os.path.abspath(store_dir or os.path.join(inventory, "store"))
    audit_log = audit_log or os.environ.get("KEYWARDEN_AUDIT_LOG") or os.path.join(store_dir, "audit.log")
    audit_key_file = audit_key_file or os.environ.get("KEYWARDEN_AUDIT_KEY_FILE") or _audit.default_key_file(environment)
    return Sources(
        environment=environment,
        store_dir=store_dir,
        catalog=os.path.abspath(catalog or os.path.join(root, "config", "secrets", "catalog.yml")),
        audit_log=os.path.abspath(os.path.expanduser(audit_log)),
        audit_key_file=os.path.abspath(os.path.expanduser(audit_key_file)),
        ca_dir=os.path.abspath(ca_dir or os.path.join(inventory, "ca")),
    )


# ---- names, directories, retention ---------------------------------------------------------------------
def default_backup_dir(environment: str) -> str:
    """``$KEYWARDEN_BACKUP_DIR/<env>``, else ``~/.local/share/keywarden/backups/<env>``."""
    base = os.environ.get("KEYWARDEN_BACKUP_DIR") or os.path.join(os.path.expanduser("~"), ".local", "share", "keywarden", "backups")
    return os.path.join(base, environment)


def archive_name(environment: str, created: datetime.datetime) -> str:
    return f"keywarden-{environment}-{created.strftime(_STAMP)}{ARCHIVE_SUFFIX}"


def parse_name(name: str) -> tuple[str, datetime.datetime] | None:
    """(environment, creation time) of an archive file name, or None when it is not one."""
    match = _NAME_RE.match(name)
    if not match:
        return None
    created = datetime.datetime.strptime(match["stamp"], _STAMP).replace(tzinfo=datetime.UTC)
    return match["env"], created


def complete_backups(names: list[str], environment: str) -> list[tuple[datetime.datetime, str]]:
    """(created, archive name) of each archive of the environment whose manifest is present, newest first."""
    present = set(names)
    found = []
    for name in names:
        parsed = parse_name(name)
        if parsed and parsed[0] == environment and name + MANIFEST_SUFFIX in present:
            found.append((parsed[1], name))
    return sorted(found, reverse=True)


def to_prune(names: list[str], environment: str, now: datetime.datetime, keep_count: int, keep_days: int) -> list[str]:
    """Archives of the environment that retention drops: beyond the newest ``keep_count``, or older than ``keep_days``
    (0: no age limit). The newest backup is always kept, however old, so retention never leaves none.
    """
    if keep_count < 1:
        raise BackupError(f"keep_count is {keep_count}: keep at least 1 backup")
    doomed = []
    for rank, (created, name) in enumerate(complete_backups(names, environment)):
        if rank == 0:
            continue
        if rank >= keep_count or (keep_days > 0 and now - created > datetime.timedelta(days=keep_days)):
            doomed.append(name)
    return doomed


def list_backups(directory: str, environment: str) -> list[dict[str, str]]:
    """The environment's complete backups in a directory, newest first."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return [
        {
            "name": name,
            "archive": os.path.join(directory, name),
            "manifest": os.path.join(directory, name + MANIFEST_SUFFIX),
            "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        for created, name in complete_backups(names, environment)
    ]


def latest_backup(directory: str, environment: str) -> dict[str, str] | None:
    """The newest complete backup of the environment in a directory, or None."""
    found = list_backups(directory, environment)
    return found[0] if found else None


def latest_backup_hint(environment: str, directory: str | None = None) -> str:
    """What a "store is missing" message should add: the latest backup and the runbook that restores it."""
    directory = directory or default_backup_dir(environment)
    latest = latest_backup(directory, environment)
    if latest is None:
        return f"no backup of '{environment}' in {directory} (look on the backup host); restore one with playbooks/restore.yml, see {RUNBOOK}"
    return f"latest backup: {latest['archive']} ({latest['created']}); restore it with playbooks/restore.yml, see {RUNBOOK}"


# ---- keys -----------------------------------------------------------------------------------------------
def read_recipients(path: str) -> list[str]:
    """The age recipients (``age1…`` or SSH public keys) listed in a file, one a line; ``#`` starts a comment."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        raise BackupError(f"recipients file {path} does not exist: list the public keys (age1…) that may read the backups, see {RUNBOOK}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BackupError(f"recipients file {path} cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    recipients = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("AGE-SECRET-KEY-") or "PRIVATE KEY" in line:
            raise BackupError(f"recipients file {path} line {number} holds a private key: remove it now (and treat it as exposed); list public keys only")
        _recipient(line, f"recipients file {path} line {number}")
        recipients.append(line)
    if not recipients:
        raise BackupError(f"recipients file {path} lists no recipient: add at least one age public key (age1…)")
    return recipients


def _age() -> Any:
    """pyrage (age encryption), or a BackupError saying how to install it."""
    if pyrage is None:
        raise BackupError("backups need the Python package pyrage (age) on the controller: pip install pyrage==1.4.0 (`make venv` installs it)")
    return pyrage


def _recipient(text: str, where: str) -> Any:
    try:
        if text.startswith("age1"):
            return _age().x25519.Recipient.from_str(text)
        if text.startswith(("ssh-ed25519 ", "ssh-rsa ")):
            return _age().ssh.Recipient.from_str(text)
    except pyrage.RecipientError:
        pass
    raise BackupError(f"{where} is not an age recipient (age1… or ssh-ed25519/ssh-rsa public key)")


def read_identities(path: str) -> list[Any]:
    """The age identities of an identity file: ``AGE-SECRET-KEY-1…`` lines (age-keygen) or an OpenSSH private key."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise BackupError(f"identity file {path} does not exist: give the offline age identity of one of the backup's recipients") from None
    except OSError as exc:
        raise BackupError(f"identity file {path} cannot be read ({exc.strerror})") from None
    if raw.lstrip().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"):  # keywarden: allow (the format's header, no key)
        try:
            return [_age().ssh.Identity.from_buffer(raw)]
        except pyrage.IdentityError:
            raise BackupError(f"identity file {path} is an OpenSSH key that cannot be used (passphrase-protected?): decrypt with the age CLI instead") from None
    identities = []
    for number, text in enumerate(raw.decode("utf-8", "replace").splitlines(), start=1):
        line = text.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("AGE-PLUGIN-"):
            raise BackupError(f"identity file {path} line {number} is a plugin identity (hardware key): decrypt with the age CLI, see {RUNBOOK}")
        try:
            identities.append(_age().x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise BackupError(f"identity file {path} line {number} is not an age identity (AGE-SECRET-KEY-1…)") from None
    if not identities:
        raise BackupError(f"identity file {path} holds no age identity (AGE-SECRET-KEY-1…)")
    return identities


def key_id(key: bytes) -> str:
    """A public name for an audit key (it cannot be turned back into the key)."""
    return hmac.new(key, b"keywarden-audit-key-id-v1", hashlib.sha256).hexdigest()[:16]


def _manifest_mac(key: bytes, manifest: dict[str, Any]) -> str:
    body = json.dumps({k: v for k, v in manifest.items() if k != "mac"}, sort_keys=True, separators=(",", ":"))
    mac_key = hmac.new(key, b"keywarden-backup-manifest-v1", hashlib.sha256).digest()
    return hmac.new(mac_key, body.encode(), hashlib.sha256).hexdigest()


def _log_is_empty(path: str) -> bool:
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return True


def load_audit_key(sources: Sources) -> bytes:
    """The audit key. Made only when the log does not exist yet: a log whose key is gone is never given a new one."""
    try:
        return _audit.load_key(sources.audit_key_file, create=_log_is_empty(sources.audit_log))
    except _audit.AuditError as exc:
        raise BackupError(f"{exc}; the key is escrowed offline with the vault password, see {RUNBOOK}") from None


# ---- snapshot and archive ------------------------------------------------------------------------------
def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _vault_id(raw: bytes) -> str | None:
    header = raw.split(b"\n", 1)[0].decode("ascii", "replace").split(";")
    if len(header) >= 4 and header[0] == "$ANSIBLE_VAULT":
        return header[3].strip()
    return None


def _snapshot_audit(sources: Sources) -> tuple[bytes, bytes | None] | None:
    """The audit log and its head, read under the log's own lock so no append lands between the two (None: no log)."""
    try:
        fd = os.open(sources.audit_log, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BackupError(f"audit log {sources.audit_log} cannot be read ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        log = b"".join(chunks)
        try:
            head = _read(sources.audit_log + _audit.HEAD_SUFFIX)
        except FileNotFoundError:
            head = None
    finally:
        os.close(fd)
    return log, head


def read_store(sources: Sources) -> bytes:
    """The store file's bytes, refused unless it is an ansible-vault file under the environment's vault ID."""
    env = sources.environment
    store = os.path.join(sources.store_dir, STORE_FILE)
    try:
        raw = _read(store)
    except FileNotFoundError:
        raise BackupError(f"store {store} does not exist: nothing to back up for environment '{env}'") from None
    except OSError as exc:
        raise BackupError(f"store {store} cannot be read ({exc.strerror})") from None
    vault_id = _vault_id(raw)
    if vault_id != env:
        what = f"encrypted under vault ID '{vault_id}'" if vault_id else "not an ansible-vault file"
        raise BackupError(f"store {store} is {what}, not a store of environment '{env}': refusing to back it up")
    return raw


def snapshot(sources: Sources) -> list[tuple[str, bytes, int]]:
    """(path in the archive, bytes, mode) of everything backed up.

    No store lock is taken (a writer that found it held would fail): the store file is replaced by rename, so one
    read sees one whole revision, and a rollback copy pruned while listing is skipped. The store is read before the
    log, so the log holds at least every store write up to the revision archived.
    """
    members = [(f"store/{STORE_FILE}", read_store(sources), 0o600)]
    versions = os.path.join(sources.store_dir, VERSIONS_DIR)
    with contextlib.suppress(FileNotFoundError):
        for name in sorted(os.listdir(versions)):
            if _VERSION_RE.match(name):
                with contextlib.suppress(FileNotFoundError):
                    members.append((f"store/{VERSIONS_DIR}/{name}", _read(os.path.join(versions, name)), 0o600))
    try:
        members.append(("catalog/catalog.yml", _read(sources.catalog), 0o644))
    except OSError as exc:
        raise BackupError(f"catalog {sources.catalog} cannot be read ({exc.strerror}); set keywarden_catalog_path") from None
    audit_files = _snapshot_audit(sources)
    if audit_files is not None:
        log, head = audit_files
        members.append((AUDIT_LOG, log, 0o600))
        if head is not None:
            members.append((AUDIT_HEAD, head, 0o600))
    if sources.ca_dir and os.path.isdir(sources.ca_dir):
        for root, dirs, files in os.walk(sources.ca_dir):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(root, name)
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode):
                    raise BackupError(f"CA directory {sources.ca_dir} holds {path}, which is not a regular file: keep only regular files there")
                rel = os.path.relpath(path, sources.ca_dir).replace(os.sep, "/")
                members.append((f"ca/{rel}", _read(path), stat.S_IMODE(st.st_mode)))
    return members


def _verify_log_bytes(files: dict[str, bytes], key: bytes) -> tuple[int, int | None, str]:
    """Verify the audit log among archive members (in memory) with audit.verify; an archive may hold none."""
    if AUDIT_LOG not in files:
        return 0, None, "no audit log (there was none when the backup was made)"
    log, head = files[AUDIT_LOG], files.get(AUDIT_HEAD)
    with tempfile.TemporaryDirectory(prefix="keywarden-audit-") as tmp:
        path = os.path.join(tmp, "audit.log")
        with open(path, "wb") as handle:
            handle.write(log)
        if head is not None:
            with open(path + _audit.HEAD_SUFFIX, "wb") as handle:
                handle.write(head)
        return _audit.verify(path, key)


def _tar(top: str, members: list[tuple[str, bytes, int]], mtime: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for path, data, mode in members:
            parts = path.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                directory = "/".join(parts[:depth])
                if directory not in dirs:
                    dirs.add(directory)
                    tar.addfile(_tarinfo(f"{top}/{directory}", tarfile.DIRTYPE, 0o700, 0, mtime))
            tar.addfile(_tarinfo(f"{top}/{path}", tarfile.REGTYPE, mode, len(data), mtime), io.BytesIO(data))
    return buffer.getvalue()


def _tarinfo(name: str, kind: bytes, mode: int, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = mtime
    return info


def build_manifest(
    sources: Sources, members: list[tuple[str, bytes, int]], name: str, created: datetime.datetime, recipients: list[str], key: bytes
) -> dict[str, Any]:
    files = {path: {"sha256": _sha256(data), "size": len(data), "mode": f"{mode:04o}"} for path, data, mode in members}
    lines, bad, message = _verify_log_bytes({p: d for p, d, _mode in members}, key)
    manifest = {
        "format": FORMAT,
        "name": name.removesuffix(ARCHIVE_SUFFIX),
        "environment": sources.environment,
        "created": created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "host": socket.gethostname(),
        "recipients": recipients,
        "audit": {"key_id": key_id(key), "lines": lines, "chain": "intact" if bad is None else f"broken: {message}"},
        "store": {"vault_id": sources.environment, "sha256": files[f"store/{STORE_FILE}"]["sha256"]},
        "ca": any(p.startswith("ca/") for p in files),
        "files": files,
    }
    manifest["mac"] = _manifest_mac(key, manifest)
    return manifest


def _sums(manifest: dict[str, Any]) -> bytes:
    return "".join(f"{meta['sha256']}  {path}\n" for path, meta in sorted(manifest["files"].items())).encode()


def make_archive(members: list[tuple[str, bytes, int]], manifest: dict[str, Any], recipients: list[str]) -> bytes:
    """The age-encrypted tar: ``<name>/`` holding manifest.json, SHA256SUMS and the members."""
    inner = [
        ("manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n", 0o600),
        ("SHA256SUMS", _sums(manifest), 0o600),
        *members,
    ]
    created = datetime.datetime.strptime(manifest["created"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.UTC)
    plaintext = _tar(manifest["name"], inner, int(created.timestamp()))
    try:
        return _age().encrypt(plaintext, [_recipient(r, "recipient") for r in recipients])
    except pyrage.EncryptError as exc:
        raise BackupError(f"age encryption failed ({exc})") from None


# ---- files ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(directory: str, timeout: float) -> Iterator[None]:
    """Hold the backup directory's lock; wait up to ``timeout`` seconds for another backup to finish."""
    try:
        with exclusive_lock(os.path.join(directory, LOCK_FILE), timeout, "keywarden backup"):
            yield
    except LockedError as exc:
        raise BackupError(f"backup directory {directory} is held by {exc.holder} for over {timeout:.0f} s; wait for it to finish") from None


def _remove_leftovers(directory: str, environment: str) -> list[str]:
    """Under the lock: temp files of a crashed backup, and archives whose manifest never landed (not backups)."""
    removed = []
    names = os.listdir(directory)
    present = set(names)
    for name in names:
        crashed_tmp = name.startswith(f".keywarden-{environment}-") and ".tmp." in name
        parsed = parse_name(name)
        orphan = parsed is not None and parsed[0] == environment and name + MANIFEST_SUFFIX not in present
        if crashed_tmp or orphan:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))
            removed.append(name)
    return removed


def _prune_local(directory: str, environment: str, keep_count: int, keep_days: int, now: datetime.datetime) -> list[str]:
    doomed = to_prune(os.listdir(directory), environment, now, keep_count, keep_days)
    for name in doomed:
        for path in (os.path.join(directory, name + MANIFEST_SUFFIX), os.path.join(directory, name)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return doomed


# ---- the backup host (ssh) -----------------------------------------------------------------------------
def split_remote(remote: str) -> tuple[str, str]:
    """``[user@]host:directory`` → (ssh destination, directory)."""
    host, sep, directory = remote.partition(":")
    if not sep or not host or not directory or host.startswith("-"):
        raise BackupError(f"backup host '{remote}' is not [user@]host:/directory")
    return host, directory


def _ssh(remote_host: str, ssh_args: list[str], script: str, stdin: bytes = b"") -> bytes:
    argv = ["ssh", "-o", "BatchMode=yes", *ssh_args, "--", remote_host, f"sh -c {shlex.quote(script)}"]
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=_SSH_TIMEOUT, check=False)
    except FileNotFoundError:
        raise BackupError("ssh is not installed on this controller (apt-get install openssh-client)") from None
    except subprocess.TimeoutExpired:
        raise BackupError(f"backup host {remote_host} did not answer within {_SSH_TIMEOUT} s") from None
    if proc.returncode != 0:
        why = (proc.stderr.decode("utf-8", "replace").strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise BackupError(f"backup host {remote_host}: {why}")
    return proc.stdout


_UPLOAD = """set -eu
umask 077
d={dir}; n={name}
mkdir -p "$d"
t="$d/.$n.part.$$"
trap 'rm -f "$t" "$t.m"' EXIT
cat >"$t"
s=$(sha256sum "$t" | cut -d' ' -f1)
[ "$s" = {sha} ] || {{ echo "the copy of $n arrived with sha256 $s, not the one sent: not kept" >&2; exit 3; }}
printf '%s' {manifest} >"$t.m"
sync "$t" "$t.m" 2>/dev/null || sync
mv -f "$t" "$d/$n"
mv -f "$t.m" "$d/$n{msuffix}"
trap - EXIT
ls -1a "$d"
"""


def ship(remote: str, ssh_args: list[str], archive: str, manifest_text: str, archive_sha256: str) -> list[str]:
    """Copy an archive and its manifest to the backup host: checked by digest there, renamed into place (manifest
    last); returns the names in the remote directory."""
    host, directory = split_remote(remote)
    name = os.path.basename(archive)
    script = _UPLOAD.format(
        dir=shlex.quote(directory), name=shlex.quote(name), sha=shlex.quote(archive_sha256), manifest=shlex.quote(manifest_text), msuffix=MANIFEST_SUFFIX
    )
    listing = _ssh(host, ssh_args, script, stdin=_read(archive))
    return listing.decode("utf-8", "replace").split()


def prune_remote(remote: str, ssh_args: list[str], names: list[str], environment: str, keep_count: int, keep_days: int, now: datetime.datetime) -> list[str]:
    host, directory = split_remote(remote)
    doomed = to_prune(names, environment, now, keep_count, keep_days)
    if doomed:
        paths = " ".join(shlex.quote(f"{directory}/{n}{suffix}") for n in doomed for suffix in (MANIFEST_SUFFIX, ""))
        _ssh(host, ssh_args, f"rm -f -- {paths}")
    return doomed


def fetch_latest(remote: str, ssh_args: list[str], environment: str, dest_dir: str) -> str:
    """Copy the newest complete backup of the environment from the backup host into dest_dir; returns its path."""
    host, directory = split_remote(remote)
    names = _ssh(host, ssh_args, f"ls -1a {shlex.quote(directory)}").decode("utf-8", "replace").split()
    found = complete_backups(names, environment)
    if not found:
        raise BackupError(f"backup host {remote} holds no backup of environment '{environment}'")
    name = found[0][1]
    os.makedirs(dest_dir, mode=0o700, exist_ok=True)
    for fetched in (name + MANIFEST_SUFFIX, name):
        data = _ssh(host, ssh_args, f"cat {shlex.quote(directory + '/' + fetched)}")
        atomic_write(os.path.join(dest_dir, fetched), data)
    return os.path.join(dest_dir, name)


# ---- backup ---------------------------------------------------------------------------------------------
def create_backup(
    sources: Sources,
    recipients_file: str,
    backup_dir: str,
    who: dict[str, Any],
    keep_count: int = DEFAULT_KEEP_COUNT,
    keep_days: int = DEFAULT_KEEP_DAYS,
    remote: str | None = None,
    ssh_args: list[str] | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    host: str | None = None,
) -> dict[str, Any]:
    """Make, commit, ship and prune one backup of an environment, and record it in the audit log."""
    env = sources.environment
    if not _ENV_RE.match(env):
        raise BackupError(f"environment name '{env}' is not valid (lower case letters, digits, '-' and '_')")
    if keep_count < 1 or keep_days < 0:
        raise BackupError(f"retention keep_count={keep_count} keep_days={keep_days}: keep_count must be 1 or more, keep_days 0 (no limit) or more")
    ssh_args = list(ssh_args or [])
    if remote:
        split_remote(remote)
    recipients = read_recipients(recipients_file)
    read_store(sources)  # before anything is made (an audit key on first use, the backup directory)
    key = load_audit_key(sources)
    auditor = _audit.Auditor(_audit.AuditLog(sources.audit_log, key, syslog_server=sources.audit_syslog_server), env, who, host=host)
    try:
        # the manifest is signed with the key the log is signed with: a key made here is settled (written, or the
        # one a concurrent first run wrote) before it signs anything
        key = auditor.log.settle_key()
    except _audit.AuditError as exc:
        raise BackupError(f"{exc}; no backup was made") from None
    try:
        os.makedirs(backup_dir, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"backup directory {backup_dir} cannot be created ({exc.strerror}); set keywarden_backup_dir") from None
    with _locked(backup_dir, lock_timeout):
        leftovers = _remove_leftovers(backup_dir, env)
        created = datetime.datetime.now(datetime.UTC)
        name = archive_name(env, created)
        while os.path.exists(os.path.join(backup_dir, name)):  # a clock that stepped back
            created += datetime.timedelta(microseconds=1)
            name = archive_name(env, created)
        members = snapshot(sources)
        manifest = build_manifest(sources, members, name, created, recipients, key)
        blob = make_archive(members, manifest, recipients)
        beside = {**manifest, "archive": {"file": name, "sha256": _sha256(blob), "size": len(blob)}}
        manifest_text = json.dumps(beside, indent=1, sort_keys=True) + "\n"
        try:
            auditor.log.check_writable()
        except _audit.AuditError as exc:
            raise BackupError(f"{exc}; no backup was made") from None
        path = os.path.join(backup_dir, name)
        atomic_write(path, blob)
        atomic_write(path + MANIFEST_SUFFIX, manifest_text.encode())  # the commit point: now it is a backup
        fsync_dir(backup_dir)
        detail: dict[str, Any] = {
            "archive": name,
            "archive_sha256": beside["archive"]["sha256"],
            "size": len(blob),
            "files": len(members),
            "store_sha256": manifest["store"]["sha256"],
            "audit_lines": manifest["audit"]["lines"],
            "recipients": len(recipients),
            "remote": remote or None,
        }
        pruned = _prune_local(backup_dir, env, keep_count, keep_days, created)
        remote_pruned: list[str] = []
        try:
            if remote:
                listing = ship(remote, ssh_args, path, manifest_text, beside["archive"]["sha256"])
                remote_pruned = prune_remote(remote, ssh_args, listing, env, keep_count, keep_days, created)
        except BackupError as exc:
            auditor.record("backup", outcome="error", **detail, error=str(exc))
            raise BackupError(f"backup {path} was made, but copying it to the backup host failed: {exc}") from None
        detail.update(pruned=len(pruned), remote_pruned=len(remote_pruned))
        try:
            auditor.record("backup", **detail)
        except _audit.AuditError as exc:
            raise BackupError(f"backup {path} was made but {exc}") from None
    return {
        "archive": path,
        "manifest": path + MANIFEST_SUFFIX,
        "name": name,
        "sha256": beside["archive"]["sha256"],
        "size": len(blob),
        "files": len(members),
        "audit_chain": manifest["audit"]["chain"],
        "remote": remote or None,
        "pruned": pruned,
        "remote_pruned": remote_pruned,
        "leftovers_removed": leftovers,
    }


# ---- verification ---------------------------------------------------------------------------------------
@dataclass
class Verified:
    """An archive that passed every check that needs no vault password: its manifest and its files, in memory."""

    archive: str
    sha256: str
    manifest: dict[str, Any]
    files: dict[str, bytes]


def read_manifest(archive: str) -> dict[str, Any]:
    path = archive + MANIFEST_SUFFIX
    try:
        with open(path, "rb") as handle:
            manifest = json.loads(handle.read())
    except FileNotFoundError:
        raise BackupError(f"manifest {path} does not exist: copy it from the backup host together with the archive") from None
    except (OSError, ValueError):
        raise BackupError(f"manifest {path} is not readable JSON (corrupted): copy it again from the backup host") from None
    archive_meta = manifest.get("archive") if isinstance(manifest, dict) else None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or not isinstance(archive_meta, dict)
        or not isinstance(archive_meta.get("size"), int)
        or not isinstance(archive_meta.get("sha256"), str)
        or not isinstance(manifest.get("files"), dict)
        or not isinstance(manifest.get("name"), str)
    ):
        raise BackupError(f"manifest {path} is not a {FORMAT} manifest (corrupted?): copy it again from the backup host")
    return manifest


def verify_archive(archive: str, identity_file: str, environment: str, key: bytes) -> Verified:
    """Check an archive against its manifest, decrypt it and check every file: a ``Verified`` or one BackupError."""
    manifest = read_manifest(archive)
    if manifest.get("environment") != environment:
        raise BackupError(f"archive {archive} is a backup of environment '{manifest.get('environment')}', not '{environment}': refusing to restore it")
    try:
        blob = _read(archive)
    except OSError as exc:
        raise BackupError(f"archive {archive} cannot be read ({exc.strerror})") from None
    want = manifest["archive"]
    digest = _sha256(blob)
    if len(blob) < want["size"]:
        raise BackupError(f"archive {archive} is truncated ({len(blob)} of {want['size']} bytes): fetch it again from the backup host")
    if digest != want["sha256"]:
        raise BackupError(f"archive {archive} is corrupted (its SHA-256 is not the one in {archive + MANIFEST_SUFFIX}): fetch it again from the backup host")
    identities = read_identities(identity_file)
    try:
        plaintext = _age().decrypt(blob, identities)
    except pyrage.DecryptError as exc:
        if "No matching keys" in str(exc):
            to = ", ".join(manifest.get("recipients") or []) or "unknown recipients"
            raise BackupError(f"archive {archive} is encrypted to another key: {identity_file} holds none of its recipients ({to})") from None
        raise BackupError(f"archive {archive} does not decrypt ({exc}): corrupted after its manifest was written") from None
    files = _untar(archive, plaintext, manifest["name"])
    inner_raw = files.pop("manifest.json", None)
    sums = files.pop("SHA256SUMS", None)
    try:
        inner = json.loads(inner_raw or b"")
    except ValueError:
        inner = None
    if not isinstance(inner, dict) or inner != {k: v for k, v in manifest.items() if k != "archive"}:
        raise BackupError(f"archive {archive}: the manifest inside differs from {archive + MANIFEST_SUFFIX}: refusing it")
    made_under = inner["audit"].get("key_id") if isinstance(inner.get("audit"), dict) else None
    if made_under != key_id(key):
        raise BackupError(
            f"archive {archive} was made under audit key {made_under}, and the key given is {key_id(key)}: "
            f"give the environment's escrowed audit key (KEYWARDEN_AUDIT_KEY_FILE)"
        )
    if not hmac.compare_digest(str(inner.get("mac")), _manifest_mac(key, inner)):
        raise BackupError(f"archive {archive}: its manifest MAC does not match under the audit key: not made by keywarden for '{environment}', refusing it")
    if sums != _sums(inner) or set(files) != set(inner["files"]) or f"store/{STORE_FILE}" not in files:
        raise BackupError(f"archive {archive}: its files differ from its manifest: refusing it")
    for path, meta in inner["files"].items():
        if _sha256(files[path]) != meta["sha256"]:
            raise BackupError(f"archive {archive}: {path} does not match its SHA-256 in the manifest: refusing it")
    return Verified(archive, digest, inner, files)


def _untar(archive: str, plaintext: bytes, top: str) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(plaintext), mode="r:") as tar:
            for info in tar:
                parts = info.name.split("/")
                if info.name.startswith("/") or ".." in parts or parts[0] != top:
                    raise BackupError(f"archive {archive} holds a path outside {top}/ ({info.name}): refusing it")
                if info.isdir():
                    continue
                if not info.isreg():
                    raise BackupError(f"archive {archive} holds {info.name}, which is not a regular file: refusing it")
                handle = tar.extractfile(info)
                files["/".join(parts[1:])] = handle.read() if handle else b""
    except tarfile.TarError:
        raise BackupError(f"archive {archive} decrypts to a damaged tar: refusing it") from None
    return files


# ---- restore --------------------------------------------------------------------------------------------
def _stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


def _store_revision(store_dir: str, environment: str, vault_secrets: list[tuple[str, Any]] | None) -> int:
    # the store code (and through it ansible's vault) only where a restore needs it: a backup never decrypts
    from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import Store  # noqa: PLC0415

    return int(Store(store_dir, environment, vault_secrets).read().get("revision") or 0)


def _rotation_holder(store_dir: str, environment: str, vault_secrets: list[tuple[str, Any]] | None) -> str | None:
    """Why a restore must wait: a live rotation holds the store in place (its lock is a record in the store), else None.

    A dead run's lock is the next rotation's to take over; an unreadable store in place is what a restore replaces.
    """
    from ansible_collections.keywarden.secrets.plugins.plugin_utils.rotation import check_lock, run_identity  # noqa: PLC0415
    from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import Store, StoreError  # noqa: PLC0415

    try:
        data = Store(store_dir, environment, vault_secrets).read()
    except StoreError:
        return None
    try:
        check_lock(data, run_identity(os.getpid()), environment)
    except StoreError as exc:
        return str(exc)
    return None


def restore(
    archive: str,
    identity_file: str,
    sources: Sources,
    vault_secrets: list[tuple[str, Any]] | None,
    who: dict[str, Any],
    force: bool = False,
    lock_timeout: float = 30.0,
    host: str | None = None,
    check_only: bool = False,
    store: Any = None,
) -> dict[str, Any]:
    """Verify an archive, then restore it atomically; nothing on disk changes unless every check passed.

    ``check_only``: every check, then stop (what ``--check`` does): the archive is proven restorable.
    ``store``: the environment's store object when its backend is durable (``GitStore``): under its lock the local
    file is first brought up to date (or the clone refused), the checks then see the remote's store, and the
    restored file is pushed as a commit before it is put in place locally (the push is the commit point).
    """
    from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import Store, StoreError  # noqa: PLC0415

    env = sources.environment
    try:
        key = _audit.load_key(sources.audit_key_file, create=False)
    except _audit.AuditError as exc:
        raise BackupError(f"{exc}: a restore needs the audit key the backups were made under (escrowed offline, see {RUNBOOK})") from None
    checked = verify_archive(archive, identity_file, env, key)
    files = checked.files
    lines, bad, message = _verify_log_bytes(files, key)
    if bad is not None and not force:
        raise BackupError(f"archive {archive}: its audit log fails verification ({message}); restore it anyway with force")
    store_path = os.path.join(sources.store_dir, STORE_FILE)
    with tempfile.TemporaryDirectory(prefix="keywarden-restore-") as tmp:
        atomic_write(os.path.join(tmp, STORE_FILE), files[f"store/{STORE_FILE}"])
        try:
            archived_revision = _store_revision(tmp, env, vault_secrets)
        except StoreError as exc:
            raise BackupError(
                f"archive {archive}: its store does not open ({str(exc).replace(tmp + '/' + STORE_FILE, 'the archived store')}); "
                f"after a rekey give the vault password in effect on {checked.manifest['created'][:10]}, see {RUNBOOK}"
            ) from None
    seen: dict[str, Any] = {}
    in_place = _check_in_place(archive, sources, vault_secrets, archived_revision, force, seen)
    if check_only:
        return {
            "archive": os.path.basename(archive),
            "archive_sha256": checked.sha256,
            "backup_created": checked.manifest["created"],
            "store_revision": archived_revision,
            "replaced_revision": in_place,
            "archived_audit_chain": message,
            "store": store_path,
        }
    busy = _rotation_holder(sources.store_dir, env, vault_secrets)
    if busy is not None:
        raise BackupError(f"{busy}; nothing was restored: restore once that rotation has finished")
    auditor = _audit.Auditor(_audit.AuditLog(sources.audit_log, key, syslog_server=sources.audit_syslog_server), env, who, host=host)
    log_missing = _log_is_empty(sources.audit_log)
    try:
        auditor.log.check_writable()  # may leave an empty log: that still counts as missing below
    except _audit.AuditError as exc:
        raise BackupError(f"{exc}; nothing was restored") from None
    os.makedirs(sources.store_dir, mode=0o700, exist_ok=True)
    if store is None:
        store = Store(sources.store_dir, env, vault_secrets, lock_timeout=lock_timeout, holder=f"restore of {os.path.basename(archive)}")
    raw = files[f"store/{STORE_FILE}"]
    try:
        with store.lock():
            if store.durable:
                store.refresh()  # the remote's store, or a refusal (a stale clone): the checks below see the latest
                busy = _rotation_holder(sources.store_dir, env, vault_secrets)
                if busy is not None:
                    raise BackupError(f"{busy}; nothing was restored: restore once that rotation has finished")
            replaced_revision = _check_in_place(archive, sources, vault_secrets, archived_revision, force, seen)  # again: no writer can run now
            same = os.path.exists(store_path) and _read(store_path) == raw
            token = None if same else store.begin_replace(raw, archived_revision, f"from {os.path.basename(archive)}")
            try:
                replaced_dir = None if same else _swap_store(sources.store_dir, files)
            except OSError as exc:
                if token is None:
                    raise
                raise BackupError(
                    f"store revision {archived_revision} from {archive} is on {store.backend_text}, but the local file could not be "
                    f"replaced ({exc.strerror or exc}): free the space, then git pull (or run any playbook with keywarden_store_git_pull)"
                ) from None
            if token is not None:
                store.end_replace(token, raw)
            restored = _restore_missing(sources, checked.manifest, files, log_missing)
            log_relation = _log_relation(sources.audit_log, files, AUDIT_LOG in restored)
            detail = {
                "archive": os.path.basename(archive),
                "archive_sha256": checked.sha256,
                "backup_created": checked.manifest["created"],
                "store_revision": archived_revision,
                "replaced_revision": replaced_revision,
                "replaced_kept_in": replaced_dir,
                "store_changed": not same,
                "store_backend": store.backend_text,
                "forced": force,
                "restored": sorted(restored),
                "audit_log": log_relation,
            }
            try:
                auditor.record("restore", **detail)
            except _audit.AuditError as exc:
                raise BackupError(f"store {store_path} was restored from {archive} but {exc}") from None
    except StoreError as exc:
        raise BackupError(f"{exc}; nothing was restored") from None
    if log_missing and bad is None:
        # the log is the archived one, verified above, plus the event AuditLog.append chained onto it
        chain_bad, chain_message = None, f"{lines + 1} lines, chain intact, MACs valid (the archived log and the restore event)"
    else:
        _count, chain_bad, chain_message = _audit.verify(sources.audit_log, key)
    return {
        **detail,
        "store": store_path,
        "audit_chain": chain_message if chain_bad is None else f"BROKEN: {chain_message}",
        "audit_chain_ok": chain_bad is None,
        "archived_audit_chain": message,
    }


def _check_in_place(
    archive: str, sources: Sources, vault_secrets: list[tuple[str, Any]] | None, archived: int, force: bool, seen: dict[str, Any]
) -> int | None:
    """Revision of the store in place (None when there is none, or it does not open and force is given); refuses an
    older archive unless forced. ``seen`` remembers the bytes checked, so a second check parses only a changed store."""
    from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import StoreError  # noqa: PLC0415

    try:
        digest = _sha256(_read(os.path.join(sources.store_dir, STORE_FILE)))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BackupError(f"store {sources.store_dir}/{STORE_FILE} cannot be read ({exc.strerror}); nothing was restored") from None
    if seen.get("sha256") == digest:
        return seen["revision"]
    try:
        current = _store_revision(sources.store_dir, sources.environment, vault_secrets)
    except StoreError as exc:
        if force:
            return None
        raise BackupError(f"{exc}: cannot tell whether it is newer than archive {archive}; restore over it with force") from None
    seen.update(sha256=digest, revision=current)
    if archived < current and not force:
        raise BackupError(
            f"archive {archive} holds store revision {archived}, older than the store in place (revision {current}): "
            f"refusing to roll back; restore it anyway with force"
        )
    return current


def _swap_store(store_dir: str, files: dict[str, bytes]) -> str | None:
    """Put the archived store and its rollback copies in place; the store file is replaced by one rename.

    The store in place (and its rollback copies) is kept in ``replaced-<stamp>/``. A crash before the final rename
    leaves the old store in place (a rerun finishes); after it, the restored one.
    """
    stamp = _stamp()
    staging = os.path.join(store_dir, f".restore-{stamp}-{os.getpid()}")
    os.mkdir(staging, 0o700)
    try:
        os.mkdir(os.path.join(staging, VERSIONS_DIR), 0o700)
        prefix = f"store/{VERSIONS_DIR}/"
        for path, data in files.items():
            if path.startswith(prefix):
                atomic_write(os.path.join(staging, VERSIONS_DIR, path[len(prefix) :]), data)
        atomic_write(os.path.join(staging, STORE_FILE), files[f"store/{STORE_FILE}"])
        fsync_dir(os.path.join(staging, VERSIONS_DIR))
        fsync_dir(staging)
        current = os.path.join(store_dir, STORE_FILE)
        versions = os.path.join(store_dir, VERSIONS_DIR)
        replaced = None
        if os.path.exists(current) or os.path.exists(versions):
            replaced = os.path.join(store_dir, f"replaced-{stamp}")
            os.mkdir(replaced, 0o700)
            if os.path.exists(current):
                os.link(current, os.path.join(replaced, STORE_FILE))
            if os.path.exists(versions):
                os.rename(versions, os.path.join(replaced, VERSIONS_DIR))
            fsync_dir(replaced)
        os.rename(os.path.join(staging, VERSIONS_DIR), versions)
        os.replace(os.path.join(staging, STORE_FILE), current)
        fsync_dir(store_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return replaced


def _restore_missing(sources: Sources, manifest: dict[str, Any], files: dict[str, bytes], log_missing: bool) -> list[str]:
    """Write the archived audit log (when the log in place is missing or empty), catalog and CA files (where missing).

    The catalog and CA files in place are newer or come from git: they are never overwritten.
    """
    targets = [("catalog/catalog.yml", sources.catalog)]
    if log_missing:
        targets += [(AUDIT_LOG, sources.audit_log), (AUDIT_HEAD, sources.audit_log + _audit.HEAD_SUFFIX)]
    if sources.ca_dir:
        targets += [(path, os.path.join(sources.ca_dir, *path[3:].split("/"))) for path in sorted(files) if path.startswith("ca/")]
    restored = []
    for member, dest in targets:
        if member not in files or (os.path.exists(dest) and not member.startswith("audit/")):
            continue
        os.makedirs(os.path.dirname(dest) or ".", mode=0o700, exist_ok=True)
        atomic_write(dest, files[member], int(manifest["files"][member]["mode"], 8))
        restored.append(member)
    return restored


def _log_relation(log_path: str, files: dict[str, bytes], restored: bool) -> str:
    if restored:
        return "restored from the archive"
    archived = files.get(AUDIT_LOG, b"")
    try:
        with open(log_path, "rb") as handle:
            in_place = handle.read(len(archived))
    except OSError:
        return "unreadable"
    return "kept: it continues the archived log" if in_place == archived else "kept: it does NOT continue the archived log (another history)"
