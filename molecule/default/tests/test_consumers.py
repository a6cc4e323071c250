"""The consumers (kw-app, kw-worker): private .env files with exactly the catalog's variables, running units that
received them through systemd's EnvironmentFile=, and a database login with them. kw-db is not a consumer, so these
checks do not run there (they would pass over an empty list)."""

import hashlib

from test_default import ENV_DIR, LOGIN_PROC, consumer_hosts, env_digests, env_names, main_pid, services_of

testinfra_hosts = consumer_hosts()


def test_env_files_are_private_to_the_service_account(host):
    for service in services_of(host):
        env_file = host.file(f"{ENV_DIR}/{service}.env")
        assert env_file.is_file
        assert env_file.mode == 0o600
        assert env_file.user == "kwapp"
        assert env_file.group == "kwapp"


def test_env_files_hold_exactly_the_catalog_variables(host):
    for service, names in services_of(host).items():
        assert sorted(env_names(host, service)) == sorted(names)


def test_consumer_units_run_with_every_variable(host):
    for service, names in services_of(host).items():
        unit = host.service(f"keywarden-{service}.service")
        assert unit.is_enabled
        assert unit.is_running
        assert set(env_digests(host, service)) == names


def test_consumers_log_in_to_the_database(host):
    for service in services_of(host):
        result = host.run("runuser -u kwapp -- python3 -c %s %s", LOGIN_PROC, main_pid(host, service))
        assert result.rc == 0, result.stderr
        # DB_USER is no secret, but digests keep the rule free of exceptions
        current_user = hashlib.sha256(result.stdout.strip().encode()).hexdigest()
        assert current_user == env_digests(host, service)["DB_USER"]
