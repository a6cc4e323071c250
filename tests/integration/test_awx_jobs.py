"""Scheduled rotation under throwaway jobs (issue 11): the store's durable home is the project's git remote.

A bare repository on this machine plays the remote; every job is a fresh clone in a new directory (awx_helpers.Job,
made as AWX makes a job's project), deleted once the job is over. A rotation job is killed at each step boundary
(right after it pushed `created`, after set/test before `distributing` was pushed, right after `distributing`,
after the consumers got the value before `promoted` was pushed, right after `promoted`); the next job, in a new
clone, resumes and finishes. Then the consumers log in with the new value and the remote's history shows each step.
Contention: two jobs at once (one refused by the lock, nothing lost), and a stale clone refused with a message to
pull. The audit lines of every job reach a real rsyslog over TCP, and the combined trail verifies end to end.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from awx_helpers import ENV, REPO, STORE_REL, Rsyslog, Site, git
from rotation_helpers import Creds, catalog, digest, login, pg_secret, read_env

CASES = {
    # case: (fault, where the remote's store stands once the job is dead)
    "created": ("git-after-push:1", "pending created"),
    "set-tested": ("git-before-push:2", "pending created"),
    "distributing": ("git-after-push:2", "pending distributing"),
    "distributed": ("git-before-push:3", "pending distributing"),
    "promoted": ("git-after-push:3", "v2 current"),
}
SECRETS = {case: f"awx_{case.replace('-', '_')}" for case in CASES}
CONTENDED = ("awx_contended_a", "awx_contended_b")


def _secret(name: str) -> dict[str, Any]:
    entry = pg_secret(name, consumers=(("app", name, "DB"),))
    entry["environments"] = [ENV]
    return entry


@pytest.fixture(scope="module")
def sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rsyslog]:
    server = Rsyslog(tmp_path_factory.mktemp("rsyslog"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory, postgres: Any, sink: Rsyslog) -> Site:
    """The project on its remote, its first store made and delivered by a first job (site.yml), that job gone."""
    site = Site(tmp_path_factory.mktemp("awx-site"), catalog({name: _secret(name) for name in [*SECRETS.values(), *CONTENDED]}), postgres, sink)
    job = site.job("provision")
    result = job.run("site.yml", "keywarden site", keywarden_store_create=True)
    assert result.returncode == 0, result.explain()
    job.remove()
    return site


def _creds(entry: dict[str, Any], stage: str = "current") -> Creds | None:
    staged = entry.get(stage)
    return Creds(staged["fields"]["username"], staged["fields"]["password"]) if staged else None


def _consumer(site: Site, name: str) -> Creds:
    values = read_env(site.env_dir / f"{name}.env")
    return Creds(values["DB_USER"], values["DB_PASSWORD"], values["DB_NAME"])


def _settled(site: Site, name: str) -> dict[str, Any]:
    """The end state of one secret: versions, who holds what (fingerprints), what logs in, the lock."""
    data = site.store()
    entry = data["secrets"][name]
    current, previous = _creds(entry), _creds(entry, "previous")
    assert current is not None
    port = site.postgres.port
    return {
        "version": entry["current"]["version"],
        "pending": entry.get("pending"),
        "lock": bool(data.get("rotation_lock")),
        "consumer_holds_current": _consumer(site, name).fingerprint == current.fingerprint,
        "current_logs_in": login(port, current) == current.user,
        "previous_logs_in": previous is not None and login(port, previous) == previous.user,
    }


@pytest.mark.parametrize("case", list(CASES))
def test_a_job_killed_at_a_step_boundary_is_finished_by_the_next_job_in_a_new_clone(provisioned: Site, case: str) -> None:
    fault, left = CASES[case]
    name = SECRETS[case]
    site = provisioned.copy(f"site-{case}")
    start = len(site.history())
    first = site.job(f"{case}-killed")
    killed = first.run("rotate.yml", "keywarden rotate", keywarden_rotate_only=name, crash=fault)
    assert killed.returncode != 0 and "PLAY RECAP" not in killed.output, killed.explain()
    first.remove()
    entry = site.store()["secrets"][name]
    where = f"v{entry['current']['version']} current" if not entry.get("pending") else f"pending {entry['pending']['step']}"
    assert where == left
    second = site.job(f"{case}-resumes")
    resumed = second.run("rotate.yml", "keywarden rotate")
    assert resumed.returncode == 0, resumed.explain()
    second.remove()
    assert _settled(site, name) == {
        "version": 2,
        "pending": None,
        "lock": False,
        "consumer_holds_current": True,
        "current_logs_in": True,
        "previous_logs_in": True,
    }
    steps = [subject.split(": ", 1)[1] for subject in site.history()[start:]]
    marked_by = second.id if case in ("created", "set-tested") else first.id
    assert [step for step in steps if name in step] == [
        f"rotate.create ({name} pending created; rotation_lock set by AWX job {first.id})",
        f"rotate.mark ({name} pending distributing; rotation_lock set by AWX job {marked_by})",
        f"rotate.finish ({name} v2 current; rotation_lock cleared)",
    ]
