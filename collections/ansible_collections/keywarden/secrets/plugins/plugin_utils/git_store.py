# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The git backend of the store: the store file is committed in the project's repository, and every store write is
a commit pushed to the remote before the write returns.

Guarantees (on top of ``Store``'s):
- before every read-modify-write, and before reads at most ``READ_FRESHNESS`` seconds apart, the remote branch is
  fetched and the local store file compared with the remote's. A clone whose store differs from the remote's is
  refused (nothing changed, a message saying to pull), or with ``pull`` (throwaway checkouts: AWX jobs) brought to
  the remote's store first. A write is never based on anything but the remote's latest store;
- a write is a commit of that one file on top of the remote's tip (never the checkout's other changes or local
  commits), pushed without force. A rejected push means another writer got there first: the remote's store is
  read again and this write's changes re-applied on top when they touch other secrets and keys than the other
  writer's (recorded in the audit log as ``reapplied``), else the write fails with nothing changed, naming the
  other writer's commit. Any other failed push fails the write too, with the local file put back;
- so a caller whose write returned knows it is on the remote: the rotation engine's writes (created,
  distributing, promoted, and the lease lock with them) are each pushed before the next step touches a target,
  and a job killed at any point leaves the remote at its last pushed step, which a later job in another clone
  resumes;
- a restore (``begin_replace``/``end_replace``, plugin_utils/backup.restore) is the one write that replaces the
  whole file: after ``refresh`` it is a commit of the archived store on the remote's tip, pushed before the local
  file is replaced; it is never re-applied over another writer's push (that fails it, nothing changed);
