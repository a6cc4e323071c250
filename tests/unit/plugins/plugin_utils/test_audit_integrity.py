"""The audit log under faults and truncation (issue 10, items 1 and 3), on real files and a real full filesystem.

- a failed append (disk full) leaves the log byte for byte as it was, and a store write never lands without its
  records (records first, then the store; a failed store write is recorded as such);
- a torn last line from a crash is TORN (exit 3), not TAMPERED, and `verify-log --repair` cuts it and records the
  cut (length and SHA-256, never the content);
- the head is authenticated: a deleted, garbled or forged head is a finding, and so is an empty log without one;
- the store keeps the log's anchor in its encrypted data: lines cut off the end with an old head put back are
  caught by `verify-log --store` (and by `--expect-seq/--expect-hash`).

No value is printed: tests compare digests and record fields.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from ansible.parsing.vault import VaultSecret
from fullfs import Tmpfs

from ansible_collections.keywarden.secrets.plugins.plugin_utils import audit
from ansible_collections.keywarden.secrets.plugins.plugin_utils import store as store_module
from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import AuditError, AuditLog, Auditor
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import Store, StoreError, new_entry

REPO = Path(__file__).resolve().parents[4]
VERIFY = REPO / "scripts" / "audit" / "verify-log"
KEY = bytes.fromhex("44" * 32)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def key_file(tmp_path: Path, key: bytes = KEY) -> Path:
    path = tmp_path / "audit.key"
    path.write_text(key.hex() + "\n")
    path.chmod(0o600)
    return path


def auditor(log: Path, key: bytes = KEY) -> Auditor:
    return Auditor(AuditLog(str(log), key), "local", {"user": "test"}, host="localhost")


def write_log(log: Path, count: int) -> None:
    writer = auditor(log)
    for number in range(count):
        writer.record("read", secret=f"s{number}", field="password", version=1, value=secrets.token_urlsafe(16))


def verify_cli(log: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARDEN_")}
    environ.update(env or {})
    return subprocess.run([sys.executable, str(VERIFY), *extra, str(log)], capture_output=True, text=True, check=False, env=environ)


def align_to_page(log: Path) -> None:
    """Append padding records until the log ends on a page boundary: its next byte needs a new block."""
    writer = auditor(log)
    size = log.stat().st_size
    writer.record("read", secret="pad", pad="")  # noqa: S106 - a secret name, not a value
    base, size = log.stat().st_size - size, log.stat().st_size
    writer.record("read", secret="pad", pad="p" * ((-(size + base)) % 4096))  # noqa: S106 - a secret name, not a value
    assert log.stat().st_size % 4096 == 0


def batch(writer: Auditor, count: int) -> list[dict[str, object]]:
    return [writer.entry("read", secret=f"b{n}", field="password", version=1, value=secrets.token_urlsafe(16), pad="p" * 200) for n in range(count)]


# ---- item 1: disk full --------------------------------------------------------------------------------------------
def test_a_failed_append_on_a_full_disk_leaves_the_log_as_it_was(tmp_path: Path) -> None:
    with Tmpfs(tmp_path / "fs", 256) as fs:
        log = fs.path / "audit.log"
        write_log(log, 3)
        before_log, before_head = log.read_bytes(), Path(f"{log}.head").read_bytes()
        fs.fill()
        writer = auditor(log)
        # bigger than the slack of the log's last page: part of it would land, then ENOSPC
        with pytest.raises(AuditError) as caught:
            writer.record_many(batch(writer, 40))
        message = str(caught.value)
        assert "No space left on device" in message and "free disk space" in message and "\n" not in message
        assert sha(log.read_bytes()) == sha(before_log)
        assert sha(Path(f"{log}.head").read_bytes()) == sha(before_head)
        assert audit.check(str(log), KEY).status == audit.STATUS_OK
        fs.free()
        writer.record_many(batch(writer, 40))
        verdict = audit.check(str(log), KEY)
        assert (verdict.lines, verdict.bad, verdict.torn) == (43, None, None), verdict.message


def test_no_store_write_without_its_audit_record_when_the_log_is_full(tmp_path: Path) -> None:
    vault = [("local", VaultSecret(secrets.token_urlsafe(16).encode()))]
    with Tmpfs(tmp_path / "fs", 256) as fs:
        log = fs.path / "audit.log"
        write_log(log, 1)
        store = Store(str(tmp_path / "store"), "local", vault, audit=auditor(log))
        with store.update() as data:
            data["secrets"]["x"] = new_entry("generic", {"value": secrets.token_urlsafe(20)})
        align_to_page(log)
        before_store, before_log = sha(Path(store.path).read_bytes()), sha(log.read_bytes())
        fs.fill()
        with pytest.raises(StoreError) as caught, store.update() as data:
            data["secrets"]["y"] = new_entry("generic", {"value": secrets.token_urlsafe(400)})
        assert "the store was not changed" in str(caught.value)
        assert "No space left on device" in str(caught.value)
        assert sha(Path(store.path).read_bytes()) == before_store
        assert sha(log.read_bytes()) == before_log
        assert sorted(store.read()["secrets"]) == ["x"]


def test_a_store_write_that_fails_after_its_records_is_recorded_as_failed(tmp_path: Path) -> None:
    vault = [("local", VaultSecret(secrets.token_urlsafe(16).encode()))]
    log = tmp_path / "audit" / "audit.log"
    with Tmpfs(tmp_path / "store", 256) as fs:
        store = Store(str(fs.path), "local", vault, audit=auditor(log))
        with store.update() as data:
            data["secrets"]["x"] = new_entry("generic", {"value": secrets.token_urlsafe(20)})
        before = sha(Path(store.path).read_bytes())
        fs.fill()
        with pytest.raises(StoreError) as caught, store.update() as data:
            data["secrets"]["y"] = new_entry("generic", {"value": secrets.token_urlsafe(400)})
        message = str(caught.value)
        assert "\n" not in message
        assert f"store {store.path} cannot be written (No space left on device): revision 2 was not written" in message
        assert sha(Path(store.path).read_bytes()) == before
        assert not [n for n in os.listdir(fs.path) if n.startswith(".secrets.vault.tmp")]
        records = [json.loads(line) for line in log.read_text().splitlines()]
        # the intent (durable before the write), then the failure
        assert [(r["event"], r["secret"], r["outcome"], r["detail"]["revision"]) for r in records[-2:]] == [
            ("store", "y", "ok", 2),
            ("store", None, "error", 2),
        ]
        assert records[-1]["detail"]["change"] == "not written"
        fs.free()
        with store.update() as data:
            data["secrets"]["y"] = new_entry("generic", {"value": secrets.token_urlsafe(20)})
        assert store.read()["revision"] == 2
        assert audit.check(str(log), KEY).status == audit.STATUS_OK


# ---- item 1: a torn last line -------------------------------------------------------------------------------------
def test_a_torn_last_line_is_torn_not_tampered_and_repair_records_the_cut(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write_log(log, 4)
    torn = b'{"seq":5,"time":"2026-11-30T00:00:00.000000Z","event":"read","secret":"to'
    with log.open("ab") as handle:
        handle.write(torn)
    keyfile = key_file(tmp_path)
    out = verify_cli(log, "--key-file", str(keyfile))
    assert out.returncode == 3, out.stdout + out.stderr
    assert "TORN:" in out.stderr and "TAMPERED" not in out.stderr + out.stdout
    assert "--repair" in out.stderr

    repaired = verify_cli(log, "--key-file", str(keyfile), "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert f"cut {len(torn)} bytes (sha256 {sha(torn)})" in repaired.stdout
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 5
    last = records[-1]
    assert (last["event"], last["environment"], last["detail"]["cut_bytes"], last["detail"]["cut_sha256"]) == ("audit.repair", "local", len(torn), sha(torn))
    assert b"to" + b'"' not in json.dumps(last).encode()  # the cut content itself is not in the record
    assert b'"secret":"to' not in log.read_bytes()
    assert verify_cli(log, "--key-file", str(keyfile)).returncode == 0
    auditor(log).record("read", secret="after")  # noqa: S106 - a secret name, not a value
    assert audit.check(str(log), KEY).status == audit.STATUS_OK


def test_repair_refuses_a_log_that_is_tampered_as_well(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write_log(log, 4)
    lines = log.read_bytes().splitlines()
    record = json.loads(lines[1])
    record["host"] = "elsewhere"
    log.write_bytes(b"\n".join([lines[0], json.dumps(record, separators=(",", ":")).encode(), *lines[2:]]) + b"\n" + b'{"seq":5,"to')
    before = log.read_bytes()
    out = verify_cli(log, "--key-file", str(key_file(tmp_path)), "--repair")
    assert out.returncode == 1
    assert "TAMPERED: line 2:" in out.stderr and "not repaired" in out.stderr
    assert log.read_bytes() == before


CRASH = r"""
import sys
from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import AuditLog, Auditor
writer = Auditor(AuditLog(sys.argv[1], bytes.fromhex(sys.argv[2])), "local", {"user": "crash"})
# seven lines of one length: the first half of the write ends inside line 4
writer.record_many([writer.entry("read", secret=f"c{n}", pad="p" * 300) for n in range(7)])
"""


def test_a_crash_mid_append_leaves_a_torn_tail_that_repairs(tmp_path: Path, crash_env: Callable[[str], dict[str, str]]) -> None:
    log = tmp_path / "audit.log"
    write_log(log, 2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARDEN_")}
    crashed = subprocess.run([sys.executable, "-c", CRASH, str(log), KEY.hex()], env={**env, **crash_env("audit-mid-append")}, capture_output=True, check=False)
    assert crashed.returncode == -9  # SIGKILLed half way through its write
    verdict = audit.check(str(log), KEY)
    assert verdict.status == audit.STATUS_TORN, verdict.message
    assert verdict.torn is not None and verdict.torn["line"] > 2
    keyfile = key_file(tmp_path)
    assert verify_cli(log, "--key-file", str(keyfile)).returncode == 3
    assert verify_cli(log, "--key-file", str(keyfile), "--repair").returncode == 0
    assert audit.check(str(log), KEY).status == audit.STATUS_OK


# ---- item 3: the head and the anchor ------------------------------------------------------------------------------
def _cut_last(log: Path, count: int) -> None:
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-count]))


def _head(log: Path) -> Path:
    return Path(f"{log}.head")


@pytest.mark.parametrize(
    ("tamper", "fragment"),
    [
        pytest.param(lambda log: _head(log).unlink(), "the head", id="head-deleted"),
        pytest.param(lambda log: _head(log).write_bytes(b"\x00garbled\n"), "not a head record", id="head-garbled"),
        pytest.param(
            # cut two lines and write a head that matches the shortened log, without the key
            lambda log: (
                _cut_last(log, 2),
                _head(log).write_text(json.dumps({"seq": 4, "hash": audit.line_hash(log.read_bytes().splitlines()[-1]), "mac": "0" * 64})),
            ),
            "forged head",
            id="lines-cut-head-forged",
        ),
        pytest.param(lambda log: _cut_last(log, 2), "lines cut off the end", id="lines-cut"),
    ],
)
def test_a_missing_or_invalid_head_is_a_finding(tmp_path: Path, tamper: object, fragment: str) -> None:
    log = tmp_path / "audit.log"
    write_log(log, 6)
    tamper(log)  # type: ignore[operator]
    out = verify_cli(log, "--key-file", str(key_file(tmp_path)))
    assert out.returncode == 1, out.stdout
    assert "TAMPERED:" in out.stderr and fragment in out.stderr
    assert audit.check(str(log), KEY).status == audit.STATUS_TAMPERED


def test_an_empty_log_without_a_head_is_a_finding(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes(b"")
    out = verify_cli(log)
    assert out.returncode == 1
    assert "the log is empty and has no head" in out.stderr


def test_an_emptied_log_is_not_started_again_over_its_head(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write_log(log, 3)
    log.write_bytes(b"")
    with pytest.raises(AuditError, match="empty or missing, but its head records 3 lines"):
        auditor(log).record("read", secret="x")  # noqa: S106 - a secret name, not a value
    assert log.read_bytes() == b""


def _store(tmp_path: Path, log: Path, password: str) -> Store:
    return Store(str(tmp_path / "store"), "local", [("local", VaultSecret(password.encode()))], audit=auditor(log))


def test_the_store_anchors_the_log_and_verify_log_holds_the_log_to_it(tmp_path: Path) -> None:
    password = secrets.token_urlsafe(24)
    log = tmp_path / "audit.log"
    store = _store(tmp_path, log, password)
    with store.update() as data:
        data["secrets"]["x"] = new_entry("generic", {"value": secrets.token_urlsafe(20)})
    old_head = _head(log).read_bytes()  # a valid head, saved by someone planning to cut the log later
    with store.update() as data:
        data["secrets"]["y"] = new_entry("generic", {"value": secrets.token_urlsafe(20)})
    lines = log.read_bytes().splitlines()
    anchored = store.read()[store_module.ANCHOR_KEY]
    assert anchored == {"seq": len(lines), "hash": audit.line_hash(lines[-1])}
    auditor(log).record("read", secret="y", field="value")  # noqa: S106 - a secret name, not a value

    passwords = tmp_path / "pass"
    passwords.mkdir(mode=0o700)
    (passwords / "local").write_text(password + "\n")
    (passwords / "local").chmod(0o600)
    env = {"KEYWARDEN_VAULT_PASSWORD_DIR": str(passwords), "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    keyfile = str(key_file(tmp_path))
    against_store = ("--key-file", keyfile, "--store", str(tmp_path / "store"), "-e", "local")
    out = verify_cli(log, *against_store, env=env)
    assert out.returncode == 0, out.stderr
    assert "holds the anchor (line 2 of store" in out.stdout

    # cut the second write's record and the read after it, and put the old (genuine, MAC-valid) head back
    saved_log, saved_head = log.read_bytes(), _head(log).read_bytes()
    _cut_last(log, 2)
    _head(log).write_bytes(old_head)
    assert audit.check(str(log), KEY).status == audit.STATUS_OK  # the head alone cannot tell: it is a genuine old one
    out = verify_cli(log, *against_store, env=env)
    assert out.returncode == 1
    assert "TAMPERED: line 2: missing; the log ends at line 1 but the anchor (store" in out.stderr
    expected = ("--key-file", keyfile, "--expect-seq", str(anchored["seq"]), "--expect-hash", anchored["hash"])
    assert verify_cli(log, *expected).returncode == 1
    log.write_bytes(saved_log)
    _head(log).write_bytes(saved_head)
    assert verify_cli(log, *expected).returncode == 0
