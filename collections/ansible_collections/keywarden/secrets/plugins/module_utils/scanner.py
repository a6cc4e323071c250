# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hardcoded-credential scanner: the engine behind scripts/audit/scan-secrets and the keywarden.secrets.scan module.

Guarantees:
- stdlib only (it runs inside a module on managed hosts, Python 3.8+ syntax at runtime);
- a finding never carries the value: only a masked excerpt (at most the first 4 characters of a value
  of 16 or more, nothing of a shorter one) and a fingerprint (PBKDF2, 100 rounds, of rule, path and value), stable
  across runs so a baseline can accept it;
- it understands Ansible: ``!vault`` / ``$ANSIBLE_VAULT``, SOPS ``ENC[...]``, Jinja, lookups, ``${VAR}``,
  ``os.environ``/``getenv``, empty values, password *policy* keys and form field names are not findings;
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
from typing import Any

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
# the AWS secret key has no format of its own: it is found by its well-known name (matched on lower-cased text)
_AWS_SECRET_RE = re.compile(r"aws_?secret_?(?:access_?)?key[\"']?\s*[:=]\s*[\"']?([a-z0-9/+]{40})(?![a-z0-9/+])")
_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")

# ---- connection URLs with a password -------------------------------------------------------------
# anchored on the literal `://`; the scheme before it is checked in Python
_URL_RE = re.compile(r"://([^\s:/@'\"<>`{}]{0,128}):([^\s@/'\"<>`]{1,256})@[^\s/'\"<>`]")

# ---- key = value assignments ---------------------------------------------------------------------
# A cheap anchor: every key that can name a credential contains one of these. The key around it is then
# taken apart in Python (cached), which keeps the regex engine on a literal-ish scan.
_KEY_ANCHOR = re.compile(r"p(?:ass|wd)|secret|token|key|auth|cred|webhook")  # on lower-cased text
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_SEP_RE = re.compile(r"[\"']?[ \t]*(?:(:=|=>|=(?!=)|:(?=[ \t]|$|[\"']))|(?<=[\w])(?=[ \t]+[^\s=:]))[ \t]*", re.M)
_TOKEN_SPLIT = re.compile(r"[_.\-]+|(?<=[a-z0-9])(?=[A-Z])")
_PASS_EXCEPT = frozenset({"bypass", "compass", "overpass", "surpass", "trespass", "underpass", "encompass", "passthrough", "passive"})
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
     "encryption", "encrypted", "auth", "authentication", "login", "user", "username", "owner", "group", "lifetime", "interval", "prefix"}
)  # fmt: skip
# ...except the ones that are secrets themselves
_SECRET_ID_KEYS = frozenset({"secret_id", "secretid"})
_PLACEHOLDER_RE = re.compile(
    r"(?i)^(?:<[^>]*>|\[[^\]]*\]|\(+[^)]*\)+|x{3,}|\*{3,}|\.{3,}|…|#+|-+|_+|null|none|nil|~|true|false|yes|no|on|off|undefined|tbd|todo|"
    r"redacted|placeholder|secret|password|passwd|token|value|values|username|user|key|field|your[-_ ].*|.*[-_]here|example.*|dummy|sample|"
    r"string|str|bool|int|required|optional|"
    r"\d{1,3}|[0-9.]+[smhdw]?)$"
)
_REFERENCE_RE = re.compile(
    r"\{\{|\{%|\$\{|^\$[A-Za-z_]|^\$\(|%\([\w.]+\)[sd]|^ENC\[|ENC\[AES256_GCM|^!vault|\$ANSIBLE_VAULT|\blookup\s*\(|\bquery\s*\(|os\.environ|getenv|"
    r"process\.env|ENV\[|System\.getenv|^@Value\(|^\{[^{}]*\}$|^%[\w.]+%$|^\$\w+\$$|^%env\(|^env\(|^secret\(|^\$\{\{|^<%=|^#\{"
)
# snake_case or camelCase names made of words (`user_password`, `newPassword`), not random strings that happen to fit
_IDENTIFIER_RE = re.compile(r"^[a-z]{2,}(?:_[a-z]{2,}[0-9]*)+$|^[a-z]{2,}(?:[A-Z][a-z]{2,})+$")
# plain words and identifiers: in code and prose they are names (`"api_key": "overlap"`), not credentials
_WORD_RE = re.compile(r"^[a-z]+(?:[ _.-][a-z]+)*$")
_CODE_KINDS = frozenset({"code", "generic", "template"})
_CALL_RE = re.compile(r"^[\w.]+(?:\(|\[)")
_CODE_EXPR_RE = re.compile(r"^[\w.]+(?:\(|\[)|^[A-Za-z_]\w*\.[A-Za-z_][\w.]*$|^(?:self|this|args|opts|options|config|settings|params|request|kwargs)\b")

