# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side helpers shared by keywarden's action and lookup plugins."""

from __future__ import annotations

import os
from typing import Any

from ansible.errors import AnsibleError

from ansible_collections.keywarden.secrets.plugins.module_utils.catalog import CatalogError, load_catalog
from ansible_collections.keywarden.secrets.plugins.module_utils.store import DEFAULT_KEEP, Store


def resolve_var(variables: dict[str, Any], templar: Any, name: str, override: Any = None) -> Any:
    """An explicit option wins; else the (templated) play variable; else None."""
    if override not in (None, ""):
        return templar.template(override) if isinstance(override, str) and "{{" in override else override
    if name not in variables:
        return None
    value = variables[name]
    return templar.template(value) if isinstance(value, str) else value


def required_var(variables: dict[str, Any], templar: Any, name: str, override: Any = None) -> Any:
    value = resolve_var(variables, templar, name, override)
    if value in (None, ""):
        raise AnsibleError(f"{name} is not set: give it in the inventory's group_vars (e.g. inventories/<env>/group_vars/all/main.yml)")
    return value


def store_for(variables: dict[str, Any], templar: Any, loader: Any, environment: Any = None, store_dir: Any = None, holder: str = "") -> Store:
    env = str(required_var(variables, templar, "keywarden_environment", environment))
    directory = str(required_var(variables, templar, "keywarden_store_dir", store_dir))
    keep = resolve_var(variables, templar, "keywarden_store_keep_versions") or DEFAULT_KEEP
    timeout = resolve_var(variables, templar, "keywarden_store_lock_timeout") or 0
    vault = getattr(loader, "_vault", None)
    return Store(directory, env, getattr(vault, "secrets", None), keep=int(keep), lock_timeout=float(timeout), holder=holder)


def catalog_for(variables: dict[str, Any], templar: Any, path: Any = None) -> dict[str, Any]:
    catalog_path = str(required_var(variables, templar, "keywarden_catalog_path", path))
    try:
        return load_catalog(os.path.expanduser(catalog_path))
    except CatalogError as exc:
        raise AnsibleError(str(exc)) from None
