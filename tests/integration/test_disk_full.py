"""A full disk in the middle of a rotation (issue 10, item 1 proof): playbooks/rotate.yml against a real PostgreSQL,
with the store directory and the audit log each on a small tmpfs that fills up as soon as the rotation has created
its pending value (its `rotate.create` record appears in the audit log).

The run fails with a one-line error that names the full disk; it leaves no torn store, no torn audit line and no
store write without its audit records (`verify-log` with the key and the store's anchor passes). Once the space is
freed, the next run converges: nothing pending, the consumers hold the new current value, which logs in, and the
audit chain verifies end to end. Written against the playbook interface only (rotate.yml -e keywarden_rotate_only,
exit codes, store and .env contents, verify-log), not the rotation engine's internals.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fullfs import Tmpfs
from rotation_helpers import catalog, observe, pg_secret, provisioned, rotate, setup_workspace

from ansible_collections.keywarden.secrets.plugins.plugin_utils import audit

REPO = Path(__file__).resolve().parents[2]
VERIFY = REPO / "scripts" / "audit" / "verify-log"
# case -> (secret, variable prefix, filesystems that fill, the audit record that fills them: event and step).
# One secret (its own logins and variables) per case, so that the cases never share server state.
CASES = {
    # the pending value's records are in the log; the store write that follows finds the store's disk full
    "store-full-at-create": ("dks_db", "DKS", ("store",), ("rotate.create", None)),
    # the pending value is stored; the reads that set it at the target find the log's disk full (fail closed)
    "audit-full-at-create": ("dka_db", "DKA", ("audit",), ("rotate.create", None)),
    "both-full-at-create": ("dkb_db", "DKB", ("store", "audit"), ("rotate.create", None)),
    # the value is being distributed (past the point of no return): the next run must roll it forward
    "both-full-at-distributing": ("dkd_db", "DKD", ("store", "audit"), ("rotate.mark", "distributing")),
}
CATALOG = catalog({name: pg_secret(name.removesuffix("_db"), consumers=[("app", "app", prefix)]) for name, prefix, _, _ in CASES.values()})


@pytest.fixture(scope="module")
def template(make_workspace: Callable[..., Any], postgres: Any) -> Any:
    return provisioned(make_workspace, "diskfull", CATALOG, postgres)


def _copy_into(source: Path, dest: Path) -> None:
    """Copy a directory's contents into an existing directory (a mount point cannot be replaced), modes kept."""
    shutil.copytree(source, dest, dirs_exist_ok=True)


@contextlib.contextmanager
def _on_small_disks(make_workspace: Callable[..., Any], template: Any, postgres: Any, name: str) -> Iterator[tuple[Any, dict[str, Tmpfs]]]:
    """A copy of the provisioned template (its store, audit log with head and key, delivered files and vault password)
    whose store and audit directories are each a 512-byte tmpfs, by name ("store", "audit"): unmounted on the way out."""
    ws = setup_workspace(make_workspace, name, yaml.safe_load(template.catalog.read_text()), postgres, ("db", "app"))
    with contextlib.ExitStack() as mounts:
        disks = {"store": mounts.enter_context(Tmpfs(ws.store_dir, 512)), "audit": mounts.enter_context(Tmpfs(ws.audit_dir, 512))}
        for source, dest in ((template.store_dir, ws.store_dir), (template.audit_dir, ws.audit_dir), (template.env_dir, ws.env_dir)):
            _copy_into(source, dest)
        for path in template.password_dir.iterdir():
            shutil.copy2(path, ws.password_dir / path.name)
        yield ws, disks


def _fill_on(ws: Any, secret: str, trigger: tuple[str, str | None], filesystems: list[Tmpfs]) -> tuple[threading.Thread, threading.Event]:
    """Fill the filesystems as soon as the audit log holds the trigger record (event, detail.step) of ``secret``."""
    filled, stop = threading.Event(), threading.Event()
    event, step = trigger

    def seen() -> bool:
        with contextlib.suppress(OSError):
            for line in ws.audit_log.read_bytes().splitlines():
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if (record.get("event"), record.get("secret")) == (event, secret) and step in (None, (record.get("detail") or {}).get("step")):
                        return True
        return False

    def watch() -> None:
        while not stop.is_set():
            if seen():
                for fs in filesystems:
                    fs.fill()
                filled.set()
                return
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, filled


