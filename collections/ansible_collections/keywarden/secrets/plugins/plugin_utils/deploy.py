# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A host's .env delivery on the controller: the text of each file and the audit records of what was delivered.

Shared by the env_files action (renders, writes and records in one task) and the audit action (``event: deploy``),
so that both record a delivery the same way. Nothing here returns or raises a value: errors name secrets, fields,
services and variables only.
"""

from __future__ import annotations

import os
import re
import unicodedata
from typing import Any

from ansible.plugins.filter.core import comment

from ansible_collections.keywarden.secrets.plugins.plugin_utils.audit import Auditor
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import bundle_file
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import StoreError, get_field, resolve_stage, staged_version

# What `{{ ansible_managed }}` is when nobody sets it (ansible-core's default, without a template file to describe).
DEFAULT_MANAGED = "Ansible managed"

# ---- quoting ---------------------------------------------------------------------------------------------------
# Every consumer reads a .env line its own way (docs/security/secrets/delivery.md). A value is written in the first
# style that each consumer of the file's format reads back byte for byte; a value no style carries is refused.
# The rules below are proven against the real parsers by tests/integration/test_env_quoting.py.
CONSUMERS = {
    "compose": "docker compose env_file (v1 and v2)",
    "dotenv": "python-dotenv",
    "systemd": "systemd EnvironmentFile=",
    "shell": "bash set -a; . FILE",
}
# format (role variable keywarden_env_formats) -> the consumers that must read the file back exactly
FORMATS: dict[str, tuple[str, ...]] = {
    "portable": ("compose", "dotenv", "systemd", "shell"),
    "compose": ("compose",),
    "dotenv": ("dotenv",),
    "systemd": ("systemd",),
    "shell": ("shell",),
}
DEFAULT_FORMAT = "portable"
# What each format cannot carry, for the refusal message (the rule, never the value).
_CANNOT_CARRY = {
    "portable": "a '${', a trailing backslash, or a '$' or backtick together with a single quote or a doubled backslash",
    "compose": "a '${', a trailing backslash, or a '$' together with a backslash and a single quote (or a doubled backslash)",
    "dotenv": "a '${' (python-dotenv expands it and has no escape for it), or a trailing backslash",
    "systemd": "nothing printable",
    "shell": "nothing printable",
}
# Safe unquoted everywhere: the characters shlex.quote leaves alone (every generated charset is within them).
_BARE_RE = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")
# python-dotenv before 1.0 (compose v1 reads env files with it; Debian 12 ships 0.21) takes a backslash right before
# the closing quote for an escaped quote, in either quoting: a value ending in a backslash cannot be quoted for it.
# It decodes \\ and \' inside single quotes too, and expands ${...} in every value, with no escape.


def _single(value: str, consumer: str) -> bool:
    r"""'VALUE', nothing escaped: bash, systemd and compose v2 take it literally; python-dotenv (and compose v1, which
    reads env files with it) decodes \ and ' and expands ${...}."""
    if "'" in value:
        return False
    if consumer in ("dotenv", "compose"):
        return "\\\\" not in value and not value.endswith("\\") and "${" not in value
    return True


def _double(value: str, consumer: str) -> bool:
    r""" "VALUE" with \ and " escaped: all four decode those two; bash expands $ and backticks inside, compose v2
    expands $, python-dotenv expands ${...}; systemd takes everything else literally."""
    if consumer == "shell":
        return "$" not in value and "`" not in value
    if consumer == "compose":
        return "$" not in value and not value.endswith("\\")
    if consumer == "dotenv":
        return "${" not in value and not value.endswith("\\")
    return True


def _single_escaped(value: str, consumer: str) -> bool:
    r"""'VALUE' with \ and ' escaped: python-dotenv's own single quotes; compose v2 decodes ' but not \."""
    if consumer == "dotenv":
        return "${" not in value and not value.endswith("\\")
    if consumer == "compose":
        return "\\" not in value and "${" not in value
    return False


def _double_escaped_all(value: str, consumer: str) -> bool:
    r""" "VALUE" with \ " \$ and \` escaped: bash's and systemd's double quotes read back everything."""
    return consumer in ("shell", "systemd")


def _shell_single(value: str, consumer: str) -> bool:
    r"""'VALUE' with each ' written ''': bash only (systemd and the dotenv parsers do not join quoted strings)."""
    return consumer == "shell"


def _escape(value: str, chars: str) -> str:
    return "".join("\\" + char if char in chars else char for char in value)


# (encoder, carried?) in order of preference: bare, then the plainest quoting every consumer of the format reads back
_STYLES = (
    (lambda v: v, lambda v, c: bool(_BARE_RE.match(v))),
    (lambda v: f"'{v}'", _single),
    (lambda v: '"' + _escape(v, '\\"') + '"', _double),
    (lambda v: "'" + _escape(v, "\\'") + "'", _single_escaped),
    (lambda v: '"' + _escape(v, '\\"$`') + '"', _double_escaped_all),
    (lambda v: "'" + v.replace("'", "'\\''") + "'", _shell_single),
)


def quote_env_value(value: str, env_format: str = DEFAULT_FORMAT) -> str | None:
    """The value as every consumer of ``env_format`` reads it back, byte for byte; None when no quoting can carry it.

    Control characters (line breaks, NUL, tab, escape...) are never carried: a .env value is one line of text.
    """
    if any(unicodedata.category(char) == "Cc" for char in value):
        return None
    consumers = FORMATS[env_format]
    for encode, carried in _STYLES:
        if all(carried(value, consumer) for consumer in consumers):
            return encode(value)
    return None


