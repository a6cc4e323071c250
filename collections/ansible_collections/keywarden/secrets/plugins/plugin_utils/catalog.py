# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The secrets catalog: loading, schema check, and what derives from it.

The catalog (config/secrets/catalog.yml) names every credential once. Nothing in it is secret.
Every error names the catalog entry and the field to fix, on one line.
"""

from __future__ import annotations

import ipaddress
import re
import string
from typing import Any

import yaml

# libyaml's safe loader and dumper when PyYAML was built with it: a 50-secret store loads in 24 ms instead of
# 370 ms (bench/rotation_scale), and a rotation reads the store and the catalog dozens of times.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

CATALOG_VERSION = 1

# Fields each kind keeps in the store. `username` is stored because rotation strategies change it.
KIND_STORED_FIELDS: dict[str, tuple[str, ...]] = {
    "postgresql": ("username", "password"),
    "mariadb": ("username", "password"),
    "rabbitmq": ("username", "password"),
    "redis": ("username", "password"),
    # key_id: a name for the key (not secret), chosen by keywarden when it makes the key: issuers revoke keys by it,
    # and nginx logs which key a request used
    "api_key": ("value", "key_id"),
    # `certificate` is the leaf followed by its chain (what a server presents); `chain` the issuing CA's certificate
    "tls_cert": ("certificate", "chain", "private_key"),
    # `trust_bundle`: this CA's certificate and, for an overlap after a CA rotation, the one it replaced
    "tls_ca": ("certificate", "private_key", "trust_bundle"),
    "generic": ("value",),
}
# Kinds delivered as files: the fields a consumer may receive, each written to `<dir>/<service>.<secret>/<field>.pem`
# (mode 0600) with its path in the .env variable. A CA's private key is not among them: it never leaves the store.
KIND_FILE_FIELDS: dict[str, tuple[str, ...]] = {
    "tls_cert": ("certificate", "chain", "private_key"),
    "tls_ca": ("certificate", "trust_bundle"),
}
# The target block of each kind: field -> (required, what it means). The ONE table to extend when a kind gains a
# target field: validation (missing and unknown fields) and docs/security/secrets/catalog.md both derive from it.
_TARGET_GROUP = "inventory group of the hosts that run the target server (provision and rotation act there)"
_TARGET_DATABASE = "database the login may use; a consumer may receive it as the non-secret field `database`"
_TARGET_ROLE = "login name; with `alternating_users` the logins are `<role>_a` and `<role>_b`, members of a NOLOGIN role `<role>`"
_TARGET_ADMIN = (
    "catalog entry (same kind and target group) whose value keywarden logs in with to manage this one; "
    "omit it for an entry that manages itself (the admin login)"
)
KIND_TARGET_SCHEMA: dict[str, dict[str, tuple[bool, str]]] = {
    "postgresql": {"group": (True, _TARGET_GROUP), "role": (True, _TARGET_ROLE), "database": (True, _TARGET_DATABASE)},
    "mariadb": {"group": (True, _TARGET_GROUP), "role": (True, _TARGET_ROLE), "database": (True, _TARGET_DATABASE)},
    "rabbitmq": {
        "group": (True, _TARGET_GROUP),
        "role": (True, "user name; with `alternating_users` the users are `<role>_a` and `<role>_b`, with the same tags and permissions"),
        "vhost": (False, "virtual host (default `/`, must exist); a consumer may receive it as the non-secret field `vhost`"),
        "tags": (False, "list of user tags both users get, e.g. `[management]` (default none; the admin entry: `[administrator]`)"),
        "permissions": (False, "`configure`, `write`, `read` regular expressions on the virtual host, its only permissions (default `.*` each)"),
        "admin": (False, _TARGET_ADMIN),
    },
    "redis": {
        "group": (True, _TARGET_GROUP),
        "username": (False, "ACL user (default `default`, the user `requirepass` sets); stored as the field `username`"),
        "acl": (
            False,
            "ACL rules of the user, its whole permissions, e.g. `~cache:* +@read +@write` (default: existing users keep theirs, "
            "new ones get `~* &* +@all -@dangerous`)",
        ),
        "admin": (False, _TARGET_ADMIN),
    },
    "api_key": {
        "group": (False, "hosts that act for the provider: the nginx hosts (nginx), the hosts that call the issuer (http); none for manual"),
        "provider": (True, "who issues and checks the key: a mapping with `type` (nginx, http, manual) and that provider's fields (table below)"),
    },
    "tls_cert": {
        "ca": (True, "name of the `tls_ca` secret that issues this certificate (in every environment of this one)"),
        "common_name": (True, "subject common name of the certificate"),
        "dns_names": (False, "list of DNS names (subject alternative names); none and no `ip_addresses`: the common name"),
        "ip_addresses": (False, "list of IP addresses (subject alternative names)"),
    },
    "tls_ca": {"common_name": (True, "subject common name of the CA certificate")},
    "generic": {},
}
# Target fields holding a list of strings (every other target field is one string).
_TARGET_LISTS = ("dns_names", "ip_addresses")
# Non-secret fields a consumer may also receive; they come from the catalog's target block.
KIND_TARGET_FIELDS: dict[str, tuple[str, ...]] = {
    "postgresql": ("database",),
    "mariadb": ("database",),
    "rabbitmq": ("vhost",),
}
# Target fields each kind must set (derived from KIND_TARGET_SCHEMA).
KIND_TARGET_REQUIRED: dict[str, tuple[str, ...]] = {
    kind: tuple(name for name, (required, _text) in fields.items() if required) for kind, fields in KIND_TARGET_SCHEMA.items()
}

# The providers of kind api_key (`target.provider`): field -> (required, default, what it holds). Validation and
# docs/security/secrets/catalog.md both derive from it; plugin_utils/api_key_providers.py does the work.
_PLACEHOLDERS = "`{key_id}`, `{name}` (and `{key}` in a body only: a key in a URL lands in access logs)"
API_KEY_PROVIDERS: dict[str, dict[str, tuple[bool, Any, str]]] = {
    "nginx": {
        "type": (True, None, "`nginx`: keywarden writes the keys nginx accepts (a `map` include file per secret) on the target hosts and reloads nginx"),
        "header": (False, "X-API-Key", "request header that carries the key (the map's source is `$http_<header>`, lower case, `-` as `_`)"),
        "scheme": (False, "", "word before the key in that header, e.g. `Bearer` for `Authorization: Bearer <key>`; empty: the header holds the key alone"),
        "test_path": (False, "/", "path a test request with the key goes to: it must answer 2xx to a key nginx accepts, 401 or 403 to any other"),
    },
    "http": {
        "type": (True, None, "`http`: an issuer's HTTP API creates, tests and revokes keys; keywarden chooses each key (and its id) and sends it"),
        "base_url": (True, None, "`http://` or `https://` URL the paths below are relative to"),
        "admin_token": (True, None, "the catalog secret (api_key or generic, in every environment of this entry) whose `value` authorizes create and revoke"),
        "admin_header": (False, "Authorization", "request header of create and revoke that carries the admin token"),
        "admin_scheme": (False, "Bearer", "word before the admin token in that header; empty: the header holds the token alone"),
        "create": (
            True,
            None,
            "mapping: `path` (required), `method` (POST), `body` (JSON object; default `{id: '{key_id}', key: '{key}', name: '{name}'}`); "
            f"placeholders {_PLACEHOLDERS}; answers 2xx, or 409 for a key id it already has",
        ),
        "revoke": (True, None, f"mapping: `path` (required), `method` (DELETE), `body` (optional); placeholders {_PLACEHOLDERS}; answers 2xx (404/410: gone)"),
        "header": (False, "X-API-Key", "header that carries the key when it is used (the test request)"),
        "scheme": (False, "", "word before the key in that header (e.g. `Bearer`)"),
        "test_path": (True, None, "path a GET with the key goes to: 2xx for a live key, 401 or 403 for a revoked one"),
    },
    "manual": {
        "type": (True, None, "`manual`: no API issues it; a due key fails the run, naming `steps`; a person records the new one (playbooks/record.yml)"),
        "steps": (True, None, "what a person does to get a new key (console, ticket, contact), printed when the key is due"),
    },
}
_HEADER_RE = re.compile(r"^[A-Za-z0-9-]+$")
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")
_URL_RE = re.compile(r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
_PATH_RE = re.compile(r"^/[^\s?#]*(\?[^\s#]*)?$")
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
DEFAULT_CREATE_BODY = {"id": "{key_id}", "key": "{key}", "name": "{name}"}
# strategy overlap: how long the outgoing key keeps working after a rotation, at most (hours)
MAX_OVERLAP_HOURS = 8760

# Every charset is safe unquoted in systemd EnvironmentFile=, docker compose env_file and POSIX sh.
CHARSETS: dict[str, str] = {
    "alnum": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
    "hex": "0123456789abcdef",
    "urlsafe": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
}
MIN_LENGTH = 16
MAX_LENGTH = 1024
STRATEGIES = ("alternating_users", "single_user", "dual_password", "overlap", "reissue")
# The zero-downtime strategy each kind gets when the catalog names none.
DEFAULT_STRATEGY: dict[str, str] = {
    "postgresql": "alternating_users",
    "mariadb": "alternating_users",
    "rabbitmq": "alternating_users",
    "redis": "dual_password",
    "api_key": "overlap",
    "tls_cert": "reissue",
    "tls_ca": "reissue",
    "generic": "single_user",
}
# Which strategies each kind supports.
KIND_STRATEGIES: dict[str, tuple[str, ...]] = {
    "postgresql": ("alternating_users", "single_user"),
    "mariadb": ("alternating_users", "single_user"),
    "rabbitmq": ("alternating_users", "single_user"),
    "redis": ("dual_password", "single_user"),
    "api_key": ("overlap", "single_user"),
    "tls_cert": ("reissue",),
    "tls_ca": ("reissue",),
    "generic": ("single_user",),
}

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_ENV_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_SERVICE_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_GROUP_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENVIRONMENT_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
# a DNS name of a certificate: labels of letters, digits and hyphens; a leading `*.` for a wildcard
_DNS_RE = re.compile(r"^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# The names the catalog accepts, for docs/security/secrets/catalog.md.
NAME_PATTERNS: dict[str, re.Pattern[str]] = {
    "secret name": _NAME_RE,
    "environment": _ENVIRONMENT_RE,
    "inventory group": _GROUP_RE,
    "service": _SERVICE_RE,
    "environment variable": _ENV_RE,
}

# The fields of an entry, of its policy and of a consumer: name -> (required, what it holds). Validation rejects any
# other field; docs/security/secrets/catalog.md is checked against these tables (tests/unit/.../test_catalog_doc.py).
SECRET_FIELDS: dict[str, tuple[bool, str]] = {
    "kind": (True, "one of the kinds below; decides the stored fields, the target block and the strategies"),
    "description": (False, "free text for people (default empty)"),
    "environments": (True, "the environments that have this credential, e.g. `[development, production]`"),
    "target": (False, "where the credential is checked (the server that holds the login); fields per kind below"),
    "policy": (False, "generator and rotation policy; every field has a default"),
    "consumers": (True, "who receives the credential as environment variables: at least one, or `[]` for an issuer's admin token (`provider.admin_token`)"),
}
# Key types of certificates: name -> community.crypto openssl_privatekey options.
KEY_TYPES: dict[str, dict[str, Any]] = {
    "ecdsa_p256": {"type": "ECC", "curve": "secp256r1"},
    "ecdsa_p384": {"type": "ECC", "curve": "secp384r1"},
    "rsa_2048": {"type": "RSA", "size": 2048},
    "rsa_3072": {"type": "RSA", "size": 3072},
    "rsa_4096": {"type": "RSA", "size": 4096},
}
# Certificate lifetime when the catalog names none, per kind (cert-manager's default for a certificate; ten years for a CA).
DEFAULT_LIFETIME_DAYS: dict[str, int] = {"tls_cert": 90, "tls_ca": 3650}
CERT_KINDS = tuple(DEFAULT_LIFETIME_DAYS)
MAX_LIFETIME_DAYS = 3650
# policy field -> (default, what it holds); a default of None means "per kind" (DEFAULT_STRATEGY, DEFAULT_LIFETIME_DAYS)
POLICY_FIELDS: dict[str, tuple[Any, str]] = {
    "max_age_days": (90, "days until a value is due for rotation, 1 to 3650 (certificates: default `lifetime_days`)"),
    "length": (32, f"characters of a generated value, {MIN_LENGTH} to {MAX_LENGTH} (not for certificates)"),
    "charset": ("alnum", "alphabet of a generated value: " + ", ".join(CHARSETS) + " (not for certificates)"),
    "strategy": (None, "how a rotation keeps consumers working; default and choices per kind: the kinds table"),
    "lifetime_days": (None, f"certificates only: validity of a new certificate, 1 to {MAX_LIFETIME_DAYS} (default 90 for `tls_cert`, 3650 for `tls_ca`)"),
    "renew_before_days": (None, "certificates only: renew when less remains of the certificate's validity (default: a third of its lifetime)"),
    "key_type": ("ecdsa_p256", "certificates only: key of a new certificate: " + ", ".join(KEY_TYPES)),
    "overlap_hours": (
        24,
        f"strategy `overlap` only: hours the outgoing key keeps working after a rotation, 0 to {MAX_OVERLAP_HOURS} and at most max_age_days x 24; "
        "a later run revokes it (0: the same run, once every consumer holds the new one)",
    ),
}
_CERT_POLICY_KEYS = {"max_age_days", "strategy", "lifetime_days", "renew_before_days", "key_type"}
CONSUMER_FIELDS: dict[str, tuple[bool, str]] = {
    "group": (True, "inventory group of the consuming hosts (a warning when it matches no host)"),
    "service": (True, "service name: the file is `<service>.env`"),
    "env": (True, "variable name (upper case) -> field of the credential (stored fields of the kind, or its non-secret target fields)"),
    "systemd_unit": (False, "unit restarted when the file changes"),
    "compose_service": (False, "docker compose service recreated when the file changes"),
    "health_check": (False, "command run on the host after a restart or reload; non-zero fails the rollout"),
    "reload_command": (
        False,
        "command run on the host when only the service's certificate files changed (e.g. `nginx -s reload`), instead of a restart",
    ),
}
_SECRET_KEYS = set(SECRET_FIELDS)
_POLICY_KEYS = set(POLICY_FIELDS)
_CONSUMER_KEYS = set(CONSUMER_FIELDS)


class CatalogError(ValueError):
    """A catalog problem, with a message that names the entry and field to fix."""


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping names one key twice (YAML forbids it; PyYAML would keep the last silently)."""

    def __init__(self, key: Any, first: int, second: int) -> None:
        super().__init__(problem=f"duplicate key {key!r}")
        self.key, self.first, self.second = key, first, second


