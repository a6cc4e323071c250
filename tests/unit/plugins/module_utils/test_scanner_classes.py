"""The classes of issue 15, one rule each: lockfiles and name segments, values that read a secret, fallbacks
inside references, passwords in connection URLs, word-like values, credential files and private keys, and
the explanation each finding carries.

Every value is generated at run time; the templates here hold shapes only (`{v}` is where the value goes).
Assertions compare rules, lines and SHA-256 digests of the span a finding points at, never values.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import string

import pytest

from ansible_collections.keywarden.secrets.plugins.module_utils import scanner

ALNUM = string.ascii_letters + string.digits
WORDS = ("orbit", "maple", "copper", "harbor", "violet", "summit", "lantern", "quartz", "meadow", "falcon")


def _pw(n: int = 18) -> str:
    return secrets.choice(string.ascii_letters) + "".join(secrets.choice(ALNUM) for _ in range(n - 1))


def _word() -> str:
    return secrets.choice(WORDS)


def _short() -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(secrets.choice((2, 3))))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _found(text: str, path: str) -> list[scanner.Finding]:
    return scanner.scan_text(text, path)


def _rules(text: str, path: str) -> list[tuple[int, str]]:
    """(line, rule) of every finding: what a failed assertion shows, never a value."""
    return [(f.line, f.rule) for f in scanner.scan_text(text, path)]


def _assert_found(text: str, path: str, value: str, rule_prefix: str) -> scanner.Finding:
    """Exactly one finding, on the value's line, pointing at the value (compared by digest), with no value in its output."""
    found = _found(text, path)
    assert len(found) == 1, f"{path}: {len(found)} findings, expected 1 ({[f.rule for f in found]})"
    finding = found[0]
    assert finding.rule.startswith(rule_prefix), finding.rule
    assert finding.line == text[: text.index(value)].count("\n") + 1
    assert _digest(scanner.value_of(text, finding)) == _digest(value), "the finding points at another span"
    assert finding.excerpt.endswith("*" * 8) and finding.excerpt.count("*") >= 8
    if len(value) >= 6:  # a 2-character value turns up in any hex fingerprint by chance
        leaked = value in json.dumps(finding.as_dict()) + json.dumps(scanner.sarif([finding]))
        assert not leaked, "a finding carries the value"  # a bare bool: a failure must not print the value
    return finding


# ---- lockfiles and name segments ----------------------------------------------------------------------
LOCKFILES = {
    "package-lock.json": '{{\n  "packages": {{\n    "node_modules/fs-minipass": {{\n      "version": "2.1.0",\n      "integrity": "{h}",\n'
    '      "dependencies": {{\n        "minipass": "^3.0.0",\n        "registry-auth-token": "^4.0.0",\n        "@octokit/auth-token": "^2.4.0"\n'
    "      }}\n    }}\n  }}\n}}\n",
    "yarn.lock": '"registry-auth-token@^4.0.0":\n  version "4.2.2"\n  resolved "https://registry.yarnpkg.com/registry-auth-token/-/x.tgz#{x}"\n'
    '  integrity {h}\n  dependencies:\n    secret-handshake "^1.0.0"\n',
    "pnpm-lock.yaml": "packages:\n  /password-prompt@1.1.3:\n    resolution: {{integrity: {h}}}\n    dependencies:\n      minipass: 3.3.6\n",
    "poetry.lock": '[[package]]\nname = "keyring"\nversion = "24.3.0"\n\n[package.dependencies]\nsecretstorage = ">=3.2"\n'
    '[metadata.files]\nkeyring = [\n    {{file = "keyring-24.3.0.tar.gz", hash = "sha256:{x}"}},\n]\n',
    "Cargo.lock": '[[package]]\nname = "secrecy"\nversion = "0.8.0"\nchecksum = "{x}"\n',
    "go.sum": "github.com/golang-jwt/jwt/v4 v4.5.0 h1:{b}\ngithub.com/pass/token-secret v1.0.0/go.mod h1:{b}\n",
    "Gemfile.lock": "GEM\n  specs:\n    bcrypt (3.1.18)\n    jwt (2.7.1)\n    omniauth-oauth2 (1.8.0)\n      oauth2 (>= 1.4, < 3)\n",
    "composer.lock": '{{\n  "packages": [\n    {{"name": "lcobucci/jwt", "version": "4.3.0", "dist": {{"shasum": "{x}"}}}},\n'
    '    {{"name": "paragonie/random_compat", "version": "v9.99.100"}}\n  ]\n}}\n',
}


