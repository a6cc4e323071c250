"""The git store backend on real repositories: a bare repository on this machine plays the remote, each "job" or
"laptop" is a clone of its own. Values are compared by digest, never printed."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from ansible.parsing.vault import VaultSecret

from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import AuditLog, Auditor, actor, check, load_key, read_records
from ansible_collections.keywarden.secrets.plugins.plugin_utils.git_store import GitStore, merge_changes, open_store
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import Store, StoreError, new_entry

ENV = "production"
STORE_REL = f"inventories/{ENV}/store"


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
    return proc.stdout.strip()


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class Remote:
    """A bare repository holding a project with a first store (made through the backend, like init.yml does)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bare = root / "remote.git"
        self.password = secrets.token_urlsafe(24)
        self.values: list[str] = []
        git(root, "init", "--quiet", "--bare", "--initial-branch=main", str(self.bare))
        seed = root / "seed"
        git(root, "clone", "--quiet", str(self.bare), str(seed))
        git(seed, "config", "user.email", "ops@example.invalid")
        git(seed, "config", "user.name", "ops")
        (seed / "playbooks").mkdir()
        (seed / "playbooks" / "site.yml").write_text("---\n[]\n")
        (seed / ".gitignore").write_text((Path(__file__).resolve().parents[4] / ".gitignore").read_text())
        (seed / STORE_REL).mkdir(parents=True)
        git(seed, "add", ".")
        git(seed, "commit", "--quiet", "-m", "project")
        git(seed, "push", "--quiet", "origin", "main")
        store = self.store(seed)
        with store.update(create=True) as data:
            data["secrets"]["app_db"] = new_entry("generic", {"value": self.value()})

    def value(self) -> str:
        value = secrets.token_urlsafe(32)
        self.values.append(value)
        return value

    def clone(self, name: str, shallow: bool = False) -> Path:
        path = self.root / name
        git(self.root, "clone", "--quiet", *(("--depth=1", f"file://{self.bare}") if shallow else (str(self.bare),)), str(path))
        return path

    def store(self, clone: Path, audit: Auditor | None = None, **kwargs: Any) -> GitStore:
        return GitStore(str(clone / STORE_REL), ENV, [(ENV, VaultSecret(self.password.encode()))], remote=kwargs.pop("remote", "origin"), audit=audit, **kwargs)

    def remote_store(self) -> dict[str, Any]:
        """The store as the remote holds it (a fresh clone)."""
        fresh = self.clone(f"check-{uuid.uuid4().hex[:8]}")
        return self.store(fresh).read()


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    return Remote(tmp_path)


def _add(store: GitStore, name: str, value: str) -> None:
    with store.update(event="store") as data:
        data["secrets"][name] = new_entry("generic", {"value": value})


def test_a_write_is_a_pushed_commit_of_the_store_alone(remote: Remote) -> None:
    job = remote.clone("job1")
    (job / "playbooks" / "site.yml").write_text("---\n# an uncommitted change of the checkout\n[]\n")
    (job / "unrelated.txt").write_text("staged, not ours\n")
    git(job, "add", "unrelated.txt")
    store = remote.store(job)
    _add(store, "api_key", remote.value())
    log = git(remote.bare, "log", "--format=%s", "main")
    assert log.splitlines()[0] == "keywarden store production r2: store (api_key created)"
    changed = git(remote.bare, "show", "--name-only", "--format=", "main").splitlines()
    assert changed == [f"{STORE_REL}/secrets.vault"]
    tree = git(remote.bare, "ls-tree", "-r", "--name-only", "main").splitlines()
    assert not [path for path in tree if "versions/" in path or path.endswith((".lock", "audit.log"))]
    # the checkout stood on the old tip: its branch moved along, its own changes untouched
    assert git(job, "rev-parse", "HEAD") == git(remote.bare, "rev-parse", "main")
    assert {line.strip() for line in git(job, "status", "--porcelain").splitlines()} == {"M playbooks/site.yml", "A  unrelated.txt"}
    assert set(remote.remote_store()["secrets"]) == {"app_db", "api_key"}


