# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hardcoded-credential scanner: the engine behind scripts/audit/scan-secrets and the keywarden.secrets.scan module.

Guarantees:
- stdlib only (it runs inside a module on managed hosts, Python 3.8+ syntax at runtime);
- a finding never carries the value: only a masked excerpt (at most the first 4 characters of a value
  of 16 or more, nothing of a shorter one), a fingerprint (PBKDF2, 100 rounds, of rule, path and value), stable
  across runs so a baseline can accept it, and an explanation that names the rule and the value's shape, never
  its characters;
- it understands Ansible: ``!vault`` / ``$ANSIBLE_VAULT``, SOPS ``ENC[...]``, Jinja, lookups, ``${VAR}``,
  ``os.environ``/``getenv``, empty values, password *policy* keys and form field names are not findings;
  a value that *reads* a secret (``$(cat /run/secrets/x)``, a path, a ``*_FILE`` key) is not one either, but a
  hardcoded fallback inside a reference (``${VAR:-x}``, ``getenv("X", "x")``, ``| default('x')``) is;
- lockfiles are read for token formats and credentials in URLs only: their keys are package names;
- bad input never stops a scan: unreadable, binary, huge, non-UTF-8 files and symlink loops each give a
  warning and the rest is scanned. Memory is bounded by the block size, not by the file or tree size.

