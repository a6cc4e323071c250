"""Each host holds exactly the .env files its services consume (kw-db none), and each consumer's service runs with
the catalog's variables and logs in with them.

Secret values never reach this process: the helpers below run inside the containers and send back variable names
and SHA-256 digests only, and no secret is ever put on a command line. Values are read from the running unit's
environment (/proc/<MainPID>/environ, read as the service's own account kwapp: root in a container without
CAP_SYS_PTRACE may not read another account's environment): what systemd's EnvironmentFile= parser gave it.
"""

import json
import os

ENV_DIR = "/srv/keywarden"
DB_VARS = {"DB_USER", "DB_PASSWORD", "DB_NAME"}
_INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE", "")

# inventory host -> {service: variable names of <service>.env}; every other .env must be absent
EXPECTED = {
    "kw-db": {},
    "kw-app": {"app": DB_VARS | {"REDIS_PASSWORD", "PAYMENTS_API_KEY"}},
    "kw-worker": {"worker": DB_VARS},
}
CONSUMER_HOSTS = [host for host, services in EXPECTED.items() if services]

# Prints the names of the NAME=... lines of an .env file (names only: the part before the first '=').
NAMES = r"""
import json, re, sys
names = [m.group(1) for m in (re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=", line) for line in open(sys.argv[1], encoding="utf-8")) if m]
print(json.dumps(names))
"""

# Prints {name: sha256(value)} of a process's environment (argv[1] its pid), for the names given (argv[2], space-separated).
DIGEST_PROC = r"""
import hashlib, json, sys
env = dict(item.split(b"=", 1) for item in open("/proc/%s/environ" % sys.argv[1], "rb").read().split(b"\0") if b"=" in item)
names = sys.argv[2].split()
print(json.dumps({name: hashlib.sha256(env[name.encode()]).hexdigest() for name in names if name.encode() in env}))
"""

# Logs in to kw-db with the DB_* variables of a process's environment, prints the session's current_user.
LOGIN_PROC = r"""
import sys
import psycopg2
env = dict(item.split(b"=", 1) for item in open("/proc/%s/environ" % sys.argv[1], "rb").read().split(b"\0") if b"=" in item)
env = {key.decode(): value.decode() for key, value in env.items()}
try:
    conn = psycopg2.connect(host="kw-db", dbname=env["DB_NAME"], user=env["DB_USER"],
                            password=env["DB_PASSWORD"], sslmode="prefer", connect_timeout=10)
except psycopg2.Error as exc:
    # the server's message names the user, never the password; keep it for the failure report
    sys.exit("login failed: " + str(exc).strip())
with conn, conn.cursor() as cur:
    cur.execute("SELECT current_user")
    print(cur.fetchone()[0])
"""


def consumer_hosts():
    """testinfra_hosts of the modules that check consumers: kw-app and kw-worker, never kw-db."""
    return [f"ansible://{name}?ansible_inventory={_INVENTORY}" for name in CONSUMER_HOSTS]


def services_of(host):
    services = EXPECTED[host.backend.get_hostname()]
    assert services, f"{host.backend.get_hostname()} runs no consumer: this check belongs to kw-app and kw-worker"
    return services


def main_pid(host, service):
    pid = host.check_output("systemctl show --property MainPID --value keywarden-%s.service", service).strip()
    assert pid.isdigit() and pid != "0", f"keywarden-{service}.service has no main process"
    return pid


def env_names(host, service):
    result = host.run("python3 -c %s %s", NAMES, f"{ENV_DIR}/{service}.env")
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def env_digests(host, service):
    """{name: sha256(value)} of the service's variables as its running unit received them."""
    names = env_names(host, service)
    result = host.run("runuser -u kwapp -- python3 -c %s %s %s", DIGEST_PROC, main_pid(host, service), " ".join(names))
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def test_only_the_consumed_env_files_exist(host):
    present = host.run("find %s -maxdepth 1 -name '*.env' -printf '%%f\\n'", ENV_DIR).stdout.split()
    assert sorted(present) == sorted(f"{service}.env" for service in EXPECTED[host.backend.get_hostname()])
