# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tamper-evident audit log of credential access: one JSON line per event, hash-chained, never a value.

Guarantees:
- a line holds time (UTC), event, environment, secret, field, stage, version, host, actor, outcome and
  ``value_hmac`` = HMAC-SHA256(audit key, value): an investigator holding the key can test whether a leaked
  value was the one in use; the value itself is never written;
- every line carries ``seq`` and ``prev`` (SHA-256 of the previous line's bytes) and ``mac`` (HMAC of the
  line under a key derived from the audit key): an edited, deleted, inserted or reordered line breaks the
  chain at that line; ``<log>.head`` records the last line so that cutting lines off the end shows too;
- appends are serialised by ``flock`` on the log itself; the last line's hash is re-read under the lock,
  so concurrent writers (forks, parallel runs) never interleave or fork the chain; each append is
  fsync'ed before the caller goes on;
- fail closed: any failure to write raises AuditError, whose message names the file and what to fix.
  Callers refuse the secret read (or report the write) when it is raised.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import getpass
import hashlib
import hmac
import json
import os
import stat
import subprocess
from collections.abc import Iterable
from typing import Any

GENESIS = "0" * 64
KEY_BYTES = 32
HEAD_SUFFIX = ".head"
# Event types. Backups and restores call ``Auditor.record`` with these once they exist.
EVENTS = (
    "read",
    "store",
    "migrate",
    "rotate.create",
    "rotate.mark",
    "rotate.finish",
    "rotate.rollback",
    "rotate.lock",
    "rotate.unlock",
    "deploy",
    "backup",
    "restore",
)
# Only bench/audit_cost flips this, in a throwaway copy of the collection, to measure the cost of auditing.
ENABLED = True
_HEAD_WIDTH = 128
_TAIL_CHUNK = 8192
_GIT_CACHE: dict[str, str | None] = {}
_IN_REPO_CACHE: dict[str, bool] = {}


class AuditError(Exception):
    """The audit log cannot be written or read. One line, names the file and what to fix; never a value."""


def utc_stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def line_hash(raw: bytes) -> str:
    """SHA-256 of one log line as stored (without its newline): what the next line's ``prev`` holds."""
    return hashlib.sha256(raw.rstrip(b"\n")).hexdigest()


def value_hmac(key: bytes, value: str) -> str:
    """HMAC-SHA256 of a secret value under the audit key (hex). Stable for a key, useless without it."""
    return hmac.new(key, str(value).encode(), hashlib.sha256).hexdigest()


def _chain_key(key: bytes) -> bytes:
    # a key of its own for line MACs, so a line MAC can never be mistaken for a value HMAC
    return hmac.new(key, b"keywarden-audit-chain-v1", hashlib.sha256).digest()


def _line_mac(key: bytes, record: dict[str, Any]) -> str:
    body = json.dumps({k: v for k, v in record.items() if k != "mac"}, sort_keys=True, separators=(",", ":"))
    return hmac.new(_chain_key(key), body.encode(), hashlib.sha256).hexdigest()


def _encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=True).encode()


# ---- the key -------------------------------------------------------------------------------------------
def default_key_file(environment: str) -> str:
    return os.path.join(os.path.expanduser("~"), ".config", "keywarden", f"audit-{environment}.key")


def _in_repository(path: str) -> bool:
    """True when path sits in a git work tree and is not git-ignored (the key must never be committable)."""
    if path not in _IN_REPO_CACHE:
        _IN_REPO_CACHE[path] = _in_repository_uncached(path)
    return _IN_REPO_CACHE[path]


