# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Move hardcoded credentials found by the scanner into the store: the engine behind scripts/secrets/migrate.

Order of an applied migration (each step is idempotent, so a rerun after a crash finishes the job):
1. one ``store.update()`` transaction adds every new secret (kind ``generic``, field ``value``) and, under the
   top-level key ``migration_backups``, the original text of every file about to be rewritten;
2. the catalog gets one entry per new secret (appended as text: the catalog's comments stay);
3. each source file is rewritten atomically (temp file + rename, mode kept) to reference the secret.

A rerun finds the values already in the store (same name, same value) and reuses them instead of adding
copies; a backup already held (same path, same SHA-256) is not added twice.

Values never reach output or messages: the diff shows them as ``********``.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import os
import re
from typing import Any

import yaml

from ansible_collections.keywarden.secrets.plugins.module_utils import scanner
from ansible_collections.keywarden.secrets.plugins.plugin_utils.catalog import CATALOG_VERSION, CatalogError, validate_catalog
from ansible_collections.keywarden.secrets.plugins.plugin_utils.files import atomic_write
from ansible_collections.keywarden.secrets.plugins.plugin_utils.store import Store, StoreError, new_entry, utcnow

MASK = "********"
KIND = "generic"
FIELD = "value"
BACKUP_KEY = "migration_backups"
FORMATS = ("compose", "env", "ini", "properties", "yaml")
_TEMPLATE_EXT = (".j2", ".jinja", ".jinja2", ".tpl", ".template")
_SERVICE_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_GROUP_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENVIRONMENT_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
# the key an assignment line starts with (`export KEY=`, `- KEY=`, `"key":`)
_LINE_KEY_RE = re.compile(r"^\s*(?:-\s+)?(?:export\s+)?[\"']?([A-Za-z0-9_][A-Za-z0-9_.-]*)[\"']?\s*[:=]")
_SECTION_RE = re.compile(r"^\s*\[([^\]\n]+)\]\s*$")
# what may precede / follow a value for it to be the whole value of its line
_ENV_WHOLE_BEFORE = re.compile(r"^\s*(?:export\s+)?[A-Za-z0-9_.-]+\s*=\s*[\"']?$")
_YAML_WHOLE_BEFORE = re.compile(r"^\s*(?:-\s+)?[\"']?[^\s:\"'#]+[\"']?\s*:\s*$")
_WHOLE_AFTER = re.compile(r"^[\"']?\s*(?:#.*)?$")


class MigrateError(Exception):
    """Bad input or a refused step: a one-line message naming the file, never a value."""


@dataclasses.dataclass
class SecretPlan:
    name: str
    value: str
    sources: list[str]
    vars: list[str]
    in_store: bool  # already in the store with this value (a rerun after a crash)
    in_catalog: bool


@dataclasses.dataclass
class Item:
    line: int
    rule: str
    span: tuple[int, int]
    secret: SecretPlan
    var: str


@dataclasses.dataclass
class FilePlan:
    path: str
    fmt: str
    text: str
    sha256: str
    mode: int
    items: list[Item]
    new_text: str = ""


@dataclasses.dataclass
class Plan:
    environment: str
    group: str
    service: str
    files: list[FilePlan]
    secrets: list[SecretPlan]
    catalog_path: str
    catalog_text: str
    new_catalog_text: str
    warnings: list[str]

    def empty(self) -> bool:
        return not self.files


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def source_format(path: str) -> str | None:
    """compose, env, ini, properties or yaml; None for files migrate does not rewrite."""
    lower = os.path.basename(path).lower()
    if lower.endswith(_TEMPLATE_EXT):
        return None
    kind = scanner.file_kind(path)
    if kind == "yaml":
        return "compose" if lower.startswith(("docker-compose", "compose")) else "yaml"
    if kind == "ini":
        return "properties" if lower.endswith(".properties") else "ini"
    if kind == "env":
        return "env"
    return None


def collect_files(paths: list[str]) -> list[str]:
    """Files named (each must be of a supported format) and the supported files under directories."""
    out: list[str] = []
    for top in paths:
        if not os.path.lexists(top):
            raise MigrateError(f"{top}: no such file or directory")
        if os.path.isdir(top) and not os.path.islink(top):
            for root, dirs, files in os.walk(top):
                dirs[:] = sorted(d for d in dirs if d not in scanner.DEFAULT_EXCLUDE_DIRS and not os.path.islink(os.path.join(root, d)))
                for name in sorted(files):
                    path = os.path.join(root, name)
                    if source_format(path) and os.path.isfile(path) and not os.path.islink(path):
                        out.append(os.path.normpath(path))
            continue
        if os.path.islink(top) or not os.path.isfile(top):
            raise MigrateError(f"{top}: not a regular file (symlinks are not rewritten)")
        if source_format(top) is None:
            raise MigrateError(f"{top}: not a compose, .env, ini, properties or YAML file; migrate it by hand")
        out.append(os.path.normpath(top))
    unique: dict[str, str] = {}
    for path in out:
        unique.setdefault(os.path.realpath(path), path)
    return list(unique.values())


def env_var_name(key: str) -> str:
    """DB_PASSWORD from db_password, dbPassword, db.password, db-password."""
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key)
    name = re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_")
    if not name or not name[0].isalpha():
        name = f"SECRET_{name}".rstrip("_")
    return name


