"""Kind api_key in the catalog: the provider block (nginx, http, manual) and policy.overlap_hours are checked, every
error one line naming the entry and the field; defaults are filled in; the driver's controller-side answers follow."""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from ansible_collections.keywarden.secrets.plugins.plugin_utils import rotation
from ansible_collections.keywarden.secrets.plugins.plugin_utils.api_key_providers import key_of
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import CHARSETS, CatalogError, validate_catalog
from ansible_collections.keywarden.secrets.plugins.plugin_utils.drivers import driver_for
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import generate_fields, new_entry

_APP = [{"group": "app", "service": "app", "env": {"KEY": "value"}}]
BASE: dict[str, Any] = {
    "keywarden_catalog_version": 1,
    "secrets": {
        "internal": {
            "kind": "api_key",
            "environments": ["dev", "prod"],
            "target": {"group": "api", "provider": {"type": "nginx"}},
            "consumers": _APP,
        },
        "partner": {
            "kind": "api_key",
            "environments": ["prod"],
            "target": {
                "group": "issuer_client",
                "provider": {
                    "type": "http",
                    "base_url": "https://issuer.example.invalid/v1/",
                    "admin_token": "partner_admin",
                    "create": {"path": "/keys"},
                    "revoke": {"path": "/keys/{key_id}"},
                    "test_path": "/whoami",
                },
            },
            "policy": {"max_age_days": 30, "overlap_hours": 48},
            "consumers": [{"group": "app", "service": "app", "env": {"PARTNER_KEY": "value", "PARTNER_KEY_ID": "key_id"}}],
        },
        "partner_admin": {
            "kind": "api_key",
            "environments": ["dev", "prod"],
            "target": {"provider": {"type": "manual", "steps": "ask the partner's operators"}},
            "consumers": [],
        },
        "legacy": {
            "kind": "api_key",
            "environments": ["prod"],
            "target": {"provider": {"type": "manual", "steps": "Console -> Settings -> Keys -> Roll"}},
            "consumers": [{"group": "app", "service": "app", "env": {"LEGACY_KEY": "value"}}],
        },
    },
}


def _valid() -> dict[str, Any]:
    return validate_catalog(copy.deepcopy(BASE))["secrets"]


def test_defaults_are_filled_in() -> None:
    secrets = _valid()
    assert secrets["internal"]["target"]["provider"] == {"type": "nginx", "header": "X-API-Key", "scheme": "", "test_path": "/"}
    assert secrets["internal"]["policy"] == {"max_age_days": 90, "length": 32, "charset": "alnum", "strategy": "overlap", "overlap_hours": 24}
    partner = secrets["partner"]["target"]["provider"]
    assert partner["base_url"] == "https://issuer.example.invalid/v1"  # one slash between it and the paths
    assert partner["create"] == {"method": "POST", "path": "/keys", "body": {"id": "{key_id}", "key": "{key}", "name": "{name}"}}
    assert partner["revoke"] == {"method": "DELETE", "path": "/keys/{key_id}", "body": None}
    assert (partner["admin_header"], partner["admin_scheme"], partner["header"]) == ("Authorization", "Bearer", "X-API-Key")
    assert secrets["partner_admin"]["consumers"] == []


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data["secrets"]
        for key in parents:
            node = node[key]
        if value is None:
            del node[last]
        else:
            node[last] = value

    return mutate


# (id, mutation, the field the one-line message names, a fragment of what it says)
ERRORS = [
    ("no-provider", _set("internal.target.provider", None), "internal.target.provider", "is required for kind api_key"),
    ("provider-not-a-mapping", _set("internal.target.provider", "nginx"), "internal.target.provider", "type nginx, http, manual"),
    ("unknown-type", _set("internal.target.provider.type", "vault"), "internal.target.provider.type", "'vault' is not one of nginx, http, manual"),
    ("field-of-another-type", _set("internal.target.provider.base_url", "https://x"), "internal.target.provider.base_url", "allowed for provider nginx"),
    ("nginx-without-group", _set("internal.target.group", None), "internal.target.group", "is required for provider nginx"),
    ("manual-with-group", _set("legacy.target.group", "app"), "legacy.target.group", "provider manual has no target hosts"),
    ("manual-without-steps", _set("legacy.target.provider.steps", None), "legacy.target.provider.steps", "is required for provider manual"),
    ("bad-header", _set("internal.target.provider.header", "X API Key"), "internal.target.provider.header", "HTTP header name"),
    ("bad-scheme", _set("internal.target.provider.scheme", "Bearer token"), "internal.target.provider.scheme", "one word"),
    ("relative-test-path", _set("internal.target.provider.test_path", "health"), "internal.target.provider.test_path", "starting with /"),
    ("bad-base-url", _set("partner.target.provider.base_url", "ftp://issuer"), "partner.target.provider.base_url", "http:// or https://"),
    ("key-in-a-path", _set("partner.target.provider.revoke", {"path": "/keys/{key}"}), "partner.target.provider.revoke.path", "{key} may not appear here"),
    ("unknown-placeholder", _set("partner.target.provider.create", {"path": "/k/{label}"}), "partner.target.provider.create.path", "placeholder {label}"),
    ("unbalanced-brace", _set("partner.target.provider.create", {"path": "/keys/{key_id"}), "partner.target.provider.create.path", "unbalanced"),
    ("create-without-path", _set("partner.target.provider.create", {"method": "POST"}), "partner.target.provider.create.path", "is required"),
    ("bad-method", _set("partner.target.provider.create", {"path": "/keys", "method": "FETCH"}), "partner.target.provider.create.method", "'FETCH'"),
    ("unknown-call-field", _set("partner.target.provider.revoke", {"path": "/k", "url": "/x"}), "partner.target.provider.revoke.url", "unknown field"),
    ("body-not-a-mapping", _set("partner.target.provider.create", {"path": "/keys", "body": "key={key}"}), "partner.target.provider.create.body", "mapping"),
    (
        "body-placeholder",
        _set("partner.target.provider.create", {"path": "/keys", "body": {"k": "{secret}"}}),
        "partner.target.provider.create.body.k",
        "unknown placeholder {secret}",
    ),
    ("token-not-in-catalog", _set("partner.target.provider.admin_token", "nobody"), "partner.target.provider.admin_token", "'nobody' is not another entry"),
    ("token-is-itself", _set("partner.target.provider.admin_token", "partner"), "partner.target.provider.admin_token", "is not another entry"),
    (
        "token-missing-an-environment",
        _set("partner_admin.environments", ["dev"]),
        "partner.target.provider.admin_token",
        "secret 'partner_admin' is not in environment prod",
    ),
    ("no-consumers-not-a-token", _set("legacy.consumers", []), "legacy.consumers", "unless another entry names it as provider.admin_token"),
    ("single-user-at-an-issuer", _set("partner.policy", {"strategy": "single_user"}), "partner.policy.strategy", "single_user needs provider nginx"),
    ("overlap-too-long", _set("partner.policy.overlap_hours", 30 * 24 + 1), "partner.policy.overlap_hours", "at most max_age_days x 24 (720)"),
    ("overlap-negative", _set("partner.policy.overlap_hours", -1), "partner.policy.overlap_hours", "0 to 8760"),
    (
        "overlap-without-overlap",
        _set("internal.policy", {"strategy": "single_user", "overlap_hours": 1}),
        "internal.policy.overlap_hours",
        "only applies to strategy overlap",
    ),
]


