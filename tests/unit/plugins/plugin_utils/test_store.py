"""The encrypted store: format, modes, rollback copies, refusals, crash safety and locking, with real files and processes."""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.parsing.vault import VaultSecret

from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import CHARSETS, load_catalog
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import (
    Store,
    StoreError,
    StoreLockedError,
    generate_fields,
    get_field,
    new_entry,
)

REPO = Path(__file__).resolve().parents[4]
COLLECTIONS = REPO / "collections"

# A store writer in a child process. Reads one JSON line of instructions (password and values included)
# from stdin, so nothing secret sits on a command line.
CHILD = r"""
import json, sys
from ansible.parsing.vault import VaultSecret
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import Store, new_entry
args = json.loads(sys.stdin.readline())
store = Store(args["dir"], args["env"], [(args["env"], VaultSecret(args["password"].encode()))],
              lock_timeout=args.get("timeout", 0.0), holder=args.get("holder", ""))
if args["op"] == "add":
    with store.update() as data:
        data["secrets"][args["name"]] = new_entry("generic", {"value": args["value"]})
elif args["op"] == "hold":
    with store.lock():
        print("ready", flush=True)
        sys.stdin.readline()  # hold the lock until the parent says so (or closes the pipe)
"""


def sha(data: Any) -> str:
    if isinstance(data, str):
        data = data.encode()
    elif not isinstance(data, bytes):
        data = yaml.safe_dump(data, sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()


def child(args: dict[str, Any], env_extra: dict[str, str] | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARDEN_")}
    env.update(env_extra or {})
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(args) + "\n")
    proc.stdin.flush()
    return proc


class Env:
    """A store directory with a password for one environment."""

    def __init__(self, root: Path, environment: str = "local") -> None:
        self.dir = root / "store"
        self.environment = environment
        self.password = secrets.token_urlsafe(24)

    def store(self, **kwargs: Any) -> Store:
        environment = kwargs.pop("environment", self.environment)
        vault_secrets = kwargs.pop("vault_secrets", [(environment, VaultSecret(self.password.encode()))])
        return Store(str(self.dir), environment, vault_secrets, **kwargs)

    def child_args(self, **kwargs: Any) -> dict[str, Any]:
        return {"dir": str(self.dir), "env": self.environment, "password": self.password, **kwargs}


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def _add(store: Store, name: str, value: str | None = None) -> str:
    value = value or secrets.token_urlsafe(24)
    with store.update() as data:
        data["secrets"][name] = new_entry("generic", {"value": value})
    return value


@pytest.fixture
def filled(env: Env) -> Env:
    """A store at revision 1 holding one secret."""
    _add(env.store(), "first")
    return env


# ---- format and round trip -------------------------------------------------------------------------
def test_round_trip(env: Env) -> None:
    value = _add(env.store(), "api")
    with env.store().update() as data:
        data["secrets"]["db"] = new_entry("postgresql", {"username": "app", "password": secrets.token_urlsafe(24)})
    data = env.store().read()  # a fresh instance: nothing cached
    assert data["environment"] == "local"
    assert data["revision"] == 2
    names = sorted(data["secrets"])
    assert names == ["api", "db"]
    stored_digest, written_digest = sha(get_field(data, "api", "value")), sha(value)
    assert stored_digest == written_digest
    username = get_field(data, "db", "username")
    assert username == "app"
    assert data["secrets"]["db"]["current"]["version"] == 1
    assert data["secrets"]["db"]["pending"] is None


def test_file_is_vault_1_2_aes256_under_the_environment_vault_id(filled: Env) -> None:
    raw = Path(filled.store().path).read_bytes()
    assert raw.splitlines()[0] == b"$ANSIBLE_VAULT;1.2;AES256;local"
    leaked = filled.password.encode() in raw or b"first" in raw
    assert not leaked


def test_store_file_and_dirs_are_private_whatever_the_umask(env: Env) -> None:
    old = os.umask(0)
    try:
        store = env.store(keep=3)
        _add(store, "a")
        _add(store, "b")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.lock_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(store.versions_dir).st_mode) == 0o700
    assert [stat.S_IMODE(os.stat(v).st_mode) for v in store.versions()] == [0o600]


