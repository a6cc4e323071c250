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
    "env_plan": {
        "catalog_path": {"type": "str"},
        "environment": {"type": "str"},
        "groups": {"type": "list", "elements": "str"},
    },
    # passed on to the env_files module, which adds `files` (the rendered contents)
    "env_files": {
        "dir": {"type": "path", "required": True},
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
        "op": {"type": "str", "required": True, "choices": ["plan", "lock", "unlock", "begin", "mark", "promote", "abandon"]},
        "names": {"type": "list", "elements": "str", "default": []},
        "only": {"type": "list", "elements": "str", "default": []},
        "step": {"type": "str", "choices": ["created", "tested", "distributing"]},
    },
    "audit": {
        "event": {"type": "str", "required": True, "choices": ["deploy", "backup", "restore"]},
        "services": {"type": "list", "elements": "dict", "default": []},
        "changed": {"type": "list", "elements": "str", "default": []},
        "dest_dir": {"type": "str"},
        "stage": {"type": "str", "default": "live"},
        "secrets": {"type": "list", "elements": "str", "default": []},
        "outcome": {"type": "str", "default": "ok"},
        "detail": {"type": "dict", "default": {}},
    },
}


# Options of the <engine>_logins modules, which their actions pass through unchanged: the module adds `logins`
# (the resolved values), the action `names` and `stage` (what it resolves them from).
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
# what the actions resolve the `logins` from
LOGINS_ACTION_OPTIONS: dict[str, dict[str, Any]] = {
    "names": {"type": "list", "elements": "str", "required": True},
    "stage": {"type": "str", "default": "live", "choices": ["current", "pending", "previous", "live"]},
}
ARGUMENT_SPECS["postgresql_logins"] = {**LOGINS_ACTION_OPTIONS, **POSTGRESQL_LOGINS_OPTIONS}
ARGUMENT_SPECS["mariadb_logins"] = {**LOGINS_ACTION_OPTIONS, **MARIADB_LOGINS_OPTIONS}


def controller_only(name: str) -> None:
    """Body of a documentation stub: validate the arguments, then say the work happens on the controller."""
    from ansible.module_utils.basic import AnsibleModule  # noqa: PLC0415 - only when run as a module

    module = AnsibleModule(argument_spec=ARGUMENT_SPECS[name], supports_check_mode=True)
    module.fail_json(msg=f"keywarden.secrets.{name} runs on the controller as an action plugin; it cannot run as a module")
