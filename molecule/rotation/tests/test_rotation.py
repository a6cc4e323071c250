"""After the rotation: both consumers moved to the standby login, their units run and log in to kw-db, and each
runs with the store's new current password (not the previous one).

Values never reach an assertion: the checks run inside the containers and report names, user names (not secret),
digests and exit codes only; the store's values are digested here as soon as they are read.
"""

import hashlib
import os
from pathlib import Path

from ansible.parsing.vault import VaultSecret

from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import Store

_INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE", "")
CONSUMERS = {"kw-app": "app", "kw-worker": "worker"}
testinfra_hosts = [f"ansible://{name}?ansible_inventory={_INVENTORY}" for name in CONSUMERS]

READ_USER = "import sys\nfor line in open(sys.argv[1]):\n    if line.startswith('DB_USER='):\n        print(line.strip().split('=', 1)[1])\n"


def _service(host):
    return CONSUMERS[host.backend.get_hostname()]


def test_consumers_moved_to_the_standby_login(host):
    # init created app_a; the first rotation of alternating_users gives the new password to app_b
    result = host.run("python3 -c %s %s", READ_USER, f"/srv/keywarden/{_service(host)}.env")
    assert result.rc == 0
    assert result.stdout.strip() == "app_b"


def test_rotated_env_file_stays_private(host):
    env_file = host.file(f"/srv/keywarden/{_service(host)}.env")
    assert env_file.mode == 0o600
    assert (env_file.user, env_file.group) == ("kwapp", "kwapp")


def test_consumer_runs_and_logs_in_with_its_rotated_env(host):
    assert host.service(f"keywarden-{_service(host)}.service").is_running
    login = host.run("/usr/local/bin/keywarden-db-login %s", f"/srv/keywarden/{_service(host)}.env")
    assert login.rc == 0, login.stderr


# sha256 of DB_PASSWORD in a process's environment: what systemd's EnvironmentFile= gave the running unit
DIGEST_PROC = (
    "import hashlib, sys\n"
    "env = dict(i.split(b'=', 1) for i in open('/proc/%s/environ' % sys.argv[1], 'rb').read().split(b'\\0') if b'=' in i)\n"
    "print(hashlib.sha256(env[b'DB_PASSWORD']).hexdigest())\n"
)


def _store_digests():
    """sha256 of app_db's current and previous password in the scenario's store (development)."""
    ephemeral = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
    password = (ephemeral / "vault-pass" / "development").read_text().strip().encode()
    entry = Store(str(ephemeral / "store"), "development", [("development", VaultSecret(password))]).read()["secrets"]["app_db"]
    return {stage: hashlib.sha256(entry[stage]["fields"]["password"].encode()).hexdigest() for stage in ("current", "previous")}


def test_consumer_runs_with_the_new_current_password(host):
    unit = f"keywarden-{_service(host)}.service"
    pid = host.check_output("systemctl show --property MainPID --value %s", unit).strip()
    assert pid.isdigit() and pid != "0", f"{unit} has no main process"
    # as the unit's own account: root without CAP_SYS_PTRACE may not read another account's environment
    held = host.run("runuser -u kwapp -- python3 -c %s %s", DIGEST_PROC, pid)
    assert held.rc == 0, held.stderr
    stored = _store_digests()
    assert stored["current"] != stored["previous"], "the rotation left the password unchanged"
    assert held.stdout.strip() == stored["current"], f"{unit} does not run with the store's current app_db password"


def _store_redis_digests():
    ephemeral = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
    password = (ephemeral / "vault-pass" / "development").read_text().strip().encode()
    entry = Store(str(ephemeral / "store"), "development", [("development", VaultSecret(password))]).read()["secrets"]["app_redis"]
    return {stage: hashlib.sha256(entry[stage]["fields"]["password"].encode()).hexdigest() for stage in ("current", "previous")}


DIGEST_ENV = (
    "import hashlib, sys\n"
    "env = dict(l.strip().split('=', 1) for l in open(sys.argv[1]) if '=' in l and not l.startswith('#'))\n"
    "print(hashlib.sha256(env['REDIS_PASSWORD'].encode()).hexdigest())\n"
)


def test_redis_consumer_logs_in_with_the_rotated_password(host):
    if _service(host) != "app":
        return  # only the app consumes Redis
    login = host.run("/usr/local/bin/keywarden-redis-login /srv/keywarden/redis.env")
    assert login.rc == 0, login.stderr
    held = host.run("python3 -c %s %s", DIGEST_ENV, "/srv/keywarden/redis.env")
    assert held.rc == 0, held.stderr
    stored = _store_redis_digests()
    assert stored["current"] != stored["previous"], "the rotation left the Redis password unchanged"
    assert held.stdout.strip() == stored["current"], "the app's redis.env does not hold the store's current app_redis password"