def test_rollback_copies_are_kept_and_pruned_to_keep(env: Env, tmp_path: Path) -> None:
    store = env.store(keep=3)
    digests = {}
    for index in range(7):
        _add(store, f"s{index}")
        digests[index + 1] = sha(Path(store.path).read_bytes())
    names = [os.path.basename(v) for v in store.versions()]
    # revisions 1..6 were replaced; only the newest `keep` of them are kept
    assert names == ["secrets.r000004.vault", "secrets.r000005.vault", "secrets.r000006.vault"]
    for path in store.versions():
        revision = int(os.path.basename(path)[9:15])
        kept_digest = sha(Path(path).read_bytes())
        assert kept_digest == digests[revision]
    # a rollback copy is a whole store: put it in place and it opens at its revision
    restore_dir = tmp_path / "restore"
    restore_dir.mkdir()
    (restore_dir / "secrets.vault").write_bytes(Path(store.versions()[-1]).read_bytes())
    restored = Store(str(restore_dir), "local", [("local", VaultSecret(env.password.encode()))]).read()
    assert restored["revision"] == 6
    names = sorted(restored["secrets"])
    assert names == [f"s{i}" for i in range(6)]


def test_update_that_changes_nothing_writes_nothing(filled: Env) -> None:
    store = filled.store()
    before = Path(store.path).read_bytes()
    before_stat = os.stat(store.path)
    with store.update() as data:
        data["secrets"]["first"]["kind"] = "generic"  # same value as stored
    after_stat = os.stat(store.path)
    after = Path(store.path).read_bytes()
    after_digest, before_digest = sha(after), sha(before)
    assert after_digest == before_digest
    assert (after_stat.st_ino, after_stat.st_mtime_ns) == (before_stat.st_ino, before_stat.st_mtime_ns)
    revision = store.read()["revision"]
    assert revision == 1
    assert store.versions() == []


def test_missing_store_reads_as_error_naming_restore_and_explicit_creation(env: Env) -> None:
    with pytest.raises(StoreError) as caught:
        env.store().read()
    message = str(caught.value)
    assert "\n" not in message
    assert f"store {env.store().path} of environment 'local' does not exist (no revision in {env.dir / 'versions'})" in message
    assert "docs/security/secrets/backup.md, playbooks/restore.yml" in message
    assert "ansible-playbook playbooks/init.yml -e keywarden_store_create=true" in message
    empty = env.store().read(missing_ok=True)["secrets"] == {}
    assert empty


def test_a_deleted_store_with_revisions_is_not_made_anew(filled: Env) -> None:
    """Issue 10 item 8: with secrets.vault gone and versions/ holding revisions, a write refuses (restore instead)."""
    store = filled.store()
    _add(store, "second")
    _add(store, "third")
    os.unlink(store.path)
    latest = store.versions()[-1]
    assert latest.endswith("secrets.r000002.vault")
    with pytest.raises(StoreError) as caught, store.update() as data:
        data["secrets"]["fresh"] = new_entry("generic", {"value": secrets.token_urlsafe(24)})
    message = str(caught.value)
    assert f"latest revision in versions/: {latest}" in message
    assert "playbooks/restore.yml" in message
    assert not os.path.exists(store.path)
    with store.update(create=True) as data:  # on purpose
        data["secrets"]["fresh"] = new_entry("generic", {"value": secrets.token_urlsafe(24)})
    assert sorted(store.read()["secrets"]) == ["fresh"]


def test_generated_fields_follow_the_catalog_policy() -> None:
    catalog = load_catalog(str(REPO / "config" / "secrets" / "catalog.yml"))
    app_db = generate_fields(catalog["secrets"]["app_db"], CHARSETS)
    api_key = generate_fields(catalog["secrets"]["payments_api_key"], CHARSETS)
    fields = sorted(app_db)
    assert fields == ["password", "username"]
    assert app_db["username"] == "app_a"  # alternating_users: the first of the two logins
    db_ok = len(app_db["password"]) == 32 and set(app_db["password"]) <= set(CHARSETS["alnum"])
    key_ok = len(api_key["value"]) == 48 and set(api_key["value"]) <= set(CHARSETS["urlsafe"])
    assert db_ok
    assert key_ok
    again = generate_fields(catalog["secrets"]["app_db"], CHARSETS)
    differs = again["password"] != app_db["password"]
    assert differs


