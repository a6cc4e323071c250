"""The catalog schema: the sample validates, every error is one line naming the entry and field, and what derives from it."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ansible_collections.keywarden.secrets.plugins.plugin_utils import catalog as catalog_module
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import (
    CatalogError,
    env_plan,
    env_template,
    load_catalog,
    login_names,
    validate_catalog,
)

REPO = Path(__file__).resolve().parents[4]
SAMPLE = REPO / "config" / "secrets" / "catalog.yml"
DB_VARS = ["DB_NAME", "DB_PASSWORD", "DB_USER"]


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(SAMPLE.read_text())


@pytest.fixture(scope="module")
def catalog() -> dict[str, Any]:
    return load_catalog(str(SAMPLE))


def test_sample_catalog_validates(catalog: dict[str, Any]) -> None:
    assert catalog["keywarden_catalog_version"] == 1
    assert sorted(catalog["secrets"]) == ["app_db", "app_redis", "payments_api_key"]
    app_db = catalog["secrets"]["app_db"]
    assert app_db["kind"] == "postgresql"
    assert app_db["target"] == {"group": "db", "database": "orders", "role": "app"}
    assert app_db["policy"] == {"max_age_days": 30, "length": 32, "charset": "alnum", "strategy": "alternating_users"}
    for entry in catalog["secrets"].values():
        assert entry["environments"] == ["local", "development", "production"]


def test_policy_defaults_are_filled_in(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    del data["secrets"]["app_redis"]["policy"]
    policy = validate_catalog(data)["secrets"]["app_redis"]["policy"]
    assert policy == {"max_age_days": 90, "length": 32, "charset": "alnum", "strategy": "dual_password"}


@pytest.mark.parametrize(
    ("name", "strategy"),
    [("app_db", "alternating_users"), ("app_redis", "dual_password"), ("payments_api_key", "overlap")],
)
def test_default_strategy_per_kind(raw: dict[str, Any], name: str, strategy: str) -> None:
    data = copy.deepcopy(raw)
    del data["secrets"][name]["policy"]["strategy"]
    assert validate_catalog(data)["secrets"][name]["policy"]["strategy"] == strategy


def test_login_names_follow_the_strategy(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    assert login_names(validate_catalog(data)["secrets"]["app_db"]) == ("app_a", "app_b")
    data["secrets"]["app_db"]["policy"]["strategy"] = "single_user"
    assert login_names(validate_catalog(data)["secrets"]["app_db"]) == ("app",)


_DELETE = object()


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation: set (or with value _DELETE, remove) the dotted path; list indexes as numbers."""

    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[int(last) if isinstance(node, list) else last] = value

    return mutate


_GENERIC = {"kind": "generic", "environments": ["production"], "consumers": [{"group": "app", "service": "app", "env": {"SESSION_KEY": "value"}}]}


def _duplicate_variable(data: dict[str, Any]) -> None:
    data["secrets"]["other_db"] = {
        "kind": "postgresql",
        "environments": ["production"],
        "target": {"group": "db", "database": "reports", "role": "reports"},
        "consumers": [{"group": "app", "service": "app", "env": {"DB_PASSWORD": "password"}}],
    }


