"""The scanner engine: what is a credential, what is not, and that no output carries a value.

Every credential here is generated at run time (``secrets.token_*``), so this file holds none: the
repository's self-scan stays clean. Assertions compare rules, lines and hashes, never values.
"""

from __future__ import annotations

import base64
import json
import secrets
import string
from pathlib import Path

import pytest

from ansible_collections.keywarden.secrets.plugins.module_utils import scanner


def _pw(n: int = 20) -> str:
    alphabet = string.ascii_letters + string.digits
    return secrets.choice(string.ascii_letters) + "".join(secrets.choice(alphabet) for _ in range(n - 1))


def _rules(text: str, path: str) -> list[tuple[int, str]]:
    return [(f.line, f.rule) for f in scanner.scan_text(text, path)]


def _no_value_in(findings: list[scanner.Finding], value: str) -> None:
    leaked = value in json.dumps([f.as_dict() for f in findings]) + json.dumps(scanner.sarif(findings))
    # compare by presence only, as a bare bool: pytest would print both sides of `value not in blob`
    assert not leaked, "a finding carries the value"


@pytest.mark.parametrize(
    ("path", "template", "rule"),
    [
        ("group_vars/all.yml", "app_db_password: {v}\n", "hardcoded-password"),
        ("roles/app/defaults/main.yml", 'smtp_pass: "{v}"\n', "hardcoded-password"),
        ("inventories/prod/hosts", "web1 ansible_host=10.0.0.2 ansible_password={v}\n", "hardcoded-password"),
        ("roles/db/tasks/main.yml", "- community.postgresql.postgresql_user:\n    name: app\n    login_password: {v}\n", "hardcoded-password"),
        ("docker-compose.yml", "services:\n  db:\n    environment:\n      - POSTGRES_PASSWORD={v}\n", "hardcoded-password"),
        (".env", "JWT_SECRET={v}\n", "hardcoded-secret"),
        ("app.ini", "[db]\npassword = {v}\n", "hardcoded-password"),
        ("application.properties", "spring.datasource.password={v}\n", "hardcoded-password"),
        ("config.json", '{{"apiKey": "{v}"}}\n', "hardcoded-key"),
        ("app.toml", 'api_token = "{v}"\n', "hardcoded-token"),
        ("Dockerfile", "FROM x\nENV ADMIN_PASSWORD {v}\n", "hardcoded-password"),
        ("run.sh", "#!/bin/sh\nmysqldump --password={v} db\n", "hardcoded-password"),
        ("app.py", 'conn = connect(user="app", password="{v}")\n', "hardcoded-password"),
        ("a.yml", "dsn: postgresql://app:{v}@db:5432/orders\n", "url-password"),
    ],
)
def test_literal_credentials_are_found(path: str, template: str, rule: str) -> None:
    value = _pw()
    text = template.format(v=value)
    found = scanner.scan_text(text, path)
    assert [f.rule for f in found] == [rule]
    assert found[0].line == text[: text.index(value)].count("\n") + 1
    _no_value_in(found, value)


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("group_vars/all.yml", 'db_password: "{{ vault_db_password }}"\n'),
        ("group_vars/all.yml", "db_password: \"{{ lookup('keywarden.secrets.secret', 'app_db.password') }}\"\n"),
        ("group_vars/all.yml", "db_password: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  3961626566\n"),
        ("secrets.yml", "$ANSIBLE_VAULT;1.2;AES256;production\n6162636465666768\n"),
        ("group_vars/all.yml", "db_password: ENC[AES256_GCM,data:QUJDRA==,iv:QUJDRA==,tag:QUJDRA==,type:str]\n"),
        ("group_vars/all.yml", "password_min_length: 24\nmin_password_length: 24\npassword_max_age_days: 90\n"),
        ("group_vars/all.yml", "db_password: ''\napi_token:\n"),
        ("group_vars/all.yml", "db_password_file: /run/secrets/db\n"),
        ("roles/x/tasks/main.yml", "- ansible.builtin.debug:\n  when: db_password is defined and db_password | length > 0\n"),
        ("docker-compose.yml", "    environment:\n      - DB_PASSWORD=${DB_PASSWORD:?set it}\n      REDIS_PASSWORD: ${REDIS_PASSWORD}\n"),
        (".env", "DB_PASSWORD=\nAPI_KEY=${API_KEY}\n"),
        ("app.py", 'password = os.environ["DB_PASSWORD"]\ntoken = os.getenv("API_TOKEN")\nPASSWORD_FIELD = "password"\n'),
        ("app.py", 'password = request.form["password"]\nif password != confirm_password:\n    pass\n'),
        ("config.json", '{"passwordField": "password", "passwordMinLength": 12}\n'),
        ("app.ini", "admin_password = %(ADMIN_PASSWORD)s\npassword_encryption = scram-sha-256\n"),
        ("a.yml", 'url: "postgresql://app:{{ pw }}@db/orders"\nother: postgresql://app:${PW}@db/orders\n'),
        ("README.md", "The store is encrypted under the generated password: never commit it.\n"),
        ("catalog.yml", "env: {DB_USER: username, DB_PASSWORD: password, API_KEY: value}\n"),
    ],
)
def test_references_policies_and_names_are_not_credentials(path: str, text: str) -> None:
    assert _rules(text, path) == []