@pytest.mark.parametrize("name", sorted(LOCKFILES))
def test_lockfiles_hold_package_names_and_hashes_not_credentials(name: str) -> None:
    digest = "sha512-" + base64.b64encode(secrets.token_bytes(64)).decode()
    text = LOCKFILES[name].format(h=digest, x=secrets.token_hex(32), b=base64.b64encode(secrets.token_bytes(32)).decode())
    assert scanner.file_kind(name) == "lockfile"
    assert _rules(text, name) == []


def test_lockfiles_still_show_tokens_and_url_passwords() -> None:
    password = _pw()
    token = "npm_" + "".join(secrets.choice(ALNUM) for _ in range(36))
    text = f'  resolved "https://ci:{password}@npm.internal/x/-/x-1.0.0.tgz"\n  "//npm.internal/:_authToken": "{token}"\n'
    assert sorted(f.rule for f in _found(text, "yarn.lock")) == ["npm-token", "url-password"]


def test_dependency_versions_are_not_credentials() -> None:
    text = '{\n  "dependencies": {\n    "registry-auth-token": "^4.0.0",\n    "jsonwebtoken": "~9.0.2",\n    "passport": ">=0.6 <1.0"\n  }\n}\n'
    assert _rules(text, "package.json") == []


@pytest.mark.parametrize(
    "key",
    ["fs-minipass", "minipass", "bypass", "compass", "intel_vtd_pass_through_dma_support", "secretname", "passwordhashvalues", "tokenurl",
     "update_password", "generate_secret", "password_expires_at", "secretary", "passport", "nopasswd_str", "pkcs1_privatekey_suffix"],
)  # fmt: skip
def test_credential_words_match_as_name_segments_only(key: str) -> None:
    assert not scanner.secret_key(key)


@pytest.mark.parametrize(
    "key",
    ["smtp_pass", "smtpPass", "dbpass", "keypass", "storepass", "requirepass", "PGPASSWORD", "db_pw", "client_secret", "secretKey",
     "jwt_secret", "api_token", "accessToken", "new_password", "default_password", "MYSQL_ROOT_PASSWORD", "passphrase", "secretvalue"],
)  # fmt: skip
def test_credential_keys(key: str) -> None:
    assert scanner.secret_key(key)


# ---- values that read a secret rather than hold one --------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("docker-compose.yml", '    healthcheck:\n      test: mysqladmin ping --password="$$(cat /run/secrets/db-password)" --silent\n'),
        ("docker-compose.yml", '      test: ["CMD-SHELL", "mysqladmin ping --password=\\"$$(cat /run/secrets/db-password)\\""]\n'),
        (".env", "DB_PASSWORD=/run/secrets/db-password\nDB_PASSWORD_FILE=/run/secrets/db-password\nMYSQL_ROOT_PASSWORD_FILE=/run/secrets/root\n"),
        ("init.sh", 'ADMIN_PASSWORD="$(cat /run/secrets/admin)"\nTOKEN=`cat /etc/app/token`\nexport PGPASSWORD="$DB_PASSWORD"\n'),
        ("docker-compose.yml", "      - DB_PASSWORD=${DB_PASSWORD:?set it}\n      - API_TOKEN=${API_TOKEN}\n      - X_SECRET=${X_SECRET:+set}\n"),
        ("app.yml", "db_password: ~/.pgpass\napi_token: ./secrets/api_token.txt\nsecret_key: /etc/app/secret.key\n"),
        ("k8s.yaml", "        - name: DB_PASSWORD\n          valueFrom:\n            secretKeyRef:\n              name: db\n              key: password\n"),
        ("Dockerfile", "ARG DB_PASSWORD\nRUN --mount=type=secret,id=db_password cat /run/secrets/db_password\n"),
        ("users.yml", "password: $6$rounds=5000$abcdefgh$0123456789ABCDEFabcdef\nuserPassword: '{SSHA}Zm9vYmFyYmF6cXV4'\n"),
        ("kms.yml", "encryption_key: arn:aws:kms:us-east-1:123456789012:alias/app\ndb_password: vault:v1:Zm9vYmFy\n"),
        ("kubectl.py", '    "kubectl_password": "--password",\n    "oc_token": "--token",\n'),
    ],
)
def test_references_paths_flags_and_hashes_are_not_credentials(path: str, text: str) -> None:
    assert _rules(text, path) == []


