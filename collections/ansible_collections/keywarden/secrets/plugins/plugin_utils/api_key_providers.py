# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""API-key providers: who issues the keys of an `api_key` secret, and how keywarden makes them work and stop working.

The provider interface (docs/security/secrets/rotation.md, "API keys"), used by the api_key driver on one target host:

- ``apply(target, changes, probes)``: afterwards the provider accepts every key of each change's ``accept`` (it is
  created where it does not exist yet: "create") and refuses every key of its ``revoke`` ("revoke"); then each probe
  is answered as it expects ("test"). Idempotent: a key created twice is one key, a key revoked twice is gone.
- ``test(target, probes)``: only the probes.
- ``steps(entry)``: None when keywarden rotates this provider's keys; else what a person does instead (``manual``).

Every method answers per secret (``Outcomes``: name -> None, or a one-line reason without a value). The driver
(drivers/api_key.py) decides which keys go where; the providers only carry it out.

keywarden always chooses the key and its id (``new_fields``, before any target is touched): the value is in the store
before an issuer sees it, so a run that dies after a create leaves no key the store does not know, and a rerun sends
the very same key (the issuer answers "exists", the test proves it works).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.keywarden.secrets.plugins.module_utils.api_key import pattern
from ansible_collections.keywarden.secrets.plugins.plugin_utils.drivers.base import Item, Outcomes, Target, module_outcomes
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import StoreError

# statuses that mean success, per call (module keywarden.secrets.api_key_http)
CREATED = [200, 201, 202, 204, 409]  # 409: the issuer has this key id already (a run that died after its create)
REVOKED = [200, 202, 204, 404, 410]  # 404/410: gone already
ACCEPTED = [200, 201, 202, 203, 204]
REFUSED = [401, 403]


@dataclass(frozen=True)
class Key:
    """One API key: its id (not secret) and its value (left out of repr and comparisons)."""

    key_id: str
    value: str = field(repr=False, compare=False)


def key_of(fields: dict[str, str]) -> Key | None:
    """The key a stage of the store holds, or None. A store written before keys had ids gets a stable one derived from
    the value (48 bits of its SHA-256: nothing to learn from about a random key of 96 bits or more)."""
    value = fields.get("value")
    if not value:
        return None
    return Key(fields.get("key_id") or f"kw-legacy-{hashlib.sha256(value.encode()).hexdigest()[:12]}", value)


@dataclass
class Change:
    item: Item
    accept: list[Key]
    revoke: list[Key]


@dataclass
class Probe:
    item: Item
    key: Key
    accepted: bool = True


def provider_of(entry: dict[str, Any]) -> dict[str, Any]:
    return entry["target"]["provider"]


def _names(changes: list[Change], probes: list[Probe]) -> list[Item]:
    items: dict[str, Item] = {}
    for item in [change.item for change in changes] + [probe.item for probe in probes]:
        items.setdefault(item.name, item)
    return list(items.values())