def _verify_log(ws: Any) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARDEN_")}
    env.update(KEYWARDEN_VAULT_PASSWORD_DIR=str(ws.password_dir), PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")
    args = ["--key-file", str(ws.audit_key), "--store", str(ws.store_dir), "-e", ws.environment, str(ws.audit_log)]
    return subprocess.run([sys.executable, str(VERIFY), *args], capture_output=True, text=True, check=False, env=env)


def _records(ws: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ws.audit_log.read_bytes().splitlines()]


@pytest.mark.parametrize("case", list(CASES))
def test_a_disk_that_fills_during_a_rotation_breaks_nothing_and_the_next_run_converges(
    make_workspace: Callable[..., Any], template: Any, postgres: Any, case: str
) -> None:
    secret, prefix, fill, trigger = CASES[case]
    consumers = (("app", prefix),)
    with _on_small_disks(make_workspace, template, postgres, f"diskfull-{case}") as (ws, disks):
        before = observe(ws, postgres.port, secret, consumers)
        key = audit.load_key(str(ws.audit_key), create=False)
        start = len(_records(ws))

        full = [disks[name] for name in fill]
        watcher, filled = _fill_on(ws, secret, trigger, full)
        failed = rotate(ws, only=secret)
        watcher.join(5)
        assert filled.is_set(), f"the rotation never recorded {trigger}: " + failed.explain()

        # the run stops, saying why, and leaks nothing
        assert failed.returncode != 0, failed.explain()
        line = failed.error_line("No space left on device")
        assert line is not None and "free disk space" in line, failed.explain()
        assert not ws.leaks(failed.output)
        # nothing torn: the store decrypts, no temp file is left, the audit log verifies with its head and the anchor
        # the store holds (every store write has its records)
        stuck = ws.store().read()
        assert stuck["secrets"][secret]["current"]["version"] == before.version  # not promoted
        assert not [name for name in os.listdir(ws.store_dir) if name.startswith(".secrets.vault.tmp")]
        verdict = audit.check(str(ws.audit_log), key)
        assert verdict.status == audit.STATUS_OK, verdict.message
        checked = _verify_log(ws)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        if fill == ("store",):
            # the log had room: the store write that failed after its records says so
            failures = [r for r in _records(ws)[start:] if r["outcome"] == "error" and (r.get("detail") or {}).get("change") == "not written"]
            assert failures, "no audit record of the failed store write"

        for fs in full:
            fs.free()
        resumed = rotate(ws, only=secret)
        assert resumed.returncode == 0, resumed.explain()
        after = observe(ws, postgres.port, secret, consumers)
        assert after.pending_step is None
        assert after.version == before.version + 1
        assert after.consumers_hold(after.current)
        assert after.current_login == after.current.user
        assert not after.lock, "the run lock was left after the rerun"
        assert not ws.leaks(resumed.output)
        checked = _verify_log(ws)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert f"holds the anchor (line {ws.store().read()['audit_anchor']['seq']} of store" in checked.stdout
        assert ws.store().read()["audit_anchor"]["seq"] > start


@pytest.mark.parametrize("full", ["store", "audit"])
def test_a_full_disk_at_lock_time_leaves_no_lock_and_a_clear_error(make_workspace: Callable[..., Any], template: Any, postgres: Any, full: str) -> None:
    """Issue 10 item 9: the lock is a record taken by the same store write as the pending values (after their audit
    records): a disk full at that moment leaves the store as it was, no lock, and a one-line error saying what to do."""
    with _on_small_disks(make_workspace, template, postgres, f"diskfull-lock-{full}") as (ws, disks):
        name = next(iter(yaml.safe_load(ws.catalog.read_text())["secrets"]))
        store_bytes = (ws.store_dir / "secrets.vault").read_bytes()
        fs = disks[full]
        fs.fill()
        failed = rotate(ws, only=name)
        assert failed.returncode != 0, failed.explain()
        line = failed.error_line("No space left on device")
        assert line is not None and "free disk space" in line, failed.explain()
        same = (ws.store_dir / "secrets.vault").read_bytes() == store_bytes
        assert same, "the store changed although its write failed"
        assert not ws.store().read().get("rotation_lock"), "a failed write at lock time left the rotation lock"
        assert not [p for p in os.listdir(ws.store_dir) if p.startswith(".secrets.vault.tmp") or p == "rotation.lock"]
        fs.free()
        resumed = rotate(ws, only=name)
        assert resumed.returncode == 0, resumed.explain()
        assert _verify_log(ws).returncode == 0
