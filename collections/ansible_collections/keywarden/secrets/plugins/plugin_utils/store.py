# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The encrypted secret store of one environment.

Guarantees:
- the file is ansible-vault (1.2, AES256) encrypted under the vault ID named like the environment, and
  only the password of that vault ID is ever tried on it (vault_id_match);
- writes are atomic: encrypt to a temp file in the same directory, fsync, keep the old file as a
  numbered rollback copy, rename over, fsync the directory. A crash at any point leaves either the old
  or the new store, never a torn one;
- one writer at a time: an exclusive lock on ``<store>.lock``; a second writer is refused with a message
  naming the holder;
- no write without its audit record: with an auditor, the records of a write are appended (fsync'ed) before
  the store is written, and the store keeps the log's position after them (``audit_anchor``: seq and hash of
  the last record) inside its encrypted data, so that lines cut off the log's end show against the store;
- a store that is gone is never silently made anew: reading it names the latest revision and the restore
  runbook (``missing_store_message``); creating a first store is an explicit act of the caller;
- values never appear in exceptions or messages.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import errno
import os
import re
import secrets as _secrets
import time
from collections.abc import Iterator
from typing import Any

import yaml
from ansible.parsing.vault import VaultAES256, VaultSecret, format_vaulttext_envelope, parse_vaulttext_envelope

from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import AuditError, Auditor, anchor
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import YAML_DUMPER, YAML_LOADER, login_names
from ansible_collections.keywarden.secrets.plugins.plugin_utils.files import LockedError, atomic_write, exclusive_lock, remove_crashed_temps

STORE_FORMAT = 1
STORE_FILE = "secrets.vault"
VERSIONS_DIR = "versions"
DEFAULT_KEEP = 10
STAGES = ("current", "pending", "previous")
# `live` is what consumers should hold right now: `pending` once a rotation has started distributing
# it (from then on the rotation only rolls forward), `current` otherwise.
READ_STAGES = (*STAGES, "live")
DISTRIBUTING = "distributing"
_VERSION_RE = re.compile(r"^secrets\.r(\d{6,})\.vault$")
# Where the store keeps the audit log position of its last write (inside the encrypted data).
ANCHOR_KEY = "audit_anchor"
RESTORE_RUNBOOK = "docs/security/secrets/backup.md, playbooks/restore.yml"
CREATE_HINT = "ansible-playbook playbooks/init.yml -e keywarden_store_create=true"


class StoreError(Exception):
    """A store problem. The message is one line, names the file and says what to do; never a value."""


class StoreLockedError(StoreError):
    """Another process holds the store's lock."""


def utcnow() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def generate_value(length: int, alphabet: str) -> str:
    """A random value from the OS CSPRNG."""
    return "".join(_secrets.choice(alphabet) for _position in range(length))


def generate_key_id() -> str:
    """A fresh name for an API key (not secret): the day it was made and 32 random bits, e.g. kw-20261128-3fa2c1d0.
    Issuers revoke keys by it, and nginx logs it for the key a request used."""
    return f"kw-{datetime.datetime.now(datetime.UTC):%Y%m%d}-{_secrets.token_hex(4)}"


def _hint(exc: OSError) -> str:
    return "free disk space" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else "fix the permissions of the store directory"


def vault_hint(environment: str) -> str:
    return f"run with --vault-id {environment}@scripts/secrets/vault-password-client"


def pick_secret(vault_secrets: list[tuple[str, Any]] | None, environment: str) -> VaultSecret:
    """The vault secret whose ID is the environment's name; no other is ever used (vault_id_match)."""
    for vault_id, secret in vault_secrets or []:
        if vault_id == environment:
            return secret
    known = ", ".join(sorted({vid for vid, _secret in vault_secrets or []})) or "none"
    raise StoreError(f"no vault password for vault ID '{environment}' (passwords given for: {known}); {vault_hint(environment)}")


def missing_store_message(store: Store) -> str:
    """The one-line error for a store that does not exist: every caller (catalog check, init, reads) says this."""
    versions = store.versions()
    latest = f"latest revision in versions/: {versions[-1]}" if versions else f"no revision in {store.versions_dir}"
    return (
        f"store {store.path} of environment '{store.environment}' does not exist ({latest}): restore it ({RESTORE_RUNBOOK}); "
        f"only for a new environment, create it on purpose: {CREATE_HINT}"
    )


