# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Argument specs of keywarden's controller-side plugins, shared by each action plugin and its documentation stub."""

from __future__ import annotations

from typing import Any

ARGUMENT_SPECS: dict[str, dict[str, dict[str, Any]]] = {
    "catalog_check": {
        "path": {"type": "str"},
        "environment": {"type": "str"},
        "store_dir": {"type": "str"},
        "store_create": {"type": "bool"},
    },
    # passed on to the env_files module, which adds `files` (the rendered contents); `formats` is the action's own
    "env_files": {
        "dir": {"type": "path", "required": True},
        "formats": {"type": "dict", "default": {}},
        "dir_mode": {"type": "raw", "default": "0750"},
        "dir_owner": {"type": "str", "default": "root"},
        "dir_group": {"type": "str"},
        "owner": {"type": "str", "default": "root"},
        "group": {"type": "str", "default": "root"},
    },
    "store": {
        "state": {"type": "str", "default": "generated", "choices": ["generated"]},
        "catalog_path": {"type": "str"},
        "environment": {"type": "str"},
        "store_dir": {"type": "str"},
        "create": {"type": "bool"},
    },
    "rotation": {
        "phase": {"type": "str", "required": True, "choices": ["plan", "decide", "finish"]},
        "only": {"type": "raw", "default": []},
        # seconds; keep in step with plugin_utils/rotation.py DEFAULT_LEASE_SECONDS
        "lease": {"type": "float", "default": 14400},
    },
    "target": {
        "phase": {"type": "str", "required": True, "choices": ["provision", "test", "set_test", "cleanup"]},
    },
    "report": {
        "dest": {"type": "path", "required": True},
        "textfile_dir": {"type": "path"},
        "formats": {"type": "list", "elements": "str", "default": ["table", "json", "prometheus", "html"], "choices": ["table", "json", "prometheus", "html"]},
        "alert_days": {"type": "float", "default": 14},
        "webhook_url": {"type": "str", "no_log": True},
        # the name of a secret (NAME.FIELD), not a value
        "webhook_token_secret": {"type": "str", "no_log": False},
        "webhook_on": {"type": "str", "default": "alert", "choices": ["alert", "always", "never"]},
        "catalog_path": {"type": "str"},
        "environment": {"type": "str"},
        "store_dir": {"type": "str"},
    },
    "audit": {
        "event": {"type": "str", "required": True, "choices": ["deploy", "backup", "restore"]},
        "services": {"type": "list", "elements": "dict", "default": []},
        "changed": {"type": "list", "elements": "str", "default": []},
        "dest_dir": {"type": "str"},
        "stage": {"type": "str", "default": "live"},
        # secret names, not values
        "secrets": {"type": "list", "elements": "str", "default": [], "no_log": False},
        "outcome": {"type": "str", "default": "ok"},
        "detail": {"type": "dict", "default": {}},
    },
}


# no_log on the password only: Ansible masks every string of a no_log value in the output, and the names,
# users and databases must stay readable in messages.
LOGIN_CORE: dict[str, dict[str, Any]] = {
    "name": {"type": "str", "required": True},
    "user": {"type": "str", "required": True},
    "password": {"type": "str", "required": True, "no_log": True},
}


def logins_option(**extra: dict[str, Any]) -> dict[str, Any]:
    """The `logins` option of a <kind>_logins module: a list of a secret's name, a user and its password, plus the
    kind's own fields."""
    return {"type": "list", "elements": "dict", "required": True, "options": {**LOGIN_CORE, **extra}}


# Options of the <engine>_logins modules besides `logins` (module_utils/logins.py); the rotation drivers
# (plugin_utils/drivers) fill them from the target host's keywarden_target_<kind>_* variables.
_LOGINS_COMMON: dict[str, dict[str, Any]] = {
    "state": {"type": "str", "default": "present", "choices": ["present", "tested"]},
    "login_unix_socket": {"type": "str"},
    "test_host": {"type": "str", "default": "127.0.0.1"},
    "connect_timeout": {"type": "int", "default": 10},
}
POSTGRESQL_LOGINS_OPTIONS: dict[str, dict[str, Any]] = {
    **_LOGINS_COMMON,
    "login_host": {"type": "str"},
    "login_port": {"type": "int", "default": 5432},
    "login_user": {"type": "str", "default": "postgres"},
    "login_db": {"type": "str", "default": "postgres"},
    "ssl_mode": {"type": "str", "default": "prefer", "choices": ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]},
}
MARIADB_LOGINS_OPTIONS: dict[str, dict[str, Any]] = {
    **_LOGINS_COMMON,
    "login_host": {"type": "str", "default": "localhost"},
    "login_port": {"type": "int", "default": 3306},
    "login_user": {"type": "str", "default": "root"},
    "config_file": {"type": "path", "default": "~/.my.cnf"},
    "host_pattern": {"type": "str", "default": "%"},
}