# ---- refusals --------------------------------------------------------------------------------------
def _one_line_error(store: Store) -> str:
    with pytest.raises(StoreError) as caught:
        store.read()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_wrong_vault_id_in_header_is_refused_naming_both(env: Env) -> None:
    dev = Env(env.dir.parent, environment="development")
    _add(dev.store(), "x")
    both = [("development", VaultSecret(dev.password.encode())), ("production", VaultSecret(env.password.encode()))]
    message = _one_line_error(Store(str(dev.dir), "production", both))
    assert "'development'" in message
    assert "'production'" in message


def test_wrong_password_is_refused(filled: Env) -> None:
    message = _one_line_error(filled.store(vault_secrets=[("local", VaultSecret(b"not-the-password"))]))
    assert "cannot be decrypted" in message
    assert "'local'" in message


def test_password_of_another_vault_id_is_never_tried(filled: Env) -> None:
    # the right password, but registered under another vault ID: vault_id_match means it is not used
    message = _one_line_error(filled.store(vault_secrets=[("development", VaultSecret(filled.password.encode()))]))
    assert "--vault-id local@" in message
    assert "development" in message


def _flip_ciphertext(raw: bytes) -> bytes:
    header, _, body = raw.partition(b"\n")
    index = len(body) // 2
    while not body[index : index + 1].isalnum():
        index += 1
    swapped = b"0" if body[index : index + 1] != b"0" else b"1"
    return header + b"\n" + body[:index] + swapped + body[index + 1 :]


@pytest.mark.parametrize(
    ("corrupt", "fragment"),
    [
        pytest.param(_flip_ciphertext, "cannot be decrypted", id="flipped-ciphertext-byte"),
        pytest.param(lambda raw: raw[: len(raw) // 2], "", id="truncated-half"),
        pytest.param(lambda raw: raw.partition(b"\n")[0] + b"\n", "", id="header-only"),
        pytest.param(lambda raw: b"", "not an ansible-vault file", id="empty"),
        pytest.param(lambda raw: b"keywarden_store_format: 1\nsecrets: {}\n", "not an ansible-vault file", id="plain-text"),
        pytest.param(lambda raw: b"$ANSIBLE_VAULT;garbage", "", id="damaged-header"),
    ],
)
def test_corrupted_store_is_refused_with_one_line(filled: Env, corrupt: Any, fragment: str) -> None:
    store = filled.store()
    Path(store.path).write_bytes(corrupt(Path(store.path).read_bytes()))
    message = _one_line_error(store)
    assert store.path in message
    assert fragment in message
    # and a writer refuses too, leaving the damaged file for the operator to restore
    before = sha(Path(store.path).read_bytes())
    with pytest.raises(StoreError), store.update():
        pass
    after = sha(Path(store.path).read_bytes())
    assert after == before


def test_missing_vault_secret_names_the_vault_id_option(filled: Env) -> None:
    for vault_secrets in ([], None):
        message = _one_line_error(filled.store(vault_secrets=vault_secrets))
        assert "--vault-id local@" in message


def test_missing_vault_secret_also_stops_a_first_write(env: Env) -> None:
    store = env.store(vault_secrets=[])
    with pytest.raises(StoreError) as caught, store.update() as data:
        data["secrets"]["x"] = new_entry("generic", {"value": "y" * 20})
    assert "--vault-id local@" in str(caught.value)
    assert not os.path.exists(store.path)


def test_store_of_another_environment_is_refused(filled: Env) -> None:
    # same vault ID and password, but the decrypted store says it belongs elsewhere
    store = filled.store()
    with store.update() as data:
        data["environment"] = "production"
    message = _one_line_error(store)
    assert "'production'" in message
    assert "'local'" in message


# ---- crash safety ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("point", "expect"),
    [("store-mid-write", "old"), ("store-before-rename", "old"), ("store-after-rename", "new")],
)
def test_crash_leaves_exactly_old_or_exactly_new(filled: Env, point: str, expect: str, crash_env: Any) -> None:
    store = filled.store()
    old = store.read()
    old_digest = sha(old)
    value = secrets.token_urlsafe(24)
    proc = child(filled.child_args(op="add", name="second", value=value), crash_env(point))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, stderr

    data = filled.store().read()
    if expect == "old":
        now_digest = sha(data)
        assert now_digest == old_digest
    else:
        assert data["revision"] == old["revision"] + 1
        names = sorted(data["secrets"])
        assert names == ["first", "second"]
        kept_digest, old_first_digest = sha(data["secrets"]["first"]), sha(old["secrets"]["first"])
        assert kept_digest == old_first_digest
        new_digest, wanted_digest = sha(get_field(data, "second", "value")), sha(value)
        assert new_digest == wanted_digest
        assert [os.path.basename(v) for v in store.versions()] == ["secrets.r000001.vault"]

    # whatever the crash left beside the store (a temp file) breaks neither reading nor the next write
    leftovers = sorted(n for n in os.listdir(filled.dir) if n not in {"secrets.vault", "secrets.vault.lock", "versions"})
    assert all(n.startswith(".secrets.vault.tmp.") for n in leftovers)
    if expect == "old":
        assert leftovers  # the crash happened with the new store half or wholly written beside the old one
    _add(store, "third")
    final = filled.store().read()
    names = sorted(final["secrets"])
    assert names == (["first", "third"] if expect == "old" else ["first", "second", "third"])
    assert all(os.path.basename(v).startswith("secrets.r") for v in store.versions())


# ---- locking --------------------------------------------------------------------------------------
@pytest.fixture
def holder(filled: Env) -> Any:
    """A child process holding the store lock, labelled; released by writing a line to its stdin."""
    proc = child(filled.child_args(op="hold", holder="pytest lock holder"))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read() if proc.stderr else ""
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)