_KIND_BY_EXT = {
    ".yml": "yaml", ".yaml": "yaml", ".json": "json", ".toml": "toml", ".ini": "ini", ".cfg": "ini", ".conf": "ini", ".cnf": "ini",
    ".properties": "ini", ".env": "env", ".sh": "shell", ".bash": "shell", ".zsh": "shell", ".ksh": "shell",
    ".py": "code", ".js": "code", ".ts": "code", ".jsx": "code", ".tsx": "code", ".go": "code", ".rb": "code", ".java": "code", ".php": "code",
    ".cs": "code", ".rs": "code", ".kt": "code", ".scala": "code", ".swift": "code", ".c": "code", ".h": "code", ".cpp": "code", ".pl": "code",
    ".j2": "template", ".jinja": "template", ".jinja2": "template", ".tpl": "template", ".template": "template",
}  # fmt: skip


class Finding:
    """One credential found. Holds no value: a masked excerpt and a fingerprint only."""

    __slots__ = ("path", "line", "column", "rule", "severity", "fingerprint", "excerpt", "key", "kind", "_span")

    def __init__(self, path: str, line: int, column: int, rule: str, severity: str, fingerprint: str, excerpt: str, key: str = "", kind: str = "") -> None:
        self.path = path
        self.line = line
        self.column = column
        self.rule = rule
        self.severity = severity
        self.fingerprint = fingerprint
        self.excerpt = excerpt
        self.key = key
        self.kind = kind
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
        }


def fingerprint(rule: str, path: str, value: str) -> str:
    """Stable across runs and hosts; slow to invert for a weak password (PBKDF2), never the value itself."""
    salt = f"keywarden-scan/{SCANNER_VERSION}\0{rule}\0{path}".encode()
    return hashlib.pbkdf2_hmac("sha256", value.encode("utf-8", "surrogateescape"), salt, 100).hex()[:32]


def mask(value: str, rule: str = "") -> str:
    """Eight stars; a token format keeps its first 4 characters (its public prefix, e.g. ``ghp_``)."""
    shown = value[:4] if len(value) >= 20 and not rule.startswith(("hardcoded-", "url-")) else ""
    return f"{shown}{'*' * 8}"


def file_kind(path: str) -> str:
    """The syntax family a file is read with; it decides how an unquoted value ends."""
    name = os.path.basename(path)
    lower = name.lower()
    if lower == ".env" or lower.startswith(".env.") or lower.endswith(".env"):
        return "env"
    if lower.startswith(("dockerfile", "containerfile")) or lower.endswith((".dockerfile", ".containerfile")):
        return "dockerfile"
    ext = os.path.splitext(lower)[1]
    if ext in (".j2", ".jinja", ".jinja2", ".tpl", ".template"):
        inner = file_kind(path[: -len(ext)])
        return inner if inner != "generic" else "template"
    kind = _KIND_BY_EXT.get(ext)
    if kind:
        return kind
    parts = path.replace("\\", "/").split("/")
    if ext == "" and ("inventory" in parts or "inventories" in parts or lower in ("hosts", "inventory")):
        return "inventory"
    if "group_vars" in parts or "host_vars" in parts:
        return "yaml"
    return "generic"


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


def _secret_key(key: str) -> bool:
    bare = key.strip("-.'\"$").lstrip("@")
    if not bare:
        return False
    if bare.lower() in _SECRET_ID_KEYS:
        return True
    tokens = _key_tokens(bare)
    # the head noun is the last token: `password_min_length` is a length, `min_password_length` too
    if not tokens or tokens[-1] in _NOT_SECRET_TOKENS:
        return False
    last = tokens[-1]
    for i, tok in enumerate(tokens):
        if "passw" in tok or tok in ("pwd", "passwd", "pass", "passphrase", "pw") or tok.endswith(("pwd", "passwd", "passphrase")):
            return True
        if tok.endswith("pass") and tok not in _PASS_EXCEPT:
            return True
        if "secret" in tok:
            return True
        if tok in ("token", "apitoken", "authtoken", "accesstoken", "bearer") or (tok.endswith("token") and len(tok) > 5 and i == len(tokens) - 1):
            return True
        if tok in ("apikey", "secretkey", "accesskey", "privatekey", "authkey", "signingkey", "masterkey", "encryptionkey", "appkey", "licensekey"):
            return True
        if tok == "key" and i > 0 and tokens[i - 1] in _KEY_QUALIFIERS:
            return True
        if tok in ("webhook", "webhookurl") and last in ("webhook", "url", "webhookurl"):
            return True
        if tok in ("credential", "credentials") and i == len(tokens) - 1:
            return True
    return False