# ---- fallbacks inside references ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("src/main/resources/application.properties", "spring.datasource.password=${{DB_PASSWORD:{v}}}\n"),
        ("src/main/resources/application.yml", "spring:\n  datasource:\n    password: ${{DB_PASSWORD:{v}}}\n"),
        ("docker-compose.yml", "    environment:\n      - DB_PASSWORD=${{DB_PASSWORD:-{v}}}\n"),
        ("docker-compose.yml", "    environment:\n      REDIS_PASSWORD: ${{REDIS_PASSWORD-{v}}}\n"),
        ("docker-compose.yml", "    command: redis-server --requirepass ${{REDIS_PASSWORD:-{v}}}\n"),
        ("init.sh", 'DB_PASSWORD="${{DB_PASSWORD:={v}}}"\n'),
        ("settings.py", "SECRET_KEY = env('SECRET_KEY', '{v}')\n"),
        ("settings.py", 'DB_PASSWORD = os.environ.get("DB_PASSWORD", "{v}")\n'),
        ("settings.py", 'SECRET_KEY = config("SECRET_KEY", default="{v}")\n'),
        ("main.go", '\tpassword := getEnv("DB_PASSWORD", "{v}")\n'),
        ("server.js", "  password: process.env.DB_PASSWORD || '{v}',\n"),
        ("server.ts", 'const secret = process.env.JWT_SECRET ?? "{v}";\n'),
        ("main.rs", '    let pw = env::var("DB_PASSWORD").unwrap_or_else(|_| "{v}".to_string());\n'),
        ("config.rb", 'SECRET = ENV.fetch("SECRET_KEY_BASE") {{ "{v}" }}\n'),
        ("config.php", "$password = getenv('DB_PASSWORD') ?: '{v}';\n"),
        ("group_vars/all.yml", "db_password: \"{{{{ lookup('env', 'DB_PASSWORD') | default('{v}') }}}}\"\n"),
    ],
)
def test_the_default_of_a_reference_is_a_credential(path: str, template: str) -> None:
    value = _pw(50) if "SECRET_KEY" in template else _pw()
    finding = _assert_found(template.format(v=value), path, value, "hardcoded-")
    assert "unset" in finding.explain or "undefined" in finding.explain


def test_a_reference_without_a_literal_default_is_not_one() -> None:
    text = "spring.datasource.password=${DB_PASSWORD}\nx.password=${DB_PASSWORD:}\nDB_PASSWORD=${DB_PASSWORD:-$FALLBACK_PW}\n"
    assert _rules(text, "application.properties") == []
    assert _rules('pw = os.environ.get("DB_PASSWORD", "")\ntoken = os.getenv("API_TOKEN")\n', "app.py") == []


# ---- passwords in connection URLs -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("main.go", '\tdb, err := sql.Open("postgres", "postgres://admin:{v}@localhost:5432/app?sslmode=disable")\n'),
        ("main.go", '\tdb, err := sql.Open("mysql", "root:{v}@tcp(db:3306)/example")\n'),
        ("src/main.rs", '    let url = "postgres://postgres:{v}@db:5432/postgres";\n'),
        ("db.py", 'engine = create_engine("mysql+pymysql://app:{v}@db/app")\n'),
        ("index.js", "mongoose.connect('mongodb://root:{v}@mongo:27017/app?authSource=admin');\n"),
        ("docker-compose.yml", "      - DATABASE_URL=postgres://app:{v}@db:5432/app\n"),
        ("appsettings.json", '{{"ConnectionStrings": {{"Default": "Server=db;Database=app;User Id=sa;Password={v};"}}}}\n'),
    ],
)
def test_a_url_password_is_a_credential_however_short(path: str, template: str) -> None:
    value = _short() if "Password=" not in template else _pw()
    _assert_found(template.format(v=value), path, value, "url-password" if "Password=" not in template else "hardcoded-password")


def test_a_url_password_default_is_a_credential() -> None:
    value = _pw()
    _assert_found(f"      - DATABASE_URL=postgres://app:${{DB_PASSWORD:-{value}}}@db/app\n", "docker-compose.yml", value, "")