def _release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("release\n")
    proc.stdin.flush()


def test_second_writer_fails_fast_naming_the_holder(filled: Env, holder: subprocess.Popen[str]) -> None:
    store = filled.store()
    before = sha(Path(store.path).read_bytes())
    started = time.monotonic()
    with pytest.raises(StoreLockedError) as caught, store.update() as data:
        data["secrets"]["never"] = new_entry("generic", {"value": "z" * 20})
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert "\n" not in message
    assert "pytest lock holder" in message
    assert f"pid {holder.pid}" in message
    assert f"user {getpass.getuser()}" in message
    assert f"on {socket.gethostname()}" in message
    assert elapsed < 5  # no waiting without a lock_timeout
    after = sha(Path(store.path).read_bytes())
    assert after == before


def test_writer_with_lock_timeout_waits_for_the_holder(filled: Env, holder: subprocess.Popen[str]) -> None:
    store = filled.store(lock_timeout=30)
    timer = threading.Timer(0.5, _release, args=(holder,))
    timer.start()
    try:
        value = _add(store, "after_wait")
    finally:
        timer.cancel()
    assert holder.wait(timeout=30) == 0
    data = filled.store().read()
    stored, wanted = sha(get_field(data, "after_wait", "value")), sha(value)
    assert stored == wanted
    assert data["revision"] == 2


def test_lock_released_when_the_holder_dies(filled: Env, holder: subprocess.Popen[str]) -> None:
    holder.kill()
    holder.wait(timeout=30)
    _add(filled.store(), "after_kill")
    names = sorted(filled.store().read()["secrets"])
    assert names == ["after_kill", "first"]


def test_parallel_writers_all_land(filled: Env) -> None:
    values = {f"parallel_{i}": secrets.token_urlsafe(24) for i in range(4)}
    procs = [child(filled.child_args(op="add", name=name, value=value, timeout=60)) for name, value in values.items()]
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
    data = filled.store().read()
    names = sorted(data["secrets"])
    assert names == ["first", *sorted(values)]
    assert data["revision"] == 1 + len(values)
    for name, value in values.items():
        stored, wanted = sha(get_field(data, name, "value")), sha(value)
        assert stored == wanted
    assert len(filled.store().versions()) == len(values)