def _literal(value: str, key: str) -> bool:
    """Whether ``value`` (assigned to ``key``) is a literal credential, not a reference or placeholder."""
    if len(value) < 4 or len(value) > 1024:
        return False
    if _PLACEHOLDER_RE.match(value) or _REFERENCE_RE.search(value):
        return False
    if len(set(value)) == 1:
        return False
    norm_value = value.lower().replace("-", "_")
    norm_key = key.strip("-.'\"$").lower().replace("-", "_")
    # form field names and variable names: `name="password"`, `password_field: user_password`
    if norm_value == norm_key or norm_value.endswith("_" + norm_key) or (_IDENTIFIER_RE.match(value) and secret_key(value)):
        return False
    return True


def _quoted(text: str, pos: int, end: int) -> tuple[int, int] | None:
    quote = text[pos]
    close = text.find(quote, pos + 1, end)
    if close < 0:
        return None
    return pos + 1, close


def _value_span(text: str, pos: int, line_end: int, kind: str, sep: str) -> tuple[int, int] | None:
    """Where the assigned value lies, by the file's syntax; None when it is not a literal string."""
    if pos >= line_end:
        return None
    first = text[pos]
    if first in "\"'`":
        if kind == "json" and first != '"':
            return None
        span = _quoted(text, pos, line_end)
        if span is None:
            return None
        # `"abc" + variable`, `'x' % y`, `"".join(...)` are expressions, not literals
        return span
    if kind in ("code", "json", "toml"):
        return None
    if first in "!|>&*{[(" and kind == "yaml" and sep == ":":
        return None
    if kind in ("yaml", "env", "ini") and sep in (":", "=", ":=") and not (kind == "yaml" and sep == "="):
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
    while end < line_end and text[end] not in " \t\r;,&|)}]`\"'":
        end += 1
    return (pos, end) if end > pos else None


class _Block:
    """Findings of one text block, before line numbers and excerpts are worked out."""

    def __init__(self) -> None:
        self.hits: list[tuple[int, int, int, str, str, str]] = []  # (start, value_start, value_end, rule, severity, key)


def _scan_tokens(text: str, low: str, hits: list[tuple[int, int, int, str, str, str]]) -> None:
    for rule, severity, regex, group in _TOKEN_RES:
        for match in regex.finditer(text):
            start, end = match.span(group)
            if rule in _LEFT_BOUNDARY and match.start() > 0 and text[match.start() - 1] in _WORD_CHARS:
                continue
            if rule == "jwt" and not _jwt_header(match.group(group)):
                continue
            hits.append((match.start(), start, end, rule, severity, ""))
    if "aws" in low:
        for match in _AWS_SECRET_RE.finditer(low):
            hits.append((match.start(), match.start(1), match.end(1), "aws-secret-access-key", "critical", ""))


def _jwt_header(token: str) -> bool:
    head = token.split(".", 1)[0]
    try:
        decoded = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))
    except ValueError:
        return False
    return b'"alg"' in decoded or b"'alg'" in decoded


def _scan_urls(text: str, hits: list[tuple[int, int, int, str, str, str]]) -> None:
    if "://" not in text:
        return
    for match in _URL_RE.finditer(text):
        at = match.start()
        if at == 0 or not text[at - 1].isalnum():
            continue
        user, password = match.group(1), match.group(2)
        if password.lower() in ("password", "pass", "passwd", "secret", "pw", "pwd") or not _literal(password, user + "_password"):
            continue
        if user.startswith(("$", "%")) and password.startswith(("$", "%")):
            continue
        hits.append((at, match.start(2), match.end(2), "url-password", "high", ""))