The token formats follow the patterns of detect-secrets (Yelp, Apache-2.0) and gitleaks (MIT), re-written
as a handful of combined regular expressions: one pass over a block per rule family, no per-line loop.
"""

from __future__ import annotations

import base64
import fnmatch
import grp
import hashlib
import json
import os
import pwd
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # (start, value_start, value_end, rule, severity, key, how): a finding before lines and excerpts are worked out
    Hit = tuple[int, int, int, str, str, str, str]

SCANNER_VERSION = "1"
BLOCK_SIZE = 4 * 1024 * 1024
DEFAULT_MAX_FILE_SIZE = 64 * 1024 * 1024
DEFAULT_EXCLUDE_DIRS = (".git", ".hg", ".svn", "node_modules", ".venv", "venv", "__pycache__", ".tox", ".mypy_cache", ".ruff_cache", ".pytest_cache")
ALLOW_MARKERS = ("keywarden: allow", "keywarden:allow", "pragma: allowlist secret")
SEVERITIES = ("critical", "high", "medium", "low")

# ---- token formats -------------------------------------------------------------------------------
# (rule, severity, pattern, group holding the secret). Patterns start with their literal prefix (no leading
# `\b`), so the regex engine can skip ahead with a substring search; the word boundary is checked afterwards.
_TOKEN_RULES: list[tuple[str, str, str, int]] = [
    ("private-key", "critical", r"-----BEGIN (?:(?:RSA|DSA|EC|OPENSSH|PGP|ENCRYPTED|SSH2 ENCRYPTED) )?PRIVATE KEY(?: BLOCK)?-----", 0),
    ("aws-access-key-id", "high", r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}(?![0-9A-Za-z])", 0),
    ("github-token", "critical", r"(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82})(?![A-Za-z0-9])", 0),
    ("gitlab-token", "critical", r"glpat-[A-Za-z0-9_-]{20}(?![A-Za-z0-9_-])", 0),
    ("slack-token", "critical", r"xox[abposr]-[0-9A-Za-z]{10,48}(?:-[0-9A-Za-z]{10,48}){1,3}(?![0-9A-Za-z])", 0),
    ("slack-webhook", "high", r"https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9+/]{43,56}", 0),
    ("discord-webhook", "high", r"https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/[0-9]{17,20}/[A-Za-z0-9_-]{60,70}", 0),
    ("teams-webhook", "high", r"\.webhook\.office\.com/webhookb2/[A-Za-z0-9@/-]{60,}", 0),
    ("stripe-key", "critical", r"(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{24,99}(?![0-9A-Za-z])", 0),
    ("google-api-key", "high", r"AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])", 0),
    ("sendgrid-key", "high", r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])", 0),
    ("npm-token", "critical", r"npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])", 0),
    ("pypi-token", "critical", r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}", 0),
    ("openai-key", "high", r"sk-(?:proj-)?[A-Za-z0-9_-]{20,}T3BlbkFJ[A-Za-z0-9_-]{20,}", 0),
    ("twilio-key", "high", r"(?:AC|SK)[0-9a-f]{32}(?![0-9A-Za-z])", 0),
    ("azure-storage-key", "critical", r"AccountKey=([A-Za-z0-9+/]{86}==)", 1),
    ("jwt", "high", r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}", 0),
]
# rules whose match must not continue a word on the left (`xAKIA...` is no key)
_LEFT_BOUNDARY = frozenset({"aws-access-key-id", "github-token", "gitlab-token", "slack-token", "stripe-key", "google-api-key", "sendgrid-key",
                            "npm-token", "pypi-token", "openai-key", "twilio-key", "jwt"})  # fmt: skip
_TOKEN_RES = [(rule, sev, re.compile(pattern), group) for rule, sev, pattern, group in _TOKEN_RULES]
# a private-key header is a key only when key material follows it (PEM headers, `\n` escapes, quotes and string
# concatenation may come between): `"-----BEGIN OPENSSH PRIVATE KEY-----" in data` is a comparison, not a key
_PEM_BODY_RE = re.compile(r"(?:[\s\"'+,]|\\[nr]|[A-Z][\w-]*: [^\n\\]*)*[A-Za-z0-9+/=]{32}")
# the AWS secret key has no format of its own: it is found by its well-known name (matched on lower-cased text)
_AWS_SECRET_RE = re.compile(r"aws_?secret_?(?:access_?)?key[\"']?\s*[:=]\s*[\"']?([a-z0-9/+]{40})(?![a-z0-9/+])")
_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")

# ---- connection URLs with a password -------------------------------------------------------------
# anchored on the literal `://`; the scheme before it is checked in Python
_URL_RE = re.compile(r"://([^\s:/@'\"<>`{}]{0,128}):([^\s@/'\"<>`]{1,256})@[^\s/'\"<>`]")
# Go's MySQL driver DSN has no scheme: `user:password@tcp(host:3306)/db`
_DSN_RE = re.compile(r"([\w.-]{1,64}):([^\s@:/'\"<>`()]{1,128})@(?:tcp|unix)\(")

# ---- key = value assignments ---------------------------------------------------------------------
# A cheap anchor: every key that can name a credential contains one of these. The key around it is then
# taken apart in Python (cached), which keeps the regex engine on a literal-ish scan.
_KEY_ANCHOR = re.compile(r"p(?:ass|wd|w(?![a-z]))|secret|token|key|auth|cred|webhook")  # on lower-cased text
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_SEP_RE = re.compile(r"[\"']?\]?[ \t]*(?:(:=|=>|=(?!=)|:(?=[ \t]|$|[\"']))|(?<=[\w])(?=[ \t]+[^\s=:]))[ \t]*", re.M)
_TOKEN_SPLIT = re.compile(r"[_.\-]+|(?<=[a-z0-9])(?=[A-Z])")
# `pass` counts as a name segment (`smtp_pass`, `smtpPass`); glued to a word it mostly is another word
# (`minipass`, `bypass`, `compass`), except after these credential contexts (`dbpass`, `keypass`, `requirepass`)
_PASS_PREFIXES = frozenset(
    {"db", "pg", "my", "sql", "mysql", "root", "admin", "user", "usr", "key", "store", "trust", "smtp", "mail", "ftp", "ssh", "sudo", "become",
     "login", "ldap", "bind", "proxy", "web", "app", "api", "redis", "vnc", "require", "master", "auth", "client", "server", "conn", "wifi", "wpa"}
)  # fmt: skip
_KEY_QUALIFIERS = frozenset(
    {"api", "access", "secret", "private", "priv", "signing", "sign", "encryption", "enc", "master", "app", "auth", "client", "license",
     "account", "storage", "shared", "hmac", "jwt", "session", "crypt", "crypto", "cookie", "consumer", "service", "deploy", "subscription"}
)  # fmt: skip
# key tokens that make the key a *property* of a credential (policy, location, label), not the credential
_NOT_SECRET_TOKENS = frozenset(
    {"min", "max", "minimum", "maximum", "length", "len", "policy", "policies", "age", "expiry", "expire", "expires", "expiration", "ttl", "timeout",
     "rotation", "rotate", "days", "count", "attempts", "retries", "file", "files", "path", "paths", "dir", "directory", "filename", "name", "names",
     "field", "fields", "label", "prompt", "placeholder", "hint", "type", "types", "method", "mode", "enabled", "enable", "disable", "disabled",
     "required", "require", "strength", "complexity", "regex", "pattern", "format", "encoding", "algorithm", "algo", "hash", "hashed", "digest",
     "env", "var", "variable", "command", "cmd", "helper", "plugin", "provider", "store", "manager", "reset", "change", "changed", "generate",
     "generator", "chars", "charset", "lowercase", "uppercase", "digits", "special", "symbols", "history", "reuse", "lockout", "header", "param",
     "question", "endpoint", "validation", "validator", "validity", "url", "uri", "id", "ids", "version", "size", "bits", "keyid", "keyring",
     "keyserver", "keyfile", "keystore", "keytab", "location", "source", "src", "ref", "reference", "lookup", "scheme",
     "update", "updated", "auto", "public", "pub", "cert", "certificate", "fingerprint", "usage", "port",
     "kind", "class", "scope", "scopes", "audience", "issuer", "exists", "present", "set", "check", "verify",
     "description", "desc", "doc", "comment", "help", "template", "example", "list", "map", "keys", "tokens", "secrets", "passwords",
     "encryption", "encrypted", "auth", "authentication", "login", "user", "username", "owner", "group", "lifetime", "interval", "prefix",
     "suffix", "marker", "begin", "end", "footer", "separator", "delimiter", "err", "error", "errors", "msg", "message", "messages", "text", "str",
     "string", "title", "at", "date", "time", "timestamp", "created", "expired", "reqd", "allowed", "flag", "flags", "option", "options", "opt",
     "arg", "args", "attr", "attribute", "attributes", "column", "col", "status", "state", "info", "details", "detail", "support", "supported",
     "enforced", "regexp", "validate", "request", "response", "handler", "callback", "func", "function", "model", "schema", "form", "input",
     "widget", "view", "spec", "obj", "object", "updates", "sent", "used", "renewal", "override", "warning", "strategy"}
)  # fmt: skip
# a first token that is a verb makes the key an action or a switch about a credential (`update_password: always`,
# `generate_secret: true`), not the credential; adjectives (`new_`, `old_`, `default_`, `admin_`) do not
_ACTION_TOKENS = frozenset(
    {"update", "change", "reset", "generate", "gen", "force", "verify", "check", "validate", "show", "hide", "display", "expire", "allow",
     "require", "use", "skip", "ignore", "sync", "return", "encrypt", "hash", "no", "empty", "random", "prompt", "ask", "read", "get", "fetch",
     "load", "save", "write", "create", "delete", "remove", "rotate", "revoke", "list", "is", "has", "can", "should", "must", "needs", "include",
     "exclude", "export", "import", "manage", "copy", "send", "print", "log", "mask", "lookup", "find", "search", "reuse", "renew", "override"}
)  # fmt: skip
# what may follow a credential word glued into one name segment (`secretkey`, `passwordvalue`); anything else makes it
# another thing (`secretname`, `passwordhashvalues`, `tokenurl`)
_GLUED_TAILS = frozenset({"", "s", "key", "accesskey", "value", "val", "plain", "plaintext", "raw", "b64", "base64", "hex", "text"})
# ...except the ones that are secrets themselves
_SECRET_ID_KEYS = frozenset({"secret_id", "secretid"})

# ---- values that are not credentials --------------------------------------------------------------
# Placeholders say they stand for a value: markup (`<password>`, `[token]`), fillers (`xxx`, `***`), the
# instructions people write (`changeme`, `your_token_here`, `example…`), and the bare noun of the field
# (`password`, `secret`). A value that merely *contains* such a word (`mysecretpassword`, `demo_2024`) is no
# placeholder: sample applications run with exactly such values.
_PLACEHOLDER_RE = re.compile(
    r"(?i)^(?:<[^>]*>.*|\[[^\]]*\]|\(+[^)]*\)+|x{3,}|\*+|\.{3,}|…|#+|-+|_+|\?+|null|none|nil|~|true|false|yes|no|on|off|undefined|tbd|todo|fixme|"
    r"redacted|masked|hidden|placeholder|secret|secrets|password|passwords|passwd|pass|pwd|token|key|apikey|api[-_]key|credentials?|"
    r"value|values|username|user|field|string|str|bool|boolean|int|integer|list|dict|required|optional|not[-_ ]?set|unset|empty|\w+:(?:none|null)|"
    # switches and modes that sit under credential-looking option names (`update_password: always`)
    r"enabled?|disabled?|always|never|auto|automatic|auto[-_]generated?|generated?|random|default|present|absent|on[-_]create|manual|prompt|"
    r"plain(?:text)?|clear(?:text)?|encrypted|hashed|hidden|visible|sensitive|secure|text|input|"
    r"change[-_. ]?(?:me|it|this)(?:[-_. ].*)?|replace[-_. ]?me.*|set[-_. ]?me|fill[-_. ]?me|please[-_. ].*|"
    r"your[-_. ]?.*|.*[-_. ]here|dummy.*|sample|fake|"
    r"\d{1,3}|[0-9.]+[smhdw]?)$"
)
# anywhere in a value: filler runs (`XXXX`, `***`), an example marker (`…EXAMPLE`, `example-key`), an elided
# tail (`AKIA...`), a run of the alphabet. A bare `example` is no placeholder: `POSTGRES_PASSWORD: example` is
# the password it sets.
_PLACEHOLDER_PART_RE = re.compile(r"X{4,}|x{4,}|\*{4,}|EXAMPLE|(?i:^example[-_.]|[-_.]example$|0123456789|abcdefghijk)|(?:\.\.\.|…)$")
# References read a value from elsewhere: templates, variables, lookups, command substitutions, secret files
_REFERENCE_RE = re.compile(
    r"\{\{|\{%|\$\{|^\$+[A-Za-z_(]|\$\(|^`|%\([\w.]+\)[sd]|^%[sdv]$|^ENC\[|ENC\[AES256_GCM|^!vault|\$ANSIBLE_VAULT|\blookup\s*\(|\bquery\s*\(|"
    r"os\.environ|getenv|process\.env|ENV\[|System\.getenv|^@Value\(|^\{[^{}]*\}$|^%[\w.]+%$|^\$\w+\$$|^%env\(|^env\(|^secret\(|^<%=|^#\{|"
    r"^@\w+@$|^__\w+__$|/run/secrets/|^file://|^arn:|\{\w*\}|^\{[A-Za-z_]|-----BEGIN |"
    # printf verbs between separators (`%s:%s@%s`), not a `%` inside a random key
    r"(?:^|(?<=[\s/:@=.,'\"(\[]))%[-+#0-9.]*[sdv](?=$|[\s/:@.,;?&)'\"\]-])|%\[\d+\][sdv]|"
    # encrypted values: OpenSSL `Salted__`, HashiCorp transit, AWS KMS ciphertext
    r"^U2FsdGVkX1|^vault:v\d+:|^AQICAH"
)
# values of other kinds that sit under credential keys: URLs (a password inside one is the URL rule's), command-line
# flags, dates, small hex numbers, password *hashes* (crypt, bcrypt, LDAP {SSHA}, MySQL, PostgreSQL md5), which are
# what a system is meant to store
_OTHER_VALUE_RE = re.compile(
    r"^[A-Za-z][A-Za-z0-9+.-]*://|^--?[A-Za-z][\w-]*=?$|^\d{4}-\d{2}-\d{2}|^0x[0-9A-Fa-f]{1,16}$|"
    r"(?:^|:)\$(?:1|2[abxy]?|5|6|y|gy|7|apr1|argon2(?:id|i|d)|pbkdf2[-\w]*|scrypt|sha1|sha256|sha512|md5)\$|"
    r"^\{(?i:ssha|sha|smd5|md5|crypt|pbkdf2[-\w]*|ssha256|ssha512|sha256|sha512)\}|^\*[0-9A-F]{40}$|^md5[0-9a-f]{32}$|^SCRAM-SHA-256\$"
)
# prose: words separated by spaces (`No API token created`, `Default password to be set`): a message, not a value
_TWO_WORDS_RE = re.compile(r"[A-Za-z]{2,}[,.!?:;]?\s+(?:-\s+)?[A-Za-z]{2,}")
_THREE_WORDS_RE = re.compile(r"[A-Za-z]{2,}[,.!?:;]?\s+(?:-\s+)?[A-Za-z]{2,}[,.!?:;]?\s+(?:-\s+)?[A-Za-z]{2,}")
# a file path (`/run/secrets/db`, `~/.pgpass`, `./secret.txt`): a secret file is read, its path is no credential
_PATH_RE = re.compile(r"^(?:~|\.{1,2})?/(?:[A-Za-z$][\w@.+$-]*/)+[\w@.+$-]*$|^(?:~|\.{1,2})/[\w@.+-]+$|^(?:[a-z0-9][a-z0-9_.-]*/)+[a-z0-9_.{}-]*$")
# a version or range of versions (`^4.0.0`, `>=1.2,<2`, `1.x || 2.x`): dependency manifests, not credentials
_VERSION_PART_RE = re.compile(r"^(?:[~^=v]|[<>]=?|[=!~]=)?\d+(?:\.(?:\d+|[xX*]))+(?:[-+][0-9A-Za-z.-]+)?$|^\*$|^-$")
_VERSION_SPLIT = re.compile(r"\s*(?:\|\||,)\s*|\s+")
# snake_case, camelCase or UPPER_CASE names made of words (`user_password`, `newPassword`, `NEW_PASSWORD`), not
# random strings that happen to fit
_IDENTIFIER_RE = re.compile(r"^[a-z]{2,}(?:[_-][a-z]{2,}[0-9]*)+$|^[a-z]{2,}(?:[A-Z][a-z]{2,})+$|^[A-Z]{2,}(?:_[A-Z0-9]{2,})+$")
# in code: camelCase, PascalCase of three words or more, CONSTANT_NAMES of three, dotted names (`hasData`,
# `IntelVtdPassThrough`, `VALUE_SPECIFIED_IN_NO_LOG`, `module.Class`, `a.b.c`)
_NAME_PART = r"(?:[a-z_][a-z0-9_]*|[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]+)*|[a-z]+(?:[A-Z][a-z0-9]+)+)"
_CODE_NAME_RE = re.compile(
    r"^[a-z]+(?:[A-Z][a-z]+)+$|^(?:[A-Z][a-z]+){3,}$|^[A-Z]+(?:_[A-Z]+){2,}$|"
    rf"^{_NAME_PART}(?:\.{_NAME_PART}){{2,}}$|^[a-z_][a-z0-9_]*\.[A-Z][a-z]+(?:[A-Z][a-z]+)*$"
)
# plain words and identifiers: in code and prose they are names (`"api_key": "overlap"`), not credentials
_WORD_RE = re.compile(r"^[a-z]+(?:[ _.-][a-z]+)*$")
_CODE_KINDS = frozenset({"code", "generic", "template"})
# the words and camelCase a password is written in (`postgres`, `secretPass`), not a constant or a dotted name
_PASSWORD_WORD_RE = re.compile(r"^[a-z]+(?:[ _.-][a-z]+)*$|^[A-Za-z][a-z]+(?:[A-Z][a-z]+)+$")
_CALL_RE = re.compile(r"^[\w.]+(?:\(|\[)")
_CODE_EXPR_RE = re.compile(r"^[\w.]+(?:\(|\[)|^[A-Za-z_]\w*\.[A-Za-z_][\w.]*$|^(?:self|this|args|opts|options|config|settings|params|request|kwargs)\b")

# ---- fallbacks inside references --------------------------------------------------------------------
# `${NAME:-default}` `${NAME-default}` `${NAME:=default}` (shell, compose) and `${name:default}` (Spring); not
# `${NAME:?message}` (an error text) nor `${NAME:+alternative}`
_FALLBACK_RE = re.compile(r"\$\{(?:([A-Za-z_]\w*)(:?[-=])|([A-Za-z_][\w.-]*):(?![-=?+]))([^{}]*)\}")
# `{{ x | default('…') }}`, `{{ x | d("…") }}`
_JINJA_DEFAULT_RE = re.compile(r"\{\{[^{}]*?\|\s*(?:default|d)\(\s*(['\"])([^'\"\n]*)\1\s*(?:,\s*\w+\s*)?\)\s*\}\}")
# in code: `env("SECRET_KEY", "…")`, `os.environ.get("X", default="…")`, `getEnv("X", "…")`
_ARG_DEFAULT_RE = re.compile(r"\s*,\s*(?:default\s*=\s*|fallback\s*=\s*)?[rbuRBU]?([\"'`])")
# `process.env.X || "…"`, `ENV["X"] ?? "…"`, `getenv('X') ?: '…'`, `environ.get("X") or "…"`,
# `env::var("X").unwrap_or("…"…)`, `ENV.fetch("X") { "…" }`
_OR_DEFAULT_RE = re.compile(
    r"[\]\)]{0,2}\s*(?:\|\||\?\?|\?:|\bor\b|\.unwrap_or(?:_else)?\(\s*(?:\|[^|\n]*\|\s*)?(?:String::from\(\s*)?|\{\s*(?:\|[^|\n]*\|\s*)?)\s*([\"'`])"
)
# Kubernetes and ECS environment entries: `- name: DB_PASSWORD` / `value: …` (YAML), `{"name": "X", "value": "…"}`
_NAME_VALUE_RE = re.compile(
    r"[\"']?name[\"']?[ \t]*:[ \t]*[\"']?([A-Za-z_][\w.-]*)[\"']?[ \t]*(?:,[ \t]*|\r?\n[ \t]*(?:-[ \t]+)?)[\"']?value[\"']?[ \t]*:[ \t]*"
)
_ENV_CONTEXT_RE = re.compile(r"(?i)env|environ|config|setting|define")
_FORMAT_RE = re.compile(r"%[-+ #0-9.]*[sdvqr]|%\[\d+\][sdv]")  # printf verbs: `user:%s@host`
_CALLEE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:()")

_KIND_BY_EXT = {
    ".yml": "yaml", ".yaml": "yaml", ".json": "json", ".toml": "toml", ".ini": "ini", ".cfg": "ini", ".conf": "ini", ".cnf": "ini",
    ".properties": "ini", ".env": "env", ".sh": "shell", ".bash": "shell", ".zsh": "shell", ".ksh": "shell",
    ".py": "code", ".js": "code", ".ts": "code", ".jsx": "code", ".tsx": "code", ".go": "code", ".rb": "code", ".java": "code", ".php": "code",
    ".cs": "code", ".rs": "code", ".kt": "code", ".scala": "code", ".swift": "code", ".c": "code", ".h": "code", ".cpp": "code", ".pl": "code",
    ".mjs": "code", ".cjs": "code", ".groovy": "code", ".dart": "code", ".ex": "code", ".exs": "code", ".ps1": "code", ".psm1": "code",
    ".psd1": "code", ".md": "doc", ".markdown": "doc", ".rst": "doc", ".adoc": "doc",
    ".j2": "template", ".jinja": "template", ".jinja2": "template", ".tpl": "template", ".template": "template",
}  # fmt: skip
# dependency lockfiles: package names and integrity hashes, read for token formats and URL credentials only
_LOCKFILE_NAMES = frozenset(
    {"package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml", "poetry.lock", "cargo.lock", "go.sum", "gemfile.lock",
     "composer.lock", "pipfile.lock", "pdm.lock", "uv.lock", "mix.lock", "pubspec.lock", "podfile.lock", "flake.lock", "bun.lock",
     "packages.lock.json", "gradle.lockfile", "conda-lock.yml", "deno.lock", "paket.lock", "package.resolved", "gopkg.lock", "glide.lock"}
)  # fmt: skip
# credential files: the name says what the single line inside is (`db_password.txt`, `.secret`, `api-token`)
_SECRET_FILE_EXTS = frozenset({"", ".txt", ".secret", ".pass", ".password", ".pwd", ".token", ".key", ".cred", ".creds"})
_SECRET_FILE_WORDS = frozenset({"password", "passwd", "pass", "pwd", "passphrase", "secret", "secrets", "token", "credential", "credentials", "apikey"})
# `DB_PASSWORD=…`, `db.password: …`: a settings line, read by the assignment rules instead
_KEY_VALUE_LINE_RE = re.compile(r"^([A-Za-z_][\w.-]*)\s*[:=]")
_ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]{2,}$")


class Finding:
    """One credential found. Holds no value: a masked excerpt, a fingerprint and an explanation only."""

    __slots__ = ("path", "line", "column", "rule", "severity", "fingerprint", "excerpt", "key", "kind", "explain", "_span")

    def __init__(
        self, path: str, line: int, column: int, rule: str, severity: str, fingerprint: str, excerpt: str, key: str = "", kind: str = "", explain: str = ""
    ) -> None:
        self.path = path
        self.line = line
        self.column = column
        self.rule = rule
        self.severity = severity
        self.fingerprint = fingerprint
        self.excerpt = excerpt
        self.key = key
        self.kind = kind
        self.explain = explain
        self._span: tuple[int, int] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "rule": self.rule,
            "severity": self.severity,
            "fingerprint": self.fingerprint,
            "excerpt": self.excerpt,
            "key": self.key,
            "explain": self.explain,
        }


def fingerprint(rule: str, path: str, value: str) -> str:
    """Stable across runs and hosts; slow to invert for a weak password (PBKDF2), never the value itself."""
    salt = f"keywarden-scan/{SCANNER_VERSION}\0{rule}\0{path}".encode()
    return hashlib.pbkdf2_hmac("sha256", value.encode("utf-8", "surrogateescape"), salt, 100).hex()[:32]


def mask(value: str, rule: str = "") -> str:
    """Eight stars; a token format keeps its first 4 characters (its public prefix, e.g. ``ghp_``)."""
    shown = value[:4] if len(value) >= 20 and not rule.startswith(("hardcoded-", "url-", "secret-")) else ""
    return f"{shown}{'*' * 8}"


def file_kind(path: str) -> str:
    """The syntax family a file is read with; it decides how an unquoted value ends."""
    name = os.path.basename(path)
    lower = name.lower()
    if lower in _LOCKFILE_NAMES or lower.endswith((".lock", ".lockfile", "-lock.json", "-lock.yaml")):
        return "lockfile"
    if lower == ".env" or lower.startswith(".env.") or lower.endswith(".env"):
        return "env"
    if lower in (".netrc", "_netrc"):
        return "netrc"
    if lower.startswith(("dockerfile", "containerfile")) or lower.endswith((".dockerfile", ".containerfile")):
        return "dockerfile"
    ext = os.path.splitext(lower)[1]
    if ext in (".j2", ".jinja", ".jinja2", ".tpl", ".template"):
        inner = file_kind(path[: -len(ext)])
        return inner if inner != "generic" else "template"
    kind = _KIND_BY_EXT.get(ext)
    if kind:
        return kind
    if ext in _SECRET_FILE_EXTS and _secret_file_name(lower, ext):
        return "secretfile"
    parts = path.replace("\\", "/").split("/")
    if ext == "" and ("inventory" in parts or "inventories" in parts or lower in ("hosts", "inventory")):
        return "inventory"
    if "group_vars" in parts or "host_vars" in parts:
        return "yaml"
    return "generic"


def _secret_file_name(lower: str, ext: str) -> bool:
    """Whether a file name says it holds one credential: `db_password.txt`, `.secret`, `api-token`, `jwt.secret`."""
    stem = lower[: -len(ext)] if ext else lower
    tokens = _key_tokens(stem)
    if ext not in ("", ".txt", ".key"):
        tokens.append(ext[1:])
    if not tokens:
        return False
    last = tokens[-1]
    if last in _SECRET_FILE_WORDS or last.endswith(("password", "secret", "token")):
        return True
    return last == "key" and len(tokens) > 1 and tokens[-2] in _KEY_QUALIFIERS


def _key_tokens(key: str) -> list[str]:
    return [t.lower() for t in _TOKEN_SPLIT.split(key) if t]


_KEY_CACHE: dict[str, bool] = {}


def secret_key(key: str) -> bool:
    """Whether an assignment to ``key`` assigns a credential (as opposed to a policy, a path, a name)."""
    cached = _KEY_CACHE.get(key)
    if cached is not None:
        return cached
    result = _secret_key(key)
    if len(_KEY_CACHE) < 20000:
        _KEY_CACHE[key] = result
    return result


def _credential_word(tok: str, i: int, tokens: list[str]) -> str:
    """The credential word that name segment ``tok`` is or ends with ('' if none). Words match as name
    segments (`db_password`, `dbPassword`, `PGPASSWORD`), never inside another word (`fs-minipass`)."""
    last = i == len(tokens) - 1
    if tok in ("pass", "pw"):
        # short words are credentials only as the head noun: `smtp_pass`, not `pass_through_dma_support`
        return "password" if last else ""
    if tok in ("pwd", "passwd", "passphrase") or tok.endswith(("pwd", "passwd", "passphrase")):
        return "password"
    at = tok.find("passw")
    if at >= 0 and _glued_tail(tok, at, ("password", "passwort", "passwd", "passw")):
        return "password"
    if tok.endswith("pass") and (tok[:-4] in _PASS_PREFIXES or tok[:-4].endswith("store")):
        return "password"
    at = tok.find("secret")
    if at >= 0 and _glued_tail(tok, at, ("secret",)):
        return "secret"
    if tok in ("token", "apitoken", "authtoken", "accesstoken", "bearer") or (tok.endswith("token") and len(tok) > 5 and last):
        return "token"
    if tok in ("apikey", "secretkey", "accesskey", "privatekey", "authkey", "signingkey", "masterkey", "encryptionkey", "appkey", "licensekey"):
        return "key"
    if tok == "key" and i > 0 and tokens[i - 1] in _KEY_QUALIFIERS:
        return "key"
    if tok in ("webhook", "webhookurl") and tokens[-1] in ("webhook", "url", "webhookurl"):
        return "webhook"
    if tok in ("credential", "credentials") and last:
        return "credential"
    return ""


def _glued_tail(tok: str, at: int, words: tuple[str, ...]) -> bool:
    for word in words:
        if tok.startswith(word, at):
            return tok[at + len(word) :] in _GLUED_TAILS
    return False


def _secret_key(key: str) -> bool:
    bare = key.strip("-.'\"$").lstrip("@")
    if not bare:
        return False
    if bare.lower() in _SECRET_ID_KEYS:
        return True
    tokens = _key_tokens(bare)
    # the head noun is the last token: `password_min_length` is a length, `min_password_length` too
    if not tokens or tokens[-1] in _NOT_SECRET_TOKENS or (len(tokens) > 1 and tokens[0] in _ACTION_TOKENS):
        return False
    return any(_credential_word(tok, i, tokens) for i, tok in enumerate(tokens))


def _version(value: str) -> bool:
    if value[0] not in "0123456789^~<>=v*":
        return False
    return all(_VERSION_PART_RE.match(part) for part in _VERSION_SPLIT.split(value.strip()) if part)


def _literal(value: str, key: str, prose: re.Pattern[str] = _THREE_WORDS_RE) -> bool:
    """Whether ``value`` (assigned to ``key``) is a literal credential, not a reference or placeholder."""
    if len(value) < 4 or len(value) > 1024:
        return False
    if _PLACEHOLDER_RE.match(value) or _PLACEHOLDER_RE.match(value.strip("*!_.#<>[]() ")) or _PLACEHOLDER_PART_RE.search(value):
        return False
    if _REFERENCE_RE.search(value) or _OTHER_VALUE_RE.search(value):
        return False
    if _FILLER_RE.match(value):
        return False
    if "/" in value and _PATH_RE.match(value):
        return False
    if _version(value) or (" " in value and prose.search(value)):
        return False
    if _IDENTIFIER_RE.match(value) and secret_key(value):
        return False
    # the field's own name: `auth_key: authkey`, `proxy_passwd: ProxyPasswd` (a label or a form field, not a value)
    norm_value = _SEPARATORS_RE.sub("", value.lower())
    tokens = _key_tokens(key.strip("-.'\"$"))
    return not any(norm_value == "".join(tokens[i:]) for i in range(len(tokens)))


_SEPARATORS_RE = re.compile(r"[-_.]+")
_FILLER_RE = re.compile(r"^(?:(.)\1{2,})+$|^(.)\2*$")  # `XXXYYY`, `aaaa`


def _default_in(value: str) -> tuple[int, int, str] | None:
    """Where the hardcoded fallback of a reference lies in ``value`` (a whole `${X:-d}` or `{{ x | default('d') }}`)."""
    match = _FALLBACK_RE.fullmatch(value)
    if match:
        return (match.start(4), match.end(4), "shell-default") if match.group(4) else None
    match = _JINJA_DEFAULT_RE.fullmatch(value)
    if match:
        return (match.start(2), match.end(2), "jinja-default") if match.group(2) else None
    return None


def _quoted(text: str, pos: int, end: int) -> tuple[int, int] | None:
    quote = text[pos]
    close = text.find(quote, pos + 1, end)
    if close < 0:
        return None
    return pos + 1, close


def _value_span(text: str, pos: int, line_end: int, kind: str, sep: str, inline: bool = False) -> tuple[int, int] | None:
    """Where the assigned value lies, by the file's syntax; None when it is not a literal string."""
    if pos >= line_end:
        return None
    first = text[pos]
    if first in "\"'`":
        if (kind == "json" and first != '"') or (first == "`" and kind not in _CODE_KINDS):
            return None  # outside code a backtick runs a command: `TOKEN=\`cat /etc/app/token\``
        span = _quoted(text, pos, line_end)
        if span is None:
            return None
        # `"abc" + variable`, `'x' % y`, `"".join(...)` are expressions, not literals
        return span
    if kind in ("code", "json", "toml") or first == "#":
        return None
    if first == "&" and kind == "yaml":
        # `key: &anchor value`: the value follows the anchor
        while pos < line_end and text[pos] not in " \t":
            pos += 1
        while pos < line_end and text[pos] in " \t":
            pos += 1
        if pos >= line_end:
            return None
        first = text[pos]
        if first in "\"'":
            return _quoted(text, pos, line_end)
    if first in "!|>&*{[(" and kind == "yaml" and sep == ":":
        return None
    if kind == "doc" and sep != "=":
        # prose and snippets: the rest of the line is the value, and words separated by spaces are a sentence;
        # `KEY=value` (a shell line in a code block) ends at whitespace like in a script
        end = line_end
        if "{" in text[text.rfind("\n", 0, pos) + 1 : pos]:
            end = min((at for at in (text.find(",", pos, end), text.find("}", pos, end)) if at >= 0), default=end)
        while end > pos and text[end - 1] in " \t\r`*|,;":
            end -= 1
        value = text[pos:end]
        return None if not value or " " in value or "\t" in value else (pos, end)
    if kind in ("yaml", "env", "ini") and sep in (":", "=", ":=") and not (kind == "yaml" and sep == "=") and not inline:
        end = line_end
        hash_at = text.find(" #", pos, line_end)
        if hash_at >= 0:
            end = hash_at
        tab_hash = text.find("\t#", pos, end)
        if tab_hash >= 0:
            end = tab_hash
        while end > pos and text[end - 1] in " \t\r":
            end -= 1
        if kind == "yaml" and "{" in text[text.rfind("\n", 0, pos) + 1 : pos]:
            # inside a flow mapping the value ends at the next `,` or `}`
            for stop in (",", "}"):
                at = text.find(stop, pos, end)
                if at >= 0:
                    end = at
            while end > pos and text[end - 1] in " \t":
                end -= 1
        return (pos, end) if end > pos else None
    # inventories, module arguments, shell, Dockerfile, generic: the value ends at whitespace
    end = pos
    if text.startswith("${", pos):
        # `--password=${DB_PASSWORD:-…}`: keep the reference whole, its default is looked at
        close = text.find("}", pos, line_end)
        end = close + 1 if close > 0 else pos
    while end < line_end and text[end] not in " \t\r;,&|)}]`\"'":
        end += 1
    return (pos, end) if end > pos else None


