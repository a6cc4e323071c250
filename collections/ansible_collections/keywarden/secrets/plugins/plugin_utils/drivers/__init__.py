# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rotation drivers, one module per catalog kind: ``drivers/<kind>.py`` defines ``DRIVER``.

Adding a kind is adding that module (and its tests): the engine finds it by the kind's name; no play, role or
table changes. The interface is `drivers/base.py` and docs/security/secrets/architecture.md ("Adding a kind").
"""

from __future__ import annotations

import importlib

from ansible_collections.keywarden.secrets.plugins.plugin_utils.drivers.base import Driver

_CACHE: dict[str, Driver | None] = {}


def driver_for(kind: str) -> Driver | None:
    """The driver of a catalog kind, or None when this release has none (secrets of that kind cannot rotate)."""
    if kind not in _CACHE:
        if not kind.isidentifier() or kind == "base":
            _CACHE[kind] = None
        else:
            try:
                module = importlib.import_module(f"{__name__}.{kind}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{__name__}.{kind}":
                    raise
                _CACHE[kind] = None
            else:
                # a helper module of the package (drivers/base.py, stored_admin.py) defines no DRIVER: not a kind
                _CACHE[kind] = getattr(module, "DRIVER", None)
    return _CACHE[kind]