class Store:
    """One environment's store file. Read with ``read()``; change inside ``with store.update() as data:``."""

    # whether the durable copy is elsewhere (a git remote): whole-file writes then go through refresh/begin_replace
    durable = False

    def __init__(
        self,
        store_dir: str,
        environment: str,
        vault_secrets: list[tuple[str, Any]] | None,
        keep: int = DEFAULT_KEEP,
        lock_timeout: float = 0.0,
        holder: str = "",
        audit: Auditor | None = None,
    ) -> None:
        self.dir = os.path.abspath(store_dir)
        self.path = os.path.join(self.dir, STORE_FILE)
        self.lock_path = self.path + ".lock"
        self.versions_dir = os.path.join(self.dir, VERSIONS_DIR)
        self.environment = environment
        self._vault_secrets = vault_secrets
        self.keep = keep
        self.lock_timeout = lock_timeout
        self.holder = holder
        # plugins always set it (plugin_utils.context.store_for); every write is then audited
        self.audit = audit

    # ---- reading -------------------------------------------------------------------------------
    def vault_secret(self) -> VaultSecret:
        """The one vault secret this store may be opened with (its environment's)."""
        return pick_secret(self._vault_secrets, self.environment)

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def _decrypt(self, raw: bytes, path: str) -> dict[str, Any]:
        if not raw.startswith(b"$ANSIBLE_VAULT;"):
            raise StoreError(f"store {path} is not an ansible-vault file (corrupted or never encrypted); restore a copy from {self.versions_dir}")
        try:
            ciphertext, version, cipher, vault_id = parse_vaulttext_envelope(raw, default_vault_id="default")
        except Exception:
            raise StoreError(f"store {path} has a damaged vault header; restore a copy from {self.versions_dir}") from None
        if vault_id != self.environment:
            raise StoreError(
                f"store {path} is encrypted under vault ID '{vault_id}', not '{self.environment}': "
                f"refusing to use it for environment '{self.environment}' (wrong inventory or wrong store file?)"
            )
        if cipher != "AES256":
            raise StoreError(f"store {path} uses cipher {cipher}; only AES256 is supported")
        secret = pick_secret(self._vault_secrets, self.environment)
        try:
            plaintext = VaultAES256.decrypt(ciphertext, secret)
        except Exception:
            # wrong password and tampered ciphertext look the same (HMAC mismatch)
            raise StoreError(
                f"store {path} cannot be decrypted with the vault password for '{self.environment}': "
                f"wrong password, or the file is corrupted (rollback copies: {self.versions_dir})"
            ) from None
        try:
            data = yaml.load(plaintext, Loader=YAML_LOADER)  # noqa: S506 - a safe loader (libyaml's when available)
        except yaml.YAMLError:
            raise StoreError(f"store {path} decrypts but is not valid YAML; restore a copy from {self.versions_dir}") from None
        if not isinstance(data, dict) or data.get("keywarden_store_format") != STORE_FORMAT or not isinstance(data.get("secrets"), dict):
            raise StoreError(f"store {path} is not a keywarden store (format {STORE_FORMAT}); restore a copy from {self.versions_dir}")
        if data.get("environment") != self.environment:
            raise StoreError(f"store {path} belongs to environment '{data.get('environment')}', not '{self.environment}'")
        return data

    def read(self, missing_ok: bool = False) -> dict[str, Any]:
        """The decrypted store. A missing store is an error unless ``missing_ok`` (then an empty store)."""
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            if missing_ok:
                return self.empty()
            raise StoreError(missing_store_message(self)) from None
        except OSError as exc:
            raise StoreError(f"store {self.path} cannot be read ({exc.strerror})") from None
        return self._decrypt(raw, self.path)

    def empty(self) -> dict[str, Any]:
        return {"keywarden_store_format": STORE_FORMAT, "environment": self.environment, "revision": 0, "updated": None, "secrets": {}}

    # ---- locking ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One writer at a time (files.exclusive_lock on <store>.lock); a second is told who holds it."""
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            with exclusive_lock(self.lock_path, self.lock_timeout, self.holder or "keywarden"):
                yield
        except LockedError as exc:
            raise StoreLockedError(f"store {self.path} is locked by {exc.holder}; wait for that run to finish (the lock goes when its process exits)") from None
        except OSError as exc:
            if exc.filename in (self.lock_path, self.dir):
                raise StoreError(f"store lock {self.lock_path} cannot be opened ({exc.strerror}); {_hint(exc)}; the store was not changed") from None
            raise

    # ---- writing ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def update(self, event: str = "store", create: bool = False) -> Iterator[dict[str, Any]]:
        """Lock, read, let the caller change the data, write it back atomically if it changed.

        With an auditor, each changed secret, stage and field is recorded as ``event`` (with an HMAC of the new
        value and ``detail.revision``) and fsync'ed *before* the store is written; the store then holds the log's
        position after those records (``audit_anchor``). When the records cannot be written, the store is not
        changed; when the store write fails after them, a record with ``outcome: error`` follows (best effort).
        A missing store whose ``versions/`` holds revisions is not made anew unless ``create`` (restore it instead).
        """
        with self.lock():
            self._before_update()
            data = self.read(missing_ok=True)
            if not create and not self.exists() and self.versions():
                raise StoreError(missing_store_message(self))
            original = copy.deepcopy(data)
            yield data
            if data == original:
                return
            self.vault_secret()  # no password, no records of a write that cannot happen
            revision = int(original.get("revision") or 0) + 1
            if self.audit is not None:
                entries = self.audit.write_entries(event, original, data, STAGES) or [self.audit.entry(event, change="updated")]
                for entry in entries:
                    entry.setdefault("detail", {})["revision"] = revision
                if isinstance(original.get(ANCHOR_KEY), dict):
                    # where the previous write's records end, which may be another job's log (a durable backend):
                    # the combined trail of many jobs links up through it (verify-log --trail)
                    entries[0]["detail"]["after"] = {k: original[ANCHOR_KEY][k] for k in ("seq", "hash") if k in original[ANCHOR_KEY]}
                try:
                    written = self.audit.record_many(entries)
                except AuditError as exc:
                    raise StoreError(f"{exc}; the store was not changed") from None
                position = anchor(written)
                if position is not None:
                    data[ANCHOR_KEY] = position
            try:
                self._write(data, revision)
            except OSError as exc:
                if self.audit is not None:
                    with contextlib.suppress(AuditError):
                        self.audit.record(event, outcome="error", revision=revision, change="not written", reason=exc.strerror or str(exc))
                raise StoreError(
                    f"store {self.path} cannot be written ({exc.strerror or exc}): revision {revision} was not written, the store is unchanged; {_hint(exc)}"
                ) from None

    def _before_update(self) -> None:
        """Called under the lock before an update reads the store: a durable backend brings the local copy up to date."""

    # ---- replacing the whole file (a restore), under the lock ---------------------------------------------
    def refresh(self) -> None:
        """Bring the local store file up to date with a durable backend (or refuse, saying why); local: nothing."""

    def begin_replace(self, raw: bytes, revision: int, why: str) -> Any:
        """Before ``raw`` (a whole encrypted store) is put in place of the store: a durable backend makes it durable
        first (its commit point; on failure nothing has changed) and returns what ``end_replace`` needs."""
        return None

    def end_replace(self, token: Any, raw: bytes) -> None:
        """After ``raw`` was put in place: a durable backend records that the local file is the one it holds."""

    @property
    def backend_text(self) -> str:
        """Where the store is durable, for messages and audit records."""
        return "local"

    def _encrypt(self, data: dict[str, Any]) -> bytes:
        secret = pick_secret(self._vault_secrets, self.environment)
        plaintext = yaml.dump(data, Dumper=YAML_DUMPER, sort_keys=True, default_flow_style=False).encode()
        ciphertext = VaultAES256.encrypt(plaintext, secret)
        return format_vaulttext_envelope(ciphertext, "AES256", version="1.2", vault_id=self.environment) + b"\n"

    def _write(self, data: dict[str, Any], revision: int) -> None:
        data["revision"] = revision
        data["updated"] = utcnow()
        blob = self._encrypt(data)
        os.makedirs(self.versions_dir, mode=0o700, exist_ok=True)
        remove_crashed_temps(self.path)  # we hold the lock: no temp file is in use
        # the outgoing revision stays as an encrypted rollback copy (a hard link: no copy, no window)
        keep_as = os.path.join(self.versions_dir, f"secrets.r{int(data['revision']) - 1:06d}.vault")
        atomic_write(self.path, blob, 0o600, keep_old_as=keep_as)
        with contextlib.suppress(OSError):
            self._prune_versions()

    def _prune_versions(self) -> None:
        names = sorted(n for n in os.listdir(self.versions_dir) if _VERSION_RE.match(n))
        for name in names[: max(0, len(names) - self.keep)]:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.versions_dir, name))

    def versions(self) -> list[str]:
        """Rollback copies, oldest first."""
        if not os.path.isdir(self.versions_dir):
            return []
        return sorted(os.path.join(self.versions_dir, n) for n in os.listdir(self.versions_dir) if _VERSION_RE.match(n))