def test_token_formats() -> None:
    alnum = string.ascii_letters + string.digits
    tokens = {
        "github-token": "ghp_" + "".join(secrets.choice(alnum) for _ in range(36)),
        "aws-access-key-id": "AKIA" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16)),
        "stripe-key": "sk_" + "live_" + "".join(secrets.choice(alnum) for _ in range(28)),
        "npm-token": "npm_" + "".join(secrets.choice(alnum) for _ in range(36)),
        "gitlab-token": "glpat-" + "".join(secrets.choice(alnum) for _ in range(20)),
    }
    for rule, token in tokens.items():
        found = scanner.scan_text(f"build_ref: {token}\n", "ci.yml")
        assert [f.rule for f in found] == [rule]
        assert found[0].excerpt.endswith(token[:4] + "********")
        _no_value_in(found, token)
    # a longer word holding a token-shaped substring is not one
    assert _rules("x: prefixAKIA" + "A" * 16 + "\n", "a.yml") == []


def test_private_key_and_jwt() -> None:
    body = base64.b64encode(secrets.token_bytes(48)).decode()
    pem = f"key: |\n  -----BEGIN RSA PRIVATE KEY-----\n  {body}\n  -----END RSA PRIVATE KEY-----\n"  # keywarden: allow (generated body)
    assert _rules(pem, "k.yml") == [(2, "private-key")]
    assert _rules(f"cert: |\n  -----BEGIN CERTIFICATE-----\n  {body}\n", "k.yml") == []
    head = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=")
    claims = base64.urlsafe_b64encode(b'{"sub":"x1234567"}').decode().rstrip("=")
    assert _rules(f"t: {head}.{claims}.{secrets.token_urlsafe(32)}\n", "a.yml") == [(1, "jwt")]


def test_every_value_on_a_line_is_masked_in_every_excerpt() -> None:
    one, two = _pw(), _pw()
    found = scanner.scan_text(f"db1 ansible_password={one} ansible_become_pass={two}\n", "inventories/x/hosts")
    assert len(found) == 2
    _no_value_in(found, one)
    _no_value_in(found, two)


def test_short_values_show_nothing_of_themselves() -> None:
    value = _pw(10)
    found = scanner.scan_text(f"password: {value}\n", "a.yml")
    assert found[0].excerpt == "password: ********"


def test_allow_comment_and_fingerprint_stability() -> None:
    value = _pw()
    assert _rules(f"password: {value}  # keywarden: allow\n", "a.yml") == []
    first = scanner.scan_text(f"password: {value}\n", "a.yml")[0]
    moved = scanner.scan_text(f"\n\n# moved down\npassword: {value}\n", "a.yml")[0]
    assert first.fingerprint == moved.fingerprint and moved.line == 4
    other = scanner.scan_text(f"password: {_pw()}\n", "a.yml")[0]
    assert other.fingerprint != first.fingerprint


def test_secret_key_classification() -> None:
    secret_keys = (
        "db_password",
        "ansible_become_pass",
        "API_KEY",
        "client_secret",
        "secretKey",
        "jwt_signing_secret",
        "secret_id",
        "PGPASSWORD",
        "login_password",
    )
    for key in secret_keys:
        assert scanner.secret_key(key), key
    for key in ("password_min_length", "password_file", "bypass", "token_type", "api_key_id", "keyserver", "password_hash", "secret_name", "monkey"):
        assert not scanner.secret_key(key), key


def test_block_boundaries_keep_line_numbers(tmp_path: object) -> None:
    path = Path(str(tmp_path)) / "big.env"
    value = _pw()
    filler = "".join(f"LINE_{i}=ordinary value {i}\n" for i in range(5000))
    path.write_text(filler + f"DB_PASSWORD={value}\n" + filler)
    result = scanner.ScanResult()
    scanner.scan_file(str(path), result, block_size=4096)
    assert [(f.line, f.rule) for f in result.findings] == [(5001, "hardcoded-password")]


def test_random_values_are_not_mistaken_for_identifiers() -> None:
    # a random value that starts lower-case and mixes case and digits once passed for a camelCase name
    for _ in range(200):
        value = secrets.choice(string.ascii_lowercase) + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(31))
        assert _rules(f"secret_key={value}\n", "service.conf") == [(1, "hardcoded-key")]
    assert _rules("password: newPassword\nsecret: user_password\n", "a.yml") == []