def _in_repository_uncached(path: str) -> bool:
    directory = os.path.dirname(os.path.abspath(path))
    probe = directory
    while True:
        if os.path.exists(os.path.join(probe, ".git")):
            break
        parent = os.path.dirname(probe)
        if parent == probe:
            return False
        probe = parent
    try:
        ignored = subprocess.run(
            ["git", "-C", probe, "check-ignore", "-q", os.path.abspath(path)],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return True
    return ignored.returncode != 0


def load_key(path: str, create: bool = True) -> bytes:
    """The audit key from its file (mode 0600, outside any repository); made on first use when missing."""
    path = os.path.abspath(os.path.expanduser(path))
    if _in_repository(path):
        raise AuditError(f"audit key {path} is inside a git repository and not git-ignored: keep it out of the repository (KEYWARDEN_AUDIT_KEY_FILE)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        if not create:
            raise AuditError(f"audit key {path} does not exist; give the environment's key with KEYWARDEN_AUDIT_KEY_FILE") from None
        return _create_key(path)
    except OSError as exc:
        raise AuditError(f"audit key {path} cannot be read ({exc.strerror}); fix its permissions or set KEYWARDEN_AUDIT_KEY_FILE") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) & 0o077:
            raise AuditError(f"audit key {path} must be a regular file readable by its owner only: chmod 0600 {path}")
        raw = os.read(fd, 4096).strip()
    finally:
        os.close(fd)
    try:
        key = bytes.fromhex(raw.decode())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) < 16:
        raise AuditError(f"audit key {path} must hold at least 16 bytes as hex (e.g. python3 -c 'import secrets; print(secrets.token_hex(32))')")
    return key


def _create_key(path: str) -> bytes:
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        tmp = f"{path}.tmp.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, os.urandom(KEY_BYTES).hex().encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            # link, not rename: a concurrent first use keeps whichever key landed first
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    except OSError as exc:
        raise AuditError(f"audit key {path} cannot be created ({exc.strerror}); create it (mode 0600) or set KEYWARDEN_AUDIT_KEY_FILE") from None
    return load_key(path, create=False)