def _settings(target: Target, table: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    args = {option: target.setting(var, default) for option, (var, default) in table.items()}
    return {option: value for option, value in args.items() if value not in (None, "")}


class Provider:
    name = ""

    def apply(self, target: Target, changes: list[Change], probes: list[Probe]) -> Outcomes:
        raise NotImplementedError

    def test(self, target: Target, probes: list[Probe]) -> Outcomes:
        return self.apply(target, [], probes)

    def steps(self, entry: dict[str, Any]) -> str | None:
        return None


class NginxProvider(Provider):
    """Internal APIs behind nginx: the keys it accepts are a `map` include file per secret on each target host
    (module keywarden.secrets.api_key_nginx), applied by a graceful reload. Host variables keywarden_target_api_key_nginx_*."""

    name = "nginx"
    module = "keywarden.secrets.api_key_nginx"
    settings = {
        "binary": ("keywarden_target_api_key_nginx_binary", "/usr/sbin/nginx"),
        "conf": ("keywarden_target_api_key_nginx_conf", "/etc/nginx/nginx.conf"),
        "pid_file": ("keywarden_target_api_key_nginx_pid_file", "/run/nginx.pid"),
        "keys_dir": ("keywarden_target_api_key_nginx_keys_dir", "/etc/nginx/keywarden"),
        "reload_timeout": ("keywarden_target_api_key_nginx_reload_timeout", 15),
        "timeout": ("keywarden_target_api_key_timeout", 10),
        "ca_file": ("keywarden_target_api_key_nginx_ca_file", None),
    }

    def apply(self, target: Target, changes: list[Change], probes: list[Probe]) -> Outcomes:
        items = _names(changes, probes)
        if not items:
            return {}
        base = str(target.setting("keywarden_target_api_key_nginx_url", "http://127.0.0.1")).rstrip("/")
        args: dict[str, Any] = {**_settings(target, self.settings), "state": "present" if changes else "tested"}
        args["lists"] = [
            {
                "name": change.item.name,
                "scheme": provider_of(change.item.entry)["scheme"],
                "accept": [{"id": key.key_id, "value": key.value} for key in change.accept],
                "revoke": [{"id": key.key_id, "value": key.value} for key in change.revoke],
            }
            for change in changes
        ]
        args["probes"] = []
        for probe in probes:
            provider = provider_of(probe.item.entry)
            args["probes"].append(
                {
                    "name": probe.item.name,
                    "url": base + provider["test_path"],
                    "header": provider["header"],
                    "value": pattern(provider["scheme"], probe.key.value),
                    "accepted": probe.accepted,
                }
            )
        return module_outcomes(items, target.module(self.module, args))


class HttpProvider(Provider):
    """An issuer's HTTP API (module keywarden.secrets.api_key_http): create and revoke calls described by the catalog,
    authorized by the admin token, another catalog secret read through the engine's audited reads; the test is a GET
    with the key. keywarden chooses the key: the issuer must accept a client-supplied one."""

    name = "http"
    module = "keywarden.secrets.api_key_http"
    settings = {"timeout": ("keywarden_target_api_key_timeout", 10), "ca_file": ("keywarden_target_api_key_http_ca_file", None)}

    @staticmethod
    def _fill(template: Any, key: Key, name: str) -> Any:
        if isinstance(template, str):
            return template.format(key=key.value, key_id=key.key_id, name=name)
        return template

    def _call(self, item: Item, op: str, key: Key, admin: dict[str, str]) -> dict[str, Any]:
        provider = provider_of(item.entry)
        if op in ("test", "refused"):
            header = pattern(provider["scheme"], key.value)
            return {
                "name": item.name,
                "op": op,
                "method": "GET",
                "path": provider["test_path"],
                "headers": {provider["header"]: header},
                "expect": ACCEPTED if op == "test" else REFUSED,
            }
        spec = provider[op]
        call = {
            "name": item.name,
            "op": op,
            "method": spec["method"],
            "path": self._fill(spec["path"], key, item.name),
            "headers": admin,
            "expect": CREATED if op == "create" else REVOKED,
        }
        if spec.get("body") is not None:
            call["body"] = {field: self._fill(value, key, item.name) for field, value in spec["body"].items()}
        return call

    def apply(self, target: Target, changes: list[Change], probes: list[Probe]) -> Outcomes:
        out: Outcomes = {}
        by_url: dict[str, list[dict[str, Any]]] = {}
        items: dict[str, list[Item]] = {}
        for change in changes:
            provider = provider_of(change.item.entry)
            try:
                token = change.item.secret(provider["admin_token"]).get("value")
            except StoreError as exc:
                out[change.item.name] = f"admin token {provider['admin_token']}: {exc}"
                continue
            if not token:
                out[change.item.name] = f"admin token {provider['admin_token']} has no value in the store; record it (playbooks/record.yml)"
                continue
            admin = {provider["admin_header"]: pattern(provider["admin_scheme"], token)}
            calls = by_url.setdefault(provider["base_url"], [])
            calls += [self._call(change.item, "create", key, admin) for key in change.accept]
            calls += [self._call(change.item, "revoke", key, admin) for key in change.revoke]
            items.setdefault(provider["base_url"], []).append(change.item)
        for probe in probes:
            if probe.item.name in out:
                continue
            provider = provider_of(probe.item.entry)
            by_url.setdefault(provider["base_url"], []).append(self._call(probe.item, "test" if probe.accepted else "refused", probe.key, {}))
            items.setdefault(provider["base_url"], []).append(probe.item)
        for base_url, calls in by_url.items():
            args = {**_settings(target, self.settings), "base_url": base_url, "calls": calls}
            unique = list({item.name: item for item in items[base_url]}.values())
            out.update(module_outcomes(unique, target.module(self.module, args)))
        return out


class ManualProvider(Provider):
    """Keys no API can issue: the engine never rotates them (``steps`` blocks the run, naming the key and the steps);
    a person gets the new key and records it (playbooks/record.yml)."""

    name = "manual"

    def apply(self, target: Target, changes: list[Change], probes: list[Probe]) -> Outcomes:
        return {item.name: "provider manual: keywarden cannot reach this key's issuer" for item in _names(changes, probes)}

    def steps(self, entry: dict[str, Any]) -> str | None:
        return (
            f"its issuer has no API keywarden can call (provider manual): {' '.join(provider_of(entry)['steps'].split())}; "
            "then record the new key: ansible-playbook playbooks/record.yml -e keywarden_record_secret=<name> (docs/security/secrets/rotation.md, API keys)"
        )


PROVIDERS: dict[str, Provider] = {provider.name: provider for provider in (NginxProvider(), HttpProvider(), ManualProvider())}