def get_field(data: dict[str, Any], name: str, field: str, stage: str = "current", source: str = "store") -> str:
    """One field of one secret at one stage, or a StoreError naming what is missing."""
    if stage not in READ_STAGES:
        raise StoreError(f"stage '{stage}' is not one of {', '.join(READ_STAGES)}")
    entry = data["secrets"].get(name)
    if entry is None:
        raise StoreError(
            f"secret '{name}' is not in {source}: add it to config/secrets/catalog.yml for environment '{data.get('environment')}' and run playbooks/init.yml"
        )
    stage = resolve_stage(entry, stage)
    staged = entry.get(stage)
    if not staged:
        raise StoreError(f"secret '{name}' has no {stage} value in {source}")
    fields = staged.get("fields") or {}
    if field not in fields:
        raise StoreError(f"secret '{name}' has no field '{field}'; its fields are: {', '.join(sorted(fields))}")
    return str(fields[field])


def resolve_stage(entry: dict[str, Any], stage: str) -> str:
    """The stored stage a read stage names (``live`` is ``pending`` while distributing, else ``current``)."""
    if stage == "live":
        return "pending" if (entry.get("pending") or {}).get("step") == DISTRIBUTING else "current"
    return stage


def staged_version(data: dict[str, Any], name: str, stage: str) -> int | None:
    """Version of a secret's value at a (read) stage, or None."""
    entry = data["secrets"].get(name) or {}
    return (entry.get(resolve_stage(entry, stage)) or {}).get("version")


