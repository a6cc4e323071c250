"""Labelled corpus for the credential scanner, built at test time with random values.

Nothing here is a credential: every value is drawn from ``random.Random(seed)`` when the corpus is built, so the
repository itself holds only the shapes. Each file belongs to one format; each line is labelled positive (a
hardcoded credential starts on it) or not. ``build(root, seed)`` writes the files and returns the labels.
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Callable
from pathlib import Path

ALNUM = string.ascii_letters + string.digits
WORDS = ("orbit", "maple", "copper", "harbor", "violet", "summit", "lantern", "quartz", "meadow", "falcon", "ember", "willow", "cobalt", "prairie")
FORMATS = (
    "yaml-vars", "ansible-tasks", "inventory", "compose", "env", "ini", "properties", "json", "toml", "dockerfile", "shell", "python",
    "url", "private-key", "tokens",
)  # fmt: skip


class Gen:
    def __init__(self, rng: random.Random) -> None:
        self.r = rng

    def s(self, n: int, alphabet: str = ALNUM) -> str:
        return "".join(self.r.choice(alphabet) for _ in range(n))

    def password(self) -> str:
        """A password as people write them: random, passphrase-like or with punctuation; never a placeholder."""
        style = self.r.randrange(4)
        if style == 0:
            return self.s(self.r.randint(12, 32))
        if style == 1:
            return "-".join(self.r.choice(WORDS) for _ in range(3)) + str(self.r.randint(10, 99))
        if style == 2:
            return self.s(1, string.ascii_letters) + self.s(self.r.randint(10, 24), ALNUM + "!%^*+=_-.@")
        return self.r.choice(WORDS).capitalize() + str(self.r.randint(1000, 9999)) + self.r.choice("!.%*")

    def word(self) -> str:
        return self.r.choice(WORDS)

    def host(self) -> str:
        return f"{self.word()}-{self.r.randint(1, 40)}.{self.r.choice(('internal', 'example.org', 'svc'))}"

    def hexs(self, n: int) -> str:
        return self.s(n, "0123456789abcdef")

    def tokens(self) -> list[tuple[str, str]]:
        """(name, value) of the well-known token formats."""
        up = string.ascii_uppercase + string.digits
        header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()).decode().rstrip("=")
        payload = base64.urlsafe_b64encode(json.dumps({"sub": self.s(8), "iat": self.r.randint(10**9, 2 * 10**9)}).encode()).decode().rstrip("=")
        return [
            ("AWS_ACCESS_KEY_ID", "AKIA" + self.s(16, up)),
            ("AWS_SECRET_ACCESS_KEY", self.s(40, ALNUM + "/+")),
            ("GITHUB_TOKEN", "ghp_" + self.s(36)),
            ("GITLAB_TOKEN", "glpat-" + self.s(20, ALNUM + "_-")),
            ("SLACK_BOT_TOKEN", f"xoxb-{self.s(12, string.digits)}-{self.s(12, string.digits)}-{self.s(24)}"),
            ("SLACK_WEBHOOK", f"https://hooks.slack.com/services/T{self.s(8, up)}/B{self.s(8, up)}/{self.s(24)}"),
            ("DISCORD_WEBHOOK", f"https://discord.com/api/webhooks/{self.s(18, string.digits)}/{self.s(68, ALNUM + '_-')}"),
            ("STRIPE_KEY", "sk_" + "live_" + self.s(self.r.randint(24, 34))),
            ("GOOGLE_MAPS", "AIza" + self.s(35, ALNUM + "_-")),
            ("SENDGRID", f"SG.{self.s(22, ALNUM + '_-')}.{self.s(43, ALNUM + '_-')}"),
            ("NPM_AUTH", "npm_" + self.s(36)),
            ("SESSION", f"{header}.{payload}.{self.s(43, ALNUM + '_-')}"),
        ]


Case = tuple[list[str], bool]  # lines, positive (on the first line)


def _yaml_vars(g: Gen) -> tuple[str, list[Case]]:
    p = g.password
    pos: list[Case] = [
        ([f"{g.word()}_db_password: {p()}"], True),
        ([f'redis_password: "{p()}"'], True),
        ([f"app_secret_key: '{p()}'"], True),
        ([f"mariadb_root_password: {p()}"], True),
        ([f"smtp_pass: {p()}"], True),
        ([f'jwt_signing_secret: "{g.s(40)}"'], True),
        ([f"api_token: {g.s(32)}"], True),
        (["users:", f"  - name: {g.word()}", f"    password: {p()}"], False),
    ]
    neg: list[Case] = [
        ([f'db_password: "{{{{ vault_{g.word()}_password }}}}"'], False),
        ([f"redis_password: \"{{{{ lookup('keywarden.secrets.secret', '{g.word()}.password') }}}}\""], False),
        (["app_secret_key: !vault |", "  $ANSIBLE_VAULT;1.1;AES256", f"  {g.hexs(64)}", f"  {g.hexs(64)}"], False),
        ([f"api_token: ENC[AES256_GCM,data:{g.s(24)}=,iv:{g.s(43)}=,tag:{g.s(22)}==,type:str]"], False),
        ([f"password_min_length: {g.r.randint(12, 64)}"], False),
        (["password_max_age_days: 90"], False),
        (['smtp_password: ""'], False),
        ([f"db_password_file: /run/secrets/{g.word()}"], False),
        ([f"app_port: {g.r.randint(1024, 65000)}"], False),
        ([f"release_checksum: sha256:{g.hexs(64)}"], False),
        ([f"git_commit: {g.hexs(40)}"], False),
        (["login_form_password_field: password"], False),
        ([f"{g.word()}_host: {g.host()}"], False),
    ]
    # the user list's password sits on its third line
    cases = pos[:-1] + neg + [(["users:", f"  - name: {g.word()}"], False), ([f"    password: {p()}"], True)]
    dirname = g.r.choice(("group_vars/all", "host_vars/web1", "roles/app/defaults"))
    return f"{dirname}/main.yml", cases


def _ansible_tasks(g: Gen) -> tuple[str, list[Case]]:
    p = g.password
    cases: list[Case] = [
        (["- name: Create the app login", "  community.postgresql.postgresql_user:", f"    name: {g.word()}"], False),
        ([f"    password: {p()}"], True),
        ([f'    login_password: "{p()}"'], True),
        (["- name: Add a user"], False),
        ([f'  ansible.builtin.command: mysql -u root --password={p()} -e "select 1"'], True),
        ([f"- ansible.builtin.user: name={g.word()} password={p()}"], True),
        (["- name: Templated", "  community.mysql.mysql_user:", f"    name: {g.word()}"], False),
        (["    password: \"{{ lookup('keywarden.secrets.secret', 'app_db.password') }}\""], False),
        (['    login_password: "{{ __keywarden_target_admin_password }}"'], False),
        (["  no_log: true"], False),
        (["  when: app_password is defined and app_password | length > 0"], False),
        ([f"- ansible.builtin.user: name={g.word()} password=\"{{{{ pw | password_hash('sha512') }}}}\""], False),
        (
            ["- ansible.builtin.uri:", "    url: https://app.internal/login", "    body_format: form-urlencoded", "    body:", "      username_field: user"],
            False,
        ),
        (["      password_field: password"], False),
    ]
    return f"roles/{g.word()}/tasks/main.yml", cases


def _inventory(g: Gen) -> tuple[str, list[Case]]:
    p = g.password
    cases: list[Case] = [
        (["[web]"], False),
        ([f"web{g.r.randint(1, 9)} ansible_host=10.0.0.{g.r.randint(2, 250)} ansible_password={p()}"], True),
        ([f"db1 ansible_user=deploy ansible_become_pass='{p()}'"], True),
        ([f"db2 ansible_ssh_pass={p()} ansible_port=22"], True),
        ([f"web{g.r.randint(10, 19)} ansible_host=10.0.1.{g.r.randint(2, 250)} ansible_user=deploy"], False),
        (["[all:vars]"], False),
        (['ansible_password="{{ vault_ssh_password }}"'], False),
        (["ansible_become_password_file=/etc/ansible/become"], False),
        ([f"ansible_become_password={p()}"], True),
    ]
    return "inventories/production/hosts", cases


def _compose(g: Gen) -> tuple[str, list[Case]]:
    p = g.password
    cases: list[Case] = [
        (["---", "services:", "  db:", "    image: postgres:16", "    environment:"], False),
        ([f"      POSTGRES_PASSWORD: {p()}"], True),
        (["      POSTGRES_USER: app"], False),
        (["  app:", "    image: app:1", "    environment:"], False),
        ([f"      - REDIS_PASSWORD={p()}"], True),
        ([f"      - API_KEY={g.s(40)}"], True),
        (["      - DB_PASSWORD=${DB_PASSWORD:?set DB_PASSWORD}"], False),
        (["      - SESSION_SECRET=${SESSION_SECRET}"], False),
        (["      POSTGRES_PASSWORD_FILE: /run/secrets/pg"], False),
        ([f'      MINIO_ROOT_PASSWORD: "{p()}"'], True),
        (["    env_file: ${KEYWARDEN_ENV_DIR:?}/app.env"], False),
    ]
    return f"stacks/{g.word()}/docker-compose.yml", cases


def _env(g: Gen) -> tuple[str, list[Case]]:
    p = g.password
    cases: list[Case] = [
        ([f"DB_PASSWORD={p()}"], True),
        ([f'REDIS_PASSWORD="{p()}"'], True),
        ([f"JWT_SECRET={g.s(48)}"], True),
        ([f"SECRET_KEY_BASE={g.hexs(64)}"], True),
        ([f"SMTP_PASS='{p()}'"], True),
        (["DB_PASSWORD_MIN_LENGTH=16"], False),
        (["APP_ENV=production"], False),
        ([f"DB_HOST={g.host()}"], False),
        (["MAIL_PASSWORD="], False),
        (["CACHE_PASSWORD=${CACHE_PASSWORD}"], False),
        ([f"BUILD_SHA={g.hexs(40)}"], False),
    ]
    return g.r.choice((".env", f"{g.word()}.env", ".env.production")), cases


def _ini(g: Gen) -> tuple[str, list[Case]]:
    p = g.password
    cases: list[Case] = [
        (["[client]", "user = app"], False),
        ([f"password = {p()}"], True),
        (["[app]"], False),
        ([f"secret_key={g.s(50)}"], True),
        ([f"smtp_password: {p()}"], True),
        (["password_min_length = 14"], False),
        (["admin_password = %(ADMIN_PASSWORD)s"], False),
        (["db_password ="], False),
        ([f"host = {g.host()}"], False),
        (["auth_method = scram-sha-256"], False),
    ]
    return g.r.choice(("my.cnf", "app.ini", "settings.cfg", "service.conf")), cases


def _properties(g: Gen) -> tuple[str, list[Case]]:
    p = g.password
    cases: list[Case] = [
        ([f"spring.datasource.password={p()}"], True),
        (["spring.datasource.username=app"], False),
        ([f"app.jwt.secret={g.s(44)}"], True),
        ([f"mail.smtp.password = {p()}"], True),
        (["spring.datasource.password=${DB_PASSWORD}"], False),
        (["security.password.min-length=12"], False),
        ([f"server.port={g.r.randint(1024, 65000)}"], False),
        ([f"oauth.client-secret={g.s(32)}"], True),
    ]
    return "src/main/resources/application.properties", cases


def _json(g: Gen) -> tuple[str, list[Case]]:
    p = g.password
    cases: list[Case] = [
        (["{", f'  "name": "{g.word()}",'], False),
        ([f'  "password": "{p()}",'], True),
        ([f'  "apiKey": "{g.s(32)}",'], True),
        ([f'  "client_secret": "{g.s(40)}",'], True),
        (['  "passwordMinLength": 12,'], False),
        (['  "passwordField": "password",'], False),
        (['  "dbPassword": "",'], False),
        (['  "smtpPassword": "{{ smtp_password }}",'], False),
        ([f'  "checksum": "{g.hexs(64)}",'], False),
        ([f'  "authToken": "{g.s(36)}"'], True),
        (["}"], False),
    ]
    return f"config/{g.word()}.json", cases


def _toml(g: Gen) -> tuple[str, list[Case]]:
    p = g.password
    cases: list[Case] = [
        (["[database]", f'host = "{g.host()}"'], False),
        ([f'password = "{p()}"'], True),
        (['password_env = "DB_PASSWORD"'], False),
        ([f"api_token = '{g.s(32)}'"], True),
        (['password = ""'], False),
        (["[policy]", "password_min_length = 12"], False),
        ([f'webhook_secret = "{g.s(32)}"'], True),
    ]
    return f"{g.word()}.toml", cases


def _dockerfile(g: Gen) -> tuple[str, list[Case]]:
    p = g.password
    cases: list[Case] = [
        (["FROM python:3.11-slim", "ARG DB_PASSWORD"], False),
        ([f"ENV DB_PASSWORD={p()}"], True),
        ([f"ENV ADMIN_PASSWORD {p()}"], True),
        ([f"ARG API_TOKEN={g.s(32)}"], True),
        (["ENV REDIS_PASSWORD=${REDIS_PASSWORD}"], False),
        (["RUN --mount=type=secret,id=db_password cat /run/secrets/db_password"], False),
        ([f"RUN mysql -u root --password={p()} < /init.sql"], True),
        (["ENV APP_ENV=production"], False),
    ]
    return g.r.choice(("Dockerfile", "docker/Dockerfile.app", "Containerfile")), cases


def _shell(g: Gen) -> tuple[str, list[Case]]:
    p = g.password
    cases: list[Case] = [
        (["#!/bin/sh", "set -eu"], False),
        ([f"export DB_PASSWORD={p()}"], True),
        ([f"PGPASSWORD='{p()}' psql -h db -U app -c 'select 1'"], True),
        ([f'mysqldump --password="{p()}" orders > /backup/orders.sql'], True),
        (['export DB_PASSWORD="${DB_PASSWORD:?}"'], False),
        (["read -r -s password"], False),
        (['password=$(cat "/run/secrets/db")'], False),
        (['if [ -z "$password" ]; then exit 1; fi'], False),
        ([f"API_TOKEN={g.s(32)}"], True),
    ]
    return f"scripts/{g.word()}.sh", cases


def _python(g: Gen) -> tuple[str, list[Case]]:
    p = g.password
    cases: list[Case] = [
        (["import os", ""], False),
        ([f'DB_PASSWORD = "{p()}"'], True),
        ([f"API_KEY = '{g.s(32)}'"], True),
        ([f'conn = connect(host="db", user="app", password="{p()}")'], True),
        (['password = os.environ["DB_PASSWORD"]'], False),
        (['token = os.getenv("API_TOKEN")'], False),
        (['password = request.form["password"]'], False),
        (['PASSWORD_FIELD = "password"'], False),
        (["password = getpass.getpass()"], False),
        (["if password != confirm_password:", "    raise ValueError('mismatch')"], False),
        ([f'settings = {{"secret_key": "{g.s(50)}"}}'], True),
    ]
    return f"app/{g.word()}.py", cases


def _url(g: Gen) -> tuple[str, list[Case]]:
    p = g.s
    cases: list[Case] = [
        ([f"DATABASE_URL=postgresql://app:{p(20)}@{g.host()}:5432/orders"], True),
        ([f"broker_url: amqp://worker:{p(16)}@{g.host()}:5672/vhost"], True),
        ([f"cache = redis://:{p(24)}@{g.host()}:6379/0"], True),
        ([f"MONGO_URI=mongodb://root:{p(18)}@{g.host()}:27017/admin"], True),
        (["DATABASE_URL=postgresql://app:${DB_PASSWORD}@db:5432/orders"], False),
        (['broker_url: "amqp://worker:{{ rabbit_password }}@mq:5672/"'], False),
        ([f"docs: https://{g.host()}/path/to/page"], False),
        ([f"READONLY_URL=postgresql://reader@{g.host()}/orders"], False),
    ]
    return g.r.choice(("urls.env", "connections.yml", "services.ini")), cases


def _private_key(g: Gen) -> tuple[str, list[Case]]:
    body = [g.s(64, ALNUM + "+/") for _ in range(g.r.randint(4, 12))]
    kind = g.r.choice(("RSA ", "EC ", "OPENSSH ", ""))
    cases: list[Case] = [
        # the block, key line included: detect-secrets reports a YAML block scalar on its key's line
        (["tls_key: |", f"  -----BEGIN {kind}PRIVATE KEY-----", *(f"  {line}" for line in body), f"  -----END {kind}PRIVATE KEY-----"], True),
        (["tls_cert: |", "  -----BEGIN CERTIFICATE-----", *(f"  {g.s(64, ALNUM + '+/')}" for _ in range(3)), "  -----END CERTIFICATE-----"], False),
        ([f"ssh_public_key: ssh-ed25519 {g.s(68, ALNUM + '+/')} deploy@{g.word()}"], False),
    ]
    return f"files/{g.word()}_tls.yml", cases


def _tokens(g: Gen) -> tuple[str, list[Case]]:
    style = g.r.choice(("env", "yaml", "py"))
    cases: list[Case] = []
    for name, value in g.tokens():
        # tokens under names that are no credential keywords: only the format gives them away
        label = f"{name.lower()}_{g.word()}"
        if name == "AWS_SECRET_ACCESS_KEY":
            # no tool can tell this one by its format alone: it is found by its well-known name
            cases.append(([f"aws_secret_access_key = {value}"], True))
            continue
        if style == "env":
            cases.append(([f"{label.upper().replace('TOKEN', 'T').replace('KEY', 'K').replace('SECRET', 'S')}={value}"], True))
        elif style == "yaml":
            cases.append(([f"{label.replace('token', 't').replace('key', 'k').replace('secret', 's')}: {value}"], True))
        else:
            cases.append(([f'{label.upper().replace("TOKEN", "T").replace("KEY", "K").replace("SECRET", "S")} = "{value}"'], True))
    cases += [
        ([f"request_id: {g.s(8, '0123456789abcdef')}-{g.hexs(4)}-{g.hexs(4)}-{g.hexs(4)}-{g.hexs(12)}"], False),
        ([f"image_digest: sha256:{g.hexs(64)}"], False),
        ([f"build: {g.s(40, ALNUM)}"], False),
    ]
    suffix = {"env": "tokens.env", "yaml": "tokens.yml", "py": "tokens.py"}[style]
    return f"{g.word()}/{suffix}", cases


BUILDERS: dict[str, Callable[[Gen], tuple[str, list[Case]]]] = {
    "yaml-vars": _yaml_vars,
    "ansible-tasks": _ansible_tasks,
    "inventory": _inventory,
    "compose": _compose,
    "env": _env,
    "ini": _ini,
    "properties": _properties,
    "json": _json,
    "toml": _toml,
    "dockerfile": _dockerfile,
    "shell": _shell,
    "python": _python,
    "url": _url,
    "private-key": _private_key,
    "tokens": _tokens,
}


def build(root: Path, seed: int, files_per_format: int = 12) -> dict[str, dict[str, object]]:
    """Write the corpus under ``root``. Returns {relative path: {"format": f, "positives": [[first, last], ...]}}."""
    rng = random.Random(seed)  # noqa: S311  reproducible shapes from a seed; the values only need to look random
    g = Gen(rng)
    labels: dict[str, dict[str, object]] = {}
    for fmt, builder in BUILDERS.items():
        for i in range(files_per_format):
            rel, cases = builder(g)
            rel = f"{fmt}/{i:03d}/{rel}"
            if fmt in ("env", "ini", "properties", "tokens", "url"):
                rng.shuffle(cases)
            lines: list[str] = []
            positives: list[list[int]] = []
            for case_lines, positive in cases:
                if positive:
                    # a multi-line case (a PEM block) counts as found wherever in the block a tool reports it
                    positives.append([len(lines) + 1, len(lines) + len(case_lines)])
                lines.extend(case_lines)
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n")
            labels[rel] = {"format": fmt, "positives": positives}
    return labels


def score(labels: dict[str, dict[str, object]], found: set[tuple[str, int]]) -> dict[str, dict[str, float]]:
    """Per-format precision and recall of ``found`` (relative path, line) against the labels."""
    per: dict[str, dict[str, float]] = {fmt: {"tp": 0, "fp": 0, "fn": 0} for fmt in BUILDERS}
    by_file: dict[str, set[int]] = {}
    for rel, line in found:
        by_file.setdefault(rel, set()).add(line)
    for rel, label in labels.items():
        ranges = label["positives"]
        got = by_file.get(rel, set())
        counts = per[str(label["format"])]
        for first, last in ranges:  # type: ignore[attr-defined]
            counts["tp" if any(first <= line <= last for line in got) else "fn"] += 1
        counts["fp"] += sum(1 for line in got if not any(first <= line <= last for first, last in ranges))  # type: ignore[attr-defined]
    for counts in per.values():
        tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
        counts["precision"] = tp / (tp + fp) if tp + fp else 1.0
        counts["recall"] = tp / (tp + fn) if tp + fn else 1.0
    return per
