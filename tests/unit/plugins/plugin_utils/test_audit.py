"""The audit log engine: chain verification against each kind of tampering, keyed HMACs, fail closed, parallel writers.

Real files and real processes. No secret value is ever printed: tests compare HMACs and digests.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import secrets
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from ansible.parsing.vault import VaultSecret

from ansible_collections.keywarden.secrets.plugins.plugin_utils import audit
from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import AuditError, AuditLog, Auditor, load_key, value_hmac, verify
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import Store, StoreError, new_entry

REPO = Path(__file__).resolve().parents[4]
VERIFY = REPO / "scripts" / "audit" / "verify-log"
REPORT = REPO / "scripts" / "audit" / "report"
KEY = bytes.fromhex("11" * 32)


def auditor(path: Path, key: bytes = KEY) -> Auditor:
    return Auditor(AuditLog(str(path), key), "local", audit.actor({}), host="localhost")


def write_log(path: Path, count: int = 6) -> list[bytes]:
    log = auditor(path)
    for number in range(count):
        log.record("read", secret=f"s{number}", field="password", version=1, value=f"value-{number}")
    return path.read_bytes().splitlines()


def rewrite(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def verify_cli(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(VERIFY), *extra, str(path)], capture_output=True, text=True, check=False)


# ---- chain -----------------------------------------------------------------------------------------------
def test_intact_log_verifies_with_and_without_the_key(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write_log(log)
    assert verify(str(log)) == (6, None, "6 lines, chain intact (MACs not checked: no key given)")
    assert verify(str(log), KEY)[1] is None
    key_file = tmp_path / "k"
    key_file.write_text(KEY.hex() + "\n")
    key_file.chmod(0o600)
    out = verify_cli(log, "--key-file", str(key_file))
    assert out.returncode == 0, out.stderr
    assert "OK, 6 lines, chain intact, MACs valid" in out.stdout
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def _edit(lines: list[bytes]) -> list[bytes]:
    record = json.loads(lines[2])
    record["secret"] = "someone_else"  # noqa: S105 - a secret name, not a value
    return [*lines[:2], json.dumps(record, separators=(",", ":")).encode(), *lines[3:]]


def _insert(lines: list[bytes]) -> list[bytes]:
    forged = json.loads(lines[2])
    forged["event"] = "store"
    return [*lines[:3], json.dumps(forged, separators=(",", ":")).encode(), *lines[3:]]


@pytest.mark.parametrize(
    ("tamper", "first_bad", "with_key"),
    [
        # without the key: line 3's hash no longer matches what line 4 carries; with it, line 3's own MAC fails
        pytest.param(_edit, 4, 3, id="edited"),
        pytest.param(lambda ls: ls[:2] + ls[3:], 3, 3, id="deleted"),
        pytest.param(lambda ls: ls[1:], 1, 1, id="first-deleted"),
        pytest.param(lambda ls: ls[:-1], 6, 6, id="last-deleted"),
        pytest.param(_insert, 4, 4, id="inserted"),
        pytest.param(lambda ls: [ls[0], ls[2], ls[1], *ls[3:]], 2, 2, id="reordered"),
        pytest.param(lambda ls: [*ls[:3], b"not json", *ls[4:]], 4, 4, id="garbage"),
    ],
)
def test_verify_names_the_first_bad_line(tmp_path: Path, tamper: Any, first_bad: int, with_key: int) -> None:
    log = tmp_path / "audit.log"
    rewrite(log, tamper(write_log(log)))
    _, bad, message = verify(str(log))
    assert bad == first_bad, message
    _, bad, message = verify(str(log), KEY)
    assert bad == with_key, message
    out = verify_cli(log)
    assert out.returncode == 1
    assert f"TAMPERED: line {first_bad}:" in out.stderr


def test_an_edit_of_the_last_line_is_caught_by_the_head(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    lines = write_log(log)
    record = json.loads(lines[-1])
    record["host"] = "elsewhere"
    rewrite(log, [*lines[:-1], json.dumps(record, separators=(",", ":")).encode()])
    assert verify(str(log))[1] == 6


def test_a_chain_rebuilt_without_the_key_fails_the_mac_check(tmp_path: Path) -> None:
    """Whoever edits a line and recomputes every hash after it still cannot forge the keyed MACs."""
    log = tmp_path / "audit.log"
    lines = write_log(log)
    prev = audit.GENESIS
    rebuilt = []
    for number, line in enumerate(lines, start=1):
        record = json.loads(line)
        if number == 3:
            record["actor"] = {**record["actor"], "user": "nobody"}
        record["prev"] = prev
        raw = json.dumps(record, separators=(",", ":")).encode()
        rebuilt.append(raw)
        prev = audit.line_hash(raw)
    rewrite(log, rebuilt)
    Path(str(log) + ".head").write_text(json.dumps({"seq": 6, "hash": prev}))
    assert verify(str(log))[1] is None  # the plain hash chain is consistent again...
    assert verify(str(log), KEY)[1] == 3  # ...but the MAC of the edited line is not
    assert verify(str(log), bytes.fromhex("22" * 32))[1] == 1  # and a wrong key fails from the first line


def test_appends_continue_the_chain_across_writers(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write_log(log, 3)
    auditor(log).record("deploy", secret="x", field="password", version=2, value="v")  # noqa: S106 - a secret name, not a value
    records = [json.loads(raw) for raw in log.read_bytes().splitlines()]
    assert [r["seq"] for r in records] == [1, 2, 3, 4]
    assert verify(str(log), KEY)[1] is None


# ---- HMAC --------------------------------------------------------------------------------------------------
def test_value_hmac_is_stable_keyed_and_never_the_value(tmp_path: Path) -> None:
    value = secrets.token_urlsafe(24)
    other_key = bytes.fromhex("33" * 32)
    assert value_hmac(KEY, value) == value_hmac(KEY, value)
    assert value_hmac(KEY, value) != value_hmac(other_key, value)
    assert value_hmac(KEY, value) != value_hmac(KEY, value + "x")
    assert value_hmac(KEY, value) != hashlib.sha256(value.encode()).hexdigest()  # keyed: no dictionary test without the key
    log = tmp_path / "audit.log"
    auditor(log).record("read", secret="app_db", field="password", version=3, value=value)  # noqa: S106 - a secret name, not a value
    text = log.read_text()
    assert value not in text
    assert json.loads(text)["value_hmac"] == value_hmac(KEY, value)


def test_report_matches_a_leaked_value_by_hmac_from_stdin(tmp_path: Path) -> None:
    value = secrets.token_urlsafe(24)
    log = tmp_path / "audit.log"
    auditor(log).record("read", secret="app_db", field="password", version=3, value=value)  # noqa: S106 - a secret name, not a value
    key_file = tmp_path / "k"
    key_file.write_text(KEY.hex())
    key_file.chmod(0o600)
    hit = subprocess.run(
        [sys.executable, str(REPORT), str(log), "--key-file", str(key_file), "--match-value"], input=value, capture_output=True, text=True, check=False
    )
    assert hit.returncode == 0
    assert "read app_db.password" in hit.stdout
    miss = subprocess.run(
        [sys.executable, str(REPORT), str(log), "--key-file", str(key_file), "--match-value"], input="nope", capture_output=True, text=True, check=False
    )
    assert miss.returncode == 1
    summary = subprocess.run([sys.executable, str(REPORT), str(log), "--json"], capture_output=True, text=True, check=True)
    data = json.loads(summary.stdout)
    assert data["per_secret"]["app_db"]["read"]["count"] == 1
    assert value not in summary.stdout


# ---- the key -----------------------------------------------------------------------------------------------
def test_key_is_created_0600_with_the_first_line_of_a_new_log_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "audit-local.key"
    first = load_key(str(path))
    assert not path.exists()  # not before a log needs it
    log = tmp_path / "audit.log"
    Auditor(AuditLog(str(log), first), "local", {}).record("read", secret="x")  # noqa: S106 - a secret name, not a value
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(str(path)) == first
    assert len(first) == 32
    assert verify(str(log), load_key(str(path), create=False))[1] is None


def test_a_missing_key_is_not_made_anew_for_a_log_in_place(tmp_path: Path) -> None:
    """Issue 10 item 2: a lost key (or a mistyped KEYWARDEN_AUDIT_KEY_FILE) with a log in place is an error, no new key."""
    log = tmp_path / "audit.log"
    write_log(log, 2)
    before = log.read_bytes()
    lost = tmp_path / "cfg" / "audit-local.key"
    with pytest.raises(AuditError) as caught:
        Auditor(AuditLog(str(log), load_key(str(lost))), "local", {}).record("read", secret="x")  # noqa: S106 - a secret name, not a value
    message = str(caught.value)
    assert "\n" not in message
    assert f"audit key {lost} does not exist, but audit log {log} does" in message
    assert "restore the key file" in message and "KEYWARDEN_AUDIT_KEY_FILE" in message
    assert not lost.exists()
    assert log.read_bytes() == before


def test_a_wrong_key_is_refused_before_it_signs_a_line(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write_log(log, 2)
    before = log.read_bytes()
    with pytest.raises(AuditError, match="does not verify under the audit key"):
        auditor(log, bytes.fromhex("22" * 32)).record("read", secret="x")  # noqa: S106 - a secret name, not a value
    assert log.read_bytes() == before


def test_key_readable_by_others_or_inside_a_repository_is_refused(tmp_path: Path) -> None:
    loose = tmp_path / "loose.key"
    loose.write_text("ab" * 32)
    loose.chmod(0o644)
    with pytest.raises(AuditError, match="chmod 0600"):
        load_key(str(loose))
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    with pytest.raises(AuditError, match="inside a git repository"):
        load_key(str(repo / "audit.key"))
    (repo / ".gitignore").write_text("/private/\n")
    assert len(load_key(str(repo / "private" / "audit.key"))) == 32  # git-ignored (like the demo's .demo/) is fine


# ---- fail closed ----------------------------------------------------------------------------------------------
def test_disk_full_fails_closed_with_a_message_saying_so() -> None:
    with pytest.raises(AuditError) as caught:
        auditor(Path("/dev/full")).record("read", secret="app_db", field="password", version=1, value="v")  # noqa: S106 - a secret name, not a value
    message = str(caught.value)
    assert "No space left on device" in message
    assert "fail closed" in message


def test_unwritable_log_fails_closed(tmp_path: Path) -> None:
    directory = tmp_path / "is-a-dir.log"
    directory.mkdir()
    with pytest.raises(AuditError, match=r"cannot be opened .*fail closed"):
        auditor(directory).record("read", secret="app_db")  # noqa: S106 - a secret name, not a value


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"), reason="drops to uid 65534 (needs root) and runs /usr/bin/python3")
def test_permission_denied_fails_closed(tmp_path_factory: pytest.TempPathFactory) -> None:
    # root ignores file modes: the writer runs as nobody, on a root-owned 0600 log in a directory it can traverse
    shared = Path(tmp_path_factory.mktemp("shared"))
    shared.chmod(0o755)
    for parent in shared.parents:
        if str(parent).startswith(tempfile.gettempdir() + os.sep):
            parent.chmod(parent.stat().st_mode | 0o111)
    (shared / "audit.py").write_bytes(Path(audit.__file__).read_bytes())  # stdlib only: importable on its own
    log = shared / "audit.log"
    write_log(log, 1)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from audit import AuditLog, AuditError\n"
        "try:\n  AuditLog(sys.argv[2], b'k'*32).append([{'event':'read'}])\n"
        "except AuditError as exc:\n  print(exc); sys.exit(3)\n"
    )
    out = subprocess.run(["/usr/bin/python3", "-c", code, str(shared), str(log)], capture_output=True, text=True, user=65534, cwd="/", check=False)
    assert out.returncode == 3, out.stderr
    assert "Permission denied" in out.stdout
    assert "fail closed" in out.stdout


def test_an_incomplete_last_line_stops_appends(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write_log(log, 2)
    with log.open("ab") as handle:
        handle.write(b'{"seq":3,"tor')
    with pytest.raises(AuditError, match="ends with a torn line .*verify-log --repair"):
        auditor(log).record("read", secret="x")  # noqa: S106 - a secret name, not a value
    assert verify(str(log))[1] == 3


def test_store_write_is_refused_when_the_log_cannot_be_written(tmp_path: Path) -> None:
    vault = [("local", VaultSecret(b"pw-for-this-test"))]
    log_dir = tmp_path / "log-is-a-dir"
    log_dir.mkdir()
    store = Store(str(tmp_path / "store"), "local", vault, audit=auditor(log_dir))
    with pytest.raises(StoreError, match="the store was not changed"), store.update() as data:
        data["secrets"]["x"] = new_entry("generic", {"value": "v" * 20})
    assert not os.path.exists(store.path)


def test_store_writes_are_audited_per_secret_and_field(tmp_path: Path) -> None:
    vault = [("local", VaultSecret(b"pw-for-this-test"))]
    log = tmp_path / "audit.log"
    store = Store(str(tmp_path / "store"), "local", vault, audit=auditor(log))
    value = secrets.token_urlsafe(20)
    with store.update() as data:
        data["secrets"]["x"] = new_entry("generic", {"value": value})
    with store.update(event="rotate.mark") as data:
        data["secrets"]["x"]["pending"] = {"version": 2, "step": "created", "fields": {"value": value + "2"}}
    with store.update() as data:
        pass  # no change, no write, no record
    records = [json.loads(raw) for raw in log.read_bytes().splitlines()]
    assert [(r["event"], r["secret"], r["field"], r["stage"], r["version"]) for r in records] == [
        ("store", "x", "value", "current", 1),
        ("rotate.mark", "x", "value", "pending", 2),
    ]
    assert records[0]["value_hmac"] == value_hmac(KEY, value)
    assert value not in log.read_text()


# ---- concurrency ------------------------------------------------------------------------------------------------
def _writer(path: str, number: int, count: int) -> None:
    log = Auditor(AuditLog(path, KEY), "local", {"user": f"w{number}"})
    for index in range(count):
        # mixes single appends and batches, as lookups of one and of many terms do
        if index % 5 == 0:
            log.record_many([log.entry("read", secret=f"w{number}", field=str(index + i)) for i in range(3)])
        else:
            log.record("read", secret=f"w{number}", field=str(index))


def test_eight_parallel_writers_keep_one_valid_chain(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(log), n, 40)) for n in range(8)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    count, bad, message = verify(str(log), KEY)
    assert bad is None, message
    assert count == 8 * (40 + 8 * 2)  # 40 appends each, 8 of them batches of 3
    out = verify_cli(log)
    assert out.returncode == 0