# (id, mutation of the sample, fragments the one-line message must hold: the entry and the field)
SCHEMA_ERRORS = [
    ("unknown-kind", _set("secrets.app_db.kind", "oracle"), ["secrets.app_db.kind", "'oracle'"]),
    # a kind change keeps the old target block: refused naming the field and what tls_cert takes
    (
        "tls-cert-takes-its-own-target",
        _set("secrets.app_db.kind", "tls_cert"),
        ["secrets.app_db.target.database", "allowed for kind tls_cert: ca, common_name, dns_names, ip_addresses"],
    ),
    ("missing-consumers", _set("secrets.app_redis.consumers", _DELETE), ["secrets.app_redis.consumers", "at least one consumer"]),
    ("empty-consumers", _set("secrets.app_redis.consumers", []), ["secrets.app_redis.consumers", "at least one consumer"]),
    (
        "bad-env-var-name",
        _set("secrets.app_redis.consumers.0.env", {"redis_password": "password"}),
        ["secrets.app_redis.consumers[0].env.redis_password", "upper case"],
    ),
    (
        "field-not-valid-for-kind",
        _set("secrets.payments_api_key.consumers.0.env", {"PAYMENTS_API_KEY": "password"}),
        ["secrets.payments_api_key.consumers[0].env.PAYMENTS_API_KEY", "'password'", "api_key"],
    ),
    ("unknown-policy-key", _set("secrets.app_db.policy.rotate_every", 7), ["secrets.app_db.policy.rotate_every", "unknown field"]),
    ("length-too-short", _set("secrets.app_db.policy.length", 8), ["secrets.app_db.policy.length", "16 to 1024"]),
    ("length-too-long", _set("secrets.app_db.policy.length", 4096), ["secrets.app_db.policy.length", "16 to 1024"]),
    ("length-not-a-number", _set("secrets.app_db.policy.length", True), ["secrets.app_db.policy.length"]),
    ("bad-charset", _set("secrets.app_db.policy.charset", "emoji"), ["secrets.app_db.policy.charset", "'emoji'"]),
    ("bad-strategy", _set("secrets.app_db.policy.strategy", "yolo"), ["secrets.app_db.policy.strategy", "'yolo'"]),
    ("strategy-not-for-kind", _set("secrets.app_db.policy.strategy", "overlap"), ["secrets.app_db.policy.strategy", "'overlap'", "for kind postgresql"]),
    ("missing-target-role-postgresql", _set("secrets.app_db.target.role", _DELETE), ["secrets.app_db.target.role", "postgresql"]),
    ("missing-target-database-postgresql", _set("secrets.app_db.target.database", _DELETE), ["secrets.app_db.target.database", "postgresql"]),
    ("consumer-without-group", _set("secrets.app_db.consumers.1.group", _DELETE), ["secrets.app_db.consumers[1].group"]),
    ("unknown-consumer-key", _set("secrets.app_db.consumers.0.restart", "yes"), ["secrets.app_db.consumers[0].restart", "unknown field"]),
    ("unknown-entry-key", _set("secrets.app_db.owner", "ops"), ["secrets.app_db.owner", "unknown field"]),
    ("bad-environments", _set("secrets.app_db.environments", []), ["secrets.app_db.environments"]),
    ("entry-not-a-mapping", _set("secrets.app_db", "postgresql"), ["secrets.app_db", "mapping"]),
    ("bad-secret-name", _set("secrets.App-DB", {"kind": "generic"}), ["secrets.App-DB", "lower case"]),
    ("duplicate-variable-for-one-service", _duplicate_variable, ["secrets.other_db.consumers[0].env.DB_PASSWORD", "app_db", "service app"]),
    ("wrong-catalog-version", _set("keywarden_catalog_version", 2), ["keywarden_catalog_version must be 1"]),
    ("missing-catalog-version", _set("keywarden_catalog_version", _DELETE), ["keywarden_catalog_version must be 1"]),
    ("no-secrets", _set("secrets", {}), ["secrets must be a mapping"]),
    ("unknown-top-level-key", _set("defaults", {}), ["unknown top-level field 'defaults'"]),
    # issue 10 item 7: unknown keys under target: are refused, naming the key and the fields the kind allows
    (
        "unknown-target-key",
        _set("secrets.app_db.target.port", 5432),
        ["secrets.app_db.target.port", "unknown field", "allowed for kind postgresql: group, role, database"],
    ),
    ("misspelt-target-key", _set("secrets.app_redis.target.grup", "cache"), ["secrets.app_redis.target.grup", "allowed for kind redis: group"]),
    (
        "target-on-a-kind-without-one",
        _set("secrets.session_key", {**_GENERIC, "target": {"group": "app"}}),
        ["secrets.session_key.target.group", "kind generic takes no target fields"],
    ),
]


