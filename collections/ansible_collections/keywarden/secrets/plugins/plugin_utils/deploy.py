# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A host's .env delivery on the controller: the text of each file and the audit records of what was delivered.

Shared by the env_files action (renders, writes and records in one task) and the audit action (``event: deploy``),
so that both record a delivery the same way. Nothing here returns or raises a value: errors name secrets, fields,
services and variables only.
"""

from __future__ import annotations

import os
from typing import Any

from ansible.plugins.filter.core import comment

from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import Auditor
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import StoreError, get_field, resolve_stage, staged_version

# What `{{ ansible_managed }}` is when nobody sets it (ansible-core's default, without a template file to describe).
DEFAULT_MANAGED = "Ansible managed"
# Characters that would end a NAME=value line early (and smuggle another variable into the file).
_LINE_BREAKS = ("\n", "\r", "\0")


def env_file_name(service: dict[str, Any]) -> str:
    return f"{service['service']}.env"


def secret_fields(services: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The distinct (secret, field) pairs that a host's files hold, sorted."""
    return sorted({(str(var["secret"]), str(var["field"])) for service in services for var in service["vars"] if "secret" in var})


def check_fields(data: dict[str, Any], services: list[dict[str, Any]], stage: str, source: str) -> None:
    """Every secret field the files need exists at the stage: else a StoreError naming the file, variable, secret and field."""
    for service in services:
        for var in service["vars"]:
            if "secret" not in var:
                continue
            try:
                get_field(data, str(var["secret"]), str(var["field"]), stage, source=source)
            except StoreError as exc:
                raise StoreError(f"{env_file_name(service)} {var['name']}: {exc}; no .env file was written") from None


def render_env_file(service: dict[str, Any], values: dict[tuple[str, str], str], environment: str, managed: str = DEFAULT_MANAGED) -> str:
    """The text of ``<service>.env``, as ``templates/service.env.j2`` of role keywarden_env rendered it.

    ``values`` maps (secret, field) to the value; a variable with a ``literal`` (non-secret, from the catalog's target
    block) takes that instead.
    """
    lines = [comment(managed), f"# {service['service']}: rendered by keywarden from the {environment} store. Mode 0600."]
    for var in service["vars"]:
        if "literal" in var:
            value, what = str(var["literal"]), f"the catalog's literal for {var['name']}"
        else:
            value, what = values[(str(var["secret"]), str(var["field"]))], f"secret '{var['secret']}' field '{var['field']}'"
        if any(char in value for char in _LINE_BREAKS):
            raise StoreError(
                f"{env_file_name(service)} {var['name']}: {what} holds a line break or NUL, which a .env line cannot carry; no .env file was written"
            )
        lines.append(f"{var['name']}={value}")
    return "\n".join(lines) + "\n"


def deploy_entries(
    audit: Auditor,
    data: dict[str, Any],
    services: list[dict[str, Any]],
    changed: set[str] | list[str],
    dest_dir: str | None,
    stage: str = "live",
    outcome: str = "ok",
    source: str = "store",
) -> list[dict[str, Any]]:
    """One ``deploy`` audit entry per delivered secret field: secret, field, stage, version, HMAC of the value, and in
    ``detail`` the service, file, variable and whether the service's file changed. Literals are not recorded."""
    changed = set(changed)
    entries = []
    for service in services:
        name = str(service["service"])
        file = os.path.join(dest_dir, env_file_name(service)) if dest_dir else None
        for var in service.get("vars") or []:
            if "secret" not in var:
                continue
            secret, field = str(var["secret"]), str(var["field"])
            value = get_field(data, secret, field, stage, source=source)
            stored_stage = resolve_stage(data["secrets"][secret], stage)
            entries.append(
                audit.entry(
                    "deploy",
                    secret=secret,
                    field=field,
                    stage=stored_stage,
                    version=staged_version(data, secret, stored_stage),
                    value=value,
                    outcome=outcome,
                    service=name,
                    file=file,
                    var=var.get("name"),
                    changed=name in changed,
                )
            )
    return entries
