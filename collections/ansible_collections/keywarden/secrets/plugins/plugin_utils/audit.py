# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tamper-evident audit log of credential access: one JSON line per event, hash-chained, never a value.

Guarantees:
- a line holds time (UTC), event, environment, secret, field, stage, version, host, actor, outcome and
  ``value_hmac`` = HMAC-SHA256(audit key, value): an investigator holding the key can test whether a leaked
  value was the one in use; the value itself is never written;
- every line carries ``seq`` and ``prev`` (SHA-256 of the previous line's bytes) and ``mac`` (HMAC of the
  line under a key derived from the audit key): an edited, deleted, inserted or reordered line breaks the
  chain at that line; ``<log>.head`` records the last line's seq and hash under a MAC of its own, so that
  cutting lines off the end shows too; the store keeps the same anchor inside its encrypted data at each
  write (see ``anchor``), which a local attacker cannot rewind without the vault password;
- appends are serialised by ``flock`` on the log itself; the last line's hash is re-read (and its MAC
  checked) under the lock, so concurrent writers never interleave or fork the chain, and a wrong key is
  refused before it signs anything; each append is fsync'ed before the caller goes on;
- an append that fails (disk full, I/O error) leaves the log exactly as it was: it is cut back to the last
  complete line under the lock. A torn last line from a crash is told apart from tampering by ``check``
  and cut off by ``AuditLog.repair``, which records what it cut (length and hash, never content);
- the key is created only together with a new log: with a log in place and its key missing, every append
  is refused (a new key would not verify the log);
- fail closed: any failure to write raises AuditError, whose message names the file and what to fix.
  Callers refuse the secret read (or report the write) when it is raised.

Standard library only: this file also runs on its own (tests drop privileges and import it alone).
"""

from __future__ import annotations

import dataclasses
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
    "record",
    "deploy",
    "backup",
    "restore",
    "audit.repair",
)
# Only bench/audit_cost flips this, in a throwaway copy of the collection, to measure the cost of auditing.
ENABLED = True
_HEAD_WIDTH = 256
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


class AuditKey(bytes):
    """Key bytes that remember their file. ``new``: made by this process and not written yet; the first append
    to an empty log writes it (``AuditLog._settle_key``), an append to a log that already holds lines refuses it."""

    path: str
    new: bool

    def __new__(cls, raw: bytes, path: str, new: bool = False) -> AuditKey:
        key = super().__new__(cls, raw)
        key.path = path
        key.new = new
        return key

    def __reduce__(self) -> tuple[Any, ...]:  # copy and pickle keep the file and the state
        return (AuditKey, (bytes(self), self.path, self.new))


# key file -> the key this process made for it and has not written yet (one per file, however many callers)
_NEW_KEYS: dict[str, AuditKey] = {}


def load_key(path: str, create: bool = True) -> bytes:
    """The audit key from its file (mode 0600, outside any repository).

    A missing file with ``create``: a fresh key, written to the file only together with the first line of a new
    log (an existing log refuses it, see ``AuditLog.append``); never a silent replacement of a lost key.
    """
    path = os.path.abspath(os.path.expanduser(path))
    if _in_repository(path):
        raise AuditError(f"audit key {path} is inside a git repository and not git-ignored: keep it out of the repository (KEYWARDEN_AUDIT_KEY_FILE)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        if not create:
            raise AuditError(f"audit key {path} does not exist; give the environment's key with KEYWARDEN_AUDIT_KEY_FILE (or --key-file)") from None
        if path not in _NEW_KEYS:
            _NEW_KEYS[path] = AuditKey(os.urandom(KEY_BYTES), path, new=True)
        return _NEW_KEYS[path]
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
    return AuditKey(key, path)


def _write_new_key(key: AuditKey) -> AuditKey:
    """Write a key made by ``load_key``; a key another process wrote first wins, and then this one must not sign."""
    directory = os.path.dirname(key.path)
    tmp = f"{key.path}.tmp.{os.getpid()}"
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, key.hex().encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            # link, not rename: a concurrent first use keeps whichever key landed first
            os.link(tmp, key.path)
            landed = True
        except FileExistsError:
            landed = False
        finally:
            os.unlink(tmp)
    except OSError as exc:
        raise AuditError(f"audit key {key.path} cannot be created ({exc.strerror}); create it (mode 0600) or set KEYWARDEN_AUDIT_KEY_FILE") from None
    _NEW_KEYS.pop(key.path, None)
    if not landed:
        # another run wrote its key first, and nothing was signed with this one yet: use that run's key
        return load_key(key.path, create=False)  # type: ignore[return-value]
    key.new = False
    return key


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


def _complete_size(fd: int, size: int) -> int:
    """Bytes up to and including the last newline: where a torn last line starts (``size`` when there is none)."""
    pos = size
    while pos > 0:
        start = max(0, pos - _TAIL_CHUNK)
        cut = os.pread(fd, pos - start, start).rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        pos = start
    return 0


def _head_mac(key: bytes, seq: int, last_hash: str) -> str:
    return hmac.new(_chain_key(key), f"head:{seq}:{last_hash}".encode(), hashlib.sha256).hexdigest()


def anchor(written: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``{"seq", "hash"}`` of the last of the lines an append wrote: what the store keeps inside its encrypted data,
    and what ``check(expect=...)`` (``verify-log --store`` / ``--expect-seq --expect-hash``) holds the log to."""
    if not written:
        return None
    return {"seq": int(written[-1]["seq"]), "hash": line_hash(_encode(written[-1]))}


