"""Each host holds exactly the .env files its services consume, and the app and worker can log in.

Secret values never reach this process: the helpers below run inside the containers and send
back variable names and SHA-256 digests only, and no secret is ever put on a command line.
"""

import hashlib
import json

ENV_DIR = "/srv/keywarden"
DB_VARS = {"DB_USER", "DB_PASSWORD", "DB_NAME"}

# inventory host -> {service: variable names of <service>.env}; every other .env must be absent
EXPECTED = {
    "kw-db": {},
    "kw-app": {"app": DB_VARS | {"REDIS_PASSWORD", "PAYMENTS_API_KEY"}},
    "kw-worker": {"worker": DB_VARS},
}

# Parses a systemd EnvironmentFile (KEY=value, optionally quoted) inside the container.
READ_ENV = r"""
import re, sys
def read_env(path):
    env = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            match = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*?)\s*$", line)
            if match:
                value = match.group(2)
                if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                    value = value[1:-1]
                env[match.group(1)] = value
    return env
"""

# Prints {name: sha256(value)} of an .env file as JSON.
DIGEST_ENV = (
    READ_ENV
    + r"""
import hashlib, json
print(json.dumps({name: hashlib.sha256(value.encode()).hexdigest() for name, value in read_env(sys.argv[1]).items()}))
"""
)

# Logs in to kw-db with the credentials of an .env file, prints the session's current_user.
LOGIN = (
    READ_ENV
    + r"""
import psycopg2
env = read_env(sys.argv[1])
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
)


def _expected(host):
    return EXPECTED[host.backend.get_hostname()]


def _run_python(host, script, path):
    # the script holds no value; it reads the file itself, so no secret shows up in `ps`
    return host.run("python3 -c %s %s", script, path)


def _env_digests(host, service):
    result = _run_python(host, DIGEST_ENV, f"{ENV_DIR}/{service}.env")
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def test_only_the_consumed_env_files_exist(host):
    present = host.run("find %s -maxdepth 1 -name '*.env' -printf '%%f\\n'", ENV_DIR).stdout.split()
    assert sorted(present) == sorted(f"{service}.env" for service in _expected(host))


def test_env_files_are_private_to_the_service_account(host):
    for service in _expected(host):
        env_file = host.file(f"{ENV_DIR}/{service}.env")
        assert env_file.is_file
        assert env_file.mode == 0o600
        assert env_file.user == "kwapp"
        assert env_file.group == "kwapp"


def test_env_files_hold_exactly_the_catalog_variables(host):
    for service, names in _expected(host).items():
        assert set(_env_digests(host, service)) == names


def test_consumer_units_run(host):
    for service in _expected(host):
        unit = host.service(f"keywarden-{service}.service")
        assert unit.is_enabled
        assert unit.is_running


def test_consumers_log_in_to_the_database(host):
    for service in _expected(host):
        result = _run_python(host, LOGIN, f"{ENV_DIR}/{service}.env")
        assert result.rc == 0, result.stderr
        # DB_USER is no secret, but digests keep the rule free of exceptions
        current_user = hashlib.sha256(result.stdout.strip().encode()).hexdigest()
        assert current_user == _env_digests(host, service)["DB_USER"]