def _scan_tokens(text: str, low: str, hits: list[Hit]) -> None:
    for rule, severity, regex, group in _TOKEN_RES:
        for match in regex.finditer(text):
            start, end = match.span(group)
            if rule in _LEFT_BOUNDARY and match.start() > 0 and text[match.start() - 1] in _WORD_CHARS:
                continue
            if rule == "jwt" and not _jwt_header(match.group(group)):
                continue
            if rule == "private-key":
                if not _PEM_BODY_RE.match(text, end, min(len(text), end + 600)):
                    continue
            elif _PLACEHOLDER_PART_RE.search(text, start, end):
                continue  # `AKIAIOSFODNN7EXAMPLE`, `ASIAXXXXXXXXXXXXXXXX`: documentation's stand-ins
            hits.append((match.start(), start, end, rule, severity, "", "format"))
    if "aws" in low:
        for match in _AWS_SECRET_RE.finditer(low):
            hits.append((match.start(), match.start(1), match.end(1), "aws-secret-access-key", "critical", "", "aws-name"))


def _jwt_header(token: str) -> bool:
    head = token.split(".", 1)[0]
    try:
        decoded = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))
    except ValueError:
        return False
    return b'"alg"' in decoded or b"'alg'" in decoded


def _url_password(password: str) -> bool:
    """A URL's password is a credential however short or word-like, unless it is a placeholder or a reference."""
    return not (_URL_PLACEHOLDER_RE.match(password) or _REFERENCE_RE.search(password) or ("%" in password and _FORMAT_RE.search(password)))