@pytest.mark.parametrize(("mutate", "fragments"), [pytest.param(m, f, id=i) for i, m, f in SCHEMA_ERRORS])
def test_schema_error_is_one_line_naming_entry_and_field(tmp_path: Path, raw: dict[str, Any], mutate: Callable[..., None], fragments: list[str]) -> None:
    data = copy.deepcopy(raw)
    mutate(data)
    path = tmp_path / "catalog.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(CatalogError) as caught:
        load_catalog(str(path))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"catalog {path}: ")
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        pytest.param("- just\n- a list\n", ["must be a YAML mapping"], id="not-a-mapping"),
        pytest.param("", ["must be a YAML mapping"], id="empty-file"),
        pytest.param("keywarden_catalog_version: 1\nsecrets:\n  app_db:\n    kind: [postgresql\n", ["is not valid YAML", "line "], id="invalid-yaml-flow"),
        pytest.param(
            "keywarden_catalog_version: 1\nsecrets:\n  app_db:\n  kind: x\n   bad: indent\n", ["is not valid YAML", "line 5"], id="invalid-yaml-indent"
        ),
    ],
)
def test_unparsable_catalog_is_one_line(tmp_path: Path, text: str, fragments: list[str]) -> None:
    path = tmp_path / "catalog.yml"
    path.write_text(text)
    with pytest.raises(CatalogError) as caught:
        load_catalog(str(path))
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_missing_catalog_file_says_which_setting_to_fix(tmp_path: Path) -> None:
    with pytest.raises(CatalogError) as caught:
        load_catalog(str(tmp_path / "nope.yml"))
    message = str(caught.value)
    assert "\n" not in message
    assert "keywarden_catalog_path" in message


def _var_names(service: dict[str, Any]) -> list[str]:
    return [item["name"] for item in service["vars"]]


def test_env_plan_worker_gets_only_the_database_variables(catalog: dict[str, Any]) -> None:
    plan = env_plan(catalog, "production", ["worker"])
    assert [s["service"] for s in plan] == ["worker"]
    worker = plan[0]
    assert _var_names(worker) == DB_VARS
    assert worker["compose_service"] == "worker"
    by_name = {item["name"]: item for item in worker["vars"]}
    assert by_name["DB_PASSWORD"] == {"name": "DB_PASSWORD", "secret": "app_db", "field": "password"}
    assert by_name["DB_USER"] == {"name": "DB_USER", "secret": "app_db", "field": "username"}
    # the database name is not secret: a literal from the catalog's target block
    assert by_name["DB_NAME"] == {"name": "DB_NAME", "literal": "orders"}


def test_env_plan_app_gets_its_five_variables(catalog: dict[str, Any]) -> None:
    plan = env_plan(catalog, "development", ["app"])
    assert [s["service"] for s in plan] == ["app"]
    assert _var_names(plan[0]) == ["DB_NAME", "DB_PASSWORD", "DB_USER", "PAYMENTS_API_KEY", "REDIS_PASSWORD"]


@pytest.mark.parametrize("groups", [[], ["db"], ["cache"], ["db", "cache", "monitoring"]], ids=["no-groups", "db", "cache", "targets-only"])
def test_env_plan_host_in_no_consumer_group_gets_nothing(catalog: dict[str, Any], groups: list[str]) -> None:
    assert env_plan(catalog, "production", groups) == []