class AuditLog:
    """One audit log file. ``append`` adds records atomically with respect to every other writer."""

    def __init__(self, path: str, key: bytes, syslog: bool = False, syslog_server: str | None = None) -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self.head_path = self.path + HEAD_SUFFIX
        self.sent_path = self.path + SENT_SUFFIX
        self._key = key
        self.syslog = syslog
        # HOST:PORT of a syslog server over TCP: the durable sink (see _ship)
        self.syslog_server = syslog_server or None

    def _fail(self, what: str, exc: OSError, restored: bool = True) -> AuditError:
        reason = exc.strerror or str(exc)
        hint = "free disk space" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else "fix its permissions or set KEYWARDEN_AUDIT_LOG"
        if not restored:
            hint += f", then cut the partial last line: scripts/audit/verify-log --repair {self.path}"
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

    def settle_key(self) -> bytes:
        """The key this log is signed with, final: a key made by this process is written now (a new log) or replaced by
        the one another run wrote while this one waited (see ``_settle_key``). For a caller that signs something else
        with the key (a backup manifest) before it appends."""
        if not getattr(self._key, "new", False):
            return self._key
        if not os.path.exists(self.path):
            # no log yet (and none is made here: an empty log is a finding): just the key, as a new log's first line would
            self._key = _write_new_key(self._key)  # type: ignore[arg-type]
            return self._key
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._settle_key(os.fstat(fd).st_size)
        finally:
            os.close(fd)
        return self._key

    def append(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Chain and append records under the log's lock, fsync, then forward to syslog when asked.

        Returns the records as written (with seq, prev and mac); ``anchor(returned)`` locates the last of them.
        """
        records = list(records)
        if not records or not ENABLED:
            return []
        return self._locked(lambda fd, size: self._append_locked(fd, size, records))

    def repair(self, make_record: Any) -> dict[str, Any] | None:
        """Cut a torn last line (a crash mid-append) and record the cut: ``make_record(cut)`` builds the record
        from ``{"cut_bytes", "cut_sha256", "cut_offset"}``. Returns the record written, or None when the log ends
        in a complete line (nothing to repair, nothing written). The content cut is never recorded."""

        def locked(fd: int, size: int) -> list[dict[str, Any]]:
            keep = _complete_size(fd, size)
            if keep == size:
                return []
            torn = os.pread(fd, size - keep, keep)
            os.ftruncate(fd, keep)
            os.fsync(fd)
            cut = {"cut_bytes": len(torn), "cut_sha256": hashlib.sha256(torn).hexdigest(), "cut_offset": keep}
            try:
                return self._append_locked(fd, keep, [make_record(cut)])
            except AuditError:
                os.write(fd, torn)  # no record of the cut, no cut: the log stays as it was
                raise

        written = self._locked(locked)
        return written[0] if written else None

    def _locked(self, work: Any) -> list[dict[str, Any]]:
        fd = self._open()
        lines: list[dict[str, Any]] = []
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                lines = work(fd, os.fstat(fd).st_size)
            except OSError as exc:
                raise self._fail("written", exc) from None
            if self.syslog_server and lines:
                # under the lock: the sink receives the chain in order
                self._ship(fd, lines)
        finally:
            os.close(fd)  # releases the lock
        if self.syslog and lines:
            _forward([_encode(line) for line in lines])
        return lines

    def _settle_key(self, size: int) -> None:
        """A key made by this process is written with the first line of a new log, and refused by a log in place."""
        key = self._key
        if not getattr(key, "new", False):
            return
        if size or _read_head(self.head_path) is not None:
            path = getattr(key, "path", None)
            if path and os.path.exists(path):
                # another run started this log (and wrote its key) while this one waited for the lock: use that key;
                # the last line is checked under it before anything is appended
                self._key = load_key(path, create=False)
                _NEW_KEYS.pop(path, None)
                return
            raise AuditError(
                f"audit key {getattr(key, 'path', '?')} does not exist, but audit log {self.path} does: a new key would not verify it; "
                f"restore the key file from your backup, or point KEYWARDEN_AUDIT_KEY_FILE at this environment's key"
            )
        self._key = _write_new_key(key)  # type: ignore[arg-type]

    def _tail(self, fd: int, size: int) -> tuple[str, int]:
        """(hash, seq) of the last line, checked: complete, a record, signed with this key; genesis for a new log."""
        if not size:
            head = _read_head(self.head_path)
            if head is not None:
                raise AuditError(
                    f"audit log {self.path} is empty or missing, but its head records {head[0]} lines: the log was deleted or truncated; "
                    f"restore it (with its .head) from a backup, or move {self.head_path} away to start a new log on purpose"
                )
            return GENESIS, 0
        if os.pread(fd, 1, size - 1) != b"\n":
            raise AuditError(
                f"audit log {self.path} ends with a torn line (a crash during a write): "
                f"check it with scripts/audit/verify-log, then cut it with scripts/audit/verify-log --repair {self.path}"
            )
        last = _last_line(fd, size)
        try:
            record = json.loads(last)
            seq = int(record["seq"])
        except (ValueError, KeyError, TypeError):
            raise AuditError(f"audit log {self.path}: its last line is not an audit record; check it with scripts/audit/verify-log") from None
        if record.get("mac") != _line_mac(self._key, record):
            where = getattr(self._key, "path", None) or "in use"
            raise AuditError(
                f"audit log {self.path}: its last line does not verify under the audit key {where}: "
                f"wrong key (KEYWARDEN_AUDIT_KEY_FILE) or an edited line; check it with scripts/audit/verify-log --key-file KEY"
            )
        return line_hash(last), seq

    def _append_locked(self, fd: int, size: int, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self._settle_key(size)
        prev, seq = self._tail(fd, size)
        lines: list[bytes] = []
        written = []
        for record in records:
            seq += 1
            line = {"seq": seq, **record, "prev": prev}
            line["mac"] = _line_mac(self._key, line)
            raw = _encode(line)
            lines.append(raw)
            written.append(line)
            prev = line_hash(raw)
        # whole lines under the lock (no other writer can interleave); a write may take only part of them
        blob = b"\n".join(lines) + b"\n"
        try:
            done = 0
            while done < len(blob):
                done += os.write(fd, blob[done:])
            os.fsync(fd)
            self._write_head(seq, prev)
        except OSError as exc:
            # leave the log exactly as it was: a failed append is no append
            try:
                os.ftruncate(fd, size)
                os.fsync(fd)
                restored = True
            except OSError:
                restored = False
            raise self._fail("written", exc, restored) from None
        return written

    def _write_head(self, seq: int, last_hash: str) -> None:
        # in place, fixed width (no new block on a full disk once it exists); lags by at most one append after a crash
        head = json.dumps({"seq": seq, "hash": last_hash, "mac": _head_mac(self._key, seq, last_hash)}).encode().ljust(_HEAD_WIDTH) + b"\n"
        fd = os.open(self.head_path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.pwrite(fd, head, 0)
        finally:
            os.close(fd)

    def _ship(self, fd: int, lines: list[dict[str, Any]]) -> None:
        """Send every line the sink has not had yet (normally just these; a failed send left the rest) over TCP, then
        note the last one sent in ``<log>.sent``. Lines that cannot be sent fail the append (fail closed); they stay
        in the file and go with the next append."""
        sent = _read_sent(self.sent_path)
        if sent == int(lines[0]["seq"]) - 1:
            raws = [_encode(line) for line in lines]
        else:
            raws = [raw for raw in _read_lines(fd) if _seq_of(raw) > sent]
        if not raws:
            return
        try:
            send_syslog(self.syslog_server, raws)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise AuditError(
                f"audit sink {self.syslog_server} cannot take lines {sent + 1}-{_seq_of(raws[-1])} of audit log {self.path} ({reason}): "
                f"refusing to go on without a durable audit record (fail closed); fix the syslog server or keywarden_audit_syslog_server "
                f"(the lines stay in the log and go with the next append)"
            ) from None
        fd_sent = os.open(self.sent_path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.pwrite(fd_sent, json.dumps({"seq": _seq_of(raws[-1]), "server": self.syslog_server}).encode().ljust(_HEAD_WIDTH) + b"\n", 0)
        finally:
            os.close(fd_sent)


SENT_SUFFIX = ".sent"
# syslog facility authpriv (10), severity info (6)
_SYSLOG_PRI = 10 * 8 + 6
SYSLOG_TAG = "keywarden-audit"


def _read_sent(path: str) -> int:
    try:
        with open(path, "rb") as handle:
            return int(json.loads(handle.read().strip() or b"{}").get("seq", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0


def _read_lines(fd: int) -> list[bytes]:
    size = os.fstat(fd).st_size
    data = os.pread(fd, size, 0)
    return data[: data.rfind(b"\n") + 1].split(b"\n")[:-1]


def _seq_of(raw: bytes) -> int:
    try:
        return int(json.loads(raw)["seq"])
    except (ValueError, KeyError, TypeError):
        return 0


def syslog_address(server: str) -> tuple[str, int]:
    """(host, port) of ``HOST:PORT``, ``tcp://HOST:PORT`` or ``[IPv6]:PORT``."""
    text = server.strip()
    if text.startswith("tcp://"):
        text = text[len("tcp://") :]
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"'{server}' is not HOST:PORT")
    return host, int(port)