def test_a_stale_clone_is_refused_with_a_message_to_pull(remote: Remote) -> None:
    laptop = remote.clone("laptop")
    job = remote.clone("job")
    _add(remote.store(job), "api_key", remote.value())
    stale = remote.store(laptop)
    for attempt in (stale.read, lambda: _add(stale, "other", remote.value())):
        with pytest.raises(StoreError) as caught:
            attempt()
        message = str(caught.value)
        assert "behind" in message and "git pull" in message and "revision 1 here, 2 there" in message and "\n" not in message
    assert set(remote.remote_store()["secrets"]) == {"app_db", "api_key"}
    git(laptop, "pull", "--quiet")
    assert set(remote.store(laptop).read()["secrets"]) == {"app_db", "api_key"}


def test_pull_brings_a_throwaway_checkout_up_to_date(remote: Remote) -> None:
    job = remote.clone("job", shallow=True)
    git(job, "checkout", "--quiet", "-b", f"awx_internal/{uuid.uuid4()}")
    git(job, "remote", "set-url", "origin", str(remote.root / "awx-project-cache-not-reachable"))
    other = remote.clone("other")
    _add(remote.store(other), "api_key", remote.value())
    with pytest.raises(StoreError, match="keywarden_store_git_branch"):
        remote.store(job, remote=f"file://{remote.bare}", pull=True).read()
    store = remote.store(job, remote=f"file://{remote.bare}", branch="main", pull=True)
    assert set(store.read()["secrets"]) == {"app_db", "api_key"}
    _add(store, "cert", remote.value())
    assert set(remote.remote_store()["secrets"]) == {"app_db", "api_key", "cert"}


class Racer:
    """Writes from another clone while a first writer is inside its update (between its pull and its push)."""

    def __init__(self, remote: Remote, name: str, change: Any) -> None:
        self.store = remote.store(remote.clone(name))
        self.change = change

    def write(self) -> None:
        with self.store.update(event="store") as data:
            self.change(data)


def _audited(remote: Remote, clone: Path) -> Auditor:
    key_file = remote.root / "audit.key"
    return Auditor(AuditLog(str(clone / STORE_REL / "audit.log"), load_key(str(key_file))), ENV, actor())


def test_a_lost_race_on_other_secrets_is_reapplied_and_no_update_is_lost(remote: Remote) -> None:
    job = remote.clone("job")
    auditor = _audited(remote, job)
    store = remote.store(job, audit=auditor)
    racer = Racer(remote, "racer", lambda data: data["secrets"].__setitem__("racer_key", new_entry("generic", {"value": remote.value()})))
    mine = remote.value()
    with store.update(event="store") as data:
        data["secrets"]["mine"] = new_entry("generic", {"value": mine})
        racer.write()  # pushed first
    final = remote.remote_store()
    assert set(final["secrets"]) == {"app_db", "racer_key", "mine"}
    assert final["revision"] == 3
    assert sha(final["secrets"]["mine"]["current"]["fields"]["value"]) == sha(mine)
    assert [line.split(":")[0] for line in git(remote.bare, "log", "--format=%s", "main").splitlines()[:2]] == [
        "keywarden store production r3",
        "keywarden store production r2",
    ]
    last = read_records(auditor.log.path)[-1]
    assert (last["event"], last["detail"]["change"], last["detail"]["revision"], last["detail"]["instead_of"]) == ("store", "reapplied", 3, 2)
    # the store's anchor is the re-applied record: the log holds it
    assert final["audit_anchor"]["seq"] == last["seq"]
    assert check(auditor.log.path, load_key(str(remote.root / "audit.key")), final["audit_anchor"]).status == 0


def test_a_lost_race_on_the_same_secret_fails_and_changes_nothing(remote: Remote) -> None:
    job = remote.clone("job")
    auditor = _audited(remote, job)
    store = remote.store(job, audit=auditor)
    racer = Racer(remote, "racer", lambda data: data["secrets"]["app_db"].__setitem__("pending", {"version": 2, "step": "created", "fields": {}}))
    before = (job / STORE_REL / "secrets.vault").read_bytes()
    with pytest.raises(StoreError) as caught, store.update(event="rotate.create") as data:
        data["secrets"]["app_db"]["pending"] = {"version": 2, "step": "created", "fields": {"value": remote.value()}}
        racer.write()
    message = str(caught.value)
    assert "another run wrote it at the same time" in message and "secrets.app_db" in message and "run again" in message
    assert "keywarden store production r2: store (app_db pending created)" in message
    # the local file is what it was, the remote holds the racer's write only
    assert (job / STORE_REL / "secrets.vault").read_bytes() == before
    assert remote.remote_store()["revision"] == 2
    last = read_records(auditor.log.path)[-1]
    assert (last["event"], last["outcome"], last["detail"]["change"]) == ("rotate.create", "error", "not written")