# in a URL even `no` or `3m` is a password: only markup, fillers and the field's own name stand in for one
_URL_PLACEHOLDER_RE = re.compile(
    r"(?i)^(?:<[^>]*>|\[[^\]]*\]|x{3,}|\*{3,}|\.{3,}|…|_+|-+|password|passwd|pass|pwd|secret|token|changeme|change[-_]me|"
    r"your[-_.]?.*|.*[-_.]here|redacted|placeholder)$"
)


def _scan_urls(text: str, hits: list[Hit]) -> None:
    if "://" in text:
        for match in _URL_RE.finditer(text):
            at = match.start()
            if at == 0 or not text[at - 1].isalnum():
                continue
            ps, pe = match.span(2)
            password = match.group(2)
            if "${" in password:
                inner = _default_in(password)
                if inner is None:
                    continue
                ps, pe = ps + inner[0], ps + inner[1]
                password = text[ps:pe]
            if not _url_password(password):
                continue
            hits.append((at, ps, pe, "url-password", "high", "", "url"))
    if "@tcp(" in text or "@unix(" in text:
        for match in _DSN_RE.finditer(text):
            if match.start() > 0 and text[match.start() - 1] in _KEY_CHARS:
                continue
            if _url_password(match.group(2)):
                hits.append((match.start(), match.start(2), match.end(2), "url-password", "high", "", "dsn"))