def send_syslog(server: str, raws: list[bytes]) -> None:
    """RFC 5424 messages over one TCP connection, newline framed (rsyslog imtcp's default framing; no NUL)."""
    import socket  # noqa: PLC0415 - only a log with a sink needs it

    host_name = socket.gethostname() or "-"
    stamp = utc_stamp()
    blob = b"".join(f"<{_SYSLOG_PRI}>1 {stamp} {host_name} {SYSLOG_TAG} {os.getpid()} - - ".encode() + raw + b"\n" for raw in raws)
    with socket.create_connection(syslog_address(server), timeout=10) as conn:
        conn.sendall(blob)
        conn.shutdown(socket.SHUT_WR)


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
        # under the key the line will be signed with: a key made by this process is settled first
        return value_hmac(self.log.settle_key(), value)

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

    def record(self, event: str, **kwargs: Any) -> list[dict[str, Any]]:
        return self.log.append([self.entry(event, **kwargs)])

    def record_many(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append the entries; returns them as written (``anchor(...)`` locates the last one)."""
        return self.log.append(entries)

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
# verify-log's exit status per verdict (2 is "cannot read")
STATUS_OK, STATUS_TAMPERED, STATUS_UNREADABLE, STATUS_TORN = 0, 1, 2, 3


@dataclasses.dataclass
class Verdict:
    """What ``check`` found. ``bad``: the first line a finding points at (None: no finding). ``torn``: the
    incomplete last line a crash left (``{"bytes", "sha256", "line"}``), which is not a finding by itself."""

    lines: int
    bad: int | None
    message: str
    torn: dict[str, Any] | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def status(self) -> int:
        if self.bad is not None:
            return STATUS_TAMPERED
        return STATUS_TORN if self.torn else STATUS_OK


def check(path: str, key: bytes | None = None, expect: dict[str, Any] | None = None) -> Verdict:
    """Check the chain, the head and (with ``expect`` = ``{"seq", "hash"[, "source"]}``) an anchor kept elsewhere.

    Findings (``bad`` set): an edited, deleted, inserted or reordered line; a missing, malformed or (with the key)
    unauthenticated head; a head or an anchor naming a line the log no longer holds; an empty log without a head.
    A torn last line alone is not a finding: ``torn`` is set and ``verify-log --repair`` cuts it.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise AuditError(f"audit log {path} cannot be read ({exc.strerror})") from None
    keep = data.rfind(b"\n") + 1
    torn = None
    if keep < len(data):
        tail = data[keep:]
        torn = {"bytes": len(tail), "sha256": hashlib.sha256(tail).hexdigest()}
    raw_lines = data[:keep].split(b"\n")[:-1]
    count = len(raw_lines)
    if torn:
        torn["line"] = count + 1
    prev = GENESIS
    for number, raw in enumerate(raw_lines, start=1):
        problem = _line_problem(raw, number, prev, key)
        if problem:
            return Verdict(number - 1, number, f"line {number}: {problem}", torn)
        prev = line_hash(raw)
    verdict = Verdict(count, None, "", torn)
    finding = _check_head(path + HEAD_SUFFIX, raw_lines, key, verdict.notes)
    if finding is None and expect is not None:
        finding = _check_anchor(raw_lines, expect)
    if finding is not None:
        verdict.bad, verdict.message = finding
        return verdict
    verdict.message = f"{count} lines, chain intact" + (", MACs valid" if key is not None else " (MACs not checked: no key given)")
    if expect is not None:
        verdict.message += f", holds the anchor (line {expect['seq']}{' of ' + expect['source'] if expect.get('source') else ''})"
    if torn:
        verdict.message += f"; line {count + 1} is torn ({torn['bytes']} bytes without a newline: a crash during a write)"
    return verdict


def _line_problem(raw: bytes, number: int, prev: str, key: bytes | None) -> str | None:
    try:
        record = json.loads(raw)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        return "not a JSON audit record (edited or inserted)"
    if record.get("seq") != number:
        return f"sequence number {record.get('seq')} where {number} belongs (a line was deleted, inserted or moved)"
    if record.get("prev") != prev:
        return f"does not chain to line {number - 1} (that line was edited, or lines were deleted, inserted or reordered)"
    if key is not None and record.get("mac") != _line_mac(key, record):
        return "MAC does not match under the audit key (the line was edited, or the chain rebuilt without the key)"
    return None


def _check_head(head_path: str, raw_lines: list[bytes], key: bytes | None, notes: list[str]) -> tuple[int, str] | None:
    count = len(raw_lines)
    if not os.path.lexists(head_path):
        if not count:
            return 1, f"line 1: missing; the log is empty and has no head {head_path} (a log is never empty once written)"
        return count, f"line {count}: cannot be confirmed as the last line: the head {head_path} is missing (lines cut off the end?)"
    head = _read_head(head_path, full=True)
    if head is None:
        return max(count, 1), f"line {max(count, 1)}: cannot be confirmed as the last line: the head {head_path} is not a head record (garbled or forged)"
    seq, last, mac = head
    if key is not None and mac != _head_mac(key, seq, last):
        return max(count, 1), f"line {max(count, 1)}: cannot be confirmed as the last line: the head's MAC does not match under the audit key (forged head)"
    if seq > count:
        return count + 1, f"line {count + 1}: missing; the log ends at line {count} but its head records line {seq} (lines cut off the end)"
    if line_hash(raw_lines[seq - 1]) != last:
        return seq, f"line {seq}: differs from the line its head recorded"
    if seq < count:
        notes.append(f"the head records line {seq} of {count}: lines {seq + 1}-{count} came after it (a crash between the log write and the head update)")
    return None


def _check_anchor(raw_lines: list[bytes], expect: dict[str, Any]) -> tuple[int, str] | None:
    count = len(raw_lines)
    seq, where = int(expect["seq"]), f" ({expect['source']})" if expect.get("source") else ""
    if seq > count:
        return count + 1, f"line {count + 1}: missing; the log ends at line {count} but the anchor{where} records line {seq} (lines cut off the end)"
    if seq >= 1 and line_hash(raw_lines[seq - 1]) != str(expect["hash"]):
        return seq, f"line {seq}: differs from the line the anchor{where} recorded (the log was replaced or rewritten)"
    return None


def verify(path: str, key: bytes | None = None, expect: dict[str, Any] | None = None) -> tuple[int, int | None, str]:
    """``check`` as (lines read, first bad line number or None, message); a torn last line counts as bad here."""
    verdict = check(path, key, expect)
    if verdict.bad is None and verdict.torn:
        return verdict.lines, verdict.torn["line"], f"line {verdict.torn['line']}: incomplete (no newline at the end of the file: a torn write)"
    return verdict.lines, verdict.bad, verdict.message


def _read_head(path: str, full: bool = False) -> Any:
    """(seq, hash) of a head file, or with ``full`` (seq, hash, mac); None when it is missing or not a head."""
    try:
        with open(path, "rb") as handle:
            head = json.loads(handle.read().strip() or b"null")
        seq, last = int(head["seq"]), str(head["hash"])
        if seq < 1:
            return None
        return (seq, last, head.get("mac")) if full else (seq, last)
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


# ---- the combined trail of many jobs (a syslog sink) --------------------------------------------------------
def _trail_json(line: bytes) -> bytes | None:
    """The audit record of one line of a sink file: a log line as is, or the message of a syslog line."""
    line = line.rstrip(b"\r\n")
    if line.startswith(b"{"):
        return line
    tag = line.find(SYSLOG_TAG.encode())
    start = line.find(b"{", tag) if tag >= 0 else -1
    return line[start:].rstrip() if start >= 0 else None


def check_trail(paths: list[str], key: bytes | None = None, expect: dict[str, Any] | None = None) -> Verdict:
    """Check the audit lines of many jobs, as a syslog sink received them (any order, other lines ignored).

    Each job's log is a chain from its line 1; every line must follow a line of the trail (nothing missing in
    between), no chain may fork (except where a restore went on from an archived log: its ``restore`` record
    follows the archive's last line, as the lines written after the backup do), every store write that follows an earlier write's records (``detail.after``,
    another job's log when the store is durable) must find them in the trail, and with ``expect`` the anchor the
    store holds now must be there: so the trail is whole from each job's first line to the store's last write.
    """
    records: dict[str, tuple[str, dict[str, Any]]] = {}
    order: list[str] = []
    duplicates = 0
    for path in paths:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise AuditError(f"audit trail {path} cannot be read ({exc.strerror})") from None
        for number, line in enumerate(data.splitlines(), start=1):
            raw = _trail_json(line)
            if raw is None:
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(raw)
            except ValueError:
                record = None
            if not isinstance(record, dict) or not {"seq", "prev", "mac"} <= set(record):
                return Verdict(len(order), number, f"{where}: not an audit record (edited, or cut by the sink: raise its message size)")
            digest = line_hash(raw)
            if digest in records:
                duplicates += 1
                continue
            if key is not None and record.get("mac") != _line_mac(key, record):
                return Verdict(len(order), number, f"{where}: MAC does not match under the audit key (the line was edited)")
            records[digest] = (where, record)
            order.append(digest)
    children: dict[str, str] = {}
    starts: list[dict[str, Any]] = []
    links = 0
    for position, digest in enumerate(order, start=1):
        where, record = records[digest]
        seq, prev = record.get("seq"), record.get("prev")
        if prev in children and prev != GENESIS and record.get("event") != "restore":
            return Verdict(len(order), position, f"{where}: line {seq} forks a chain: {records[children[prev]][0]} follows the same line (a line was replaced)")
        children[str(prev)] = digest
        if seq == 1:
            if prev != GENESIS:
                return Verdict(len(order), position, f"{where}: line 1 of a log that does not start a chain")
            starts.append(record)
        elif prev not in records or records[prev][1].get("seq") != seq - 1:
            return Verdict(len(order), position, f"{where}: line {seq} follows a line that is not in the trail (line {seq - 1} of its job's log is missing)")
        after = (record.get("detail") or {}).get("after")
        if isinstance(after, dict):
            found = records.get(str(after.get("hash")))
            if found is None or found[1].get("seq") != after.get("seq"):
                return Verdict(len(order), position, f"{where}: this store write follows line {after.get('seq')} of an earlier write's log: not in the trail")
            links += 1
    if not order:
        return Verdict(0, 1, "no audit line in the trail")
    if expect is not None:
        found = records.get(str(expect.get("hash")))
        source = f" ({expect['source']})" if expect.get("source") else ""
        if found is None or found[1].get("seq") != int(expect.get("seq", -1)):
            return Verdict(
                len(order), len(order), f"the anchor{source} (line {expect.get('seq')} of the last writer's log) is not in the trail (cut off the end)"
            )
    jobs = sorted({str((r.get("actor") or {}).get("awx_job_id")) for r in starts if (r.get("actor") or {}).get("awx_job_id")})
    message = f"{len(order)} lines in {len(starts)} job logs" + (f" (AWX jobs {', '.join(jobs)})" if jobs else "")
    message += f", every line chained, {links} store writes linked to the writes before them"
    message += ", MACs valid" if key is not None else " (MACs not checked: no key given)"
    if expect is not None:
        message += f", holds the anchor (line {expect['seq']}{' of ' + expect['source'] if expect.get('source') else ''})"
    verdict = Verdict(len(order), None, message)
    if duplicates:
        verdict.notes.append(f"{duplicates} lines received twice (a resend): counted once")
    return verdict