@pytest.mark.parametrize(
    "url",
    ["postgres://%s:%s@%s/%s", "postgresql://{user}:{password}@{host}/{db}", "postgres://app:${DB_PASSWORD}@db/app", "redis://:<password>@cache:6379",
     "amqp://user:password@mq:5672", "mysql://root:$MYSQL_PASSWORD@db/app", "postgres://app:{{ db_password }}@db/app", "https://user:***@host/x"],
)  # fmt: skip
def test_url_placeholders_are_not_credentials(url: str) -> None:
    assert _rules(f'dsn = "{url}"\n', "app.py") == []


# ---- other places a literal credential sits ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("app.py", "app.config['SECRET_KEY'] = '{v}'\n"),
        ("README.md", "docker run -e POSTGRES_PASSWORD={v} -d postgres\n"),
        (".netrc", "machine api.example.org login deploy password {v}\n"),
        ("docker-compose.yml", "x-db: &db\n  POSTGRES_PASSWORD: &pw {v}\n"),
        ("main.tf", 'resource "aws_db_instance" "db" {{\n  password = "{v}"\n}}\n'),
        ("ecs-task.json", '{{"environment": [{{"name": "DB_PASSWORD", "value": "{v}"}}]}}\n'),
        ("App.java", 'private static final String DB_PASSWORD = "{v}";\n'),
    ],
)
def test_more_places_a_literal_sits(path: str, template: str) -> None:
    value = _pw()
    _assert_found(template.format(v=value), path, value, "hardcoded-")


# ---- word-like values under unmistakable keys ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("docker-compose.yml", "    environment:\n      ADMIN_PASSWORD: {v}\n"),
        ("docker-compose.yml", "    environment:\n      - MYSQL_PASSWORD={v}\n"),
        (".env", "DB_PASSWORD={v}\n"),
        ("k8s/secret.yaml", "stringData:\n  password: {v}\n"),
        ("db.py", 'conn = psycopg2.connect(host="db", user="postgres", password="{v}")\n'),
        ("settings.py", "DATABASES = {{'default': {{'PASSWORD': '{v}', 'HOST': 'db'}}}}\n"),
        ("wp-config.php", "define( 'DB_PASSWORD', '{v}' );\n"),
        ("k8s/deploy.yaml", "          env:\n            - name: DB_PASSWORD\n              value: {v}\n"),
    ],
)
@pytest.mark.parametrize("style", ["word_year", "word", "some_word", "example"])
def test_word_like_values_are_credentials(path: str, template: str, style: str) -> None:
    value = {"word_year": f"{_word()}_{secrets.choice(range(2019, 2027))}", "word": _word(), "some_word": "some" + _word(), "example": "example"}[style]
    _assert_found(template.format(v=value), path, value, "hardcoded-")


@pytest.mark.parametrize(
    "value",
    ["changeme", "change_me", "CHANGE_ME_SET_YOUR_PASSWORD", "<password>", "<your-api-key>", "xxx", "XXXXXXXX", "***", "your-password-here",
     "password", "secret", "", "${DB_PASSWORD}", "{{ vault_db_password }}", "sk-XXXX", "AKIA...", "!dummy", "none:None", "always", "enable"],
)  # fmt: skip
def test_placeholders_are_not_credentials(value: str) -> None:
    for path, template in (("docker-compose.yml", "      ADMIN_PASSWORD: {v}\n"), (".env", "DB_PASSWORD={v}\n"), ("app.py", 'password = "{v}"\n')):
        assert _rules(template.format(v=value), path) == [], path


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("msgs.py", 'NOT_API_TOKEN = "api_token is required."\nPASSWORD_SAME = "New password must be different from the old password."\n'),
        ("client.py", '    credential: "sansldap.AuthenticationCredential",\n'),
        ("user.ps1", '$password = Get-AnsibleParam -obj $params -name "password" -type "str"\n$Module.Diff.after.password = \'VALUE_SPECIFIED_IN_NO_LOG\'\n'),
        ("CHANGELOG.md", "- azure_keyvault_secret: Update lookup plugins to use auth_source\n"),
        ("README.md", "[![codecov](https://codecov.io/gh/o/r/graph/badge.svg?token=AbCd3fGh1J)](https://codecov.io/gh/o/r)\n"),
        ("README.md", "netapp_password: <ONTAP admin account password>\nSet `export DB_PASSWORD=<your password>` first.\n"),
        ("en.json", '{"password": "Password", "confirmPassword": "Confirm password"}\n'),
        ("monitoring.md", '```json\n{"alerts": [{"secret": "app_db", "kind": "postgresql"}]}\n```\n'),
        ("constants.py", 'UPDATE_PASSWORD = "v1/objects/users/{}/password"\nURL_TOKEN = "{url}/realms/{realm}/protocol/openid-connect/token"\n'),
        ("tasks.yml", "cloud_init: \"{{ cloud_init | combine({'root_password': vm.root_password | default(vm.profile.root_password)}) }}\"\n"),
    ],
)
def test_messages_names_and_markup_are_not_credentials(path: str, text: str) -> None:
    assert _rules(text, path) == []