def _line_bounds(text: str, pos: int) -> tuple[int, int]:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return start, len(text) if end < 0 else end


def _key_for(text: str, finding: scanner.Finding, fmt: str) -> str:
    vs = finding._span[0]  # noqa: SLF001 - the scanner keeps the span for this module
    start, _end = _line_bounds(text, vs)
    line_key = _LINE_KEY_RE.match(text[start:vs])
    key = finding.key or (line_key.group(1) if line_key else "")
    if not key:
        raise MigrateError(f"{finding.path}:{finding.line}: {finding.rule} is not assigned to a key; migrate it by hand")
    if finding.rule == "url-password":
        key = f"{key}_password"
    if fmt == "ini":
        for line in reversed(text[:start].splitlines()):
            section = _SECTION_RE.match(line)
            if section:
                key = f"{section.group(1)}_{key}"
                break
    return env_var_name(key)


def _secret_name(var: str, service: str) -> str:
    base = re.sub(r"[^a-z0-9]+", "_", var.lower()).strip("_")
    prefix = re.sub(r"[^a-z0-9]+", "_", service.lower()).strip("_")
    if prefix and not base.startswith(prefix + "_"):
        base = f"{prefix}_{base}"
    if not base[0].isalpha():
        base = f"secret_{base}"
    return base


def _stored_value(data: dict[str, Any], name: str) -> str | None:
    entry = (data.get("secrets") or {}).get(name)
    if not isinstance(entry, dict) or entry.get("kind") != KIND:
        return None
    value = ((entry.get("current") or {}).get("fields") or {}).get(FIELD)
    return None if value is None else str(value)


class _Namer:
    """Unique secret names and (service, variable) pairs across the catalog, the store and this plan."""

    def __init__(self, catalog: dict[str, Any], store_data: dict[str, Any], service: str) -> None:
        self.catalog = catalog
        self.store = store_data
        self.service = service
        self.by_value: dict[str, SecretPlan] = {}
        self.names: set[str] = set()
        self.var_owner: dict[str, str] = {}
        for name, entry in catalog["secrets"].items():
            for consumer in entry["consumers"]:
                if consumer["service"] == service:
                    for var in consumer["env"]:
                        self.var_owner[var] = name

    def secret(self, value: str, var: str, where: str) -> tuple[SecretPlan, str]:
        digest = sha256(value)
        plan = self.by_value.get(digest)
        if plan is None:
            base = _secret_name(var, self.service)
            for n in range(1, 1000):
                name = base if n == 1 else f"{base}_{n}"
                if name in self.names:
                    continue
                stored = _stored_value(self.store, name)
                in_store = name in (self.store.get("secrets") or {})
                if in_store and stored != value:
                    continue
                if not in_store and name in self.catalog["secrets"]:
                    continue
                plan = SecretPlan(name, value, [], [], in_store, name in self.catalog["secrets"])
                break
            else:
                raise MigrateError(f"{where}: no free secret name for {base}")
            self.names.add(plan.name)
            self.by_value[digest] = plan
        for n in range(1, 1000):
            candidate = var if n == 1 else f"{var}_{n}"
            owner = self.var_owner.get(candidate)
            if owner is None or owner == plan.name:
                break
        self.var_owner[candidate] = plan.name
        if candidate not in plan.vars:
            plan.vars.append(candidate)
        if where not in plan.sources:
            plan.sources.append(where)
        return plan, candidate