def new_entry(kind: str, fields: dict[str, str]) -> dict[str, Any]:
    now = utcnow()
    return {"kind": kind, "version": 1, "created": now, "current": {"version": 1, "created": now, "fields": fields}, "pending": None, "previous": None}


def generate_fields(entry: dict[str, Any], charsets: dict[str, str], issuer: dict[str, str] | None = None, name: str = "") -> dict[str, str]:
    """Fresh stored fields for a catalog entry, from its generator policy.

    Certificates (plugin_utils/tls.py): a ``tls_ca`` makes its key and self-signed certificate; a ``tls_cert`` is
    issued by ``issuer``, the current ``certificate`` and ``private_key`` of its CA (the caller reads them, audited).
    """
    kind = entry["kind"]
    if kind in ("tls_ca", "tls_cert"):
        from ansible_collections.keywarden.secrets.plugins.plugin_utils import tls  # noqa: PLC0415 - only certificates need it

        what = f"secret '{name or entry['target'].get('common_name')}'"
        try:
            if kind == "tls_ca":
                return tls.issue_ca(entry, None, time.time(), what)
            if not issuer:
                raise StoreError(f"{what}: its CA '{entry['target']['ca']}' is not in the store")
            return tls.issue_certificate(entry, issuer, None, time.time(), what)
        except tls.TLSError as exc:
            raise StoreError(str(exc)) from None
    policy = entry["policy"]
    value = generate_value(policy["length"], charsets[policy["charset"]])
    if kind in ("postgresql", "mariadb", "rabbitmq"):
        # the first login; alternating_users rotations move to the other one (catalog.login_names)
        return {"username": login_names(entry)[0], "password": value}
    if kind == "redis":
        # the ACL user (a Redis rotation adds a second password to it, never a second user)
        return {"username": str(entry["target"].get("username") or "default"), "password": value}
    if kind == "api_key":
        # keywarden chooses both: the value reaches the store before any issuer sees it (drivers/api_key.py)
        return {"value": value, "key_id": generate_key_id()}
    return {"value": value}