# ---- the actor -----------------------------------------------------------------------------------------
def git_commit(directory: str | None) -> str | None:
    """HEAD commit of the git work tree holding directory (cached per directory), else None."""
    if not directory:
        return None
    directory = os.path.abspath(directory)
    if directory not in _GIT_CACHE:
        commit = None
        try:
            out = subprocess.run(["git", "-C", directory, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False)
            if out.returncode == 0:
                commit = out.stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            pass
        _GIT_CACHE[directory] = commit
    return _GIT_CACHE[directory]


def _first(variables: dict[str, Any], *names: str) -> Any:
    for name in names:
        value = variables.get(name)
        if value not in (None, ""):
            return value
    return None


def actor(variables: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Who acts: OS user, AWX/ansible-runner job (extra vars awx_*/tower_*, env JOB_ID), git commit of the project."""
    variables = variables or {}
    environ = dict(os.environ) if environ is None else environ
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    job_id = _first(variables, "awx_job_id", "tower_job_id") or environ.get("JOB_ID") or environ.get("AWX_JOB_ID")
    return {
        "user": user,
        "awx_job_id": str(job_id) if job_id not in (None, "") else None,
        "awx_job_template": _first(variables, "awx_job_template_name", "tower_job_template_name"),
        "awx_user": _first(variables, "awx_user_name", "tower_user_name"),
        "git_commit": git_commit(variables.get("playbook_dir")),
    }


# ---- the log -------------------------------------------------------------------------------------------
def _last_line(fd: int, size: int) -> bytes:
    """The last line of the file (without its newline); the file ends with a newline."""
    end = size - 1  # the final newline
    buf = b""
    pos = end
    while pos > 0:
        start = max(0, pos - _TAIL_CHUNK)
        buf = os.pread(fd, pos - start, start) + buf
        pos = start
        cut = buf.rfind(b"\n")
        if cut >= 0:
            return buf[cut + 1 :]
    return buf


class AuditLog:
    """One audit log file. ``append`` adds records atomically with respect to every other writer."""

    def __init__(self, path: str, key: bytes, syslog: bool = False) -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self.head_path = self.path + HEAD_SUFFIX
        self._key = key
        self.syslog = syslog

    def _fail(self, what: str, exc: OSError) -> AuditError:
        reason = exc.strerror or str(exc)
        hint = "free disk space" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else "fix its permissions or set KEYWARDEN_AUDIT_LOG"
        return AuditError(f"audit log {self.path} cannot be {what} ({reason}): refusing to go on without an audit record (fail closed); {hint}")

    def _open(self) -> int:
        directory = os.path.dirname(self.path)
        try:
            if not os.path.isdir(directory):
                os.makedirs(directory, mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise self._fail("opened", exc) from None
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) != 0o600 and st.st_uid == os.geteuid():
                os.fchmod(fd, 0o600)
        except OSError as exc:
            os.close(fd)
            raise self._fail("secured (chmod 0600)", exc) from None
        return fd

    def check_writable(self) -> None:
        """Open the log for appending (no line written): lets a writer refuse before it changes anything."""
        if ENABLED:
            os.close(self._open())

    def append(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Chain and append records under the log's lock, fsync, then forward to syslog when asked."""
        records = list(records)
        if not records or not ENABLED:
            return []
        fd = self._open()
        lines: list[bytes] = []
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                size = os.fstat(fd).st_size
                if size:
                    if os.pread(fd, 1, size - 1) != b"\n":
                        raise AuditError(
                            f"audit log {self.path} ends with an incomplete line (a crash during a write?): "
                            f"check it with scripts/audit/verify-log, then remove the partial last line"
                        )
                    last = _last_line(fd, size)
                    prev = line_hash(last)
                    try:
                        seq = int(json.loads(last)["seq"])
                    except (ValueError, KeyError, TypeError):
                        raise AuditError(f"audit log {self.path}: its last line is not an audit record; check it with scripts/audit/verify-log") from None
                else:
                    prev, seq = GENESIS, 0
                written = []
                for record in records:
                    seq += 1
                    line = {"seq": seq, **record, "prev": prev}
                    line["mac"] = _line_mac(self._key, line)
                    raw = _encode(line)
                    lines.append(raw)
                    written.append(line)
                    prev = line_hash(raw)
                # one write of whole lines: an O_APPEND write is never interleaved with another writer's
                blob = b"\n".join(lines) + b"\n"
                done = 0
                while done < len(blob):
                    done += os.write(fd, blob[done:])
                os.fsync(fd)
                self._write_head(seq, prev)
            except OSError as exc:
                raise self._fail("written", exc) from None
        finally:
            os.close(fd)  # releases the lock
        if self.syslog:
            _forward(lines)
        return written

    def _write_head(self, seq: int, last_hash: str) -> None:
        # lags by at most one append after a crash (verify accepts that); shows lines cut off the end
        head = json.dumps({"seq": seq, "hash": last_hash}).encode().ljust(_HEAD_WIDTH) + b"\n"
        fd = os.open(self.head_path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.pwrite(fd, head, 0)
        finally:
            os.close(fd)


def _forward(lines: list[bytes]) -> None:
    """Best effort copy to syslog/journald (facility authpriv); the file stays the record of truth."""
    try:
        import syslog  # noqa: PLC0415 - not on every platform

        syslog.openlog("keywarden-audit", 0, syslog.LOG_AUTHPRIV)
        for raw in lines:
            syslog.syslog(syslog.LOG_INFO, raw.decode())
    except (ImportError, OSError):
        pass


class Auditor:
    """An audit log bound to an environment and an actor: what plugins call."""

    def __init__(self, log: AuditLog, environment: str, who: dict[str, Any], host: str | None = None) -> None:
        self.log = log
        self.environment = environment
        self.actor = who
        # the inventory host the task runs for, when an entry names none
        self.host = host

    def value_hmac(self, value: str) -> str:
        return value_hmac(self.log._key, value)  # noqa: SLF001

    def entry(
        self,
        event: str,
        secret: str | None = None,
        field: str | None = None,
        version: int | None = None,
        host: str | None = None,
        outcome: str = "ok",
        stage: str | None = None,
        value: str | None = None,
        **detail: Any,
    ) -> dict[str, Any]:
        if event not in EVENTS:
            raise AuditError(f"unknown audit event '{event}' (known: {', '.join(EVENTS)})")
        record = {
            "time": utc_stamp(),
            "event": event,
            "environment": self.environment,
            "secret": secret,
            "field": field,
            "stage": stage,
            "version": version,
            "host": host if host is not None else self.host,
            "actor": self.actor,
            "outcome": outcome,
            "value_hmac": self.value_hmac(value) if value is not None else None,
        }
        if detail:
            record["detail"] = detail
        return record

    def record(self, event: str, **kwargs: Any) -> None:
        self.log.append([self.entry(event, **kwargs)])

    def record_many(self, entries: list[dict[str, Any]]) -> None:
        self.log.append(entries)

    def write_entries(self, event: str, before: dict[str, Any], after: dict[str, Any], stages: tuple[str, ...]) -> list[dict[str, Any]]:
        """Entries for one store write: per secret and stage that changed, one per field set (or one if cleared)."""
        entries = []
        old_secrets = before.get("secrets") or {}
        for name, entry in sorted((after.get("secrets") or {}).items()):
            old = old_secrets.get(name) or {}
            if entry == old:
                continue
            for stage in stages:
                was, now = old.get(stage) or None, entry.get(stage) or None
                if was == now:
                    continue
                if not now:
                    entries.append(self.entry(event, secret=name, stage=stage, version=(was or {}).get("version"), change="cleared"))
                    continue
                old_fields = (was or {}).get("fields") or {}
                changed = [f for f, v in sorted((now.get("fields") or {}).items()) if old_fields.get(f) != v]
                for field in changed:
                    entries.append(
                        self.entry(event, secret=name, field=field, stage=stage, version=now.get("version"), value=now["fields"][field], change="set")
                    )
                if not changed:
                    step = now.get("step")
                    entries.append(
                        self.entry(event, secret=name, stage=stage, version=now.get("version"), change="updated", **({"step": step} if step else {}))
                    )
        for name in sorted(set(old_secrets) - set(after.get("secrets") or {})):
            entries.append(self.entry(event, secret=name, version=old_secrets[name].get("version"), change="removed"))
        return entries


# ---- verification --------------------------------------------------------------------------------------
def verify(path: str, key: bytes | None = None) -> tuple[int, int | None, str]:
    """Check the chain: (lines read, first bad line number or None, message)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise AuditError(f"audit log {path} cannot be read ({exc.strerror})") from None
    prev = GENESIS
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    elif raw_lines:
        return len(raw_lines), len(raw_lines), f"line {len(raw_lines)}: incomplete (no newline at the end of the file)"
    for number, raw in enumerate(raw_lines, start=1):
        try:
            record = json.loads(raw)
            if not isinstance(record, dict):
                raise ValueError
        except ValueError:
            return number - 1, number, f"line {number}: not a JSON audit record (edited or inserted)"
        if record.get("seq") != number:
            return number - 1, number, f"line {number}: sequence number {record.get('seq')} where {number} belongs (a line was deleted, inserted or moved)"
        if record.get("prev") != prev:
            return (
                number - 1,
                number,
                f"line {number}: does not chain to line {number - 1} (that line was edited, or lines were deleted, inserted or reordered)",
            )
        if key is not None and record.get("mac") != _line_mac(key, record):
            return number - 1, number, f"line {number}: MAC does not match under the audit key (the line was edited, or the chain rebuilt without the key)"
        prev = line_hash(raw)
    count = len(raw_lines)
    head = _read_head(path + HEAD_SUFFIX)
    if head is not None:
        seq, last = head
        if seq > count:
            return count, count + 1, f"line {count + 1}: missing; the log ends at line {count} but its head records line {seq} (lines cut off the end)"
        if seq >= 1 and line_hash(raw_lines[seq - 1]) != last:
            return count, seq, f"line {seq}: differs from the line its head file recorded"
    return count, None, f"{count} lines, chain intact" + (", MACs valid" if key is not None else " (MACs not checked: no key given)")


def _read_head(path: str) -> tuple[int, str] | None:
    try:
        with open(path, "rb") as handle:
            head = json.loads(handle.read().strip() or b"null")
        return int(head["seq"]), str(head["hash"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_records(path: str) -> list[dict[str, Any]]:
    """Every parseable record of the log, in order (reporting; verify separately)."""
    try:
        with open(path, "rb") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise AuditError(f"audit log {path} cannot be read ({exc.strerror})") from None
    out = []
    for raw in lines:
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out