def _scan_assignments(text: str, low: str, kind: str, hits: list[tuple[int, int, int, str, str, str]]) -> None:
    n = len(text)
    seen_key_end = -1
    for match in _KEY_ANCHOR.finditer(low):
        a, b = match.span()
        if a < seen_key_end:
            continue
        while a > 0 and text[a - 1] in _KEY_CHARS:
            a -= 1
        while b < n and text[b] in _KEY_CHARS:
            b += 1
        seen_key_end = b
        key = text[a:b]
        if not secret_key(key):
            continue
        sep_match = _SEP_RE.match(text, b)
        if not sep_match:
            continue
        sep = sep_match.group(1) or ""
        line_start = text.rfind("\n", 0, a) + 1
        prefix = text[line_start:a]
        if not sep:
            # whitespace separator: `ENV KEY value` in a Dockerfile, `--password value` on a command line
            stripped = prefix.strip()
            if not (key.startswith("--") or (kind == "dockerfile" and stripped.upper() in ("ENV", "ARG"))):
                continue
        head = prefix.rstrip().rstrip("\"'").rstrip()
        if kind == "yaml" and sep == ":" and head not in ("", "-") and not head.endswith(("{", ",")):
            # `when: password is defined` and the like: a key must start the line (or a flow mapping item)
            continue
        if kind == "code" and sep == ":" and head and not head.endswith(("{", ",", "(")):
            continue
        if kind == "code" and sep == "=" and a > 0 and text[a - 1] in "\"'":
            # `b'DB_PASSWORD='`: a key inside a string literal, not an assignment
            continue
        line_end = text.find("\n", b)
        if line_end < 0:
            line_end = n
        pos = sep_match.end()
        span = _value_span(text, pos, line_end, kind, sep)
        if span is None:
            continue
        vs, ve = span
        value = text[vs:ve]
        quoted = text[pos] in "\"'`"
        if not quoted and ((kind in _CODE_KINDS and _CODE_EXPR_RE.match(value)) or (kind not in ("env", "ini") and _CALL_RE.match(value))):
            continue
        comment = prefix.lstrip().startswith(("#", "//", ";", "--", "*"))
        if (kind in _CODE_KINDS or comment) and _WORD_RE.match(value):
            continue
        if kind == "code" and text[pos] in "\"'`":
            after = text[ve + 1 : ve + 4].lstrip()
            if after[:1] in ("+", "%", ".", "[") or after.startswith("{"):
                continue
        if not _literal(value, key):
            continue
        hits.append((a, vs, ve, "hardcoded-" + _key_class(key), "high", key.strip("-\"'")))


def _key_class(key: str) -> str:
    tokens = _key_tokens(key)
    joined = "".join(tokens)
    if any(x in joined for x in ("passw", "pwd", "passphrase")) or any(t == "pass" or t.endswith("pass") for t in tokens):
        return "password"
    if "token" in joined:
        return "token"
    if "key" in joined:
        return "key"
    return "secret"


def scan_text(text: str, path: str = "<text>", kind: str | None = None, first_line: int = 1, rel: str | None = None) -> list[Finding]:
    """Findings in one block of text (a whole file or a block of it cut at a line end)."""
    if kind is None:
        kind = file_kind(path)
    if text.startswith("$ANSIBLE_VAULT;"):
        return []
    hits: list[tuple[int, int, int, str, str, str]] = []
    low = text.lower()
    if len(low) != len(text):
        # a few non-ASCII characters change length when lower-cased; keep positions aligned
        low = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    _scan_tokens(text, low, hits)
    _scan_urls(text, hits)
    _scan_assignments(text, low, kind, hits)
    if not hits:
        return []
    # one value, one finding: a token rule wins over the generic assignment rule on the same value
    hits.sort(key=lambda h: (h[1], 0 if not h[3].startswith("hardcoded-") else 1))
    unique: list[tuple[int, int, int, str, str, str]] = []
    for hit in hits:
        if unique and hit[1] < unique[-1][2] and hit[2] > unique[-1][1]:
            continue
        unique.append(hit)
    findings: list[Finding] = []
    line = first_line
    counted = 0
    fp_path = rel if rel is not None else path
    spans_by_line: dict[int, list[tuple[int, int]]] = {}
    placed: list[tuple[int, int, tuple[int, int, int, str, str, str]]] = []
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
        _start, vs, ve, rule, severity, key = hit
        excerpt = _excerpt(text, line_start, vs, ve, spans_by_line[line_start], rule)
        value = text[vs:ve]
        finding = Finding(path, line_no, vs - line_start + 1, rule, severity, fingerprint(rule, fp_path, value), excerpt, key, kind)
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