def _scan_fallbacks(text: str, hits: list[Hit]) -> None:
    """`${DB_PASSWORD:-…}` anywhere (a compose command, a URL, a .properties value): the default is a credential."""
    at = text.find("${")
    while at >= 0:
        match = _FALLBACK_RE.match(text, at)
        if match and match.group(4):
            name = match.group(1) or match.group(3)
            default = match.group(4)
            if secret_key(name) and _literal(default, name):
                hits.append((at, match.start(4), match.end(4), "hardcoded-" + _key_class(name), "high", name, "shell-default"))
        at = text.find("${", at + 2)


def _code_fallback(text: str, a: int, b: int, line_start: int, line_end: int) -> tuple[int, int] | None:
    """The literal fallback of an environment or config lookup of key ``text[a:b]`` in code, if there is one."""
    tail = b
    quote = text[b : b + 1]
    if quote in ("'", '"') and a > 0 and text[a - 1] == quote:
        tail = b + 1
        match = _ARG_DEFAULT_RE.match(text, tail, line_end)
        if match:
            head = text[line_start : a - 1].rstrip()
            if head.endswith("("):
                callee_end = len(head) - 1
                i = callee_end
                while i > 0 and head[i - 1] in _CALLEE_CHARS:
                    i -= 1
                if _ENV_CONTEXT_RE.search(head, i, callee_end):
                    return _quoted(text, match.end() - 1, line_end)
    match = _OR_DEFAULT_RE.match(text, tail, line_end)
    if match and _ENV_CONTEXT_RE.search(text, line_start, b):
        return _quoted(text, match.end() - 1, line_end)
    return None


