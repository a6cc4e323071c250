"""A labelled set of sample-application projects (compose stacks, services in Go, Rust, Python and JS), built at test time.

It mirrors the kind of public repository the scanner is judged on (sample applications with compose files,
.properties, .env files, Dockerfiles, Kubernetes manifests, docker-secret files and dependency lockfiles) and the
classes of issue 15: fallbacks inside references, passwords in connection URLs, word-like values under
unmistakable keys, committed credential files, and the lookalikes that are not credentials (lockfile keys,
`$(cat /run/secrets/x)`, paths, placeholders, header strings).

We wrote both the scanner and this set: it measures what we meant the rules to catch, not an independent
judgement. Every value is drawn from ``random.Random(seed)`` when the set is built; the repository holds shapes
only. ``build(root, seed)`` writes the files and returns the labels: for each file, its cases as
``[first_line, last_line, positive, class]``; a positive case counts as found when a finding lands on one of
its lines, and every finding outside the positive cases is a false positive charged to the case it lands in.
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Callable
from pathlib import Path

from scanner_corpus.generate import ALNUM, WORDS, Gen

APP_WORDS = ("wordpress", "gitea", "nextcloud", "grafana", "keycloak", "matomo", "odoo", "redmine", "ghost", "strapi", "airflow", "superset")
CLASSES = (
    "plain", "word-like", "fallback", "url", "secret-file", "private-key", "k8s-env", "code-fallback",  # positives
    "lockfile", "reference", "placeholder", "code-name", "header-string", "other",  # negatives
)  # fmt: skip

Case = tuple[list[str], bool, str]  # lines, positive (a credential starts in it), class


class AppGen(Gen):
    """Values as sample applications write them."""

    def wordlike(self) -> str:
        """A real password that reads like words: `demo_2024`, `wordpress`, `somewordpress`, `gitea`."""
        style = self.r.randrange(4)
        word = self.r.choice(APP_WORDS + WORDS)
        if style == 0:
            return f"{word}_{self.r.randint(2019, 2026)}"
        if style == 1:
            return word
        if style == 2:
            return "some" + word
        return word + self.r.choice(WORDS)

    def short(self) -> str:
        """A short URL password: `pw`, `db1`, `s3cr`."""
        return self.s(self.r.randint(2, 6), string.ascii_lowercase + string.digits)

    def django_key(self) -> str:
        return "django-insecure-" + self.s(50, string.ascii_lowercase + string.digits + "!@#%^&*(-_=+)")

    def placeholder(self) -> str:
        return self.r.choice(("changeme", "<password>", "xxx", "your-password-here", "", "${DB_PASSWORD}", "CHANGE_ME", "<your-api-key>", "****"))

    def pem(self, kind: str = "RSA ") -> list[str]:
        body = [self.s(64, ALNUM + "+/") for _ in range(self.r.randint(6, 12))]
        return [f"-----BEGIN {kind}PRIVATE KEY-----", *body, f"-----END {kind}PRIVATE KEY-----"]

    def integrity(self) -> str:
        return "sha512-" + base64.b64encode(bytes(self.r.getrandbits(8) for _ in range(64))).decode()


def _compose(g: AppGen) -> tuple[str, list[Case]]:
    db, app = g.r.choice(("postgres", "mysql", "mariadb")), g.r.choice(APP_WORDS)
    pw_var = {"postgres": "POSTGRES_PASSWORD", "mysql": "MYSQL_ROOT_PASSWORD", "mariadb": "MARIADB_ROOT_PASSWORD"}[db]
    cases: list[Case] = [
        (["services:", "  db:", f"    image: {db}:16", "    restart: always", "    environment:"], False, "other"),
        ([f"      {pw_var}: {g.password()}"], True, "plain"),
        ([f"      {db.upper()}_USER: {app}", f"      {db.upper()}_DB: {app}"], False, "other"),
        ([f"      ADMIN_PASSWORD: {g.wordlike()}"], True, "word-like"),
        (["    healthcheck:", f'      test: ["CMD-SHELL", "{db}admin ping --password=\\"$$(cat /run/secrets/db-password)\\" --silent"]'], False, "reference"),
        ([f'      test: {db}admin ping -h 127.0.0.1 --password="$$(cat /run/secrets/db-password)" --silent'], False, "reference"),
        (["    secrets:", "      - db-password"], False, "other"),
        ([f"  {app}:", f"    image: {app}:latest", "    environment:"], False, "other"),
        ([f"      - DB_PASSWORD=${{DB_PASSWORD:-{g.password()}}}"], True, "fallback"),
        ([f"      - REDIS_PASSWORD=${{REDIS_PASSWORD-{g.wordlike()}}}"], True, "fallback"),
        (["      - DB_PASSWORD_FILE=/run/secrets/db-password", "      - SESSION_SECRET=${SESSION_SECRET:?set SESSION_SECRET}"], False, "reference"),
        ([f"      - {app.upper()}_DB_PASSWORD=/run/secrets/db-password"], False, "reference"),
        ([f"      - DATABASE_URL={db}://{app}:{g.short()}@db:5432/{app}"], True, "url"),
        (["      - DATABASE_URL_RO=postgres://reader:${DB_RO_PASSWORD}@db:5432/app"], False, "reference"),
        ([f"      - SMTP_PASSWORD={g.placeholder()}"], False, "placeholder"),
        (["  cache:", "    image: redis:7", f"    command: redis-server --requirepass ${{REDIS_PASSWORD:-{g.password()}}}"], True, "fallback"),
        (["secrets:", "  db-password:", "    file: db/password.txt"], False, "other"),
    ]
    return g.r.choice(("compose.yaml", "docker-compose.yml")), cases


def _env(g: AppGen) -> tuple[str, list[Case]]:
    cases: list[Case] = [
        ([f"SECRET_KEY={g.s(50)}"], True, "plain"),
        ([f"DB_PASSWORD={g.wordlike()}"], True, "word-like"),
        ([f"DATABASE_URL=postgres://app:{g.short()}@localhost:5432/app"], True, "url"),
        (["DB_PASSWORD_FILE=/run/secrets/db-password", "API_TOKEN=${API_TOKEN}"], False, "reference"),
        ([f"MAIL_PASSWORD={g.placeholder()}"], False, "placeholder"),
        ([f"APP_NAME={g.r.choice(APP_WORDS)}", "DEBUG=false", f"PORT={g.r.randint(3000, 9000)}"], False, "other"),
        ([f"JWT_SECRET=${{JWT_SECRET:-{g.s(32)}}}"], True, "fallback"),
    ]
    g.r.shuffle(cases)
    return ".env", cases


def _env_example(g: AppGen) -> tuple[str, list[Case]]:
    cases: list[Case] = [([f"{name}={g.placeholder()}"], False, "placeholder") for name in ("DB_PASSWORD", "SECRET_KEY", "API_TOKEN", "SMTP_PASS")]
    return ".env.example", cases


def _properties(g: AppGen) -> tuple[str, list[Case]]:
    cases: list[Case] = [
        (["spring.datasource.url=jdbc:postgresql://db:5432/app", "spring.datasource.username=app"], False, "other"),
        ([f"spring.datasource.password=${{DB_PASSWORD:{g.r.choice(('db', 's3cr3t', 'app'))}-{g.short()}}}"], True, "fallback"),
        (["spring.redis.password=${REDIS_PASSWORD}"], False, "reference"),
        ([f"app.jwt.secret={g.s(44)}"], True, "plain"),
        (["spring.jpa.hibernate.ddl-auto=update", f"server.port={g.r.randint(8000, 9000)}"], False, "other"),
        (["spring.security.oauth2.client.registration.github.client-secret=${GITHUB_CLIENT_SECRET}"], False, "reference"),
    ]
    return "src/main/resources/application.properties", cases


def _go(g: AppGen) -> tuple[str, list[Case]]:
    cases: list[Case] = [
        (["package main", "", "import (", '\t"database/sql"', '\t"fmt"', '\t"os"', ")", ""], False, "other"),
        (["func getEnv(key, fallback string) string {", "\tif v, ok := os.LookupEnv(key); ok {", "\t\treturn v", "\t}"], False, "other"),
        (["\treturn fallback", "}"], False, "other"),
        (["func connect() (*sql.DB, error) {"], False, "other"),
        ([f'\tdb, err := sql.Open("postgres", "postgres://admin:{g.short()}@localhost:5432/app?sslmode=disable")'], True, "url"),
        ([f'\tmy, err := sql.Open("mysql", "root:{g.s(g.r.randint(8, 20))}@tcp(db:3306)/example")'], True, "url"),
        ([f'\tpassword := getEnv("DB_PASSWORD", "{g.password()}")'], True, "code-fallback"),
        (['\tdsn := fmt.Sprintf("postgres://%s:%s@%s/%s", user, password, host, name)'], False, "reference"),
        (['\tpw, _ := os.ReadFile("/run/secrets/db-password")', '\tapiKey := os.Getenv("API_KEY")'], False, "reference"),
        (['\tif strings.HasPrefix(line, "-----BEGIN OPENSSH PRIVATE KEY-----") {', "\t\treturn nil, errKey", "\t}"], False, "header-string"),
        (["\treturn db, err", "}"], False, "other"),
    ]
    return "backend/main.go", cases


def _rust(g: AppGen) -> tuple[str, list[Case]]:
    cases: list[Case] = [
        (["use std::env;", "", "fn database_url() -> String {"], False, "other"),
        ([f'    let fallback = "postgres://postgres:{g.short()}@db:5432/postgres";'], True, "url"),
        ([f'    let password = env::var("DB_PASSWORD").unwrap_or_else(|_| "{g.password()}".to_string());'], True, "code-fallback"),
        (['    let url = format!("postgres://{}:{}@{}/{}", user, password, host, db);'], False, "reference"),
        (['    env::var("DATABASE_URL").unwrap_or(fallback.to_string())', "}"], False, "reference"),
        (['const PEM_HEADER: &str = "-----BEGIN RSA PRIVATE KEY-----";'], False, "header-string"),
    ]
    return "backend/src/main.rs", cases


def _python(g: AppGen) -> tuple[str, list[Case]]:
    cases: list[Case] = [
        (["import os", "", "import environ", "", "env = environ.Env()"], False, "other"),
        ([f"SECRET_KEY = env('SECRET_KEY', default='{g.django_key()}')"], True, "code-fallback"),
        ([f'DB_PASSWORD = os.environ.get("DB_PASSWORD", "{g.password()}")'], True, "code-fallback"),
        ([f'REDIS_PASSWORD = os.getenv("REDIS_PASSWORD", "{g.wordlike()}")'], True, "code-fallback"),
        (['API_TOKEN = os.environ["API_TOKEN"]', 'MAIL_PASSWORD = os.getenv("MAIL_PASSWORD")'], False, "reference"),
        (['DATABASE_URL = f"postgresql://{DB_USER}:{DB_PASSWORD}@{DB_HOST}/{DB_NAME}"'], False, "reference"),
        ([f'conn = psycopg2.connect(host="db", user="postgres", password="{g.password()}")'], True, "plain"),
        (['PASSWORD_FIELD = "password"', "if password != confirm_password:", "    raise ValueError('mismatch')"], False, "code-name"),
        (['with open("/run/secrets/db-password") as handle:', "    db_password = handle.read().strip()"], False, "reference"),
        (['if key_text.startswith("-----BEGIN OPENSSH PRIVATE KEY-----"):', "    kind = 'openssh'"], False, "header-string"),
    ]
    return g.r.choice(("app/settings.py", "backend/config.py")), cases


def _javascript(g: AppGen) -> tuple[str, list[Case]]:
    cases: list[Case] = [
        (["const express = require('express');", "const { Pool } = require('pg');", ""], False, "other"),
        (["const pool = new Pool({", "  user: 'postgres',", "  host: 'db',"], False, "other"),
        ([f"  password: process.env.DB_PASSWORD || '{g.password()}',"], True, "code-fallback"),
        (["});"], False, "other"),
        ([f"const mongoUri = 'mongodb://root:{g.short()}@mongo:27017/app?authSource=admin';"], True, "url"),
        ([f'const jwtSecret = "{g.s(32)}";'], True, "plain"),
        (["const apiKey = process.env.API_KEY;", "const token = req.headers['authorization'];"], False, "reference"),
        (["const passwordInput = document.querySelector('input[type=\"password\"]');"], False, "code-name"),
        (["const uri = `mongodb://${user}:${password}@${host}/db`;"], False, "reference"),
    ]
    return g.r.choice(("server.js", "backend/src/index.js")), cases


def _dockerfile(g: AppGen) -> tuple[str, list[Case]]:
    cases: list[Case] = [
        (["FROM node:20-alpine", "WORKDIR /app", "ARG NPM_TOKEN"], False, "other"),
        ([f"ENV ADMIN_PASSWORD={g.password()}"], True, "plain"),
        (["RUN --mount=type=secret,id=db_password cat /run/secrets/db_password > /dev/null"], False, "reference"),
        (["ENV DB_PASSWORD_FILE=/run/secrets/db_password"], False, "reference"),
        (["COPY . .", 'CMD ["node", "server.js"]'], False, "other"),
    ]
    return "Dockerfile", cases


def _k8s(g: AppGen) -> tuple[str, list[Case]]:
    app = g.r.choice(APP_WORDS)
    cases: list[Case] = [
        (["apiVersion: apps/v1", "kind: Deployment", "metadata:", f"  name: {app}", "spec:", "  template:", "    spec:", "      containers:"], False, "other"),
        ([f"        - name: {app}", f"          image: {app}:1.0", "          env:"], False, "other"),
        (["            - name: DB_PASSWORD", f'              value: "{g.password()}"'], True, "k8s-env"),
        (["            - name: DB_HOST", "              value: db"], False, "other"),
        (["            - name: API_TOKEN", "              valueFrom:", "                secretKeyRef:"], False, "reference"),
        (["                  name: api", "                  key: token"], False, "reference"),
        (["---", "apiVersion: v1", "kind: Secret", "metadata:", "  name: db", "type: Opaque", "stringData:"], False, "other"),
        ([f"  password: {g.wordlike()}"], True, "word-like"),
        (["data:"], False, "other"),
        ([f"  token: {base64.b64encode(g.s(24).encode()).decode()}"], True, "plain"),
    ]
    return "k8s/deployment.yaml", cases


def _secret_files(g: AppGen) -> list[tuple[str, list[Case]]]:
    return [
        ("db/password.txt", [([g.r.choice((g.password(), g.wordlike(), f"db-{g.s(5, string.ascii_lowercase + string.digits)}"))], True, "secret-file")]),
        (g.r.choice(("secrets/api_token", "secrets/jwt_secret.txt", ".secrets/github-token")), [([g.s(40)], True, "secret-file")]),
        (".ssh/id_rsa", [(g.pem(g.r.choice(("RSA ", "OPENSSH "))), True, "private-key")]),
        (
            "certs/server.pem",
            [(["-----BEGIN CERTIFICATE-----", g.s(64, ALNUM + "+/"), "-----END CERTIFICATE-----"], False, "other"), (g.pem(), True, "private-key")],
        ),
        ("db/password.txt.example", [(["changeme"], False, "placeholder")]),
        ("secrets/README.txt", [(["Put the database password in db/password.txt; it is read as a docker secret."], False, "other")]),
    ]


def _lockfiles(g: AppGen) -> list[tuple[str, list[Case]]]:
    pkgs = ("fs-minipass", "minipass", "minipass-fetch", "registry-auth-token", "@octokit/auth-token", "passport-local", "jsonwebtoken", "js-tokens",
            "keytar", "secret-handshake", "bypass", "password-prompt", "api-key-auth", "token-types", "oauth-sign")  # fmt: skip
    chosen = g.r.sample(pkgs, 8)

    def ver() -> str:
        return f"{g.r.randint(0, 9)}.{g.r.randint(0, 30)}.{g.r.randint(0, 20)}"

    npm: list[Case] = [(["{", f'  "name": "{g.r.choice(APP_WORDS)}",', '  "lockfileVersion": 3,', '  "packages": {'], False, "other")]
    for name in chosen:
        v = ver()
        npm.append(
            ([f'    "node_modules/{name}": {{', f'      "version": "{v}",', f'      "resolved": "https://registry.npmjs.org/{name}/-/{name}-{v}.tgz",',
              f'      "integrity": "{g.integrity()}",', '      "dependencies": {', f'        "{g.r.choice(pkgs)}": "^{ver()}"', "      },", "    },"],
             False, "lockfile")
        )  # fmt: skip
    npm.append((["  }", "}"], False, "other"))
    yarn: list[Case] = [
        ([f'"{name}@^{ver()}":', f'  version "{ver()}"', f'  resolved "https://registry.yarnpkg.com/{name}/-/{name}-{ver()}.tgz#{g.hexs(40)}"',
          f"  integrity {g.integrity()}", ""], False, "lockfile")
        for name in chosen
    ]  # fmt: skip
    cargo: list[Case] = [
        (["[[package]]", f'name = "{name}"', f'version = "{ver()}"', 'source = "registry+https://github.com/rust-lang/crates.io-index"',
          f'checksum = "{g.hexs(64)}"', ""], False, "lockfile")
        for name in ("secrecy", "password-hash", "jsonwebtoken", "api-token", "keyring")
    ]  # fmt: skip
    gosum: list[Case] = [
        ([f"github.com/{g.word()}/{name} v{ver()} h1:{base64.b64encode(bytes(g.r.getrandbits(8) for _ in range(32))).decode()}"], False, "lockfile")
        for name in ("secret-token", "passlib", "auth-key", "jwt-go")
    ]  # fmt: skip
    package_json: list[Case] = [
        (["{", f'  "name": "{g.r.choice(APP_WORDS)}",', '  "dependencies": {'], False, "other"),
        *(([f'    "{name}": "^{ver()}",'], False, "lockfile") for name in chosen[:5]),
        (['    "express": "~4.18.2"', "  }", "}"], False, "other"),
    ]
    return [("package-lock.json", npm), ("yarn.lock", yarn), ("Cargo.lock", cargo), ("go.sum", gosum), ("package.json", package_json)]


def _shell(g: AppGen) -> tuple[str, list[Case]]:
    cases: list[Case] = [
        (["#!/bin/sh", "set -eu"], False, "other"),
        ([f'DB_PASSWORD="${{DB_PASSWORD:-{g.password()}}}"'], True, "fallback"),
        (['ADMIN_PASSWORD="$(cat /run/secrets/admin-password)"', 'export PGPASSWORD="$DB_PASSWORD"'], False, "reference"),
        (["psql -h db -U app -c 'select 1'"], False, "other"),
    ]
    return "scripts/init-db.sh", cases


def _readme(g: AppGen) -> tuple[str, list[Case]]:
    cases: list[Case] = [
        ([f"# {g.r.choice(APP_WORDS)} sample", "", "Copy `.env.example` to `.env` and set the values:", ""], False, "other"),
        (["```", "export DB_PASSWORD=<your password>", "export API_TOKEN=your-token-here", "```"], False, "placeholder"),
        (["The database password is read from `db/password.txt` as a docker secret (`DB_PASSWORD_FILE`)."], False, "other"),
    ]
    return "README.md", cases


def _other_formats(g: AppGen) -> list[tuple[str, list[Case]]]:
    """Stacks in other languages and tools, and the lookalikes they carry (schemas, labels, form fields)."""
    app = g.r.choice(APP_WORDS)
    return [
        ("wordpress/wp-config.php", [
            (["<?php", f"define( 'DB_NAME', '{app}' );", "define( 'DB_USER', 'root' );"], False, "other"),
            ([f"define( 'DB_PASSWORD', '{g.wordlike()}' );"], True, "word-like"),
            (["define( 'AUTH_KEY', getenv('WORDPRESS_AUTH_KEY') );"], False, "reference"),
        ]),
        ("dotnet/appsettings.json", [
            (["{", '  "ConnectionStrings": {'], False, "other"),
            ([f'    "Default": "Server=db;Database={app};User Id=sa;Password={g.s(16)};TrustServerCertificate=true"'], True, "url"),
            (["  },", '  "Jwt": { "Issuer": "app", "Audience": "app" }', "}"], False, "other"),
        ]),
        ("infra/main.tf", [
            (['resource "aws_db_instance" "db" {', '  engine   = "postgres"', '  username = "app"'], False, "other"),
            ([f'  password = "{g.password()}"'], True, "plain"),
            (["}", 'variable "db_password" {', "  type      = string", "  sensitive = true", "}"], False, "other"),
        ]),
        ("config/default.json", [
            (["{", '  "db": {', '    "host": "localhost",'], False, "other"),
            ([f'    "password": "{g.wordlike()}",'], True, "word-like"),
            (['    "passwordMinLength": 12', "  },"], False, "other"),
            ([f'  "session": {{ "secret": "{g.s(32)}" }}'], True, "plain"),
            (["}"], False, "other"),
        ]),
        ("frontend/src/i18n/en.json", [
            (["{", '  "password": "Password",', '  "confirmPassword": "Confirm password",'], False, "code-name"),
            (['  "forgotPassword": "Forgot your password?",', "}"], False, "code-name"),
        ]),
        ("api/openapi.yaml", [
            (["components:", "  schemas:", "    Login:", "      properties:", "        password:"], False, "code-name"),
            (["          type: string", "          format: password"], False, "code-name"),
            (["        token_type:", "          example: bearer"], False, "code-name"),
        ]),
        ("frontend/templates/login.html", [
            (['<input type="password" name="password" autocomplete="current-password">'], False, "code-name"),
        ]),
        ("backend/app.py", [
            (["import redis", ""], False, "other"),
            (["DATABASES = {", "    'default': {", "        'ENGINE': 'django.db.backends.postgresql',", "        'USER': 'postgres',"], False, "other"),
            ([f"        'PASSWORD': '{g.r.choice(APP_WORDS + ('postgres', 'admin', 'secret123'))}',"], True, "word-like"),
            (["    }", "}"], False, "other"),
            ([f"cache = redis.Redis(host='cache', password='{g.wordlike()}')"], True, "word-like"),
            (["password_hash = bcrypt.hashpw(password.encode(), bcrypt.gensalt())", 'assert "password" in response.text'], False, "code-name"),
        ]),
        ("docker-compose.override.yml", [
            (["x-db-env: &db-env"], False, "other"),
            ([f"  POSTGRES_PASSWORD: &db-password {g.password()}"], True, "plain"),
            (["services:", "  db:", "    environment: *db-env"], False, "other"),
        ]),
    ]  # fmt: skip


BUILDERS: tuple[Callable[[AppGen], tuple[str, list[Case]]], ...] = (_compose, _env, _env_example, _properties, _dockerfile, _k8s, _shell, _readme)
SERVICES: tuple[Callable[[AppGen], tuple[str, list[Case]]], ...] = (_go, _rust, _python, _javascript)


def build(root: Path, seed: int, apps: int = 12) -> dict[str, dict[str, object]]:
    """Write ``apps`` sample projects under ``root``; return {relative path: {"cases": [[first, last, positive, class], ...]}}."""
    rng = random.Random(seed)  # noqa: S311  reproducible shapes from a seed; the values only need to look random
    g = AppGen(rng)
    labels: dict[str, dict[str, object]] = {}
    for i in range(apps):
        base = f"{g.r.choice(APP_WORDS)}-{i:02d}"
        files = [builder(g) for builder in BUILDERS]
        files += [service(g) for service in rng.sample(SERVICES, 2)]
        files += _secret_files(g) + _lockfiles(g) + _other_formats(g)
        for rel, cases in files:
            lines: list[str] = []
            spans: list[list[object]] = []
            for case_lines, positive, cls in cases:
                spans.append([len(lines) + 1, len(lines) + len(case_lines), positive, cls])
                lines.extend(case_lines)
            path = root / base / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n")
            labels[f"{base}/{rel}"] = {"cases": spans}
    return labels


def score(labels: dict[str, dict[str, object]], found: set[tuple[str, int]]) -> dict[str, dict[str, float]]:
    """Precision and recall of ``found`` (relative path, line) per class and over all ("all")."""
    per: dict[str, dict[str, float]] = {cls: {"tp": 0, "fp": 0, "fn": 0} for cls in (*CLASSES, "all")}
    by_file: dict[str, set[int]] = {}
    for rel, line in found:
        by_file.setdefault(rel, set()).add(line)
    for rel, label in labels.items():
        got = by_file.pop(rel, set())
        for first, last, positive, cls in label["cases"]:  # type: ignore[attr-defined]
            hits = {line for line in got if first <= line <= last}
            got -= hits
            if positive:
                outcome = "tp" if hits else "fn"
                per[cls][outcome] += 1
                per["all"][outcome] += 1
            elif hits:
                per[cls]["fp"] += len(hits)
                per["all"]["fp"] += len(hits)
        per["other"]["fp"] += len(got)
        per["all"]["fp"] += len(got)
    per["other"]["fp"] += sum(len(lines) for lines in by_file.values())
    per["all"]["fp"] += sum(len(lines) for lines in by_file.values())
    for counts in per.values():
        tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
        counts["precision"] = tp / (tp + fp) if tp + fp else 1.0
        counts["recall"] = tp / (tp + fn) if tp + fn else 1.0
    return per


def table(scores: dict[str, dict[str, float]]) -> str:
    rows = [f"{'class':14} {'tp':>4} {'fp':>4} {'fn':>4} {'precision':>9} {'recall':>7}"]
    for cls, c in scores.items():
        if c["tp"] + c["fp"] + c["fn"]:
            rows.append(f"{cls:14} {int(c['tp']):4d} {int(c['fp']):4d} {int(c['fn']):4d} {c['precision']:9.3f} {c['recall']:7.3f}")
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover - a quick look: python tests/scanner_corpus/sample_apps.py DIR SEED
    import sys

    print(json.dumps(build(Path(sys.argv[1]), int(sys.argv[2]), apps=1), indent=1))