def _reference(fmt: str, text: str, span: tuple[int, int], item: Item) -> tuple[tuple[int, int], str]:
    """The (span to replace, replacement) that makes the source reference the secret instead of holding it."""
    vs, ve = span
    start, end = _line_bounds(text, vs)
    before, after = text[start:vs], text[ve:end]
    var, name = item.var, item.secret.name
    if fmt == "compose":
        return span, f"${{{var}:?set by keywarden}}"
    if fmt == "env":
        if _ENV_WHOLE_BEFORE.match(before) and _WHOLE_AFTER.match(after):
            # keywarden renders this variable into <service>.env: the literal line goes, a note stays
            # (no `KEY:`/`KEY=` in the note: the scanner would read the rest of the line as a value)
            return (start, end), f"# moved to the keywarden store: {var} (secret {name}, rendered by playbooks/deploy.yml; scripts/secrets/migrate)"
        return span, f"${{{var}}}"
    if fmt in ("ini", "properties"):
        indent = before[: len(before) - len(before.lstrip())]
        note = f"{indent}# keywarden: ${{{var}}} is secret {name}, set in the service environment (scripts/secrets/migrate)\n"
        return (start, ve), note + before + f"${{{var}}}"
    # yaml: an Ansible lookup, quoted so that it stays a string
    quote = text[vs - 1] if vs > 0 else ""
    inner = '"' if quote == "'" else "'"
    lookup = f"{{{{ lookup({inner}keywarden.secrets.secret{inner}, {inner}{name}.{FIELD}{inner}) }}}}"
    if quote not in ("'", '"') and _YAML_WHOLE_BEFORE.match(before) and _WHOLE_AFTER.match(after):
        return span, f'"{lookup}"'
    return span, lookup


def rewrite(fp: FilePlan) -> str:
    edits: list[tuple[tuple[int, int], str]] = []
    for item in fp.items:
        edits.append(_reference(fp.fmt, fp.text, item.span, item))
    edits.sort(key=lambda e: e[0][0])
    for (a, _b), (c, _d) in zip(edits, edits[1:], strict=False):
        if c[0] < a[1]:
            raise MigrateError(f"{fp.path}: two values on one line overlap; migrate it by hand")
    out = fp.text
    for (s, e), replacement in reversed(edits):
        out = out[:s] + replacement + out[e:]
    return out


def _catalog_entry(environment: str, group: str, service: str, secret: SecretPlan) -> dict[str, Any]:
    return {
        "kind": KIND,
        "description": f"Migrated from {', '.join(secret.sources)} by scripts/secrets/migrate",
        "environments": [environment],
        "consumers": [{"group": group, "service": service, "env": dict.fromkeys(secret.vars, FIELD)}],
    }