class UniqueKeys:
    """Loader mixin: a key given twice in one mapping raises DuplicateKeyError (merge keys ``<<`` still override)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` overrides by design
            key = self.construct_object(key_node, deep=True)  # type: ignore[attr-defined]
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise DuplicateKeyError(key, seen[key], line)
            except TypeError:  # an unhashable key: the base constructor reports it
                continue
            seen[key] = line
        return super().construct_mapping(node, deep=deep)  # type: ignore[misc]


class CatalogLoader(UniqueKeys, YAML_LOADER):  # type: ignore[misc,valid-type]
    """YAML_LOADER (libyaml's parser when available) that refuses a key twice in one mapping.

    Only the catalog uses it: people edit the catalog, and two ``app_db:`` entries would otherwise merge into the
    last one. The store, which only keywarden writes, keeps the plain loader (bench/catalog_load: the check costs
    the catalog a few percent).
    """


def load_catalog(path: str) -> dict[str, Any]:
    """Read and validate the catalog file; return it with defaults filled in."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise CatalogError(f"catalog {path}: cannot read it ({exc.strerror}); set keywarden_catalog_path to the catalog file") from None
    try:
        data = yaml.load(raw, Loader=CatalogLoader)  # noqa: S506 - a safe loader
    except DuplicateKeyError as exc:
        raise CatalogError(f"catalog {path}: line {exc.second}: duplicate key {exc.key!r} (first at line {exc.first}); keep one of them") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise CatalogError(f"catalog {path}:{where} is not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    return validate_catalog(data, source=path)


def _fail(source: str, entry: str, field: str, problem: str) -> CatalogError:
    return CatalogError(f"catalog {source}: secrets.{entry}.{field}: {problem}")


def _check_int(source: str, entry: str, field: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(source, entry, field, f"must be a whole number from {low} to {high}")
    return value


def login_names(entry: dict[str, Any]) -> tuple[str, ...]:
    """The login(s) a credential uses at its target: two (<role>_a, <role>_b) for alternating_users."""
    role = entry["target"]["role"]
    if entry["policy"]["strategy"] == "alternating_users":
        return (f"{role}_a", f"{role}_b")
    return (role,)


def _check_policy(source: str, name: str, kind: str, policy: Any) -> dict[str, Any]:
    if policy is None:
        policy = {}
    if not isinstance(policy, dict):
        raise _fail(source, name, "policy", "must be a mapping")
    allowed = _CERT_POLICY_KEYS if kind in CERT_KINDS else _POLICY_KEYS - {"lifetime_days", "renew_before_days", "key_type"}
    unknown = sorted(set(policy) - allowed)
    if unknown:
        raise _fail(source, name, f"policy.{unknown[0]}", f"unknown field for kind {kind}; allowed: {', '.join(sorted(allowed))}")
    if kind in CERT_KINDS:
        return _check_cert_policy(source, name, kind, policy)
    out = {
        "max_age_days": _check_int(source, name, "policy.max_age_days", policy.get("max_age_days", POLICY_FIELDS["max_age_days"][0]), 1, 3650),
        "length": _check_int(source, name, "policy.length", policy.get("length", POLICY_FIELDS["length"][0]), MIN_LENGTH, MAX_LENGTH),
        "charset": policy.get("charset", POLICY_FIELDS["charset"][0]),
        "strategy": policy.get("strategy") or DEFAULT_STRATEGY[kind],
    }
    if out["charset"] not in CHARSETS:
        raise _fail(source, name, "policy.charset", f"'{out['charset']}' is not one of {', '.join(CHARSETS)}")
    if out["strategy"] not in KIND_STRATEGIES[kind]:
        raise _fail(source, name, "policy.strategy", f"'{out['strategy']}' is not one of {', '.join(KIND_STRATEGIES[kind])} for kind {kind}")
    if out["strategy"] != "overlap":
        if "overlap_hours" in policy:
            raise _fail(source, name, "policy.overlap_hours", f"only applies to strategy overlap (this entry's strategy is {out['strategy']})")
        return out
    overlap = policy.get("overlap_hours", POLICY_FIELDS["overlap_hours"][0])
    out["overlap_hours"] = _check_int(source, name, "policy.overlap_hours", overlap, 0, MAX_OVERLAP_HOURS)
    if out["overlap_hours"] > out["max_age_days"] * 24:
        raise _fail(
            source,
            name,
            "policy.overlap_hours",
            f"must be at most max_age_days x 24 ({out['max_age_days'] * 24}): the next rotation would start inside the overlap window",
        )
    return out


def _check_cert_policy(source: str, name: str, kind: str, policy: dict[str, Any]) -> dict[str, Any]:
    lifetime = _check_int(source, name, "policy.lifetime_days", policy.get("lifetime_days", DEFAULT_LIFETIME_DAYS[kind]), 1, MAX_LIFETIME_DAYS)
    renew = policy.get("renew_before_days")
    if renew is not None:
        if lifetime < 2:
            raise _fail(source, name, "policy.renew_before_days", "needs a lifetime_days of 2 or more")
        renew = _check_int(source, name, "policy.renew_before_days", renew, 1, lifetime - 1)
    out = {
        "max_age_days": _check_int(source, name, "policy.max_age_days", policy.get("max_age_days", lifetime), 1, 3650),
        "strategy": policy.get("strategy") or DEFAULT_STRATEGY[kind],
        "lifetime_days": lifetime,
        "renew_before_days": renew,
        "key_type": policy.get("key_type", POLICY_FIELDS["key_type"][0]),
    }
    if out["key_type"] not in KEY_TYPES:
        raise _fail(source, name, "policy.key_type", f"'{out['key_type']}' is not one of {', '.join(KEY_TYPES)}")
    if out["strategy"] not in KIND_STRATEGIES[kind]:
        raise _fail(source, name, "policy.strategy", f"'{out['strategy']}' is not one of {', '.join(KIND_STRATEGIES[kind])} for kind {kind}")
    return out


def _check_target_list(source: str, name: str, field: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise _fail(source, name, f"target.{field}", "must be a list of strings")
    for item in value:
        if field == "dns_names" and not _DNS_RE.match(item):
            raise _fail(source, name, f"target.{field}", f"'{item}' is not a DNS name")
        if field == "ip_addresses":
            try:
                ipaddress.ip_address(item)
            except ValueError:
                raise _fail(source, name, f"target.{field}", f"'{item}' is not an IP address") from None
    return list(value)


def _check_target(source: str, name: str, kind: str, target: Any) -> dict[str, Any]:
    if target is None:
        target = {}
    if not isinstance(target, dict):
        raise _fail(source, name, "target", "must be a mapping")
    allowed = KIND_TARGET_SCHEMA[kind]
    unknown = sorted((str(key) for key in set(target) - set(allowed)), key=str)
    if unknown:
        what = f"allowed for kind {kind}: {', '.join(allowed)}" if allowed else f"kind {kind} takes no target fields"
        raise _fail(source, name, f"target.{unknown[0]}", f"unknown field; {what}")
    for key in KIND_TARGET_REQUIRED.get(kind, ()):
        if key == "provider":
            continue  # a mapping: _check_provider
        value = target.get(key)
        if not isinstance(value, str) or not value:
            raise _fail(source, name, f"target.{key}", f"is required for kind {kind}")
    if "group" in target and not _GROUP_RE.match(str(target["group"])):
        raise _fail(source, name, "target.group", "must be an inventory group name")
    out = dict(target)
    for key in sorted(set(target) & set(allowed)) if kind in CERT_KINDS else ():
        if key in _TARGET_LISTS:
            out[key] = _check_target_list(source, name, key, target[key])
        elif not isinstance(target[key], str) or not target[key]:
            raise _fail(source, name, f"target.{key}", "must be a non-empty string")
    if "common_name" in out and not 1 <= len(out["common_name"]) <= 64:
        raise _fail(source, name, "target.common_name", "must be 1 to 64 characters (X.509 upper bound)")
    for key, value in target.items():
        check = _TARGET_VALUE_CHECKS.get(key)
        problem = check(value) if check else None
        if problem:
            raise _fail(source, name, f"target.{key}", problem)
    if target.get("admin") == name:
        raise _fail(source, name, "target.admin", "names the entry itself; omit target.admin for an entry that manages itself")
    if kind == "api_key":
        out["provider"] = _check_provider(source, name, target.get("provider"))
        if out["provider"]["type"] == "manual" and "group" in target:
            raise _fail(source, name, "target.group", "provider manual has no target hosts (keywarden cannot reach its issuer); remove it")
        if out["provider"]["type"] != "manual" and not target.get("group"):
            raise _fail(source, name, "target.group", f"is required for provider {out['provider']['type']}: the hosts that act for it")
    return out


def _check_text(pattern: re.Pattern[str], what: str) -> Any:
    return lambda value: None if isinstance(value, str) and pattern.match(value) else f"must be {what}"


_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,127}$")
_TAG_RE = re.compile(r"^[a-z][a-z0-9_-]*$")


def _check_tags(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(tag, str) and _TAG_RE.match(tag) for tag in value):
        return "must be a list of tag names (lower case, e.g. [management])"
    return None


def _check_permissions(value: Any) -> str | None:
    if not isinstance(value, dict) or not value:
        return "must map configure, write and read to regular expressions"
    unknown = sorted(str(key) for key in set(value) - {"configure", "write", "read"})
    if unknown:
        return f"unknown permission '{unknown[0]}'; allowed: configure, write, read"
    if not all(isinstance(regex, str) for regex in value.values()):
        return "each permission must be a regular expression string ('' for none)"
    return None


def _check_acl(value: Any) -> str | None:
    if not isinstance(value, str) or not value.split():
        return "must be a string of ACL rules, e.g. '~cache:* +@read +@write'"
    # passwords have no place in the catalog: the store holds them, keywarden adds them
    if any(rule[:1] in (">", "<", "#", "!") or rule in ("nopass", "resetpass", "reset") for rule in value.split()):
        return "holds a password rule (>, <, #, !, nopass, resetpass, reset); passwords come from the store, keep only permissions here"
    return None


# Values of optional target fields (the required ones are non-empty strings, checked above).
_TARGET_VALUE_CHECKS: dict[str, Any] = {
    "vhost": _check_text(re.compile(r"^\S.{0,254}$"), "a virtual host name"),
    "username": _check_text(_USER_RE, "a user name (letters, digits, _ . @ -)"),
    "admin": _check_text(_NAME_RE, "the name of another catalog entry"),
    "tags": _check_tags,
    "permissions": _check_permissions,
    "acl": _check_acl,
}


def _check_admins(source: str, secrets: dict[str, Any]) -> None:
    """target.admin names an entry of the same kind and target group, present in every environment of this one, that
    manages itself (no chains)."""
    for name, entry in secrets.items():
        admin = entry["target"].get("admin")
        if not admin:
            continue
        other = secrets.get(admin)
        if other is None:
            raise _fail(source, name, "target.admin", f"names '{admin}', which is not in the catalog")
        if other["kind"] != entry["kind"] or other["target"].get("group") != entry["target"].get("group"):
            raise _fail(source, name, "target.admin", f"'{admin}' must be of kind {entry['kind']} with target.group {entry['target'].get('group')}")
        missing = [env for env in entry["environments"] if env not in other["environments"]]
        if missing:
            raise _fail(source, name, "target.admin", f"'{admin}' is not in environment {missing[0]}; add it there")
        if other["target"].get("admin"):
            raise _fail(source, name, "target.admin", f"'{admin}' names an admin itself; an admin entry manages itself (omit its target.admin)")


def _placeholders(source: str, name: str, field: str, text: str, allowed: tuple[str, ...]) -> None:
    try:
        used = {part[1] for part in string.Formatter().parse(text) if part[1] is not None}
    except ValueError:
        raise _fail(source, name, field, "has an unbalanced { or } (write {{ or }} for a literal brace)") from None
    if "key" in used and "key" not in allowed:
        raise _fail(source, name, field, "{key} may not appear here (a key in a URL lands in access logs): send it in the body")
    unknown = sorted(used - set(allowed))
    if unknown:
        raise _fail(source, name, field, f"unknown placeholder {{{unknown[0]}}}; allowed: {', '.join('{' + p + '}' for p in allowed)}")


def _check_call(source: str, name: str, field: str, call: Any, method: str, body: Any) -> dict[str, Any]:
    """create/revoke of provider http: {method, path, body}; placeholders checked, defaults filled in."""
    if not isinstance(call, dict):
        raise _fail(source, name, field, "must be a mapping with path (and method, body)")
    unknown = sorted(str(key) for key in set(call) - {"method", "path", "body"})
    if unknown:
        raise _fail(source, name, f"{field}.{unknown[0]}", "unknown field; allowed: method, path, body")
    out = {"method": str(call.get("method", method)).upper(), "path": call.get("path"), "body": call.get("body", body)}
    if out["method"] not in _METHODS:
        raise _fail(source, name, f"{field}.method", f"'{call.get('method')}' is not one of {', '.join(_METHODS)}")
    if not isinstance(out["path"], str) or not _PATH_RE.match(out["path"]):
        raise _fail(source, name, f"{field}.path", "is required: a path starting with / (no spaces)")
    _placeholders(source, name, f"{field}.path", out["path"], ("key_id", "name"))
    if out["body"] is not None:
        if not isinstance(out["body"], dict):
            raise _fail(source, name, f"{field}.body", "must be a mapping (sent as a JSON object)")
        for key, value in out["body"].items():
            if not isinstance(value, (str, int, bool)) or value is None:
                raise _fail(source, name, f"{field}.body.{key}", "must be a string, a number or true/false")
            if isinstance(value, str):
                _placeholders(source, name, f"{field}.body.{key}", value, ("key", "key_id", "name"))
    return out


def _check_provider(source: str, name: str, provider: Any) -> dict[str, Any]:
    """`target.provider` of an api_key entry: its type's fields (API_KEY_PROVIDERS), checked, defaults filled in."""
    where = "target.provider"
    if not isinstance(provider, dict) or "type" not in provider:
        raise _fail(source, name, where, f"is required for kind api_key: a mapping with type {', '.join(API_KEY_PROVIDERS)}")
    kind = provider["type"]
    if kind not in API_KEY_PROVIDERS:
        raise _fail(source, name, f"{where}.type", f"'{kind}' is not one of {', '.join(API_KEY_PROVIDERS)}")
    fields = API_KEY_PROVIDERS[kind]
    unknown = sorted(str(key) for key in set(provider) - set(fields))
    if unknown:
        raise _fail(source, name, f"{where}.{unknown[0]}", f"unknown field; allowed for provider {kind}: {', '.join(fields)}")
    for field, (required, _default, _text) in fields.items():
        if required and provider.get(field) in (None, ""):
            raise _fail(source, name, f"{where}.{field}", f"is required for provider {kind}")
    out = {field: provider.get(field, default) for field, (_required, default, _text) in fields.items()}
    for field in ("header", "admin_header"):
        if field in out and not (isinstance(out[field], str) and _HEADER_RE.match(out[field])):
            raise _fail(source, name, f"{where}.{field}", "must be an HTTP header name (letters, digits, -)")
    for field in ("scheme", "admin_scheme"):
        if field in out and out[field] != "" and not (isinstance(out[field], str) and _SCHEME_RE.match(out[field])):
            raise _fail(source, name, f"{where}.{field}", "must be one word (letters, digits, -), e.g. Bearer, or empty")
    if "test_path" in out and not (isinstance(out["test_path"], str) and _PATH_RE.match(out["test_path"])):
        raise _fail(source, name, f"{where}.test_path", "must be a path starting with / (no spaces)")
    if "test_path" in out:
        _placeholders(source, name, f"{where}.test_path", out["test_path"], ())
    if kind == "manual" and not isinstance(out["steps"], str):
        raise _fail(source, name, f"{where}.steps", "must be text: what a person does to get a new key")
    if kind == "http":
        if not isinstance(out["base_url"], str) or not _URL_RE.match(out["base_url"]):
            raise _fail(source, name, f"{where}.base_url", "must be an http:// or https:// URL (no query)")
        out["base_url"] = out["base_url"].rstrip("/")
        if not isinstance(out["admin_token"], str) or not _NAME_RE.match(out["admin_token"]):
            raise _fail(source, name, f"{where}.admin_token", "must name a secret of this catalog")
        out["create"] = _check_call(source, name, f"{where}.create", out["create"], "POST", DEFAULT_CREATE_BODY)
        out["revoke"] = _check_call(source, name, f"{where}.revoke", out["revoke"], "DELETE", None)
    return out


def _check_admin_tokens(source: str, secrets_out: dict[str, Any]) -> None:
    """Each provider.admin_token names an api_key or generic secret present wherever the entry is; an entry without
    consumers must be such a token (keywarden is then its only user)."""
    tokens = set()
    for name, entry in secrets_out.items():
        provider = entry["target"].get("provider") or {}
        token = provider.get("admin_token")
        if not token:
            continue
        other = secrets_out.get(token)
        field = "target.provider.admin_token"
        if other is None or token == name:
            raise _fail(source, name, field, f"secret '{token}' is not another entry of this catalog; add it (kind api_key, provider manual)")
        if other["kind"] not in ("api_key", "generic"):
            raise _fail(source, name, field, f"secret '{token}' is of kind {other['kind']}; an admin token is of kind api_key or generic")
        missing = [env for env in entry["environments"] if env not in other["environments"]]
        if missing:
            raise _fail(source, name, field, f"secret '{token}' is not in environment {missing[0]}; add it there")
        tokens.add(token)
    for name, entry in secrets_out.items():
        if not entry["consumers"] and name not in tokens:
            raise _fail(source, name, "consumers", "needs at least one consumer (group, service, env), unless another entry names it as provider.admin_token")


def _check_consumers(source: str, name: str, kind: str, consumers: Any) -> list[dict[str, Any]]:
    # an empty list is checked once every entry is known (_check_admin_tokens): only an admin token may have none
    if not isinstance(consumers, list):
        raise _fail(source, name, "consumers", "needs at least one consumer (group, service, env)")
    allowed_fields = KIND_FILE_FIELDS.get(kind) or KIND_STORED_FIELDS[kind] + KIND_TARGET_FIELDS.get(kind, ())
    out = []
    for index, consumer in enumerate(consumers):
        where = f"consumers[{index}]"
        if not isinstance(consumer, dict):
            raise _fail(source, name, where, "must be a mapping with group, service and env")
        unknown = sorted(set(consumer) - _CONSUMER_KEYS)
        if unknown:
            raise _fail(source, name, f"{where}.{unknown[0]}", f"unknown field; allowed: {', '.join(sorted(_CONSUMER_KEYS))}")
        for key, pattern in (("group", _GROUP_RE), ("service", _SERVICE_RE)):
            value = consumer.get(key)
            if not isinstance(value, str) or not pattern.match(value):
                raise _fail(source, name, f"{where}.{key}", f"is required and must match {pattern.pattern}")
        env = consumer.get("env")
        if not isinstance(env, dict) or not env:
            raise _fail(source, name, f"{where}.env", "must map at least one variable name to a field")
        for var, field in env.items():
            if not isinstance(var, str) or not _ENV_RE.match(var):
                raise _fail(source, name, f"{where}.env.{var}", "variable names must be upper case (A-Z, 0-9, _)")
            if field not in allowed_fields:
                secret_key = " (a CA's private key never leaves the store)" if kind == "tls_ca" and field == "private_key" else ""
                raise _fail(source, name, f"{where}.env.{var}", f"field '{field}' is not one of {', '.join(allowed_fields)} for kind {kind}{secret_key}")
        for key in ("systemd_unit", "compose_service", "health_check", "reload_command"):
            if key in consumer and (not isinstance(consumer[key], str) or not consumer[key]):
                raise _fail(source, name, f"{where}.{key}", "must be a non-empty string")
        out.append(dict(consumer))
    return out


def validate_catalog(data: Any, source: str = "catalog") -> dict[str, Any]:
    """Check the catalog against the schema; return a normalised copy (defaults filled in)."""
    if not isinstance(data, dict):
        raise CatalogError(f"catalog {source}: must be a YAML mapping with keywarden_catalog_version and secrets")
    if data.get("keywarden_catalog_version") != CATALOG_VERSION:
        raise CatalogError(f"catalog {source}: keywarden_catalog_version must be {CATALOG_VERSION}")
    secrets_in = data.get("secrets")
    if not isinstance(secrets_in, dict) or not secrets_in:
        raise CatalogError(f"catalog {source}: secrets must be a mapping with at least one entry")
    unknown_top = sorted(set(data) - {"keywarden_catalog_version", "secrets"})
    if unknown_top:
        raise CatalogError(f"catalog {source}: unknown top-level field '{unknown_top[0]}'")
    secrets_out: dict[str, Any] = {}
    # which secret/field feeds each (service, variable): a variable must have one source
    sources: dict[tuple[str, str], str] = {}
    for name, entry in secrets_in.items():
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise CatalogError(f"catalog {source}: secrets.{name}: names must be lower case (a-z, 0-9, _), starting with a letter")
        if not isinstance(entry, dict):
            raise _fail(source, name, "kind", "the entry must be a mapping")
        unknown = sorted(set(entry) - _SECRET_KEYS)
        if unknown:
            raise _fail(source, name, unknown[0], f"unknown field; allowed: {', '.join(sorted(_SECRET_KEYS))}")
        kind = entry.get("kind")
        if kind not in KIND_STORED_FIELDS:
            raise _fail(source, name, "kind", f"'{kind}' is not one of {', '.join(KIND_STORED_FIELDS)}")
        environments = entry.get("environments")
        if not isinstance(environments, list) or not environments or not all(isinstance(e, str) and _ENVIRONMENT_RE.match(e) for e in environments):
            raise _fail(source, name, "environments", "must list at least one environment name (e.g. [development, production])")
        description = entry.get("description", "")
        if not isinstance(description, str):
            raise _fail(source, name, "description", "must be a string")
        target = _check_target(source, name, kind, entry.get("target"))
        consumers = _check_consumers(source, name, kind, entry.get("consumers"))
        for index, consumer in enumerate(consumers):
            for var, field in consumer["env"].items():
                if field in KIND_TARGET_FIELDS.get(kind, ()) and not target.get(field):
                    raise _fail(source, name, f"consumers[{index}].env.{var}", f"field '{field}' needs target.{field} to be set")
                key = (consumer["service"], var)
                if key in sources and sources[key] != name:
                    raise _fail(source, name, f"consumers[{index}].env.{var}", f"service {consumer['service']} already gets {var} from secret {sources[key]}")
                sources[key] = name
        policy = _check_policy(source, name, kind, entry.get("policy"))
        if kind == "api_key" and target["provider"]["type"] == "http" and policy["strategy"] == "single_user":
            raise _fail(source, name, "policy.strategy", "single_user needs provider nginx (an issuer cannot take back a key it revoked at set); use overlap")
        secrets_out[name] = {
            "kind": kind,
            "description": description,
            "environments": list(environments),
            "target": target,
            "policy": policy,
            "consumers": consumers,
        }
    _check_issuers(source, secrets_out)
    _check_admins(source, secrets_out)
    _check_admin_tokens(source, secrets_out)
    return {"keywarden_catalog_version": CATALOG_VERSION, "secrets": secrets_out}


def _check_issuers(source: str, secrets_out: dict[str, Any]) -> None:
    """Each certificate names a `tls_ca` entry that exists wherever the certificate does."""
    for name, entry in secrets_out.items():
        if entry["kind"] != "tls_cert":
            continue
        ca = entry["target"]["ca"]
        issuer = secrets_out.get(ca)
        if issuer is None or issuer["kind"] != "tls_ca":
            cas = sorted(other for other, e in secrets_out.items() if e["kind"] == "tls_ca")
            raise _fail(source, name, "target.ca", f"'{ca}' is not a tls_ca entry of the catalog (tls_ca entries: {', '.join(cas) or 'none'})")
        missing = [env for env in entry["environments"] if env not in issuer["environments"]]
        if missing:
            raise _fail(source, name, "target.ca", f"CA '{ca}' is not in environment(s) {', '.join(missing)}: add them to secrets.{ca}.environments")


def unmatched_groups(catalog: dict[str, Any], environment: str, groups: dict[str, Any]) -> list[str]:
    """Warnings, one line each: a target or consumer group of this environment's entries that matches no host of the
    inventory (``groups``: Ansible's magic variable). Nothing would be provisioned, rotated or delivered there."""
    warnings = []
    for name, entry in sorted(secrets_for_environment(catalog, environment).items()):
        group = entry["target"].get("group")
        if group and not groups.get(group):
            warnings.append(
                f"secrets.{name}.target.group: group '{group}' matches no host in the inventory: nothing provisions or rotates {name} at its target"
            )
        for index, consumer in enumerate(entry["consumers"]):
            if not groups.get(consumer["group"]):
                warnings.append(
                    f"secrets.{name}.consumers[{index}].group: group '{consumer['group']}' matches no host in the inventory: "
                    f"no host receives {name} for service {consumer['service']}"
                )
    return warnings


def secrets_for_environment(catalog: dict[str, Any], environment: str) -> dict[str, Any]:
    """The catalog entries that exist in one environment."""
    return {name: entry for name, entry in catalog["secrets"].items() if environment in entry["environments"]}


def bundle_name(service: str, secret: str) -> str:
    """The name, in a host's .env directory, of the files of one secret delivered as files to one service.
    Unique: a secret name has no dot, so the part after the last dot is always the secret."""
    return f"{service}.{secret}"


def bundle_file(field: str) -> str:
    return f"{field}.pem"


def env_plan(catalog: dict[str, Any], environment: str, groups: list[str]) -> list[dict[str, Any]]:
    """What one host receives: a list of services, each with its variables (names and sources, no values).

    A host gets a service's file only when it is in that consumer's group, and the file holds only the
    variables that service consumes (least privilege). A secret of a kind delivered as files (KIND_FILE_FIELDS)
    adds a bundle to the service (``bundles``: its name in the .env directory, the secret and its fields); the
    service's variables hold the paths of those files, relative to the directory (``path``).
    """
    services: dict[str, dict[str, Any]] = {}
    for name, entry in sorted(secrets_for_environment(catalog, environment).items()):
        file_fields = KIND_FILE_FIELDS.get(entry["kind"], ())
        for consumer in entry["consumers"]:
            if consumer["group"] not in groups:
                continue
            service = services.setdefault(
                consumer["service"],
                {"service": consumer["service"], "systemd_unit": None, "compose_service": None, "health_check": None, "vars": []},
            )
            for key in ("systemd_unit", "compose_service", "health_check", "reload_command"):
                if consumer.get(key):
                    service[key] = consumer[key]
            if file_fields:
                bundle = bundle_name(consumer["service"], name)
                bundles = service.setdefault("bundles", [])
                if all(item["name"] != bundle for item in bundles):
                    bundles.append({"name": bundle, "secret": name, "fields": list(file_fields)})
            for var, field in sorted(consumer["env"].items()):
                item = {"name": var, "secret": name, "field": field}
                if field in KIND_TARGET_FIELDS.get(entry["kind"], ()):
                    # non-secret: a literal from the catalog's target block
                    item = {"name": var, "literal": str(entry["target"].get(field, ""))}
                elif file_fields:
                    # the path of the delivered file, not its content
                    item = {"name": var, "path": f"{bundle_name(consumer['service'], name)}/{bundle_file(field)}"}
                service["vars"].append(item)
    for service in services.values():
        service["vars"].sort(key=lambda item: item["name"])
        service.get("bundles", []).sort(key=lambda item: item["name"])
    return [services[key] for key in sorted(services)]


def env_template(catalog: dict[str, Any]) -> str:
    """The text of .env.template: every variable every service consumes, grouped by service, no values."""
    lines = [
        "# Generated from config/secrets/catalog.yml by scripts/secrets/env-template. Do not edit.",
        "# keywarden renders one file per service (<service>.env, mode 0600) from the encrypted store;",
        "# these are the variable names each service receives. Values never live in the repository.",
    ]
    per_service: dict[str, dict[str, str]] = {}
    for name, entry in sorted(catalog["secrets"].items()):
        for consumer in entry["consumers"]:
            as_file = " file path" if entry["kind"] in KIND_FILE_FIELDS else ""
            for var, field in consumer["env"].items():
                per_service.setdefault(consumer["service"], {})[var] = f"{name}.{field} ({entry['kind']}{as_file}; {', '.join(entry['environments'])})"
    for service in sorted(per_service):
        lines.append("")
        lines.append(f"# --- {service}.env ---")
        for var in sorted(per_service[service]):
            lines.append(f"# {per_service[service][var]}")
            lines.append(f"{var}=")
    return "\n".join(lines) + "\n"