# The redis_logins and rabbitmq_logins modules: the admin login comes from the store (the catalog entry named by
# target.admin, or the entry itself), read by the driver and passed here; their `logins` differ from the databases'.
REDIS_LOGINS_OPTIONS: dict[str, dict[str, Any]] = {
    **_LOGINS_COMMON,
    "logins": logins_option(acl={"type": "str"}, exclusive={"type": "bool", "default": False}),
    "state": {"type": "str", "default": "present", "choices": ["present", "tested", "revoked"]},
    "login_user": {"type": "str", "default": "default"},
    "login_password": {"type": "str", "no_log": True},
    "login_host": {"type": "str", "default": "127.0.0.1"},
    "login_port": {"type": "int", "default": 6379},
    "tls": {"type": "str", "default": "prefer", "choices": ["disable", "prefer", "require"]},
    "tls_port": {"type": "int", "default": 0},
    "tls_ca_file": {"type": "path"},
    "tls_cert_file": {"type": "path"},
    "tls_key_file": {"type": "path"},
}
RABBITMQ_LOGINS_OPTIONS: dict[str, dict[str, Any]] = {
    "logins": logins_option(
        vhost={"type": "str", "default": "/"},
        tags={"type": "list", "elements": "str", "default": []},
        configure={"type": "str", "default": ".*"},
        write={"type": "str", "default": ".*"},
        read={"type": "str", "default": ".*"},
        sibling={"type": "str"},
    ),
    "state": {"type": "str", "default": "present", "choices": ["present", "tested"]},
    "login_user": {"type": "str", "required": True},
    "login_password": {"type": "str", "required": True, "no_log": True},
    "api_url": {"type": "str", "default": "http://127.0.0.1:15672"},
    "api_ca_file": {"type": "path"},
    "bootstrap_guest": {"type": "bool", "default": True},
    "test_host": {"type": "str", "default": "127.0.0.1"},
    "amqp_port": {"type": "int", "default": 5672},
    "tls": {"type": "str", "default": "prefer", "choices": ["disable", "prefer", "require"]},
    "tls_ca_file": {"type": "path"},
    "connect_timeout": {"type": "int", "default": 10},
}

# Encrypted backups and their restore (plugin_utils/backup.py does the work on the controller).
_BACKUP_COMMON: dict[str, dict[str, Any]] = {
    "environment": {"type": "str"},
    "store_dir": {"type": "str"},
    "catalog_path": {"type": "str"},
    "ca_dir": {"type": "str"},
    "backup_dir": {"type": "str", "default": ""},
    "remote": {"type": "str", "default": ""},
    "ssh_args": {"type": "list", "elements": "str", "default": []},
}
ARGUMENT_SPECS["backup"] = {
    **_BACKUP_COMMON,
    "recipients_file": {"type": "str", "required": True},
    "keep_count": {"type": "int", "default": 14},
    "keep_days": {"type": "int", "default": 35},
    "lock_timeout": {"type": "int", "default": 600},
}
ARGUMENT_SPECS["restore"] = {
    **_BACKUP_COMMON,
    "archive": {"type": "str", "required": True},
    "identity_file": {"type": "str", "required": True},
    "force": {"type": "bool", "default": False},
    "lock_timeout": {"type": "int", "default": 30},
}


def controller_only(name: str) -> None:
    """Body of a documentation stub: validate the arguments, then say the work happens on the controller."""
    from ansible.module_utils.basic import AnsibleModule  # noqa: PLC0415 - only when run as a module

    module = AnsibleModule(argument_spec=ARGUMENT_SPECS[name], supports_check_mode=True)
    module.fail_json(msg=f"keywarden.secrets.{name} runs on the controller as an action plugin; it cannot run as a module")


# A value a person got by hand (plugin_utils action record): the value is an argument of the task (no_log), never a
# command-line word (playbooks/record.yml prompts for it, or reads it from a vars file).
ARGUMENT_SPECS["record"] = {
    # the name of the secret to record (not its value)
    "secret": {"type": "str", "required": True, "no_log": False},
    "value": {"type": "str", "required": True, "no_log": True},
    "key_id": {"type": "str", "no_log": False},
}