def test_a_failed_push_puts_the_local_store_back_and_names_no_credential(remote: Remote) -> None:
    job = remote.clone("job")
    store = remote.store(job)
    store.read()
    before = (job / STORE_REL / "secrets.vault").read_bytes()
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'protected branch' >&2\nexit 1\n")
    hook.chmod(0o755)
    with pytest.raises(StoreError) as caught:
        _add(store, "api_key", remote.value())
    assert "the push to origin branch main failed" in str(caught.value) and "no target was touched" in str(caught.value)
    assert (job / STORE_REL / "secrets.vault").read_bytes() == before
    hook.unlink()
    token = secrets.token_hex(8)
    unreachable = remote.store(job, remote=f"https://keywarden:{token}@127.0.0.1:9/project.git", branch="main")
    with pytest.raises(StoreError) as caught:
        unreachable.read()
    assert token not in str(caught.value) and "cannot fetch" in str(caught.value)


def test_a_write_cut_off_before_its_push_is_named_and_never_pushed(remote: Remote) -> None:
    laptop = remote.clone("laptop")
    store = remote.store(laptop)
    store.read()
    # what a run killed between the local write and the push leaves: a newer local revision, nothing on the remote
    plain = Store(str(laptop / STORE_REL), ENV, [(ENV, VaultSecret(remote.password.encode()))])
    with plain.update() as data:
        data["secrets"]["cut_off"] = new_entry("generic", {"value": remote.value()})
    with pytest.raises(StoreError) as caught:
        remote.store(laptop).read()
    assert "holds revision 2, which never reached origin branch main (revision 1 there)" in str(caught.value)
    assert f"checkout -- {STORE_REL}/secrets.vault" in str(caught.value)
    # a throwaway checkout takes the remote's: the cut-off write never happened
    assert set(remote.store(laptop, pull=True).read()["secrets"]) == {"app_db"}


def test_git_holds_no_value_in_any_form(remote: Remote) -> None:
    job = remote.clone("job")
    store = remote.store(job, audit=_audited(remote, job))
    for name in ("a", "b", "c"):
        _add(store, name, remote.value())
    with store.update(event="rotate.create") as data:
        data["secrets"]["a"]["pending"] = {"version": 2, "step": "created", "fields": {"value": remote.value()}}
    blobs = subprocess.run(["git", "cat-file", "--batch-all-objects", "--batch"], cwd=remote.bare, capture_output=True, check=True).stdout
    forms = []
    for value in remote.values:
        raw = value.encode()
        forms += [raw, base64.b64encode(raw), raw.hex().encode(), hashlib.sha256(raw).hexdigest().encode(), hashlib.sha1(raw).hexdigest().encode()]  # noqa: S324
    assert not any(form in blobs for form in forms), "a stored value is in the remote's git objects"
    # what is committed is vault ciphertext
    assert all(git(remote.bare, "show", f"{rev}:{STORE_REL}/secrets.vault").startswith("$ANSIBLE_VAULT;1.2;AES256;production") for rev in ("main", "main~1"))


def test_merge_keeps_each_side_and_names_conflicts() -> None:
    base = {"revision": 1, "secrets": {"a": {"v": 1}, "b": {"v": 1}}, "rotation_lock": None}
    ours = {"revision": 2, "secrets": {"a": {"v": 2}, "b": {"v": 1}}, "rotation_lock": {"run": "me"}}
    theirs = {"revision": 2, "secrets": {"a": {"v": 1}, "b": {"v": 1}, "c": {"v": 1}}, "rotation_lock": None}
    merged, conflicts = merge_changes(base, ours, theirs)
    assert conflicts == [] and merged is not None
    assert (merged["secrets"], merged["rotation_lock"]) == ({"a": {"v": 2}, "b": {"v": 1}, "c": {"v": 1}}, {"run": "me"})
    theirs_lock = {**theirs, "rotation_lock": {"run": "other"}}
    assert merge_changes(base, ours, theirs_lock) == (None, ["rotation_lock"])