@pytest.mark.parametrize(("mutate", "field", "fragment"), [pytest.param(m, f, t, id=i) for i, m, f, t in ERRORS])
def test_each_error_is_one_line_naming_the_field(mutate: Callable[[dict[str, Any]], None], field: str, fragment: str) -> None:
    data = copy.deepcopy(BASE)
    mutate(data)
    with pytest.raises(CatalogError) as caught:
        validate_catalog(data)
    message = str(caught.value)
    assert "\n" not in message
    assert f"secrets.{field}: " in message, message
    assert fragment in message, message


def test_single_user_is_allowed_behind_nginx() -> None:
    data = copy.deepcopy(BASE)
    data["secrets"]["internal"]["policy"] = {"strategy": "single_user"}
    assert validate_catalog(data)["secrets"]["internal"]["policy"]["strategy"] == "single_user"


# ---- the driver's controller-side answers --------------------------------------------------------------------
def test_new_fields_are_a_fresh_key_and_a_fresh_id() -> None:
    entry = _valid()["partner"]
    driver = driver_for("api_key")
    assert driver is not None
    current = generate_fields(entry, CHARSETS)
    assert sorted(current) == ["key_id", "value"] and re.fullmatch(r"kw-\d{8}-[0-9a-f]{8}", current["key_id"])
    pending = driver.new_fields(entry, current)
    assert sorted(pending) == ["key_id", "value"]
    assert pending["key_id"] != current["key_id"] and pending["value"] != current["value"]
    assert len(pending["value"]) == 32 and set(pending["value"]) <= set(CHARSETS["alnum"])


def test_overlap_window_retirement_and_what_the_engine_cannot_rotate() -> None:
    secrets = _valid()
    driver = driver_for("api_key")
    assert driver is not None
    assert driver.retire_after(secrets["partner"]) == 48 * 3600
    assert driver.retire_after(secrets["internal"]) == 24 * 3600
    single = copy.deepcopy(BASE)
    single["secrets"]["internal"]["policy"] = {"strategy": "single_user"}
    assert driver.retire_after(validate_catalog(single)["secrets"]["internal"]) is None
    assert driver.holds(secrets["internal"]) and driver.holds(secrets["partner"])
    assert driver.rotatable(secrets["internal"]) is None and driver.rotatable(secrets["partner"]) is None
    why = driver.rotatable(secrets["legacy"])
    assert why is not None and "provider manual" in why and "Console -> Settings -> Keys -> Roll" in why and "playbooks/record.yml" in why


def test_a_due_manual_key_is_blocked_with_its_steps_and_the_others_rotate() -> None:
    secrets = {name: entry for name, entry in _valid().items() if "prod" in entry["environments"]}
    data = {"environment": "prod", "secrets": {name: new_entry("api_key", generate_fields(entry, CHARSETS)) for name, entry in secrets.items()}}
    driver = driver_for("api_key")
    assert driver is not None
    rotations, blocked = rotation.plan(secrets, data, [], driver.rotatable, now=time.time() + 91 * 86400)
    assert [item["name"] for item in rotations] == ["internal", "partner"]
    assert sorted(item["name"] for item in blocked) == ["legacy", "partner_admin"]
    assert all("provider manual" in item["why"] for item in blocked)


def test_a_key_without_an_id_gets_a_stable_one() -> None:
    old = key_of({"value": "a" * 40})
    assert old is not None and old.key_id.startswith("kw-legacy-") and old == key_of({"value": "a" * 40})
    assert key_of({"value": "b" * 40}) != old
    assert key_of({}) is None
    assert "a" * 40 not in repr(old)