def _scan_assignments(text: str, low: str, kind: str, hits: list[Hit]) -> None:
    n = len(text)
    seen_key_end = -1
    codeish = kind in _CODE_KINDS
    for match in _KEY_ANCHOR.finditer(low):
        a, b = match.span()
        if a < seen_key_end:
            continue
        while a > 0 and text[a - 1] in _KEY_CHARS:
            a -= 1
        while b < n and text[b] in _KEY_CHARS:
            b += 1
        if a > 0 and text[a - 1] == "\\" and text[a] in "ntr":
            a += 1  # `"…\nTOKEN=…"`: the escape is not part of the key
        seen_key_end = b
        key = text[a:b]
        if not secret_key(key):
            continue
        if a > 1 and text[a - 1] == "{" and text[a - 2] == "$":
            # the name inside `${NAME…}` is a reference; a default it carries is _scan_fallbacks' business
            continue
        line_start = text.rfind("\n", 0, a) + 1
        line_end = text.find("\n", b)
        if line_end < 0:
            line_end = n
        if codeish:
            span = _code_fallback(text, a, b, line_start, line_end)
            if span is not None:
                if _literal(text[span[0] : span[1]], key):
                    hits.append((a, span[0], span[1], "hardcoded-" + _key_class(key), "high", key.strip("-\"'"), "code-fallback"))
                continue
        sep_match = _SEP_RE.match(text, b)
        if not sep_match:
            continue
        sep = sep_match.group(1) or ""
        prefix = text[line_start:a]
        if not sep:
            # whitespace separator: `ENV KEY value` in a Dockerfile, `--password value` on a command line
            stripped = prefix.strip()
            if not (key.startswith("--") or kind == "netrc" or (kind == "dockerfile" and stripped.upper() in ("ENV", "ARG"))):
                continue
        head = prefix.rstrip().rstrip("\"'").rstrip()
        if kind == "doc" and _IMAGE_QUERY_RE.search(prefix):
            continue  # `badge.svg?token=…`: an image URL's query is public by design (a badge token)
        jinja = prefix.rfind("{{")
        if jinja >= 0 and "}}" not in prefix[jinja:]:
            # `{{ x | combine({'root_password': vm.root_password}) }}`: a key inside a Jinja expression is code
            continue
        if kind == "yaml" and sep == ":" and head not in ("", "-") and not head.endswith(("{", ",")):
            # `when: password is defined` and the like: a key must start the line (or a flow mapping item)
            continue
        if kind == "code" and sep == ":" and head and not head.endswith(("{", ",", "(")):
            continue
        if codeish and sep == ":" and text[a - 1] not in "\"'" and _in_string(prefix):
            continue  # `"    password:"`: a key inside a string literal is text (a YAML line being built, a message)
        if kind == "code" and sep == "=" and a > 0 and text[a - 1] in "\"'" and text[b] == "=":
            # `b'DB_PASSWORD='`: a key inside a string literal, not an assignment
            continue
        pos = sep_match.end()
        # `host ansible_password=x ansible_user=y`: past the line's first key, a value ends at whitespace
        inline = kind in ("ini", "env") and head not in ("", "export", "set", "-")
        if sep == "=" and kind in ("code", "json", "toml") and text[b] not in "\"'" and _in_string(prefix):
            # `"Server=db;User Id=sa;Password=…;"`, `"host=db password=…"`: a connection string inside a literal
            end = pos
            while text[b] == "=" and end < line_end and text[end] not in ";\"'`& \t\\":
                end += 1
            span = (pos, end) if end > pos else None
        else:
            span = _value_span(text, pos, line_end, kind, sep, inline)
        if span is None:
            continue
        vs, ve = span
        if kind == "yaml" and ve > vs + 1 and text[ve - 1] == "," and a > 0 and text[a - 1] in "\"'":
            ve -= 1  # `"key": value,` JSON-style lines in YAML
        value = text[vs:ve]
        how = "assignment"
        if "${" in value or "{{" in value:
            inner = _default_in(value)
            if inner is None:
                continue
            vs, ve, how = vs + inner[0], vs + inner[1], inner[2]
            value = text[vs:ve]
        else:
            quoted = text[pos] in "\"'`"
            if not quoted and ((codeish and _CODE_EXPR_RE.match(value)) or (kind not in ("env", "ini") and _CALL_RE.match(value))):
                continue
            comment = prefix.lstrip().startswith(("#", "//", ";", "--", "*")) or " #" in prefix or (codeish and " //" in prefix)
            if (codeish or comment or kind == "doc") and (_WORD_RE.match(value) or _CODE_NAME_RE.match(value)):
                # in code and docs a word is mostly a name (`"api_key": "overlap"`, `"secret": "app_db"`), except a
                # word given as a password (`connect(user="postgres", password="postgres")`): sample applications
                # run with such values
                given = quoted or kind == "doc"
                if comment or not given or _key_class(key) != "password" or not _PASSWORD_WORD_RE.match(value):
                    continue
            if kind == "code" and quoted:
                after = text[ve + 1 : ve + 4].lstrip()
                if after[:1] in ("+", "%", ".", "[") or after.startswith("{"):
                    continue
        if not _literal(value, key, _THREE_WORDS_RE if kind in ("env", "ini", "inventory", "netrc") else _TWO_WORDS_RE):
            continue
        hits.append((a, vs, ve, "hardcoded-" + _key_class(key), "high", key.strip("-\"'"), how))


def _scan_name_values(text: str, kind: str, hits: list[Hit]) -> None:
    """`- name: DB_PASSWORD` then `value: …`: the value is assigned to the name, not to the key `value`."""
    for match in _NAME_VALUE_RE.finditer(text):
        name = match.group(1)
        if not secret_key(name):
            continue
        pos = match.end()
        line_end = text.find("\n", pos)
        if line_end < 0:
            line_end = len(text)
        span = _value_span(text, pos, line_end, "yaml" if kind != "json" else kind, ":")
        if span is None:
            continue
        vs, ve = span
        if text[ve - 1 : ve] == "," and text[pos] not in "\"'":
            ve -= 1
        if _literal(text[vs:ve], name):
            hits.append((match.start(), vs, ve, "hardcoded-" + _key_class(name), "high", name, "name-value"))


_IMAGE_QUERY_RE = re.compile(r"\.(?:svg|png|gif)\?[^\s)\]]*$")