@pytest.mark.parametrize(
    ("environ", "kind"),
    [({}, "Store"), ({"KEYWARDEN_STORE_BACKEND": "local"}, "Store"), ({"KEYWARDEN_STORE_BACKEND": "Git", "KEYWARDEN_STORE_GIT_PULL": "yes"}, "GitStore")],
)
def test_scripts_open_the_store_of_the_backend_the_environment_names(tmp_path: Path, environ: dict[str, str], kind: str) -> None:
    store = open_store(str(tmp_path), "production", None, environ=environ, holder="a script")
    assert (type(store).__name__, store.holder) == (kind, "a script")
    if kind == "GitStore":
        assert (store.remote, store.branch, store.pull) == ("origin", None, True)


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({"KEYWARDEN_STORE_BACKEND": "s3"}, "KEYWARDEN_STORE_BACKEND is 's3': use local or git"),
        ({"KEYWARDEN_STORE_BACKEND": "git", "KEYWARDEN_STORE_GIT_PULL": "maybe"}, "KEYWARDEN_STORE_GIT_PULL is 'maybe': use true or false"),
    ],
)
def test_scripts_refuse_a_backend_setting_they_do_not_know(tmp_path: Path, environ: dict[str, str], says: str) -> None:
    with pytest.raises(StoreError) as error:
        open_store(str(tmp_path), "production", None, environ=environ)
    assert str(error.value) == says


def _ansible_cfg(tmp_path: Path, text: str) -> str:
    path = tmp_path / "ansible.cfg"
    path.write_text(text)
    return str(path)


def test_scripts_read_the_backend_from_ansible_cfg_and_the_environment_wins(tmp_path: Path) -> None:
    settings = "store_backend = git\nstore_git_remote = upstream\nstore_git_branch = ops\nstore_git_pull = true\n"
    cfg = _ansible_cfg(tmp_path, "[defaults]\ninventory = x\n[keywarden]\n" + settings)
    store = open_store(str(tmp_path), "production", None, environ={"ANSIBLE_CONFIG": cfg})
    assert isinstance(store, GitStore) and (store.remote, store.branch, store.pull) == ("upstream", "ops", True)
    environ = {"ANSIBLE_CONFIG": cfg, "KEYWARDEN_STORE_GIT_PULL": "no", "KEYWARDEN_STORE_GIT_REMOTE": "origin"}
    store = open_store(str(tmp_path), "production", None, environ=environ)
    assert isinstance(store, GitStore) and (store.remote, store.branch, store.pull) == ("origin", "ops", False)
    store = open_store(str(tmp_path), "production", None, environ={"ANSIBLE_CONFIG": cfg, "KEYWARDEN_STORE_BACKEND": "local"})
    assert type(store).__name__ == "Store"


def test_scripts_find_ansible_cfg_as_ansible_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _ansible_cfg(tmp_path, "[keywarden]\nstore_backend = git\n")
    monkeypatch.delenv("ANSIBLE_CONFIG", raising=False)
    monkeypatch.delenv("KEYWARDEN_STORE_BACKEND", raising=False)
    monkeypatch.chdir(tmp_path)
    assert isinstance(open_store(str(tmp_path), "production", None), GitStore)


def test_scripts_name_the_ansible_cfg_line_they_refuse(tmp_path: Path) -> None:
    cfg = _ansible_cfg(tmp_path, "[keywarden]\nstore_backend = git\nstore_git_pull = sometimes\n")
    with pytest.raises(StoreError) as error:
        open_store(str(tmp_path), "production", None, environ={"ANSIBLE_CONFIG": cfg})
    assert str(error.value) == f"store_git_pull in [keywarden] of {cfg} is 'sometimes': use true or false"
    broken = _ansible_cfg(tmp_path, "keywarden without a section\n")
    with pytest.raises(StoreError) as error:
        open_store(str(tmp_path), "production", None, environ={"ANSIBLE_CONFIG": broken})
    assert str(error.value) == f"cannot read {broken} (MissingSectionHeaderError): fix the file or set ANSIBLE_CONFIG"
