"""After the rotation: both consumers moved to the standby login, their units run and log in to kw-db, and each
runs with the store's new current password (not the previous one). The app logs in to Redis and publishes to
RabbitMQ with the rotated logins; the outgoing RabbitMQ user still publishes; the RabbitMQ admin rotated itself.

Values never reach an assertion: the checks run inside the containers and report names, user names (not secret),
digests and exit codes only; the store's values are digested here as soon as they are read.
"""

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
import testinfra
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


def _store_entry(name):
    """The scenario store's (development) entry of one secret; the caller digests its values at once."""
    ephemeral = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
    password = (ephemeral / "vault-pass" / "development").read_text().strip().encode()
    return Store(str(ephemeral / "store"), "development", [("development", VaultSecret(password))]).read()["secrets"][name]


def _store_digests(name="app_db"):
    """sha256 of a secret's current and previous password in the scenario's store."""
    entry = _store_entry(name)
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


# sha256 of one variable of an .env file (argv: file, variable), and the plain value of a non-secret one
DIGEST_ENV = (
    "import hashlib, sys\n"
    "env = dict(l.strip().split('=', 1) for l in open(sys.argv[1]) if '=' in l and not l.startswith('#'))\n"
    "print(hashlib.sha256(env[sys.argv[2]].encode()).hexdigest())\n"
)
READ_ENV = "import sys\nenv = dict(l.strip().split('=', 1) for l in open(sys.argv[1]) if '=' in l and not l.startswith('#'))\nprint(env[sys.argv[2]])\n"


# Tests of one host take it from these fixtures (testinfra_hosts above parametrizes `host` over both consumers)
@pytest.fixture(scope="module")
def app():
    return testinfra.get_host(f"ansible://kw-app?ansible_inventory={_INVENTORY}")


@pytest.fixture(scope="module")
def db():
    return testinfra.get_host(f"ansible://kw-db?ansible_inventory={_INVENTORY}")


def _holds_the_new_current(host, env_file, user_variable, password_variable, name):
    """The .env file names this login and holds the store's current password of ``name``, which the rotation changed;
    returns the login name (not secret)."""
    user = host.run("python3 -c %s %s %s", READ_ENV, env_file, user_variable)
    held = host.run("python3 -c %s %s %s", DIGEST_ENV, env_file, password_variable)
    assert (user.rc, held.rc) == (0, 0), user.stderr + held.stderr
    stored = _store_digests(name)
    assert stored["current"] != stored["previous"], f"the rotation left {name}'s password unchanged"
    assert held.stdout.strip() == stored["current"], f"{env_file} does not hold the store's current {name} password"
    return user.stdout.strip()


def test_redis_consumer_logs_in_with_the_rotated_password(app):
    # only the app consumes Redis; dual passwords on the one user `default`
    login = app.run("/usr/local/bin/keywarden-redis-login /srv/keywarden/redis.env")
    assert login.rc == 0, login.stderr
    assert _holds_the_new_current(app, "/srv/keywarden/redis.env", "REDIS_USER", "REDIS_PASSWORD", "app_redis") == "default"


def test_amqp_consumer_publishes_with_the_rotated_login(app):
    # the first rotation of alternating_users gives the new password to orders_b; the app publishes with it
    assert _holds_the_new_current(app, "/srv/keywarden/amqp.env", "AMQP_USER", "AMQP_PASSWORD", "orders_broker") == "orders_b"
    publish = app.run("/usr/local/bin/keywarden-amqp-publish /srv/keywarden/amqp.env")
    assert publish.rc == 0, publish.stderr


def test_outgoing_amqp_user_still_publishes():
    # alternating users: the outgoing orders_a keeps its password until the next rotation, so a consumer that
    # missed the distribution still works. Its login reaches the check on standard input, never on a command line.
    previous = _store_entry("orders_broker")["previous"]["fields"]
    assert previous["username"] == "orders_a"
    fields = {"AMQP_USER": "orders_a", "AMQP_PASSWORD": previous["password"], "AMQP_VHOST": "orders"}
    login = "".join(f"{key}={value}\n" for key, value in fields.items())
    publish = subprocess.run(
        ["docker", "exec", "-i", "kw-app", "/usr/local/bin/keywarden-amqp-publish", "-"],
        input=login,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert publish.returncode == 0, publish.stderr


def test_broker_admin_rotated_itself_and_guest_is_gone(db):
    # broker_admin administers itself: its standby user got the new password, the node's default guest was removed
    env_file = "/srv/keywarden/rabbitmq-admin.env"
    assert _holds_the_new_current(db, env_file, "RABBITMQ_ADMIN_USER", "RABBITMQ_ADMIN_PASSWORD", "broker_admin") == "keywarden_b"
    users = db.check_output("rabbitmqctl list_users --quiet --no-table-headers").split("\n")
    names = sorted(line.split("\t")[0] for line in users if line.strip())
    assert names == ["keywarden_a", "keywarden_b", "orders_a", "orders_b"]