def check_formats(formats: dict[str, Any], services: set[str]) -> dict[str, str]:
    """keywarden_env_formats, checked: each key a service of the catalog, each value a format name."""
    if not isinstance(formats, dict):
        raise StoreError(f"keywarden_env_formats must be a mapping of service name to one of {', '.join(FORMATS)}")
    checked = {}
    for service, env_format in formats.items():
        if str(service) not in services:
            raise StoreError(f"keywarden_env_formats: '{service}' is not a service of the catalog (services: {', '.join(sorted(services))})")
        if env_format not in FORMATS:
            raise StoreError(f"keywarden_env_formats.{service}: '{env_format}' is not one of {', '.join(FORMATS)}")
        checked[str(service)] = str(env_format)
    return checked


def env_file_name(service: dict[str, Any]) -> str:
    return f"{service['service']}.env"


def _bundle_fields(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(bundle name, secret, field) of each file a service receives (kinds delivered as files, catalog.KIND_FILE_FIELDS)."""
    return [(str(bundle["name"]), str(bundle["secret"]), str(field)) for bundle in service.get("bundles") or [] for field in bundle["fields"]]


def secret_fields(services: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The distinct (secret, field) pairs that a host's files hold (.env files and delivered files), sorted."""
    pairs = {(str(var["secret"]), str(var["field"])) for service in services for var in service["vars"] if "secret" in var}
    pairs |= {(secret, field) for service in services for _name, secret, field in _bundle_fields(service)}
    return sorted(pairs)


def check_fields(data: dict[str, Any], services: list[dict[str, Any]], stage: str, source: str) -> None:
    """Every secret field the files need exists at the stage: else a StoreError naming the file, variable, secret and field."""
    for service in services:
        wanted = [(var["name"], str(var["secret"]), str(var["field"])) for var in service["vars"] if "secret" in var]
        wanted += [(f"{name}/{bundle_file(field)}", secret, field) for name, secret, field in _bundle_fields(service)]
        for what, secret, field in wanted:
            try:
                get_field(data, secret, field, stage, source=source)
            except StoreError as exc:
                raise StoreError(f"{env_file_name(service)} {what}: {exc}; no .env file was written") from None


def render_bundles(services: list[dict[str, Any]], values: dict[tuple[str, str], str]) -> dict[str, dict[str, str]]:
    """The files of each bundle of a host's services: bundle name -> file name -> content (a stored field, as it is)."""
    out: dict[str, dict[str, str]] = {}
    for service in services:
        for name, secret, field in _bundle_fields(service):
            out.setdefault(name, {})[bundle_file(field)] = values[(secret, field)]
    return out


def render_env_file(
    service: dict[str, Any],
    values: dict[tuple[str, str], str],
    environment: str,
    managed: str = DEFAULT_MANAGED,
    env_format: str = DEFAULT_FORMAT,
    dest_dir: str = "",
) -> str:
    """The text of ``<service>.env``: a header, then one ``NAME=value`` line per variable, each value quoted so that
    every consumer of ``env_format`` reads it back exactly (see ``quote_env_value``).

    ``values`` maps (secret, field) to the value; a variable with a ``literal`` (non-secret, from the catalog's target
    block) takes that instead, and one with a ``path`` (a delivered file) the file's path in ``dest_dir``. A value the
    format cannot carry raises a StoreError naming the file, the variable and where the value comes from (never the
    value): the caller writes nothing.
    """
    header = f"# {service['service']}: rendered by keywarden from the {environment} store. Mode 0600."
    if env_format != DEFAULT_FORMAT:
        header += f" Format: {env_format}."
    lines = [comment(managed), header]
    for var in service["vars"]:
        if "literal" in var:
            value, what = str(var["literal"]), f"the catalog's literal for {var['name']}"
        elif "path" in var:
            value, what = os.path.join(dest_dir, str(var["path"])), f"the path of {var['path']} in keywarden_env_dir"
        else:
            value, what = values[(str(var["secret"]), str(var["field"]))], f"secret '{var['secret']}' field '{var['field']}'"
        quoted = quote_env_value(value, env_format)
        if quoted is None:
            readers = ", ".join(CONSUMERS[c] for c in FORMATS[env_format])
            raise StoreError(
                f"{env_file_name(service)} {var['name']}: {what} holds what the {env_format} .env format ({readers}) cannot carry:"
                f" {_CANNOT_CARRY[env_format]}, nor a control character such as a line break; change the value, or set"
                f" keywarden_env_formats for service '{service['service']}' to the one consumer that reads the file"
                f" ({', '.join(f for f in FORMATS if f != env_format)}); no .env file was written"
            )
        lines.append(f"{var['name']}={quoted}")
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
    ``detail`` the service, file, variable (none for a delivered file) and whether the service's files changed.
    Literals and paths are not recorded."""
    changed = set(changed)
    entries = []
    for service in services:
        name = str(service["service"])
        env_file = os.path.join(dest_dir, env_file_name(service)) if dest_dir else None
        delivered = [(env_file, var.get("name"), str(var["secret"]), str(var["field"])) for var in service.get("vars") or [] if "secret" in var]
        delivered += [
            (os.path.join(dest_dir, bundle, bundle_file(field)) if dest_dir else None, None, secret, field) for bundle, secret, field in _bundle_fields(service)
        ]
        for file, var_name, secret, field in delivered:
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
                    var=var_name,
                    changed=name in changed,
                )
            )
    return entries
