"""The audit trail's durable sink: lines sent over TCP as they are written (fail closed, a backlog resent), and the
combined trail of many logs checked by check_trail. A real TCP listener on loopback receives the bytes (the
integration tests use a real rsyslog: tests/integration/test_awx_jobs.py)."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from pathlib import Path

import pytest

from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import AuditError, AuditLog, Auditor, actor, check_trail, load_key

# secret names (the records name secrets; no value is involved)
APP, FIRST, SECOND, OTHER = "app_db", "a", "b", "x"


class Listener:
    """Accepts connections on a loopback port and keeps every byte received."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.data = b""
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                while chunk := conn.recv(65536):
                    with self.lock:
                        self.data += chunk

    def lines(self, count: int) -> list[bytes]:
        for _ in range(200):
            with self.lock:
                lines = self.data.splitlines()
            if len(lines) >= count:
                return lines
            threading.Event().wait(0.02)
        return lines

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Listener:
    server = Listener()
    yield server
    server.close()


def _auditor(tmp_path: Path, server: str, name: str = "audit.log") -> Auditor:
    key = load_key(str(tmp_path / "keys" / "audit.key"))
    return Auditor(AuditLog(str(tmp_path / name), key, syslog_server=server), "production", actor())


def test_each_append_reaches_the_sink_as_newline_framed_rfc5424(tmp_path: Path, listener: Listener) -> None:
    auditor = _auditor(tmp_path, f"127.0.0.1:{listener.port}")
    auditor.record("read", secret=APP, field="password", value="not-a-real-value")
    auditor.record("deploy", secret=APP)
    lines = listener.lines(2)
    assert b"\0" not in listener.data and len(lines) == 2
    file_lines = (tmp_path / "audit.log").read_bytes().splitlines()
    for received, written in zip(lines, file_lines, strict=True):
        assert received.startswith(b"<86>1 ") and b" keywarden-audit " in received
        assert received.endswith(written)
    assert json.loads((tmp_path / "audit.log.sent").read_bytes())["seq"] == 2


def test_a_sink_that_is_down_fails_the_append_and_gets_the_backlog_later(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    auditor = _auditor(tmp_path, f"127.0.0.1:{port}")
    with pytest.raises(AuditError) as caught:
        auditor.record("read", secret=APP, field="password")
    message = str(caught.value)
    assert f"audit sink 127.0.0.1:{port} cannot take lines 1-1" in message and "fail closed" in message and "\n" not in message
    # the line stays in the file, and goes with the next append once the sink is back
    assert len((tmp_path / "audit.log").read_bytes().splitlines()) == 1
    server = socket.socket()
    server.bind(("127.0.0.1", port))
    server.listen()
    received: list[bytes] = []

    def take() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            received.extend(data.splitlines())

    thread = threading.Thread(target=take)
    thread.start()
    auditor.record("deploy", secret=APP)
    thread.join(10)
    server.close()
    assert [json.loads(line[line.index(b"{") :])["seq"] for line in received] == [1, 2]


def test_a_bad_sink_address_is_refused_naming_the_setting(tmp_path: Path) -> None:
    auditor = _auditor(tmp_path, "no-port-here")
    with pytest.raises(AuditError, match="keywarden_audit_syslog_server"):
        auditor.record("read", secret=APP)


def _trail(tmp_path: Path, listener: Listener) -> tuple[Path, list[bytes]]:
    """Two jobs' logs sent to one sink; the second job's store write follows the first's."""
    first = _auditor(tmp_path, f"127.0.0.1:{listener.port}", "job1.log")
    second = _auditor(tmp_path, f"127.0.0.1:{listener.port}", "job2.log")
    first.record("read", secret=FIRST)
    written = first.record("store", secret=FIRST, change="set", revision=2)
    anchor = {"seq": written[-1]["seq"], "hash": hashlib.sha256(json.dumps(written[-1], separators=(",", ":")).encode()).hexdigest()}
    second.record("read", secret=SECOND)
    second.log.append([second.entry("store", secret=SECOND, change="set", revision=3, after=anchor)])
    second.record("deploy", secret=SECOND)
    lines = listener.lines(5)
    sink = tmp_path / "sink.log"
    sink.write_bytes(b"\n".join(lines) + b"\n")
    return sink, lines


def test_the_combined_trail_of_two_jobs_verifies_and_every_gap_is_named(tmp_path: Path, listener: Listener) -> None:
    sink, lines = _trail(tmp_path, listener)
    key = load_key(str(tmp_path / "keys" / "audit.key"))
    verdict = check_trail([str(sink)], key)
    assert verdict.bad is None, verdict.message
    assert "5 lines in 2 job logs" in verdict.message and "1 store writes linked" in verdict.message
    # a line received twice counts once
    doubled = tmp_path / "doubled.log"
    doubled.write_bytes(b"\n".join([*lines, lines[1]]) + b"\n")
    assert check_trail([str(doubled)], key).notes == ["1 lines received twice (a resend): counted once"]
    # the first job's store write gone: the second job's link to it, and nothing else, breaks
    gone = tmp_path / "gone.log"
    gone.write_bytes(b"\n".join(line for line in lines if b'"revision":2' not in line) + b"\n")
    assert "earlier write's log: not in the trail" in check_trail([str(gone)], key).message
    # a line of a job edited
    edited = tmp_path / "edited.log"
    edited.write_bytes(b"\n".join(line.replace(b'"secret":"b"', b'"secret":"c"') for line in lines) + b"\n")
    assert "MAC does not match" in check_trail([str(edited)], key).message
    # a second line 2 of the first job's log (a replaced line): the chain forks
    first = next(line for line in lines if b'"seq":1,' in line and b'"secret":"a"' in line)
    replay = tmp_path / "replay.log"
    replay.write_bytes(first[first.index(b"{") :] + b"\n")
    Auditor(AuditLog(str(replay), key), "production", actor()).record("read", secret=OTHER)
    forked = tmp_path / "forked.log"
    forked.write_bytes(sink.read_bytes() + replay.read_bytes().splitlines()[1] + b"\n")
    assert "forks a chain" in check_trail([str(forked)], key).message