# ---- committed credential files and private keys -----------------------------------------------------------
@pytest.mark.parametrize("name", ["db/password.txt", "secrets/db-password", "secrets/api_token", ".secret", "jwt.secret", "github-token.txt"])
@pytest.mark.parametrize("style", ["random", "word_like"])
def test_a_single_line_credential_file_is_a_finding(name: str, style: str) -> None:
    value = _pw(24) if style == "random" else f"db-{_short()}{_short()}"
    assert scanner.file_kind(name) == "secretfile"
    finding = _assert_found(value + "\n", name, value, "secret-file")
    assert "file whose name says" in finding.explain


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("db/password.txt", "changeme\n"),
        ("secrets/README.txt", "Put the database password in db/password.txt.\n"),
        ("password_policy.txt", "minimum 12 characters\n"),
        ("secrets/token", "${API_TOKEN}\n"),
        ("notes.txt", "4f1c2e9a8b7d6c5e\n"),
    ],
)
def test_other_small_files_are_not_credential_files(name: str, text: str) -> None:
    assert _rules(text, name) == []


def test_a_credential_file_with_settings_lines_is_read_line_by_line() -> None:
    value = _pw()
    _assert_found(f"DB_USER=app\nDB_PASSWORD={value}\n", "secrets/credentials", value, "hardcoded-password")


@pytest.mark.parametrize("kind", ["RSA ", "OPENSSH ", "EC ", ""])
@pytest.mark.parametrize("name", [".ssh/id_rsa", "certs/server.pem", "deploy.key"])
def test_private_keys_with_key_material_are_findings(kind: str, name: str) -> None:
    body = "\n".join(base64.b64encode(secrets.token_bytes(48)).decode() for _ in range(6))
    text = f"-----BEGIN {kind}PRIVATE KEY-----\n{body}\n-----END {kind}PRIVATE KEY-----\n"  # keywarden: allow (generated body)
    assert [(f.line, f.rule) for f in _found(text, name)] == [(1, "private-key")]


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("common.py", 'if header == "-----BEGIN OPENSSH PRIVATE KEY-----":\n    return "SSH"\n'),
        ("pem.go", 'const header = "-----BEGIN RSA PRIVATE KEY-----"\nif strings.HasPrefix(s, header) {\n'),
        ("util.py", 'data.replace(b"-----BEGIN EC PRIVATE KEY-----", b"-----BEGIN PRIVATE KEY-----")\n'),
        ("docs.yml", "sample: '-----BEGIN RSA PRIVATE KEY-----\n  MIIEow...\n'\nprivate_key: -----BEGIN PRIVATE KEY-----...\n"),
        ("cert.pem", "-----BEGIN CERTIFICATE-----\n" + "QUJD" * 16 + "\n-----END CERTIFICATE-----\n"),
    ],
)
def test_private_key_headers_without_key_material_are_not_findings(path: str, text: str) -> None:
    assert _rules(text, path) == []


# ---- explanations ----------------------------------------------------------------------------------------------
def test_every_finding_explains_its_rule_without_its_value() -> None:
    values = [_pw(), f"{_word()}_{secrets.choice(range(2019, 2027))}", _pw(6), "ghp_" + "".join(secrets.choice(ALNUM) for _ in range(36))]
    text = f"DB_PASSWORD={values[0]}\nADMIN_PASSWORD={values[1]}\nDATABASE_URL=postgres://app:{values[2]}@db/app\nGH={values[3]}\n"
    found = _found(text, ".env")
    assert [f.rule for f in found] == ["hardcoded-password", "hardcoded-password", "url-password", "github-token"]
    for finding, value in zip(found, values, strict=True):
        assert finding.explain.startswith(finding.rule + ":")
        leaked = value in finding.explain
        assert not leaked, "an explanation carries the value"
        assert finding.as_dict()["explain"] == finding.explain
    assert "word-like, yet no known placeholder" in found[1].explain
    assert "however short" in found[2].explain
    assert "github-token format" in found[3].explain