def _new_catalog_text(path: str, text: str, catalog: dict[str, Any], entries: dict[str, Any]) -> str:
    if not entries:
        return text
    block = yaml.safe_dump(entries, sort_keys=False, default_flow_style=False, width=1000)
    block = "".join(f"  {line}" if line.strip() else line for line in block.splitlines(keepends=True))
    head = text if text.strip() else f"---\nkeywarden_catalog_version: {CATALOG_VERSION}\nsecrets:\n"
    new_text = head.rstrip("\n") + "\n\n  # added by scripts/secrets/migrate\n" + block
    try:
        parsed = yaml.safe_load(new_text)
        wanted = dict(catalog.get("raw_secrets") or {}, **entries)
        if not isinstance(parsed, dict) or parsed.get("secrets") != wanted:
            raise MigrateError(f"catalog {path}: cannot append entries (secrets must be its last top-level key); add them by hand")
        validate_catalog(parsed, source=path)
    except yaml.YAMLError:
        raise MigrateError(f"catalog {path}: appending entries would not be valid YAML; add them by hand") from None
    except CatalogError as exc:
        raise MigrateError(f"{exc} (in the entries migrate would add)") from None
    return new_text


def _load_catalog(path: str) -> tuple[str, dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return "", {"secrets": {}, "raw_secrets": {}}
    except (OSError, UnicodeDecodeError) as exc:
        raise MigrateError(f"catalog {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        raw = yaml.safe_load(text)
        catalog = validate_catalog(raw, source=path)
    except yaml.YAMLError:
        raise MigrateError(f"catalog {path}: not valid YAML") from None
    except CatalogError as exc:
        raise MigrateError(str(exc)) from None
    catalog["raw_secrets"] = raw["secrets"]
    return text, catalog


def build_plan(paths: list[str], environment: str, group: str, service: str, catalog_path: str, store_data: dict[str, Any]) -> Plan:
    """Scan, name and rewrite in memory. Raises MigrateError on bad input; touches nothing."""
    if not _ENVIRONMENT_RE.match(environment):
        raise MigrateError(f"environment '{environment}' must match {_ENVIRONMENT_RE.pattern}")
    if not _GROUP_RE.match(group):
        raise MigrateError(f"--group '{group}' must be an inventory group name ({_GROUP_RE.pattern})")
    if not _SERVICE_RE.match(service):
        raise MigrateError(f"--service '{service}' must match {_SERVICE_RE.pattern}")
    catalog_text, catalog = _load_catalog(catalog_path)
    namer = _Namer(catalog, store_data, service)
    files: list[FilePlan] = []
    warnings: list[str] = []
    for path in collect_files(paths):
        fmt = source_format(path)
        if fmt is None:  # collect_files keeps supported files only
            raise MigrateError(f"{path}: not a file format migrate can rewrite")
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
                mode = os.fstat(handle.fileno()).st_mode & 0o7777
        except OSError as exc:
            raise MigrateError(f"{path}: cannot read it ({exc.strerror})") from None
        if raw.startswith(b"$ANSIBLE_VAULT;"):
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MigrateError(f"{path}: not valid UTF-8; fix or migrate it by hand") from None
        findings = scanner.scan_text(text, path, scanner.file_kind(path))
        if not findings:
            continue
        items = []
        for finding in findings:
            value = scanner.value_of(text, finding)
            if any(c in value for c in "\n\r\0"):
                raise MigrateError(f"{path}:{finding.line}: {finding.rule} spans lines; migrate it by hand")
            if finding.rule == "private-key":
                raise MigrateError(f"{path}:{finding.line}: a private key block cannot be migrated as one value; migrate it by hand")
            var = _key_for(text, finding, fmt)
            secret, var = namer.secret(value, var, f"{path}:{finding.line}")
            items.append(Item(finding.line, finding.rule, finding._span, secret, var))  # noqa: SLF001
        fp = FilePlan(path, fmt, text, sha256(text), mode, items)
        fp.new_text = rewrite(fp)
        left = scanner.scan_text(fp.new_text, path, scanner.file_kind(path))
        if left:
            raise MigrateError(f"{path}:{left[0].line}: the rewritten file would still hold a finding ({left[0].rule}); migrate it by hand")
        files.append(fp)
    secrets_ = list(namer.by_value.values())
    for fp in files:
        for s in secrets_:
            if s.value in fp.new_text:
                warnings.append(f"{fp.path}: a migrated value ({s.name}) also appears where the scanner found no assignment; remove it by hand")
    entries = {s.name: _catalog_entry(environment, group, service, s) for s in secrets_ if not s.in_catalog}
    new_catalog_text = _new_catalog_text(catalog_path, catalog_text, catalog, entries)
    return Plan(environment, group, service, files, secrets_, catalog_path, catalog_text, new_catalog_text, warnings)


# ---- output -----------------------------------------------------------------------------------------
def masked(text: str, values: list[str]) -> str:
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def diff(plan: Plan) -> str:
    """Unified diffs of every file migrate would change, each value shown as ********."""
    values = [s.value for s in plan.secrets]
    out: list[str] = []
    for fp in plan.files:
        out.extend(
            difflib.unified_diff(
                masked(fp.text, values).splitlines(keepends=True), masked(fp.new_text, values).splitlines(keepends=True), f"a/{fp.path}", f"b/{fp.path}"
            )
        )
    if plan.new_catalog_text != plan.catalog_text:
        out.extend(
            difflib.unified_diff(
                plan.catalog_text.splitlines(keepends=True),
                masked(plan.new_catalog_text, values).splitlines(keepends=True),
                f"a/{plan.catalog_path}",
                f"b/{plan.catalog_path}",
            )
        )
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in out)


def summary(plan: Plan) -> str:
    values = sum(len(fp.items) for fp in plan.files)
    new = [s.name for s in plan.secrets if not s.in_store]
    return (
        f"{values} values in {len(plan.files)} files -> {len(plan.secrets)} secrets of environment {plan.environment} "
        f"({len(new)} new in the store: {', '.join(new) or 'none'})"
    )


# ---- applying ---------------------------------------------------------------------------------------
def write_atomic(path: str, text: str, mode: int | None = None) -> None:
    """files.atomic_write with the file's own mode (and owner, where this process may give it)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if mode is None:
        mode = st.st_mode & 0o7777 if st else 0o644
    owner = None
    if st is not None and (os.geteuid() == 0 or (st.st_uid == os.geteuid() and st.st_gid in {os.getegid(), *os.getgroups()})):
        owner = (st.st_uid, st.st_gid)
    atomic_write(path, text.encode("utf-8", "surrogateescape"), mode, owner=owner)


def apply(plan: Plan, store: Store) -> None:
    """Store (secrets + original files, one transaction), then catalog, then the sources."""
    now = utcnow()
    with store.update(event="migrate") as data:
        for secret in plan.secrets:
            held = data["secrets"].get(secret.name)
            if held is not None:
                if _stored_value(data, secret.name) != secret.value:
                    raise StoreError(f"store {store.path}: secret '{secret.name}' appeared since the plan was made; nothing changed, run migrate again")
                continue
            data["secrets"][secret.name] = new_entry(KIND, {FIELD: secret.value})
        backups = data.setdefault(BACKUP_KEY, [])
        if not isinstance(backups, list):
            raise StoreError(f"store {store.path}: '{BACKUP_KEY}' is not a list; nothing changed")
        held_backups = {(b.get("path"), b.get("sha256")) for b in backups if isinstance(b, dict)}
        for fp in plan.files:
            path = os.path.abspath(fp.path)
            if (path, fp.sha256) not in held_backups:
                backups.append({"path": path, "sha256": fp.sha256, "original_text": fp.text, "migrated_at": now})
    if plan.new_catalog_text != plan.catalog_text:
        current, _text = _load_catalog(plan.catalog_path)
        if current != plan.catalog_text:
            raise MigrateError(f"catalog {plan.catalog_path} changed since the plan was made; the store holds the values, run migrate again")
        write_atomic(plan.catalog_path, plan.new_catalog_text)
    for fp in plan.files:
        try:
            with open(fp.path, encoding="utf-8") as handle:
                now_text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise MigrateError(
                f"{fp.path}: cannot read it again ({getattr(exc, 'strerror', None) or exc}); the store holds the values, run migrate again"
            ) from None
        if sha256(now_text) != fp.sha256:
            raise MigrateError(f"{fp.path} changed since the plan was made; the store holds the values and its original, run migrate again")
        write_atomic(fp.path, fp.new_text, fp.mode)
