"""Every AWX job template, run the way AWX runs it: ansible-runner with process isolation in keywarden's execution
environment (execution-environment.yml, built by scripts/ci/build-ee), a private data directory holding the job's
clone of the project, AWX's env (JOB_ID, ...) and extra vars (awx_*), the template's extra vars from
awx/keywarden.yml, its credentials' injectors, and the vault password answered at the --vault-id ENV@prompt prompt
from env/passwords (AWX's vault credential). No value may reach the runner's artifacts or the EE's output.

Then a rotation job killed in its container, its lock held by a container that no longer exists: a second job is
refused by the lock (the holder's lease runs), a third, once the lease ran out, takes it over and finishes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from awx_helpers import ENV, Rsyslog, Site, build_ee, definitions, pg_entry, rsyslog_sink
from rotation_helpers import Creds, catalog, login, read_env

SECRETS = ("ee_app_db", "ee_rotated_db")


@pytest.fixture(scope="module")
def ee_image() -> str:
    return build_ee()


sink = pytest.fixture(scope="module")(rsyslog_sink)


class EESite:
    def __init__(self, site: Site, image: str, identity: Path, backups: Path) -> None:
        self.site, self.image, self.backups = site, image, backups
        pg_socket = Path(site.postgres.socket_dir)
        self.mounts = [site.env_dir, site.bare, pg_socket, backups]
        self.site_values = {
            "keywarden_awx_scm_url": site.remote_url,
            "keywarden_awx_scm_branch": "main",
            "keywarden_awx_audit_sink": site.sink.address if site.sink else "",
            "keywarden_awx_backup_remote": "",
        }
        self.credentials = {
            "audit key": {"audit_key": site.audit_key.read_text().strip()},
            "push": {"ssh_key": "(unused: the remote is a file:// URL)", "known_hosts": ""},
            "backup host": {"ssh_key": "(unused: no backup host)", "known_hosts": ""},
            "backup identity": {"identity": identity.read_text()},
        }
        # this site's own values, as an operator's inventory would give them
        self.overrides = {"keywarden_backup_dir": str(backups), "keywarden_restore_backup_dir": str(backups)}

    def run(self, template_name: str, crash: str | None = None, **extra: Any) -> Any:
        template = next(t for t in definitions()["keywarden_awx_job_templates"] if t["name"] == template_name)
        job = self.site.ee_job(self.image, self.mounts, name=f"{template_name.replace(' ', '-')}-{self.site.next_job}")
        return job.run_template(template, self.site_values, self.credentials, {**self.overrides, **extra}, crash=crash)


@pytest.fixture(scope="module")
def ee_site(tmp_path_factory: pytest.TempPathFactory, postgres: Any, sink: Rsyslog, ee_image: str) -> EESite:
    root = tmp_path_factory.mktemp("ee-site")
    offline = root / "offline"
    offline.mkdir(mode=0o700)
    identity = offline / "backup.key"
    keygen = subprocess.run(["age-keygen", "-o", str(identity)], capture_output=True, text=True, check=True)
    recipient = re.search(r"age1[0-9a-z]+", keygen.stderr + keygen.stdout).group(0)  # type: ignore[union-attr]
    site = Site(
        root / "site", catalog({name: pg_entry(name) for name in SECRETS}), postgres, sink, {f"inventories/{ENV}/backup/recipients.txt": recipient + "\n"}
    )
    first = site.job("provision")
    made = first.run("site.yml", "keywarden site", keywarden_store_create=True)
    assert made.returncode == 0, made.explain()
    first.remove()
    # item 4 of issue 11: AWX's generated inventory names the environment, never a path; the project's layout does
    inventory_vars = yaml.safe_load(site.inventory.read_text())["all"]["vars"]
    assert "keywarden_environment" in inventory_vars and not {"keywarden_store_dir", "keywarden_catalog_path", "keywarden_audit_log"} & set(inventory_vars)
    backups = root / "backups"
    backups.mkdir(mode=0o700)
    return EESite(site, ee_image, identity, backups)


def _consumer(site: Site, name: str) -> Creds:
    values = read_env(site.env_dir / f"{name}.env")
    return Creds(values["DB_USER"], values["DB_PASSWORD"], values["DB_NAME"])


def _current(site: Site, name: str) -> Creds:
    fields = site.store()["secrets"][name]["current"]["fields"]
    return Creds(fields["username"], fields["password"])


@pytest.mark.parametrize("template", ["report", "deploy", "backup", "restore drill", "rotate"])
def test_each_job_template_runs_in_the_ee_as_awx_runs_it(ee_site: EESite, template: str) -> None:
    extra = {"keywarden_rotate_only": SECRETS[0]} if template == "rotate" else {}
    run = ee_site.run(template, **extra)
    assert (run.returncode, run.status) == (0, "successful"), run.explain()
    site = ee_site.site
    values = site.seen_values()
    assert not any(value.encode() in run.artifacts() for value in values), "a value is in the runner's artifacts"
    assert not any(value in run.output for value in values), "a value is in the EE's output"
    if template == "backup":
        assert any(path.name.endswith(".age") for path in ee_site.backups.rglob("*"))
    if template == "restore drill":
        # into the job's scratch store (the live store, in git, is not touched), the archived audit chain intact
        assert run.says("restored /tmp/keywarden-restore-drill/store/secrets.vault") and run.says("chain intact, MACs valid"), run.explain()
    if template == "rotate":
        assert site.store()["secrets"][SECRETS[0]]["current"]["version"] == 2
        assert _consumer(site, SECRETS[0]).fingerprint == _current(site, SECRETS[0]).fingerprint
        assert login(site.postgres.port, _current(site, SECRETS[0])) == _current(site, SECRETS[0]).user
    shutil.rmtree(run.job.pdd)


def test_a_lock_left_by_a_killed_container_is_taken_over_once_its_lease_ran_out(ee_site: EESite) -> None:
    site, name, lease = ee_site.site, SECRETS[1], 20
    killed = ee_site.run("rotate", crash="git-after-push:1", keywarden_rotate_only=name, keywarden_rotate_lease=lease)
    assert killed.status != "successful", killed.explain()
    lock = site.store()["rotation_lock"]
    assert lock["awx_job_id"] == str(killed.job.id)
    # the holder was a container that is gone: its host is no host of ours, its process cannot be checked
    assert lock["host"] == f"kwawx-job-{killed.job.id}"
    refused = ee_site.run("rotate")
    assert refused.status == "failed" and refused.says(f"AWX job {killed.job.id}") and refused.says("already running"), refused.explain()
    time.sleep(max(0.0, lease + 1 - (time.time() - killed.job.dir.stat().st_mtime)))
    resumed = ee_site.run("rotate")
    assert (resumed.returncode, resumed.status) == (0, "successful"), resumed.explain()
    assert resumed.says("took over the rotation lock of a run that is gone (its lease ran out"), resumed.explain()
    assert site.store()["secrets"][name]["current"]["version"] == 2
    assert site.store().get("rotation_lock") is None
    assert _consumer(site, name).fingerprint == _current(site, name).fingerprint
    assert login(site.postgres.port, _current(site, name)) == _current(site, name).user