def _in_string(prefix: str) -> bool:
    """Whether a key sits in a string of `k=v` pairs: inside an open quote, at its start or after another `k=v`."""
    for quote in ('"', "'"):
        if prefix.count(quote) % 2 == 1:
            inside = prefix[prefix.rfind(quote) + 1 :]
            return not inside.strip() or "=" in inside
    return False


def _scan_secret_file(text: str, hits: list[Hit]) -> None:
    """A file named like a credential whose whole content is one token-like line (a docker secret, a token file)."""
    body = text.strip()
    if not body or len(body) > 512 or any(c.isspace() for c in body):
        return
    setting = _KEY_VALUE_LINE_RE.match(body)
    if setting and (_ENV_NAME_RE.match(setting.group(1)) or secret_key(setting.group(1))):
        return
    if _literal(body, "password"):
        vs = text.index(body)
        hits.append((vs, vs, vs + len(body), "secret-file", "high", "", "secret-file"))


def _key_class(key: str) -> str:
    tokens = _key_tokens(key.strip("-.'\"$"))
    words = {_credential_word(tok, i, tokens) for i, tok in enumerate(tokens)}
    for word in ("password", "token", "key", "secret"):
        if word in words:
            return word
    return "secret"


# ---- explanations -----------------------------------------------------------------------------------
_HOW = {
    "format": "the value has the {rule} format",
    "aws-name": "a 40-character key under the well-known aws_secret_access_key name",
    "assignment": "assigned to '{key}', a name that says credential",
    "shell-default": "the default of a ${{{key}…}} reference: it is used whenever the variable is unset",
    "jinja-default": "the default() of a Jinja expression assigned to '{key}': it is used whenever the variable is undefined",
    "code-fallback": "the fallback of an environment or config lookup of '{key}' in code: it is used whenever the variable is unset",
    "url": "the password part of a connection URL (scheme://user:…@host), a credential however short or word-like",
    "dsn": "the password part of a driver DSN (user:…@tcp(host)), a credential however short or word-like",
    "secret-file": "the only line of a file whose name says it holds a credential",
    "name-value": "the value of an environment entry named '{key}' (a name/value pair)",
}


_WORDISH_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[_.-][A-Za-z0-9]+)*$")


def _shape(value: str) -> str:
    """Length band and character classes: enough to tune a baseline, nothing of the value itself."""
    classes = [name for name, present in (
        ("lower-case", any(c.islower() for c in value)), ("upper-case", any(c.isupper() for c in value)),
        ("digits", any(c.isdigit() for c in value)), ("symbols", any(not c.isalnum() for c in value)),
    ) if present]  # fmt: skip
    n = len(value)
    band = "under 8" if n < 8 else "8-15" if n < 16 else "16-31" if n < 32 else "32 or more"
    word = "; word-like, yet no known placeholder" if n < 32 and _WORDISH_RE.match(value) else ""
    return f"{band} characters of {', '.join(classes) or 'other characters'}{word}"


def explain(rule: str, key: str, how: str, value: str) -> str:
    """Why a value is a finding: the rule, where it sits, and why it read as neither placeholder nor reference."""
    where = _HOW.get(how, "").format(rule=rule, key=key)
    if how in ("format", "aws-name"):
        body = " followed by key material" if rule == "private-key" else ""
        return f"{rule}: {where}{body}"
    return (
        f"{rule}: {where}; value: {_shape(value)}; not empty, not a placeholder (<…>, xxx, changeme, your_…, the field's own name), "
        "not a reference (${…}, {{…}}, $(…), lookup, env, path, version)"
    )


def scan_text(text: str, path: str = "<text>", kind: str | None = None, first_line: int = 1, rel: str | None = None) -> list[Finding]:
    """Findings in one block of text (a whole file or a block of it cut at a line end)."""
    if kind is None:
        kind = file_kind(path)
    if text.startswith("$ANSIBLE_VAULT;"):
        return []
    hits: list[Hit] = []
    low = text.lower()
    if len(low) != len(text):
        # a few non-ASCII characters change length when lower-cased; keep positions aligned
        low = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    if kind == "secretfile":
        if first_line == 1:
            _scan_secret_file(text, hits)
        kind = "generic"
    _scan_tokens(text, low, hits)
    _scan_urls(text, hits)
    if kind != "lockfile":
        _scan_assignments(text, low, kind, hits)
        if "${" in text:
            _scan_fallbacks(text, hits)
        if kind in ("yaml", "json", "template") and "value" in low:
            _scan_name_values(text, kind, hits)
    if not hits:
        return []
    # one value, one finding: a token rule wins over the generic assignment rule on the same value
    hits.sort(key=lambda h: (h[1], 0 if not h[3].startswith("hardcoded-") else 1))
    unique: list[Hit] = []
    for hit in hits:
        if unique and hit[1] < unique[-1][2] and hit[2] > unique[-1][1]:
            continue
        unique.append(hit)
    findings: list[Finding] = []
    line = first_line
    counted = 0
    fp_path = rel if rel is not None else path
    spans_by_line: dict[int, list[tuple[int, int]]] = {}
    placed: list[tuple[int, int, Hit]] = []
    for hit in unique:
        vs = hit[1]
        line += text.count("\n", counted, vs)
        counted = vs
        line_start = text.rfind("\n", 0, vs) + 1
        line_end = text.find("\n", vs)
        if line_end < 0:
            line_end = len(text)
        line_text = text[line_start:line_end]
        if any(marker in line_text for marker in ALLOW_MARKERS):
            continue
        spans_by_line.setdefault(line_start, []).append((hit[1], hit[2]))
        placed.append((line, line_start, hit))
    for line_no, line_start, hit in placed:
        _start, vs, ve, rule, severity, key, how = hit
        excerpt = _excerpt(text, line_start, vs, ve, spans_by_line[line_start], rule)
        value = text[vs:ve]
        why = explain(rule, key, how, value)
        finding = Finding(path, line_no, vs - line_start + 1, rule, severity, fingerprint(rule, fp_path, value), excerpt, key, kind, why)
        finding._span = (vs, ve)
        findings.append(finding)
    return findings


def _excerpt(text: str, line_start: int, vs: int, ve: int, spans: list[tuple[int, int]], rule: str) -> str:
    """The line up to the value, the value masked; nothing after it (another value could sit there)."""
    parts: list[str] = []
    cursor = line_start
    for s, e in sorted(spans):
        if s >= vs:
            break
        parts.append(text[cursor:s])
        parts.append("*" * 8)
        cursor = e
    parts.append(text[cursor:vs])
    head = "".join(parts).lstrip()
    if len(head) > 80:
        head = "…" + head[-79:]
    return f"{head}{mask(text[vs:ve], rule)}"


def value_of(text: str, finding: Finding) -> str:
    """The value behind a finding of ``scan_text(text)``: for the migration tool only, never for output."""
    if finding._span is None:
        raise ValueError("finding has no span in this text")
    return text[finding._span[0] : finding._span[1]]


# ---- files and trees -------------------------------------------------------------------------------
class ScanResult:
    """Counters, warnings and findings of a scan. With ``on_finding`` the findings are handed over, not kept:
    memory then stays flat however large the tree."""

    def __init__(self, on_finding: Callable[[Finding], None] | None = None) -> None:
        self.findings: list[Finding] = []
        self.warnings: list[str] = []
        self.files_scanned = 0
        self.bytes_scanned = 0
        self.files_skipped = 0
        self.finding_count = 0
        self._on_finding = on_finding

    def add(self, findings: list[Finding]) -> None:
        self.finding_count += len(findings)
        if self._on_finding is None:
            self.findings.extend(findings)
        else:
            for finding in findings:
                self._on_finding(finding)


def _is_binary(head: bytes) -> bool:
    return b"\0" in head


def _shebang_kind(line: bytes) -> str:
    if any(word in line for word in (b"python", b"ruby", b"node", b"perl", b"php")):
        return "code"
    if any(word in line for word in (b"sh", b"bash", b"zsh", b"ksh", b"dash")):
        return "shell"
    return "generic"