- only vault ciphertext is committed: the blob is the encrypted store file. Locks, temp files, rollback copies
  and the audit log stay out of git (nothing but the store's path is ever added). Commit messages carry names,
  steps and revisions, never a value;
- git never prompts (``GIT_TERMINAL_PROMPT=0``, ssh in batch mode), and credentials in a remote URL never reach
  a message.
"""

from __future__ import annotations

import configparser
import contextlib
import copy
import getpass
import hashlib
import json
import os
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import AuditError, anchor
from ansible_collections.keywarden.secrets.plugins.plugin_utils.files import LockedError, exclusive_lock
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import ANCHOR_KEY, STORE_FILE, Store, StoreError

GIT_TIMEOUT = 120
# reads trust a fetch this recent (every write fetches): many hosts reading in one play fetch once
READ_FRESHNESS = 5.0
# a reader that must bring the store up to date waits this long for a writer of the same clone
READER_WAIT = 120.0
PUSH_ATTEMPTS = 3
# data keys that change with every write: never a reason for a conflict, recomputed on a re-applied write
_VOLATILE = frozenset({"revision", "updated", ANCHOR_KEY})
_USERINFO_RE = re.compile(r"(?<=://)[^/@\s]+@")


def _redact(text: str) -> str:
    """Drop user:password@ from any URL in git's output."""
    return _USERINFO_RE.sub("", text)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in _redact(text).splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


class GitStore(Store):
    """A store whose durable copy is a file in a git repository's branch on a remote."""

    durable = True

    def __init__(
        self, store_dir: str, environment: str, vault_secrets: Any, remote: str = "origin", branch: str | None = None, pull: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(store_dir, environment, vault_secrets, **kwargs)
        self.remote = remote or "origin"
        self.branch = branch or None
        self.pull = bool(pull)
        self._repo: dict[str, Any] | None = None
        self._in_update = False
        self._event = "store"
        self._tip: str | None = None
        self._base_raw: bytes | None = None
        self._original: dict[str, Any] | None = None

    # ---- the repository --------------------------------------------------------------------------------
    @property
    def remote_text(self) -> str:
        return f"{_redact(self.remote)} branch {self.branch or '?'}"

    def _git(
        self, *args: str, input_bytes: bytes | None = None, env: dict[str, str] | None = None, cwd: str | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        environ = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **(env or {})}
        environ.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        try:
            return subprocess.run(
                ["git", *args],
                cwd=cwd or self.repo["top"],
                input=input_bytes,
                capture_output=True,
                timeout=GIT_TIMEOUT,
                env=environ,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise StoreError(f"store {self.path}: git {args[0]} took longer than {GIT_TIMEOUT} s ({self.remote_text}); the store was not changed") from None
        except OSError as exc:
            raise StoreError(f"store {self.path}: git cannot be run ({exc.strerror}): install git (the git store backend needs it)") from None

    def _out(self, *args: str, what: str, input_bytes: bytes | None = None, env: dict[str, str] | None = None) -> str:
        proc = self._git(*args, input_bytes=input_bytes, env=env)
        if proc.returncode != 0:
            raise StoreError(f"store {self.path}: {what} failed ({_last_line(proc.stderr.decode('utf-8', 'replace'))}); the store was not changed")
        return proc.stdout.decode().strip()

    @property
    def repo(self) -> dict[str, Any]:
        """top (work tree), gitdir, rel (the store's path in the tree), object format; the branch is resolved here too."""
        if self._repo is None:
            probe = self.dir
            while not os.path.isdir(probe):
                probe = os.path.dirname(probe)
            proc = self._git("rev-parse", "--show-toplevel", "--absolute-git-dir", "--is-shallow-repository", cwd=probe)
            if proc.returncode != 0:
                raise StoreError(
                    f"store {self.path} is not in a git work tree: the git store backend keeps the store in the project's repository "
                    f"(clone the project, or set keywarden_store_backend=local)"
                )
            top, gitdir, shallow = proc.stdout.decode().splitlines()[:3]
            rel = os.path.relpath(os.path.realpath(self.path), os.path.realpath(top))
            if rel.startswith(".."):
                raise StoreError(f"store {self.path} is outside the work tree {top}")
            fmt = subprocess.run(["git", "rev-parse", "--show-object-format"], cwd=top, capture_output=True, check=False).stdout.decode().strip() or "sha1"
            self._repo = {"top": top, "gitdir": gitdir, "rel": rel, "shallow": shallow == "true", "format": fmt}
            if not self.branch:
                head = self._git("symbolic-ref", "--quiet", "--short", "HEAD").stdout.decode().strip()
                if not head or head.startswith("awx_internal/"):
                    raise StoreError(
                        f"store {self.path}: which branch of {_redact(self.remote)} holds the store? The checkout is on "
                        f"{head or 'a detached HEAD'}: set keywarden_store_git_branch (AWX passes awx_project_scm_branch)"
                    )
                self.branch = head
        return self._repo

    @property
    def _tip_ref(self) -> str:
        return f"refs/keywarden/store-tip/{self.environment}"

    def _blob_id(self, raw: bytes) -> str:
        header = b"blob %d\0" % len(raw)
        algorithm = hashlib.sha256 if self.repo["format"] == "sha256" else hashlib.sha1
        return algorithm(header + raw).hexdigest()

    def _local_raw(self) -> bytes | None:
        try:
            with open(self.path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"store {self.path} cannot be read ({exc.strerror})") from None

    @contextlib.contextmanager
    def _flock(self, path: str, wait: float) -> Iterator[None]:
        try:
            with exclusive_lock(path, wait, "keywarden store (git sync)"):
                yield
        except LockedError:
            raise StoreError(f"store {self.path}: {path} stayed locked for {wait:.0f} s (another run of this clone); run again") from None

    def _git_lock(self) -> contextlib.AbstractContextManager[None]:
        # fetches and pushes of this clone one at a time (git's own ref locks would fail a second one, not wait)
        return self._flock(os.path.join(self.repo["gitdir"], f"keywarden-store-{self.environment}.lock"), READER_WAIT)

    # ---- the remote ------------------------------------------------------------------------------------
    def _fetch(self) -> tuple[str, str | None]:
        """Fetch the branch; (tip commit, blob id of the store file there or None)."""
        rel = self.repo["rel"]
        args = ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head"]
        if self.repo["shallow"]:
            args.append("--depth=1")
        proc = self._git(*args, self.remote, f"+refs/heads/{self.branch}:{self._tip_ref}")
        if proc.returncode != 0:
            why = _last_line(proc.stderr.decode("utf-8", "replace"))
            if "couldn't find remote ref" in why:
                raise StoreError(f"store {self.path}: {self.remote_text} does not exist: set keywarden_store_git_branch to the branch that holds the store")
            raise StoreError(
                f"store {self.path}: cannot fetch {self.remote_text} to check that the store is current ({why}); "
                f"fix the remote's address or access (keywarden_store_git_remote); the store was not changed"
            )
        tip = self._out("rev-parse", "--verify", self._tip_ref, what="reading the fetched tip")
        blob = self._git("rev-parse", "--verify", "--quiet", f"{tip}:{rel}").stdout.decode().strip() or None
        return tip, blob

    def _remote_raw(self, tip: str) -> bytes:
        proc = self._git("cat-file", "blob", f"{tip}:{self.repo['rel']}")
        if proc.returncode != 0:
            raise StoreError(f"store {self.path}: cannot read it from {self.remote_text} ({_last_line(proc.stderr.decode('utf-8', 'replace'))})")
        return proc.stdout

    def _revision(self, raw: bytes | None, where: str) -> str:
        if raw is None:
            return "none"
        try:
            return str(self._decrypt(raw, where).get("revision"))
        except StoreError:
            return "?"

    # ---- freshness: fetch, compare, pull or refuse ------------------------------------------------------
    def _stamp_path(self) -> str:
        return os.path.join(self.repo["gitdir"], f"keywarden-store-{self.environment}.checked")

    def _stamp(self, tip: str, blob: str | None) -> None:
        with contextlib.suppress(OSError):
            tmp = f"{self._stamp_path()}.{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump({"time": time.time(), "tip": tip, "blob": blob, "remote": self.remote, "branch": self.branch}, handle)
            os.replace(tmp, self._stamp_path())

    def _recently_checked(self) -> bool:
        try:
            with open(self._stamp_path(), encoding="utf-8") as handle:
                stamp = json.load(handle)
        except (OSError, ValueError):
            return False
        if (stamp.get("remote"), stamp.get("branch")) != (self.remote, self.branch) or time.time() - float(stamp.get("time", 0)) > READ_FRESHNESS:
            return False
        local = self._local_raw()
        return (self._blob_id(local) if local is not None else None) == stamp.get("blob")

    def _sync(self) -> None:
        """Under the store lock: make sure the local store is the remote's (pull) or refuse."""
        with self._git_lock():
            tip, blob = self._fetch()
            local = self._local_raw()
            local_blob = self._blob_id(local) if local is not None else None
            if local_blob != blob:
                self._differs(tip, blob, local)
                local = self._local_raw()
                local_blob = blob
            self._tip, self._base_raw = tip, local
            self._stamp(tip, local_blob)

    def _differs(self, tip: str, blob: str | None, local: bytes | None) -> None:
        rel, top = self.repo["rel"], self.repo["top"]
        if blob is None:
            raise StoreError(
                f"store {self.path} exists here but not in {self.remote_text}: commit and push it first "
                f"(git -C {top} add {rel} && git commit && git push), or set keywarden_store_git_branch to the branch that holds it"
            )
        remote = self._remote_raw(tip)
        if self.pull:
            self._put(remote)
            return
        there = self._revision(remote, f"{self.remote_text}:{rel}")
        here = self._revision(local, self.path)
        if local is not None and here.isdigit() and there.isdigit() and int(here) > int(there):
            raise StoreError(
                f"store {self.path} holds revision {here}, which never reached {self.remote_text} (revision {there} there): a run was cut off "
                f"between its write and its push, and no target saw it; discard it (git -C {top} checkout -- {rel}), then git pull and run again"
            )
        raise StoreError(
            f"store {self.path} is behind {self.remote_text} (revision {here} here, {there} there): this clone is stale; "
            f"run git pull in {top}, then run again (nothing was changed)"
        )

    def _put(self, raw: bytes | None) -> None:
        """Make the local store file these bytes (or remove it), atomically; not a store write (no revision)."""
        if raw is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return
        fd, tmp = tempfile.mkstemp(prefix=f".{STORE_FILE}.put.", dir=self.dir)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(raw)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    # ---- Store hooks ------------------------------------------------------------------------------------
    def read(self, missing_ok: bool = False) -> dict[str, Any]:
        if self._in_update:
            data = super().read(missing_ok)
            self._original = copy.deepcopy(data)
            return data
        if not self._recently_checked() and not self._current():
            # a writer of this clone may be between its write and its push: wait for it, then look again
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            with self._flock(self.lock_path, READER_WAIT):
                self._sync()
        return super().read(missing_ok)

    def _current(self) -> bool:
        """Fetch; whether the local store is the remote's (no lock needed to find out)."""
        with self._git_lock():
            tip, blob = self._fetch()
            local = self._local_raw()
            if (self._blob_id(local) if local is not None else None) != blob:
                return False
            self._stamp(tip, blob)
            return True

    @contextlib.contextmanager
    def update(self, event: str = "store", create: bool = False) -> Iterator[dict[str, Any]]:
        self._event = event
        with contextlib.ExitStack() as stack:
            stack.callback(setattr, self, "_in_update", False)
            yield stack.enter_context(super().update(event, create))

    def _before_update(self) -> None:
        self._sync()
        self._in_update = True

    def _write(self, data: dict[str, Any], revision: int) -> None:
        super()._write(data, revision)
        try:
            self._publish(data)
        except OSError as exc:
            # a local failure while committing (the git directory unwritable, disk full): nothing reached the remote
            self._abandon(data, f"commit failed: {exc.strerror or exc}")
            raise StoreError(
                f"store {self.path}: revision {data.get('revision')} was not written: committing it failed ({exc.strerror or exc}); "
                f"no target was touched; the store is unchanged"
            ) from None

    # ---- replacing the whole file (a restore) -------------------------------------------------------------
    def refresh(self) -> None:
        self._sync()

    @property
    def backend_text(self) -> str:
        return f"git ({self.remote_text})"

    def begin_replace(self, raw: bytes, revision: int, why: str) -> tuple[str, str]:
        """Commit ``raw`` as the store on the remote's tip (``refresh`` fetched it) and push it, without force. Unlike
        a write, a whole-file replacement is never re-applied: when another writer got there first, nothing changed."""
        if self._tip is None:
            raise StoreError(f"store {self.path}: no remote tip known (refresh first); nothing was pushed")
        parent = self._tip
        self._event = "restore"
        subject = f"keywarden store {self.environment} r{revision}: restore ({why})"
        commit = self._commit(raw, parent, subject + "\n\n" + "\n".join(self._trailers(revision)) + "\n")
        with self._git_lock():
            pushed, reason = self._push(commit)
        if pushed:
            return parent, commit
        if reason == "rejected":
            raise StoreError(f"store {self.path}: another run wrote it on {self.remote_text} while this restore ran; nothing was restored; run again")
        raise StoreError(
            f"store {self.path}: the push to {self.remote_text} failed ({reason}); nothing was restored; "
            f"fix the push access (docs/security/secrets/awx.md) and run again"
        )

    def end_replace(self, token: Any, raw: bytes) -> None:
        parent, commit = token
        self._pushed(parent, commit, raw)

    # ---- commit and push ---------------------------------------------------------------------------------
    def _identity(self) -> dict[str, str]:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
        host = socket.gethostname()
        name = self._git("config", "--get", "user.name").stdout.decode().strip() or f"keywarden ({user}@{host})"
        email = self._git("config", "--get", "user.email").stdout.decode().strip() or f"keywarden@{host}"
        return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}

    def _message(self, before: dict[str, Any], after: dict[str, Any]) -> str:
        changes = describe_change(before, after)
        subject = f"keywarden store {self.environment} r{after.get('revision')}: {self._event}"
        if changes:
            shown = changes if len(changes) <= 6 else [*changes[:6], f"{len(changes) - 6} more"]
            subject += f" ({'; '.join(shown)})"
        return subject + "\n\n" + "\n".join(self._trailers(after.get("revision"))) + "\n"

    def _trailers(self, revision: Any) -> list[str]:
        trailers = [f"Keywarden-Environment: {self.environment}", f"Keywarden-Revision: {revision}", f"Keywarden-Event: {self._event}"]
        job = os.environ.get("JOB_ID") or os.environ.get("AWX_JOB_ID")
        if job:
            trailers.append(f"Keywarden-AWX-Job: {job}")
        return trailers

    def _commit(self, raw: bytes, parent: str, message: str) -> str:
        blob = self._out("hash-object", "-w", "--no-filters", "--stdin", what="storing the encrypted store in git", input_bytes=raw)
        fd, index = tempfile.mkstemp(prefix="keywarden-index.", dir=self.repo["gitdir"])
        os.close(fd)
        os.unlink(index)  # git read-tree makes it
        try:
            env = {"GIT_INDEX_FILE": index}
            self._out("read-tree", parent, what="reading the remote's tree", env=env)
            self._out("update-index", "--add", "--cacheinfo", f"100644,{blob},{self.repo['rel']}", what="staging the store", env=env)
            tree = self._out("write-tree", what="writing the tree", env=env)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(index)
        return self._out("commit-tree", tree, "-p", parent, "-F", "-", what="committing the store", input_bytes=message.encode(), env=self._identity())

    def _push(self, commit: str) -> tuple[bool, str]:
        """(pushed, why not): why is "rejected" when the remote moved on (another writer), else git's reason."""
        proc = self._git("push", "--porcelain", "--quiet", self.remote, f"{commit}:refs/heads/{self.branch}")
        if proc.returncode == 0:
            return True, ""
        out = proc.stdout.decode("utf-8", "replace") + proc.stderr.decode("utf-8", "replace")
        for line in out.splitlines():
            if not line.startswith("!"):
                continue
            # the remote moved on; or two pushes met at the remote, and its ref update lost to the other's
            if any(why in line for why in ("[rejected]", "fetch first", "non-fast-forward", "failed to update ref", "cannot lock ref", "incorrect old value")):
                return False, "rejected"
            return False, _redact(line.split("\t")[-1].strip())
        return False, _last_line(out)

    def _publish(self, data: dict[str, Any]) -> None:
        """Commit the written store on the remote's tip and push; a lost race is re-applied or fails cleanly."""
        if self._tip is None:  # _sync runs under the lock before every update
            raise StoreError(f"store {self.path}: no remote tip known; nothing was pushed")
        original = self._original or self.empty()
        raw = self._local_raw() or b""
        parent = self._tip
        for _attempt in range(PUSH_ATTEMPTS):
            commit = self._commit(raw, parent, self._message(original, data))
            with self._git_lock():
                pushed, why = self._push(commit)
            if pushed:
                self._pushed(parent, commit, raw)
                return
            if why != "rejected":
                self._abandon(data, f"push to {self.remote_text} failed: {why}")
                raise StoreError(
                    f"store {self.path}: revision {data.get('revision')} was not written: the push to {self.remote_text} failed ({why}); "
                    f"no target was touched; fix the push access (docs/security/secrets/awx.md) and run again"
                )
            with self._git_lock():
                tip, _blob = self._fetch()
            theirs = self._decrypt(self._remote_raw(tip), f"{self.remote_text}:{self.repo['rel']}")
            merged, conflicts = merge_changes(original, data, theirs)
            winner = self._git("log", "-1", "--format=%s", tip).stdout.decode().strip()
            if merged is None:
                self._abandon(data, f"another writer pushed first ({winner}); both changed {', '.join(conflicts)}")
                raise StoreError(
                    f"store {self.path}: another run wrote it at the same time ({winner}), changing what this write changes "
                    f"({', '.join(conflicts)}): this write ({self._event}) was not kept, nothing was changed; run again"
                )
            revision = int(theirs.get("revision") or 0) + 1
            if self.audit is not None:
                try:
                    written = self.audit.record(self._event, change="reapplied", revision=revision, instead_of=data.get("revision"), onto=winner)
                except AuditError as exc:
                    self._abandon(data, str(exc), record=False)
                    raise StoreError(f"{exc}; the store was not changed") from None
                position = anchor(written)
                if position is not None:
                    merged[ANCHOR_KEY] = position
            # the local copy becomes the merged store, on the remote's new tip
            self._base_raw = self._remote_raw(tip)
            self._put(self._base_raw)
            Store._write(self, merged, revision)
            data.clear()
            data.update(merged)
            original, parent, raw = theirs, tip, self._local_raw() or b""
        self._abandon(data, f"{PUSH_ATTEMPTS} pushes rejected")
        raise StoreError(f"store {self.path}: {PUSH_ATTEMPTS} pushes in a row were overtaken by other writers; nothing was changed; run again")

    def _pushed(self, parent: str, commit: str, raw: bytes) -> None:
        """The remote has the commit: move the fetched tip, and this checkout's branch when it stood on the old tip."""
        self._git("update-ref", self._tip_ref, commit)
        head = self._git("rev-parse", "--verify", "--quiet", "HEAD").stdout.decode().strip()
        if head == parent:
            ref = self._git("symbolic-ref", "--quiet", "HEAD").stdout.decode().strip() or "HEAD"
            if self._git("update-ref", "-m", "keywarden: store write pushed", ref, commit, parent).returncode == 0:
                self._git("update-index", "--add", "--cacheinfo", f"100644,{self._blob_id(raw)},{self.repo['rel']}")
        self._tip, self._base_raw = commit, raw
        self._stamp(commit, self._blob_id(raw))

    def _abandon(self, data: dict[str, Any], reason: str, record: bool = True) -> None:
        """A write that did not reach the remote: the local file goes back to what it was, and the log says so."""
        with contextlib.suppress(OSError):
            self._put(self._base_raw)
        if record and self.audit is not None:
            with contextlib.suppress(AuditError):
                self.audit.record(self._event, outcome="error", revision=data.get("revision"), change="not written", reason=reason)


_SCRIPT_SETTINGS = ("store_backend", "store_git_remote", "store_git_branch", "store_git_pull")


def _script_options() -> dict[str, dict[str, Any]]:
    """The store options of the settings doc fragment (their environment variable, ansible.cfg key and default): the
    one definition the playbooks resolve too."""
    import yaml  # noqa: PLC0415 - scripts only

    from ansible_collections.keywarden.secrets.plugins.doc_fragments.settings import ModuleDocFragment  # noqa: PLC0415

    options = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]
    return {name: options[name] for name in _SCRIPT_SETTINGS}


def script_settings(environ: dict[str, str] | None = None, config_file: str | None = None) -> dict[str, tuple[str, str]]:
    """The store settings a script (no Ansible run) uses, as a playbook resolves them without inventory variables:
    the doc fragment's environment variable over its key in the ansible.cfg Ansible would read (``ANSIBLE_CONFIG``,
    ``./ansible.cfg``, ``~/.ansible.cfg``, ``/etc/ansible/ansible.cfg``) over its default.
    ``{option: (value, where it was set)}``; where is "" for a default."""
    env = os.environ if environ is None else environ
    if config_file is None:
        from ansible.config.manager import find_ini_config_file  # noqa: PLC0415 - scripts only

        # Ansible's search reads os.environ: a given environment names its file with ANSIBLE_CONFIG or has none
        config_file = env.get("ANSIBLE_CONFIG") if environ is not None else find_ini_config_file()
    parser = configparser.ConfigParser(interpolation=None)
    if config_file and os.path.isfile(config_file):
        try:
            parser.read(config_file, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError) as exc:
            raise StoreError(f"cannot read {config_file} ({type(exc).__name__}): fix the file or set ANSIBLE_CONFIG") from None
    found = {}
    for name, option in _script_options().items():
        found[name] = (str(option.get("default") or ""), "")
        for ini in option.get("ini") or []:
            value = parser.get(ini["section"], ini["key"], fallback="").strip()
            if value:
                found[name] = (value, f"{ini['key']} in [{ini['section']}] of {config_file}")
        for variable in (entry["name"] for entry in option.get("env") or []):
            if env.get(variable, "").strip():
                found[name] = (env[variable].strip(), variable)
    return found


def open_store(
    store_dir: str, environment: str, vault_secrets: Any, environ: dict[str, str] | None = None, config_file: str | None = None, **kwargs: Any
) -> Store:
    """The store as the scripts (no Ansible) open it: the backend and its git settings from ``script_settings``
    (environment variables over ansible.cfg's ``[keywarden]``), as a playbook run with the same environment and
    ansible.cfg would, inventory variables aside."""
    settings = script_settings(environ, config_file)
    backend, where = settings["store_backend"]
    if backend.lower() == "local":
        return Store(store_dir, environment, vault_secrets, **kwargs)
    if backend.lower() != "git":
        raise StoreError(f"{where} is {backend!r}: use local or git")
    pull, pull_where = settings["store_git_pull"]
    try:
        pulling = boolean(pull or False, strict=True)
    except TypeError:
        raise StoreError(f"{pull_where} is {pull!r}: use true or false") from None
    remote, branch = settings["store_git_remote"][0], settings["store_git_branch"][0] or None
    return GitStore(store_dir, environment, vault_secrets, remote=remote, branch=branch, pull=pulling, **kwargs)


def describe_change(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What a store write changed, in names and steps (for a commit message; never a value)."""
    out = []
    old_secrets, new_secrets = before.get("secrets") or {}, after.get("secrets") or {}
    for name in sorted(set(old_secrets) | set(new_secrets)):
        old, new = old_secrets.get(name), new_secrets.get(name)
        if old == new:
            continue
        if old is None:
            out.append(f"{name} created")
        elif new is None:
            out.append(f"{name} removed")
        elif (new.get("current") or {}).get("version") != (old.get("current") or {}).get("version"):
            out.append(f"{name} v{(new.get('current') or {}).get('version')} current")
        elif (new.get("pending") or {}) != (old.get("pending") or {}):
            step = (new.get("pending") or {}).get("step")
            out.append(f"{name} pending {step}" if new.get("pending") else f"{name} pending cleared")
        else:
            out.append(f"{name} updated")
    for key in sorted((set(before) | set(after)) - _VOLATILE - {"secrets"}):
        if before.get(key) != after.get(key):
            old_holder, holder = before.get(key) or {}, after.get(key) or {}
            if isinstance(holder, dict) and isinstance(old_holder, dict) and holder and holder.get("run") == old_holder.get("run"):
                continue  # the same run renewed its lease: not a change worth a line
            job = f" by AWX job {holder['awx_job_id']}" if isinstance(holder, dict) and holder.get("awx_job_id") else ""
            out.append(f"{key} {'set' + job if after.get(key) else 'cleared'}")
    return out


def merge_changes(base: dict[str, Any], ours: dict[str, Any], theirs: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    """Our changes (base -> ours) re-applied on theirs: (merged, []) when no secret or key changed on both sides
    differently, else (None, the keys in conflict). Revision, time and audit anchor are the writer's, not changes."""
    merged = copy.deepcopy(theirs)
    conflicts = []
    for key in sorted((set(base) | set(ours) | set(theirs)) - _VOLATILE - {"secrets"}):
        if ours.get(key) == base.get(key):
            continue
        if theirs.get(key) not in (base.get(key), ours.get(key)):
            conflicts.append(key)
        elif key in ours:
            merged[key] = copy.deepcopy(ours[key])
        else:
            merged.pop(key, None)
    base_s, ours_s, theirs_s = base.get("secrets") or {}, ours.get("secrets") or {}, theirs.get("secrets") or {}
    secrets = merged.setdefault("secrets", {})
    for name in sorted(set(base_s) | set(ours_s)):
        if ours_s.get(name) == base_s.get(name):
            continue
        if theirs_s.get(name) not in (base_s.get(name), ours_s.get(name)):
            conflicts.append(f"secrets.{name}")
        elif name in ours_s:
            secrets[name] = copy.deepcopy(ours_s[name])
        else:
            secrets.pop(name, None)
    return (None, conflicts) if conflicts else (merged, [])