def test_env_plan_only_secrets_of_the_environment(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["secrets"]["payments_api_key"]["environments"] = ["production"]
    catalog = validate_catalog(data)
    assert "PAYMENTS_API_KEY" not in _var_names(env_plan(catalog, "development", ["app"])[0])
    assert "PAYMENTS_API_KEY" in _var_names(env_plan(catalog, "production", ["app"])[0])
    assert env_plan(catalog, "staging", ["app", "worker"]) == []


def test_env_plan_every_service_of_a_host_in_every_group(catalog: dict[str, Any]) -> None:
    plan = env_plan(catalog, "local", ["db", "cache", "app", "worker"])
    assert [(s["service"], _var_names(s)) for s in plan] == [
        ("app", ["DB_NAME", "DB_PASSWORD", "DB_USER", "PAYMENTS_API_KEY", "REDIS_PASSWORD"]),
        ("worker", DB_VARS),
    ]


def _reordered(raw: dict[str, Any]) -> dict[str, Any]:
    """The same catalog with every mapping and consumer list in reverse order."""
    data = copy.deepcopy(raw)
    secrets_out = {}
    for name in reversed(list(data["secrets"])):
        entry = data["secrets"][name]
        entry["consumers"] = [{**c, "env": dict(reversed(list(c["env"].items())))} for c in reversed(entry["consumers"])]
        secrets_out[name] = dict(reversed(list(entry.items())))
    return {"secrets": secrets_out, "keywarden_catalog_version": data["keywarden_catalog_version"]}


def test_env_template_is_deterministic(raw: dict[str, Any]) -> None:
    first = env_template(validate_catalog(copy.deepcopy(raw)))
    again = env_template(validate_catalog(copy.deepcopy(raw)))
    reordered = env_template(validate_catalog(_reordered(raw)))
    assert first == again
    assert first == reordered
    assert first.endswith("\n")


def test_env_template_lists_names_without_values(catalog: dict[str, Any]) -> None:
    text = env_template(catalog)
    assignments = [line for line in text.splitlines() if line and not line.startswith("#")]
    # every variable is assigned nothing: the template holds names, never values
    assert all(line.endswith("=") for line in assignments)
    assert "# --- app.env ---" in text
    assert "# --- worker.env ---" in text
    app = text.split("# --- app.env ---")[1].split("# --- worker.env ---")[0]
    worker = text.split("# --- worker.env ---")[1]
    assert [line[:-1] for line in app.splitlines() if line.endswith("=")] == ["DB_NAME", "DB_PASSWORD", "DB_USER", "PAYMENTS_API_KEY", "REDIS_PASSWORD"]
    assert [line[:-1] for line in worker.splitlines() if line.endswith("=")] == DB_VARS
    assert "# app_db.password (postgresql; local, development, production)" in app


# ---- target fields per kind: one table (KIND_TARGET_SCHEMA) -------------------------------------------------------
_ENTRY_OF_KIND = {
    "postgresql": "app_db",
    "redis": "app_redis",
    "api_key": "payments_api_key",
}
# a target field that holds a mapping: every field given, so that the normalised copy (defaults filled in) is the same
_TARGET_VALUE = {"provider": {"type": "nginx", "header": "X-API-Key", "scheme": "", "test_path": "/"}}


# target fields whose value is not a plain name
_TARGET_VALUES: dict[str, Any] = {
    "tags": ["management"],
    "permissions": {"configure": "", "write": "^orders$", "read": ".*"},
    "acl": "~cache:* +@read",
    **_TARGET_VALUE,
}


@pytest.mark.parametrize("kind", sorted(_ENTRY_OF_KIND))
def test_every_target_field_of_the_table_is_accepted_and_no_other(raw: dict[str, Any], kind: str) -> None:
    name = _ENTRY_OF_KIND[kind]
    data = copy.deepcopy(raw)
    target = {field: _TARGET_VALUES.get(field, "db") for field in catalog_module.KIND_TARGET_SCHEMA[kind]}
    if "admin" in target:  # an entry of the same kind and group that manages itself
        admin = {**copy.deepcopy(data["secrets"][name]), "target": {k: v for k, v in target.items() if k != "admin"}}
        admin["consumers"] = [{"group": "cache", "service": "admin", "env": {"ADMIN_PASSWORD": "password"}}]
        data["secrets"]["other_admin"] = admin
        target["admin"] = "other_admin"
    data["secrets"][name]["target"] = copy.deepcopy(target)
    assert validate_catalog(data)["secrets"][name]["target"] == target
    data["secrets"][name]["target"]["extra"] = "x"
    with pytest.raises(CatalogError, match=rf"secrets\.{name}\.target\.extra: unknown field"):
        validate_catalog(data)


# ---- duplicate keys (issue 10 item 10) ----------------------------------------------------------------------------
def _lines(text: str, *needles: str) -> list[int]:
    """Line numbers (from 1) of the lines holding each needle, in order of appearance."""
    return [number for number, line in enumerate(text.splitlines(), start=1) if any(n in line for n in needles)]


def test_a_secret_given_twice_is_an_error_naming_the_key_and_both_lines(tmp_path: Path) -> None:
    text = SAMPLE.read_text()
    first, _, rest = text.partition("  app_redis:")
    # a second app_db entry after the first one (the last would silently win without the check)
    app_db = "  app_db:" + first.split("  app_db:", 1)[1]
    doubled = first + app_db + "  app_redis:" + rest
    path = tmp_path / "catalog.yml"
    path.write_text(doubled)
    lines = _lines(doubled, "  app_db:")
    assert len(lines) == 2
    with pytest.raises(CatalogError) as caught:
        load_catalog(str(path))
    message = str(caught.value)
    assert "\n" not in message
    assert message == f"catalog {path}: line {lines[1]}: duplicate key 'app_db' (first at line {lines[0]}); keep one of them"


@pytest.mark.parametrize(
    ("text", "key", "first", "second"),
    [
        pytest.param("keywarden_catalog_version: 1\nsecrets:\n  a:\n    kind: generic\n    kind: api_key\n", "kind", 4, 5, id="field-of-an-entry"),
        pytest.param("keywarden_catalog_version: 1\nkeywarden_catalog_version: 1\nsecrets: {}\n", "keywarden_catalog_version", 1, 2, id="top-level"),
        pytest.param("secrets:\n  a:\n    consumers:\n      - env: {DB_USER: username, DB_USER: password}\n", "DB_USER", 4, 4, id="flow-mapping"),
    ],
)
def test_a_key_given_twice_anywhere_is_an_error(tmp_path: Path, text: str, key: str, first: int, second: int) -> None:
    path = tmp_path / "catalog.yml"
    path.write_text(text)
    with pytest.raises(CatalogError) as caught:
        load_catalog(str(path))
    assert str(caught.value) == f"catalog {path}: line {second}: duplicate key '{key}' (first at line {first}); keep one of them"


def test_merge_keys_still_override_without_an_error(tmp_path: Path) -> None:
    text = SAMPLE.read_text().replace(
        "    policy:\n      max_age_days: 30\n      length: 32\n      charset: alnum\n      strategy: alternating_users\n",
        "    policy:\n      <<: &db_policy {max_age_days: 30, length: 32, charset: alnum, strategy: single_user}\n      strategy: alternating_users\n",
    )
    assert "<<: &db_policy" in text
    path = tmp_path / "catalog.yml"
    path.write_text(text)
    assert load_catalog(str(path))["secrets"]["app_db"]["policy"]["strategy"] == "alternating_users"


# ---- groups that match no host (issue 10 item 7) --------------------------------------------------------------------
def test_groups_matching_no_host_are_named_with_their_secret(catalog: dict[str, Any]) -> None:
    groups = {"all": ["h1"], "db": ["h1"], "app": ["h1"], "worker": [], "ungrouped": []}  # no cache group, an empty worker group
    assert catalog_module.unmatched_groups(catalog, "production", groups) == [
        "secrets.app_db.consumers[1].group: group 'worker' matches no host in the inventory: no host receives app_db for service worker",
        "secrets.app_redis.target.group: group 'cache' matches no host in the inventory: nothing provisions or rotates app_redis at its target",
        "secrets.payments_api_key.target.group: group 'api' matches no host in the inventory: nothing provisions or rotates payments_api_key at its target",
    ]
    assert catalog_module.unmatched_groups(catalog, "production", {"db": ["h"], "cache": ["h"], "api": ["h"], "app": ["h"], "worker": ["h"]}) == []
    assert catalog_module.unmatched_groups(catalog, "staging", {}) == []  # no entry of the catalog is in that environment


# ---- onboarding examples (Redis, RabbitMQ): the commented entries of the sample catalog and the docs' blocks ---------
def _example_catalogs() -> dict[str, dict[str, Any]]:
    """The commented examples of the sample catalog, and the YAML blocks of rotation.md, each as one catalog."""
    text = SAMPLE.read_text().split("# ---- onboarding examples", 1)[1]
    lines = [line[1:] for line in text.splitlines()[1:] if line.startswith("#  ")]
    doc = (REPO / "docs" / "security" / "secrets" / "rotation.md").read_text()
    blocks: dict[str, Any] = {}
    for block in re.findall(r"```yaml\n(.*?)```", doc, re.DOTALL):
        blocks.update(yaml.safe_load(block))
    return {"catalog.yml": yaml.safe_load("\n".join(lines)), "rotation.md": blocks}


@pytest.mark.parametrize("source", ["catalog.yml", "rotation.md"])
def test_the_onboarding_examples_pass_the_schema(source: str) -> None:
    examples = _example_catalogs()[source]
    validated_all = validate_catalog({"keywarden_catalog_version": 1, "secrets": examples})["secrets"]
    # the Redis and RabbitMQ examples (rotation.md shows other kinds' examples too, validated above)
    validated = {name: entry for name, entry in validated_all.items() if entry["kind"] in ("rabbitmq", "redis")}
    assert sorted({entry["kind"] for entry in validated.values()}) == ["rabbitmq", "redis"] and len(validated) == 4
    broker = next(entry for entry in validated.values() if entry["target"].get("permissions"))
    assert broker["target"]["permissions"]["configure"] == "^orders\\."
    assert sum(1 for entry in validated.values() if entry["target"].get("admin")) == 2