def scan_file(path: str, result: ScanResult, rel: str | None = None, max_file_size: int = DEFAULT_MAX_FILE_SIZE, block_size: int = BLOCK_SIZE) -> None:
    """Scan one regular file into ``result``; trouble becomes a warning."""
    try:
        with open(path, "rb") as handle:
            st = os.fstat(handle.fileno())
            if not stat.S_ISREG(st.st_mode):
                result.files_skipped += 1
                return
            if st.st_size > max_file_size:
                result.warnings.append(f"{path}: {st.st_size} bytes, over the {max_file_size}-byte limit: skipped")
                result.files_skipped += 1
                return
            kind = file_kind(path)
            first_line = 1
            carry = b""
            bad_utf8 = False
            first = True
            while True:
                chunk = handle.read(block_size)
                if first:
                    first = False
                    if _is_binary(chunk[:8192]):
                        result.warnings.append(f"{path}: binary file: skipped")
                        result.files_skipped += 1
                        return
                    if chunk.startswith(b"$ANSIBLE_VAULT;"):
                        result.files_scanned += 1
                        result.bytes_scanned += st.st_size
                        return
                    if kind == "generic" and chunk.startswith(b"#!"):
                        kind = _shebang_kind(chunk[: chunk.find(b"\n")])
                if not chunk and not carry:
                    break
                data = carry + chunk
                if chunk:
                    cut = data.rfind(b"\n")
                    if cut < 0 and len(data) < 4 * block_size:
                        carry = data
                        continue
                    if cut < 0:
                        cut = len(data) - 1
                    carry = data[cut + 1 :]
                    data = data[: cut + 1]
                else:
                    carry = b""
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    text = data.decode("utf-8", "surrogateescape")
                    bad_utf8 = True
                result.add(scan_text(text, path, kind, first_line, rel))
                first_line += text.count("\n")
                result.bytes_scanned += len(data)
            if bad_utf8:
                result.warnings.append(f"{path}: not valid UTF-8: scanned with the invalid bytes kept as they are")
            result.files_scanned += 1
    except OSError as exc:
        result.warnings.append(f"{path}: cannot be read ({exc.strerror or exc}): skipped")
        result.files_skipped += 1


def walk(
    paths: Iterable[str],
    exclude: Iterable[str] = (),
    follow_symlinks: bool = False,
    warn: Callable[[str], None] | None = None,
    exclude_dirs: Iterable[str] = DEFAULT_EXCLUDE_DIRS,
) -> Iterator[str]:
    """Regular files under ``paths``, depth first, never twice, never in a loop."""
    patterns = list(exclude)
    skip_dirs = set(exclude_dirs)
    seen_dirs: set[tuple[int, int]] = set()

    def excluded(path: str) -> bool:
        name = os.path.basename(path)
        return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(name, p) for p in patterns)

    def note(message: str) -> None:
        if warn:
            warn(message)

    for top in paths:
        try:
            st = os.stat(top) if follow_symlinks or not os.path.islink(top) else os.lstat(top)
        except OSError as exc:
            note(f"{top}: cannot be read ({exc.strerror or exc}): skipped")
            continue
        if stat.S_ISREG(st.st_mode):
            yield top
            continue
        if not stat.S_ISDIR(st.st_mode):
            continue
        stack = [top]
        while stack:
            directory = stack.pop()
            try:
                dst = os.stat(directory)
            except OSError as exc:
                note(f"{directory}: cannot be read ({exc.strerror or exc}): skipped")
                continue
            if follow_symlinks:
                # only followed symlinks can bring a directory back: remember them only then
                ident = (dst.st_dev, dst.st_ino)
                if ident in seen_dirs:
                    note(f"{directory}: directory already scanned (symlink loop): skipped")
                    continue
                seen_dirs.add(ident)
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except OSError as exc:
                note(f"{directory}: cannot be listed ({exc.strerror or exc}): skipped")
                continue
            subdirs = []
            for entry in entries:
                if excluded(entry.path):
                    continue
                try:
                    is_link = entry.is_symlink()
                    if is_link and not follow_symlinks:
                        continue
                    if entry.is_dir(follow_symlinks=follow_symlinks):
                        if entry.name not in skip_dirs:
                            subdirs.append(entry.path)
                    elif entry.is_file(follow_symlinks=follow_symlinks):
                        yield entry.path
                    elif is_link and not os.path.exists(entry.path):
                        note(f"{entry.path}: dangling symlink: skipped")
                except OSError as exc:
                    note(f"{entry.path}: cannot be read ({exc.strerror or exc}): skipped")
            stack.extend(reversed(subdirs))


def scan_paths(
    paths: Iterable[str],
    exclude: Iterable[str] = (),
    follow_symlinks: bool = False,
    max_file_size: int = DEFAULT_MAX_FILE_SIZE,
    relative_to: str | None = None,
    files: Iterable[str] | None = None,
    on_finding: Callable[[Finding], None] | None = None,
) -> ScanResult:
    """Scan files and trees. Fingerprints use paths relative to ``relative_to`` so a baseline survives a checkout move."""
    result = ScanResult(on_finding)
    candidates = files if files is not None else walk(paths, exclude, follow_symlinks, result.warnings.append)
    for path in candidates:
        rel = os.path.relpath(path, relative_to) if relative_to else path
        scan_file(path, result, rel, max_file_size)
    return result


# ---- baseline and modes ----------------------------------------------------------------------------
def load_baseline(path: str) -> set[str]:
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict) or not isinstance(data.get("fingerprints"), dict):
        raise ValueError(f"{path}: not a keywarden scanner baseline (expected an object with 'fingerprints')")
    return set(data["fingerprints"])


def baseline_document(findings: Iterable[Finding]) -> dict[str, Any]:
    return {
        "keywarden_scan_baseline": 1,
        "fingerprints": {f.fingerprint: {"path": f.path, "rule": f.rule, "line": f.line} for f in sorted(findings, key=lambda f: (f.path, f.line))},
    }


def mode_problems(path: str, max_mode: int = 0o640, owners: Iterable[str] = ("root",), groups: Iterable[str] | None = None) -> list[str]:
    """Why a secret-bearing file is too open: mode bits beyond ``max_mode``, an owner or group not allowed."""
    problems: list[str] = []
    try:
        st = os.lstat(path)
    except OSError as exc:
        return [f"cannot stat ({exc.strerror})"]
    mode = stat.S_IMODE(st.st_mode)
    if mode & ~max_mode:
        problems.append(f"mode {mode:04o} is wider than {max_mode:04o}")
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    allowed = list(owners)
    if allowed and owner not in allowed:
        problems.append(f"owner {owner} is not one of {', '.join(allowed)}")
    if groups is not None:
        try:
            group = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            group = str(st.st_gid)
        allowed_groups = list(groups)
        if allowed_groups and group not in allowed_groups:
            problems.append(f"group {group} is not one of {', '.join(allowed_groups)}")
    return problems


def sarif(findings: Iterable[Finding], tool_version: str = SCANNER_VERSION) -> dict[str, Any]:
    found = list(findings)
    rules = sorted({f.rule for f in found})
    level = {"critical": "error", "high": "error", "medium": "warning", "low": "note"}
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "keywarden-scan-secrets",
                        "version": tool_version,
                        "rules": [{"id": r, "shortDescription": {"text": f"hardcoded credential ({r})"}} for r in rules],
                    }
                },
                "results": [
                    {
                        "ruleId": f.rule,
                        "level": level.get(f.severity, "error"),
                        "message": {"text": f"hardcoded credential ({f.rule}): {f.excerpt}"},
                        "partialFingerprints": {"keywardenFingerprint/v1": f.fingerprint},
                        "properties": {"explain": f.explain},
                        "locations": [
                            {
                                "physicalLocation": {
                                    "artifactLocation": {"uri": f.path.lstrip("./") if f.path.startswith("./") else f.path},
                                    "region": {"startLine": f.line, "startColumn": f.column},
                                }
                            }
                        ],
                    }
                    for f in found
                ],
            }
        ],
    }
