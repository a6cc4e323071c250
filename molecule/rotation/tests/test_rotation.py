"""After the rotation: both consumers moved to the standby login, their units run and log in to kw-db.

Values never reach this process: the checks run inside the containers and report names, user names
(not secret) and exit codes only.
"""

import os

import testinfra

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


def test_both_consumers_hold_the_same_login(host):
    other = testinfra.get_host("ansible://kw-worker", ansible_inventory=_INVENTORY)
    digest = "import hashlib, sys\nprint(hashlib.sha256(open(sys.argv[1], 'rb').read().split(b'DB_PASSWORD=')[1].split(b'\\n')[0]).hexdigest())\n"
    mine = host.run("python3 -c %s %s", digest, f"/srv/keywarden/{_service(host)}.env")
    theirs = other.run("python3 -c %s %s", digest, "/srv/keywarden/worker.env")
    assert mine.rc == 0 and theirs.rc == 0
    assert mine.stdout == theirs.stdout, "app and worker hold different DB_PASSWORD digests"
